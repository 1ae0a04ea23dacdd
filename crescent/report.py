"""Results of one run, an experiment set or a sweep as paper-style tables and plots.

`python -m crescent.report PATH [--out DIR] [--wandb]`

PATH is a run directory or any folder above several (runs/<name>/, a sweep's multirun/ folder): a
run is every folder below it holding manifest.json, config.yaml or .hydra/config.yaml (a job
that was started but never finished a stage has no manifest and shows as `missing`).

Reads, per run: manifest.json (which stage entries belong to the run), config.yaml (the settings
that tell runs apart, model, data source), eval_base/ and eval_trained/results.json (scores, joined
with crescent.evaluation.report.before_after_rows), the data card (data_card.json when it is
current, else computed by crescent.datacard), train metrics, questions/{questions,rejected,calls}.jsonl
and vote/qa.jsonl (plots).

Writes into --out (default PATH/report/):
    results.md / results.tex / results.csv   scores: run x task x shots x metric, base, trained,
                                             delta (points); results.md and .tex also hold the data
                                             table (one row per run), which is data.csv too
    accuracy_vs_<key>.png   trained score vs dedup.threshold / voting.k (only when the key varies)
    acceptance_per_call.png, vote_share_hist.png, similarity_hist.png
    wandb/                  with --wandb: the tables and plots in an offline W&B run
A value that is not there (no manifest, a failed or not-yet-run stage, no results.json) is
`missing` in Markdown/CSV and `--` in LaTeX; what is missing is listed and printed.
"""

from __future__ import annotations

import argparse
import csv
import io
import math
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from crescent import datacard as dc
from crescent.evaluation.report import before_after_rows, load_results
from crescent.fsutil import atomic_write_text

MISSING, TEX_MISSING = "missing", "--"
PLOT_KEYS = ("dedup.threshold", "voting.k")  # accuracy-vs-key plots, drawn when the key varies
NOT_SETTINGS = ("paths.", "logger.", "tracking.", "hydra.", "name")  # never tell runs apart
SKIP_DIRS = {".hydra", "wandb", ".submitit", "hf_dataset", "__pycache__"}
# Hydra's override_dirname leaves these out too (conf/hydra/default.yaml)
HYDRA_EXCLUDED = (
    "experiments",
    "sweeps",
    "logger",
    "debug",
    "name",
    "paths.cache_dir",
    "paths.runs_dir",
)

SCORE_COLS = ["run", "settings", "model", "data", "task", "shots", "metric", "base", "trained",
              "delta (pts)"]  # fmt: skip
DATA_COLS = ["run", "settings", "accepted questions", "acceptance rate", "QA pairs",
             "mean vote share", "distinct-2", "train loss first 1/4", "train loss last 1/4",
             "val loss before", "val loss after"]  # fmt: skip


@dataclass
class Run:
    dir: Path
    rel: str
    manifest: dict | None
    cfg: dict | None
    settings: str = ""
    label: str = ""
    docs: dict = field(default_factory=dict)  # eval stage -> results.json (or None)
    missing: list[str] = field(default_factory=list)

    def stage(self, name: str) -> Path | None:
        return dc.stage_dir(self.dir, self.manifest, name)

    def rows(self, stage: str, fname: str) -> list[dict] | None:
        d = self.stage(stage)
        return dc.read_jsonl(d / fname if d else None)


# ---- finding and reading runs --------------------------------------------------------------------


def find_runs(path: Path, exclude: Path | None = None) -> list[Path]:
    """Folders below PATH (or PATH itself) that are run directories; stage links are not followed."""
    found = []
    for d, subdirs, files in os.walk(path):
        dp = Path(d)
        if exclude is not None and dp.resolve() == exclude.resolve():
            subdirs[:] = []
            continue
        if (
            "manifest.json" in files
            or "config.yaml" in files
            or (dp / ".hydra" / "config.yaml").is_file()
        ):
            found.append(dp)
            subdirs[:] = []
            continue
        subdirs[:] = sorted(s for s in subdirs if s not in SKIP_DIRS)
    return sorted(found)


