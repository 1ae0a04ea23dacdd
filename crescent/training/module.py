"""The LightningModule: a transformers causal LM fine-tuned with PEFT LoRA or in full.

- LoRA (`train.lora` set): `r`, `alpha`, `dropout`, `target_modules` (default: the seven Llama-style
  projections). A target the model lacks is a ConfigError listing the model's linear layer names,
  raised when the module is built (before any Trainer exists). `train.lora=null`: full fine-tuning.
- The model is put in train mode explicitly: a model loaded from a GGUF arrives in eval mode and
  LoRA dropout would silently stay off.
- AdamW (weight decay on matrices only) with linear warmup then cosine decay to
  `min_lr_ratio * lr`, stepped per optimizer step over `trainer.estimated_stepping_batches`.
- Optional logit distillation (`kd_weight > 0`, tokenizer-sharing teacher): loss =
  (1 - w) * cross-entropy + w * T^2 * KL(teacher || student) on the assistant tokens.
- Checkpoints hold only trainable parameters (the frozen base is reloaded from its folder), plus the
  per-batch training log (`StepLog`), so a resumed run reports the whole run's losses, and the
  RNG state, so dropout after a resume draws what an uninterrupted run would have drawn.
- Several processes (crescent/training/distributed.py): each logs its own batches (`rank` in every
  row); a checkpoint gathers every process's rows and RNG state and each process takes its own back
  on resume; `gather_history` collects them all after training for rank 0 to write. Under FSDP the
  live weights are shards, so the full state dict is gathered at the end of training (`full_state`).
"""

from __future__ import annotations

import math
import time

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import nn

from crescent.errors import ConfigError
from crescent.training.data import IGNORE


def linear_layer_names(model) -> list[str]:
    """Distinct leaf names of the model's linear layers (what LoRA `target_modules` can name)."""
    from transformers.pytorch_utils import Conv1D

    return sorted(
        {
            n.rsplit(".", 1)[-1]
            for n, m in model.named_modules()
            if isinstance(m, (nn.Linear, Conv1D))
        }
    )


def check_target_modules(model, targets, model_name: str) -> None:
    if isinstance(targets, str):  # "all-linear" or a regex: PEFT's own rules apply
        return
    from transformers.pytorch_utils import Conv1D

    full = [n for n, m in model.named_modules() if isinstance(m, (nn.Linear, Conv1D))]
    missing = [t for t in targets if not any(n == t or n.endswith("." + t) for n in full)]
    if missing:
        raise ConfigError(
            f"train.lora.target_modules: model '{model_name}' has no linear layer named "
            f"{', '.join(repr(m) for m in missing)}; its linear layers are: "
            f"{', '.join(linear_layer_names(model))}"
        )


