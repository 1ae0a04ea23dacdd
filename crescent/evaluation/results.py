"""Pure functions from lm-eval's output to score cells, and the sanity checks run on them.

A *cell* is one number: (task, shots, metric, filter) -> value, with the items it was computed
on (`n`) and whether a chat template was applied (`chat_template`). The W&B / metrics key of a
cell is `<task>/<shots>shot/<key>`, where `key` is the filter name for filtered metrics
(`strict-match`, `flexible-extract`) and the metric name otherwise (`acc`, `acc_norm`,
`math_verify`).
"""

from __future__ import annotations

import json
from collections import defaultdict

STRICT, FLEXIBLE = "strict-match", "flexible-extract"


def metric_key(metric: str, filt: str) -> str:
    return metric if filt in ("none", "", None) else filt


def cells_from_results(
    results: dict, lm_task: str, task: str, shots: int, chat: bool
) -> list[dict]:
    """Score cells of one (task, shots) lm-eval run (`simple_evaluate(...)` output)."""
    scores = results["results"][lm_task]
    n = int(results["n-samples"][lm_task]["effective"])
    nshot = int(results["n-shot"][lm_task])
    cells, seen = [], set()
    for name, value in scores.items():
        if name == "alias" or "," not in name or "_stderr," in name:
            continue
        metric, filt = name.split(",", 1)
        key = metric_key(metric, filt)
        if key in seen:
            raise ValueError(f"{lm_task}: two metrics map to the key '{key}' ({name})")
        seen.add(key)
        stderr = scores.get(f"{metric}_stderr,{filt}")
        cells.append(
            {
                "task": task,
                "shots": shots,
                "num_fewshot": nshot,
                "metric": metric,
                "filter": filt,
                "key": key,
                "value": None if value is None else float(value),
                "stderr": float(stderr) if isinstance(stderr, (int, float)) else None,
                "n": n,
                "chat_template": chat,
            }
        )
    return cells


def fewshot_mismatch(results: dict, lm_task: str, requested: int) -> str | None:
    """A message when lm-eval used another num_fewshot than requested (a YAML pinning it wins)."""
    got = results["n-shot"].get(lm_task)
    if got is None or int(got) != int(requested):
        return (
            f"{lm_task}: asked for {requested}-shot but lm-eval ran {got}-shot "
            "(the task YAML pins num_fewshot)"
        )
    return None


def subset_cells(samples: list[dict], base: dict, label: str, keep) -> list[dict]:
    """Cells recomputed from per-question samples on the rows where keep(doc) is true."""
    by_filter: dict[str, list[float]] = defaultdict(list)
    metric = base["metric"]
    for row in samples:
        if keep(row["doc"]) and metric in row:
            by_filter[row["filter"]].append(float(row[metric]))
    out = []
    for filt, vals in by_filter.items():
        out.append({**base, "task": label, "filter": filt, "key": metric_key(metric, filt),
                    "value": sum(vals) / len(vals), "stderr": None, "n": len(vals)})  # fmt: skip
    return out


def gsm_plus_split(samples: list[dict], cells: list[dict], task: str) -> list[dict]:
    """GSM-Plus-mini: the 300 'critical thinking' items (gold "None") reported apart from the rest."""
    if not cells:
        return []
    critical = lambda d: str(d.get("answer")) == "None"  # noqa: E731
    return subset_cells(
        samples, cells[0], f"{task}:numeric", lambda d: not critical(d)
    ) + subset_cells(samples, cells[0], f"{task}:critical_thinking", critical)


# ----------------------------------------------------------------------------- sanity checks


def strict_flexible_gaps(cells: list[dict], points: float = 20.0) -> list[str]:
    """Warnings where strict-match and flexible-extract differ by more than `points` points."""
    pairs: dict[tuple, dict] = defaultdict(dict)
    for c in cells:
        if c["filter"] in (STRICT, FLEXIBLE) and c["value"] is not None:
            pairs[(c["task"], c["shots"])][c["filter"]] = c["value"]
    out = []
    for (task, shots), p in pairs.items():
        if len(p) == 2 and abs(p[STRICT] - p[FLEXIBLE]) * 100 > points:
            out.append(
                f"{task} {shots}-shot: strict-match {100 * p[STRICT]:.1f} vs flexible-extract "
                f"{100 * p[FLEXIBLE]:.1f} differ by more than {points:g} points (answer format, "
                "not maths: the model rarely writes '#### N')"
            )
    return out


def hit_limit(num_tokens: int, max_gen_toks: int) -> bool:
    """A generation that (re-tokenized) reaches the token cap, give or take 2 tokens or 1%."""
    return num_tokens >= max_gen_toks - max(2, max_gen_toks // 100)


def token_limit_share(flags: list[bool]) -> float:
    return sum(flags) / len(flags) if flags else 0.0


def token_limit_warning(
    task: str, shots: int, share: float, max_gen_toks: int, limit: float = 0.10
) -> str | None:
    if share > limit:
        return (
            f"{task} {shots}-shot: {100 * share:.0f}% of generations hit the {max_gen_toks}-token "
            f"limit (> {100 * limit:.0f}%): raise eval.max_gen_toks, or the scores undercount"
        )
    return None


def unchanged_outputs(base: list[dict], trained: list[dict]) -> tuple[int, int]:
    """(compared, identical): generations of the same questions, base vs trained (rows of lm-eval
    samples; every filter row of a question carries the same raw `resps`, the first one is used)."""

    def responses(rows):
        out = {}
        for r in rows:
            out.setdefault(r["doc_id"], json.dumps(r.get("resps"), sort_keys=True))
        return out

    a, b = responses(base), responses(trained)
    common = a.keys() & b.keys()
    return len(common), sum(1 for k in common if a[k] == b[k])


def unchanged_warning(compared: int, identical: int) -> str | None:
    if compared and identical == compared:
        return (
            f"the adapter changed none of {compared} outputs compared with the base model "
            "(was it trained, saved and loaded?)"
        )
    return None


def nested_metrics(cells: list[dict]) -> dict:
    """{task: {"<shots>shot": {key: value, "n": n, "chat_template": bool}}} for the W&B summary."""
    out: dict = {}
    for c in cells:
        slot = out.setdefault(c["task"], {}).setdefault(f"{c['shots']}shot", {})
        slot[c["key"]] = None if c["value"] is None else round(c["value"], 6)
        slot["n"] = c["n"]
        slot["chat_template"] = c["chat_template"]
    return out
