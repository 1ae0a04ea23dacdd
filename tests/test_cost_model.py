"""The cost model (bench/cost_model.py): pure arithmetic and the workload it reads from a config.

Fast: no model loads. The workload tests compose the real experiment files, so a change to the
paper preset (calls, samples, caps, eval tasks) shows up here.
"""

from __future__ import annotations

import importlib.util
import json
import math
import sys

import pytest

from .conftest import ROOT

_spec = importlib.util.spec_from_file_location("cost_model", ROOT / "bench" / "cost_model.py")
cm = importlib.util.module_from_spec(_spec)
sys.modules.setdefault("cost_model", cm)  # dataclasses look their module up by name
_spec.loader.exec_module(cm)


def decoder(continuous: bool, max_batch: int = 256) -> cm.Decoder:
    # 10 ms per step alone, +0.1 ms per extra sequence
    return cm.Decoder.through((1, 0.010), (101, 0.020), max_batch, continuous)


def test_decoder_is_the_line_through_its_points():
    d = decoder(True)
    assert d.step(1) == pytest.approx(0.010)
    assert d.step(101) == pytest.approx(0.020)
    assert d.step(10_000) == pytest.approx(d.step(256))  # capped at max_batch
    fit = cm.Decoder.fit([(1, 0.010), (51, 0.015), (101, 0.020)], 256, True)
    assert (fit.a, fit.c) == pytest.approx((d.a, d.c))


def test_static_batches_run_to_their_longest_sequence():
    d = decoder(False, max_batch=8)
    # 20 sequences -> micro-batches of 8, 8, 4, each 100 steps (the longest), whatever the mean
    want = 2 * 100 * d.step(8) + 100 * d.step(4)
    assert cm.call_seconds(d, 20, mean=30, tail=100) == pytest.approx(want)
    assert cm.call_seconds(d, 20, mean=90, tail=100) == pytest.approx(want)


def test_continuous_batching_is_throughput_or_tail_bound():
    d = decoder(True)
    # many sequences: tokens / throughput at the full batch
    many = cm.call_seconds(d, 10_000, mean=100, tail=100)
    assert many == pytest.approx(10_000 * 100 * d.step(256) / 256)
    # one call of 100 with a runaway sample: the call waits for it, mostly alone
    tail = cm.call_seconds(d, 100, mean=80, tail=2048)
    assert tail == pytest.approx(80 * d.step(100) + (2048 - 80) * d.step(1))
    assert tail > 10 * cm.call_seconds(d, 100, mean=80, tail=80)


def test_zero_work_costs_nothing():
    d = decoder(True)
    assert cm.call_seconds(d, 0, 100, 100) == 0
    assert cm.call_seconds(d, 10, 0, 100) == 0
    assert cm.dedup_seconds([(50_000, 23.0)], 0) == 0
    stage = cm.StageCost("vote")  # no work, no start-up
    assert stage.wall(1, 0.9, 0.9) == 0
    assert cm.estimate([stage], 8, 0.9, 0.9)[0]["gpu_hours"] == 0


def test_scaling_with_gpus():
    rep = cm.StageCost("answers", parallel_s=7200.0, startup_s=100.0, scaling="replicas")
    assert rep.wall(1, 0.9, 0.9) == 7300.0
    assert rep.wall(8, 0.9, 0.9) == pytest.approx(100 + 7200 / (8 * 0.9))
    assert rep.wall(8, 1.0, 0.9) == pytest.approx(100 + 900)
    # the driver's sequential work overlaps the replicas and bounds the stage
    q = cm.StageCost("questions", parallel_s=7200.0, serial_s=3000.0, scaling="replicas")
    assert q.wall(1, 0.9, 0.9) == 10_200.0
    assert q.wall(8, 1.0, 1.0) == 3000.0
    assert q.wall(2, 1.0, 1.0) == 3600.0
    ddp = cm.StageCost("train", parallel_s=3600.0, serial_s=60.0, scaling="ddp")
    assert ddp.wall(4, 0.0, 0.5) == pytest.approx(3600 / 2 + 60)
    none = cm.StageCost("eval_base", parallel_s=3600.0, scaling="none")
    assert none.wall(8, 0.9, 0.9) == 3600.0
    # every allocated GPU is billed, busy or not
    rows = cm.estimate([none, rep], 8, 0.9, 0.9)
    assert rows[0]["gpu_hours"] == pytest.approx(8.0)
    assert rows[1]["gpu_hours"] == pytest.approx(rep.wall(8, 0.9, 0.9) * 8 / 3600)
    assert cm.speedup(1, 0.5) == 1.0


def test_dedup_seconds_interpolates_and_extrapolates_quadratically():
    pts = [(10_000, 1.0), (100_000, 100.0)]
    assert cm.dedup_seconds(pts, 10_000) == pytest.approx(1.0)
    assert cm.dedup_seconds(pts, 31_623) == pytest.approx(10.0, rel=1e-3)  # log-log
    assert cm.dedup_seconds(pts, 200_000) == pytest.approx(400.0)  # beyond: quadratic
    assert cm.dedup_seconds(pts, 5_000) == pytest.approx(0.5)  # below: linear


