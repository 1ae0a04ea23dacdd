"""End to end on the real embedded model (SmolLM2-135M) at tiny sizes: the CLI, kill -9 + resume,
and a threshold sweep sharing its bait samples. Marked slow (about a minute each on 2 cores)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from .conftest import ROOT

pytestmark = pytest.mark.slow

# 3 calls always run (the target is out of reach), answers come in chunks of 2 questions
TINY = ["debug=tiny", "questions.target=50", "questions.max_calls=3", "logger=none"]
OUTPUTS = {"questions": ["questions.jsonl", "rejected.jsonl"], "answers": ["answers.jsonl"], "vote": ["qa.jsonl"]}


def env_for(tmp: Path) -> dict:
    return {**os.environ, "CRESCENT_CACHE": str(tmp / "cache"), "CRESCENT_RUNS": str(tmp / "runs"),
            "PYTHONUNBUFFERED": "1"}  # fmt: skip


def cli(args, tmp: Path, timeout=1800) -> subprocess.CompletedProcess:
    res = subprocess.run([sys.executable, str(ROOT / "run.py"), *args], env=env_for(tmp),
                         capture_output=True, text=True, timeout=timeout)  # fmt: skip
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    return res


def run_dir_of(res: subprocess.CompletedProcess) -> Path:
    line = [x for x in res.stdout.splitlines() if "run directory:" in x][-1]
    return Path(line.split("run directory:", 1)[1].strip())


def kill_when(args, tmp: Path, pattern: str, timeout=1800) -> None:
    """Start the CLI and SIGKILL it as soon as a file matching `pattern` appears in the cache."""
    proc = subprocess.Popen([sys.executable, str(ROOT / "run.py"), *args], env=env_for(tmp),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    deadline = time.time() + timeout
    try:
        while time.time() < deadline:
            if list((tmp / "cache").glob(pattern)):
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait()
                return
            assert proc.poll() is None, "the run finished before the kill point"
            time.sleep(0.05)
        raise AssertionError(f"{pattern} never appeared")
    finally:
        if proc.poll() is None:
            proc.kill()


def outputs(run_dir: Path) -> dict[str, bytes]:
    return {f"{s}/{f}": (run_dir / s / f).read_bytes() for s, files in OUTPUTS.items() for f in files}


def test_kill9_during_questions_and_answers_then_resume_is_identical(tmp_path):
    ref = cli(TINY, tmp_path / "ref")
    ref_dir = run_dir_of(ref)
    expected = outputs(ref_dir)
    qa = [json.loads(x) for x in expected["vote/qa.jsonl"].decode().splitlines()]
    for r in qa:
        assert set(r) == {"id", "question", "answer", "response", "votes", "share", "k"}

    work = tmp_path / "killed"
    kill_when(TINY, work, "stages/questions/*/chunks/call-000000.json")
    assert not list((work / "cache").glob("stages/questions/*/_COMPLETE.json"))
    kill_when(TINY, work, "stages/answers/*/chunks/answers-000000.jsonl")
    assert list((work / "cache").glob("stages/questions/*/_COMPLETE.json"))
    assert not list((work / "cache").glob("stages/answers/*/_COMPLETE.json"))
    res = cli(TINY, work)
    got = outputs(run_dir_of(res))
    for name in expected:
        assert got[name] == expected[name], f"{name} differs after kill -9 + resume"
    ids = [json.loads(x)["id"] for x in got["answers/answers.jsonl"].decode().splitlines()]
    assert len(ids) == len(set(ids)), "duplicated ids after resume"
    manifest = json.loads((run_dir_of(res) / "manifest.json").read_text())
    assert manifest["stages"]["questions"]["status"] == "reused"
    assert manifest["stages"]["answers"]["status"] == "computed"

    # the same command once more: every stage reused, in seconds
    again = json.loads((run_dir_of(cli(TINY, work)) / "manifest.json").read_text())
    assert {s["status"] for s in again["stages"].values()} == {"reused"}


def test_threshold_sweep_samples_bait_once(tmp_path):
    cli(["-m", "dedup.threshold=0.8,0.9", *TINY], tmp_path)
    manifests = sorted((tmp_path / "runs").rglob("manifest.json"))
    assert len(manifests) == 2
    q = [json.loads(m.read_text())["stages"]["questions"]["metrics"] for m in manifests]
    generated = sorted(m["bait_calls_generated"] for m in q)
    assert generated == [0, 3], q  # the first job samples 3 calls, the second reuses all of them
    assert sorted(m["bait_tokens_generated"] for m in q)[0] == 0
    assert {m["bait_calls_reused"] for m in q} == {0, 3}
