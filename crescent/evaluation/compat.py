"""Compatibility proof: re-score a finished eval stage with the `lm_eval` command line and compare.

Takes an `eval_base` / `eval_trained` folder of a run (its results.json, tasks/ and samples/),
runs `lm_eval run` with the same model, model args, task YAMLs, shots, limit, batch size and
generation cap, and compares every score cell (to the last digit) and every generation:

    python -m crescent.evaluation.compat runs/demo/default/eval_base --task gsm8k --shots 5

Prints a table (metric, filter, ours, lm_eval CLI, equal) and exits 1 when anything differs.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path


def cli_command(doc: dict, entry: Path, task: str, shots: int, limit, out: Path) -> list[str]:
    """The `lm_eval run` command that reproduces one (task, shots) cell of a results.json."""
    from crescent.evaluation.registry import TASKS

    args = ",".join(f"{k}={v}" for k, v in doc["model_args"].items())
    cmd = [sys.executable, "-m", "lm_eval", "run", "--model", doc["backend"], "--model_args", args,
           "--tasks", TASKS[task].lm_eval_name, "--include_path", str(entry / "tasks"),
           "--num_fewshot", str(shots), "--batch_size", str(doc["batch_size"]),
           "--output_path", str(out), "--log_samples"]  # fmt: skip
    if limit is not None:
        cmd += ["--limit", str(limit)]
    if doc.get("gen_kwargs"):
        cmd += ["--gen_kwargs", ",".join(f"{k}={v}" for k, v in doc["gen_kwargs"].items())]
    if doc.get("apply_chat_template"):
        cmd += ["--apply_chat_template", "--fewshot_as_multiturn"]
    if doc["backend"] == "hf":
        cmd += ["--device", "cuda" if _cuda() else "cpu"]
    return cmd


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def compare(entry: Path, task: str, shots: int, out: Path | None = None) -> dict:
    """Run the CLI for one cell of `entry` and compare. Returns {rows, generations, same, n}."""
    from crescent.evaluation.registry import TASKS

    entry = Path(entry).resolve()
    doc = json.loads((entry / "results.json").read_text())
    run = next((r for r in doc["runs"] if (r["task"], r["shots"]) == (task, shots)), None)
    if run is None:
        cells = ", ".join(f"{r['task']}/{r['shots']}shot" for r in doc["runs"])
        raise SystemExit(
            f"error: {entry}/results.json has no {task} {shots}-shot run (it has: {cells})"
        )
    out = Path(out or tempfile.mkdtemp(prefix="lm_eval_cli_"))
    cmd = cli_command(doc, entry, task, shots, run["limit"], out)
    print("[crescent] " + " ".join(cmd), flush=True)
    res = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ})
    if res.returncode != 0:
        raise SystemExit(f"error: lm_eval exited with {res.returncode}:\n{res.stderr[-3000:]}")
    lm_task = TASKS[task].lm_eval_name
    cli = json.loads(next(out.rglob("results_*.json")).read_text())
    theirs = cli["results"][lm_task]
    rows = []
    for c in doc["cells"]:
        if (c["task"], c["shots"]) != (task, shots):
            continue
        key = f"{c['metric']},{c['filter']}"
        if key in theirs:
            rows.append({"metric": c["metric"], "filter": c["filter"], "ours": c["value"],
                         "cli": theirs[key], "equal": c["value"] == theirs[key]})  # fmt: skip
    cli_rows = [
        json.loads(x)
        for x in next(out.rglob(f"samples_{lm_task}_*.jsonl")).read_text().splitlines()
    ]
    our_rows = [
        json.loads(x)
        for x in (entry / "samples" / f"{task}-{shots}shot.jsonl").read_text().splitlines()
    ]
    key = lambda r: (r["doc_id"], r["filter"])  # noqa: E731
    a, b = {key(r): r["resps"] for r in our_rows}, {key(r): r["resps"] for r in cli_rows}
    same = sum(a.get(k) == v for k, v in b.items())
    return {"rows": rows, "generations": len(b), "same": same, "n_shot": cli["n-shot"][lm_task],
            "equal": bool(rows) and all(r["equal"] for r in rows) and same == len(b) == len(a)}  # fmt: skip


def table(result: dict) -> str:
    lines = ["| metric | filter | ours | lm_eval CLI | equal |", "|---|---|---:|---:|---|"]
    for r in result["rows"]:
        lines.append(
            f"| {r['metric']} | {r['filter']} | {r['ours']!r} | {r['cli']!r} | {r['equal']} |"
        )
    lines.append(f"\nidentical generations: {result['same']} of {result['generations']}; "
                 f"CLI n-shot: {result['n_shot']}")  # fmt: skip
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("entry", type=Path, help="an eval_base / eval_trained folder of a run")
    ap.add_argument("--task", default="gsm8k")
    ap.add_argument("--shots", type=int, default=5)
    ap.add_argument(
        "--out", type=Path, default=None, help="where lm_eval writes (default: a temp dir)"
    )
    a = ap.parse_args(argv)
    result = compare(a.entry, a.task, a.shots, a.out)
    print(table(result), flush=True)
    return 0 if result["equal"] else 1


if __name__ == "__main__":
    sys.exit(main())
