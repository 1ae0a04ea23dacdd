"""Online dedup speed: `AcceptedSet.screen` in calls of 100 vs a per-question faiss search.

A stream of question embeddings (unit-norm float32, cosine = dot product) is deduplicated with the
accepted-set rule only ("duplicate iff max cosine to every question accepted so far >= threshold",
decided in order, an accepted question is seen by the next at once; no within-call rule, no
rewrites) in two ways:

- ours: `crescent.dedup.AcceptedSet.screen(vecs, threshold, ids, texts)`, one call per block of
  `--call-size` questions (the paper's generation calls hold 100 questions);
- baseline (what the authors' code does): faiss-cpu `IndexFlatIP`, searched one question at a time
  with k=1, each accepted vector added to the index at once.

Both must take identical accept/reject decisions (the count of differing decisions is printed and
must be 0). Similarities within 1e-4 of the threshold are reported separately as boundary cases:
there the two float summation orders may legitimately disagree.

Default input: synthetic 384-d embeddings with a fixed seed: 80% distinct items (half isotropic
random, half in tight clusters whose members sit at cosine ~0.4-0.7, below the threshold), 20%
noisy copies of earlier distinct items at cosine 0.90-0.97 to their source. `--real N` embeds the
first N GSM8K-train questions with all-MiniLM-L6-v2 instead (embedding time excluded, printed).

Run:
    python bench/dedup_speed.py
    python bench/dedup_speed.py --n 50000 --call-size 100 --threshold 0.875 --seed 0
    python bench/dedup_speed.py --real 7473

Writes bench/results/dedup_speed.json.
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
BOUNDARY = 1e-4  # |similarity - threshold| below this: a boundary case (float order may differ)


def synthetic(n: int, dim: int, seed: int, dup_frac: float = 0.2):
    """(vectors [n, dim] float32 unit rows, is_planted_copy [n] bool), in stream order."""
    import numpy as np

    rng = np.random.default_rng(seed)
    n_dup = int(round(n * dup_frac))
    n_base = n - n_dup

    def unit(x):
        return x / np.linalg.norm(x, axis=-1, keepdims=True)

    # Distinct items: half isotropic (pairwise cosine ~N(0, 1/dim), max ~0.3 at this size) ...
    n_rand = n_base // 2
    base = np.empty((n_base, dim))
    base[:n_rand] = unit(rng.standard_normal((n_rand, dim)))
    # ... half in clusters of ~20: x = sqrt(a) c + sqrt(1 - a) g, members at cosine ~sqrt(a_i a_j).
    n_clu = n_base - n_rand
    n_centers = max(1, n_clu // 20)
    centers = unit(rng.standard_normal((n_centers, dim)))
    a = rng.uniform(0.4, 0.7, size=(n_clu, 1))
    noise = unit(rng.standard_normal((n_clu, dim)))
    base[n_rand:] = unit(
        np.sqrt(a) * centers[rng.integers(0, n_centers, n_clu)] + np.sqrt(1 - a) * noise
    )
    base = base[rng.permutation(n_base)]

    # Planted copies: cos(copy, source) = t ~ U[0.90, 0.97], placed after their source.
    src = rng.integers(0, n_base, n_dup)
    t = rng.uniform(0.90, 0.97, size=(n_dup, 1))
    u = rng.standard_normal((n_dup, dim))
    u -= (u * base[src]).sum(1, keepdims=True) * base[src]  # orthogonal to the source
    dups = t * base[src] + np.sqrt(1 - t**2) * unit(u)

    base_key = np.sort(rng.uniform(0, 1, n_base))
    dup_key = rng.uniform(base_key[src], 1.0)
    order = np.argsort(np.concatenate([base_key, dup_key]), kind="stable")
    vecs = np.concatenate([base, dups])[order].astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    planted = np.concatenate([np.zeros(n_base, bool), np.ones(n_dup, bool)])[order]
    return np.ascontiguousarray(vecs), planted


def gsm8k_path(arg: str | None) -> Path:
    if arg:
        return Path(arg)
    data = os.environ.get("CRESCENT_DATA") or str(ROOT.parent / "shared" / "data")
    return Path(data) / "gsm8k" / "train.jsonl"


def real(n: int, path: Path):
    from crescent.embedding import Embedder

    texts = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                texts.append(json.loads(line)["question"])
            if len(texts) == n:
                break
    t0 = time.perf_counter()
    emb = Embedder("all-MiniLM-L6-v2")
    load_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    vecs = emb(texts)
    return vecs, texts, load_s, time.perf_counter() - t0


def run_ours(vecs, threshold: float, call_size: int, ids: list[str], texts: list[str]):
    from crescent.dedup import AcceptedSet

    acc = AcceptedSet(vecs.shape[1])
    decisions = []
    t0 = time.perf_counter()
    for s in range(0, len(vecs), call_size):
        e = s + call_size
        decisions += acc.screen(vecs[s:e], threshold, ids[s:e], texts[s:e])
    secs = time.perf_counter() - t0
    accepted = [d.accepted for d in decisions]
    sims = [d.similarity for d in decisions]
    return accepted, sims, secs


def run_faiss(vecs, threshold: float, texts: list[str]):
    import faiss

    index = faiss.IndexFlatIP(vecs.shape[1])
    kept: list[str] = []
    accepted, sims = [], []
    t0 = time.perf_counter()
    for i in range(len(vecs)):
        q = vecs[i : i + 1]
        if index.ntotal == 0:
            sim = None
            dup = False
        else:
            d, _ = index.search(q, 1)
            sim = float(d[0, 0])
            dup = sim >= threshold
        if not dup:
            index.add(q)
            kept.append(texts[i])
        accepted.append(not dup)
        sims.append(sim)
    return accepted, sims, time.perf_counter() - t0


def thread_report() -> list[str]:
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return []
    return [
        f"{p['internal_api']}:{Path(p['filepath']).name}={p['num_threads']}"
        for p in threadpool_info()
    ]


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=50000, help="synthetic stream length")
    ap.add_argument("--call-size", type=int, default=100, help="questions per screen() call")
    ap.add_argument("--threshold", type=float, default=0.875)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--dim", type=int, default=384, help="synthetic embedding size")
    ap.add_argument("--dup-frac", type=float, default=0.2, help="planted near-duplicate share")
    ap.add_argument(
        "--real", type=int, default=0, metavar="N", help="embed N GSM8K-train questions"
    )
    ap.add_argument("--data", default=None, help="GSM8K train.jsonl (default ../shared/data/...)")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="BLAS/OpenMP threads")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "dedup_speed.json")
    args = ap.parse_args(argv)

    # Thread counts must be fixed before numpy / faiss load their BLAS and OpenMP runtimes.
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(args.threads)
    import faiss
    import numpy as np

    faiss.omp_set_num_threads(args.threads)
    print(
        f"threads: {args.threads} (OMP/OPENBLAS/MKL_NUM_THREADS, faiss.omp_set_num_threads; "
        f"faiss reports {faiss.omp_get_max_threads()}); cpu_count {os.cpu_count()}"
    )
    pools = thread_report()
    if pools:
        print("thread pools: " + ", ".join(pools))
    print(f"numpy {np.__version__}, faiss {faiss.__version__}, python {platform.python_version()}")

    extra: dict = {}
    if args.real:
        path = gsm8k_path(args.data)
        vecs, texts, load_s, embed_s = real(args.real, path)
        planted = None
        mode = f"real: first {len(vecs)} GSM8K-train questions ({path})"
        extra = {"embedder_load_seconds": round(load_s, 2), "embed_seconds": round(embed_s, 2)}
        print(f"{mode}; embedder load {load_s:.1f}s, embedding {embed_s:.1f}s (excluded)")
        if len(vecs) < args.real:
            print(f"note: only {len(vecs)} questions in {path} (asked for {args.real})")
    else:
        t0 = time.perf_counter()
        vecs, planted = synthetic(args.n, args.dim, args.seed, args.dup_frac)
        texts = [""] * len(vecs)
        mode = (
            f"synthetic: {len(vecs)} x {args.dim}, seed {args.seed}, "
            f"{int(planted.sum())} planted near-duplicates (cosine 0.90-0.97 to an earlier item)"
        )
        print(f"{mode}; generated in {time.perf_counter() - t0:.1f}s")
    ids = [f"q{i:06d}" for i in range(len(vecs))]
    n = len(vecs)

    ours_acc, ours_sim, ours_s = run_ours(vecs, args.threshold, args.call_size, ids, texts)
    print(f"ours: {ours_s:.2f}s", flush=True)
    base_acc, base_sim, base_s = run_faiss(vecs, args.threshold, texts)
    print(f"faiss one-at-a-time: {base_s:.2f}s", flush=True)

    ours_acc, base_acc = np.array(ours_acc), np.array(base_acc)
    nan = float("nan")
    o_sim = np.array([nan if s is None else s for s in ours_sim], dtype=np.float64)
    b_sim = np.array([nan if s is None else s for s in base_sim], dtype=np.float64)
    differ = ours_acc != base_acc
    boundary = (np.abs(o_sim - args.threshold) < BOUNDARY) | (
        np.abs(b_sim - args.threshold) < BOUNDARY
    )
    both = ~np.isnan(o_sim) & ~np.isnan(b_sim)
    max_sim_diff = float(np.max(np.abs(o_sim[both] - b_sim[both]))) if both.any() else 0.0
    gap = np.abs(b_sim[~np.isnan(b_sim)] - args.threshold)
    min_gap = float(gap.min()) if gap.size else None
    ratio = base_s / ours_s if ours_s > 0 else float("inf")

    result = {
        "benchmark": "dedup_speed",
        "date": dt.date.today().isoformat(),
        "command": " ".join(
            ["python", "bench/dedup_speed.py", *(sys.argv[1:] if argv is None else argv)]
        ),
        "mode": mode,
        "n": n,
        "call_size": args.call_size,
        "threshold": args.threshold,
        "seed": args.seed,
        "threads": args.threads,
        "cpu_count": os.cpu_count(),
        "accepted": int(ours_acc.sum()),
        "accepted_faiss": int(base_acc.sum()),
        "differing_decisions": int(differ.sum()),
        "differing_outside_boundary": int((differ & ~boundary).sum()),
        "boundary_cases": int(boundary.sum()),
        "min_abs_similarity_minus_threshold": min_gap,
        "max_abs_similarity_difference": max_sim_diff,
        "seconds_ours": round(ours_s, 3),
        "seconds_faiss_one_at_a_time": round(base_s, 3),
        "speed_ratio": round(ratio, 2),
        "numpy": np.__version__,
        "faiss": faiss.__version__,
        **extra,
    }
    if planted is not None:
        result["planted_duplicates"] = int(planted.sum())
        result["planted_duplicates_rejected"] = int((planted & ~ours_acc).sum())
        result["distinct_items_rejected"] = int((~planted & ~ours_acc).sum())

    print()
    print(
        "| N | accepted | differing decisions | boundary cases | ours (s) | faiss 1-at-a-time (s) | speed ratio |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|")
    print(
        f"| {n} | {result['accepted']} | {result['differing_decisions']} | {result['boundary_cases']} "
        f"| {ours_s:.2f} | {base_s:.2f} | {ratio:.1f}x |"
    )
    print()
    print(f"differing decisions: {result['differing_decisions']} (must be 0)")
    if result["boundary_cases"]:
        print(
            f"boundary cases (|similarity - threshold| < {BOUNDARY}): {result['boundary_cases']}, "
            f"differing outside them: {result['differing_outside_boundary']}"
        )
    print(f"closest similarity to the threshold: |sim - {args.threshold}| = {min_gap:.6f}")
    print(f"max |similarity ours - faiss|: {max_sim_diff:.2e}")
    if planted is not None:
        print(
            f"planted near-duplicates rejected: {result['planted_duplicates_rejected']}/"
            f"{result['planted_duplicates']}; distinct items rejected: {result['distinct_items_rejected']}"
        )
    print(f"speed ratio (faiss one-at-a-time / ours): {ratio:.1f}x (target >= 20x)")

    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nwrote {args.out}")
    return result


if __name__ == "__main__":
    main()
