"""Config checks run before any model loads: each failure is one line naming the key and what is allowed."""

from __future__ import annotations

from collections.abc import Callable

from omegaconf import DictConfig, OmegaConf

from crescent.cleaning import CLEANERS
from crescent.errors import ConfigError
from crescent.extraction import EXTRACTORS


def _num(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def in_range(lo, hi, lo_open=False):
    def check(v):
        return _num(v) and (v > lo if lo_open else v >= lo) and v <= hi

    return check, f"a number in {'(' if lo_open else '['}{lo}, {hi}]"


def int_at_least(lo):
    return (lambda v: _int(v) and v >= lo), f"an integer >= {lo}"


def num_at_least(lo):
    return (lambda v: _num(v) and v >= lo), f"a number >= {lo}"


def one_of(options):
    opts = sorted(options)
    return (lambda v: v in opts), "one of " + ", ".join(opts)


BOOL = ((lambda v: isinstance(v, bool)), "true or false")
OPT_PATH = ((lambda v: v is None or (isinstance(v, str) and v != "")), "a file path or null")

RULES: list[tuple[str, tuple[Callable, str]]] = [
    ("seed", int_at_least(0)),
    ("questions.target", int_at_least(1)),
    ("questions.max_calls", int_at_least(1)),
    ("questions.cleaner", one_of(CLEANERS)),
    ("questions.collapse_rate", in_range(0, 1)),
    ("questions.collapse_window", int_at_least(1)),
    ("answers.n", int_at_least(1)),
    ("answers.chunk_size", int_at_least(1)),
    ("answers.input", OPT_PATH),
    ("vote.input", OPT_PATH),
    ("dedup.input", OPT_PATH),
    ("dedup.threshold", in_range(0, 1)),
    ("dedup.batch_threshold", in_range(0, 1)),
    ("dedup.max_rewrites", int_at_least(0)),
    ("dedup.recheck", BOOL),
    ("dedup.clean_input", BOOL),
    ("dedup.embed_batch_size", int_at_least(1)),
    ("voting.k", int_at_least(1)),
    ("voting.extractor", one_of(EXTRACTORS)),
    ("voting.none_can_win", BOOL),
    ("voting.count_truncated", BOOL),
    ("voting.min_share", in_range(0, 1)),
    ("engine.batch_size", int_at_least(1)),
    ("model.trust_remote_code", BOOL),
    ("model.chat_template", BOOL),
    ("logger.mode", one_of(["auto", "online", "offline", "disabled"])),
]
for _part in ("questions", "rewrite", "answers"):
    RULES += [
        (f"sampling.{_part}.temperature", num_at_least(0)),
        (f"sampling.{_part}.top_p", in_range(0, 1, lo_open=True)),
        (f"sampling.{_part}.max_tokens", int_at_least(1)),
    ]
RULES.append(("sampling.questions.n", int_at_least(1)))


def _show(v) -> str:
    return "null" if v is None else str(v).lower() if isinstance(v, bool) else str(v)


def validate(cfg: DictConfig) -> None:
    """Raise ConfigError with one line for the first invalid value."""
    from crescent.stages import ALL_STAGE_NAMES, STAGES

    for key, (check, allowed) in RULES:
        try:
            value = OmegaConf.select(cfg, key, throw_on_missing=True)
        except Exception as e:  # missing (???) or a broken interpolation
            raise ConfigError(f"{key}: must be set ({allowed}); {e.__class__.__name__}") from None
        if not check(value):
            raise ConfigError(f"{key}={_show(value)}: must be {allowed}")

    stages = OmegaConf.select(cfg, "stages")
    if not OmegaConf.is_list(stages) or not stages:
        raise ConfigError(
            f"stages={_show(stages)}: must be a non-empty list, e.g. stages=[questions,answers,vote]"
        )
    for s in stages:
        if s not in STAGES:
            later = " (not implemented yet)" if s in ALL_STAGE_NAMES else ""
            raise ConfigError(f"stages: unknown stage '{s}'{later}; allowed: {', '.join(STAGES)}")
    if len(set(stages)) != len(stages):
        raise ConfigError(f"stages={list(stages)}: each stage may appear once")
    if "answers" in stages and "vote" in stages and cfg.voting.k > cfg.answers.n:
        raise ConfigError(
            f"voting.k={cfg.voting.k}: must be <= answers.n={cfg.answers.n} (the pool sampled per question)"
        )
    if cfg.get("model") is None or not cfg.model.get("name"):
        raise ConfigError("model: no model selected; choose one with model=NAME")
