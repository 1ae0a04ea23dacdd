"""Running `run.py` as a researcher would, in an isolated cache and runs folder (shared by tests)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from .conftest import ROOT


def env_for(tmp: Path, extra: dict | None = None) -> dict:
    return {**os.environ, "CRESCENT_CACHE": str(tmp / "cache"), "CRESCENT_RUNS": str(tmp / "runs"),
            "PYTHONUNBUFFERED": "1", **(extra or {})}  # fmt: skip


def run_cli(args, tmp: Path, timeout=300, env_extra=None) -> subprocess.CompletedProcess:
    """The CLI's result, whatever its exit status (run from inside `tmp`)."""
    tmp.mkdir(parents=True, exist_ok=True)
    return subprocess.run([sys.executable, str(ROOT / "run.py"), *args], capture_output=True,
                          text=True, env=env_for(tmp, env_extra), timeout=timeout, cwd=tmp)  # fmt: skip


def cli(args, tmp: Path, timeout=1800) -> subprocess.CompletedProcess:
    """The CLI's result; it must succeed."""
    res = run_cli(args, tmp, timeout=timeout)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    return res


def run_dir_of(res: subprocess.CompletedProcess) -> Path:
    line = [x for x in res.stdout.splitlines() if "run directory:" in x][-1]
    return Path(line.split("run directory:", 1)[1].strip())


def kill_when(args, tmp: Path, pattern: str, timeout=1800) -> None:
    """Start the CLI and SIGKILL it as soon as a file matching `pattern` appears in the cache."""
    proc = subprocess.Popen([sys.executable, str(ROOT / "run.py"), *args], env=env_for(tmp),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    deadline = time.time() + timeout
    try:
        while time.time() < deadline:
            if list((tmp / "cache").glob(pattern)):
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait()
                return
            assert proc.poll() is None, "the run finished before the kill point"
            time.sleep(0.05)
        raise AssertionError(f"{pattern} never appeared")
    finally:
        if proc.poll() is None:
            proc.kill()


def assert_one_line_error(res, tmp: Path, names: str, allowed: str, plan_time: bool = True):
    """Bad input: exit 2, one `error: ` line naming the key/file and what is allowed, no traceback.
    Caught at plan time (`plan_time`): stderr holds only that line, and nothing is left in the
    cache and no run folder. Caught inside a stage (e.g. a model's layer names): no checkpoint."""
    assert res.returncode == 2, res.stdout[-2000:] + res.stderr[-2000:]
    lines = [x for x in res.stderr.splitlines() if x.strip()]
    errors = [x for x in lines if x.startswith("error: ")]
    assert len(errors) == 1 and (not plan_time or len(lines) == 1), res.stderr
    assert names in errors[0] and allowed in errors[0], errors[0]
    assert "Traceback" not in res.stdout + res.stderr
    if plan_time:
        assert not (tmp / "cache").exists(), "a rejected run must leave nothing in the cache"
        assert not (tmp / "runs").exists(), "a rejected run must leave no run folder"
    else:
        assert not list((tmp / "cache").glob("stages/*/*/checkpoints")), "training started"
