"""Config checks run before any model loads: each failure is one line naming the key and what is allowed."""

from __future__ import annotations

import re
from collections.abc import Callable

from omegaconf import DictConfig, OmegaConf

from crescent.cleaning import CLEANERS
from crescent.dedup import INDEXES
from crescent.errors import ConfigError
from crescent.evaluation.backends import BACKENDS
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


# transformers attention kernels (+ crescent/engines/gqa_attention.py) for the hf engine
ATTENTION = [
    "eager",
    "sdpa",
    "flash_attention_2",
    "flash_attention_3",
    "flex_attention",
    "grouped_eager",
]


def _int_list(v) -> bool:
    return OmegaConf.is_list(v) and len(v) > 0 and all(_int(x) for x in v)


def _eval_tasks(allow_empty: bool = False):
    from crescent.evaluation.registry import TASKS

    names = sorted(TASKS)

    def check(v) -> bool:
        return OmegaConf.is_list(v) and (allow_empty or len(v) > 0) and all(t in names for t in v)

    what = "a list" if allow_empty else "a non-empty list"
    return check, f"{what} of known tasks: {', '.join(names)}"


BOOL = ((lambda v: isinstance(v, bool)), "true or false")
# a dedup rule's cosine threshold; null switches the rule off (no-deduplication ablation)
RULE_THRESHOLD = (
    (lambda v: v is None or (_num(v) and 0 <= v <= 1)),
    "a number in [0, 1], or null (rule off)",
)
OPT_PATH = ((lambda v: v is None or (isinstance(v, str) and v != "")), "a file path or null")

RULES: list[tuple[str, tuple[Callable, str]]] = [
    ("seed", int_at_least(0)),
    ("rounds", int_at_least(1)),
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
    ("dedup.threshold", RULE_THRESHOLD),
    ("dedup.batch_threshold", RULE_THRESHOLD),
    ("dedup.max_rewrites", int_at_least(0)),
    ("dedup.recheck", BOOL),
    ("dedup.clean_input", BOOL),
    ("dedup.embed_batch_size", int_at_least(1)),
    ("dedup.index", one_of(INDEXES)),  # approximate ones: see _check_dedup_index
    ("dedup.index_buffer", int_at_least(1)),
    ("dedup.hnsw.m", int_at_least(2)),
    ("dedup.hnsw.ef_construction", int_at_least(1)),
    ("dedup.hnsw.ef_search", int_at_least(1)),
    ("dedup.ivf.nlist", int_at_least(1)),
    ("dedup.ivf.nprobe", int_at_least(1)),
    ("dedup.ivf.train_size", int_at_least(1)),
    ("voting.k", int_at_least(1)),
    ("voting.extractor", one_of(EXTRACTORS)),
    ("voting.none_can_win", BOOL),
    ("voting.count_truncated", BOOL),
    ("voting.min_share", in_range(0, 1)),
    ("engine.batch_size", int_at_least(1)),
    ("engine.replicas", int_at_least(1)),
    ("engine.ray.cpus_per_replica", in_range(0, 1024, lo_open=True)),
    ("engine.ray.gpus_per_replica", in_range(0, 64)),
    ("model.trust_remote_code", BOOL),
    ("model.chat_template", BOOL),
    (
        "model.attn_implementation",
        (
            (lambda v: v is None or v in ATTENTION or "/" in str(v)),
            "null (transformers' default), " + ", ".join(ATTENTION) + " or a hub kernel org/name",
        ),
    ),
    ("logger.mode", one_of(["auto", "online", "offline", "disabled"])),
]

