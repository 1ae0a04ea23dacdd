"""Text-generation engines behind one small interface (`crescent.engines.base.Engine`).

Chosen by the `engine` config group through `_target_` (no name ladders): `hf` (transformers,
CPU default) and `vllm` (GPU default). `engine.replicas > 1` runs the engine as N Ray actors
(`crescent.engines.ray_pool`), with the same rows as one engine.
"""

from __future__ import annotations

from hydra.utils import instantiate

from crescent.engines.base import Engine, Generation, SamplingSpec

__all__ = ["Engine", "Generation", "SamplingSpec", "build_engine"]


def build_engine(engine_cfg, model_cfg, model_path: str) -> Engine:
    """Instantiate the configured engine (`_target_`, `_partial_`) for a resolved model path."""
    from crescent.engines.ray_pool import RayEnginePool, engine_class_config

    if int(engine_cfg.get("replicas") or 1) > 1:
        return RayEnginePool(engine_cfg, model_cfg, model_path)
    factory = instantiate(engine_class_config(engine_cfg), _convert_="all")
    return factory(model_cfg=model_cfg, model_path=model_path)
