"""Stage `vote`: majority voting over the first `voting.k` responses of each question's pool.

Reads:  answers.jsonl (from `answers`, or the user's `vote.input`: {question, responses: [str |
        {text, finish_reason}], id?} per line).
Writes: qa.jsonl: {id, question, answer, response, votes, share, k}; rejected.jsonl: questions
        with no extractable answer (`no_answer`) or a winner below `voting.min_share`
        (`below_min_share`), with their votes, and with `data.decontaminate=true` the pairs the
        contamination check flags (`contaminated`); contamination.jsonl: per QA question, its
        longest word n-gram overlap and nearest embedding neighbour in each eval test set
        (crescent/evaluation/contamination.py; empty when `data.contamination.enabled=false`).

The chosen response is the first of the k whose answer equals the majority (the paper's SFT
target). With the default `voting.count_truncated=false`, a response cut at the token cap votes
"no answer", so every kept pair's response ended on end-of-text or a stop string.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from crescent.errors import InputError
from crescent.fsutil import atomic_write_jsonl
from crescent.records import ANSWER_ROW, CONTAMINATION, QA, REJECTED, response_text
from crescent.voting import vote

INPUT_SCHEMA = ANSWER_ROW


def hashed(cfg) -> dict:
    from crescent.evaluation.contamination import identity

    v = cfg.voting
    return {
        "k": int(v.k),
        "extractor": v.extractor,
        "none_can_win": bool(v.none_can_win),
        "count_truncated": bool(v.count_truncated),
        "min_share": float(v.min_share),
        "contamination": identity(cfg),
    }


def check_input(cfg, rows: list[dict], label: str) -> None:
    k = int(cfg.voting.k)
    for i, r in enumerate(rows, 1):
        if len(r["responses"]) < k:
            raise InputError(
                f"{label}: row {i} has {len(r['responses'])} responses but voting.k={k} "
                f"(allowed: voting.k <= the smallest pool in the file)"
            )


def run(ctx) -> dict:
    cfg = ctx.cfg
    v = cfg.voting
    k = int(v.k)
    rows = ctx.read("answers.jsonl")
    check_input(cfg, rows, str(ctx.planned.inputs["answers.jsonl"]))
    qa, rejected, shares = [], [], []
    for i, r in enumerate(rows):
        res = vote(r["responses"], k, v.extractor, bool(v.none_can_win), bool(v.count_truncated))
        base = {"id": r.get("id", f"q{i:06d}"), "question": r["question"]}
        if res.chosen is None:
            rejected.append(
                {
                    **base,
                    "votes": res.votes,
                    "share": 0.0,
                    "k": k,
                    "reason": "no_answer",
                    "stage": "vote",
                }
            )
            continue
        if res.share < float(v.min_share):
            rejected.append({**base, "answer": res.answer, "votes": res.votes, "share": res.share, "k": k,
                             "reason": "below_min_share", "stage": "vote"})  # fmt: skip
            continue
        response = response_text(r["responses"][res.chosen])
        qa.append({**base, "answer": res.answer, "response": response, "votes": res.votes,
                   "share": round(res.share, 4), "k": k})  # fmt: skip
        shares.append(res.share)
    contamination = _contamination(ctx, qa, rejected)
    if contamination is not None and bool(cfg.data.decontaminate):
        keep = [r["id"] not in contamination["flagged_ids"] for r in qa]
        qa = [r for r, ok in zip(qa, keep, strict=True) if ok]
        shares = [x for x, ok in zip(shares, keep, strict=True) if ok]
    atomic_write_jsonl(ctx.entry.path(QA), qa)
    atomic_write_jsonl(ctx.entry.path(REJECTED), rejected)
    reasons = Counter(r["reason"] for r in rejected)
    metrics = {
        "questions": len(rows),
        "qa_pairs": len(qa),
        "no_answer": reasons.get("no_answer", 0),
        "below_min_share": reasons.get("below_min_share", 0),
        "mean_share": round(sum(shares) / len(shares), 4) if shares else None,
        "unanimous_share": round(sum(1 for s in shares if s == 1.0) / len(shares), 4)
        if shares
        else None,
        "k": k,
    }
    if contamination is not None:
        metrics["contamination"] = contamination["summary"]
        metrics["decontaminated"] = (
            len(contamination["flagged_ids"]) if cfg.data.decontaminate else 0
        )
    if ctx.tracker:
        ctx.tracker.table(
            "vote/qa_samples",
            qa[: int(cfg.tracking.sample_rows)],
            ["id", "question", "answer", "share", "response"],
        )
    return metrics


def _contamination(ctx, qa: list[dict], rejected: list[dict]) -> dict | None:
    """Check the QA questions against the eval test sets (crescent/evaluation/contamination.py):
    writes contamination.jsonl; with data.decontaminate=true the flagged pairs go to rejected.jsonl
    (reason `contaminated`). Returns {summary, flagged_ids}, or None when the check is off."""
    from crescent.evaluation import contamination as C

    cfg = ctx.cfg
    c = cfg.data.contamination
    path = ctx.entry.path(CONTAMINATION)
    if not c.enabled:
        atomic_write_jsonl(path, [])
        return None
    sets, missing = C.test_sets(cfg)
    if missing:
        ctx.warn(f"contamination check: no local copy of {', '.join(missing)} under "
                 f"paths.data_dir={cfg.paths.data_dir}; those test sets were skipped")  # fmt: skip
    embedder = ctx.resources.embedder() if sets and qa else None
    checks = C.check([r["question"] for r in qa], sets, embedder, Path(cfg.paths.models_dir),
                     int(c.ngram), float(c.cosine)) if sets else []  # fmt: skip
    rows = [
        {"id": r["id"], "question": r["question"], **x} for r, x in zip(qa, checks, strict=False)
    ]
    atomic_write_jsonl(path, rows)
    flagged = {r["id"] for r in rows if r["flagged"]}
    if cfg.data.decontaminate:
        rejected += [
            {**r, "reason": "contaminated", "stage": "vote"} for r in qa if r["id"] in flagged
        ]
    summary = C.summary(rows, int(c.ngram), float(c.cosine))
    summary["sets"] = sorted(sets)
    if summary["flagged"]:
        ctx.warn(f"contamination check: {summary['flagged']} of {summary['checked']} QA questions "
                 f"overlap an eval test set (see {CONTAMINATION})")  # fmt: skip
    return {"summary": summary, "flagged_ids": flagged}