# evaluation (crescent/evaluation/); data, shot caps and the adapter are checked at plan time
RULES += [
    ("eval.tasks", _eval_tasks()),
    ("eval.shots", ((lambda v: _int_list(v) and all(x >= 0 for x in v)), "a non-empty list of integers >= 0")),
    ("eval.limit", ((lambda v: v is None or (_int(v) and v >= 1) or (_num(v) and 0 < v < 1)),
                    "null, an integer >= 1 or a fraction in (0, 1)")),
    ("eval.backend", one_of(BACKENDS)),
    ("eval.batch_size", int_at_least(1)),
    ("eval.apply_chat_template", BOOL),
    ("eval.max_gen_toks", ((lambda v: v is None or (_int(v) and v >= 1)), "null or an integer >= 1")),
    ("eval.fewshot_seed", int_at_least(0)),
    ("eval.adapter", OPT_PATH),
    ("data.decontaminate", BOOL),
    ("data.contamination.enabled", BOOL),
    ("data.contamination.sets", _eval_tasks(allow_empty=True)),
    ("data.contamination.ngram", int_at_least(1)),
    ("data.contamination.cosine", in_range(0, 1)),
]  # fmt: skip
for _part in ("questions", "rewrite", "answers"):
    RULES += [
        (f"sampling.{_part}.temperature", num_at_least(0)),
        (f"sampling.{_part}.top_p", in_range(0, 1, lo_open=True)),
        (f"sampling.{_part}.max_tokens", int_at_least(1)),
    ]
RULES.append(("sampling.questions.n", int_at_least(1)))

# fine-tuning, distillation and the question source (crescent/training/, stages/train.py)
_PRECISIONS = ["auto", "32-true", "bf16-mixed", "16-mixed", "bf16-true", "16-true", "64-true"]
# processes per run: one per device (crescent/training/distributed.py starts them)
_DEVICES = ((lambda v: v == "auto" or (_int(v) and (v >= 1 or v == -1))
             or (isinstance(v, str) and re.fullmatch(r"\d+(,\d+)*,?", v) is not None)
             or (OmegaConf.is_list(v) and len(v) > 0 and all(_int(x) and x >= 0 for x in v))),
            "auto, -1 (every GPU), an integer >= 1 or a list of GPU ids")  # fmt: skip
# Lightning strategies launched by subprocess; ddp_spawn / ddp_fork / ddp_notebook would spawn or
# fork the whole stage process (crescent/training/distributed.py says why they are not used)
_STRATEGY_NAMES = ["auto", "ddp", "ddp_find_unused_parameters_false",
                   "ddp_find_unused_parameters_true", "fsdp", "fsdp_cpu_offload", "deepspeed",
                   "deepspeed_stage_1", "deepspeed_stage_2", "deepspeed_stage_2_offload",
                   "deepspeed_stage_3", "deepspeed_stage_3_offload",
                   "deepspeed_stage_3_offload_nvme", "single_device"]  # fmt: skip
_STRATEGY = ((lambda v: v in _STRATEGY_NAMES or (OmegaConf.is_dict(v) and "_target_" in v)),
             f"a strategy config with _target_ or one of {', '.join(_STRATEGY_NAMES)} (not "
             "ddp_spawn / ddp_fork / ddp_notebook: the train stage starts its processes itself)")  # fmt: skip
RULES += [
    ("train.input", OPT_PATH),
    ("train.max_length", int_at_least(16)),
    ("train.val_fraction", in_range(0, 0.5)),
    ("train.batch_size", int_at_least(1)),
    ("train.lr", in_range(0, 1, lo_open=True)),
    ("train.weight_decay", num_at_least(0)),
    ("train.warmup_ratio", in_range(0, 1)),
    ("train.min_lr_ratio", in_range(0, 1)),
    ("train.gradient_checkpointing", BOOL),
    ("train.merge", BOOL),
    ("train.num_workers", int_at_least(0)),
    ("train.checkpoint_every", int_at_least(1)),
    ("train.keep_checkpoints", BOOL),
    ("train.trainer.max_epochs", int_at_least(1)),
    ("train.trainer.max_steps", ((lambda v: _int(v) and (v == -1 or v >= 1)), "-1 (no cap) or an integer >= 1")),
    ("train.trainer.accumulate_grad_batches", int_at_least(1)),
    ("train.trainer.gradient_clip_val", ((lambda v: v is None or (_num(v) and v >= 0)), "null or a number >= 0")),
    ("train.trainer.precision", one_of(_PRECISIONS)),
    ("train.trainer.devices", _DEVICES),
    ("train.trainer.strategy", _STRATEGY),
    ("train.trainer.num_nodes", ((lambda v: v is None or v == 1), "1 (one machine: the train stage starts its processes itself)")),
    ("distill.kd_weight", in_range(0, 1)),
    ("distill.kd_temperature", in_range(0, 100, lo_open=True)),
    ("data.source", one_of(["bait", "magpie", "seed_gsm8k"])),
]  # fmt: skip
# checked only when train.lora is set (train.lora=null, i.e. train=full, is full fine-tuning)
LORA_RULES = [
    ("train.lora.r", int_at_least(1)),
    ("train.lora.alpha", in_range(0, 1e6, lo_open=True)),
    ("train.lora.dropout", ((lambda v: _num(v) and 0 <= v < 1), "a number in [0, 1)")),
    ("train.lora.target_modules", ((lambda v: (isinstance(v, str) and v != "") or (
        OmegaConf.is_list(v) and len(v) > 0 and all(isinstance(x, str) and x for x in v))),
        'a non-empty list of module names, or "all-linear"')),
    ("train.lora.bias", one_of(["none", "all", "lora_only"])),
]  # fmt: skip


