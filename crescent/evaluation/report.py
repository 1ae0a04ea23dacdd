"""The before/after table (Markdown) and bar chart (PNG) of a run's evaluation stages.

Printed at the end of `python run.py` and saved in the run directory as `eval_report.md` and
`eval_report.png` whenever the run has `eval_base` or `eval_trained` (the other one is taken from
the cache when it was computed for the same config). Rows are task x shots x filter/metric; the
columns are the base score, the trained score, their delta (percentage points), the items per cell
(`n`) and whether a chat template was applied. Small cells are a machinery check, not evidence.
"""

from __future__ import annotations

import json
from pathlib import Path

from crescent.fsutil import atomic_write_text

SMALL = 100  # cells with fewer items are flagged as a machinery check


def load_results(entry_dir: str | Path) -> dict | None:
    p = Path(entry_dir) / "results.json"
    return json.loads(p.read_text()) if p.is_file() else None


def before_after_rows(base: list[dict] | None, trained: list[dict] | None) -> list[dict]:
    """Join score cells of the two stages on (task, shots, key), in the order they were run."""
    index: dict[tuple, dict] = {}
    for side, cells in (("base", base or []), ("trained", trained or [])):
        for c in cells:
            row = index.setdefault((c["task"], c["shots"], c["key"]), {
                "task": c["task"], "shots": c["shots"], "metric": c["key"], "base": None,
                "trained": None, "n_base": None, "n_trained": None, "chat_template": c["chat_template"],
                "num_fewshot": c["num_fewshot"]})  # fmt: skip
            row[side], row[f"n_{side}"] = c["value"], c["n"]
    rows = list(index.values())
    for r in rows:
        b, t = r["base"], r["trained"]
        r["delta"] = None if b is None or t is None else t - b
    return rows


def _pct(v) -> str:
    return "-" if v is None else f"{100 * v:.1f}"


def _delta(v) -> str:
    return "-" if v is None else f"{100 * v:+.1f}"


def _n(r) -> str:
    a, b = r["n_base"], r["n_trained"]
    if a is not None and b is not None and a != b:
        return f"{a}/{b}"
    return str(a if a is not None else b)


def markdown(rows: list[dict], notes: list[str]) -> str:
    lines = [
        "| task | shots | metric | base | trained | delta (pts) | n | chat template |",
        "|---|---:|---|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        shots = (
            str(r["shots"])
            if r["num_fewshot"] == r["shots"]
            else f"{r['shots']} (ran {r['num_fewshot']})"
        )
        lines.append(
            f"| {r['task']} | {shots} | {r['metric']} | {_pct(r['base'])} | {_pct(r['trained'])} | "
            f"{_delta(r['delta'])} | {_n(r)} | {'yes' if r['chat_template'] else 'no'} |"
        )
    small = [
        r for r in rows if min(x for x in (r["n_base"], r["n_trained"]) if x is not None) < SMALL
    ]
    if small:
        notes = [*notes, f"cells with n < {SMALL} items are a machinery check, not evidence"]
    return "\n".join(lines + [""] + [f"- {x}" for x in notes])


def bar_chart(rows: list[dict], path: Path, title: str) -> Path | None:
    """Grouped bars (base vs trained) per task/shots/metric; Agg backend (no display needed)."""
    if not rows:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [f"{r['task']}\n{r['shots']}-shot {r['metric']}" for r in rows]
    xs = range(len(rows))
    fig, ax = plt.subplots(figsize=(max(6.0, 1.2 * len(rows)), 4.5))
    w = 0.4
    top = 0.0
    for off, side, color in ((-w / 2, "base", "#8c8c8c"), (w / 2, "trained", "#1f77b4")):
        vals = [100 * (r[side] or 0.0) for r in rows]
        if any(r[side] is not None for r in rows):
            bars = ax.bar([x + off for x in xs], vals, w, label=side, color=color)
            ax.bar_label(bars, fmt="%.1f", fontsize=7)
            top = max(top, *vals)
    ax.set_ylim(0, max(5.0, 1.15 * top))
    ax.set_xticks(list(xs), labels, fontsize=7)
    ax.set_ylabel(f"score (%), n = {', '.join(sorted({_n(r) for r in rows}))} items per cell")
    ax.set_title(title, fontsize=9)
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    tmp.replace(path)
    return path


def _entry_of(cfg, manifest: dict, stage: str) -> Path | None:
    rec = manifest["stages"].get(stage)
    if rec:
        return Path(rec["dir"])
    if stage != "eval_base":
        return None
    try:  # the base scores for this config may be in the cache from an earlier run
        from crescent.pipeline import _plan_stage, _stage_table

        table = _stage_table()
        ps = _plan_stage(cfg, table[stage], {}, table, implicit=True)
        return ps.entry.dir if ps.entry.is_complete() else None
    except Exception:
        return None


def write_report(cfg, manifest: dict, run_dir: Path, before: Path | None = None) -> str | None:
    """Build, save (eval_report.md / .png in run_dir) and return the report; None without eval.
    `before`: an eval entry standing in for a missing eval_base (`rounds=N`: the previous round's
    eval_trained, the model this round started from)."""
    if not any(s in manifest["stages"] for s in ("eval_base", "eval_trained")):
        return None
    from crescent.evaluation.registry import TASKS

    docs = {
        s: load_results(d)
        for s in ("eval_base", "eval_trained")
        if (d := _entry_of(cfg, manifest, s))
    }
    notes = []
    if "eval_base" not in docs and before is not None and (prev := load_results(before)):
        docs["eval_base"] = prev
        notes.append(f"base = the model this round started from: {prev['model']} ({before})")
    base, trained = docs.get("eval_base"), docs.get("eval_trained")
    rows = before_after_rows(base and base["cells"], trained and trained["cells"])
    for name in dict.fromkeys(r["task"].split(":")[0] for r in rows):
        if name in TASKS and TASKS[name].note:
            notes.append(TASKS[name].note)
    ref = trained or base
    what = "not run"
    if trained:
        what = (
            f"{trained['model_path']} + adapter {trained['adapter']}"
            if trained["adapter"]
            else trained["model_path"]
        )
    notes.append(f"model {ref['model']}, backend {ref['backend']}; trained = {what}")
    limits = {r["task"]: r.get("limit") for d in docs.values() if d for r in d["runs"]}
    shown = ", ".join(f"{t} {'all' if n is None else n}" for t, n in limits.items())
    notes.append(f"items per task (eval.limit / eval.per_task): {shown}")
    vote = manifest["stages"].get("vote", {}).get("metrics", {})
    if "contamination" in vote:
        c = vote["contamination"]
        notes.append(
            f"contamination of the training questions: {c['flagged']} of {c['checked']} flagged "
            f"({100 * c['rate']:.1f}%; a shared run of >= {c['ngram_threshold']} words or MiniLM "
            f"cosine >= {c['cosine_threshold']} against {', '.join(c.get('sets', []))}; "
            "vote/contamination.jsonl)"
        )
    text = "## Evaluation: before / after\n\n" + markdown(rows, notes) + "\n"
    atomic_write_text(run_dir / "eval_report.md", text)
    bar_chart(rows, run_dir / "eval_report.png", f"{ref['model']}: base vs trained")
    return text
