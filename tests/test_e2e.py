"""End to end on the real embedded model (SmolLM2-135M) at tiny sizes: the CLI, kill -9 + resume,
and a threshold sweep sharing its bait samples. Marked slow (about a minute each on 2 cores)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from .cli_helpers import cli, kill_when, run_dir_of

pytestmark = pytest.mark.slow

# 3 calls always run (the target is out of reach), answers come in chunks of 2 questions
TINY = [
    "debug=tiny",
    "stages=[questions,answers,vote]",
    "questions.target=50",
    "questions.max_calls=3",
    "logger=none",
]
OUTPUTS = {
    "questions": ["questions.jsonl", "rejected.jsonl"],
    "answers": ["answers.jsonl"],
    "vote": ["qa.jsonl"],
}


def outputs(run_dir: Path) -> dict[str, bytes]:
    return {
        f"{s}/{f}": (run_dir / s / f).read_bytes() for s, files in OUTPUTS.items() for f in files
    }


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
