"""Training tokens/s and peak memory on the embedded model: LoRA vs full fine-tuning.

Each mode runs in its own subprocess (peak RSS is a per-process high-water mark) and trains the
harness's own `CausalLMModule` (crescent/training/module.py) with a Lightning Trainer:
`lora` uses `train.lora` from the config (default: r=8 on all seven projections), `full` trains
every weight. Batches are `--batch` sequences of exactly `--seq` tokens cut from GSM8K-train text
(`paths.data_dir`; random tokens if the file is missing), every token supervised, fp32
(`32-true`), AdamW. The first `--warmup` steps are not timed; tokens/s = batch * seq * timed steps /
their seconds (forward, backward and optimizer step). Peak RSS is `ru_maxrss` of the subprocess
(model, activations, gradients and optimizer state); RSS after the model load is printed too.

Run:
    python bench/train_throughput.py                         # seq 512, batch 4, 1 warm-up + 3 timed
    python bench/train_throughput.py --steps 5 --modes lora
    python bench/train_throughput.py train.lora.target_modules=[q_proj,v_proj]   # Hydra overrides

Writes bench/results/train_throughput.json.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2  # KiB -> GiB


def current_rss_gb() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1024**3


def token_batches(tokenizer, data_file: Path, batch: int, seq: int, count: int):
    import torch

    need = batch * seq * count
    ids: list[int] = []
    if data_file.is_file():
        with open(data_file, encoding="utf-8") as fh:
            for line in fh:
                row = json.loads(line)
                ids += tokenizer(row["question"] + "\n" + row["answer"] + "\n")["input_ids"]
                if len(ids) >= need:
                    break
    if len(ids) < need:
        g = torch.Generator().manual_seed(0)
        ids += torch.randint(0, len(tokenizer), (need - len(ids),), generator=g).tolist()
    t = torch.tensor(ids[:need]).view(count, batch, seq)
    return [
        {"input_ids": b, "attention_mask": torch.ones_like(b), "labels": b.clone(),
         "index": torch.arange(batch)}
        for b in t
    ]  # fmt: skip


def one_mode(mode: str, args, overrides: list[str]) -> dict:
    """Runs inside the subprocess: train `warmup + steps` steps, return the figures."""
    import pytorch_lightning as pl
    import torch
    from transformers import AutoTokenizer

    from crescent.cli import compose
    from crescent.models import resolve_model_path
    from crescent.training.module import CausalLMModule, StepLog

    cfg = compose(overrides)
    path = resolve_model_path(cfg.model, cfg.paths.models_dir)
    lora = dict(cfg.train.lora) if mode == "lora" and cfg.train.lora is not None else None
    if lora:
        lora["target_modules"] = list(lora["target_modules"])
    t0 = time.time()
    module = CausalLMModule(path, str(cfg.model.name), lora=lora, lr=1e-4, dtype="float32")
    load_s, load_rss = time.time() - t0, current_rss_gb()
    tok = AutoTokenizer.from_pretrained(path)
    n = args.warmup + args.steps
    data_file = Path(str(cfg.paths.data_dir)) / "gsm8k" / "train.jsonl"
    batches = token_batches(tok, data_file, args.batch, args.seq, n)

    class Timer(pl.Callback):
        def __init__(self):
            self.seconds: list[float] = []

        def on_train_batch_start(self, *a):
            self._t = time.perf_counter()

        def on_train_batch_end(self, *a):
            self.seconds.append(time.perf_counter() - self._t)

    timer = Timer()
    trainer = pl.Trainer(
        max_steps=n, accelerator="cpu", devices=1, precision="32-true", logger=False,
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        callbacks=[timer, StepLog()], num_sanity_val_steps=0, limit_val_batches=0,
    )  # fmt: skip
    loader = torch.utils.data.DataLoader(batches, batch_size=None)
    trainer.fit(module, train_dataloaders=loader)
    timed = timer.seconds[args.warmup :]
    tokens = args.batch * args.seq * len(timed)
    counts = module.parameter_counts()
    return {
        "mode": mode,
        "trainable_params": counts["trainable_params"],
        "total_params": counts["total_params"],
        "lora": lora,
        "load_seconds": round(load_s, 1),
        "rss_after_load_gb": round(load_rss, 2),
        "step_seconds": [round(s, 2) for s in timer.seconds],
        "timed_steps": len(timed),
        "seconds_per_step": round(sum(timed) / len(timed), 2),
        "tokens_per_s": round(tokens / sum(timed), 1),
        "peak_rss_gb": round(rss_gb(), 2),
        "losses": [round(h["loss"], 3) for h in module.history],
    }


def markdown_table(rows: list[dict], args) -> str:
    lines = [
        f"Sequence {args.seq}, batch {args.batch}, fp32, {args.steps} timed steps after "
        f"{args.warmup} warm-up, {rows[0]['threads']} torch threads.",
        "",
        "| mode | trainable params | s/step | tokens/s | peak RSS (GB) | RSS after load (GB) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['mode']} | {r['trainable_params']:,} of {r['total_params']:,} | "
            f"{r['seconds_per_step']:.2f} | {r['tokens_per_s']:.1f} | {r['peak_rss_gb']:.2f} | "
            f"{r['rss_after_load_gb']:.2f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seq", type=int, default=512, help="tokens per sequence")
    ap.add_argument("--batch", type=int, default=4, help="sequences per step")
    ap.add_argument("--steps", type=int, default=3, help="timed optimizer steps")
    ap.add_argument("--warmup", type=int, default=1, help="untimed first steps")
    ap.add_argument("--modes", default="lora,full", help="comma-separated: lora, full")
    ap.add_argument("--one", help=argparse.SUPPRESS)  # internal: run one mode, print JSON
    args, overrides = ap.parse_known_args(argv)
    if args.one:
        import torch

        res = one_mode(args.one, args, overrides)
        res["threads"] = torch.get_num_threads()
        print("RESULT " + json.dumps(res), flush=True)
        return res

    rows = []
    for mode in [m.strip() for m in args.modes.split(",") if m.strip()]:
        cmd = [sys.executable, __file__, "--one", mode, "--seq", str(args.seq), "--batch",
               str(args.batch), "--steps", str(args.steps), "--warmup", str(args.warmup), *overrides]  # fmt: skip
        print(f"[bench] {mode}: running", flush=True)
        out = subprocess.run(cmd, capture_output=True, text=True)
        line = [x for x in out.stdout.splitlines() if x.startswith("RESULT ")]
        if out.returncode != 0 or not line:
            sys.exit(f"{mode} failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}")
        rows.append(json.loads(line[-1][len("RESULT ") :]))
        print(f"[bench] {mode}: {rows[-1]['tokens_per_s']} tokens/s, peak {rows[-1]['peak_rss_gb']} GB",
              flush=True)  # fmt: skip
    table = markdown_table(rows, args)
    print("\n" + table)
    import torch

    result = {
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor(),
            "cpus": os.cpu_count(),
            "torch": torch.__version__,
        },  # fmt: skip
        "seq": args.seq,
        "batch": args.batch,
        "steps": args.steps,
        "warmup": args.warmup,
        "overrides": overrides,
        "rows": rows,
        "table": table,
    }
    out_dir = ROOT / "bench" / "results"
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "train_throughput.json").write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
