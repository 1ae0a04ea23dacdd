"""The data card of a run's generated dataset: settings, counts, diversity, label confidence.

`python -m crescent.datacard RUN_DIR [--no-export] [--push-to-hub REPO]`

Reads (all optional: what is absent shows as null / `missing`):
    RUN_DIR/manifest.json       which stage entries belong to this run (a stage not listed there
                                failed or has not run, and counts as missing)
    RUN_DIR/config.yaml         settings (model, bait prompt, sampling, dedup, voting, seed)
    questions/questions.jsonl   accepted questions (`similarity`: cosine to the nearest earlier one)
    questions/rejected.jsonl    rejected questions by `reason`
    questions/calls.jsonl       samples and accepted per generation call
    vote/qa.jsonl               the QA pairs (`share`, `k`)
    vote/rejected.jsonl         questions dropped by the vote, by `reason`
    vote/contamination.jsonl    overlap with the eval test sets (`flagged`)
Writes RUN_DIR/data_card.md, RUN_DIR/data_card.json and (unless --no-export) RUN_DIR/hf_dataset,
qa.jsonl as a Hugging Face `datasets` folder (`datasets.load_from_disk`). Nothing is pushed to the
hub unless --push-to-hub REPO is given.

Definitions: acceptance rate = questions that passed cleaning and dedup / samples (as the
`questions` stage reports it; questions cut by `questions.target` count as accepted); kept rate =
rows of questions.jsonl / samples. distinct-2 = distinct word 2-grams / all word 2-grams over the
accepted questions (words: `\\w+` runs of the lower-cased text, 2-grams within one question).
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
from collections import Counter
from pathlib import Path

import yaml

from crescent.fsutil import atomic_write_json, atomic_write_text

CARD_JSON, CARD_MD, HF_DIR = "data_card.json", "data_card.md", "hf_dataset"


# ---- reading a run directory (shared with crescent.report) -------------------------------------


def read_manifest(run_dir: str | Path) -> dict | None:
    p = Path(run_dir) / "manifest.json"
    return json.loads(p.read_text()) if p.is_file() else None


def read_config(run_dir: str | Path) -> dict | None:
    """The resolved config.yaml, else Hydra's own .hydra/config.yaml (unresolved), else None."""
    for p in (Path(run_dir) / "config.yaml", Path(run_dir) / ".hydra" / "config.yaml"):
        if p.is_file():
            return yaml.safe_load(p.read_text()) or {}
    return None


def stage_dir(run_dir: str | Path, manifest: dict | None, stage: str) -> Path | None:
    """The stage's entry folder when the manifest lists the stage (its cache dir, else the link)."""
    rec = (manifest or {}).get("stages", {}).get(stage)
    if not rec:
        return None
    for d in (Path(rec["dir"]), Path(run_dir) / stage):
        if d.is_dir():
            return d
    return None


def read_jsonl(path: Path | None) -> list[dict] | None:
    """Rows of a JSONL file, or None when the file (or its stage) is missing."""
    if path is None or not path.is_file():
        return None
    return [
        json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()
    ]


def get(cfg: dict | None, dotted: str, default=None):
    node = cfg
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return default
        node = node[part]
    return node


# ---- the numbers ---------------------------------------------------------------------------------


def distinct_n(texts: list[str], n: int = 2) -> tuple[int, int]:
    """(distinct word n-grams, all word n-grams) over the texts, n-grams within one text."""
    grams = []
    for t in texts:
        words = re.findall(r"\w+", t.lower())
        grams += [tuple(words[i : i + n]) for i in range(len(words) - n + 1)]
    return len(set(grams)), len(grams)


def _ratio(a, b, digits: int = 4):
    return round(a / b, digits) if b else None


def _mean(xs: list[float], digits: int = 4):
    return round(sum(xs) / len(xs), digits) if xs else None


def settings(cfg: dict | None) -> dict:
    student = get(cfg, "distill.student")
    return {
        "name": get(cfg, "name"),
        "model": get(cfg, "model.name"),
        "model_path": get(cfg, "model.path"),
        "student": student.get("name") if isinstance(student, dict) else student,
        "data_source": get(cfg, "data.source"),
        "bait_prompt": get(cfg, "model.bait_prompt"),
        "sampling": get(cfg, "sampling"),
        "questions_target": get(cfg, "questions.target"),
        "answers_n": get(cfg, "answers.n"),
        "dedup": {k: get(cfg, f"dedup.{k}") for k in
                  ("embedder", "threshold", "batch_threshold", "max_rewrites", "recheck")},
        "voting": {k: get(cfg, f"voting.{k}") for k in
                   ("k", "extractor", "min_share", "none_can_win", "count_truncated")},
        "decontaminate": get(cfg, "data.decontaminate"),
        "seed": get(cfg, "seed"),
    }  # fmt: skip


