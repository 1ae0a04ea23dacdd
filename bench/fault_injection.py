"""Fault injection: SIGKILL the pipeline at a random moment inside a stage, re-run the same command,
and compare with an uninterrupted run. Prints a tally per stage: lost, duplicated, differing.

One reference run of a tiny loop on the embedded model (debug=tiny sizes: questions, answers, vote,
train, eval_trained) gives every stage's outputs and compute time. Then, per stage and trial: a
fresh cache holding the reference's upstream entries, the loop up to that stage (so only it runs)
killed at a uniformly random time within the stage's reference compute time (measured from the
moment the stage prints `computing`; when a stage finishes before its kill, e.g. because the
reference ran on a busier machine, later trials draw from the shorter time it took), then the same
command again to completion. Trials continue until `--trials` kills landed inside the stage (at most
3x as many trials). A trial is:
- `differing` when any compared output file differs from the reference's bytes,
- `lost` when an id of the reference's output is missing, `duplicated` when an id appears twice,
- `finished` when the kill came after the stage had already completed (still compared).

Run:  python bench/fault_injection.py --trials 20             # about 1 min per trial on 2 CPU cores
      python bench/fault_injection.py --trials 2 --stages answers,train
Writes bench/results/fault_injection.json (--out; every trial, saved as it goes) and prints the tally.
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STAGES = ["questions", "answers", "vote", "train", "eval_trained"]
ARGS = ["debug=tiny", "logger=none", "questions.target=6", "questions.max_calls=2",
        "sampling.questions.n=16", "sampling.questions.max_tokens=80", "answers.n=1", "voting.k=1",
        "sampling.answers.max_tokens=256", "train.trainer.max_steps=4", "eval.tasks=[gsm8k]",
        "eval.shots=[0]", "eval.limit=4", "eval.max_gen_toks=48"]  # fmt: skip
# per stage: files compared (byte for byte, except wall-clock fields), and the JSONL whose ids
# must be exactly the reference's
COMPARED = {
    "questions": (["questions.jsonl", "rejected.jsonl", "calls.jsonl"], "questions.jsonl"),
    "answers": (["answers.jsonl"], "answers.jsonl"),
    "vote": (["qa.jsonl", "rejected.jsonl", "contamination.jsonl"], "qa.jsonl"),
    "train": (["train_log.jsonl", "adapter/adapter_model.safetensors"], "train_log.jsonl"),
    "eval_trained": (["results.json"], None),
}
TIMING = {"seconds", "tokens_per_s", "finished_at"}


def content(path: Path) -> bytes | object:
    """What must not change: the bytes, or for timed records the JSON without wall-clock fields."""
    if path.name == "train_log.jsonl":
        return [{k: v for k, v in json.loads(x).items() if k not in TIMING}
                for x in path.read_text().splitlines() if x.strip()]  # fmt: skip
    if path.name == "results.json":
        return json.loads(path.read_text())["cells"]
    return path.read_bytes()


def env_for(work: Path) -> dict:
    models = os.environ.get(
        "CRESCENT_MODELS", str(ROOT / ".cache" / "models")
    )  # shared: built once
    return {**os.environ, "CRESCENT_CACHE": str(work / "cache"), "CRESCENT_RUNS": str(work / "runs"),
            "CRESCENT_MODELS": models, "PYTHONUNBUFFERED": "1"}  # fmt: skip


def run(work: Path, upto: str, kill_stage: str | None = None, after_s: float = 0.0):
    """Run the loop up to stage `upto`; with `kill_stage`, SIGKILL it `after_s` seconds after that
    stage starts computing. Returns (exit code, stdout, whether the kill landed inside the stage,
    the stage's seconds when it finished before the kill, else None)."""
    stages = f"stages=[{','.join(STAGES[: STAGES.index(upto) + 1])}]"
    proc = subprocess.Popen([sys.executable, str(ROOT / "run.py"), *ARGS, stages], env=env_for(work),
                            stdout=subprocess.PIPE, stderr=open(work / "stderr.log", "w"),
                            text=True, cwd=work)  # fmt: skip
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=lambda: [lines.put(x) for x in proc.stdout], daemon=True).start()
    out, started, done, killed, took = [], None, False, False, None
    try:
        while proc.poll() is None or not lines.empty():
            try:
                line = lines.get(timeout=0.02)
            except queue.Empty:
                line = None
            if line:
                out.append(line)
                if kill_stage and started is None and f"{kill_stage}: computing" in line:
                    started = time.time()
                elif (
                    started is not None
                    and not done
                    and (": computing ->" in line or "run directory" in line)
                ):
                    # the stage finished: a later stage started, or the run ended
                    done, took = True, time.time() - started
            if (
                started is not None
                and not killed
                and proc.poll() is None
                and time.time() - started >= after_s
            ):
                proc.send_signal(signal.SIGKILL)
                killed = not done  # a kill that landed after the stage finished does not count
    finally:  # a stopped bench leaves no run behind
        if proc.poll() is None:
            proc.kill()
    proc.wait()
    return proc.returncode, "".join(out), killed, took


