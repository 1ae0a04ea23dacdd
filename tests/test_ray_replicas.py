"""Distributed generation on Ray: the `questions` and `answers` stages with the embedded model's
`hf` engine as 2 local Ray actors write the same files as one engine in one process (every chunk is
one seeded generate call, whichever replica runs it). Both runs use 1 torch thread per engine."""

from __future__ import annotations

import json

import pytest

from .cli_helpers import cli, run_dir_of

pytest.importorskip("ray")
pytestmark = pytest.mark.slow

# 4 bait calls always run (the target is out of reach); rewrites on; one question per answers
# chunk, so any two accepted questions make two chunks (how many are accepted depends on the CPU:
# engine.dtype=auto samples in bf16 only where the CPU has bf16 instructions)
ARGS = [
    "debug=tiny",
    "stages=[questions,answers,vote]",
    "questions.target=50",
    "questions.max_calls=4",
    "answers.chunk_size=1",
    "dedup.threshold=0.8",
    "logger=none",
    "engine.threads=1",
]
FILES = ["questions/questions.jsonl", "questions/rejected.jsonl", "questions/calls.jsonl",
         "answers/answers.jsonl", "vote/qa.jsonl"]  # fmt: skip


def test_two_ray_replicas_write_the_same_files_as_one_process(tmp_path):
    one = run_dir_of(cli(ARGS, tmp_path / "one"))
    res = cli([*ARGS, "engine.replicas=2"], tmp_path / "ray")
    two = run_dir_of(res)
    assert "2 Ray replicas" in res.stdout
    pids = res.stdout.split("(pids [", 1)[1].split("]", 1)[0].split(", ")
    assert len(set(pids)) == 2  # two engine processes did the work
    for f in FILES:
        assert (two / f).read_bytes() == (one / f).read_bytes(), f"{f} differs with 2 replicas"
    qa = [json.loads(x) for x in (two / "vote/qa.jsonl").read_text().splitlines()]
    answers = [json.loads(x) for x in (two / "answers/answers.jsonl").read_text().splitlines()]
    assert len(answers) >= 2 and len(answers) == len({r["id"] for r in answers})
    assert all(len(r["responses"]) == 2 for r in answers)
    assert {r["id"] for r in qa} <= {r["id"] for r in answers}
    calls = [json.loads(x) for x in (two / "questions/calls.jsonl").read_text().splitlines()]
    assert [c["call"] for c in calls] == [0, 1, 2, 3]
