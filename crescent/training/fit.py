"""One training process's work, the same in every process: stage `train` runs it as rank 0 and
crescent/training/distributed.py as ranks 1..N-1 (the collectives inside must match).

- `prepare`: the data module (tokenized, split) and the model (LoRA or full, seeded); a LoRA target
  the model lacks raises here, before any Trainer or other process exists.
- `train`: the Trainer from `train.trainer`, then validation loss before (unless resuming), fit
  (from `checkpoints/last.ckpt` when resuming), validation loss after, and every process's batch
  log gathered into `module.history`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from crescent.fsutil import derive_seed


@dataclass
class Trained:
    trainer: object  # the fitted pytorch_lightning.Trainer
    module: object  # the CausalLMModule (history: every process's rows)
    val_after: float | None  # validation loss after training (None without a validation split)
    planned_steps: int  # optimizer steps the schedule was planned for
    processes: int  # training processes (world size)


def prepare(cfg, rows: list[dict], target, tok, teacher_path: str | None):
    """(data module, model module) for `rows`; `target` is a students.TrainedModel."""
    import pytorch_lightning as pl
    from omegaconf import OmegaConf

    from crescent.training.data import QADataModule
    from crescent.training.module import CausalLMModule

    t = cfg.train
    dm = QADataModule(
        rows, tok, max_length=int(t.max_length), val_fraction=float(t.val_fraction),
        batch_size=int(t.batch_size), seed=int(cfg.seed),
        system_prompt=target.cfg.get("system_prompt"), num_workers=int(t.num_workers),
    )  # fmt: skip
    dm.prepare()
    pl.seed_everything(derive_seed(int(cfg.seed), "train"), workers=True, verbose=False)
    lora = OmegaConf.to_container(t.lora, resolve=True) if t.get("lora") is not None else None
    module = CausalLMModule(
        target.path,
        target.name,
        lora=lora,
        lr=float(t.lr),
        weight_decay=float(t.weight_decay),
        warmup_ratio=float(t.warmup_ratio),
        min_lr_ratio=float(t.min_lr_ratio),
        gradient_checkpointing=bool(t.gradient_checkpointing),
        dtype=target.cfg.get("dtype"),
        trust_remote_code=bool(target.cfg.get("trust_remote_code", False)),
        teacher_path=teacher_path,
        kd_weight=float(cfg.distill.kd_weight),
        kd_temperature=float(cfg.distill.kd_temperature),
    )  # raises here on LoRA target modules the model lacks
    return dm, module


def train(cfg, dm, module, entry_dir: Path, tracker, resume: bool) -> Trained:
    from crescent.training.module import StepLog
    from crescent.training.trainer import build_trainer, checkpoint_path

    has_val = len(dm.val_set) > 0
    callbacks = [dm.position_callback(), StepLog()]
    trainer = build_trainer(cfg, entry_dir, tracker, callbacks, has_val)
    if has_val and not resume:
        module.val_loss_before = _validate(trainer, module, dm)
    trainer.fit(
        module, datamodule=dm, ckpt_path=str(checkpoint_path(entry_dir)) if resume else None
    )
    val_after = _validate(trainer, module, dm) if has_val else None
    module.gather_history()
    return Trained(
        trainer, module, val_after, int(trainer.estimated_stepping_batches), trainer.world_size
    )


def _validate(trainer, module, dm) -> float | None:
    res = trainer.validate(module, datamodule=dm, verbose=False)
    v = res[0].get("train/val_loss") if res else None
    return round(float(v), 4) if v is not None else None
