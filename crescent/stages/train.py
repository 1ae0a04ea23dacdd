"""Stage `train`: fine-tune on the majority-voted QA pairs (self-improvement), or fine-tune a weaker
student on them (distillation, `distill=<student>`), with Lightning + PEFT LoRA or in full.

Reads:  qa.jsonl (from `vote`, or the user's `train.input`: {question, answer, response} per line).
Writes: train_outputs.json  {kind: lora | full, model_name, base_model (path), adapter, full_model,
                            merged (folders relative to the entry, or null), student_note,
                            files: {relative path: sha256}}
        hparams.json        the hashed config plus resolved values (precision, steps, paths)
        metrics.json        first/last train loss, validation loss before/after, steps, tokens/s, ...
        train_log.jsonl     one row per batch: step, epoch, loss, tokens, seconds, QA ids (data order)
        adapter/            LoRA: PEFT `save_pretrained` + tokenizer (load with PeftModel.from_pretrained)
        model/              full fine-tuning: a plain HF model folder + tokenizer
        merged/             with train.merge=true (LoRA): adapter merged into the base, safetensors;
                            plain transformers and vLLM load it
        logs/               Lightning CSV logs; checkpoints/last.ckpt while training (removed at the
                            end unless train.keep_checkpoints=true)

Bad input fails with one line before any training: an empty QA file, a student tokenizer without a
chat template, LoRA target modules the model lacks (the message lists its linear layers), logit
distillation between models whose tokenizers differ. A killed run resumes from
`checkpoints/last.ckpt` on the same command: the global step continues and the data order is the
one an uninterrupted run would have used.

Run:  python run.py stages=[questions,answers,vote,train]
      python run.py stages=[train] train.input=my_qa.jsonl train=full
"""

from __future__ import annotations

import shutil
import time

from crescent.errors import ConfigError, InputError
from crescent.fsutil import atomic_write_json, atomic_write_jsonl, derive_seed, sha256_file
from crescent.models import model_identity, save_model_folder
from crescent.records import QA, QA_ROW
from crescent.stages.keys import plain

INPUT_SCHEMA = QA_ROW
OUTPUTS = "train_outputs.json"

# keys of `train` / `train.trainer` that change speed or logging, not the trained weights
RUNTIME = ("input", "num_workers", "checkpoint_every", "keep_checkpoints")
TRAINER_RUNTIME = (
    "accelerator", "devices", "num_nodes", "strategy", "plugins", "log_every_n_steps",
    "enable_progress_bar", "enable_model_summary", "logger", "callbacks", "default_root_dir",
)  # fmt: skip


def hashed(cfg) -> dict:
    from crescent.training.students import student_identity

    t = plain(cfg.train)
    for k in RUNTIME:
        t.pop(k, None)
    for k in TRAINER_RUNTIME:
        t["trainer"].pop(k, None)
    d = cfg.distill
    student = d.get("student")
    kd = float(d.kd_weight)
    trained_cfg = student if student is not None else cfg.model
    teacher = {"temperature": float(d.kd_temperature), "model": model_identity(cfg.model)}
    return {
        "train": t,
        "model": student_identity(student) if student is not None else model_identity(cfg.model),
        "system_prompt": trained_cfg.get("system_prompt"),
        "kd": {"weight": kd, **teacher} if kd > 0 else None,
        "seed": int(cfg.seed),
    }


def check_input(cfg, rows: list[dict], label: str) -> None:
    if not rows:
        raise InputError(f"{label}: no QA pairs to train on (the file is empty)")
    for i, r in enumerate(rows, 1):
        for field in ("question", "response"):
            if not r[field].strip():
                raise InputError(f"{label}: row {i} has an empty '{field}'")


def _check_shared_tokenizer(teacher_path: str, student_tok, teacher_name: str, student_name: str):
    from transformers import AutoTokenizer

    teacher_tok = AutoTokenizer.from_pretrained(teacher_path)
    if teacher_tok.get_vocab() != student_tok.get_vocab():
        raise ConfigError(
            f"distill.kd_weight>0: teacher '{teacher_name}' and student '{student_name}' have different "
            f"tokenizers; logit distillation needs a shared vocabulary (set distill.kd_weight=0)"
        )


def _mean(xs: list[float]) -> float | None:
    return round(sum(xs) / len(xs), 4) if xs else None


