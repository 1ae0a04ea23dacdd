"""Stage `questions`: bait prompting + cleaning + online rejection-sampling self-deduplication.

Reads:  nothing (the model writes its own questions from `model.bait_prompt`).
Writes: questions.jsonl (accepted), rejected.jsonl (with reasons), calls.jsonl (per-call
        acceptance: samples, accepted, rejected by reason, acceptance_rate).

Each generation call samples `sampling.questions.n` answers to the identical bait prompt with a seed
derived from the call index. Raw samples live in the generation cache (keyed by model, engine,
prompt, sampling and seed, not by dedup settings), so a dedup-threshold sweep samples them once.
Calls continue until `questions.target` questions are accepted or `questions.max_calls` calls are
spent; a long run of calls accepting almost nothing means the bait prompt is exhausted (warned).

With `data.source=magpie` (the Magpie-style baseline) the prompt is the chat template up to an empty
user turn instead of the bait prompt: the model writes the user's message itself; the same cleaning
and dedup apply. With `data.source=seed_gsm8k` the stage instead samples `questions.target` seed-dataset questions
(text only, no gold answers): see crescent/seed_questions.py.
"""

from __future__ import annotations

from omegaconf import OmegaConf

from crescent import seed_questions
from crescent.cache import GenerationCache
from crescent.cleaning import CLEANERS
from crescent.dedup import Candidate, DedupRules
from crescent.engines.base import SamplingSpec
from crescent.fsutil import derive_seed
from crescent.stages.dedup_loop import DedupLoop
from crescent.stages.keys import dedup_rules, generation_identity, plain, rewrite_identity


def hashed(cfg) -> dict:
    q = cfg.questions
    source = OmegaConf.select(cfg, "data.source", default="bait")
    if source == "seed_gsm8k":
        return {"data": seed_questions.identity(cfg)}
    return {
        **generation_identity(cfg),
        # the bait prompt, or for Magpie the pre-query template (fixed by the model's chat template)
        "bait_prompt": cfg.model.bait_prompt if source == "bait" else source,
        "chat": [
            cfg.model.get("chat_template"),
            cfg.model.get("system_prompt"),
            list(cfg.model.stop),
        ],
        "sampling": plain(cfg.sampling.questions),
        "target": int(q.target),
        "max_calls": int(q.max_calls),
        "cleaner": q.cleaner,
        "dedup": dedup_rules(cfg),
        "rewrite": rewrite_identity(cfg),
    }


def make_rewriter(ctx, stage: str):
    """call id -> rewrite(pairs, attempt) using the generating model, or None when rewrites are off."""
    cfg = ctx.cfg
    if int(cfg.dedup.max_rewrites) == 0:
        return lambda call: None
    clean = CLEANERS[cfg.questions.cleaner]
    s = cfg.sampling.rewrite

    def for_call(call: int):
        def rewrite(pairs, attempt):
            engine = ctx.resources.engine()
            prompts = [
                engine.render(cfg.model.rewrite_prompt.format(question=q, nearest=n))
                for q, n in pairs
            ]
            spec = SamplingSpec(
                n=1, temperature=float(s.temperature), top_p=float(s.top_p), max_tokens=int(s.max_tokens),
                stop=tuple(cfg.model.stop), seed=derive_seed(int(cfg.seed), stage, "rewrite", call, attempt),
            )  # fmt: skip
            outs = engine.generate(prompts, spec, desc=f"rewrite call {call}")
            return [(clean(g[0].text), g[0].text) for g in outs]

        return rewrite

    return for_call


