"""Two runs that need the same cache entry at the same time (a sweep's jobs on a local parallel
launcher or SLURM): one computes, the other waits on the entry's file lock and reuses it."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from .cli_helpers import env_for, run_dir_of
from .conftest import ROOT

ANSWERS = [
    {"question": f"Tom has {i} apples and buys {i + 2} more. How many apples does he have?",
     "responses": [f"{i} + {i + 2} = {2 * i + 2}\n#### {2 * i + 2}"] * 2 + ["#### 1"]}
    for i in range(1, 9)
]  # fmt: skip


def test_two_runs_sharing_an_entry_compute_it_once(tmp_path):
    src = tmp_path / "answers.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in ANSWERS))
    args = ["stages=[vote]", f"vote.input={src}", "logger=none"]
    procs = [
        subprocess.Popen(
            [sys.executable, str(ROOT / "run.py"), *args, f"name=job{i}"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env_for(tmp_path),
            cwd=tmp_path,
        )  # fmt: skip
        for i in range(2)
    ]
    outs = [p.communicate(timeout=600) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1][-2000:] for o in outs]
    said = [("computing" if "vote: computing" in o[0] else "reused") for o in outs]
    assert sorted(said) == ["computing", "reused"], [o[0][-1500:] for o in outs]
    entries = list((tmp_path / "cache" / "stages" / "vote").glob("*/_COMPLETE.json"))
    assert len(entries) == 1
    qa = [(run_dir_of(subprocess.CompletedProcess([], 0, o[0], "")) / "vote" / "qa.jsonl").read_bytes()
          for o in outs]  # fmt: skip
    assert qa[0] == qa[1] and qa[0].count(b"\n") == len(ANSWERS)


def test_joblib_launcher_runs_two_jobs_at_once_on_one_entry(tmp_path):
    """A sweep on Hydra's local parallel launcher: 2 jobs at the same time, both needing the same
    vote entry (`name` is not hashed): the lock makes one compute it and the other reuse it."""
    pytest.importorskip("hydra_plugins.hydra_joblib_launcher")
    src = tmp_path / "answers.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in ANSWERS))
    args = ["-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "name=sweep0,sweep1",
            "stages=[vote]", f"vote.input={src}", "logger=none"]  # fmt: skip
    res = subprocess.run([sys.executable, str(ROOT / "run.py"), *args], capture_output=True,
                         text=True, env=env_for(tmp_path), cwd=tmp_path, timeout=600)  # fmt: skip
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    manifests = list((tmp_path / "runs").glob("sweep*/**/manifest.json"))
    assert len(manifests) == 2
    said = sorted(json.loads(m.read_text())["stages"]["vote"]["status"] for m in manifests)
    assert said == ["computed", "reused"]
    entries = list((tmp_path / "cache" / "stages" / "vote").glob("*/_COMPLETE.json"))
    assert len(entries) == 1
