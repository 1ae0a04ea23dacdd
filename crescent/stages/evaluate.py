"""Stages `eval_base` and `eval_trained`: lm-evaluation-harness scores before and after training.

eval_base
    Reads:  nothing (the base model `model`).
    Writes: results.json; samples/<task>-<shots>shot.jsonl; chunks/<task>-<shots>shot.json;
            tasks/*.yaml (the concrete lm-eval task YAMLs used).
eval_trained
    Reads:  train_outputs.json from stage `train` (LoRA: its base model + `adapter/`; full
            fine-tuning: `model/`), or the user's `eval.adapter=PATH` (a PEFT adapter folder on the
            configured model, or a full model folder such as the train stage's `merged/`), checked
            before any model loads.
    Writes: the same files as eval_base.

results.json: {stage, model, adapter, backend, model_args, apply_chat_template, batch_size,
gen_kwargs, data_dir,
cells: [{task, shots, num_fewshot, metric, filter, key, value, stderr, n, chat_template}],
runs: [{task, shots, lm_eval_task, limit, n, max_gen_toks, hit_limit_share, seconds,
seconds_per_item, source, warnings}]}. The stage metrics (W&B summary) are
`<stage>/<task>/<shots>shot/<key>` (key: strict-match, flexible-extract, acc, acc_norm,
math_verify) plus `.../n` and `.../chat_template` next to every number.
"""

from __future__ import annotations

import json
from pathlib import Path

from crescent.evaluation import results as R
from crescent.evaluation.backends import adapter_kind, trained_target
from crescent.evaluation.registry import data_digest, task_code_identity
from crescent.evaluation.runner import check_eval_config, evaluate_all, plan_cells, read_samples
from crescent.fsutil import atomic_write_json, sha256_file, sha256_json
from crescent.models import model_identity

RESULTS = "results.json"
TRAIN_OUTPUTS = "train_outputs.json"  # written by stage `train`: which folders it saved


def hashed(cfg) -> dict:
    """What changes the scores: model, tasks and their data, shots, limits, prompts, decoding, batch.

    `eval.batch_size` is hashed: batched greedy decoding with padding can change a generation.
    """
    e = cfg.eval
    return {
        "model": model_identity(cfg.model),
        "backend": e.backend,
        "cells": [list(c) for c in plan_cells(e)],
        "data": data_digest(list(e.tasks), cfg.paths.data_dir),
        "apply_chat_template": bool(e.apply_chat_template),
        "system_instruction": e.get("system_instruction"),
        "max_gen_toks": e.get("max_gen_toks"),
        "batch_size": e.batch_size,
        "fewshot_seed": int(e.fewshot_seed),
        "lm_eval": task_code_identity(list(e.tasks)),
    }


def open_adapter(cfg, path: Path, label: str) -> tuple[dict[str, Path], str]:
    """`eval.adapter=PATH`: check it exists (one line if not) and fingerprint its files.

    PATH may be a PEFT adapter folder, a full model folder, or a train stage entry (its
    train_outputs.json says which folder to use)."""
    if (path / TRAIN_OUTPUTS).is_file():
        out = path / TRAIN_OUTPUTS
        return {TRAIN_OUTPUTS: out}, sha256_json({"train_outputs": sha256_file(out)})
    kind = adapter_kind(path, label)
    folder = path.parent if path.is_file() else path
    files = sorted(p for p in folder.iterdir() if p.is_file())
    digest = sha256_json({"kind": kind, "files": {p.name: sha256_file(p) for p in files}})
    return {TRAIN_OUTPUTS: folder}, digest


def run_base(ctx) -> dict:
    return _evaluate(ctx, ctx.resources.model_path(), adapter=None)


def run_trained(ctx) -> dict:
    source = Path(ctx.planned.inputs[TRAIN_OUTPUTS])
    label = f"the model trained by stage train ({source})"
    model_path, adapter = trained_target(source, ctx.resources.model_path(), label)
    metrics = _evaluate(ctx, model_path, adapter)
    _compare_with_base(ctx)
    return metrics


