"""Results of one run, an experiment set or a sweep as paper-style tables and plots.

`python -m crescent.report PATH [--out DIR] [--wandb]`

PATH is a run directory or any folder above several (runs/<name>/, a sweep's multirun/ folder): a
run is every folder below it holding manifest.json, config.yaml or .hydra/config.yaml (a job
that was started but never finished a stage has no manifest and shows as `missing`); the rounds of
an iterated run (`round_<t>/`) are runs, round t's base being round t-1's trained model.

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
    rounds.png, rounds.csv, rounds_data.csv
                            an iterated run (`rounds=N`, a folder with rounds.json): score per
                            round (round 0 = base) with deltas to the previous round and the base,
                            acceptance rate and vote share per round; also a section of results.md
                            (rounds_<folder>.* when PATH holds several iterated runs)
    wandb/                  with --wandb: the tables and plots in an offline W&B run
A value that is not there (no manifest, a failed or not-yet-run stage, no results.json) is
`missing` in Markdown/CSV and `--` in LaTeX; what is missing is listed and printed.
"""

from __future__ import annotations

import argparse
import csv
import io
import os
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from crescent import datacard as dc
from crescent.evaluation.report import before_after_rows, load_results
from crescent.fsutil import atomic_write_text
from crescent.report_plots import (
    plot_acceptance,
    plot_rounds,
    plot_similarity,
    plot_vote_shares,
    plot_vs_key,
)
from crescent.rounds import ROUND_DIR_RE, ROUNDS_MARKER

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
ROUND_SCORE_COLS = ["run", "round", "model", "task", "shots", "metric", "score",
                    "vs previous round (pts)", "vs base (pts)"]  # fmt: skip
ROUND_DATA_COLS = ["run", "round", "model", "accepted questions", "acceptance rate", "QA pairs",
                   "mean vote share", "distinct-2", "val loss before", "val loss after"]  # fmt: skip
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
    round: int | None = None  # t for <iterated run>/round_<t>/
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
        if ROUNDS_MARKER in files:  # an iterated run: its rounds are the runs
            subdirs[:] = sorted(s for s in subdirs if ROUND_DIR_RE.fullmatch(s))
            continue
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
    m = ROUND_DIR_RE.fullmatch(d.name)
    if m and (d.parent / ROUNDS_MARKER).is_file():
        run.round = int(m.group(1))
    if run.manifest is None:
        run.missing.append(f"{rel}: no manifest.json (not started, or failed before its first "
                           "stage): every value missing")  # fmt: skip
        return run
    planned = dc.get(run.cfg, "stages") or []
    for s in ("eval_base", "eval_trained"):
        d_s = run.stage(s)
        if d_s is None and s == "eval_base" and (run.round or 1) > 1:
            continue  # a later round's "before" is the previous round's eval_trained (link_rounds)
        if d_s is None:
            why = ("failed or not reached" if s in planned or not planned
                   else "not in this run's stages")  # fmt: skip
            run.missing.append(f"{rel}: stage {s} not in manifest.json ({why})")
            continue
        run.docs[s] = load_results(d_s)
        if run.docs[s] is None:
            run.missing.append(f"{rel}: {s}: no results.json in {d_s}")
    return run


def link_rounds(runs: list[Run]) -> dict[Path, list[Run]]:
    """Group the rounds of each iterated run (by parent folder, in round order); a later round's
    base score is the previous round's trained score (the model it started from)."""
    groups: dict[Path, list[Run]] = {}
    for r in runs:
        if r.round is not None:
            groups.setdefault(r.dir.parent, []).append(r)
    for rounds in groups.values():
        rounds.sort(key=lambda r: r.round)
        for prev, cur in zip(rounds, rounds[1:], strict=False):
            if "eval_base" not in cur.docs and prev.docs.get("eval_trained"):
                cur.docs["eval_base"] = prev.docs["eval_trained"]
    return groups


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


