"""The `vllm` and `hf` engines on the same requests: start-up seconds, generated tokens, tokens/s.

Each engine configuration runs in a fresh process of this interpreter (run it with the vLLM env:
both engines are installed there) and builds its engine as the pipeline does
(`crescent.engines.build_engine` on the composed config). Start-up is the engine package import
plus the engine constructor (model load; for vLLM also its engine process, KV cache and warm-up);
model materialization is done once beforehand and not counted. Then, with no extra warm-up, two
cases in this order, timed around `Engine.generate`:

- `batch`: 64 answer prompts (GSM8K-like questions + `model.answer_suffix`, through the chat
  template), n=1, temperature 0.7, top_p 0.95, max_tokens 128, seed 0 (the `answers` stage's shape);
- `bait`: the bait prompt once, n=16, temperature 0.8, top_p 0.95, max_tokens 128, seed 0 (the
  `questions` stage's shape).

Tokens/s is generated tokens (sum of `Generation.num_tokens`) over the generate call's seconds.
The engines draw different random numbers, so their texts and token counts differ; `stop` counts
sequences that ended on end-of-text rather than the token cap.

Configurations (`--configs`, comma-separated):
  hf              engine=hf at its defaults (dtype auto: bf16 on CPUs with AMX/AVX512-BF16; batch 48)
  hf-fp32         engine=hf engine.dtype=float32
  vllm            engine=vllm with the CPU build's settings: float32, enforce_eager, 30% of RAM for
                  the KV cache (vLLM reserves one core for its scheduler: 1 compute core of 2 here)
  vllm-reserved0  the same with VLLM_CPU_NUM_OF_RESERVED_CPU=0 (both cores compute)
  vllm-iomp       `vllm` with LD_PRELOAD=<env>/lib/libiomp5.so (Intel OpenMP, shipped by vllm-cpu)
  vllm-bf16       engine=vllm in bfloat16 with compilation (enforce_eager=false): slower start
Default: all but vllm-iomp.

Run (after `make vllm-env`; or `make bench-vllm`):
    .venv-vllm/bin/python bench/vllm_vs_hf.py
    .venv-vllm/bin/python bench/vllm_vs_hf.py --configs hf,vllm --prompts 16

Writes bench/results/vllm_vs_hf.json.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

VLLM_CPU = [
    "engine=vllm",
    "+engine.engine_args.dtype=float32",
    "engine.engine_args.enforce_eager=true",
    "engine.engine_args.gpu_memory_utilization=0.3",
]
# name -> (Hydra overrides, extra environment)
CONFIGS = {
    "hf": (["engine=hf"], {}),
    "hf-fp32": (["engine=hf", "engine.dtype=float32"], {}),
    "vllm": (VLLM_CPU, {}),
    "vllm-reserved0": (VLLM_CPU, {"VLLM_CPU_NUM_OF_RESERVED_CPU": "0"}),
    # vLLM warns that Intel's OpenMP is not preloaded; vllm-cpu ships it in the env's lib/
    "vllm-iomp": (VLLM_CPU, {"LD_PRELOAD": str(Path(sys.prefix) / "lib" / "libiomp5.so")}),
    "vllm-bf16": (
        [
            "engine=vllm",
            "+engine.engine_args.dtype=bfloat16",
            "engine.engine_args.enforce_eager=false",
            "engine.engine_args.gpu_memory_utilization=0.3",
        ],
        {},
    ),
}
DEFAULT_CONFIGS = "vllm,vllm-reserved0,hf,vllm-bf16,hf-fp32"

# GSM8K-like questions written for this benchmark (as in bench/hf_throughput.py), with numbers varied
# so that the 64 prompts differ.
TEMPLATES = [
    "A baker makes {a} muffins in the morning and twice as many in the afternoon. She sells {b} "
    "muffins. How many muffins does she have left?",
    "Tom reads {a} pages of a book every weekday and {b} pages on each day of the weekend. How many "
    "pages does he read in two weeks?",
    "A store sells pencils at $0.40 each. Maria buys {a} pencils and pays with a ${b} bill. How much "
    "change does she get?",
    "A train travels {a} miles per hour for 2 hours and then {b} miles per hour for 3 hours. How "
    "many miles does it travel in total?",
]


def questions(count: int) -> list[str]:
    return [TEMPLATES[i % len(TEMPLATES)].format(a=20 + i, b=40 + 2 * i) for i in range(count)]


def worker(name: str, args) -> dict:
    """One configuration in this (fresh) process: start the engine, run both cases."""
    overrides, _ = CONFIGS[name]
    overrides = list(overrides)
    if args.hf_batch_size and name.startswith("hf"):
        overrides.append(f"engine.batch_size={args.hf_batch_size}")
    from crescent.cli import compose

    cfg = compose(overrides)
    from crescent.models import resolve_model_path

    path = resolve_model_path(cfg.model, cfg.paths.models_dir)  # materialized by the parent

    t0 = time.perf_counter()
    import crescent.engines.base as base
    from crescent.engines import build_engine

    if name.startswith("vllm"):
        import vllm  # noqa: F401  (counted in start-up, like transformers for hf)
    else:
        import transformers  # noqa: F401
    import_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    engine = build_engine(cfg.engine, cfg.model, path)
    build_s = time.perf_counter() - t0

    batch_prompts = [engine.render(q + cfg.model.answer_suffix) for q in questions(args.prompts)]
    cases = [
        ("batch", batch_prompts, dict(n=1, temperature=0.7, top_p=0.95)),
        ("bait", [engine.render(cfg.model.bait_prompt)], dict(n=args.bait_n, **_bait(cfg))),
    ]
    rows = []
    for case, prompts, sampling in cases:
        spec = base.SamplingSpec(
            max_tokens=args.max_tokens, stop=tuple(cfg.model.stop), seed=args.seed, **sampling
        )
        t0 = time.perf_counter()
        gens = engine.generate(prompts, spec, desc=case)
        secs = time.perf_counter() - t0
        flat = [g for gs in gens for g in gs]
        tokens = sum(g.num_tokens for g in flat)
        rows.append(
            {
                "case": case,
                "prompts": len(prompts),
                "n": spec.n,
                "sequences": len(flat),
                "generated_tokens": tokens,
                "stop": sum(1 for g in flat if g.finish_reason == "stop"),
                "seconds": round(secs, 2),
                "tokens_per_s": round(tokens / secs, 1),
                "sampling": spec.key(),
            }
        )
    engine.close()
    return {
        "config": name,
        "overrides": overrides,
        "env": CONFIGS[name][1],
        "identity": dict(engine.identity),
        "import_seconds": round(import_s, 2),
        "build_seconds": round(build_s, 2),
        "startup_seconds": round(import_s + build_s, 2),
        "cases": rows,
    }


def _bait(cfg) -> dict:
    q = cfg.sampling.questions
    return {"temperature": float(q.temperature), "top_p": float(q.top_p)}


def busy_processes() -> list[str]:
    """Other processes using >= 20% of a core (lifetime average; `ps pcpu`): timings taken
    alongside them are inflated."""
    out = subprocess.run(
        ["ps", "-eo", "pid=,pcpu=,args="], capture_output=True, text=True, check=False
    ).stdout
    busy = []
    for line in out.splitlines():
        pid, pcpu, cmd = (line.split(None, 2) + ["", "", ""])[:3]
        if pid.isdigit() and int(pid) != os.getpid() and float(pcpu or 0) >= 20:
            busy.append(f"{pcpu}% {cmd[:120]}")
    return busy


# vLLM's log lines about its CPU set-up (threads, cores, preloads, KV cache)
LOG_KEYS = ("reserve_cpu_num", "OMP threads", "Torch threads", "LD_PRELOAD", "KV cache", "tcmalloc")


def engine_log(text: str) -> list[str]:
    lines = [x.strip() for x in text.splitlines() if any(k in x for k in LOG_KEYS)]
    return list(dict.fromkeys(x[-240:] for x in lines))[:12]


def markdown_table(results: list[dict]) -> str:
    lines = [
        "| config | dtype | start-up s | case | sequences | generated tokens | stop | seconds | tokens/s |",
        "|---|---|---:|---|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        if "error" in r:
            lines.append(f"| {r['config']} | | | error: {r['error']} | | | | | |")
            continue
        for c in r["cases"]:
            lines.append(
                f"| {r['config']} | {r['identity'].get('dtype', '')} | {r['startup_seconds']:.1f} "
                f"| {c['case']} (n={c['n']}) | {c['sequences']} | {c['generated_tokens']} "
                f"| {c['stop']} | {c['seconds']:.1f} | {c['tokens_per_s']:.1f} |"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--configs", default=DEFAULT_CONFIGS, help=f"from: {', '.join(CONFIGS)}")
    ap.add_argument("--prompts", type=int, default=64, help="prompts in the batch case (n=1)")
    ap.add_argument("--bait-n", type=int, default=16, help="samples of the bait prompt")
    ap.add_argument("--max-tokens", type=int, default=128, help="new tokens per sequence (cap)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--hf-batch-size", type=int, default=None, help="default: engine.batch_size")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "vllm_vs_hf.json")
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--worker-out", type=Path, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args.worker:
        args.worker_out.write_text(json.dumps(worker(args.worker, args)))
        return {}

    names = [c.strip() for c in args.configs.split(",") if c.strip()]
    unknown = [c for c in names if c not in CONFIGS]
    if unknown:
        ap.error(f"--configs: unknown {unknown}; choose from {', '.join(CONFIGS)}")

    from crescent.cli import compose
    from crescent.models import resolve_model_path

    cfg = compose([])
    path = resolve_model_path(cfg.model, cfg.paths.models_dir)  # materialize once, not timed
    print(f"model: {cfg.model.name} ({path}); python: {sys.executable}", flush=True)

    import torch

    passthrough = list(sys.argv[1:] if argv is None else argv)
    result = {
        "benchmark": "vllm_vs_hf",
        "date": dt.date.today().isoformat(),
        "command": " ".join(["python", "bench/vllm_vs_hf.py", *passthrough]),
        "python": sys.executable,
        "model": str(cfg.model.name),
        "model_path": path,
        "torch": torch.__version__,
        "vllm": _version("vllm-cpu") or _version("vllm"),
        "transformers": _version("transformers"),
        "cpu_count": os.cpu_count(),
        "machine": platform.processor() or platform.machine(),
        "results": [],
    }
    results = result["results"]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    for name in names:
        busy = busy_processes()
        load = os.getloadavg()[0]
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "result.json"
            env = {**os.environ, "CRESCENT_ROOT": str(ROOT), **CONFIGS[name][1]}
            env.setdefault("VLLM_NO_USAGE_STATS", "1")
            cmd = [
                sys.executable,
                __file__,
                *passthrough,
                "--worker",
                name,
                "--worker-out",
                str(out),
            ]
            t0 = time.perf_counter()
            proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
            wall = time.perf_counter() - t0
            if proc.returncode != 0 or not out.is_file():
                tail = (proc.stdout + proc.stderr)[-3000:]
                print(f"{name}: failed (exit {proc.returncode})\n{tail}", flush=True)
                results.append({"config": name, "error": f"exit {proc.returncode}"})
                continue
            r = json.loads(out.read_text())
        r.update(process_seconds=round(wall, 1), load_before=round(load, 2), busy_before=busy)
        r["log"] = engine_log(proc.stdout + proc.stderr)
        results.append(r)
        args.out.write_text(json.dumps(result, indent=2) + "\n")  # after each configuration
        cases = ", ".join(f"{c['case']} {c['tokens_per_s']:.1f} tok/s" for c in r["cases"])
        print(f"{name}: start-up {r['startup_seconds']:.1f}s, {cases}", flush=True)

    print()
    print(markdown_table(results))
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nwrote {args.out}")
    return result


def _version(dist: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return None


if __name__ == "__main__":
    main()