def _evaluate(ctx, model_path: str, adapter: Path | None) -> dict:
    cfg, e = ctx.cfg, ctx.cfg.eval
    records = evaluate_all(ctx, model_path, adapter)
    cells = [c for r in records for c in r["cells"]]
    from crescent.evaluation.backends import model_args

    _, args = model_args(cfg, model_path, adapter)
    doc = {
        "stage": ctx.planned.stage.name,
        "model": cfg.model.name,
        "model_path": model_path,
        "adapter": str(adapter) if adapter else None,
        "backend": e.backend,
        "model_args": args,
        "apply_chat_template": bool(e.apply_chat_template),
        "batch_size": e.batch_size,
        "gen_kwargs": {"max_gen_toks": int(e.max_gen_toks)} if e.get("max_gen_toks") else None,
        "data_dir": str(Path(cfg.paths.data_dir).resolve()),
        "cells": cells,
        "runs": [{k: v for k, v in r.items() if k not in ("cells", "lm_eval")} for r in records],
    }
    atomic_write_json(ctx.entry.path(RESULTS), doc, sort_keys=False)
    _log_samples(ctx, records)
    items = sum(r["n"] for r in records)
    secs = sum(r["seconds"] for r in records)
    return {
        **R.nested_metrics(cells),
        "items": items,
        "seconds_per_item": round(secs / items, 3) if items else None,
        "apply_chat_template": bool(e.apply_chat_template),
    }


def _log_samples(ctx, records: list[dict]) -> None:
    """W&B table of per-question samples: one row per question, filter and (task, shots)."""
    if not ctx.tracker or getattr(ctx.tracker, "run", None) is None:
        return
    rows = [
        sample_row(r["task"], r["shots"], r["chat_template"], s)
        for r in records
        for s in read_samples(ctx.entry.dir, r["task"], r["shots"]) or []
    ]
    ctx.tracker.table(f"{ctx.planned.stage.name}/samples", rows, SAMPLE_COLUMNS)


SAMPLE_COLUMNS = ["task", "shots", "doc_id", "filter", "question", "target", "response",
                  "extracted", "score", "hit_limit", "chat_template"]  # fmt: skip


def sample_row(task: str, shots: int, chat_template: bool, s: dict) -> dict:
    """One lm-eval sample as a W&B table row. Text columns are strings for every task type (a
    generation, or a log-likelihood and a label index), since a W&B column keeps one type."""
    doc = s.get("doc") or {}
    question = doc.get("question") or doc.get("problem") or doc.get("query") or doc.get("ctx")
    return {
        "task": task, "shots": shots, "doc_id": s["doc_id"], "filter": s["filter"],
        "question": _text(question), "target": _text(s.get("target")),
        "response": _text(_first(s.get("resps"))), "extracted": _text(_first(s.get("filtered_resps"))),
        "score": json.dumps({m: s.get(m) for m in s.get("metrics", [])}),
        "hit_limit": s.get("hit_limit"), "chat_template": chat_template,
    }  # fmt: skip


def _text(x) -> str:
    return "" if x is None else x if isinstance(x, str) else json.dumps(x)


def _first(x):
    while isinstance(x, list) and x:
        x = x[0]
    return x if not isinstance(x, list) else None


def _compare_with_base(ctx) -> None:
    """Warn when the adapter changed no output of the questions the base model also answered."""
    from crescent.pipeline import _plan_stage, _stage_table

    table = _stage_table()
    base = _plan_stage(ctx.cfg, table["eval_base"], {}, table, implicit=True)
    compared = identical = 0
    for task, shots, _ in plan_cells(ctx.cfg.eval):
        a = read_samples(base.entry.dir, task, shots)
        b = read_samples(ctx.entry.dir, task, shots)
        if a and b and "resps" in a[0]:
            c, i = R.unchanged_outputs(a, b)
            compared, identical = compared + c, identical + i
    if msg := R.unchanged_warning(compared, identical):
        ctx.warn(msg)
    from crescent.evaluation.report import before_after_rows, load_results

    base_doc, mine = load_results(base.entry.dir), load_results(ctx.entry.dir)
    if base_doc and mine and ctx.tracker:
        rows = before_after_rows(base_doc["cells"], mine["cells"])
        cols = ["task", "shots", "metric", "base", "trained", "delta", "n_base", "n_trained",
                "chat_template"]  # fmt: skip
        ctx.tracker.table("eval_trained/before_after", rows, cols)


check_config = check_eval_config
