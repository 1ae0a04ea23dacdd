"""The small interface every text-generation engine implements, and what they share.

An engine takes rendered prompts and a `SamplingSpec` and returns, for each prompt, `n` generations
with their finish reason ("stop": end-of-text or a stop string; "length": the token cap).
A sampled generation is a function of model, prompt, sampling parameters, seed and micro-batch size:
`identity` lists what of the engine belongs in cache keys.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass

from crescent.errors import ConfigError


@dataclass(frozen=True)
class SamplingSpec:
    n: int = 1
    temperature: float = 1.0
    top_p: float = 1.0
    max_tokens: int = 256
    stop: tuple[str, ...] = ()
    seed: int = 0

    def key(self) -> dict:
        return asdict(self)


# one generate call: (prompts, spec, progress-bar label)
Request = tuple[list[str], SamplingSpec, str]


@dataclass
class Generation:
    text: str
    finish_reason: str  # "stop" | "length"
    num_tokens: int

    def row(self) -> dict:
        return {
            "text": self.text,
            "finish_reason": self.finish_reason,
            "num_tokens": self.num_tokens,
        }


class Engine:
    """Base class: subclasses implement `generate` and set `tokenizer` and `identity`."""

    tokenizer = None
    identity: dict = {}

    def __init__(self, model_cfg, model_path: str):
        self.model_cfg = model_cfg
        self.model_path = model_path

    def render(self, user_message: str) -> str:
        """The prompt text for one user turn, through the model's chat template when configured."""
        return render_chat(
            self.tokenizer,
            user_message,
            self.model_cfg.get("system_prompt"),
            bool(self.model_cfg.get("chat_template", True)),
        )

    def pre_query(self) -> str:
        """The chat template up to where a user's message would start (Magpie-style prompting)."""
        return render_pre_query(self.tokenizer, self.model_cfg.get("system_prompt"))

    def generate(
        self, prompts: list[str], spec: SamplingSpec, desc: str = "generate"
    ) -> list[list[Generation]]:
        raise NotImplementedError

    def generate_many(self, jobs: Iterable[tuple[object, Request | None]]) -> Iterator[tuple]:
        """Several generate calls, each a unit of work (a chunk): for each `(tag, request)` in
        order, yield `(tag, generations)`; a `None` request (already cached) yields `(tag, None)`.
        One engine runs them one after another, when asked for; a Ray pool
        (`crescent.engines.ray_pool`) runs up to one per replica ahead. Every request carries its
        own seed, so the rows do not depend on which replica ran it."""
        for tag, request in jobs:
            yield tag, None if request is None else self.generate(*request)

    def close(self) -> None:
        """Free the model (vLLM keeps GPU memory until its process ends)."""


def free_memory() -> None:
    """Let the next stage load its own model: collect what the finished one left (vLLM holds its
    GPU memory until its engine is collected) and return CUDA's cached blocks."""
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def render_chat(tokenizer, user_message: str, system_prompt: str | None, use_template: bool) -> str:
    if not use_template or tokenizer is None or not getattr(tokenizer, "chat_template", None):
        return user_message if system_prompt is None else f"{system_prompt}\n\n{user_message}"
    messages = [{"role": "user", "content": user_message}]
    if system_prompt is not None:
        messages.insert(0, {"role": "system", "content": system_prompt})
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


_SENTINEL = "\x00CRESCENT-USER-TURN\x00"


def render_pre_query(tokenizer, system_prompt: str | None) -> str:
    """Everything the chat template puts before a user's words: the model, left to continue it,
    writes a user turn itself (Magpie, Xu et al. 2024). Needs a chat template."""
    if tokenizer is None or not getattr(tokenizer, "chat_template", None):
        raise ConfigError("data.source=magpie: the model's tokenizer has no chat template")
    messages = [{"role": "user", "content": _SENTINEL}]
    if system_prompt is not None:
        messages.insert(0, {"role": "system", "content": system_prompt})
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=False)
    return text[: text.index(_SENTINEL)]


def cut_at_stop(text: str, stop: tuple[str, ...]) -> tuple[str, bool]:
    """Truncate at the earliest stop string; return (text, whether one was found)."""
    cut = min((i for i in (text.find(s) for s in stop if s) if i >= 0), default=-1)
    return (text[:cut], True) if cut >= 0 else (text, False)