def warmup_cosine(step: int, warmup: int, total: int, min_ratio: float) -> float:
    """LR multiplier: linear warmup from ~0 to 1 over `warmup` steps, then cosine to `min_ratio`."""
    if step < warmup:
        return (step + 1) / (warmup + 1)
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def gathered(obj) -> list:
    """`obj` from every training process, by rank (`[obj]` in a single process). A collective: every
    process calls it at the same point."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return [obj]
    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def combine_ranks(history: list[dict]) -> list[dict]:
    """One row per batch position: the i-th batch of every process together (they form one
    optimizer step's micro-batches): mean loss, summed tokens, the slowest process's seconds.
    With one process: its rows' step, loss, tokens and seconds unchanged."""
    by_rank: dict[int, list[dict]] = {}
    for h in history:
        by_rank.setdefault(int(h.get("rank", 0)), []).append(h)
    if not by_rank:
        return []
    ranks = sorted(by_rank)
    out = []
    for i in range(min(len(v) for v in by_rank.values())):
        rows = [by_rank[r][i] for r in ranks]
        out.append({
            "step": rows[0]["step"],
            "loss": sum(x["loss"] for x in rows) / len(rows),
            "tokens": sum(x["tokens"] for x in rows),
            "seconds": max(x["seconds"] for x in rows),
        })  # fmt: skip
    return out


def load_causal_lm(path: str, dtype: str | None, trust_remote_code: bool):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(
        path,
        dtype=getattr(torch, dtype or "float32"),
        trust_remote_code=trust_remote_code,
        use_safetensors=True,
    )


class CausalLMModule(pl.LightningModule):
    def __init__(
        self,
        model_path: str,
        model_name: str,
        *,
        lora: dict | None,
        lr: float,
        weight_decay: float = 0.0,
        warmup_ratio: float = 0.0,
        min_lr_ratio: float = 0.0,
        gradient_checkpointing: bool = False,
        dtype: str | None = "float32",
        trust_remote_code: bool = False,
        teacher_path: str | None = None,
        kd_weight: float = 0.0,
        kd_temperature: float = 1.0,
    ):
        super().__init__()
        self.save_hyperparameters()
        model = load_causal_lm(model_path, dtype, trust_remote_code)
        model.config.use_cache = False
        if lora is not None:
            from peft import LoraConfig, get_peft_model

            targets = lora["target_modules"]
            targets = list(targets) if not isinstance(targets, str) else targets
            check_target_modules(model, targets, model_name)
            config = LoraConfig(
                r=int(lora["r"]),
                lora_alpha=float(lora["alpha"]),
                lora_dropout=float(lora["dropout"]),
                target_modules=targets,
                bias=lora.get("bias", "none"),
                task_type="CAUSAL_LM",
            )
            model = get_peft_model(model, config)
        if gradient_checkpointing:
            model.gradient_checkpointing_enable(
                gradient_checkpointing_kwargs={"use_reentrant": False}
            )
            if lora is not None:
                model.enable_input_require_grads()  # checkpointed blocks need a grad-carrying input
        model.train()  # GGUF-materialized models load in eval mode: LoRA dropout would stay off
        self.model = model
        self.is_lora = lora is not None
        self.strict_loading = False  # checkpoints hold only the trainable parameters
        self.teacher = None
        if teacher_path is not None and kd_weight > 0:
            teacher = load_causal_lm(teacher_path, dtype, trust_remote_code).eval()
            teacher.requires_grad_(False)
            object.__setattr__(
                self, "teacher", teacher
            )  # not a submodule: not saved, not optimized
        self.history: list[dict] = []  # one row per training batch (saved in checkpoints)
        self.full_state: dict | None = None  # FSDP: the gathered full state dict (rank 0)
        self.resumed_from_step: int | None = None
        self.val_loss_before: float | None = None  # measured before the first step (saved too)
        self._last: dict = {}  # the current batch's row of `history` (appended by StepLog)

    # ---------------------------------------------------------------- parameters
    def parameter_counts(self) -> dict:
        total = sum(p.numel() for p in self.model.parameters())
        trainable = sum(p.numel() for p in self.model.parameters() if p.requires_grad)
        return {"trainable_params": trainable, "total_params": total}

    # ---------------------------------------------------------------- steps
    def on_fit_start(self) -> None:
        self.model.train()
        if self.teacher is not None:
            self.teacher.to(self.device)

    def _forward_loss(self, batch) -> tuple[torch.Tensor, dict]:
        if self.teacher is None:
            out = self.model(
                input_ids=batch["input_ids"],
                attention_mask=batch["attention_mask"],
                labels=batch["labels"],
            )
            return out.loss, {}
        logits = self.model(
            input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]
        ).logits[:, :-1]
        labels = batch["labels"][:, 1:]
        keep = labels != IGNORE
        student = logits[keep].float()
        ce = F.cross_entropy(student, labels[keep])
        with torch.no_grad():
            t_logits = (
                self.teacher(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
                .logits[:, :-1][keep]
                .float()
            )
        temp = float(self.hparams.kd_temperature)
        kl = F.kl_div(
            F.log_softmax(student / temp, -1),
            F.log_softmax(t_logits / temp, -1),
            log_target=True,
            reduction="batchmean",
        ) * (temp * temp)
        w = float(self.hparams.kd_weight)
        return (1 - w) * ce + w * kl, {"ce": ce.detach(), "kl": kl.detach()}

    def training_step(self, batch, batch_idx):
        loss, parts = self._forward_loss(batch)
        n = batch["input_ids"].shape[0]
        self.log("train/loss", loss, on_step=True, prog_bar=True, batch_size=n)
        for k, v in parts.items():
            self.log(f"train/{k}", v, on_step=True, batch_size=n)
        self.log(
            "train/lr", self.trainer.optimizers[0].param_groups[0]["lr"], on_step=True, batch_size=n
        )
        self._last = {
            "step": int(self.global_step),  # the optimizer step this batch contributes to
            "epoch": int(self.current_epoch),
            "loss": float(loss.detach()),
            **{k: float(v) for k, v in parts.items()},
            "tokens": int(batch["attention_mask"].sum()),
            "supervised_tokens": int((batch["labels"] != IGNORE).sum()),
            "rows": batch["index"].tolist(),
            "rank": int(self.global_rank),  # the process that trained this micro-batch
        }
        return loss

    def validation_step(self, batch, batch_idx):
        loss, _ = self._forward_loss(batch)
        n = batch["input_ids"].shape[0]
        # every process scores the whole validation set (data.py): the synced mean is that value
        self.log("train/val_loss", loss, on_epoch=True, prog_bar=True, batch_size=n, sync_dist=True)
        return loss

    # ---------------------------------------------------------------- optimizer
    def configure_optimizers(self):
        hp = self.hparams
        decay, no_decay = [], []
        for p in self.model.parameters():
            if p.requires_grad:
                (decay if p.ndim >= 2 else no_decay).append(p)
        groups = [{"params": decay, "weight_decay": float(hp.weight_decay)}]
        if no_decay:
            groups.append({"params": no_decay, "weight_decay": 0.0})
        opt = torch.optim.AdamW(groups, lr=float(hp.lr))
        total = max(1, int(self.trainer.estimated_stepping_batches))
        warmup = int(math.ceil(float(hp.warmup_ratio) * total))
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, lambda s: warmup_cosine(s, warmup, total, float(hp.min_lr_ratio))
        )
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    def on_train_end(self) -> None:
        from pytorch_lightning.strategies import FSDPStrategy

        strategy = self.trainer.strategy
        if isinstance(strategy, FSDPStrategy):  # every process takes part; rank 0 gets the dict
            self.full_state = strategy.lightning_module_state_dict()

    def gather_history(self) -> None:
        """Every process's rows, ordered by step then rank (a collective; call it on every rank)."""
        rows = [h for part in gathered(self.history) for h in part]
        self.history = sorted(rows, key=lambda h: (h["step"], h.get("rank", 0)))  # stable

    # ---------------------------------------------------------------- checkpoints
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        # called in every process (Lightning dumps the checkpoint everywhere, rank 0 writes it)
        trainable = {n for n, p in self.named_parameters() if p.requires_grad}
        checkpoint["state_dict"] = {
            k: v for k, v in checkpoint["state_dict"].items() if k in trainable
        }
        rng = {"torch": torch.get_rng_state()}  # LoRA dropout continues as if
        if torch.cuda.is_available():
            rng["cuda"] = torch.cuda.get_rng_state_all()
        parts = gathered({"history": self.history, "rng": rng})
        checkpoint["crescent_history"] = [h for p in parts for h in p["history"]]
        checkpoint["crescent_val_loss_before"] = self.val_loss_before
        checkpoint["crescent_rng"] = rng
        checkpoint["crescent_rng_by_rank"] = [p["rng"] for p in parts]

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        rank = int(self.global_rank)
        rows = checkpoint.get("crescent_history", [])
        self.history = [h for h in rows if h.get("rank", 0) == rank]  # this process's own rows
        self.val_loss_before = checkpoint.get("crescent_val_loss_before")
        by_rank = checkpoint.get("crescent_rng_by_rank") or []
        rng = by_rank[rank] if rank < len(by_rank) else checkpoint.get("crescent_rng") or {}
        if "torch" in rng:
            torch.set_rng_state(rng["torch"])
        if "cuda" in rng and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(rng["cuda"])
        self.resumed_from_step = int(checkpoint.get("global_step", 0))


class StepLog(pl.Callback):
    """Appends each batch's row (loss, tokens, seconds, rows) to `module.history`.

    A callback rather than a module hook: Lightning runs callbacks' `on_train_batch_end` before the
    module's and ModelCheckpoint last, so the row of the batch a checkpoint is written after is in
    that checkpoint.
    """

    def __init__(self):
        self._t0 = 0.0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._t0 = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        seconds = round(time.perf_counter() - self._t0, 4)
        pl_module.history.append({**pl_module._last, "seconds": seconds})
