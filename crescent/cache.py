"""Content-addressed cache: one folder per (stage, fingerprint), chunked resume, generation cache.

    <cache_dir>/stages/<stage>/<fingerprint[:16]>/      a stage's cache entry
        questions.jsonl, ...                           its outputs (atomic writes)
        chunks/<name>                                  finished units of work, for resume
        _COMPLETE.json                                 written last: files + sha256, metrics, seconds
    <cache_dir>/generations/<key[:16]>/<NNNNNN>.jsonl   raw sampled generations (below stage caches)

A fingerprint hashes the stage's own config subset, its upstream fingerprints and a hand-bumped
stage version; runtime knobs are not part of it. An entry without its marker is unfinished: its
chunks are reused, everything else recomputed. A file lock per entry lets concurrent runs (a sweep)
share it: one computes, the others wait and reuse.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from filelock import FileLock

from crescent.errors import InputError
from crescent.fsutil import atomic_write_json, atomic_write_jsonl, sha256_file, sha256_json

MARKER = "_COMPLETE.json"
T = TypeVar("T")


def load_or_discard(paths: list[Path], load: Callable[[], T], what: str) -> T | None:
    """A finished piece of cached work (chunk, raw generations), or None when its files cannot be
    read back (truncated, corrupt, tampered): one warning line, the files removed, and the caller
    recomputes just that piece."""
    if not all(p.is_file() for p in paths):
        return None
    try:
        return load()
    except (
        ValueError,
        OSError,
        KeyError,
        TypeError,
        InputError,
    ) as e:  # JSONDecodeError: ValueError
        reason = str(e).splitlines()[0][:160] if str(e) else e.__class__.__name__
        print(f"[crescent] warning: {what} {paths[0]}: unreadable ({reason}); recomputing it",
              flush=True)  # fmt: skip
        for p in paths:
            p.unlink(missing_ok=True)
        return None


def fingerprint(stage: str, version: int, config: dict, upstream: dict) -> str:
    return sha256_json({"stage": stage, "version": version, "config": config, "upstream": upstream})


class CacheEntry:
    def __init__(self, cache_dir: str | Path, stage: str, fp: str):
        self.stage, self.fingerprint = stage, fp
        self.dir = Path(cache_dir) / "stages" / stage / fp[:16]

    @property
    def marker(self) -> Path:
        return self.dir / MARKER

    def lock(self) -> FileLock:
        self.dir.parent.mkdir(parents=True, exist_ok=True)
        return FileLock(str(self.dir) + ".lock")

    def is_complete(self) -> bool:
        """Marker present and every file it lists present with the recorded size and sha256."""
        return self.problem() is None

    def problem(self) -> str | None:
        """Why the entry cannot be trusted (None: complete and intact)."""
        if not self.marker.is_file():
            return "not finished (no completion marker)"
        info = self.info()
        if info is None or not isinstance(info.get("files"), dict):
            return f"{MARKER} is unreadable"
        for name, meta in info["files"].items():
            f = self.dir / name
            if not f.is_file():
                return f"{name} is missing"
            if f.stat().st_size != meta["bytes"]:
                return f"{name} has {f.stat().st_size} bytes, {meta['bytes']} recorded"
            if sha256_file(f) != meta["sha256"]:
                return f"{name} changed since it was written (sha256 differs)"
        return None

    def check(self) -> bool:
        """Whether the entry is complete and intact (hashing its files once). A marker whose files
        no longer match it is reported in one line and removed, so the stage runs again (reusing
        its intact chunks)."""
        why = self.problem()
        if why and self.marker.is_file():
            print(f"[crescent] warning: cache entry {self.dir}: {why}; recomputing it", flush=True)
            self.marker.unlink(missing_ok=True)
        return why is None

    def info(self) -> dict | None:
        try:
            return json.loads(self.marker.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return None

    def path(self, name: str) -> Path:
        return self.dir / name

    def chunk(self, name: str) -> Path:
        return self.dir / "chunks" / name

    def finalize(self, files: list[str], metrics: dict, seconds: float, config: dict) -> None:
        record = {
            "stage": self.stage,
            "fingerprint": self.fingerprint,
            "files": {
                f: {"bytes": (self.dir / f).stat().st_size, "sha256": sha256_file(self.dir / f)}
                for f in files
            },
            "metrics": metrics,
            "seconds": round(seconds, 3),
            "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "config": config,
        }
        atomic_write_json(self.marker, record)


class GenerationCache:
    """Raw generations keyed by everything that determines them, one file per unit (e.g. call)."""

    def __init__(self, cache_dir: str | Path, key: dict):
        self.key = key
        self.dir = Path(cache_dir) / "generations" / sha256_json(key)[:16]
        self.hits = 0
        self.misses = 0

    def _file(self, index: int) -> Path:
        return self.dir / f"{index:06d}.jsonl"

    def get(self, index: int) -> list[dict] | None:
        f = self._file(index)
        rows = load_or_discard(
            [f],
            lambda: [json.loads(x) for x in f.read_text(encoding="utf-8").splitlines() if x],
            "raw generations",
        )
        if rows is not None:
            self.hits += 1
        return rows

    def put(self, index: int, rows: list[dict]) -> None:
        if not (self.dir / "key.json").is_file():
            atomic_write_json(self.dir / "key.json", self.key)
        atomic_write_jsonl(self._file(index), rows)
        self.misses += 1