def share_label(share: float, k: int) -> str:
    """0.6667 with k=3 -> '2/3' (votes for the winner out of k)."""
    return f"{round(share * k)}/{k}"


def label_value(label: str) -> float:
    a, b = label.split("/")
    return int(a) / int(b)


def compute(run_dir: str | Path) -> dict:
    """The data card of RUN_DIR as a dict (reads only; see the module docstring)."""
    run_dir = Path(run_dir)
    manifest, cfg = read_manifest(run_dir), read_config(run_dir)
    qdir, vdir = stage_dir(run_dir, manifest, "questions"), stage_dir(run_dir, manifest, "vote")
    # stage `dedup` (a user's questions file) writes the same files as `questions`
    qdir = qdir or stage_dir(run_dir, manifest, "dedup")
    questions = read_jsonl(qdir and qdir / "questions.jsonl")
    rejected = read_jsonl(qdir and qdir / "rejected.jsonl")
    calls = read_jsonl(qdir and qdir / "calls.jsonl")
    qa = read_jsonl(vdir and vdir / "qa.jsonl")
    vote_rej = read_jsonl(vdir and vdir / "rejected.jsonl")
    contam = read_jsonl(vdir and vdir / "contamination.jsonl")
    missing = [f"{s} ({what})" for s, what, rows in (
        ("questions", "questions.jsonl", questions), ("questions", "rejected.jsonl", rejected),
        ("vote", "qa.jsonl", qa), ("vote", "rejected.jsonl", vote_rej))
        if rows is None]  # fmt: skip

    card: dict = {"run_dir": str(run_dir), "settings": settings(cfg), "missing": missing}
    card["fingerprints"] = {s: (manifest or {}).get("stages", {}).get(s, {}).get("fingerprint")
                            for s in ("questions", "dedup", "vote")}  # fmt: skip
    reasons = Counter(r["reason"] for r in rejected or [])
    if calls is not None:
        samples = sum(c["samples"] for c in calls)
        passed = sum(c["accepted"] for c in calls)
    elif questions is not None and rejected is not None:
        samples = len(questions) + len(rejected)
        passed = len(questions) + reasons.get("over_target", 0)
    else:
        samples = passed = None
    n_q = None if questions is None else len(questions)
    sims = [r["similarity"] for r in questions or [] if r.get("similarity") is not None]
    d2, all2 = distinct_n([r["question"] for r in questions or []], 2)
    card["questions"] = {
        "accepted": n_q,
        "rejected": None if rejected is None else len(rejected),
        "rejected_by_reason": dict(sorted(reasons.items())),
        "samples": samples,
        "acceptance_rate": _ratio(passed, samples) if samples is not None else None,
        "kept_rate": _ratio(n_q, samples) if samples is not None and n_q is not None else None,
        "calls": None if calls is None else len(calls),
    }
    card["diversity"] = {
        "mean_nearest_similarity": _mean(sims),
        "with_similarity": len(sims),
        "distinct_2": _ratio(d2, all2),
        "distinct_2_counts": [d2, all2],
    }
    shares = [float(r["share"]) for r in qa or []]
    hist = Counter(share_label(float(r["share"]), int(r["k"])) for r in qa or [] if "k" in r)
    card["votes"] = {
        "qa_pairs": None if qa is None else len(qa),
        "rejected": None if vote_rej is None else len(vote_rej),
        "rejected_by_reason": dict(sorted(Counter(r["reason"] for r in vote_rej or []).items())),
        "k": sorted({int(r["k"]) for r in qa or [] if "k" in r}),
        "mean_share": _mean(shares),
        "share_histogram": dict(sorted(hist.items(), key=lambda kv: label_value(kv[0]))),
    }
    flagged = sum(1 for r in contam or [] if r.get("flagged"))
    card["contamination"] = {
        "checked": None if contam is None else len(contam),
        "flagged": None if contam is None else flagged,
        "rate": _ratio(flagged, len(contam)) if contam else None,
    }
    return card


def load_or_compute(run_dir: str | Path) -> dict:
    """RUN_DIR/data_card.json when it matches the manifest's stage fingerprints, else computed."""
    run_dir = Path(run_dir)
    p = run_dir / CARD_JSON
    if p.is_file():
        card = json.loads(p.read_text())
        stages = (read_manifest(run_dir) or {}).get("stages", {})
        now = {s: stages.get(s, {}).get("fingerprint") for s in ("questions", "dedup", "vote")}
        if card.get("fingerprints") == now:
            return card
    return compute(run_dir)


# ---- writing -------------------------------------------------------------------------------------


def _fmt(v) -> str:
    if v is None:
        return "missing"
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, float):
        return f"{v:.4f}"
    return str(v)