def entries(stdout: str) -> dict[str, Path]:
    """stage -> cache entry dir, from the `<stage>: computing|reused -> DIR` lines."""
    found = {}
    for line in stdout.splitlines():
        for s in STAGES:
            for word in (f"{s}: computing -> ", f"{s}: reused "):
                if line.startswith("[crescent] " + word):
                    found[s] = Path(line.split(word, 1)[1].strip())
    return found


def ids(path: Path) -> list:
    rows = [json.loads(x) for x in path.read_text().splitlines() if x.strip()]
    return [r.get("id", r.get("step")) for r in rows]


def compare(stage: str, ref: Path, got: Path) -> dict:
    files, keyed = COMPARED[stage]
    differing = [f for f in files if content(ref / f) != content(got / f)]
    res = {"differing": differing, "lost": 0, "duplicated": 0}
    if keyed:
        want, have = ids(ref / keyed), ids(got / keyed)
        res["lost"] = len(set(want) - set(have))
        res["duplicated"] = len(have) - len(set(have))
    return res


def save(trials: list[dict], secs: dict, out: Path) -> None:
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({"args": ARGS, "reference_seconds": secs, "trials": trials},
                              indent=2) + "\n")  # fmt: skip


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--trials", type=int, default=20,
                    help="kills inside each stage (trials continue, at most 3x, until that many landed)")  # fmt: skip
    ap.add_argument("--stages", default=",".join(STAGES))
    ap.add_argument("--seed", type=int, default=0, help="seed of the kill times")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "fault_injection.json")
    args = ap.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))  # stopping the bench stops its run too
    rng = random.Random(args.seed)
    base = Path(tempfile.mkdtemp(prefix="crescent-faults-"))
    print(f"reference run in {base / 'ref'} ...", flush=True)
    (base / "ref").mkdir()
    code, out, _, _ = run(base / "ref", STAGES[-1])
    if code != 0:
        err = (base / "ref" / "stderr.log").read_text()
        sys.exit(f"reference run failed (exit {code}):\n{out[-2000:]}\n{err[-2000:]}")
    ref = entries(out)
    secs = {s: json.loads((ref[s] / "_COMPLETE.json").read_text())["seconds"] for s in STAGES}
    trials = []
    for stage in args.stages.split(","):
        upstream = STAGES[: STAGES.index(stage)]
        window, kills, t = secs[stage], 0, 0
        while kills < args.trials and t < 3 * args.trials:
            work = base / f"{stage}-{t}"
            work.mkdir()
            for s in upstream:  # the reference's upstream entries: only `stage` onwards runs
                shutil.copytree(ref[s], work / "cache" / "stages" / s / ref[s].name)
            after = rng.uniform(0, window)
            _, _, killed, took = run(work, stage, stage, after)
            if not killed and took:  # the stage ran faster than in the reference: a tighter window
                window = min(window, took)
            kills += killed
            code, out2, _, _ = run(
                work, stage
            )  # the same command again (up to the stage under test)
            got = entries(out2)
            res = {"stage": stage, "trial": t, "kill_after_s": round(after, 2), "killed": killed,
                   "exit": code}  # fmt: skip
            res.update(compare(stage, ref[stage], got[stage]) if code == 0 else
                       {"differing": ["(re-run failed)"], "lost": -1, "duplicated": -1})  # fmt: skip
            trials.append(res)
            print(json.dumps(res), flush=True)
            save(
                trials, secs, args.out
            )  # after every trial: a stopped bench keeps what it measured
            shutil.rmtree(work, ignore_errors=True)
            t += 1
    print("\n| stage | trials | killed mid-stage | lost | duplicated | differing | re-run failed |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for stage in args.stages.split(","):
        ts = [t for t in trials if t["stage"] == stage]
        print(f"| {stage} | {len(ts)} | {sum(t['killed'] for t in ts)} | "
              f"{sum(max(0, t['lost']) for t in ts)} | {sum(max(0, t['duplicated']) for t in ts)} | "
              f"{sum(bool(t['differing']) for t in ts)} | {sum(t['exit'] != 0 for t in ts)} |")  # fmt: skip
    shutil.rmtree(base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