def load_run(d: Path, root: Path) -> Run:
    rel = str(d.relative_to(root)) if d != root else d.name
    run = Run(d, rel, dc.read_manifest(d), dc.read_config(d))
    if run.manifest is None:
        run.missing.append(f"{rel}: no manifest.json (not started, or failed before its first "
                           "stage): every value missing")  # fmt: skip
        return run
    planned = dc.get(run.cfg, "stages") or []
    for s in ("eval_base", "eval_trained"):
        d_s = run.stage(s)
        if d_s is None:
            why = ("failed or not reached" if s in planned or not planned
                   else "not in this run's stages")  # fmt: skip
            run.missing.append(f"{rel}: stage {s} not in manifest.json ({why})")
            continue
        run.docs[s] = load_results(d_s)
        if run.docs[s] is None:
            run.missing.append(f"{rel}: {s}: no results.json in {d_s}")
    return run


# ---- what tells runs apart ------------------------------------------------------------------------


def flatten(node, prefix: str = "") -> dict:
    if isinstance(node, dict) and node:
        out = {}
        for k, v in node.items():
            out.update(flatten(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: node}


def fmt_value(v) -> str:
    if v is None:
        return "null"
    if isinstance(v, list):
        return "[" + ",".join(fmt_value(x) for x in v) + "]"
    s = str(v).replace("\n", " ")
    return s if len(s) <= 40 else s[:37] + "..."


def differing_keys(cfgs: list[dict]) -> list[str]:
    """Config keys whose value is not the same in every run (a sub-key under a differing
    `<prefix>.name` is left out: the name says it), in config order."""
    flats = [flatten(c) for c in cfgs]
    keys = list(dict.fromkeys(k for f in flats for k in f))
    unset = object()
    diff = [k for k in keys if not k.startswith(NOT_SETTINGS)
            and len({repr(f.get(k, unset)) for f in flats}) > 1]  # fmt: skip
    named = {k[: -len(".name")] for k in diff if k.endswith(".name")}
    return [k for k in diff
            if not any(k.startswith(p + ".") and k != p + ".name" for p in named)]  # fmt: skip


def hydra_overrides(d: Path) -> list[str]:
    p = d / ".hydra" / "overrides.yaml"
    items = yaml.safe_load(p.read_text()) if p.is_file() else None
    return [o for o in items or [] if o.split("=")[0].lstrip("+~") not in HYDRA_EXCLUDED]


def label_runs(runs: list[Run]) -> None:
    """run.settings: `key=value ...` that distinguish it from the others ('default' if none)."""
    with_cfg = [r for r in runs if r.cfg is not None]
    keys = differing_keys([r.cfg for r in with_cfg]) if len(with_cfg) > 1 else []
    for r in runs:
        if r.cfg is None:
            parts = hydra_overrides(r.dir) or [f"dir={r.rel}"]
        elif keys:
            flat = flatten(r.cfg)
            parts = [f"{k}={fmt_value(flat[k])}" for k in keys if k in flat]
        else:
            parts = hydra_overrides(r.dir)
        r.settings = " ".join(parts) or "default"
        name = dc.get(r.cfg, "name") or (r.manifest or {}).get("name") or r.dir.name
        r.label = str(name)
    seen: dict[tuple, int] = {}
    for r in runs:
        seen[(r.label, r.settings)] = seen.get((r.label, r.settings), 0) + 1
    for r in runs:  # identical labels (copies of one config): add the folder
        if seen[(r.label, r.settings)] > 1:
            r.label = f"{r.label} ({r.rel})"


def model_and_data(r: Run) -> tuple[str, str]:
    model = dc.get(r.cfg, "model.name")
    if model is None:
        doc = r.docs.get("eval_trained") or r.docs.get("eval_base") or {}
        model = doc.get("model")
    student = dc.get(r.cfg, "distill.student")
    source = dc.get(r.cfg, "data.source")
    if isinstance(student, dict) and student.get("name"):
        data = f"{source or MISSING} from {model or MISSING}"
        return f"{student['name']} (student)", data
    return model or MISSING, source or MISSING


# ---- the tables --------------------------------------------------------------------------------


def score_rows(runs: list[Run]) -> list[dict]:
    """One row per run x (task, shots, metric); a cell any run has and this one lacks is missing."""
    joined = {}
    for r in runs:
        base, trained = r.docs.get("eval_base"), r.docs.get("eval_trained")
        joined[r.dir] = before_after_rows(base and base["cells"], trained and trained["cells"])
    cells = list(
        dict.fromkeys((x["task"], x["shots"], x["metric"]) for v in joined.values() for x in v)
    )
    out = []
    for r in runs:
        own = {(x["task"], x["shots"], x["metric"]): x for x in joined[r.dir]}
        tasks, shots = dc.get(r.cfg, "eval.tasks"), dc.get(r.cfg, "eval.shots")
        model, data = model_and_data(r)
        for c in cells:
            if c not in own and (tasks is not None and c[0].split(":")[0] not in tasks
                                 or shots is not None and c[1] not in shots):  # fmt: skip
                continue  # this run was not asked for the cell
            x = own.get(c, {})
            row = {"run": r.label, "settings": r.settings, "dir": r.rel, "model": model,
                   "data": data, "task": c[0], "shots": c[1], "metric": c[2],
                   "base": x.get("base"), "trained": x.get("trained"), "delta": x.get("delta"),
                   "n_base": x.get("n_base"), "n_trained": x.get("n_trained")}  # fmt: skip
            for side in ("base", "trained"):
                if row[side] is None and r.docs.get(f"eval_{side}"):
                    r.missing.append(f"{r.rel}: {c[0]} {c[1]}-shot {c[2]}: no {side} score")
            out.append(row)
    return out


def data_rows(runs: list[Run]) -> list[dict]:
    """One row per run: the data card's numbers and the train losses."""
    out = []
    for r in runs:
        card = dc.load_or_compute(r.dir) if r.manifest else None
        train = ((r.manifest or {}).get("stages", {}).get("train") or {}).get("metrics", {})
        if r.manifest and "train" not in r.manifest["stages"]:
            r.missing.append(f"{r.rel}: stage train not in manifest.json")
        if card:
            r.missing += [f"{r.rel}: {m}" for m in card["missing"]]
        q, v, d = (card or {}).get("questions", {}), (card or {}).get("votes", {}), (card or {}).get("diversity", {})  # fmt: skip
        out.append({
            "run": r.label, "settings": r.settings, "dir": r.rel,
            "accepted questions": q.get("accepted"), "acceptance rate": q.get("acceptance_rate"),
            "QA pairs": v.get("qa_pairs"), "mean vote share": v.get("mean_share"),
            "distinct-2": d.get("distinct_2"),
            "train loss first 1/4": train.get("first_quarter_loss"),
            "train loss last 1/4": train.get("last_quarter_loss"),
            "val loss before": train.get("val_loss_before"), "val loss after": train.get("val_loss"),
        })  # fmt: skip
    return out


def show(col: str, v, missing: str = MISSING) -> str:
    """A cell as text: scores in %, deltas in signed points, rates/losses with 4 digits."""
    if v is None:
        return missing
    if col in ("base", "trained"):
        return f"{100 * v:.1f}"
    if col == "delta (pts)":
        return f"{100 * v:+.1f}"
    if isinstance(v, float):
        return f"{v:.4f}"
    return str(v)


def _key(col: str) -> str:
    return "delta" if col == "delta (pts)" else col


def markdown_table(cols: list[str], rows: list[dict]) -> str:
    right = {"shots", "base", "trained", "delta (pts)", *DATA_COLS[2:]}
    lines = ["| " + " | ".join(cols) + " |",
             "|" + "|".join("---:" if c in right else "---" for c in cols) + "|"]  # fmt: skip
    for r in rows:
        lines.append("| " + " | ".join(show(c, r[_key(c)]) for c in cols) + " |")
    return "\n".join(lines)


def tex_escape(s: str) -> str:
    out = s.replace("\\", "\\textbackslash{}")
    for ch in "&%$#_{}":
        out = out.replace(ch, "\\" + ch)
    return out.replace("~", "\\textasciitilde{}").replace("^", "\\textasciicircum{}")


def latex_table(cols: list[str], rows: list[dict], caption: str, group: bool = False) -> str:
    """A booktabs tabular (`--` for a missing value); `group`: a \\midrule between runs."""
    right = {"shots", "base", "trained", "delta (pts)", *DATA_COLS[2:]}
    spec = "".join("r" if c in right else "l" for c in cols)
    head = " & ".join("$\\Delta$ (pts)" if c == "delta (pts)" else tex_escape(c) for c in cols)
    lines = [
        f"% {caption}",
        f"\\begin{{tabular}}{{{spec}}}",
        "\\toprule",
        head + " \\\\",
        "\\midrule",
    ]
    prev = None
    for r in rows:
        if group and prev is not None and r["dir"] != prev:
            lines.append("\\midrule")
        prev = r["dir"]
        lines.append(
            " & ".join(tex_escape(show(c, r[_key(c)], TEX_MISSING)) for c in cols) + " \\\\"
        )
    lines += ["\\bottomrule", "\\end{tabular}"]
    return "\n".join(lines)


def csv_text(cols: list[str], rows: list[dict]) -> str:
    """Machine-readable: scores and deltas in points (4 decimals), `missing` for absent values."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(cols)
    for r in rows:
        vals = []
        for c in cols:
            v = r[_key(c)]
            if v is None:
                vals.append(MISSING)
            elif c in ("base", "trained", "delta (pts)"):
                vals.append(round(100 * v, 4))
            else:
                vals.append(v)
        w.writerow(vals)
    return buf.getvalue()


# ---- plots ---------------------------------------------------------------------------------------


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


# ---- putting it together -------------------------------------------------------------------------


def build(path: Path, out: Path) -> dict:
    """Read every run under PATH, write the tables and plots into OUT; returns what was made."""
    runs = [load_run(d, path) for d in find_runs(path, exclude=out)]
    if not runs:
        raise SystemExit(f"error: no run directory (manifest.json or config.yaml) under {path}")
    label_runs(runs)
    scores, data = score_rows(runs), data_rows(runs)
    missing = list(dict.fromkeys(m for r in runs for m in r.missing))
    out.mkdir(parents=True, exist_ok=True)
    score_md = markdown_table(SCORE_COLS, scores)
    data_md = markdown_table(DATA_COLS, data)
    md = ["## Results: base vs trained (scores in %, delta in points)", "", score_md, "",
          "## Data (per run)", "", data_md, ""]  # fmt: skip
    if missing:
        md += ["## Missing", "", *[f"- {m}" for m in missing], ""]
    tex = "\n\n".join([
        latex_table(SCORE_COLS, scores, "results: scores in %, delta in points (crescent.report)", True),
        latex_table(DATA_COLS, data, "data per run (crescent.report)")]) + "\n"  # fmt: skip
    written = {"results.md": "\n".join(md), "results.tex": tex,
               "results.csv": csv_text(["dir", *SCORE_COLS, "n_base", "n_trained"], scores),
               "data.csv": csv_text(["dir", *DATA_COLS], data)}  # fmt: skip
    for name, text in written.items():
        atomic_write_text(out / name, text)
    plots = [plot_vs_key(runs, scores, k, out) for k in PLOT_KEYS]
    plots += [plot_acceptance(runs, out), plot_vote_shares(runs, out), plot_similarity(runs, out)]
    return {"runs": runs, "scores": scores, "data": data, "missing": missing,
            "markdown": score_md, "data_markdown": data_md,
            "files": [out / n for n in written] + [p for p in plots if p]}  # fmt: skip


def log_wandb(result: dict, out: Path) -> Path:
    """The two tables and the plots in an offline W&B run under OUT/wandb (never synced here)."""
    import wandb

    run = wandb.init(mode="offline", dir=str(out), project="crescent", job_type="report")
    try:
        logged = {}
        for name, rows, cols in (("results", result["scores"], ["dir", *SCORE_COLS]),
                                 ("data", result["data"], ["dir", *DATA_COLS])):  # fmt: skip
            logged[name] = wandb.Table(
                columns=cols, data=[[show(c, r[_key(c)]) for c in cols] for r in rows]
            )
        for p in result["files"]:
            if p.suffix == ".png":
                logged[p.stem] = wandb.Image(str(p))
        run.log(logged)
        return Path(run.dir).parent  # the offline run folder (wandb sync PATH)
    finally:
        run.finish()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m crescent.report", description=__doc__.split("\n")[0]
    )
    ap.add_argument("path", type=Path, help="a run directory, or a folder holding several")
    ap.add_argument("--out", type=Path, help="output folder (default PATH/report)")
    ap.add_argument(
        "--wandb", action="store_true", help="also log tables and plots to W&B (offline)"
    )
    args = ap.parse_args(argv)
    if not args.path.is_dir():
        ap.error(f"{args.path}: not a directory")
    out = args.out or args.path / "report"
    result = build(args.path, out)
    print(result["markdown"] + "\n\n" + result["data_markdown"] + "\n")
    if result["missing"]:
        print("missing:\n" + "\n".join(f"  - {m}" for m in result["missing"]) + "\n")
    if args.wandb:
        result["files"].append(log_wandb(result, out))
    print("wrote:\n" + "\n".join(f"  {p}" for p in result["files"]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
