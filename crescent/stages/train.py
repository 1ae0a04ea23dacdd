"""Stage `train`: fine-tune on the majority-voted QA pairs (self-improvement), or fine-tune a weaker
student on them (distillation, `distill=<student>`), with Lightning + PEFT LoRA or in full.

Reads:  qa.jsonl (from `vote`, or the user's `train.input`: {question, answer, response} per line).
Writes: train_outputs.json  {kind: lora | full, model_name, base_model (path), adapter, full_model,
                            merged (folders relative to the entry, or null), student_note,
                            files: {relative path: sha256}}
        hparams.json        the hashed config plus resolved values (precision, steps, paths)
        metrics.json        first/last train loss, validation loss before/after, steps, tokens/s,
                            processes, strategy, ...
        train_log.jsonl     one row per batch and process: step, epoch, loss, tokens, seconds, rank,
                            QA ids (data order)
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

Several processes (`train/strategy=ddp_cpu`, `ddp`, `fsdp`, `deepspeed_stage_2`, or
`train.trainer.devices=N`): this process is rank 0 and starts the others
(crescent/training/distributed.py); only rank 0 writes outputs, the cache marker and W&B.

Run:  python run.py stages=[questions,answers,vote,train]
      python run.py stages=[train] train.input=my_qa.jsonl train=full
      python run.py stages=[train] train.input=my_qa.jsonl train/strategy=ddp_cpu
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

from crescent.errors import ConfigError, InputError
from crescent.fsutil import atomic_write_json, atomic_write_jsonl, sha256_file
from crescent.models import model_identity, save_model_folder
from crescent.records import QA, QA_ROW
from crescent.stages.keys import plain

INPUT_SCHEMA = QA_ROW
OUTPUTS = "train_outputs.json"

JOB = "train_job.json"  # what the other training processes read (removed when they finish)

# keys of `train` / `train.trainer` that change speed or logging, not the trained weights
# (devices and num_nodes do change them when they make several processes: see `hashed`)
RUNTIME = ("input", "num_workers", "checkpoint_every", "keep_checkpoints")
TRAINER_RUNTIME = (
    "accelerator", "devices", "num_nodes", "strategy", "plugins", "log_every_n_steps",
    "enable_progress_bar", "enable_model_summary", "logger", "callbacks", "default_root_dir",
)  # fmt: skip


def hashed(cfg) -> dict:
    from crescent.training.distributed import process_count
    from crescent.training.students import student_identity

    t = plain(cfg.train)
    for k in RUNTIME:
        t.pop(k, None)
    for k in TRAINER_RUNTIME:
        t["trainer"].pop(k, None)
    n = process_count(cfg.train.trainer)
    if n > 1:  # data parallel: a step averages n micro-batches and each epoch is padded to a
        t["processes"] = n  # multiple of n, so the weights differ from one process's (1: no key,
        # so single-process entries keep their fingerprints); the strategy (ddp, fsdp, deepspeed)
        # changes how, not what, is computed: not hashed
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


class _GatheredWeights:
    """`save_pretrained` of a model whose live weights are FSDP shards: from the full state dict
    gathered at the end of training (LightningModule keys, `model.` prefix dropped)."""

    def __init__(self, model, full_state: dict):
        self.model = model
        self.state = {
            k[len("model.") :]: v for k, v in full_state.items() if k.startswith("model.")
        }

    def save_pretrained(self, path, **kwargs) -> None:
        self.model.save_pretrained(path, state_dict=self.state, **kwargs)


def run(ctx) -> dict:
    from omegaconf import OmegaConf
    from transformers import AutoTokenizer

    from crescent.training.data import require_chat_template
    from crescent.training.distributed import process_count, processes
    from crescent.training.fit import prepare, train
    from crescent.training.module import combine_ranks
    from crescent.training.students import trained_model
    from crescent.training.trainer import checkpoint_path

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
    dm, module = prepare(cfg, rows, target, tok, teacher_path)  # raises on bad LoRA targets
    counts = module.parameter_counts()  # before FSDP shards them or a merge drops the adapter

    # --- train (resuming from the last checkpoint of this entry if a previous run was killed),
    # in this process alone or as rank 0 of several (the others rebuild the same from `job`)
    resume = checkpoint_path(entry.dir).exists()
    if resume:
        print(f"[crescent] train: resuming from {checkpoint_path(entry.dir)}", flush=True)
    n, job = process_count(t.trainer), {}
    if n > 1:  # what the other processes need to rebuild the same data, model and Trainer
        local = Path(target.path).expanduser()
        job = {
            "cfg": OmegaConf.to_container(cfg, resolve=True),
            "rows": str(Path(ctx.planned.inputs[QA]).resolve()),
            "model": {"name": target.name, "note": target.note,
                      "path": str(local.resolve()) if local.exists() else target.path,
                      "cfg": OmegaConf.to_container(target.cfg, resolve=True)},
            "teacher_path": teacher_path,
            "entry_dir": str(entry.dir.resolve()),
            "resume": resume,
        }  # fmt: skip
    with processes(n, job, entry.path(JOB)):
        done = train(cfg, dm, module, entry.dir, ctx.tracker, resume)
    trainer, val_after = done.trainer, done.val_after

    # --- outputs
    kind = "lora" if module.is_lora else "full"
    # folders (relative to the entry) for: a PEFT adapter, a full model, a merged model
    folders = {"adapter": None, "full_model": None, "merged": None}
    module.model.config.use_cache = True  # saved configs serve inference
    out = "adapter" if module.is_lora else "model"
    sharded = module.full_state is not None  # FSDP
    weights = _GatheredWeights(module.model, module.full_state) if sharded else module.model
    save_model_folder(entry.path(out), weights, tok)
    folders["adapter" if module.is_lora else "full_model"] = out
    if bool(t.merge) and module.is_lora:
        if sharded:  # the live layers are FSDP units: merge the saved adapter into a fresh base
            from peft import PeftModel

            from crescent.training.module import load_causal_lm

            base = load_causal_lm(target.path, target.cfg.get("dtype"), trust)
            merged = PeftModel.from_pretrained(base, str(entry.path(out))).merge_and_unload()
        else:
            merged = module.model.merge_and_unload()
        save_model_folder(entry.path("merged"), merged, tok)
        folders["merged"] = "merged"
    elif bool(t.merge):
        folders["merged"] = "model"  # full fine-tuning: the model folder is already complete

    hist = module.history  # every process's rows (step, then rank)
    ids = [r.get("id", f"q{i:06d}") for i, r in enumerate(rows)]
    log = [{**{k: v for k, v in h.items() if k != "rows"}, "ids": [ids[i] for i in h["rows"]]}
           for h in hist]  # fmt: skip
    atomic_write_jsonl(entry.path("train_log.jsonl"), log)
    batches = combine_ranks(hist)  # one row per batch position: the processes' micro-batches
    losses = [b["loss"] for b in batches]
    k = max(1, len(losses) // 4)
    tokens, secs = sum(b["tokens"] for b in batches), sum(b["seconds"] for b in batches)
    metrics = {
        "model": target.name,
        "method": kind,
        **counts,
        **dm.stats,
        "steps": int(trainer.global_step),
        "batches": len(batches),  # per process
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
        "processes": done.processes,
        "strategy": type(trainer.strategy).__name__,
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
        "planned_steps": done.planned_steps,
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
        columns = ["step", "epoch", "rank", "loss", "tokens", "seconds"]
        ctx.tracker.table("train/log", hist[-int(cfg.tracking.sample_rows) :], columns)
    return metrics
