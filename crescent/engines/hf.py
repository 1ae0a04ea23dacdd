"""`hf` engine: transformers `generate`, batched with left padding; CPU or GPU.

n samples per prompt are laid out prompt-major ([p0 s0, p0 s1, ..., p1 s0, ...]) and cut into
micro-batches of `batch_size` sequences; the torch RNG is seeded once per `generate` call, so a call
with the same prompts, spec and batch size returns the same text. Sampling (temperature, top-p) is
`NucleusSampler`, the last logits processor of a greedy `generate` (crescent/engines/nucleus.py).
The n samples of a prompt share one prefill: the prompt's KV cache is computed once per micro-batch
and repeated for its samples (`shared_prefill`).
"""

from __future__ import annotations

import itertools
import time

import torch
from tqdm.auto import tqdm

from crescent.engines.base import Engine, Generation, SamplingSpec, cut_at_stop, free_memory
from crescent.engines.nucleus import SAMPLER_VERSION, NucleusSampler

# Part of the engine identity (cache keys): how the hf engine turns a prompt into text.
DECODING_VERSION = f"{SAMPLER_VERSION}+shared-prefill-v1"


def pick_device(device: str) -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def cpu_has_fast_bf16() -> bool:
    """AMX-BF16 or AVX512-BF16: bf16 matmuls run faster than fp32 on this CPU."""
    try:
        flags = open("/proc/cpuinfo").read()
    except OSError:
        return False
    return " amx_bf16" in flags or " avx512_bf16" in flags


def generation_dtype(
    engine_dtype: str | None, model_dtype: str | None, device: str = "auto"
) -> str:
    """The dtype the hf engine samples in. `auto`: bfloat16 on a CPU with fast bf16, else the model's."""
    model_dtype = model_dtype or "float32"
    on_cpu = pick_device(device) == "cpu"
    if engine_dtype in (None, "model"):
        dtype = model_dtype
    elif engine_dtype == "auto":
        dtype = "bfloat16" if on_cpu and cpu_has_fast_bf16() else model_dtype
    else:
        dtype = engine_dtype
    return "float32" if on_cpu and dtype == "float16" else dtype  # fp16 is slow or missing on CPU


