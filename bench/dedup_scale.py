"""Dedup at scale: exact online dedup vs approximate FAISS indexes (`dedup.index`) at 10k-1M questions.

For each stream size N, a synthetic stream of question embeddings (unit-norm float32, cosine = dot
product) is deduplicated online with the accepted-set rule only (a question is a duplicate iff its
max cosine to every question accepted so far is >= threshold; decided in order, in calls of
`--call-size` through `AcceptedSet.screen`, the harness's own code path; no within-call rule, no
rewrites), once per method:

- exact: `AcceptedSet` (the default `dedup.index=exact`). Its cost grows with N^2. Past `--exact-max`
  questions it runs on the first `--exact-max` of the stream only and the rest is extrapolated
  from a fit of seconds per call against accepted-set size (t = a + b * accepted) over the second
  half of the measured calls; the output marks which figures are measured and which extrapolated.
- approximate: `ApproxAcceptedSet` with `hnsw` or `ivf` (defaults from conf/dedup/default.yaml;
  `--approx hnsw ivf hnsw:ef_search=128,m=16 ivf:nprobe=64` picks variants).

Reference decisions: exact's where it ran; beyond `--exact-max`, the stream's planted labels (every
planted copy a duplicate, every other item new). Those equal exact's by construction; the script
checks it on the measured prefix (all items) and on `--check-samples` random later items (each
one's max cosine to all earlier accepted items, computed directly). Against the reference, each
approximate method reports recall (the share of the reference's rejected items it also rejects),
false accepts (near-duplicates it let in) and false rejects (items exact accepts that it rejected:
possible only through an earlier false accept changing the accepted set).

Synthetic stream (`--seed`, `--dim 384`): 1 - `--dup-frac` distinct items in topics of ~50,
x = sqrt(0.2) g + sqrt(w) c_topic + sqrt(0.8 - w) e with a shared direction g, w ~ U[0.2, 0.4]
(cosine ~0.2 across topics, ~0.4-0.6 within one; a little like sentence embeddings, which are
anisotropic and clustered); `--isotropic-frac` of them are isotropic random instead (no structure:
the hardest case for an approximate index). `--dup-frac` of the stream are noisy copies of an
earlier distinct item at cosine U[0.88, 0.98], placed after it at a random later position.
`--real` uses the local math datasets' questions embedded with all-MiniLM-L6-v2 instead.

Memory: what the accepted set holds at the end (exact: its matrix's allocated capacity; approximate:
the FAISS index's vectors, links or lists, plus the exact part), computed from the structures;
the JSON also has each method's growth of the process's resident set and the peak RSS.

Run:
    python bench/dedup_scale.py                                  # 10k, 100k, 1M (~1.5 h, 2 cores)
    python bench/dedup_scale.py --sizes 10000 --approx hnsw hnsw:ef_search=16
    python bench/dedup_scale.py --real --approx hnsw ivf:nlist=64,train_size=4000

Writes bench/results/dedup_scale.json.
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import json
import os
import platform
import resource
import sys
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

REAL_FILES = [  # (dataset folder/file, question field): the local math questions for --real
    ("gsm8k/train.jsonl", "question"),
    ("gsm8k/test.jsonl", "question"),
    ("gsm_plus_mini/test.jsonl", "question"),  # perturbed GSM8K-test questions: real near-twins
    ("svamp/test.jsonl", "question"),
    ("asdiv/test.jsonl", "question"),
    ("math500/test.jsonl", "problem"),
]


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def structure_mb(acc) -> float:
    """Memory held by an accepted set: the exact matrix (allocated capacity), or the FAISS index
    (vectors + graph links / inverted lists, ids, direct map, centroids) plus the exact part."""
    total = acc._vecs.nbytes
    index = getattr(acc, "index", None)
    if index is not None:
        n, d = index.ntotal, index.d
        if hasattr(index, "hnsw"):
            h = index.hnsw
            total += n * d * 4 + h.neighbors.size() * 4 + h.levels.size() * 4 + h.offsets.size() * 8
        else:
            total += n * (d * 4 + 8 + 8) + index.nlist * d * 4
    return total / 2**20


def synthetic(n: int, dim: int, seed: int, dup_frac: float, isotropic_frac: float, np):
    """(vectors [n, dim] float32 unit rows, planted copy [n] bool), in stream order."""
    rng = np.random.default_rng(seed)
    n_dup = int(round(n * dup_frac))
    n_base = n - n_dup
    chunk = 1 << 16

    def unit(x):
        return x / np.linalg.norm(x, axis=-1, keepdims=True)

    g = unit(rng.standard_normal(dim, dtype=np.float32))
    centers = unit(rng.standard_normal((max(1, n_base // 50), dim), dtype=np.float32))
    n_iso = int(round(n_base * isotropic_frac))
    base = np.empty((n_base, dim), np.float32)
    for s in range(0, n_base, chunk):
        m = min(chunk, n_base - s)
        e = unit(rng.standard_normal((m, dim), dtype=np.float32))
        w = rng.uniform(0.2, 0.4, (m, 1)).astype(np.float32)
        c = centers[rng.integers(0, len(centers), m)]
        base[s : s + m] = unit(np.sqrt(0.2) * g + np.sqrt(w) * c + np.sqrt(0.8 - w) * e)
    if n_iso:
        base[:n_iso] = unit(rng.standard_normal((n_iso, dim), dtype=np.float32))
    base = base[rng.permutation(n_base)]

    # stream position keys: distinct items in order, each copy somewhere after its source
    base_key = np.sort(rng.uniform(0, 1, n_base))
    src = rng.integers(0, n_base, n_dup)
    dup_key = rng.uniform(base_key[src], 1.0)
    order = np.argsort(np.concatenate([base_key, dup_key]), kind="stable")
    where = np.empty(n, np.int64)
    where[order] = np.arange(n)  # stream position of item j (distinct items first, then copies)
    vecs = np.empty((n, dim), np.float32)
    vecs[where[:n_base]] = base
    for s in range(0, n_dup, chunk):
        m = min(chunk, n_dup - s)
        b = base[src[s : s + m]]
        t = rng.uniform(0.88, 0.98, (m, 1)).astype(np.float32)
        u = rng.standard_normal((m, dim), dtype=np.float32)
        u -= (u * b).sum(1, keepdims=True) * b  # orthogonal to the source
        vecs[where[n_base + s : n_base + s + m]] = unit(t * b + np.sqrt(1 - t**2) * unit(u))
    planted = np.zeros(n, bool)
    planted[where[n_base:]] = True
    return vecs, planted


def real_stream(data: Path, cache: Path, np):
    """The local math questions in REAL_FILES order, embedded (cached in `cache` next to the JSON)."""
    texts = []
    for name, field in REAL_FILES:
        with open(data / name, encoding="utf-8") as f:
            texts += [json.loads(line)[field] for line in f if line.strip()]
    if cache.is_file():
        vecs = np.load(cache)
        if len(vecs) == len(texts):
            return vecs, 0.0
    from crescent.embedding import Embedder

    t0 = time.perf_counter()
    vecs = np.ascontiguousarray(Embedder("all-MiniLM-L6-v2")(texts), dtype=np.float32)
    cache.parent.mkdir(parents=True, exist_ok=True)
    np.save(cache, vecs)
    return vecs, time.perf_counter() - t0


def dedup(acc, vecs, threshold: float, call: int, np):
    """Run the stream through acc.screen in calls; (accepted bool, seconds, per-call stats)."""
    accepted = np.zeros(len(vecs), bool)
    call_secs, call_size = [], []
    ids = [""] * call
    t_all = time.perf_counter()
    for s in range(0, len(vecs), call):
        block = vecs[s : s + call]
        size = acc.n
        t0 = time.perf_counter()
        ds = acc.screen(block, threshold, ids[: len(block)], ids[: len(block)])
        call_secs.append(time.perf_counter() - t0)
        call_size.append(size)
        accepted[s : s + len(block)] = [d.accepted for d in ds]
    return accepted, time.perf_counter() - t_all, np.array(call_secs), np.array(call_size)


def extrapolate(call_secs, call_size, ref_accepted, measured: int, call: int, np) -> dict:
    """Seconds exact would take on the whole stream: measured prefix + fitted cost of the rest."""
    half = len(call_secs) // 2
    b, a = np.polyfit(call_size[half:].astype(float), call_secs[half:], 1)
    starts = np.arange(measured, len(ref_accepted), call)
    before = np.concatenate([[0], np.cumsum(ref_accepted)])[
        starts
    ]  # accepted-set size at each call
    rest = float(np.sum(a + b * before))
    return {
        "fit_seconds_per_call": f"{a:.3e} + {b:.3e} * accepted",
        "seconds_rest_extrapolated": round(rest, 1),
        "seconds_total_estimated": round(float(call_secs.sum()) + rest, 1),
    }


def sample_check(vecs, ref_accepted, lo: int, samples: int, threshold: float, seed: int, np):
    """Exact decisions of `samples` random items at positions >= lo, computed directly (max cosine
    to every earlier reference-accepted item): (how many agree with the reference, how many)."""
    rng = np.random.default_rng(seed + 1)
    pos = np.sort(
        rng.choice(np.arange(lo, len(vecs)), size=min(samples, len(vecs) - lo), replace=False)
    )
    q = vecs[pos]
    best = np.full(len(pos), -np.inf, np.float32)
    acc_pos = np.nonzero(ref_accepted[: pos[-1]])[0]
    for s in range(0, len(acc_pos), 32768):
        p = acc_pos[s : s + 32768]
        sims = vecs[p] @ q.T
        sims[p[:, None] >= pos[None, :]] = -np.inf  # only items before each sample
        best = np.maximum(best, sims.max(axis=0))
    dup = best >= threshold
    return int(np.sum(dup != ref_accepted[pos])), len(pos)  # rejected iff not accepted


def parse_approx(items: list[str], base) -> list:
    """'hnsw', 'ivf:nprobe=64,nlist=256', 'hnsw:ef_search=128,m=16,buffer=500' -> IndexSpecs."""
    names = {"m": "hnsw_m", "ef_construction": "hnsw_ef_construction", "ef_search": "hnsw_ef_search",
             "nlist": "ivf_nlist", "nprobe": "ivf_nprobe", "train_size": "ivf_train_size",
             "buffer": "buffer"}  # fmt: skip
    specs = []
    for item in items:
        kind, _, params = item.partition(":")
        spec = replace(base, kind=kind)
        for kv in filter(None, params.split(",")):
            k, v = kv.split("=")
            spec = replace(spec, **{names[k]: int(v)})
        specs.append(spec)
    return specs


def label(spec) -> str:
    if spec.kind == "hnsw":
        return f"hnsw m={spec.hnsw_m} efC={spec.hnsw_ef_construction} efS={spec.hnsw_ef_search}"
    return f"ivf nlist={spec.ivf_nlist} nprobe={spec.ivf_nprobe} train={spec.ivf_train_size}"


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--sizes", default="10000,100000,1000000", help="stream lengths, comma-separated"
    )
    ap.add_argument("--approx", nargs="*", default=["hnsw", "ivf"], help="kind[:key=value,...]")
    ap.add_argument(
        "--exact-max", type=int, default=200000, help="longest stream exact runs on whole"
    )
    ap.add_argument(
        "--check-samples", type=int, default=2000, help="direct checks past --exact-max"
    )
    ap.add_argument("--call-size", type=int, default=100, help="questions per screen() call")
    ap.add_argument("--threshold", type=float, default=0.875)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--dup-frac", type=float, default=0.2, help="planted near-duplicate share")
    ap.add_argument("--isotropic-frac", type=float, default=0.0, help="unclustered distinct items")
    ap.add_argument("--real", action="store_true", help="embed the local math datasets' questions")
    ap.add_argument("--data", type=Path, default=None, help="data dir (default ../shared/data)")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="BLAS/OpenMP threads")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "dedup_scale.json")
    args = ap.parse_args(argv)

    # Thread counts must be fixed before numpy / faiss load their BLAS and OpenMP runtimes.
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(args.threads)
    import faiss
    import numpy as np
    from omegaconf import OmegaConf

    from crescent.dedup import AcceptedSet, IndexSpec, make_accepted_set

    faiss.omp_set_num_threads(args.threads)
    base = replace(
        IndexSpec.from_config(OmegaConf.load(ROOT / "conf/dedup/default.yaml")), kind="hnsw"
    )
    specs = parse_approx(args.approx, base)
    print(f"threads {args.threads}, cpu_count {os.cpu_count()}, numpy {np.__version__}, "
          f"faiss {faiss.__version__}, python {platform.python_version()}")  # fmt: skip

    runs = []
    if args.real:
        data = args.data or Path(os.environ.get("CRESCENT_DATA") or ROOT.parent / "shared" / "data")
        real, embed_s = real_stream(data, args.out.with_name("dedup_scale_real.npy"), np)
        print(f"real: {len(real)} questions from {data} embedded in {embed_s:.0f}s (excluded)")
        streams = [("real", len(real), lambda: (real, None))]
    else:
        sizes = [int(s) for s in args.sizes.split(",")]
        streams = [
            ("synthetic", n, lambda n=n: synthetic(n, args.dim, args.seed, args.dup_frac,
                                                   args.isotropic_frac, np))
            for n in sizes
        ]  # fmt: skip

    for kind, n, make in streams:
        t0 = time.perf_counter()
        vecs, planted = make()
        print(f"\n== {kind} N={n}: stream ready in {time.perf_counter() - t0:.1f}s", flush=True)
        row = {"data": kind, "n": n, "methods": []}
        if planted is not None:
            row["planted_duplicates"] = int(planted.sum())

        measured = n if planted is None else min(n, args.exact_max)
        gc.collect()
        r0 = rss_mb()
        acc = AcceptedSet(vecs.shape[1])
        ex_acc, ex_s, call_secs, call_size = dedup(acc, vecs[:measured], args.threshold,
                                                   args.call_size, np)  # fmt: skip
        exact = {"method": "exact", "measured_n": measured, "seconds": round(ex_s, 2),
                 "memory_mb": round(structure_mb(acc)), "rss_growth_mb": round(rss_mb() - r0),
                 "rejected": int((~ex_acc).sum())}  # fmt: skip
        del acc
        if planted is None:
            ref = ex_acc
        else:
            ref = ~planted
            exact["differs_from_planted"] = int((ex_acc != ref[:measured]).sum())
            ref[:measured] = ex_acc
        if measured < n:
            exact.update(extrapolate(call_secs, call_size, ref, measured, args.call_size, np))
            agree, checked = sample_check(vecs, ref, measured, args.check_samples,
                                          args.threshold, args.seed, np)  # fmt: skip
            exact["sample_check"] = (
                f"{agree}/{checked} later items: direct exact decision = planted"
            )
            secs = exact["seconds_total_estimated"]
        else:
            secs = ex_s
        exact["decisions_per_s"] = round(n / secs)
        row["reference_rejected"] = int((~ref).sum())
        row["methods"].append(exact)
        print(json.dumps(exact), flush=True)

        for spec in specs:
            gc.collect()
            r0 = rss_mb()
            acc = make_accepted_set(vecs.shape[1], spec)
            got, secs, _, _ = dedup(acc, vecs, args.threshold, args.call_size, np)
            growth = rss_mb() - r0
            engaged, memory = acc.indexed, structure_mb(acc)
            del acc
            rej, ref_rej = ~got, ~ref
            res = {
                "method": label(spec),
                "spec": spec.identity(),
                "seconds": round(secs, 2),
                "decisions_per_s": round(n / secs),
                "memory_mb": round(memory),
                "rss_growth_mb": round(growth),
                "indexed_at_end": int(engaged),
                "rejected": int(rej.sum()),
                "recall": round(float((rej & ref_rej).sum() / max(1, ref_rej.sum())), 5),
                "false_accepts": int((~rej & ref_rej).sum()),
                "false_rejects": int((rej & ~ref_rej).sum()),
            }
            row["methods"].append(res)
            print(json.dumps(res), flush=True)
        runs.append(row)
        del vecs, planted
        gc.collect()

    result = {
        "benchmark": "dedup_scale",
        "date": dt.date.today().isoformat(),
        "command": " ".join(["python", "bench/dedup_scale.py", *(sys.argv[1:] if argv is None else argv)]),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs",
        "threads": args.threads,
        "threshold": args.threshold,
        "call_size": args.call_size,
        "seed": args.seed,
        "dim": args.dim,
        "dup_frac": args.dup_frac,
        "isotropic_frac": args.isotropic_frac,
        "exact_max": args.exact_max,
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "numpy": np.__version__,
        "faiss": faiss.__version__,
        "runs": runs,
    }  # fmt: skip

    print(
        "\n| N | method | seconds | decisions/s | recall | false accepts | false rejects | memory (MB) |"
    )
    print("|---:|---|---:|---:|---:|---:|---:|---:|")
    for row in runs:
        for m in row["methods"]:
            if m["method"] == "exact":
                if m["measured_n"] < row["n"]:
                    secs = (f"{m['seconds_total_estimated']:.0f} (extrapolated; "
                            f"first {m['measured_n']}: {m['seconds']:.0f})")  # fmt: skip
                else:
                    secs = f"{m['seconds']:.1f}"
                q = "1 (reference)", "0", "0"
            else:
                secs = f"{m['seconds']:.1f}"
                q = f"{m['recall']:.4f}", str(m["false_accepts"]), str(m["false_rejects"])
                if not m["indexed_at_end"]:  # e.g. IVF before train_size accepted questions
                    secs += " (index never used: all exact)"
            print(f"| {row['n']} | {m['method']} | {secs} | {m['decisions_per_s']} | "
                  f"{' | '.join(q)} | {m['memory_mb']} |")  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nwrote {args.out}")
    return result


if __name__ == "__main__":
    main()