def markdown(card: dict) -> str:
    s, q, d, v, c = (
        card[k] for k in ("settings", "questions", "diversity", "votes", "contamination")
    )
    model = s["model"] and s["model"] + (f" (student {s['student']})" if s.get("student") else "")
    lines = [
        f"# Data card: {s.get('name') or Path(card['run_dir']).name}",
        "",
        "## Settings",
        "",
        f"- model: {_fmt(model)}; data source: {_fmt(s['data_source'])}; seed: {_fmt(s['seed'])}",
        f"- bait prompt: {json.dumps(s['bait_prompt'])}",
        f"- sampling: {json.dumps(s['sampling'])}",
        f"- questions.target: {_fmt(s['questions_target'])}; answers.n: {_fmt(s['answers_n'])}",
        f"- dedup: {json.dumps(s['dedup'])}",
        f"- voting: {json.dumps(s['voting'])}; decontaminate: {_fmt(s['decontaminate'])}",
        "",
        "## Counts",
        "",
        "| what | value |",
        "|---|---:|",
        f"| samples (bait generations) | {_fmt(q['samples'])} |",
        f"| questions accepted (questions.jsonl) | {_fmt(q['accepted'])} |",
        f"| acceptance rate (passed cleaning + dedup / samples) | {_fmt(q['acceptance_rate'])} |",
        f"| kept rate (questions.jsonl / samples) | {_fmt(q['kept_rate'])} |",
        *[f"| rejected: {k} | {n} |" for k, n in q["rejected_by_reason"].items()],
        f"| QA pairs (qa.jsonl) | {_fmt(v['qa_pairs'])} |",
        *[f"| rejected in vote: {k} | {n} |" for k, n in v["rejected_by_reason"].items()],
        "",
        "## Diversity and labels",
        "",
        "| what | value |",
        "|---|---:|",
        f"| mean nearest-neighbour cosine at acceptance ({d['with_similarity']} questions) | "
        f"{_fmt(d['mean_nearest_similarity'])} |",
        f"| distinct-2 (distinct / all word 2-grams: {d['distinct_2_counts'][0]} / "
        f"{d['distinct_2_counts'][1]}) | {_fmt(d['distinct_2'])} |",
        f"| mean vote share (k = {', '.join(map(str, v['k'])) or 'missing'}) | {_fmt(v['mean_share'])} |",
        *[f"| vote share {k} | {n} |" for k, n in v["share_histogram"].items()],
        f"| contamination: flagged / checked | {_fmt(c['flagged'])} / {_fmt(c['checked'])} |",
        f"| contamination rate | {_fmt(c['rate'])} |",
    ]  # fmt: skip
    if card["missing"]:
        lines += ["", "Missing: " + ", ".join(card["missing"])]
    if card.get("hf_dataset"):
        lines += ["", f"QA pairs as a Hugging Face dataset: `{card['hf_dataset']}` "
                  "(`datasets.load_from_disk`)"]  # fmt: skip
    return "\n".join(lines) + "\n"


def export_hf(rows: list[dict], out: Path, push_to_hub: str | None = None) -> Path:
    """Save the QA rows as a `datasets` folder (replaced atomically); push only when asked."""
    import datasets

    ds = datasets.Dataset.from_list(rows)
    tmp = out.with_name(f".{out.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    ds.save_to_disk(str(tmp))
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    if push_to_hub:
        ds.push_to_hub(push_to_hub)
    return out


def write(run_dir: str | Path, export: bool = True, push_to_hub: str | None = None) -> dict:
    """Compute the card and write data_card.json / .md (and hf_dataset/) into RUN_DIR."""
    run_dir = Path(run_dir)
    card = compute(run_dir)
    qa = read_jsonl((vd := stage_dir(run_dir, read_manifest(run_dir), "vote")) and vd / "qa.jsonl")
    if export and qa is not None:
        card["hf_dataset"] = str(export_hf(qa, run_dir / HF_DIR, push_to_hub))
        if push_to_hub:
            card["pushed_to_hub"] = push_to_hub
    atomic_write_json(run_dir / CARD_JSON, card)
    atomic_write_text(run_dir / CARD_MD, markdown(card))
    return card


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m crescent.datacard", description=__doc__.split("\n")[0]
    )
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("--no-export", action="store_true", help="skip the hf_dataset/ folder")
    ap.add_argument("--push-to-hub", metavar="REPO", help="also push the QA pairs to this hub repo")
    args = ap.parse_args(argv)
    if not args.run_dir.is_dir():
        ap.error(f"{args.run_dir}: not a directory")
    card = write(args.run_dir, export=not args.no_export, push_to_hub=args.push_to_hub)
    print(markdown(card))
    print(f"wrote {args.run_dir / CARD_MD}, {args.run_dir / CARD_JSON}"
          + (f", {card['hf_dataset']}" if card.get("hf_dataset") else ""))  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