class HFEngine(Engine):
    def __init__(
        self,
        model_cfg,
        model_path: str,
        batch_size: int = 32,
        device: str = "auto",
        threads=None,
        dtype: str | None = "auto",
    ):
        super().__init__(model_cfg, model_path)
        from transformers import AutoModelForCausalLM, AutoTokenizer

        import crescent.engines.gqa_attention  # noqa: F401  registers attn_implementation=grouped_eager

        if threads:
            torch.set_num_threads(int(threads))
        self.device = pick_device(device)
        self.batch_size = int(batch_size)
        trust = bool(model_cfg.get("trust_remote_code", False))
        self.tokenizer = AutoTokenizer.from_pretrained(model_path, trust_remote_code=trust)
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        dtype = getattr(torch, generation_dtype(dtype, model_cfg.get("dtype"), device))
        attn = model_cfg.get("attn_implementation")
        extra = {"attn_implementation": attn} if attn else {}
        self.model = AutoModelForCausalLM.from_pretrained(
            model_path, dtype=dtype, trust_remote_code=trust, use_safetensors=True, **extra
        ).to(self.device)
        self.model.eval()
        eos = self.model.generation_config.eos_token_id
        eos = eos if isinstance(eos, list) else [eos]
        self.eos_ids = {e for e in [*eos, self.tokenizer.eos_token_id] if e is not None}
        self.identity = {
            "engine": "hf",
            "batch_size": self.batch_size,
            "dtype": str(dtype),
            "decoding": DECODING_VERSION,
        }
        self.stats = {"generated_tokens": 0, "seconds": 0.0}

    @torch.inference_mode()
    def generate(
        self, prompts: list[str], spec: SamplingSpec, desc: str = "generate"
    ) -> list[list[Generation]]:
        seqs = [p for p in prompts for _ in range(spec.n)]
        out: list[Generation] = []
        torch.manual_seed(spec.seed)
        from transformers import LogitsProcessorList

        kwargs = dict(  # the same for every micro-batch of this call
            max_new_tokens=spec.max_tokens,
            do_sample=False,  # sampling is the last logits processor (NucleusSampler)
            pad_token_id=self.tokenizer.pad_token_id,
            eos_token_id=sorted(self.eos_ids),
        )
        if spec.temperature > 0:
            sampler = NucleusSampler(spec.temperature, spec.top_p)
            kwargs.update(logits_processor=LogitsProcessorList([sampler]))
        if spec.stop:
            kwargs.update(stop_strings=list(spec.stop), tokenizer=self.tokenizer)
        bar = tqdm(total=len(seqs), desc=desc, unit="seq", leave=False, dynamic_ncols=True)
        t0, tokens = time.time(), 0
        for start in range(0, len(seqs), self.batch_size):
            batch = seqs[start : start + self.batch_size]
            enc = self.tokenizer(batch, return_tensors="pt", padding=True, add_special_tokens=False)
            enc = enc.to(self.device)
            cache = self.shared_prefill(batch, enc)
            full = self.model.generate(**enc, **kwargs, past_key_values=cache)
            ids = full[:, enc["input_ids"].shape[1] :].tolist()
            for row in ids:
                g = self._decode(row, spec)
                tokens += g.num_tokens
                out.append(g)
            bar.update(len(batch))
            bar.set_postfix(tok_s=f"{tokens / max(time.time() - t0, 1e-9):.0f}")
        bar.close()
        self.stats["generated_tokens"] += tokens
        self.stats["seconds"] += time.time() - t0
        return [out[i * spec.n : (i + 1) * spec.n] for i in range(len(prompts))]

    def shared_prefill(self, batch: list[str], enc):
        """The KV cache of every sequence's prompt but its last token, each distinct prompt computed
        once and repeated for its consecutive samples; None when no prompt repeats (or it is one
        token long). `generate` then starts from it and runs only the last prompt token."""
        counts = [len(list(group)) for _, group in itertools.groupby(batch)]
        if len(counts) == len(batch) or enc["input_ids"].shape[1] < 2:
            return None
        from transformers import DynamicCache

        firsts = torch.tensor([0, *itertools.accumulate(counts)][:-1], device=self.device)
        ids, mask = enc["input_ids"][firsts, :-1], enc["attention_mask"][firsts, :-1]
        # numbered as generate numbers left-padded rows
        positions = (mask.long().cumsum(-1) - 1).clamp(min=0)
        cache = DynamicCache(config=self.model.config)
        self.model(
            input_ids=ids,
            attention_mask=mask,
            position_ids=positions,
            past_key_values=cache,
            use_cache=True,
            logits_to_keep=1,
        )
        # row i of the distinct prompts -> counts[i] rows: [0, 0, 0, 1, ...]
        cache.reorder_cache(torch.repeat_interleave(torch.tensor(counts, device=self.device)))
        return cache

    def _decode(self, row: list[int], spec: SamplingSpec) -> Generation:
        ends = self.eos_ids | {self.tokenizer.pad_token_id}  # finished rows are padded after EOS
        n = next((i for i, t in enumerate(row) if t in ends), None)
        stopped = n is not None
        kept = row[:n] if stopped else row
        text = self.tokenizer.decode(kept, skip_special_tokens=True)
        text, hit = cut_at_stop(text, spec.stop)
        if hit and not stopped:
            stopped = True
        reason = "stop" if stopped or len(kept) < spec.max_tokens else "length"
        return Generation(text=text, finish_reason=reason, num_tokens=len(kept))

    def close(self) -> None:
        self.model = None
        free_memory()
