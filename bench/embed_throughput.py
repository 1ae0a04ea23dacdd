"""Sentences/s of the dedup embedder (`crescent.embedding.Embedder`, all-MiniLM-L6-v2), by batch size.

Embeds the first `--n` GSM8K-train questions (`paths.data_dir`; synthetic word problems if the file
is missing) with the embedder `dedup.embedder` names, exactly as the `questions`, `dedup` and
`vote` stages call it (unit-norm float32 vectors), once per batch size in `--batch-sizes`, and
reports sentences, mean word-piece tokens per sentence (the embedder's tokenizer, capped at its
max_seq_length), seconds and sentences/s. It also times `--call-size` sentences at a time (one
bait call's worth: the `questions` stage embeds each call's samples as one list), since that is
how the online dedup uses it. Model load and a warm-up batch are excluded (load time is printed).

Run:
    python bench/embed_throughput.py                      # 2,000 questions, batch 64, calls of 100
    python bench/embed_throughput.py --n 500 --batch-sizes 16,64,256 --threads 2
    python bench/embed_throughput.py dedup.embedder=all-MiniLM-L6-v2   # Hydra overrides

Writes bench/results/embed_throughput.json.
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
sys.path.insert(0, str(ROOT))

# Used only when the GSM8K-train copy is missing (written for this benchmark).
SYNTHETIC = [
    "A farmer has {a} cows and buys {b} more each month. How many cows does he have after {c} "
    "months?",
    "Sara reads {a} pages a day for {b} days and then {c} pages on the last day. How many pages "
    "did she read?",
    "A shop sells pens at ${a} each. Tom buys {b} pens and pays with a ${c}0 bill. How much change "
    "does he get?",
]


def load_texts(data_dir: str, n: int) -> tuple[list[str], str]:
    path = Path(data_dir).expanduser() / "gsm8k" / "train.jsonl"
    if path.is_file():
        texts = []
        with path.open(encoding="utf-8") as fh:
            for line in fh:
                texts.append(json.loads(line)["question"])
                if len(texts) >= n:
                    break
        return texts, f"first {len(texts)} GSM8K-train questions ({path})"
    texts = [SYNTHETIC[i % 3].format(a=i % 17 + 2, b=i % 11 + 3, c=i % 7 + 2) for i in range(n)]
    return texts, f"{n} synthetic word problems (no {path})"


def parse_ints(text: str) -> list[int]:
    out = [int(x) for x in text.split(",") if x.strip()]
    if not out or any(b < 1 for b in out):
        raise argparse.ArgumentTypeError(f"positive integers expected, got {text!r}")
    return out


def markdown_table(rows: list[dict]) -> str:
    lines = [
        "| mode | batch size | sentences | seconds | sentences/s |",
        "|---|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['mode']} | {r['batch_size']} | {r['sentences']} | {r['seconds']:.2f} | "
            f"{r['sentences_per_s']:.0f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=2000, help="sentences per timed pass")
    ap.add_argument("--batch-sizes", type=parse_ints, default=[64], help="e.g. 16,64,256")
    ap.add_argument("--call-size", type=int, default=100, help="sentences per call (0 = skip)")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch)")
    ap.add_argument("--device", default=None, help="cpu | cuda (default: cpu)")
    ap.add_argument(
        "--out", type=Path, default=ROOT / "bench" / "results" / "embed_throughput.json"
    )
    ap.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. dedup.embedder=NAME")
    args = ap.parse_args(argv)

    import torch

    from crescent.embedding import Embedder

    if args.threads:
        torch.set_num_threads(args.threads)
    from crescent.cli import compose

    cfg = compose(args.overrides)
    texts, source = load_texts(cfg.paths.data_dir, args.n)

    t0 = time.perf_counter()
    emb = Embedder(str(cfg.dedup.embedder), int(cfg.dedup.embed_batch_size), device=args.device)
    load_s = time.perf_counter() - t0
    tok = emb.model.tokenizer
    cap = int(emb.model.max_seq_length)
    lengths = [min(len(tok(t)["input_ids"]), cap) for t in texts]
    print(f"embedder: {cfg.dedup.embedder} ({emb.dim}-d), load {load_s:.1f}s (excluded)")
    print(
        f"device: {emb.model.device}, torch threads: {torch.get_num_threads()}, torch {torch.__version__}"
    )
    print(f"texts: {source}; {sum(lengths) / len(lengths):.1f} tokens per sentence on average")

    emb(texts[: max(args.batch_sizes)])  # warm-up (excluded)
    rows = []
    for b in args.batch_sizes:
        emb.batch_size = b
        t0 = time.perf_counter()
        vecs = emb(texts)
        secs = time.perf_counter() - t0
        assert vecs.shape == (len(texts), emb.dim)
        rows.append(
            {
                "mode": "one list",
                "batch_size": b,
                "sentences": len(texts),
                "seconds": round(secs, 3),
                "sentences_per_s": round(len(texts) / secs, 1),
            }
        )
        print(f"batch {b}: {len(texts)} sentences in {secs:.2f}s", flush=True)
    if args.call_size:
        emb.batch_size = int(cfg.dedup.embed_batch_size)
        t0 = time.perf_counter()
        for i in range(0, len(texts), args.call_size):
            emb(texts[i : i + args.call_size])
        secs = time.perf_counter() - t0
        rows.append(
            {
                "mode": f"calls of {args.call_size}",
                "batch_size": emb.batch_size,
                "sentences": len(texts),
                "seconds": round(secs, 3),
                "sentences_per_s": round(len(texts) / secs, 1),
            }
        )
        print(f"calls of {args.call_size}: {len(texts)} sentences in {secs:.2f}s", flush=True)

    print()
    print(markdown_table(rows))
    result = {
        "benchmark": "embed_throughput",
        "date": dt.date.today().isoformat(),
        "command": " ".join(
            ["python", "bench/embed_throughput.py", *(sys.argv[1:] if argv is None else argv)]
        ),
        "embedder": str(cfg.dedup.embedder),
        "dim": emb.dim,
        "device": str(emb.model.device),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "machine": platform.processor() or platform.machine(),
        "load_seconds": round(load_s, 2),
        "texts": source,
        "mean_tokens": round(sum(lengths) / len(lengths), 1),
        "max_seq_length": cap,
        "results": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nwrote {args.out}")
    return result


if __name__ == "__main__":
    main()
