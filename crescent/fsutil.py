"""Atomic file writes and content hashing.

Every file the harness writes goes through `atomic_write*`: the data lands in a temporary sibling and
is moved into place with `os.replace`, so a crash never leaves a truncated file under the final name.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path

_UMASK = os.umask(0)
os.umask(_UMASK)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(
            fd, 0o666 & ~_UMASK
        )  # mkstemp makes owner-only files; a shared cache must stay readable
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        if isinstance(e, OSError) and e.filename is None:  # name the file (e.g. disk full)
            raise OSError(e.errno, e.strerror, str(path)) from e
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, obj, sort_keys: bool = True) -> None:
    """Pretty JSON; `sort_keys=False` keeps rows' field order (chunks replay into output files)."""
    atomic_write_text(
        path, json.dumps(obj, indent=2, sort_keys=sort_keys, ensure_ascii=False) + "\n"
    )


def atomic_write_jsonl(path: str | Path, rows: Iterable[dict]) -> None:
    atomic_write_text(path, "".join(dumps_row(r) + "\n" for r in rows))


def dumps_row(row: dict) -> str:
    """One JSONL line; stable across runs (key order as given, no ASCII escaping)."""
    return json.dumps(row, ensure_ascii=False)


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def sha256_json(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def derive_seed(base: int, *parts) -> int:
    """A 31-bit seed derived from a base seed and labels (stage, chunk index, ...)."""
    digest = hashlib.sha256(json.dumps([base, *parts], default=str).encode()).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF
