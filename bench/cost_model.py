"""Predict the wall time and GPU-hours of a Crescent run, stage by stage, before paying for it.

Two inputs, kept apart:
- the *workload*, derived from the composed experiment config (the same `compose` as `run.py`:
  calls, samples per call, token caps, answers per question, chunk sizes, epochs, eval tasks x shots
  x items) plus a few behavioural assumptions that no config holds (acceptance rate, mean generated
  tokens, the longest sample of a call, QA yield), each printed with its value and origin;
- a *throughput profile*: `measured` (this machine, from bench/results/*.json) or a YAML file of
  published figures with their sources (bench/throughputs_h100.yaml).

The model (pure functions, tests/test_cost_model.py):
- Decoding: seconds per decode step at batch b is a line through two measured points,
  step(b) = a + c*b. A generate call of `seqs` sequences with mean length m and longest t costs
  - static batching (hf engine, lm-eval HFLM): every micro-batch runs to its longest sequence:
    micro-batches * t * step(batch);
  - continuous batching (vLLM): max(seqs * m * step(B) / B, m * step(B) + (t - m) * step(1)),
    B = min(seqs, max_batch): throughput-bound, unless the call waits on its longest sample.
- questions: `calls` sequential bait calls (n samples each) plus one rewrite call per bait call;
  embedding and dedup run on the driver's CPU. answers: chunks of chunk_size x n sequences.
  vote: embeddings for the contamination check (test sets once, then cached). train: real tokens x
  padding factor / tokens-per-s. eval: items x shots, static or continuous batches + prompt prefill.
- Scaling to G GPUs: generation uses G data-parallel replicas (`engine.replicas`, one engine per
  GPU; speedup G * generation_efficiency); the driver's sequential work (dedup, embedding, the
  rewrite call each bait call waits for) does not scale and overlaps the replicas, so a stage takes
  max(parallel / speedup, serial). Training uses DDP (speedup G * train_efficiency). Eval with the
  hf backend runs on one GPU. Every allocated GPU is billed for the whole stage.

Run:
    python bench/cost_model.py                                  # paper Llama-3 run on 1 and 8 H100 + demo check
    python bench/cost_model.py --gpus 1,2,8 --set acceptance=0.6 --set bait_tail_tokens=2048
    python bench/cost_model.py --experiment paper_llama3_self_improve --profile bench/throughputs_h100.yaml
    python bench/cost_model.py --demo-only --demo-manifest /work/demo_runs/demo_self_improve/default/manifest.json

Writes bench/results/cost_model.json (the predictions and every input they used).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import glob
import json
import math
import os
import statistics
import sys
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"

# Rows of the eval test sets when no local copy can be counted (the copies under paths.data_dir).
EVAL_ITEMS = {
    "gsm8k": 1319,
    "asdiv": 2084,
    "gsm_plus_mini": 2400,
    "svamp": 1000,
    "math500": 500,
    "hellaswag": 10042,
}
LOGLIK_TASKS = {"hellaswag"}  # scored by log-likelihood of 4 endings, no generation
CONTAMINATION_ROWS = {
    "gsm8k": 1319,
    "asdiv": 2084,
    "gsm_plus_mini": 2400,
    "svamp": 1000,
    "math500": 500,
}


# ------------------------------------------------------------------------------------ the model


@dataclass(frozen=True)
class Decoder:
    """Seconds per decode step as a line through two points: step(b) = a + c*b."""

    a: float
    c: float
    max_batch: int
    continuous: bool

    @classmethod
    def through(cls, p1, p2, max_batch: int, continuous: bool) -> Decoder:
        (b1, s1), (b2, s2) = p1, p2
        c = (s2 - s1) / (b2 - b1) if b2 != b1 else 0.0
        return cls(a=s1 - c * b1, c=c, max_batch=int(max_batch), continuous=continuous)

    @classmethod
    def fit(cls, points, max_batch: int, continuous: bool) -> Decoder:
        """Least-squares line through (batch, seconds per step) points (two or more)."""
        if len(points) < 2:
            raise ValueError("a decoder needs at least two (batch, seconds) points")
        xs, ys = zip(*points, strict=True)
        mx, my = statistics.fmean(xs), statistics.fmean(ys)
        sxx = sum((x - mx) ** 2 for x in xs)
        c = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sxx if sxx else 0.0
        return cls(a=my - c * mx, c=c, max_batch=int(max_batch), continuous=continuous)

    def step(self, batch: float) -> float:
        return self.a + self.c * max(1.0, min(float(batch), float(self.max_batch)))

    def with_batch(self, max_batch: int) -> Decoder:
        return dataclasses.replace(self, max_batch=int(max_batch))


def call_seconds(dec: Decoder, seqs: float, mean: float, tail: float) -> float:
    """One generate call of `seqs` sequences, `mean` generated tokens each, the longest `tail`."""
    if seqs <= 0 or mean <= 0:
        return 0.0
    tail = max(tail, mean)
    if not dec.continuous:  # static micro-batches: each runs until its longest sequence stops
        full, rest = divmod(math.ceil(seqs), dec.max_batch)
        return full * tail * dec.step(dec.max_batch) + (tail * dec.step(rest) if rest else 0.0)
    b = min(seqs, dec.max_batch)
    throughput_bound = seqs * mean * dec.step(b) / b
    latency_bound = mean * dec.step(b) + (tail - mean) * dec.step(1)
    return max(throughput_bound, latency_bound)


def speedup(gpus: int, efficiency: float) -> float:
    """Speedup of `gpus` workers over one: gpus * efficiency (1 for one GPU)."""
    return 1.0 if gpus <= 1 else gpus * efficiency


def dedup_seconds(points: list[tuple[int, float]], decisions: float) -> float:
    """Seconds for `decisions` online-dedup decisions against a growing accepted set.

    `points` are measured (N, seconds for a stream of N). Between points: log-log interpolation;
    beyond the largest: quadratic (every decision scans the accepted set); below the smallest:
    linear (per-call overhead dominates small streams)."""
    if decisions <= 0 or not points:
        return 0.0
    pts = sorted(points)
    if decisions >= pts[-1][0]:
        n, s = pts[-1]
        return s * (decisions / n) ** 2
    if decisions <= pts[0][0]:
        n, s = pts[0]
        return s * decisions / n
    for (n1, s1), (n2, s2) in zip(pts, pts[1:], strict=False):
        if n1 <= decisions <= n2:
            k = math.log(s2 / s1) / math.log(n2 / n1)
            return s1 * (decisions / n1) ** k
    raise AssertionError("unreachable")


@dataclass
class StageCost:
    """One stage's work in seconds on one GPU (or on the CPU machine for a CPU profile)."""

    stage: str
    parallel_s: float = 0.0  # GPU work that splits over data-parallel workers
    serial_s: float = 0.0  # work that does not (driver CPU work, calls the driver waits for)
    startup_s: float = 0.0  # model load etc., paid once per stage process
    scaling: str = "none"  # replicas | ddp | none
    detail: dict = field(default_factory=dict)

    def wall(self, gpus: int, gen_eff: float, train_eff: float) -> float:
        if self.scaling == "none" or gpus <= 1:
            return self.startup_s + self.parallel_s + self.serial_s
        eff = train_eff if self.scaling == "ddp" else gen_eff
        if self.scaling == "ddp":  # each step waits for all ranks: nothing overlaps
            return self.startup_s + self.parallel_s / speedup(gpus, eff) + self.serial_s
        # replicas work ahead while the driver does the sequential part (pipelined)
        return self.startup_s + max(self.parallel_s / speedup(gpus, eff), self.serial_s)


def estimate(costs: list[StageCost], gpus: int, gen_eff: float, train_eff: float) -> list[dict]:
    rows = []
    for c in costs:
        wall = c.wall(gpus, gen_eff, train_eff)
        rows.append(
            {
                "stage": c.stage,
                "gpus": gpus,
                "wall_s": wall,
                "gpu_hours": wall * gpus / 3600.0,
                "scaling": c.scaling,
            }
        )
    return rows


# ----------------------------------------------------------------------------- the workload


@dataclass
class Assumptions:
    """Behaviour of the model being run that no config holds (tokens are generated tokens)."""

    acceptance: float = 0.8  # accepted questions per bait sample
    question_tokens: float = 80.0  # mean tokens of a bait sample
    bait_tail_tokens: float | None = 512.0  # longest sample of a bait call (None: the token cap)
    rewrite_share: float = 0.2  # rewrites per bait sample (near-duplicates of the accepted set)
    rewrite_tokens: float = 120.0  # mean tokens of a rewrite
    rewrite_tail_tokens: float | None = 512.0  # longest rewrite of a call (None: the token cap)
    answer_tokens: float = 300.0  # mean tokens of an answer
    answer_tail_tokens: float | None = None  # longest answer of a chunk (None: the token cap)
    qa_yield: float = 0.9  # QA pairs per answered question after voting
    pair_overhead_tokens: float = 60.0  # chat template + answer suffix around question + answer
    pair_tokens: float | None = None  # mean tokens of a training pair (None: overhead + q + answer)
    padding_factor: float = 1.3  # padded / real tokens in a training micro-batch
    eval_gen_tokens: float = 160.0  # mean tokens an eval item generates (continuous batching)
    eval_tail_tokens: float | None = None  # longest eval generation of a batch (None: the cap)
    eval_question_tokens: float = 100.0  # prompt tokens of one eval question
    shot_tokens: float = 150.0  # prompt tokens per few-shot exemplar (question + worked answer)
    embed_test_sets: bool = True  # first run: embed the contamination test sets (cached after)
    sources: dict = field(default_factory=dict)  # key -> where the value comes from


PAPER_SOURCES = {
    "acceptance": "assumption: the paper's accepted count was not retrieved (DESIGN.md §4); with "
    "the paper's rules (one unchecked rewrite) only cleaning and within-call drops reject",
    "question_tokens": "assumption: a word problem of 2-4 sentences from Llama-3-8B-Instruct",
    "bait_tail_tokens": "assumption: the longest of a call's 100 samples at temperature 1.0 "
    "(bounds: the mean, ~13 min of bait sampling on 1 GPU; the 2048-token cap, see the table)",
    "rewrite_share": "assumption: near-duplicates (cos >= 0.875) per bait sample, averaged over "
    "the run",
    "rewrite_tokens": "assumption: a rewritten problem plus a short preamble",
    "rewrite_tail_tokens": "assumption, as bait_tail_tokens",
    "answer_tokens": "assumption: step-by-step solution with 'a detailed explanation'",
    "answer_tail_tokens": "the 2048-token cap (some of 768 answers per chunk run away at T=1.0)",
    "qa_yield": "paper voting keeps every question with a vote (None may win); 0.9 allows "
    "for questions whose 3 answers all fail to parse",
    "padding_factor": "assumption: micro-batches of 4 padded to the longest",
    "eval_gen_tokens": "assumption: GSM8K-style answers, stopped at 'Question:' (lm-eval cap 256)",
    "eval_tail_tokens": "the eval token cap (one generation per batch of 8 runs to it)",
    "shot_tokens": "assumption: a GSM8K train question with its worked answer",
}


def _select(cfg, key: str, default=None):
    from omegaconf import OmegaConf

    return OmegaConf.select(cfg, key, default=default)


def _count_rows(path: Path) -> int | None:
    if not path.is_file():
        return None
    with path.open("rb") as fh:
        return sum(1 for line in fh if line.strip())


def eval_items(cfg) -> list[tuple[str, int, int]]:
    """(task, shots, items) per lm-eval run of one eval stage, from the config and local data."""
    from crescent.evaluation.registry import TASKS
    from crescent.evaluation.runner import plan_cells

    out = []
    for task, shots, limit in plan_cells(cfg.eval):
        t = TASKS.get(task)
        files = t.files if t else {}
        split = next((files[k] for k in ("test", "testmini", "validation") if k in files), None)
        n = _count_rows(Path(str(cfg.paths.data_dir)) / split) if split else None
        n = n if n is not None else EVAL_ITEMS.get(task, 0)
        if limit is not None:
            n = min(n, int(limit)) if float(limit) >= 1 else int(n * float(limit))
        out.append((task, int(shots), n))
    return out


def workload(cfg, a: Assumptions) -> dict:
    """The counts each stage processes, from the composed config and the assumptions."""
    s = cfg.sampling
    n = int(s.questions.n)
    target, max_calls = int(cfg.questions.target), int(cfg.questions.max_calls)
    per_call = n * a.acceptance
    calls = max_calls if per_call <= 0 else min(max_calls, math.ceil(target / per_call))
    accepted = min(target, int(calls * per_call))
    rewrites = a.rewrite_share if int(cfg.dedup.max_rewrites) > 0 else 0.0
    qa = int(accepted * a.qa_yield)
    val_fraction = float(cfg.train.val_fraction)
    val_rows = max(1, round(qa * val_fraction)) if val_fraction > 0 and qa > 1 else 0
    pair = a.pair_tokens or (a.pair_overhead_tokens + a.question_tokens + a.answer_tokens)
    pair = min(pair, float(cfg.train.max_length))
    max_steps = int(cfg.train.trainer.max_steps)
    epochs = int(cfg.train.trainer.max_epochs)
    train_rows = qa - val_rows
    if max_steps > 0:  # a step cap shortens the run
        per_epoch = math.ceil(train_rows / int(cfg.train.batch_size)) if train_rows else 0
        epochs = min(epochs, max_steps / per_epoch) if per_epoch else 0
    return {
        "calls": calls,
        "samples_per_call": n,
        "bait_samples": calls * n,
        "bait_cap": int(s.questions.max_tokens),
        "rewrites_per_call": n * rewrites * int(cfg.dedup.max_rewrites),
        "rewrite_cap": int(s.rewrite.max_tokens),
        "accepted": accepted,
        "embeddings_questions": calls * n * (1 + rewrites),
        "answers_per_question": int(cfg.answers.n),
        "answer_chunk": int(cfg.answers.chunk_size),
        "answer_cap": int(s.answers.max_tokens),
        "qa_pairs": qa,
        "train_rows": train_rows,
        "val_rows": val_rows,
        "pair_tokens": pair,
        "epochs": epochs,
        "train_tokens": train_rows * pair * epochs,
        "val_tokens": val_rows * pair * (epochs + 1),  # validated before training and per epoch
        "train_method": "lora" if cfg.train.get("lora") else "full",
        "gradient_checkpointing": bool(cfg.train.get("gradient_checkpointing", False)),
        "eval_cells": eval_items(cfg) if "eval" in cfg else [],
        "eval_backend": str(_select(cfg, "eval.backend", "hf")),
        "eval_batch": int(_select(cfg, "eval.batch_size", 8)),
        "eval_cap": int(_select(cfg, "eval.max_gen_toks", None) or 256),
        "contamination": bool(_select(cfg, "data.contamination.enabled", False)),
        "contamination_rows": sum(
            CONTAMINATION_ROWS.get(t, 0) for t in _select(cfg, "data.contamination.sets", []) or []
        ),
        "engine_batch": int(_select(cfg, "engine.batch_size", 256)),
        "stages": list(cfg.stages),
    }


# ------------------------------------------------------------------------------- profiles


@dataclass
class Profile:
    name: str
    hardware: str
    generation: Decoder
    eval_generation: Decoder
    eval_vllm: Decoder | None
    prefill_tokens_per_s: float | None
    embed_per_s: (
        float  # one list of sentences at dedup.embed_batch_size (vote's contamination check)
    )
    dedup_points: list[tuple[int, float]]
    train_tokens_per_s: dict
    loglik_items_per_s: float | None
    startup_s: dict
    embed_call_per_s: float | None = None  # the same, in calls of ~100 (the online dedup's use)
    generation_efficiency: float = 0.9
    train_efficiency: float = 0.9
    sources: dict = field(default_factory=dict)


def _load_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def hf_step_points(result: dict) -> list[tuple[int, float]]:
    """(batch, seconds per step) from bench/hf_throughput.py: every micro-batch runs to the cap
    (nearly all of its sequences reach it), so a step = seconds / (micro-batches * max_tokens)."""
    cap = int(result["sampling"]["max_tokens"])
    pts = []
    for r in result["results"]:
        batches = math.ceil(r["sequences"] / r["batch_size"])
        pts.append((int(r["batch_size"]), r["seconds"] / (batches * cap)))
    return pts


def dedup_points_from(results: Path) -> tuple[list[tuple[int, float]], str]:
    """(N, seconds) for our `AcceptedSet.screen`: dedup_scale.json when present, else dedup_speed."""
    scale = _load_json(results / "dedup_scale.json")
    pts = []
    for run in (scale or {}).get("runs", []):  # bench/dedup_scale.py: {n, methods: [...]}
        for m in run.get("methods", []):
            if m.get("method") != "exact":
                continue
            if m.get("measured_n", run["n"]) < run["n"]:  # past --exact-max: its extrapolation
                secs = m.get("seconds_total_estimated")
            else:
                secs = m.get("seconds")
            if secs:
                pts.append((int(run["n"]), float(secs)))
    if pts:
        return pts, "bench/results/dedup_scale.json (exact)"
    speed = _load_json(results / "dedup_speed.json")
    if speed:
        return [(int(speed["n"]), float(speed["seconds_ours"]))], "bench/results/dedup_speed.json"
    return [], "none"


def measured_profile(
    results: Path = RESULTS, hf_result: Path | None = None, eval_hf_result: Path | None = None
) -> Profile:
    """The 2-core CPU profile from this machine's bench/results/*.json (embedded SmolLM2-135M)."""
    hf = _load_json(hf_result or results / "hf_throughput.json")
    if not hf:
        raise FileNotFoundError(f"{results}/hf_throughput.json: run python bench/hf_throughput.py")
    ev = _load_json(eval_hf_result) if eval_hf_result else hf
    gen_pts, ev_pts = hf_step_points(hf), hf_step_points(ev)
    emb = _load_json(results / "embed_throughput.json")
    rows = emb["results"] if emb else []
    one = [r["sentences_per_s"] for r in rows if r["mode"] == "one list" and r["batch_size"] == 64]
    calls = [r["sentences_per_s"] for r in rows if r["mode"].startswith("calls of")]
    embed = one[0] if one else 500.0
    embed_call = calls[0] if calls else embed
    tr = _load_json(results / "train_throughput.json") or {"rows": []}
    train = {r["mode"]: float(r["tokens_per_s"]) for r in tr.get("rows", [])}
    dedup, dedup_src = dedup_points_from(results)
    return Profile(
        name="measured",
        hardware=f"{os.cpu_count()}-core CPU (this machine), SmolLM2-135M-Instruct",
        generation=Decoder.fit(gen_pts, 48, continuous=False),
        eval_generation=Decoder.fit(ev_pts, 8, continuous=False),
        eval_vllm=None,
        prefill_tokens_per_s=None,
        embed_per_s=embed,
        embed_call_per_s=embed_call,
        dedup_points=dedup,
        train_tokens_per_s=train,
        loglik_items_per_s=5.0,
        startup_s={"generation": 4.0, "eval": 10.0, "train": 8.0, "cpu": 1.0},
        sources={
            "generation": f"{hf_result or results / 'hf_throughput.json'} ({hf.get('dtype')}): "
            f"{', '.join(f'b={b}: {s * 1000:.1f} ms/step' for b, s in gen_pts)}",
            "eval_generation": f"{eval_hf_result or 'same file'} ({ev.get('dtype')})",
            "embed": f"bench/results/embed_throughput.json: {embed:.0f}/s in one list (batch 64), "
            f"{embed_call:.0f}/s in calls of 100"
            if emb
            else "DESIGN.md §2.5 (~500/s)",
            "dedup": dedup_src,
            "train": "bench/results/train_throughput.json",
            "loglik_items_per_s": "assumption from conf/eval/demo.yaml: HellaSwag 100 items "
            "'~20 s per stage' on this machine",
            "startup_s": "assumption: embedded model load ~3 s (hf_throughput.json), embedder "
            "~1 s (the demo's vote stage: 1.05 s in all)",
        },
    )


def load_profile(path: Path, fallback: Profile | None = None) -> Profile:
    """A YAML profile (bench/throughputs_h100.yaml); CPU-side figures come from `fallback`."""
    import yaml

    d = yaml.safe_load(Path(path).read_text())

    def decoder(key: str) -> Decoder:
        g = d[key]
        if "same_as" in g:
            return decoder(g["same_as"])
        return Decoder.through(
            *g["points"][:2], g.get("max_batch", g["points"][-1][0]), bool(g["continuous"])
        )

    fb = fallback
    scaling = d.get("scaling", {})
    return Profile(
        name=d["name"],
        hardware=d["hardware"],
        generation=decoder("generation"),
        eval_generation=decoder("eval_generation"),
        eval_vllm=decoder("eval_vllm_generation") if "eval_vllm_generation" in d else None,
        prefill_tokens_per_s=d.get("prefill_tokens_per_s"),
        embed_per_s=d.get("embed_per_s") or (fb.embed_per_s if fb else 500.0),
        embed_call_per_s=d.get("embed_call_per_s") or (fb.embed_call_per_s if fb else None),
        dedup_points=d.get("dedup_points") or (fb.dedup_points if fb else []),
        train_tokens_per_s=d["train_tokens_per_s"],
        loglik_items_per_s=d.get("loglik_items_per_s"),
        startup_s=d.get("startup_s", {}),
        generation_efficiency=float(scaling.get("generation_efficiency", 0.9)),
        train_efficiency=float(scaling.get("train_efficiency", 0.9)),
        sources={
            "generation": d["generation"].get("sources", []),
            "eval_generation": d["eval_generation"].get("sources", []),
            "prefill": d.get("prefill_source"),
            "train": d.get("train_source"),
            "embed, dedup": "the driver's CPU: " + (fb.sources.get("embed", "") if fb else ""),
        },
    )


# ---------------------------------------------------------------------------- stage costs


def cap(tokens: float | None, limit: int) -> float:
    """An assumed length capped by the config's token limit (None: the limit itself)."""
    return float(limit) if tokens is None else min(float(tokens), float(limit))


def stage_costs(w: dict, p: Profile, a: Assumptions) -> list[StageCost]:
    """Seconds of work per stage (one GPU / the CPU machine) for workload `w` on profile `p`."""
    gen = p.generation
    if not gen.continuous:  # the hf engine's micro-batch comes from the config
        gen = gen.with_batch(w["engine_batch"])
    su = p.startup_s
    out = {}

    # questions: sequential bait calls; each waits for its rewrite call; dedup on the CPU
    bait = w["calls"] * call_seconds(
        gen,
        w["samples_per_call"],
        min(a.question_tokens, w["bait_cap"]),
        cap(a.bait_tail_tokens, w["bait_cap"]),
    )
    rw_seqs = w["rewrites_per_call"]
    rewrite = (
        w["calls"]
        * call_seconds(
            gen,
            rw_seqs,
            min(a.rewrite_tokens, w["rewrite_cap"]),
            cap(a.rewrite_tail_tokens, w["rewrite_cap"]),
        )
        if rw_seqs
        else 0.0
    )
    embed = w["embeddings_questions"] / (p.embed_call_per_s or p.embed_per_s)
    dedup = dedup_seconds(p.dedup_points, w["embeddings_questions"])
    out["questions"] = StageCost(
        "questions",
        parallel_s=bait,
        serial_s=rewrite + embed + dedup,
        startup_s=su.get("generation", 0) + su.get("cpu", 0),
        scaling="replicas",
        detail={"bait_s": bait, "rewrite_s": rewrite, "embed_s": embed, "dedup_s": dedup},
    )

    # answers: chunks of chunk_size questions x n answers, one generate call each
    q, chunk, k = w["accepted"], w["answer_chunk"], w["answers_per_question"]
    full, rest = divmod(q, chunk)
    mean, tail = min(a.answer_tokens, w["answer_cap"]), cap(a.answer_tail_tokens, w["answer_cap"])
    ans = full * call_seconds(gen, chunk * k, mean, tail) + (
        call_seconds(gen, rest * k, mean, tail) if rest else 0
    )
    out["answers"] = StageCost(
        "answers",
        parallel_s=ans,
        startup_s=su.get("generation", 0),
        scaling="replicas",
        detail={"chunks": full + (1 if rest else 0)},
    )

    # vote: CPU only: voting is instant; the contamination check embeds the QA questions (+ the test
    # sets on a first run: cached under models_dir afterwards)
    emb_n = w["qa_pairs"] + (w["contamination_rows"] if a.embed_test_sets else 0)
    out["vote"] = StageCost(
        "vote",
        serial_s=(emb_n / p.embed_per_s) if w["contamination"] else 0.0,
        startup_s=su.get("cpu", 0),
        detail={"embeddings": emb_n},
    )

    # train: real tokens x padding / tokens-per-s; validation passes are forward-only
    method = w["train_method"]
    tps = float(p.train_tokens_per_s.get(method) or 0.0)
    fwd_share = 0.5 if method == "lora" else 1 / 3  # forward FLOPs / training FLOPs per token
    ckpt = (1.5 if method == "lora" else 4 / 3) if w["gradient_checkpointing"] else 1.0
    tokens = (w["train_tokens"] * ckpt + w["val_tokens"] * fwd_share) * a.padding_factor
    train_s = tokens / tps if tps and tokens else (float("nan") if tokens else 0.0)
    out["train"] = StageCost(
        "train",
        parallel_s=train_s,
        startup_s=su.get("train", 0),
        scaling="ddp",
        detail={"tok/s": tps, "weighted_tokens": round(tokens)},
    )

    # eval: one lm-eval run per (task, shots); each eval stage runs all of them
    vllm = w["eval_backend"] == "vllm"
    dec = (p.eval_vllm or p.generation) if vllm else p.eval_generation.with_batch(w["eval_batch"])
    ecap = w["eval_cap"]
    secs, note = 0.0, []
    for task, shots, items in w["eval_cells"]:
        if task in LOGLIK_TASKS:
            if p.loglik_items_per_s:
                secs += items / p.loglik_items_per_s
            else:
                note.append(f"{task}: log-likelihood not modelled")
            continue
        prompt = items * (a.eval_question_tokens + shots * a.shot_tokens)
        secs += call_seconds(
            dec, items, min(a.eval_gen_tokens, ecap), cap(a.eval_tail_tokens, ecap)
        )
        secs += prompt / p.prefill_tokens_per_s if p.prefill_tokens_per_s else 0.0
    scaling = "replicas" if vllm else "none"
    for st in ("eval_base", "eval_trained"):
        out[st] = StageCost(
            st,
            parallel_s=secs,
            startup_s=su.get("eval", 0),
            scaling=scaling,
            detail={"items": sum(c[2] for c in w["eval_cells"]), "notes": note},
        )
    return [out[s] for s in w["stages"] if s in out]


# -------------------------------------------------------------------- the demo sanity check


def demo_assumptions(manifest: dict, base: Assumptions) -> Assumptions:
    """Behaviour measured in a demo run (acceptance, tokens per sample): not what the check tests
    (the throughput model), so it is taken from the run instead of assumed."""
    st = manifest["stages"]
    qm, am = st["questions"]["metrics"], st["answers"]["metrics"]
    vm, tm = st["vote"]["metrics"], st["train"]["metrics"]
    a = dataclasses.replace(base, sources={})
    a.acceptance = qm["accepted"] / max(1, qm["samples"])  # kept questions over all samples drawn
    a.question_tokens = (qm.get("bait_tokens_generated") or 0) / max(1, qm["samples"])
    a.bait_tail_tokens = None
    a.rewrite_share = qm.get("rewritten", 0) / max(1, qm["samples"])
    a.answer_tokens = float(am["mean_response_tokens"])
    a.answer_tail_tokens = None
    a.qa_yield = vm["qa_pairs"] / max(1, vm["questions"])
    a.pair_tokens = float(
        tm["mean_tokens"]
    )  # what the trainer saw: template + question + chosen answer
    a.eval_tail_tokens = None
    a.embed_test_sets = False  # the demo runs found the test-set embeddings cached
    a.sources = {
        k: "measured in the demo run's manifest"
        for k in (
            "acceptance",
            "question_tokens",
            "rewrite_share",
            "answer_tokens",
            "qa_yield",
            "pair_tokens",
        )
    }
    a.sources["bait_tail_tokens"] = "the token cap (hf micro-batches run to their longest sample)"
    return a


def comparable(stage: str, metrics: dict, w: dict, tol: float = 0.15) -> bool:
    """Did a measured stage run do the work `w` predicts (within `tol`)? Runs of a sweep that
    changed the work (k=1 votes train on fewer pairs) or reused cached samples are not compared."""

    def near(x, y):
        return bool(x) and bool(y) and abs(x - y) <= tol * y

    if stage == "questions":  # its own bait sampling (not from the generation cache)
        return bool(metrics.get("bait_tokens_generated")) and near(
            metrics.get("samples"), w["bait_samples"]
        )
    if stage == "answers":
        return near(metrics.get("responses"), w["accepted"] * w["answers_per_question"])
    if stage == "vote":
        return near(metrics.get("questions"), w["accepted"])
    if stage == "train":
        return near(metrics.get("tokens"), w["train_tokens"])
    if stage.startswith("eval"):
        return near(metrics.get("items"), sum(c[2] for c in w["eval_cells"]))
    return True


def measured_stage_seconds(paths: list[str], w: dict) -> dict[str, list[float]]:
    """Stage -> seconds over the demo manifests where the stage was computed (not reused) and did
    comparable work."""
    out: dict[str, list[float]] = {}
    for path in paths:
        m = _load_json(Path(path))
        for stage, s in (m or {}).get("stages", {}).items():
            if s.get("status") != "computed" or not s.get("seconds"):
                continue
            if comparable(stage, s.get("metrics") or {}, w):
                out.setdefault(stage, []).append(float(s["seconds"]))
    return out


# ------------------------------------------------------------------------------- printing


def fmt_time(s: float) -> str:
    if s != s:  # nan
        return "n/a"
    if s < 90:
        return f"{s:.0f} s"
    if s < 5400:
        return f"{s / 60:.1f} min"
    return f"{s / 3600:.2f} h"


def prediction_table(costs: list[StageCost], p: Profile, gpus: list[int]) -> tuple[str, list]:
    head = "| stage | scales with GPUs | " + " | ".join(
        f"{g} GPU{'s' if g > 1 else ''}: wall | GPU-h" for g in gpus
    )
    lines = [head + " |", "|---|---|" + "---:|---:|" * len(gpus)]
    allrows = {g: estimate(costs, g, p.generation_efficiency, p.train_efficiency) for g in gpus}
    how = {"replicas": "data-parallel replicas", "ddp": "DDP", "none": "no"}
    for i, c in enumerate(costs):
        cells = " | ".join(
            f"{fmt_time(allrows[g][i]['wall_s'])} | {allrows[g][i]['gpu_hours']:.2f}" for g in gpus
        )
        lines.append(f"| {c.stage} | {how[c.scaling]} | {cells} |")
    tot = " | ".join(
        f"**{fmt_time(sum(r['wall_s'] for r in allrows[g]))}** | "
        f"**{sum(r['gpu_hours'] for r in allrows[g]):.2f}**"
        for g in gpus
    )
    lines.append(f"| **total** | | {tot} |")
    return "\n".join(lines), allrows


def compose(experiment: str | None, overrides: list[str]):
    sys.path.insert(0, str(ROOT))
    from crescent.cli import compose as compose_config

    return compose_config(([f"experiments={experiment}"] if experiment else []) + list(overrides))


def apply_sets(a: Assumptions, sets: list[str]) -> Assumptions:
    for item in sets:
        key, _, value = item.partition("=")
        if not hasattr(a, key) or key == "sources":
            raise SystemExit(
                f"--set {item}: unknown assumption; known: "
                f"{', '.join(f.name for f in dataclasses.fields(a) if f.name != 'sources')}"
            )
        cur = getattr(a, key)
        v = (
            None
            if value.lower() in ("none", "null")
            else (value.lower() in ("1", "true", "yes") if isinstance(cur, bool) else float(value))
        )
        setattr(a, key, v)
        a.sources[key] = f"--set {item}"
    return a


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--experiment", default="paper_llama3_self_improve", help="experiments/NAME.yaml"
    )
    ap.add_argument(
        "--profile",
        type=Path,
        default=ROOT / "bench" / "throughputs_h100.yaml",
        help="YAML profile of published figures, or 'measured'",
    )
    ap.add_argument("--gpus", default="1,8", help="GPU counts to predict, e.g. 1,2,8")
    ap.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override an assumption, e.g. acceptance=0.6 (see Assumptions)",
    )
    ap.add_argument("--demo-experiment", default="demo_self_improve")
    ap.add_argument(
        "--demo-manifest",
        default="/work/demo_runs/demo_self_improve/default/manifest.json",
        help="the demo run whose behaviour (acceptance, tokens) feeds the check",
    )
    ap.add_argument(
        "--demo-runs",
        default="/work/demo_runs/demo_self_improve/**/manifest.json",
        help="glob of demo manifests whose measured stage seconds are compared",
    )
    ap.add_argument(
        "--hf-result",
        type=Path,
        default=None,
        help="hf_throughput JSON for the demo engine (default: results/hf_throughput_bf16.json if "
        "present, else results/hf_throughput.json)",
    )
    ap.add_argument("--demo-only", action="store_true")
    ap.add_argument("--out", type=Path, default=RESULTS / "cost_model.json")
    ap.add_argument("overrides", nargs="*", help="Hydra overrides for the paper-scale config")
    args = ap.parse_args(argv)
    gpus = [int(g) for g in args.gpus.split(",")]
    result: dict = {
        "date": dt.date.today().isoformat(),
        "command": " ".join(
            ["python", "bench/cost_model.py", *(sys.argv[1:] if argv is None else argv)]
        ),
    }

    # the demo's engine samples in bf16 on this CPU (engine.dtype=auto) while lm-eval loads the
    # fp32 folder: a bf16 hf_throughput run, when there is one, is the generation profile
    bf16 = RESULTS / "hf_throughput_bf16.json"
    hf_result = args.hf_result or (bf16 if bf16.is_file() else None)
    cpu = measured_profile(RESULTS, hf_result, RESULTS / "hf_throughput.json")
    if not args.demo_only:
        prof = cpu if str(args.profile) == "measured" else load_profile(args.profile, cpu)
        cfg = compose(args.experiment, args.overrides)
        a = apply_sets(Assumptions(sources=dict(PAPER_SOURCES)), args.set)
        w = workload(cfg, a)
        costs = stage_costs(w, prof, a)
        table, rows = prediction_table(costs, prof, gpus)
        print(f"# {args.experiment} on {prof.hardware} (profile {prof.name})\n")
        print("Workload (from the composed config and the assumptions):")
        for k in (
            "calls",
            "samples_per_call",
            "bait_samples",
            "bait_cap",
            "rewrites_per_call",
            "accepted",
            "embeddings_questions",
            "answers_per_question",
            "answer_chunk",
            "answer_cap",
            "qa_pairs",
            "train_rows",
            "pair_tokens",
            "epochs",
            "train_tokens",
            "train_method",
            "eval_backend",
            "eval_batch",
            "eval_cap",
        ):
            print(f"  {k}: {w[k]:,.0f}" if isinstance(w[k], float) else f"  {k}: {w[k]}")
        print(f"  eval cells (task, shots, items): {w['eval_cells']}")
        print("Assumptions:")
        for f in dataclasses.fields(a):
            if f.name != "sources":
                print(f"  {f.name} = {getattr(a, f.name)}  ({a.sources.get(f.name, 'default')})")
        print()
        print(table)
        print()
        for c in costs:
            if c.detail:
                print(
                    f"  {c.stage}: "
                    + ", ".join(
                        f"{k} {fmt_time(v) if k.endswith('_s') else v}" for k, v in c.detail.items()
                    )
                )
        result["paper"] = {
            "experiment": args.experiment,
            "profile": prof.name,
            "profile_sources": prof.sources,
            "workload": w,
            "assumptions": dataclasses.asdict(a),
            "table": table,
            "rows": rows,
            "costs": [dataclasses.asdict(c) for c in costs],
        }

    # the demo check: the same model on this machine's measured profile vs measured demo runs
    man = _load_json(Path(args.demo_manifest))
    if man:
        dcfg = compose(args.demo_experiment, [])
        da = demo_assumptions(man, Assumptions())
        dw = workload(dcfg, da)
        dcosts = stage_costs(dw, cpu, da)
        measured = measured_stage_seconds(sorted(glob.glob(args.demo_runs, recursive=True)), dw)
        print(f"\n# demo check: {args.demo_experiment} on {cpu.hardware}\n")
        print(f"generation profile: {cpu.sources['generation']}")
        print("| stage | predicted | measured (median, runs) | predicted / measured |")
        print("|---|---:|---:|---:|")
        check = []
        for c in dcosts:
            pred = c.wall(1, 1.0, 1.0)
            ms = measured.get(c.stage, [])
            med = statistics.median(ms) if ms else None
            ratio = f"{pred / med:.2f}" if med else "n/a"
            runs = ", ".join(f"{x:.0f}" for x in sorted(ms))
            print(
                f"| {c.stage} | {pred:.0f} s | {med:.0f} s ({runs}) | {ratio} |"
                if med
                else f"| {c.stage} | {pred:.0f} s | not measured | n/a |"
            )
            check.append({"stage": c.stage, "predicted_s": pred, "measured_s": ms})
        first = dataclasses.replace(da, embed_test_sets=True)
        vote1 = next(c for c in stage_costs(dw, cpu, first) if c.stage == "vote").wall(1, 1, 1)
        print(f"| vote, first run (embeds the {dw['contamination_rows']:,} test-set questions "
              f"once; cached after) | {vote1:.0f} s | | |")  # fmt: skip
        check.append({"stage": "vote (first run)", "predicted_s": vote1, "measured_s": []})
        result["demo"] = {
            "experiment": args.demo_experiment,
            "manifest": args.demo_manifest,
            "profile_sources": cpu.sources,
            "workload": dw,
            "assumptions": dataclasses.asdict(da),
            "check": check,
        }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2, default=str) + "\n")
    print(f"\nwrote {args.out}")
    return result


if __name__ == "__main__":
    try:
        main()
    except FileNotFoundError as e:  # a measured profile this machine has not run yet
        sys.exit(f"error: {e}")