def test_paper_workload_comes_from_the_composed_config(compose, seed_data):
    cfg = compose(["experiments=paper_llama3_self_improve"])
    a = cm.Assumptions(acceptance=0.8, rewrite_share=0.2, qa_yield=0.9)
    w = cm.workload(cfg, a)
    assert (w["calls"], w["samples_per_call"], w["bait_samples"]) == (550, 100, 55_000)
    assert w["bait_cap"] == w["answer_cap"] == w["rewrite_cap"] == 2048
    assert w["accepted"] == 44_000  # 55,000 samples x 0.8 (the 55,000 target is not reachable)
    assert w["rewrites_per_call"] == pytest.approx(20)  # one rewrite each (paper: max_rewrites 1)
    assert (w["answers_per_question"], w["answer_chunk"]) == (3, 256)
    assert w["qa_pairs"] == 39_600
    assert w["train_method"] == "lora" and w["epochs"] == 2
    assert w["train_rows"] == 39_600 - round(39_600 * 0.1)
    assert w["train_tokens"] == pytest.approx(w["train_rows"] * w["pair_tokens"] * 2)
    tasks = {(t, s) for t, s, _ in w["eval_cells"]}
    assert tasks == {(t, s) for t in ("gsm8k", "asdiv", "gsm_plus_mini") for s in (0, 5)}
    items = dict(((t, s), n) for t, s, n in w["eval_cells"])
    assert items[("gsm8k", 5)] == 1319  # the test split, not train
    assert w["eval_backend"] == "hf" and w["eval_cap"] == 256
    assert w["stages"] == ["eval_base", "questions", "answers", "vote", "train", "eval_trained"]
    # a pair never exceeds train.max_length
    long = cm.workload(cfg, cm.Assumptions(answer_tokens=5000))
    assert long["pair_tokens"] == 2304


def test_target_and_rewrite_switches_change_the_workload(compose, seed_data):
    cfg = compose(["questions.target=44", "questions.max_calls=12", "dedup.max_rewrites=0"])
    w = cm.workload(cfg, cm.Assumptions(acceptance=0.1))
    n = int(cfg.sampling.questions.n)
    assert w["calls"] == math.ceil(44 / (n * 0.1)) <= 12
    assert w["accepted"] == 44
    assert w["rewrites_per_call"] == 0
    costs = {c.stage: c for c in cm.stage_costs(w, profile(), cm.Assumptions(acceptance=0.1))}
    assert costs["questions"].detail["rewrite_s"] == 0


def profile() -> cm.Profile:
    d = decoder(True)
    return cm.Profile(
        name="test", hardware="test", generation=d, eval_generation=decoder(False, 8),
        eval_vllm=None, prefill_tokens_per_s=1e4, embed_per_s=1000.0,
        dedup_points=[(50_000, 20.0)], train_tokens_per_s={"lora": 1000.0, "full": 500.0},
        loglik_items_per_s=None, startup_s={},
    )  # fmt: skip


def test_stage_costs_for_the_paper_preset(compose, seed_data):
    cfg = compose(["experiments=paper_llama3_self_improve"])
    a = cm.Assumptions()
    w = cm.workload(cfg, a)
    costs = {c.stage: c for c in cm.stage_costs(w, profile(), a)}
    assert list(costs) == w["stages"]
    assert costs["questions"].scaling == costs["answers"].scaling == "replicas"
    assert costs["train"].scaling == "ddp" and costs["eval_base"].scaling == "none"
    assert costs["eval_base"].parallel_s == costs["eval_trained"].parallel_s > 0
    tr = costs["train"]
    want = (w["train_tokens"] + w["val_tokens"] * 0.5) * a.padding_factor / 1000.0
    assert tr.parallel_s == pytest.approx(want)
    # an eval on the vLLM backend scales with replicas and is cheaper than static hf batches
    w2 = dict(w, eval_backend="vllm")
    ev = {c.stage: c for c in cm.stage_costs(w2, profile(), a)}["eval_base"]
    assert ev.scaling == "replicas" and ev.parallel_s < costs["eval_base"].parallel_s


def test_profiles_load(tmp_path):
    h100 = cm.load_profile(ROOT / "bench" / "throughputs_h100.yaml")
    assert h100.generation.continuous and not h100.eval_generation.continuous
    assert h100.generation.step(1) == pytest.approx(0.00737)
    assert h100.generation.step(256) == pytest.approx(256 / 11364, rel=1e-3)
    assert h100.train_tokens_per_s["lora"] > h100.train_tokens_per_s["full"]
    assert all(h100.sources.values())
    # a measured profile from bench result files
    (tmp_path / "hf_throughput.json").write_text(json.dumps({
        "dtype": "torch.float32", "sampling": {"max_tokens": 100},
        "results": [{"batch_size": 1, "sequences": 2, "seconds": 2.0},
                    {"batch_size": 8, "sequences": 8, "seconds": 3.0}],
    }))  # fmt: skip
    (tmp_path / "dedup_speed.json").write_text(json.dumps({"n": 1000, "seconds_ours": 0.5}))
    (tmp_path / "train_throughput.json").write_text(
        json.dumps({"rows": [{"mode": "lora", "tokens_per_s": 250.0}]})
    )
    m = cm.measured_profile(tmp_path)
    assert m.generation.step(1) == pytest.approx(0.01)  # 2 s / (2 batches x 100 steps)
    assert m.generation.step(8) == pytest.approx(0.03)
    assert m.dedup_points == [(1000, 0.5)] and m.train_tokens_per_s == {"lora": 250.0}
