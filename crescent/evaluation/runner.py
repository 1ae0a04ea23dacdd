"""Run lm-eval once per (task, shots) and keep each run as a chunk, so a partial eval resumes.

For every cell of `eval.tasks` x shots (`eval.shots`, or `eval.per_task.<task>.shots`) the runner
calls `lm_eval.simple_evaluate` with the model built once per stage, lm-eval's own seeds (those of
its command line: 0, 1234, 1234, `eval.fewshot_seed`), `log_samples=True`, and the concrete task
YAMLs written into the stage entry (`tasks/`). It writes, inside the stage's cache entry:

    samples/<task>-<shots>shot.jsonl    lm-eval's per-question samples (one row per question and
                                        filter) + `num_tokens` / `hit_limit` for generations
    chunks/<task>-<shots>shot.json      the cell's scores, lm-eval's results/configs, timings and
                                        warnings; written last, so its presence marks the cell done
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from crescent.errors import ConfigError
from crescent.evaluation import results as R
from crescent.evaluation.registry import TASKS, data_source, write_task_yamls
from crescent.fsutil import atomic_write_json, atomic_write_text

LM_EVAL_KEYS = ("results", "n-shot", "n-samples", "configs", "versions", "higher_is_better")


def cell_name(task: str, shots: int) -> str:
    return f"{task}-{shots}shot"


def task_settings(e, task: str) -> tuple[list[int], float | int | None]:
    """(shots, limit) of one task: `eval.per_task.<task>.shots` / `.limit`, where set, replace
    `eval.shots` / `eval.limit` for that task."""
    per = (e.get("per_task") or {}).get(task) or {}
    shots = [int(s) for s in (per.get("shots") if per.get("shots") is not None else e.shots)]
    limit = per.get("limit") if per.get("limit") is not None else e.get("limit")
    return shots, limit


def plan_cells(e) -> list[tuple[str, int, float | int | None]]:
    return [(t, s, task_settings(e, t)[1]) for t in e.tasks for s in task_settings(e, t)[0]]


def check_eval_config(cfg) -> None:
    """Plan-time checks (one line each, before any model loads): tasks, shots, data, backend."""
    import importlib.util

    e = cfg.eval
    for t in e.tasks:
        if t not in TASKS:
            raise ConfigError(f"eval.tasks: unknown task '{t}'; allowed: {', '.join(TASKS)}")
    for t in e.get("per_task") or {}:
        if t not in TASKS:
            raise ConfigError(f"eval.per_task: unknown task '{t}'; allowed: {', '.join(TASKS)}")
    for t, shots, _ in plan_cells(e):
        if shots < 0:
            raise ConfigError(f"eval.shots: {shots} for task {t}: a shot count must be >= 0")
        cap = TASKS[t].max_shots
        if cap is not None and shots > cap:
            raise ConfigError(
                f"eval task {t}: {shots}-shot asked, but its fixed exemplar pool has {cap}; "
                f"set eval.per_task.{t}.shots (e.g. [0,{cap}])"
            )
    for t in e.tasks:
        data_source(TASKS[t], cfg.paths.data_dir)
    if importlib.util.find_spec("lm_eval") is None:
        raise ConfigError("eval: the lm-eval package is not installed (pip install lm-eval)")
    if e.backend == "vllm" and importlib.util.find_spec("vllm") is None:
        raise ConfigError(
            "eval.backend=vllm: the vllm package is not installed (GPU: pip install -e .[vllm]; "
            "CPU: make vllm-env and run with .venv-vllm/bin/python)"
        )


def _seeds(e) -> dict:
    return {
        "random_seed": 0,
        "numpy_random_seed": 1234,
        "torch_random_seed": 1234,
        "fewshot_random_seed": int(e.fewshot_seed),
    }


def _count_tokens(lm, text: str) -> int:
    return len(lm.tokenizer(text, add_special_tokens=False)["input_ids"])


def run_cell(lm, task_manager, e, task: str, shots: int, limit, samples_path: Path) -> dict:
    """One lm-eval run; writes the samples file and returns the chunk record (not yet saved)."""
    import lm_eval
    from lm_eval.utils import handle_non_serializable

    lm_task = TASKS[task].lm_eval_name
    chat = bool(e.apply_chat_template)
    gen = {"max_gen_toks": int(e.max_gen_toks)} if e.get("max_gen_toks") else None
    t0 = time.time()
    out = lm_eval.simple_evaluate(
        model=lm,
        tasks=[lm_task],
        num_fewshot=shots,
        limit=limit,
        log_samples=True,
        apply_chat_template=chat,
        fewshot_as_multiturn=chat,
        system_instruction=e.get("system_instruction"),
        gen_kwargs=gen,
        task_manager=task_manager,
        **_seeds(e),
    )
    seconds = time.time() - t0
    samples = out.pop("samples")[lm_task]
    config = out["configs"][lm_task]
    warnings = []
    if msg := R.fewshot_mismatch(out, lm_task, shots):
        raise ConfigError(msg)
    max_gen = None
    if config.get("output_type") == "generate_until":
        max_gen = int(
            (config.get("generation_kwargs") or {}).get("max_gen_toks") or lm.max_gen_toks
        )
        for row in samples:
            text = row["resps"][0][0] if row["resps"] and row["resps"][0] else ""
            row["num_tokens"] = _count_tokens(lm, text)
            row["hit_limit"] = R.hit_limit(row["num_tokens"], max_gen)
    lines = "".join(
        json.dumps(r, default=handle_non_serializable, ensure_ascii=False) + "\n" for r in samples
    )
    atomic_write_text(samples_path, lines)
    samples = [json.loads(x) for x in lines.splitlines()]
    cells = R.cells_from_results(out, lm_task, task, shots, chat)
    if task == "gsm_plus_mini":
        cells += R.gsm_plus_split(samples, cells, task)
    n = cells[0]["n"] if cells else 0
    flags = [r["hit_limit"] for r in _one_filter(samples) if "hit_limit" in r]
    share = R.token_limit_share(flags)
    if max_gen and (w := R.token_limit_warning(task, shots, share, max_gen)):
        warnings.append(w)
    warnings += R.strict_flexible_gaps(cells)
    return {
        "task": task,
        "shots": shots,
        "lm_eval_task": lm_task,
        "limit": limit,
        "n": n,
        "chat_template": chat,
        "max_gen_toks": max_gen,
        "hit_limit_share": round(share, 4) if max_gen else None,
        "seconds": round(seconds, 2),
        "seconds_per_item": round(seconds / n, 3) if n else None,
        "cells": cells,
        "warnings": warnings,
        # lm-eval's configs hold functions (process_docs, ...): stored as lm-eval stores them
        "lm_eval": json.loads(
            json.dumps(
                {k: out[k] for k in LM_EVAL_KEYS if k in out}, default=handle_non_serializable
            )
        ),  # fmt: skip
    }


def _one_filter(samples: list[dict]) -> list[dict]:
    first = samples[0]["filter"] if samples else None
    return [r for r in samples if r["filter"] == first]


def evaluate_all(ctx, model_path: str, adapter: Path | None) -> list[dict]:
    """Every (task, shots) cell of the config: reuse finished chunks, run the rest; returns records."""
    cfg, e = ctx.cfg, ctx.cfg.eval
    cells = plan_cells(e)
    tasks_dir = write_task_yamls(list(e.tasks), cfg.paths.data_dir, ctx.entry.path("tasks"))
    lm, task_manager, records = None, None, []
    for i, (task, shots, limit) in enumerate(cells, 1):
        chunk = ctx.entry.chunk(cell_name(task, shots) + ".json")
        if chunk.is_file():
            record = json.loads(chunk.read_text())
            print(
                f"[crescent] {ctx.planned.stage.name}: {cell_name(task, shots)} reused", flush=True
            )
        else:
            if lm is None:
                from lm_eval.tasks import TaskManager

                from crescent.evaluation.backends import build_lm

                lm, _, _ = build_lm(cfg, model_path, adapter)
                task_manager = TaskManager(include_path=str(tasks_dir))
            print(f"[crescent] {ctx.planned.stage.name}: {cell_name(task, shots)} "
                  f"({i}/{len(cells)}, limit={limit})", flush=True)  # fmt: skip
            samples_path = ctx.entry.path(f"samples/{cell_name(task, shots)}.jsonl")
            record = run_cell(lm, task_manager, e, task, shots, limit, samples_path)
            record["source"] = data_source(TASKS[task], cfg.paths.data_dir)
            atomic_write_json(chunk, record)
        for w in record["warnings"]:
            ctx.warn(w)
        records.append(record)
    if lm is not None:
        from crescent.engines.base import free_memory

        del lm, task_manager
        free_memory()
    return records


def read_samples(entry_dir: Path, task: str, shots: int) -> list[dict] | None:
    p = Path(entry_dir) / "samples" / f"{cell_name(task, shots)}.jsonl"
    if not p.is_file():
        return None
    return [json.loads(x) for x in p.read_text(encoding="utf-8").splitlines() if x]
