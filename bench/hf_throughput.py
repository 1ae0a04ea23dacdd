"""Generated tokens/s of the `hf` engine on the embedded model, by micro-batch size.

Measures `crescent.engines.hf.HFEngine.generate` on the configured model (default: the embedded
SmolLM2-135M-Instruct, sampled in the engine dtype: bf16 on CPUs with fast bf16, else fp32) with the answer prompt of the `answers` stage (a GSM8K-like
question + `model.answer_suffix`, rendered through the chat template), sampling at temperature 0.7,
top_p 0.95, up to 128 new tokens. For each batch size it generates the same list of sequences and
reports sequences, generated tokens (sum of `Generation.num_tokens`, padding excluded), seconds,
tokens/s and the ratio to batch 1 (one prompt at a time). Model load and a short warm-up call are
excluded from the timings (load time is printed).

Batch 1 is slow on CPU, so by default it runs over the first 8 of the sequences only
(`--batch1-sequences`); tokens/s is a rate and stays comparable.

Run:
    python bench/hf_throughput.py
    python bench/hf_throughput.py --max-tokens 64 --batches 1,4,16 --sequences 16
    python bench/hf_throughput.py model=qwen2.5-0.5b engine.device=cuda   # Hydra overrides

Writes bench/results/hf_throughput.json.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# GSM8K-like questions (written for this benchmark, not taken from the data set), cycled.
QUESTIONS = [
    "A baker makes 24 muffins in the morning and twice as many in the afternoon. She sells 50 "
    "muffins and gives away 6. How many muffins does she have left?",
    "Tom reads 15 pages of a book every weekday and 25 pages on each day of the weekend. How many "
    "pages does he read in two weeks?",
    "A store sells pencils at $0.40 each and notebooks at $2.50 each. Maria buys 12 pencils and 3 "
    "notebooks and pays with a $20 bill. How much change does she get?",
    "A train travels 60 miles per hour for 2.5 hours and then 45 miles per hour for 2 hours. How "
    "many miles does it travel in total?",
]


def parse_batches(text: str) -> list[int]:
    out = [int(x) for x in text.split(",") if x.strip()]
    if not out or any(b < 1 for b in out):
        raise argparse.ArgumentTypeError(f"--batches: positive integers, got {text!r}")
    return out


def markdown_table(rows: list[dict]) -> str:
    head = "| batch size | sequences | generated tokens | seconds | tokens/s | ratio vs batch 1 |"
    lines = [head, "|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        ratio = "n/a" if r["ratio_vs_batch1"] is None else f"{r['ratio_vs_batch1']:.2f}x"
        lines.append(
            f"| {r['batch_size']} | {r['sequences']} | {r['generated_tokens']} | "
            f"{r['seconds']:.1f} | {r['tokens_per_s']:.1f} | {ratio} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--max-tokens", type=int, default=128, help="new tokens per sequence (cap)")
    ap.add_argument("--batches", type=parse_batches, default=[1, 8, 32], help="e.g. 1,8,32")
    ap.add_argument("--sequences", type=int, default=32, help="total sequences per batch setting")
    ap.add_argument(
        "--batch1-sequences",
        type=int,
        default=8,
        help="sequences for batch size 1 (fewer: it is slow; 0 = same as --sequences)",
    )
    ap.add_argument("--temperature", type=float, default=0.7)
    ap.add_argument("--top-p", type=float, default=0.95)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch)")
    ap.add_argument("--device", default=None, help="auto | cpu | cuda (default: engine.device)")
    ap.add_argument(
        "--dtype", default=None, help="auto | model | float32 | bfloat16 (default: engine.dtype)"
    )
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "hf_throughput.json")
    ap.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. model=qwen2.5-0.5b")
    args = ap.parse_args(argv)

    import torch

    from crescent.cli import compose
    from crescent.engines.base import SamplingSpec
    from crescent.engines.hf import HFEngine
    from crescent.models import resolve_model_path

    cfg = compose(args.overrides)
    device = args.device or cfg.engine.get("device", "auto")
    threads = args.threads or cfg.engine.get("threads")

    t0 = time.perf_counter()
    models_dir = cfg.paths.get("models_dir") or f"{cfg.paths.cache_dir}/models"
    path = resolve_model_path(cfg.model, models_dir)
    resolve_s = time.perf_counter() - t0

    def load(b: int) -> tuple[HFEngine, float]:
        t0 = time.perf_counter()
        dtype = args.dtype or cfg.engine.get("dtype", "auto")
        eng = HFEngine(cfg.model, path, batch_size=b, device=device, threads=threads, dtype=dtype)
        return eng, time.perf_counter() - t0

    engine, load_s = load(args.batches[0])
    print(f"model: {cfg.model.name} ({path})")
    print(f"model resolve: {resolve_s:.1f}s, load: {load_s:.1f}s (excluded from timings)")
    print(
        f"device: {engine.device}, dtype: {engine.identity['dtype']}, "
        f"torch threads: {torch.get_num_threads()}, torch {torch.__version__}"
    )

    texts = [QUESTIONS[i % len(QUESTIONS)] + cfg.model.answer_suffix for i in range(args.sequences)]
    prompts = [engine.render(t) for t in texts]
    spec = SamplingSpec(
        n=1,
        temperature=args.temperature,
        top_p=args.top_p,
        max_tokens=args.max_tokens,
        stop=tuple(cfg.model.stop),
        seed=args.seed,
    )
    prompt_tokens = [
        len(engine.tokenizer(p, add_special_tokens=False)["input_ids"]) for p in prompts
    ]
    print(
        f"prompt: {min(prompt_tokens)}-{max(prompt_tokens)} tokens; sampling: temperature "
        f"{spec.temperature}, top_p {spec.top_p}, max_tokens {spec.max_tokens}, seed {spec.seed}"
    )
    warm = SamplingSpec(n=1, temperature=0.7, max_tokens=8)

    rows, loads = [], [load_s]
    for k, b in enumerate(args.batches):
        if k:  # one engine per batch size, as the pipeline builds it (load excluded)
            engine.close()
            engine, load_s = load(b)
            loads.append(load_s)
            print(f"load for batch {b}: {load_s:.1f}s (excluded)")
        n = args.sequences
        if b == 1 and args.batch1_sequences:
            n = min(args.batch1_sequences, args.sequences)
        # Warm-up (excluded): first-call allocations and kernel selection at this batch shape.
        engine.generate(prompts[: min(b, n)], warm, desc="warm-up")
        t0 = time.perf_counter()
        gens = engine.generate(prompts[:n], spec, desc=f"batch {b}")
        secs = time.perf_counter() - t0
        flat = [g for gs in gens for g in gs]
        tokens = sum(g.num_tokens for g in flat)
        rows.append(
            {
                "batch_size": b,
                "sequences": n,
                "generated_tokens": tokens,
                "seconds": round(secs, 3),
                "tokens_per_s": round(tokens / secs, 2),
                "mean_tokens_per_sequence": round(tokens / n, 1),
                "truncated": sum(1 for g in flat if g.finish_reason == "length"),
            }
        )
        print(f"batch {b}: {n} sequences, {tokens} tokens, {secs:.1f}s", flush=True)

    base = next((r["tokens_per_s"] for r in rows if r["batch_size"] == 1), None)
    for r in rows:
        r["ratio_vs_batch1"] = round(r["tokens_per_s"] / base, 2) if base else None

    print()
    if any(r["batch_size"] == 1 and r["sequences"] < args.sequences for r in rows):
        n1 = next(r["sequences"] for r in rows if r["batch_size"] == 1)
        print(
            f"note: batch 1 ran over the first {n1} of the {args.sequences} sequences "
            "(one prompt at a time is slow on CPU); tokens/s is a rate and stays comparable."
        )
    print(
        "note: a micro-batch runs until its longest sequence stops; shorter ones idle as padding "
        "(counted in seconds, not in tokens)."
    )
    print()
    print(markdown_table(rows))

    result = {
        "benchmark": "hf_throughput",
        "date": dt.date.today().isoformat(),
        "command": " ".join(
            ["python", "bench/hf_throughput.py", *(sys.argv[1:] if argv is None else argv)]
        ),
        "model": str(cfg.model.name),
        "model_path": path,
        "device": engine.device,
        "dtype": engine.identity["dtype"],
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "machine": platform.processor() or platform.machine(),
        "model_load_seconds": [round(x, 2) for x in loads],
        "model_resolve_seconds": round(resolve_s, 2),
        "prompt_tokens": [min(prompt_tokens), max(prompt_tokens)],
        "sampling": spec.key(),
        "results": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nwrote {args.out}")
    engine.close()
    return result


if __name__ == "__main__":
    main()
