"""lm-eval model arguments for each `eval.backend` and the adapter they evaluate.

- `hf`:   lm-eval's HFLM; a PEFT adapter goes in as `peft=<adapter dir>` (loaded on the base model).
- `vllm`: lm-eval's VLLM wrapper; an adapter goes in as `lora_local_path=<dir>` with
          `max_lora_rank` read from the adapter's `adapter_config.json` (the wrapper's default, 16,
          rejects larger ranks). `eval.engine_args` pass through to `vllm.LLM(...)`.

What `eval_trained` evaluates comes from the train stage's `train_outputs.json` (LoRA: the base model
it was trained on + `adapter/`; full fine-tuning: `model/`) or from `eval.adapter`: a PEFT adapter
folder (adapter_config.json) on the configured model, or a full HF model folder (config.json, e.g.
the train stage's `merged/`), evaluated as the model itself.
"""

from __future__ import annotations

import json
from pathlib import Path

from crescent.errors import InputError


def adapter_kind(path: str | Path, label: str) -> str:
    """'peft' or 'model'; one-line InputError when the folder is neither (or does not exist), or
    when its weights are not in safetensors files (pickled weights are never loaded)."""
    p = Path(path)
    if not p.exists():
        raise InputError(f"{label}: does not exist (expected a PEFT adapter folder)")
    if p.is_file() and p.name == "adapter_config.json":
        p = p.parent
    if not p.is_dir():
        raise InputError(f"{label}: not a folder (expected a PEFT adapter folder)")
    if (p / "adapter_config.json").is_file():
        kind, weights = "peft", ["adapter_model.safetensors"]
    elif (p / "config.json").is_file():
        kind, weights = "model", [q.name for q in p.glob("*.safetensors")]
    else:
        raise InputError(
            f"{label}: no adapter_config.json (PEFT adapter) or config.json (full model) in the folder"
        )
    if not any((p / w).is_file() for w in weights):
        raise InputError(
            f"{label}: no safetensors weights ({'adapter_model.safetensors' if kind == 'peft' else '*.safetensors'}); "
            "pickled weights (.bin, .pt) are never loaded: convert them with save_pretrained"
        )
    return kind


def adapter_rank(adapter_dir: str | Path) -> int:
    """LoRA rank `r` from adapter_config.json (largest of `r` and any `rank_pattern` value)."""
    conf = json.loads((Path(adapter_dir) / "adapter_config.json").read_text())
    ranks = [int(conf.get("r") or 0), *(int(v) for v in (conf.get("rank_pattern") or {}).values())]
    return max(ranks) or 16


def _hf_args(cfg, model_path: str, adapter: Path | None) -> dict:
    args = {
        "pretrained": model_path,
        "dtype": cfg.model.get("dtype") or "auto",
        "trust_remote_code": bool(cfg.model.get("trust_remote_code", False)),
        "use_safetensors": True,  # passed to from_pretrained: never unpickle third-party weights
    }
    if adapter is not None:
        args["peft"] = str(adapter)
    return args


def _vllm_args(cfg, model_path: str, adapter: Path | None) -> dict:
    args = {
        "pretrained": model_path,
        "dtype": cfg.model.get("dtype") or "auto",
        "trust_remote_code": bool(cfg.model.get("trust_remote_code", False)),
        "max_model_len": int(cfg.model.get("max_model_len") or 2048),
        "seed": int(cfg.seed),
        "load_format": "safetensors",  # never unpickle third-party weights
    }
    if adapter is not None:
        args["lora_local_path"] = str(adapter)
        args["max_lora_rank"] = adapter_rank(adapter)
    from omegaconf import OmegaConf

    args.update(OmegaConf.to_container(cfg.eval.engine_args, resolve=True) or {})
    return args


# eval.backend -> (lm-eval model name, model-args builder)
BACKENDS = {"hf": ("hf", _hf_args), "vllm": ("vllm", _vllm_args)}


def trained_target(source: Path, base_model_path: str, label: str) -> tuple[str, Path | None]:
    """(model path, adapter folder or None) to evaluate for a trained model.

    `source` is the train stage's train_outputs.json (LoRA: its `base_model` + `adapter/`; full
    fine-tuning: `model/`) or the user's `eval.adapter` folder (a PEFT adapter on the configured
    model, or a full model folder evaluated as the model itself).
    """
    if source.is_file() and source.name == "train_outputs.json":
        out = json.loads(source.read_text())
        if out.get("adapter"):
            return str(out.get("base_model") or base_model_path), source.parent / out["adapter"]
        return str(source.parent / out["model"]), None
    if adapter_kind(source, label) == "model":
        return str(source), None
    return base_model_path, source


def model_args(cfg, model_path: str, adapter: Path | None) -> tuple[str, dict]:
    """(lm-eval model name, model_args) for a model, with a PEFT adapter on it when given."""
    name, build = BACKENDS[cfg.eval.backend]
    return name, build(cfg, model_path, adapter)


def build_lm(cfg, model_path: str, adapter: Path | None):
    """Instantiate lm-eval's model exactly as `lm_eval --model NAME --model_args ...` does."""
    from lm_eval.api.registry import get_model

    name, args = model_args(cfg, model_path, adapter)
    device = cfg.eval.device
    if device == "auto":
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
    extra = {"batch_size": cfg.eval.batch_size, "max_batch_size": None, "device": device}
    print(f"[crescent] lm-eval model: {name} {args}", flush=True)
    return get_model(name).create_from_arg_obj(args, extra), name, args
