"""Which model stage `train` fine-tunes, and students derived offline for distillation.

- `distill.student: null` (self-improvement): the generating model itself (`model`).
- `distill.student` with a `path` (hub id or folder): that model.
- `distill.student` with `derived_from` + `keep_every` and no `path`: a smaller student DERIVED here
  from another model by keeping every `keep_every`-th decoder layer (layers 0, k, 2k, ...), without
  retraining. It is materialized once as a plain HF folder under `<paths.models_dir>/<name>`
  (file lock; written to a temporary folder, then renamed), with `derivation.json` saying what was
  kept. It is not a published model, and the run's metrics say so (`student_note`).

Run alone to materialize a student:  python -m crescent.training.students distill=smollm2-half
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from crescent.errors import ConfigError
from crescent.models import build_once, model_identity, resolve_model_path, save_model_folder


@dataclass(frozen=True)
class TrainedModel:
    name: str
    path: str
    cfg: object  # the model / student config node (dtype, system_prompt, trust_remote_code)
    note: str | None  # said plainly in metrics and the summary when the student is derived


def student_identity(student_cfg) -> dict:
    """What about a student changes the trained weights (hashed into the train stage's key)."""
    derived = student_cfg.get("derived_from")
    return {
        **model_identity(student_cfg),
        "derived_from": model_identity(derived)
        if derived and not student_cfg.get("path")
        else None,
        "keep_every": student_cfg.get("keep_every") if not student_cfg.get("path") else None,
    }


def trained_model(cfg, resources) -> TrainedModel:
    student = cfg.distill.get("student")
    if student is None:
        return TrainedModel(str(cfg.model.name), resources.model_path(), cfg.model, None)
    return TrainedModel(
        str(student.name),
        resolve_student_path(student, cfg.paths.models_dir),
        student,
        student.get("note"),
    )


def resolve_student_path(student_cfg, models_dir: str | Path) -> str:
    if student_cfg.get("path"):
        return str(student_cfg.path)
    if not student_cfg.get("derived_from"):
        raise ConfigError(
            f"distill.student ({student_cfg.get('name')}): set distill.student.path (hub id or "
            f"folder) or distill.student.derived_from + keep_every"
        )
    dest = Path(models_dir) / str(student_cfg.name)
    return build_once(dest, lambda: derive_by_layer_drop(
        resolve_model_path(student_cfg.derived_from, models_dir), dest,
        int(student_cfg.keep_every), student_cfg.get("note")))  # fmt: skip


def derive_by_layer_drop(base: str, dest: Path, keep_every: int, note: str | None) -> None:
    """Keep decoder layers 0, k, 2k, ... of a Llama-style model (`model.model.layers`)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    print(f"[crescent] deriving student {dest.name} from {base} (every {keep_every}th layer, once)",
          flush=True)  # fmt: skip
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32, use_safetensors=True)
    layers = model.model.layers
    keep = list(range(0, len(layers), keep_every))
    model.model.layers = torch.nn.ModuleList([layers[i] for i in keep])
    for new_idx, layer in enumerate(model.model.layers):
        if hasattr(layer, "self_attn") and hasattr(layer.self_attn, "layer_idx"):
            layer.self_attn.layer_idx = new_idx  # KV-cache slots follow the new numbering
    model.config.num_hidden_layers = len(keep)
    if getattr(model.config, "layer_types", None):
        model.config.layer_types = [model.config.layer_types[i] for i in keep]
    record = {
        "derived_from": base,
        "method": f"kept every {keep_every}th decoder layer, no retraining",
        "kept_layers": keep,
        "source_layers": len(layers),
        "params": sum(p.numel() for p in model.parameters()),
        "note": note or "derived offline; not a published model",
    }
    extra = {"derivation.json": json.dumps(record, indent=2) + "\n"}
    save_model_folder(dest, model, AutoTokenizer.from_pretrained(base), extra)


if __name__ == "__main__":  # materialize the configured student (Hydra overrides as arguments)
    import sys

    from crescent.cli import compose

    cfg = compose(sys.argv[1:])
    if cfg.distill.student is None:
        sys.exit("error: no student configured; pass distill=NAME")
    print(resolve_student_path(cfg.distill.student, cfg.paths.models_dir))