def _check_training(cfg: DictConfig) -> None:
    if OmegaConf.select(cfg, "train.lora") is not None:
        for key, (check, allowed) in LORA_RULES:
            value = OmegaConf.select(cfg, key)
            if not check(value):
                raise ConfigError(f"{key}={_show(value)}: must be {allowed}")
    student = OmegaConf.select(cfg, "distill.student")
    if student is not None and not (OmegaConf.is_dict(student) and student.get("name")):
        raise ConfigError(
            "distill.student: must be null or a model config with a name (see conf/distill/)"
        )
    if cfg.distill.kd_weight > 0 and student is None:
        raise ConfigError(
            f"distill.kd_weight={cfg.distill.kd_weight}: logit distillation needs a student "
            "(distill=NAME); with no student use 0 (pure SFT)"
        )
    if cfg.data.source == "magpie" and not cfg.model.get("chat_template", True):
        raise ConfigError(
            "data.source=magpie: needs model.chat_template=true (the prompt is the template's empty "
            "user turn)"
        )
    if cfg.data.source == "seed_gsm8k":
        from crescent.seed_questions import check_data_file

        check_data_file(cfg)


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
    _check_training(cfg)
    _check_dedup_index(cfg)
    _check_replicas(cfg)
    if cfg.rounds > 1:
        _check_rounds(cfg, list(stages))


def _check_replicas(cfg: DictConfig) -> None:
    """engine.replicas > 1 runs the engine as Ray actors: ray must be importable."""
    if cfg.engine.replicas > 1:
        import importlib.util

        if importlib.util.find_spec("ray") is None:
            raise ConfigError(
                f"engine.replicas={cfg.engine.replicas}: needs the ray package "
                "(`pip install -e .[ray]`); without it use engine.replicas=1"
            )


def _check_dedup_index(cfg: DictConfig) -> None:
    """An approximate accepted-set index needs faiss-cpu, and IVF cells need enough training rows."""
    d = cfg.dedup
    if d.index == "exact":
        return
    if d.index == "ivf" and d.ivf.train_size < d.ivf.nlist:
        raise ConfigError(
            f"dedup.ivf.train_size={d.ivf.train_size}: must be >= dedup.ivf.nlist={d.ivf.nlist} "
            "(k-means needs at least one training question per cell)"
        )
    try:
        import faiss  # noqa: F401
    except ImportError:
        raise ConfigError(
            f"dedup.index={d.index}: needs faiss-cpu (pip install faiss-cpu), or use dedup.index=exact"
        ) from None


ROUND_STAGES = ("questions", "answers", "vote", "train")  # what a round regenerates and retrains


def _check_rounds(cfg: DictConfig, stages: list[str]) -> None:
    """rounds=N > 1 re-runs the data engine and training with each round's model."""
    lacking = [s for s in ROUND_STAGES if s not in stages]
    if lacking:
        raise ConfigError(
            f"rounds={cfg.rounds}: stages must include {', '.join(ROUND_STAGES)} (each round writes "
            f"new data with the previous round's model and trains on it); missing: {', '.join(lacking)}"
        )
    if OmegaConf.select(cfg, "distill.student") is not None:
        raise ConfigError(
            f"rounds={cfg.rounds}: iterated self-improvement trains the generating model; use "
            "distill=none (a student does not write the next round's data)"
        )
    for key in ("answers.input", "vote.input", "train.input", "eval.adapter"):
        if OmegaConf.select(cfg, key, default=None):
            raise ConfigError(
                f"{key}: must be null with rounds={cfg.rounds} (every round makes its own)"
            )
