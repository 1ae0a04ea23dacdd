"""Stage `answers`: sample a pool of `answers.n` responses per question, once.

Reads:  questions.jsonl (from `questions`/`dedup`, or the user's `answers.input`).
Writes: answers.jsonl: {id, question, responses: [{text, finish_reason, num_tokens}, ...]}.

Questions are answered in chunks of `answers.chunk_size`, each with a seed derived from its index
and saved as `chunks/answers-<i>.jsonl`; a killed run resumes at the first missing chunk. With
`engine.replicas > 1` the chunks are spread over Ray replicas (same rows as one engine). Voting
takes the first k of the pool (maj@k by prefix), so a `voting.k` sweep never re-samples.
"""

from __future__ import annotations

import functools
import time

from crescent.cache import load_or_discard
from crescent.engines.base import SamplingSpec
from crescent.fsutil import atomic_write_jsonl, derive_seed
from crescent.records import ANSWER_ROW, ANSWERS, QUESTION_ROW, read_jsonl
from crescent.stages.keys import generation_identity, plain

INPUT_SCHEMA = QUESTION_ROW


def hashed(cfg) -> dict:
    return {
        **generation_identity(cfg),
        "answer_suffix": cfg.model.answer_suffix,
        "chat": [
            cfg.model.get("chat_template"),
            cfg.model.get("system_prompt"),
            list(cfg.model.stop),
        ],
        "sampling": plain(cfg.sampling.answers),
        "n": int(cfg.answers.n),
        "chunk_size": int(cfg.answers.chunk_size),
    }


def run(ctx) -> dict:
    cfg = ctx.cfg
    rows = ctx.read("questions.jsonl")
    for i, r in enumerate(rows):
        r.setdefault("id", f"q{i:06d}")
    s = cfg.sampling.answers
    size = int(cfg.answers.chunk_size)
    n = int(cfg.answers.n)
    chunks = [rows[start : start + size] for start in range(0, len(rows), size)]
    paths = [ctx.entry.chunk(f"answers-{c:06d}.jsonl") for c in range(len(chunks))]
    saved = [
        load_or_discard([path], functools.partial(_read_chunk, path, [r["id"] for r in part], n),
                        "answers chunk")
        for path, part in zip(paths, chunks, strict=True)
    ]  # fmt: skip
    engine = ctx.resources.engine() if any(x is None for x in saved) else None

    def jobs():  # a saved chunk needs no request; the others one generate call each
        for c, part in enumerate(chunks):
            if saved[c] is not None:
                yield c, None
                continue
            prompts = [engine.render(r["question"] + cfg.model.answer_suffix) for r in part]
            spec = SamplingSpec(
                n=n, temperature=float(s.temperature), top_p=float(s.top_p),
                max_tokens=int(s.max_tokens), stop=tuple(cfg.model.stop),
                seed=derive_seed(int(cfg.seed), "answers", c),
            )  # fmt: skip
            yield c, (prompts, spec, f"answers chunk {c + 1}/{len(chunks)}")

    out, t0, new_tokens = [], time.time(), 0
    results = engine.generate_many(jobs()) if engine else ((c, None) for c in range(len(chunks)))
    for c, gens in results:
        if gens is None:
            out += saved[c]
            continue
        done = [
            {"id": r["id"], "question": r["question"], "responses": [g.row() for g in gs]}
            for r, gs in zip(chunks[c], gens, strict=True)
        ]
        new_tokens += sum(g.num_tokens for gs in gens for g in gs)
        atomic_write_jsonl(paths[c], done)
        out += done
        print(f"[crescent] answers: {len(out)}/{len(rows)} questions", flush=True)
    atomic_write_jsonl(ctx.entry.path(ANSWERS), out)
    responses = [x for r in out for x in r["responses"]]
    truncated = sum(1 for x in responses if x["finish_reason"] == "length")
    secs = time.time() - t0
    return {
        "questions": len(out),
        "responses": len(responses),
        "truncated_share": round(truncated / len(responses), 4) if responses else 0.0,
        "tokens_generated": new_tokens,
        "tokens_per_second": round(new_tokens / secs, 1) if new_tokens else None,
        "mean_response_tokens": round(sum(x["num_tokens"] for x in responses) / len(responses), 1)
        if responses
        else 0,
    }


def _read_chunk(path, ids: list[str], n: int) -> list[dict]:
    """A finished chunk: one row per question of the chunk, in order, with n responses each."""
    rows = read_jsonl(path, ANSWER_ROW)
    if [r.get("id") for r in rows] != ids or any(len(r["responses"]) != n for r in rows):
        raise ValueError(
            f"holds {len(rows)} rows, not the {len(ids)} questions x {n} answers expected"
        )
    return rows
