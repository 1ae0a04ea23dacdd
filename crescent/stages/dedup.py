"""Stage `dedup`: the `questions` stage's dedup rules applied to a user's own question file.

Reads:  `dedup.input` (required): JSONL, one {"question": ...} per line in generation order, with
        an optional "call" naming the generation call it came from (consecutive rows with the same
        call form one call, so the within-call rule applies among them; rows without it are each
        their own call, so only the accepted-set rule applies) and an optional "id".
Writes: questions.jsonl (kept rows), rejected.jsonl (with reasons), calls.jsonl.

With `dedup.max_rewrites=0` near-duplicates are dropped and no model is loaded; otherwise the
generating model rewrites them as in the `questions` stage.
"""

from __future__ import annotations

from crescent.cleaning import CLEANERS
from crescent.dedup import Candidate, DedupRules
from crescent.records import QUESTION_ROW
from crescent.stages.dedup_loop import DedupLoop
from crescent.stages.keys import dedup_rules, rewrite_identity
from crescent.stages.questions import make_rewriter

CHUNK_ROWS = 512  # rows per resumable chunk (whole calls only)
INPUT_SCHEMA = QUESTION_ROW


def hashed(cfg) -> dict:
    return {
        "dedup": dedup_rules(cfg),
        "clean_input": bool(cfg.dedup.clean_input),
        "cleaner": cfg.questions.cleaner if cfg.dedup.clean_input else None,
        "rewrite": rewrite_identity(cfg),
    }


def group_calls(rows: list[dict]) -> list[list[int]]:
    """Row indices grouped into calls: consecutive equal "call" values; no "call" = a call of its own."""
    groups: list[list[int]] = []
    prev = object()
    for i, r in enumerate(rows):
        call = r.get("call")
        if call is not None and groups and call == prev:
            groups[-1].append(i)
        else:
            groups.append([i])
        prev = call if call is not None else object()
    return groups


def run(ctx) -> dict:
    cfg = ctx.cfg
    rows = ctx.read("questions.jsonl")
    clean = CLEANERS[cfg.questions.cleaner] if cfg.dedup.clean_input else (lambda t: t.strip())
    texts = [clean(r["question"]) for r in rows]
    embed = ctx.resources.embedder()
    live = [i for i, t in enumerate(texts) if t]
    vecs_live = embed([texts[i] for i in live])  # one batched pass over the whole file
    vecs = {i: vecs_live[k] for k, i in enumerate(live)}
    rules = DedupRules.from_config(cfg.dedup)
    loop = DedupLoop(ctx, rules, embed, make_rewriter(ctx, "dedup"), embed.dim, "dedup")

    def source(call: int, idx: list[int]):
        def make():
            import numpy as np

            cands = [
                Candidate(
                    str(rows[i].get("id", f"in{i:06d}")),
                    texts[i],
                    rows[i]["question"],
                    call,
                    "input",
                )
                for i in idx
            ]
            mat = np.stack([vecs[i] if i in vecs else np.zeros(embed.dim, np.float32) for i in idx])
            return cands, mat

        return make

    groups = group_calls(rows)
    chunk, size, n = [], 0, 0
    for call, idx in enumerate(groups):
        chunk.append((call, source(call, idx)))
        size += len(idx)
        if size >= CHUNK_ROWS or call == len(groups) - 1:
            loop.run_chunk(f"rows-{n:06d}", chunk)
            chunk, size, n = [], 0, n + 1
    metrics = loop.write_outputs()
    metrics["input_rows"] = len(rows)
    return metrics
