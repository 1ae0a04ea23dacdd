"""The `vllm` engine for real, on the embedded model (vLLM's CPU build works: `make vllm-env`, then
`.venv-vllm/bin/python -m pytest -m vllm`). Skipped where vllm is not installed (the default env)."""

from __future__ import annotations

import pytest

pytest.importorskip("vllm")
pytestmark = [pytest.mark.vllm, pytest.mark.slow]


@pytest.fixture(scope="module")
def engine():
    from hydra import compose, initialize_config_dir

    from crescent.cli import register_resolvers
    from crescent.engines.vllm import VLLMEngine
    from crescent.models import resolve_model_path

    from .conftest import ROOT

    register_resolvers()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("config")
    path = resolve_model_path(cfg.model, cfg.paths.models_dir)
    args = {"enforce_eager": True, "gpu_memory_utilization": 0.3, "max_model_len": 2048}
    eng = VLLMEngine(cfg.model, path, batch_size=64, engine_args=args)
    yield eng
    eng.close()


def test_seeded_samples_are_reproducible_and_distinct(engine):
    from crescent.engines.base import SamplingSpec

    prompts = [engine.render("Write one math word problem."), engine.render("What is 12 * 7?")]
    spec = SamplingSpec(n=4, temperature=0.8, top_p=0.95, max_tokens=48, seed=7)
    a, b = engine.generate(prompts, spec), engine.generate(prompts, spec)
    assert [[g.text for g in gs] for gs in a] == [[g.text for g in gs] for gs in b]
    for gs in a:
        assert len(gs) == 4 and len({g.text for g in gs}) > 1
        assert all(g.finish_reason in ("stop", "length") and g.num_tokens > 0 for g in gs)
