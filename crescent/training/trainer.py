"""The Lightning Trainer, built from `train.trainer` with `_target_` (strategy, devices, precision
and every other Trainer argument are config choices), plus what the harness adds to it:

- `precision: auto` means 32-true on CPU and bf16-mixed on a GPU (any Lightning value passes through);
- loggers: a CSVLogger in the stage entry (`logs/`) always, and Lightning's WandbLogger on the stage's
  own W&B run when tracking is on (one W&B run per stage; offline without an API key);
- a ModelCheckpoint keeping only `checkpoints/last.ckpt`, written every
  `train.checkpoint_every` optimizer steps; `AtomicCheckpointIO` (a Trainer plugin in the config)
  writes it through a temporary file and a rename, so a kill never leaves a torn checkpoint;
- `use_distributed_sampler=False` (the data module shards the training order itself, see data.py);
  when several processes train (started by crescent/training/distributed.py), `strategy: auto`
  becomes `ddp` (Lightning's `auto` may pick `ddp_fork` in a notebook) and a LightningEnvironment
  plugin makes Lightning read the ranks distributed.py sets, even inside a SLURM allocation;
- `wrap_decoder_layers`: an FSDP auto-wrap policy (one FSDP unit per transformer block) for
  conf/train/strategy/fsdp.yaml.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO
from omegaconf import OmegaConf


class AtomicCheckpointIO(TorchCheckpointIO):
    """torch.save to `<path>.tmp`, then os.replace: last.ckpt is always a complete checkpoint."""

    def save_checkpoint(self, checkpoint, path, storage_options=None) -> None:
        tmp = f"{path}.tmp"
        super().save_checkpoint(checkpoint, tmp, storage_options)
        os.replace(tmp, path)


def resolve_precision(precision) -> str:
    if precision in (None, "auto"):
        return "bf16-mixed" if torch.cuda.is_available() else "32-true"
    return str(precision)


def build_loggers(cfg, entry_dir: Path, tracker) -> list:
    from pytorch_lightning.loggers import CSVLogger

    loggers = [CSVLogger(save_dir=str(entry_dir), name="logs")]
    run = getattr(tracker, "run", None)
    if run is not None:
        from pytorch_lightning.loggers import WandbLogger

        loggers.append(WandbLogger(experiment=run))
    return loggers


def wrap_decoder_layers(module, recurse: bool, nonwrapped_numel: int) -> bool:
    """FSDP auto-wrap policy: every transformer block (`*DecoderLayer`: Llama, Qwen2, Gemma ...)
    is its own FSDP unit, whatever the model family."""
    return True if recurse else type(module).__name__.endswith("DecoderLayer")


def checkpoint_path(entry_dir: Path) -> Path:
    """Where the last checkpoint of a stage entry lives (a folder under DeepSpeed)."""
    return Path(entry_dir) / "checkpoints" / "last.ckpt"


def build_trainer(cfg, entry_dir: Path, tracker, callbacks: list, has_val: bool):
    """The Trainer for the stage entry `entry_dir` (the same in every training process)."""
    from hydra.utils import instantiate
    from pytorch_lightning.callbacks import ModelCheckpoint

    from crescent.training.distributed import process_count

    ckpt_dir = checkpoint_path(entry_dir).parent
    checkpoint = ModelCheckpoint(
        dirpath=str(ckpt_dir),
        save_last=True,
        save_top_k=0,  # only last.ckpt: what a resumed run needs
        every_n_train_steps=int(cfg.train.checkpoint_every),
    )
    spec = OmegaConf.to_container(cfg.train.trainer, resolve=True)
    spec["precision"] = resolve_precision(spec.get("precision"))
    if not has_val:
        spec["limit_val_batches"] = 0
        spec["num_sanity_val_steps"] = 0
    spec["use_distributed_sampler"] = False  # QADataModule shards the training order itself
    if process_count(cfg.train.trainer) > 1:
        if spec.get("strategy", "auto") == "auto":
            spec["strategy"] = "ddp"
        # ranks come from the variables distributed.py sets, even inside a SLURM / LSF allocation
        # (which Lightning would otherwise take as the launcher of the processes)
        env = {"_target_": "pytorch_lightning.plugins.environments.LightningEnvironment"}
        spec["plugins"] = [*(spec.get("plugins") or []), env]
    return instantiate(
        spec,
        callbacks=[*callbacks, checkpoint],
        logger=build_loggers(cfg, entry_dir, tracker),
        default_root_dir=str(entry_dir),
        _convert_="all",
    )