def run(ctx) -> dict:
    import pytorch_lightning as pl
    from transformers import AutoTokenizer

    from crescent.training.data import QADataModule, require_chat_template
    from crescent.training.module import CausalLMModule, StepLog
    from crescent.training.students import trained_model
    from crescent.training.trainer import build_trainer

    cfg, t, entry = ctx.cfg, ctx.cfg.train, ctx.entry
    started = time.time()
    rows = ctx.read(QA)
    check_input(cfg, rows, str(ctx.planned.inputs[QA]))
    ctx.resources.close()  # free the generation engine before loading a model to train

    # --- every check that can fail on the user's choices, before any weights load
    target = trained_model(cfg, ctx.resources)
    trust = bool(target.cfg.get("trust_remote_code", False))
    tok = AutoTokenizer.from_pretrained(target.path, trust_remote_code=trust)
    require_chat_template(tok, target.name, target.path)
    kd = float(cfg.distill.kd_weight)
    teacher_path = None
    if kd > 0:
        teacher_path = ctx.resources.model_path()
        _check_shared_tokenizer(teacher_path, tok, str(cfg.model.name), target.name)
    dm = QADataModule(
        rows, tok, max_length=int(t.max_length), val_fraction=float(t.val_fraction),
        batch_size=int(t.batch_size), seed=int(cfg.seed),
        system_prompt=target.cfg.get("system_prompt"), num_workers=int(t.num_workers),
    )  # fmt: skip
    dm.prepare()
    has_val = len(dm.val_set) > 0

    pl.seed_everything(derive_seed(int(cfg.seed), "train"), workers=True, verbose=False)
    lora = plain(t.lora) if t.get("lora") is not None else None
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
        trust_remote_code=trust,
        teacher_path=teacher_path,
        kd_weight=kd,
        kd_temperature=float(cfg.distill.kd_temperature),
    )  # raises here on LoRA target modules the model lacks

    # --- train (resuming from the last checkpoint of this entry if a previous run was killed)
    callbacks = [dm.position_callback(), StepLog()]
    trainer, last = build_trainer(cfg, entry.dir, ctx.tracker, callbacks, has_val)
    resume = last.is_file()
    if resume:
        print(f"[crescent] train: resuming from {last}", flush=True)
    elif has_val:
        module.val_loss_before = _validate(trainer, module, dm)
    trainer.fit(module, datamodule=dm, ckpt_path=str(last) if resume else None)
    val_after = _validate(trainer, module, dm) if has_val else None
    if not trainer.is_global_zero:
        return {}
    counts = module.parameter_counts()  # before a merge removes the adapter

    # --- outputs
    kind = "lora" if module.is_lora else "full"
    # folders (relative to the entry) for: a PEFT adapter, a full model, a merged model
    folders = {"adapter": None, "full_model": None, "merged": None}
    module.model.config.use_cache = True  # saved configs serve inference
    out = "adapter" if module.is_lora else "model"
    save_model_folder(entry.path(out), module.model, tok)
    folders["adapter" if module.is_lora else "full_model"] = out
    if bool(t.merge) and module.is_lora:
        save_model_folder(entry.path("merged"), module.model.merge_and_unload(), tok)
        folders["merged"] = "merged"
    elif bool(t.merge):
        folders["merged"] = "model"  # full fine-tuning: the model folder is already complete

    hist = module.history
    ids = [r.get("id", f"q{i:06d}") for i, r in enumerate(rows)]
    log = [{**{k: v for k, v in h.items() if k != "rows"}, "ids": [ids[i] for i in h["rows"]]}
           for h in hist]  # fmt: skip
    atomic_write_jsonl(entry.path("train_log.jsonl"), log)
    losses = [h["loss"] for h in hist]
    k = max(1, len(losses) // 4)
    tokens, secs = sum(h["tokens"] for h in hist), sum(h["seconds"] for h in hist)
    metrics = {
        "model": target.name,
        "method": kind,
        **counts,
        **dm.stats,
        "steps": int(trainer.global_step),
        "batches": len(hist),
        "epochs": int(trainer.current_epoch),
        "first_train_loss": round(losses[0], 4) if losses else None,
        "last_train_loss": round(losses[-1], 4) if losses else None,
        "first_quarter_loss": _mean(losses[:k]),
        "last_quarter_loss": _mean(losses[-k:]),
        "val_loss_before": module.val_loss_before,
        "val_loss": val_after,
        "tokens": tokens,
        "tokens_per_s": round(tokens / secs, 1) if secs else None,
        "train_seconds": round(secs, 1),
        "seconds": round(time.time() - started, 1),
        "resumed_from_step": module.resumed_from_step,
        "precision": str(trainer.precision),
        "accelerator": type(trainer.accelerator).__name__,
        "kd_weight": kd,
    }
    if target.note:
        metrics["student_note"] = target.note
    atomic_write_json(entry.path("metrics.json"), metrics)
    hparams = {
        "hashed": hashed(cfg),
        "model_path": target.path,
        "teacher_path": teacher_path,
        "precision": str(trainer.precision),
        "planned_steps": int(trainer.estimated_stepping_batches),
        "trainer": plain(t.trainer),
    }
    atomic_write_json(entry.path("hparams.json"), hparams)
    files = {
        str(p.relative_to(entry.dir)): sha256_file(p)
        for name in sorted({v for v in folders.values() if v})
        for p in sorted(entry.path(name).rglob("*"))
        if p.is_file()
    }
    outputs = {"kind": kind, "model_name": target.name, "base_model": target.path, **folders,
               "student_note": target.note, "files": files}  # fmt: skip
    atomic_write_json(entry.path(OUTPUTS), outputs)
    if not bool(t.keep_checkpoints):
        shutil.rmtree(entry.path("checkpoints"), ignore_errors=True)
    if ctx.tracker:
        columns = ["step", "epoch", "loss", "tokens", "seconds"]
        ctx.tracker.table("train/log", hist[-int(cfg.tracking.sample_rows) :], columns)
    return metrics


def _validate(trainer, module, dm) -> float | None:
    res = trainer.validate(module, datamodule=dm, verbose=False)
    v = res[0].get("train/val_loss") if res else None
    return round(float(v), 4) if v is not None else None
