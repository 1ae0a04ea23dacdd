"""A failing write (disk full, simulated at fsync) never leaves a completion marker or a truncated
file that a later run trusts; the next run recomputes just that piece. Uses the vote stage on a
user file (no LLM) and the real MiniLM embedder of its contamination check."""

from __future__ import annotations

import errno
import os

import pytest

import crescent.fsutil
from crescent.main import run

from .test_concurrency import ANSWERS


@pytest.fixture
def answers_file(workdir):
    import json

    path = workdir / "answers.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in ANSWERS))
    return path


def _disk_full_on(name: str, monkeypatch):
    real = os.fsync

    def fsync(fd):
        if f".{name}." in os.readlink(f"/proc/self/fd/{fd}"):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(fd)

    monkeypatch.setattr(crescent.fsutil.os, "fsync", fsync)


def test_disk_full_leaves_nothing_trusted_and_the_next_run_recomputes(
    compose, workdir, answers_file, monkeypatch, capsys
):
    cfg = compose(["stages=[vote]", f"vote.input={answers_file}", "logger=none"])
    with monkeypatch.context() as m:
        _disk_full_on("qa.jsonl", m)
        with pytest.raises(SystemExit) as exit_info:
            run(cfg, run_dir=workdir / "full")
    assert exit_info.value.code == 1
    err = [x for x in capsys.readouterr().err.splitlines() if x.startswith("error:")]
    assert len(err) == 1 and "qa.jsonl: disk full" in err[0] and "run the same command" in err[0]
    stage_dir = workdir / "cache" / "stages" / "vote"
    entry = next(p for p in stage_dir.iterdir() if p.is_dir())  # the entry, not its .lock file
    assert not (entry / "_COMPLETE.json").exists() and not (entry / "qa.jsonl").exists()
    assert not list(entry.glob(".*.tmp")), "a half-written temp file was left behind"

    run(cfg, run_dir=workdir / "again")  # space is back: the same command completes
    assert (entry / "_COMPLETE.json").exists()
    ref = compose(["stages=[vote]", f"vote.input={answers_file}", "logger=none",
                   "paths.cache_dir=" + str(workdir / "clean")])  # fmt: skip
    run(ref, run_dir=workdir / "ref")
    assert (workdir / "again" / "vote" / "qa.jsonl").read_bytes() == (
        workdir / "ref" / "vote" / "qa.jsonl"
    ).read_bytes()
