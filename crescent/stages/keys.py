"""Config subsets hashed into stage fingerprints (what changes a stage's outputs; no runtime knobs)."""

from __future__ import annotations

from omegaconf import OmegaConf

from crescent.dedup import IndexSpec
from crescent.models import model_identity


def plain(node) -> dict:
    return OmegaConf.to_container(node, resolve=True) if node is not None else None


def engine_identity(cfg) -> dict:
    """Sampled text depends on the backend, its micro-batch size and numeric precision, not on
    device or memory knobs."""
    ident = {"target": cfg.engine._target_, "batch_size": int(cfg.engine.batch_size)}
    if "dtype" in cfg.engine:  # hf: the precision it samples in (`auto` resolved on this machine)
        from crescent.engines.hf import DECODING_VERSION, generation_dtype

        device = cfg.engine.get("device", "auto")
        ident["dtype"] = generation_dtype(cfg.engine.dtype, cfg.model.get("dtype"), device)
        ident["decoding"] = DECODING_VERSION  # how tokens are drawn (sampler, shared prefill)
    return ident


def generation_identity(cfg) -> dict:
    return {
        "model": model_identity(cfg.model),
        "engine": engine_identity(cfg),
        "seed": int(cfg.seed),
    }


def dedup_rules(cfg) -> dict:
    d = cfg.dedup
    rules = {
        "embedder": d.embedder,
        "threshold": None if d.threshold is None else float(d.threshold),  # null: rule off
        "batch_threshold": None if d.batch_threshold is None else float(d.batch_threshold),
        "max_rewrites": int(d.max_rewrites),
        "recheck": bool(d.recheck),
    }
    # An approximate index can miss a near-duplicate: it and its parameters change decisions.
    # Exact adds nothing, so fingerprints from before `dedup.index` existed stay valid.
    index = IndexSpec.from_config(d).identity()
    if index is not None:
        rules["index"] = index
    return rules


def rewrite_identity(cfg) -> dict:
    """What the LLM rewrite of a near-duplicate depends on (nothing when rewrites are off)."""
    if int(cfg.dedup.max_rewrites) == 0:
        return {}
    return {
        **generation_identity(cfg),
        "prompt": cfg.model.rewrite_prompt,
        "cleaner": cfg.questions.cleaner,
        "sampling": plain(cfg.sampling.rewrite),
        "chat": [
            cfg.model.get("chat_template"),
            cfg.model.get("system_prompt"),
            list(cfg.model.stop),
        ],
    }
