"""Training with several processes on one machine (DDP, FSDP, DeepSpeed): the stage's own process is
rank 0 and starts ranks 1..N-1 itself, the way torchrun would.

    python run.py train/strategy=ddp_cpu stages=[train] train.input=qa.jsonl  # 2 CPU processes (gloo)
    python run.py model=llama3 train/strategy=ddp      # one process per GPU (also fsdp, deepspeed_stage_2)

Why not Lightning's own launchers:
- `ddp` (its subprocess-script launcher) re-executes the command line: `python run.py ...` again
  (or pytest, or any script that called `crescent.main.run`). Each copy would run the whole
  pipeline, wait forever on the lock of the train entry that rank 0 holds (a deadlock, since
  rank 0 waits for it in the process group's rendezvous), and would write the stage outputs and
  the cache marker again; under Hydra multirun it is pointed at the wrong run folder.
- `ddp_spawn` pickles the Trainer and the module (the whole base model) into each child and trains
  only in the children: the stage's W&B run, the per-batch log and the trained weights end up in
  other processes. `ddp_fork` cannot start once CUDA is initialized (an earlier GPU stage in this
  process) and forks a process that holds threads. Both are rejected by crescent/validate.py.
Here rank 0 writes a job file (the resolved config, the QA file, the model folders, resume or not)
and starts `python -m crescent.training.distributed JOB` with LOCAL_RANK=r, WORLD_SIZE, NODE_RANK,
MASTER_ADDR and MASTER_PORT, and sets the same variables (LOCAL_RANK=0) for itself: Lightning's
LightningEnvironment then takes the processes as "created externally" and launches none, for
every strategy it would launch by subprocess (ddp, fsdp, deepspeed). Each worker rebuilds the same
data and model and makes the same calls (crescent/training/fit.py); it writes nothing: rank 0 writes
the outputs, the cache marker and W&B. A worker that dies stops the run with one line (rank 0
would wait for it in a collective); a worker whose parent died exits. Afterwards rank 0 waits for
the workers, destroys the process group and restores its environment and thread count, so the
stages after it run as before.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

# what rank 0 sets for itself (and restores afterwards); Lightning adds OMP_NUM_THREADS
ENV_KEYS = ("MASTER_ADDR", "MASTER_PORT", "NODE_RANK", "LOCAL_RANK", "WORLD_SIZE",
            "OMP_NUM_THREADS")  # fmt: skip
# Lightning strategies that start their processes by spawning / forking this one (see above)
SPAWNING = ("ddp_spawn", "ddp_fork", "ddp_notebook")
SINGLE = ("single_device", "single_xla", "single_tpu")  # one device, whatever `devices` says


def _visible(accelerator) -> int:
    """Devices `devices: auto` / -1 means on this machine."""
    if str(accelerator) == "cpu":
        return 1  # Lightning: `auto` on CPU is one process
    import torch

    return max(1, torch.cuda.device_count()) if str(accelerator) in ("auto", "gpu", "cuda") else 1


def process_count(trainer_cfg) -> int:
    """How many processes train: `devices` (an int, a list of device ids, "0,1", or "auto" / -1 =
    every visible device of the accelerator) times `num_nodes`; 1 for single-device strategies."""
    from omegaconf import OmegaConf

    strategy = trainer_cfg.get("strategy", "auto")
    target = strategy.get("_target_", "") if hasattr(strategy, "get") else ""
    if strategy in SINGLE or str(target).endswith("SingleDeviceStrategy"):
        return 1
    devices = trainer_cfg.get("devices", "auto")
    if devices is None or str(devices).strip() in ("auto", "-1"):
        n = _visible(trainer_cfg.get("accelerator", "auto"))
    elif isinstance(devices, (list, tuple)) or OmegaConf.is_list(devices):
        n = len(devices)
    elif isinstance(devices, str) and "," in devices:
        n = len([d for d in devices.split(",") if d.strip()])
    else:
        n = int(devices)
    return max(1, n) * int(trainer_cfg.get("num_nodes", 1) or 1)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _stop(procs: list[subprocess.Popen], grace: float = 10.0) -> None:
    for p in procs:
        if p.poll() is None:
            p.terminate()
    for p in procs:
        try:
            p.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def _report_dead(procs: list[subprocess.Popen], wait: float = 0.0) -> bool:
    """One line per worker that died (waiting up to `wait` s for one to be seen); any?"""
    deadline = time.monotonic() + wait
    while True:
        dead = [(r, p.poll()) for r, p in enumerate(procs, 1) if p.poll() not in (None, 0)]
        if dead or time.monotonic() >= deadline:
            break
        time.sleep(0.2)
    for rank, code in dead:
        print(f"error: train: process {rank} of {len(procs) + 1} exited with code {code} (its "
              "messages are above); the run stops, the same command resumes from the last "
              "checkpoint", file=sys.stderr, flush=True)  # fmt: skip
    return bool(dead)


class _Watch(threading.Thread):
    """Ends the run when a worker dies before rank 0 notices: a worker that dies before joining
    the process group leaves rank 0 in the rendezvous (in C++, for up to 30 minutes). One that
    dies later breaks rank 0's next collective (gloo: "Connection closed by peer"), and
    `processes` names it. The cache entry lock goes with the process; the same command resumes
    from the last checkpoint."""

    def __init__(self, procs: list[subprocess.Popen]):
        super().__init__(name="crescent-train-workers", daemon=True)
        self.procs, self.done = procs, threading.Event()

    def run(self) -> None:
        while not self.done.wait(1.0):
            if any(p.poll() not in (None, 0) for p in self.procs) and not self.done.is_set():
                _report_dead(self.procs)
                _stop(self.procs, grace=5.0)
                os._exit(1)

    def stop(self) -> None:
        self.done.set()
        self.join()


@contextmanager
def processes(n: int, job: dict, job_path: Path) -> Iterator[None]:
    """Make this process rank 0 of `n` and start ranks 1..n-1 on `job` (written to `job_path`); on
    exit wait for them (stop them on an error) and undo what was set here. n == 1: nothing."""
    if n <= 1:
        yield
        return
    if "LOCAL_RANK" in os.environ:
        from crescent.errors import ConfigError

        raise ConfigError(
            f"train.trainer.devices: {n} processes requested, but this process was itself started "
            f"as one of several (LOCAL_RANK={os.environ['LOCAL_RANK']}: torchrun or a cluster "
            "launcher); run `python run.py` once: the train stage starts its processes itself"
        )
    import torch

    from crescent.fsutil import atomic_write_json

    saved = {k: os.environ.get(k) for k in ENV_KEYS}
    threads = torch.get_num_threads()
    common = {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(_free_port()), "NODE_RANK": "0",
              "WORLD_SIZE": str(n)}  # fmt: skip
    atomic_write_json(job_path, {**job, "parent_pid": os.getpid()})
    package_root = str(Path(__file__).resolve().parents[2])  # importable from any working dir
    path = os.environ.get("PYTHONPATH")
    procs: list[subprocess.Popen] = []
    watch, ok, codes = None, False, []
    try:
        os.environ.update(common, LOCAL_RANK="0")
        for rank in range(1, n):
            env = {**os.environ, "LOCAL_RANK": str(rank),
                   "PYTHONPATH": package_root + (os.pathsep + path if path else "")}  # fmt: skip
            cmd = [sys.executable, "-m", "crescent.training.distributed", str(job_path)]
            procs.append(subprocess.Popen(cmd, env=env))
        print(f"[crescent] train: {n} processes (this one is rank 0; the others: pids "
              f"{', '.join(str(p.pid) for p in procs)})", flush=True)  # fmt: skip
        watch = _Watch(procs)
        watch.start()
        yield
        ok = True
    except BaseException:  # e.g. gloo's "Connection closed by peer" when a worker died: say which
        if watch is not None:
            watch.stop()
        _report_dead(procs, wait=2.0)
        raise
    finally:
        if watch is not None:
            watch.stop()
        if ok:  # the workers are past their last collective: they end on their own
            for p in procs:
                try:
                    codes.append(p.wait(timeout=300))
                except subprocess.TimeoutExpired:
                    codes.append(None)
        _stop(procs)
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        torch.set_num_threads(threads)
        job_path.unlink(missing_ok=True)
    bad = [(r, c) for r, c in enumerate(codes, 1) if c != 0]
    if bad:
        raise RuntimeError(
            "train: worker process(es) did not finish cleanly: "
            + ", ".join(
                f"rank {r}: {'still running' if c is None else f'exit {c}'}" for r, c in bad
            )
        )


def _exit_with(parent: int) -> None:
    """A worker does not outlive rank 0 (killed or crashed): it would wait in a collective."""

    def check() -> None:
        while True:
            threading.Event().wait(1.0)
            if os.getppid() != parent:
                os._exit(1)

    threading.Thread(target=check, name="crescent-parent-watch", daemon=True).start()


def worker(job_path: str) -> None:
    """Rank LOCAL_RANK of a multi-process training run started by `processes`."""
    from omegaconf import OmegaConf
    from transformers import AutoTokenizer

    from crescent.records import read_jsonl
    from crescent.training.fit import prepare, train
    from crescent.training.students import TrainedModel

    job = json.loads(Path(job_path).read_text())
    _exit_with(int(job["parent_pid"]))
    signal.signal(signal.SIGTERM, lambda *_: os._exit(143))  # rank 0 stopping us: no cleanup
    cfg = OmegaConf.create(job["cfg"])
    target = TrainedModel(job["model"]["name"], job["model"]["path"],
                          OmegaConf.create(job["model"]["cfg"]), job["model"]["note"])  # fmt: skip
    trust = bool(target.cfg.get("trust_remote_code", False))
    tok = AutoTokenizer.from_pretrained(target.path, trust_remote_code=trust)
    dm, module = prepare(cfg, read_jsonl(job["rows"]), target, tok, job["teacher_path"])
    train(cfg, dm, module, Path(job["entry_dir"]), tracker=None, resume=bool(job["resume"]))


if __name__ == "__main__":
    worker(sys.argv[1])
