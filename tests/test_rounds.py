"""Iterated self-improvement (`rounds=N`, crescent/rounds.py): config checks, the next round's
config, the per-round report on a synthetic two-round run, and `rounds=2` end to end on the real
embedded model at tiny sizes (slow)."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from crescent import report
from crescent.errors import ConfigError
from crescent.rounds import round_config
from crescent.validate import validate

from .cli_helpers import cli, run_dir_of
from .test_report import TRAINED, make_job


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["rounds=0"], "rounds=0: must be an integer >= 1"),
        (["rounds=2", "stages=[questions,answers,vote]"], "missing: train"),
        (["rounds=2", "distill=smollm2-half"], "use distill=none"),
        (["rounds=2", "train.input=/tmp/qa.jsonl"], "train.input: must be null with rounds=2"),
    ],
)
def test_bad_rounds_config_is_named(compose, overrides, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[")):
        validate(compose(overrides))


def test_round_one_is_the_plain_loop_and_round_two_uses_the_trained_model(compose, tmp_path):
    cfg = compose(["rounds=2"])
    validate(cfg)
    assert round_config(cfg, 1, None) is cfg
    entry = tmp_path / "train" / "0123abcd"
    (entry / "merged").mkdir(parents=True)
    (entry / "train_outputs.json").write_text(json.dumps(
        {"kind": "lora", "model_name": "smollm2-135m", "base_model": "/m/base",
         "adapter": "adapter", "full_model": None, "merged": "merged"}))  # fmt: skip
    r2 = round_config(cfg, 2, entry)
    assert r2.model.path == str(entry / "merged") and r2.model.gguf is None
    assert r2.model.name == "smollm2-135m-round1"
    assert list(r2.stages) == [s for s in cfg.stages if s != "eval_base"]
    assert OmegaConf.select(cfg, "model.path") is None  # the caller's config is untouched
    r3 = round_config(r2, 3, entry)
    assert r3.model.name == "smollm2-135m-round2"


def _two_rounds(root: Path) -> Path:
    """A synthetic `rounds=2` run: round_1 = a full loop, round_2 without eval_base."""
    run = root / "rounds_run"
    for t, key in ((1, (0.8, 1)), (2, (0.8, 3))):
        job = make_job(root / "tmp", *key)
        manifest = json.loads((job / "manifest.json").read_text())
        if t == 2:
            del manifest["stages"]["eval_base"]
        dest = run / f"round_{t}"
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(job), dest)
        for s in manifest["stages"].values():
            s["dir"] = s["dir"].replace(str(job), str(dest))
        (dest / "manifest.json").write_text(json.dumps(manifest))
    (run / ".hydra").mkdir()
    (run / ".hydra" / "config.yaml").write_text("name: sweep\n")  # Hydra's folder sits above
    (run / "rounds.json").write_text(json.dumps({"rounds": 2, "dirs": ["round_1", "round_2"]}))
    return run


def test_report_shows_every_round_against_the_previous_and_the_base(tmp_path):
    run = _two_rounds(tmp_path)
    out = tmp_path / "out"
    result = report.build(run, out)
    assert [r.round for r in result["runs"]] == [1, 2]
    assert not any("eval_base" in m for m in result["missing"])
    rows = list(csv.DictReader((out / "rounds.csv").open()))
    strict = [r for r in rows if r["metric"] == "strict-match"]
    assert [r["round"] for r in strict] == ["0", "1", "2"]
    want = [0.10, TRAINED[(0.8, 1)]["strict-match"], TRAINED[(0.8, 3)]["strict-match"]]
    assert [float(r["score"]) for r in strict] == pytest.approx([100 * w for w in want])
    assert float(strict[2]["vs previous round (pts)"]) == pytest.approx(100 * (want[2] - want[1]))
    assert float(strict[2]["vs base (pts)"]) == pytest.approx(100 * (want[2] - want[0]))
    assert strict[0]["vs base (pts)"] == "missing"
    data = list(csv.DictReader((out / "rounds_data.csv").open()))
    assert [d["round"] for d in data] == ["1", "2"]
    assert float(data[0]["acceptance rate"]) == pytest.approx(
        4 / 6, abs=1e-4
    )  # 4 passed dedup of 6
    assert float(data[1]["mean vote share"]) == pytest.approx((0.3333 + 0.6667 + 1.0) / 3, abs=1e-4)
    assert (out / "rounds.png").stat().st_size > 10_000
    # round 2's "base" in the main table is round 1's trained model
    md = (out / "results.md").read_text()
    assert "## Rounds: sweep (2 rounds" in md


@pytest.mark.slow
def test_two_rounds_end_to_end_on_the_embedded_model(tmp_path):
    # one vote per question, truncated answers voting too (the paper's rule), so that most questions
    # get a label to train on whatever text the round-1 model samples
    args = ["debug=tiny", "rounds=2", "logger=none", "questions.target=6", "questions.max_calls=2",
            "sampling.questions.n=16", "sampling.questions.max_tokens=80", "answers.n=1",
            "voting.k=1", "voting.count_truncated=true", "sampling.answers.max_tokens=192",
            "train.trainer.max_steps=2", "stages=[questions,answers,vote,train,eval_trained]",
            "eval.tasks=[gsm8k]",
            "eval.shots=[0]", "eval.limit=2", "eval.max_gen_toks=32"]  # fmt: skip
    res = cli(args, tmp_path)
    run = run_dir_of(res).parent
    m1 = json.loads((run / "round_1" / "manifest.json").read_text())
    m2 = json.loads((run / "round_2" / "manifest.json").read_text())
    # round 2 generated with, trained and scored round 1's model (a merged folder of its adapter)
    cfg2 = OmegaConf.load(run / "round_2" / "config.yaml")
    assert cfg2.model.name == "smollm2-135m-round1" and Path(cfg2.model.path).is_dir()
    assert m1["stages"]["train"]["dir"].split("/")[-1] in cfg2.model.path
    hp = json.loads((Path(m2["stages"]["train"]["dir"]) / "hparams.json").read_text())
    assert hp["model_path"] == cfg2.model.path
    assert m1["stages"]["questions"]["fingerprint"] != m2["stages"]["questions"]["fingerprint"]
    assert "rounds report" in res.stdout and (run / "report" / "rounds.png").is_file()
    rows = list(csv.DictReader((run / "report" / "rounds.csv").open()))
    assert {r["round"] for r in rows} == {"1", "2"}  # no eval_base stage asked: no round 0
    # round 2's before/after table compares with round 1's trained model
    assert (
        "base = the model this round started from"
        in (run / "round_2" / "eval_report.md").read_text()
    )
    # the same command again: every stage of both rounds is reused
    again = cli(args, tmp_path)
    assert again.stdout.count(": reused") == 10 and ": computing" not in again.stdout
