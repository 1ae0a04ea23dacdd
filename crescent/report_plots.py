"""The plots of `python -m crescent.report` (PNG, matplotlib Agg): accuracy vs a swept key,
question acceptance per call, vote-share and similarity histograms, and the per-round curves of
an iterated run (`rounds=N`). Each takes the report's runs (crescent.report.Run) and returns the
file it wrote, or None when there is nothing to draw."""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING

from crescent import datacard as dc

if TYPE_CHECKING:
    from crescent.report import Run


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    tmp = path.with_name(f".{path.stem}.tmp.png")
    fig.savefig(tmp, dpi=110)
    _plt().close(fig)
    tmp.replace(path)
    return path


def plot_vs_key(runs: list[Run], rows: list[dict], key: str, out: Path) -> Path | None:
    """Trained score vs `key`, one line per task/shots/metric (and per other differing setting)."""
    xs = {r.dir: dc.get(r.cfg, key) for r in runs}
    if len({repr(v) for v in xs.values() if v is not None}) < 2:
        return None
    by_dir = {r.rel: r for r in runs}
    lines: dict[str, list] = {}
    for row in rows:
        r = by_dir[row["dir"]]
        x = xs[r.dir]
        if row["trained"] is None or not isinstance(x, int | float):
            continue
        rest = " ".join(p for p in r.settings.split(" ") if not p.startswith(key + "="))
        name = f"{row['task']} {row['shots']}-shot {row['metric']}" + (f" | {rest}" if rest and rest != "default" else "")  # fmt: skip
        lines.setdefault(name, []).append((x, 100 * row["trained"]))
    if not lines:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, pts in lines.items():
        pts.sort()
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=name)
    ax.set_xticks(sorted({p[0] for pts in lines.values() for p in pts}))
    ax.set_xlabel(key)
    ax.set_ylabel("trained score (%)")
    ax.set_title(f"accuracy vs {key}", fontsize=9)
    ax.legend(fontsize=6)
    return _save(fig, out / f"accuracy_vs_{key.replace('.', '_')}.png")


def plot_acceptance(runs: list[Run], out: Path) -> Path | None:
    """Question acceptance rate per generation call (questions/calls.jsonl), one line per run."""
    series = [(r, r.rows("questions", "calls.jsonl")) for r in runs]
    series = [(r, c) for r, c in series if c]
    if not series:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 4))
    for r, calls in series:
        ax.plot([c["call"] for c in calls], [100 * c["accepted"] / max(1, c["samples"]) for c in calls],
                marker=".", label=f"{r.label} {r.settings}")  # fmt: skip
    ax.set_xlabel("generation call")
    ax.set_ylabel("accepted / samples (%)")
    ax.set_title("question acceptance rate per call", fontsize=9)
    ax.legend(fontsize=6)
    return _save(fig, out / "acceptance_per_call.png")


def plot_vote_shares(runs: list[Run], out: Path) -> Path | None:
    """QA pairs per vote share of the majority answer (vote/qa.jsonl `share` of `k`: 1/3, 2/3,
    3/3, ...), grouped bars, one colour per run."""
    series = []
    for r in runs:
        qa = r.rows("vote", "qa.jsonl") or []
        counts = Counter(dc.share_label(float(q["share"]), int(q["k"])) for q in qa if "k" in q)
        if counts:
            series.append((r, counts))
    if not series:
        return None
    labels = sorted({x for _, c in series for x in c}, key=lambda x: (dc.label_value(x), x))
    plt = _plt()
    fig, ax = plt.subplots(figsize=(max(6.0, 0.8 * len(labels) * len(series)), 4))
    w = 0.8 / len(series)
    for i, (r, counts) in enumerate(series):
        ax.bar([j + (i - (len(series) - 1) / 2) * w for j in range(len(labels))],
               [counts.get(x, 0) for x in labels], w, label=f"{r.label} {r.settings}")  # fmt: skip
    ax.set_xticks(range(len(labels)), labels)
    ax.set_xlabel("vote share of the majority answer (votes / k)")
    ax.set_ylabel("QA pairs")
    ax.set_title("label confidence (vote share)", fontsize=9)
    ax.legend(fontsize=6)
    return _save(fig, out / "vote_share_hist.png")


def plot_similarity(runs: list[Run], out: Path) -> Path | None:
    """Nearest-neighbour cosine at decision time: accepted vs rejected questions, a panel per run."""
    panels = []
    for r in runs:
        acc = [x["similarity"] for x in r.rows("questions", "questions.jsonl") or []
               if x.get("similarity") is not None]  # fmt: skip
        rej = [x["similarity"] for x in r.rows("questions", "rejected.jsonl") or []
               if x.get("similarity") is not None]  # fmt: skip
        if acc or rej:
            panels.append((r, acc, rej))
    if not panels:
        return None
    plt = _plt()
    ncols = min(3, len(panels))
    nrows = math.ceil(len(panels) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.5 * ncols, 3.3 * nrows), squeeze=False)
    bins = [i / 25 for i in range(26)]
    for ax, (r, acc, rej) in zip(axes.flat, panels, strict=False):
        ax.hist([acc, rej], bins=bins, label=[f"accepted ({len(acc)})", f"rejected ({len(rej)})"],
                color=["#1f77b4", "#d62728"])  # fmt: skip
        thr = dc.get(r.cfg, "dedup.threshold")
        if isinstance(thr, int | float):
            ax.axvline(thr, color="k", ls="--", lw=1, label=f"threshold {thr}")
        ax.set_title(f"{r.label} {r.settings}", fontsize=8)
        ax.set_xlabel("cosine to nearest accepted question")
        ax.legend(fontsize=6)
    for ax in list(axes.flat)[len(panels) :]:
        ax.axis("off")
    return _save(fig, out / "similarity_hist.png")


def plot_rounds(score_rows: list[dict], data_rows: list[dict], out: Path, stem: str) -> Path | None:
    """An iterated run: score per round (round 0 = the base model), one line per task/shots/metric,
    and the question acceptance rate and mean vote share of the data each round generated."""
    lines: dict[str, list] = {}
    for row in score_rows:
        if row["score"] is not None:
            name = f"{row['task']} {row['shots']}-shot {row['metric']}"
            lines.setdefault(name, []).append((row["round"], 100 * row["score"]))
    data = [d for d in data_rows if d["round"] is not None]
    if not lines and not data:
        return None
    plt = _plt()
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    for name, pts in lines.items():
        pts.sort()
        ax1.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=name)
    ax1.set_xlabel("round (0 = base model)")
    ax1.set_ylabel("score (%)")
    ax1.set_title("accuracy per round", fontsize=9)
    if lines:
        ax1.legend(fontsize=6)
    for key, marker in (("acceptance rate", "o"), ("mean vote share", "s")):
        pts = [(d["round"], d[key]) for d in data if d[key] is not None]
        ax2.plot([p[0] for p in pts], [p[1] for p in pts], marker=marker, label=key)
    ax2.set_xlabel("round")
    ax2.set_ylim(0, 1.05)
    ax2.set_title("the data each round generated", fontsize=9)
    ax2.legend(fontsize=6)
    for ax in (ax1, ax2):
        ax.set_xticks(
            sorted({p[0] for pts in lines.values() for p in pts} | {d["round"] for d in data})
        )
    return _save(fig, out / f"{stem}.png")
