"""crescent.report (tables and plots over a run set) and crescent.datacard on synthetic run dirs.

The synthetic sweep is 2x2 over dedup.threshold x voting.k, written as the pipeline would (manifest,
config.yaml, stage folders): job (0.9, 1) has no eval_trained stage (it failed), job (0.9, 3) was
started but has no manifest.json. Expected numbers are recomputed here from the files.
"""

from __future__ import annotations

import csv
import json
import re
import shutil
from pathlib import Path

import pytest
import yaml

from crescent import datacard, report

BASE = {"strict-match": 0.10, "flexible-extract": 0.20}
TRAINED = {  # (threshold, k) -> trained scores; (0.9, 1) never got them, (0.9, 3) never started
    (0.8, 1): {"strict-match": 0.15, "flexible-extract": 0.27},
    (0.8, 3): {"strict-match": 0.20, "flexible-extract": 0.18},
}
QUESTIONS = [
    "Tom has 3 apples and buys 4 more apples. How many apples does Tom have?",
    "A train travels 60 miles in 2 hours. How many miles does the train travel per hour?",
    "Tom has 5 pencils and buys 2 more pencils. How many pencils does Tom have now?",
]
DEMO = Path("/tmp/mainrun2/runs/demo/default")


def _jsonl(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def _results(stage: str, scores: dict) -> dict:
    cells = [{"task": "gsm8k", "shots": 0, "num_fewshot": 0, "metric": "exact_match", "filter": key,
              "key": key, "value": v, "stderr": 0.01, "n": 50, "chat_template": False}
             for key, v in scores.items()]  # fmt: skip
    return {"stage": stage, "model": "tiny", "model_path": "/m/tiny", "adapter": None,
            "backend": "hf", "cells": cells, "runs": []}  # fmt: skip


def _config(thr: float, k: int) -> dict:
    return {"paths": {"runs_dir": "/r"}, "model": {"name": "tiny", "bait_prompt": "Problem: "},
            "sampling": {"questions": {"n": 4, "temperature": 0.8}}, "name": "sweep",
            "dedup": {"threshold": thr, "batch_threshold": 0.85, "max_rewrites": 2},
            "voting": {"k": k, "min_share": 0.0}, "data": {"source": "bait"},
            "distill": {"student": None}, "eval": {"tasks": ["gsm8k"], "shots": [0]}, "seed": 7,
            "stages": ["eval_base", "questions", "answers", "vote", "train", "eval_trained"]}  # fmt: skip


def make_job(sweep: Path, thr: float, k: int, manifest: bool = True, trained: bool = True) -> Path:
    run = sweep / f"dedup.threshold={thr},voting.k={k}"
    run.mkdir(parents=True)
    (run / "config.yaml").write_text(yaml.safe_dump(_config(thr, k), sort_keys=False))
    if not manifest:
        return run
    qs = [{"id": f"c0-s{i}", "question": q, "origin": "bait", "call": i // 2,
           "similarity": None if i == 0 else 0.3 + 0.1 * i} for i, q in enumerate(QUESTIONS)]  # fmt: skip
    rej = [{"id": "c0-s9", "question": "", "call": 0, "similarity": None, "reason": "cleaning"},
           {"id": "c1-s8", "question": "Tom has 3 apples.", "call": 1, "similarity": 0.97,
            "reason": "duplicate"},
           {"id": "c1-s9", "question": "What is 2 + 2?", "call": 1, "similarity": 0.2,
            "reason": "over_target"}]  # fmt: skip
    calls = [
        {"call": 0, "samples": 3, "accepted": 2, "rejected": 1},
        {"call": 1, "samples": 3, "accepted": 2, "rejected": 1},
    ]  # over_target passed dedup
    shares = [1.0, 1.0, 1.0] if k == 1 else [0.3333, 0.6667, 1.0]
    qa = [{"id": q["id"], "question": q["question"], "answer": "7", "response": "... #### 7",
           "votes": ["7"] * k, "share": s, "k": k} for q, s in zip(qs, shares, strict=True)]  # fmt: skip
    stages = {}

    def stage(name: str, files: dict, metrics: dict | None = None) -> None:
        for fname, rows in files.items():
            if fname.endswith(".jsonl"):
                _jsonl(run / name / fname, rows)
            else:
                (run / name).mkdir(parents=True, exist_ok=True)
                (run / name / fname).write_text(json.dumps(rows))
        stages[name] = {"status": "computed", "dir": str(run / name), "fingerprint": f"{name}-{thr}-{k}",
                        "seconds": 1.0, "metrics": metrics or {}}  # fmt: skip

    stage("eval_base", {"results.json": _results("eval_base", BASE)})
    stage("questions", {"questions.jsonl": qs, "rejected.jsonl": rej, "calls.jsonl": calls})
    stage("vote", {"qa.jsonl": qa, "rejected.jsonl": [
        {"id": "c9", "question": "x?", "votes": [None] * k, "share": 0.0, "k": k, "reason": "no_answer"}],
        "contamination.jsonl": [{"id": q["id"], "flagged": i == 0} for i, q in enumerate(qs)]})  # fmt: skip
    stage("train", {}, {"first_quarter_loss": 1.5, "last_quarter_loss": 1.0 - k / 10,
                        "val_loss_before": 1.4, "val_loss": 1.2})  # fmt: skip
    if trained:
        stage("eval_trained", {"results.json": _results("eval_trained", TRAINED[(thr, k)])})
    (run / "manifest.json").write_text(
        json.dumps({"name": "sweep", "run_dir": str(run), "stages": stages})
    )
    return run


@pytest.fixture
def sweep(tmp_path) -> Path:
    root = tmp_path / "runs" / "sweep" / "multirun"
    make_job(root, 0.8, 1)
    make_job(root, 0.8, 3)
    make_job(root, 0.9, 1, trained=False)
    make_job(root, 0.9, 3, manifest=False)
    (root / "multirun.yaml").write_text("hydra: {mode: MULTIRUN}\n")
    return root


def test_report_tables_plots_and_missing(sweep, tmp_path, capsys):
    out = tmp_path / "out"
    assert report.main([str(sweep), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    md = (out / "results.md").read_text()
    row = "| sweep | dedup.threshold={} voting.k={} | tiny | bait | gsm8k | 0 | {} | {} |"
    assert row.format(0.8, 1, "strict-match", "10.0 | 15.0 | +5.0") in md
    assert row.format(0.8, 1, "flexible-extract", "20.0 | 27.0 | +7.0") in md
    assert row.format(0.8, 3, "flexible-extract", "20.0 | 18.0 | -2.0") in md
    assert row.format(0.9, 1, "strict-match", "10.0 | missing | missing") in md  # no eval_trained
    assert "| sweep | dedup.threshold=0.9 voting.k=3 | tiny | bait | gsm8k | 0 | strict-match | missing | missing | missing |" in md  # fmt: skip
    assert (
        row.format(0.8, 1, "strict-match", "10.0 | 15.0 | +5.0") in printed
    )  # the table is printed
    assert "dedup.threshold=0.9,voting.k=3: no manifest.json" in printed
    assert "dedup.threshold=0.9,voting.k=1: stage eval_trained not in manifest.json" in printed
    assert str(out / "results.tex") in printed

    with open(out / "results.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 8  # 4 jobs x 2 metrics
    got = {(r["settings"], r["metric"]): r for r in rows}
    a = got[("dedup.threshold=0.8 voting.k=1", "flexible-extract")]
    assert (float(a["base"]), float(a["trained"]), float(a["delta (pts)"])) == pytest.approx(
        (20, 27, 7)
    )
    assert float(got[("dedup.threshold=0.8 voting.k=3", "flexible-extract")]["delta (pts)"]) == pytest.approx(-2)  # fmt: skip
    c = got[("dedup.threshold=0.9 voting.k=1", "strict-match")]
    assert (c["base"], c["trained"], c["delta (pts)"]) == ("10.0", "missing", "missing")
    d = got[("dedup.threshold=0.9 voting.k=3", "strict-match")]
    assert (d["base"], d["trained"]) == ("missing", "missing")

    with open(out / "data.csv", newline="") as fh:
        data = {r["settings"]: r for r in csv.DictReader(fh)}
    assert data["dedup.threshold=0.8 voting.k=3"]["QA pairs"] == "3"
    assert float(data["dedup.threshold=0.8 voting.k=3"]["mean vote share"]) == pytest.approx(
        2 / 3, abs=1e-4
    )
    assert float(data["dedup.threshold=0.8 voting.k=3"]["train loss last 1/4"]) == pytest.approx(
        0.7
    )
    assert data["dedup.threshold=0.9 voting.k=3"]["accepted questions"] == "missing"

    tex = (out / "results.tex").read_text()
    assert tex.count("\\begin{tabular}") == tex.count("\\end{tabular}") == 2
    for block in tex.split("\\begin{tabular}")[1:]:
        spec = re.match(r"\{([lrc]+)\}", block).group(1)
        body = block.split("\\toprule", 1)[1].split("\\bottomrule", 1)[0]
        lines = [
            x for x in body.splitlines() if x.strip() and not x.strip().startswith("\\midrule")
        ]
        assert lines and all(x.rstrip().endswith("\\\\") for x in lines)
        assert {len(re.findall(r"(?<!\\)&", x)) + 1 for x in lines} == {len(spec)}
    assert (
        "dedup.threshold=0.9 voting.k=3 & tiny & bait & gsm8k & 0 & strict-match & -- & -- & --"
        in tex
    )

    for name in ("accuracy_vs_dedup_threshold", "accuracy_vs_voting_k", "acceptance_per_call",
                 "vote_share_hist", "similarity_hist"):  # fmt: skip
        png = out / f"{name}.png"
        assert png.is_file() and png.stat().st_size > 1000, name
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_report_default_out_and_single_key(sweep, capsys):
    """Default --out is PATH/report; a rerun does not take report/ for a run; a key that does not
    vary gets no plot."""
    for job in sweep.glob("dedup.threshold=0.9*"):
        shutil.rmtree(job)
    assert report.main([str(sweep)]) == 0
    assert report.main([str(sweep)]) == 0
    out = sweep / "report"
    assert (out / "results.md").is_file() and (out / "accuracy_vs_voting_k.png").is_file()
    assert not (out / "accuracy_vs_dedup_threshold.png").exists()
    md = (out / "results.md").read_text()
    assert "| sweep | voting.k=1 |" in md and "missing" not in md


def _recompute(run: Path) -> tuple[float, float]:
    """Acceptance rate (passed cleaning+dedup / samples) and distinct-2, from the files."""
    qs = [json.loads(x) for x in (run / "questions" / "questions.jsonl").read_text().splitlines()]
    rej = [json.loads(x) for x in (run / "questions" / "rejected.jsonl").read_text().splitlines()]
    passed = len(qs) + sum(r["reason"] == "over_target" for r in rej)
    bigrams = []
    for q in qs:
        words = re.findall(r"\w+", q["question"].lower())
        bigrams += [(words[i], words[i + 1]) for i in range(len(words) - 1)]
    return passed / (len(qs) + len(rej)), len(set(bigrams)) / len(bigrams)


def test_data_card(sweep):
    run = sweep / "dedup.threshold=0.8,voting.k=3"
    assert datacard.main([str(run)]) == 0
    card = json.loads((run / "data_card.json").read_text())
    rate, d2 = _recompute(run)
    assert card["questions"]["acceptance_rate"] == pytest.approx(rate, abs=1e-4)  # 4/6
    assert card["diversity"]["distinct_2"] == pytest.approx(d2, abs=1e-4)
    assert card["questions"]["rejected_by_reason"] == {
        "cleaning": 1,
        "duplicate": 1,
        "over_target": 1,
    }
    assert card["votes"]["share_histogram"] == {"1/3": 1, "2/3": 1, "3/3": 1}
    assert card["votes"]["rejected_by_reason"] == {"no_answer": 1}
    assert card["contamination"] == {
        "checked": 3,
        "flagged": 1,
        "rate": pytest.approx(1 / 3, abs=1e-4),
    }
    assert card["diversity"]["mean_nearest_similarity"] == pytest.approx(0.45)
    assert card["settings"]["voting"]["k"] == 3 and card["settings"]["seed"] == 7
    assert "pushed_to_hub" not in card
    assert "acceptance rate" in (run / "data_card.md").read_text()
    import datasets

    ds = datasets.load_from_disk(str(run / datacard.HF_DIR))
    assert ds.num_rows == 3 and ds[0]["question"] == QUESTIONS[0]
    assert datacard.load_or_compute(run) == card  # the report reuses a current card


@pytest.mark.skipif(not (DEMO / "manifest.json").is_file(), reason=f"no finished run at {DEMO}")
def test_data_card_on_a_real_run(tmp_path):
    run = tmp_path / "demo"
    shutil.copytree(DEMO, run, symlinks=True, ignore=shutil.ignore_patterns("wandb"))
    card = datacard.write(run, export=False)
    manifest = json.loads((run / "manifest.json").read_text())
    qa_path = Path(manifest["stages"]["vote"]["dir"]) / "qa.jsonl"
    qa = [json.loads(x) for x in qa_path.read_text().splitlines() if x.strip()]
    assert card["votes"]["qa_pairs"] == len(qa)
    assert card["votes"]["mean_share"] == pytest.approx(
        sum(r["share"] for r in qa) / len(qa), abs=1e-4
    )
    assert (run / "data_card.md").is_file() and not (DEMO / "data_card.json").exists()