def round_rows(rounds: list[Run], data: list[dict]) -> tuple[list[dict], list[dict]]:
    """An iterated run's (scores, data) per round: round 0 is the base model (round 1's
    eval_base), round t the model trained in round t; deltas to the previous round and the base."""
    label = rounds[0].label.split(" (")[0]
    models = {0: dc.get(rounds[0].cfg, "model.name")}
    per_round = {0: rounds[0].docs.get("eval_base")} if rounds[0].docs.get("eval_base") else {}
    for r in rounds:
        models[r.round] = dc.get(r.cfg, "model.name")
        per_round[r.round] = r.docs.get("eval_trained")
    cells = {t: {(c["task"], c["shots"], c["key"]): c["value"] for c in (doc or {}).get("cells", [])}
             for t, doc in per_round.items()}  # fmt: skip
    keys = list(dict.fromkeys(k for v in cells.values() for k in v))
    scores = []
    for k in keys:
        for t in sorted(cells):
            v, prev, base = cells[t].get(k), cells.get(t - 1, {}).get(k), cells.get(0, {}).get(k)
            scores.append({
                "run": label, "round": t, "model": models.get(t) if t else f"{models[0]} (base)",
                "task": k[0], "shots": k[1], "metric": k[2], "score": v,
                "vs previous round (pts)": None if t == 0 or v is None or prev is None else v - prev,
                "vs base (pts)": None if t == 0 or v is None or base is None else v - base,
            })  # fmt: skip
    by_dir = {d["dir"]: d for d in data}
    data_out = [{**by_dir[r.rel], "run": label, "round": r.round, "model": models[r.round]}
                for r in rounds]  # fmt: skip
    return scores, data_out


def show(col: str, v, missing: str = MISSING) -> str:
    """A cell as text: scores in %, deltas in signed points, rates/losses with 4 digits."""
    if v is None:
        return missing
    if col in ("base", "trained", "score"):
        return f"{100 * v:.1f}"
    if col.endswith("(pts)"):
        return f"{100 * v:+.1f}"
    if isinstance(v, float):
        return f"{v:.4f}"
    return str(v)


def _key(col: str) -> str:
    return "delta" if col == "delta (pts)" else col


def markdown_table(cols: list[str], rows: list[dict]) -> str:
    right = {"shots", "base", "trained", "delta (pts)", "round", "score", *ROUND_SCORE_COLS[-2:],
             *DATA_COLS[2:]}  # fmt: skip
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
    right = {"shots", "base", "trained", "delta (pts)", "round", "score", *ROUND_SCORE_COLS[-2:],
             *DATA_COLS[2:]}  # fmt: skip
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
            elif c in ("base", "trained", "score") or c.endswith("(pts)"):
                vals.append(round(100 * v, 4))
            else:
                vals.append(v)
        w.writerow(vals)
    return buf.getvalue()


# ---- putting it together -------------------------------------------------------------------------


def build(path: Path, out: Path) -> dict:
    """Read every run under PATH, write the tables and plots into OUT; returns what was made."""
    runs = [load_run(d, path) for d in find_runs(path, exclude=out)]
    if not runs:
        raise SystemExit(f"error: no run directory (manifest.json or config.yaml) under {path}")
    label_runs(runs)
    groups = link_rounds(runs)
    scores, data = score_rows(runs), data_rows(runs)
    missing = list(dict.fromkeys(m for r in runs for m in r.missing))
    out.mkdir(parents=True, exist_ok=True)
    score_md = markdown_table(SCORE_COLS, scores)
    data_md = markdown_table(DATA_COLS, data)
    md = ["## Results: base vs trained (scores in %, delta in points)", "", score_md, "",
          "## Data (per run)", "", data_md, ""]  # fmt: skip
    rounds_md, plots = [], []
    for parent, rounds in groups.items():
        r_scores, r_data = round_rows(rounds, data)
        stem = "rounds" if len(groups) == 1 else f"rounds_{parent.name}"
        rounds_md += [f"## Rounds: {rounds[0].label.split(' (')[0]} ({len(rounds)} rounds; round 0 = "
                      "the base model; scores in %, deltas in points)", "",
                      markdown_table(ROUND_SCORE_COLS, r_scores), "",
                      markdown_table(ROUND_DATA_COLS, r_data), ""]  # fmt: skip
        atomic_write_text(out / f"{stem}.csv", csv_text(ROUND_SCORE_COLS, r_scores))
        atomic_write_text(out / f"{stem}_data.csv", csv_text(ROUND_DATA_COLS, r_data))
        plots += [
            out / f"{stem}.csv",
            out / f"{stem}_data.csv",
            plot_rounds(r_scores, r_data, out, stem),
        ]
    md += rounds_md
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
    plots += [plot_vs_key(runs, scores, k, out) for k in PLOT_KEYS]
    plots += [plot_acceptance(runs, out), plot_vote_shares(runs, out), plot_similarity(runs, out)]
    return {"runs": runs, "scores": scores, "data": data, "missing": missing,
            "markdown": score_md, "data_markdown": data_md, "rounds_markdown": "\n".join(rounds_md),
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
    if result["rounds_markdown"]:
        print(result["rounds_markdown"])
    if result["missing"]:
        print("missing:\n" + "\n".join(f"  - {m}" for m in result["missing"]) + "\n")
    if args.wandb:
        result["files"].append(log_wandb(result, out))
    print("wrote:\n" + "\n".join(f"  {p}" for p in result["files"]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