def run(ctx) -> dict:
    cfg = ctx.cfg
    source = OmegaConf.select(cfg, "data.source", default="bait")
    if source == "seed_gsm8k":
        return seed_questions.run(ctx)  # the seed-dataset baseline: no bait prompting, no dedup
    q, s = cfg.questions, cfg.sampling.questions
    engine = ctx.resources.engine()
    embed = ctx.resources.embedder()
    clean = CLEANERS[q.cleaner]
    # bait: the bait prompt as a user turn; magpie: an empty user turn the model writes itself
    prompt = engine.render(cfg.model.bait_prompt) if source == "bait" else engine.pre_query()
    spec = dict(
        n=int(s.n), temperature=float(s.temperature), top_p=float(s.top_p), max_tokens=int(s.max_tokens),
        stop=tuple(cfg.model.stop),
    )  # fmt: skip
    gens = GenerationCache(
        cfg.paths.cache_dir,
        {"kind": "bait", **generation_identity(cfg), "prompt": prompt, "spec": spec},
    )
    rules = DedupRules.from_config(cfg.dedup)
    loop = DedupLoop(ctx, rules, embed, make_rewriter(ctx, "questions"), embed.dim, "questions")
    tokens_generated = 0
    engine_tokens_at_start = int(engine.stats["generated_tokens"])

    def request(call: int):
        seed = derive_seed(int(cfg.seed), "bait", call)
        return [prompt], SamplingSpec(**spec, seed=seed), f"bait call {call}"

    def bait_jobs():  # ((call, cached samples), request): sample unless saved or cached
        for call in range(int(q.max_calls)):
            if loop.is_saved(f"call-{call:06d}"):  # its dedup chunk is replayed: no samples needed
                yield (call, None), None
            elif (rows := gens.get(call)) is not None:
                yield (call, rows), None
            else:
                yield (call, None), request(call)

    def samples(call: int, rows, generated) -> list[dict]:
        """The call's raw samples: cached, just generated (saved now), or sampled now (a saved
        dedup chunk that turned out damaged, with no cached samples)."""
        nonlocal tokens_generated
        if rows is not None:
            return rows
        if generated is None and (rows := gens.get(call)) is not None:
            return rows
        generated = generated or engine.generate(*request(call))
        rows = [g.row() for g in generated[0]]
        gens.put(call, rows)
        tokens_generated += sum(r["num_tokens"] for r in rows)
        return rows

    def bait_call(call: int, rows, generated):
        def source():
            got = samples(call, rows, generated)
            cands = [
                Candidate(f"c{call:05d}-s{j:03d}", clean(r["text"]), r["text"], call, "bait")
                for j, r in enumerate(got)
            ]
            return cands, None

        return source

    warned = False
    stream = engine.generate_many(bait_jobs())  # a Ray pool samples the next calls meanwhile
    for (call, rows), generated in stream:
        loop.run_chunk(f"call-{call:06d}", [(call, bait_call(call, rows, generated))])
        c = loop.calls[-1]
        print(
            f"[crescent] questions: call {call}: {c['accepted']}/{c['samples']} accepted "
            f"(total {len(loop.accepted)}/{q.target})",
            flush=True,
        )
        recent = loop.calls[-int(q.collapse_window) :]
        if (
            not warned
            and len(recent) == int(q.collapse_window)
            and all(r["acceptance_rate"] < float(q.collapse_rate) for r in recent)
        ):
            warned = True
            ctx.warn(
                f"acceptance below {q.collapse_rate:.0%} for {len(recent)} calls in a row (calls "
                f"{recent[0]['call']}-{recent[-1]['call']}): the bait prompt looks exhausted"
            )
        if len(loop.accepted) >= int(q.target):
            break
    stream.close()
    metrics = loop.write_outputs(target=int(q.target))
    if metrics["accepted"] < int(q.target):
        ctx.warn(
            f"only {metrics['accepted']} of questions.target={q.target} accepted in {q.max_calls} calls"
        )
    metrics.update(
        target=int(q.target),
        bait_calls_generated=gens.misses,
        bait_calls_reused=gens.hits,
        bait_tokens_generated=tokens_generated,
        engine_tokens_generated=int(engine.stats["generated_tokens"]) - engine_tokens_at_start,
    )
    if ctx.tracker:
        ctx.tracker.table(
            "questions/samples",
            loop.accepted[: int(cfg.tracking.sample_rows)],
            ["id", "question", "origin", "similarity"],
        )
        ctx.tracker.table(
            "questions/calls",
            loop.calls,
            ["call", "samples", "accepted", "rejected", "acceptance_rate"],
        )
    return metrics
