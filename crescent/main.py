"""`run(cfg)`: validate, plan, execute the requested stages, print the summary, return the metric.

Called by run.py under Hydra; also usable from Python with a composed config (tests do this).
"""

from __future__ import annotations

import errno
import shutil
import sys
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from crescent.errors import CrescentError
from crescent.fsutil import atomic_write_text


def _run_dir(cfg: DictConfig) -> Path:
    try:
        from hydra.core.hydra_config import HydraConfig

        return Path(HydraConfig.get().runtime.output_dir)
    except Exception:  # not under Hydra
        from crescent.cli import slug

        return Path(cfg.paths.runs_dir) / str(cfg.name) / slug("")


def run(cfg: DictConfig, run_dir: str | Path | None = None) -> float | None:
    """Run the pipeline (`rounds` times for iterated self-improvement); returns the number of QA
    pairs of the last round (the metric a sweeper optimizes for now)."""
    from crescent.pipeline import build_plan
    from crescent.validate import validate

    run_dir = Path(run_dir) if run_dir else _run_dir(cfg)
    try:
        validate(cfg)
        plan = build_plan(cfg)
    except CrescentError as e:
        _remove_if_only_hydra_files(run_dir)
        print(f"error: {e}", file=sys.stderr, flush=True)
        sys.exit(2)
    if int(cfg.rounds) == 1:
        manifest = _run_once(cfg, plan, run_dir)
    else:
        manifest = _run_rounds(cfg, plan, run_dir)
    vote = manifest["stages"].get("vote")
    return float(vote["metrics"]["qa_pairs"]) if vote else None


def _run_once(cfg: DictConfig, plan, run_dir: Path, before: Path | None = None) -> dict:
    """Execute a plan into `run_dir`: manifest, summary table, before/after report."""
    from crescent.evaluation.report import write_report
    from crescent.pipeline import execute
    from crescent.summary import summary_table

    run_dir.mkdir(parents=True, exist_ok=True)
    print(f"[crescent] run directory: {run_dir}", flush=True)
    atomic_write_text(run_dir / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))
    try:
        manifest = execute(cfg, plan, run_dir)
    except CrescentError as e:
        print(f"error: {e}", file=sys.stderr, flush=True)
        sys.exit(2)
    except OSError as e:
        if e.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        print(f"error: {e.filename or cfg.paths.cache_dir}: disk full ({e.strerror}); nothing "
              "half-written was kept: free space and run the same command to resume",
              file=sys.stderr, flush=True)  # fmt: skip
        sys.exit(1)
    table = summary_table(manifest)
    atomic_write_text(run_dir / "summary.md", table + "\n")
    report = write_report(cfg, manifest, run_dir, before)  # before/after table (eval stages only)
    if report:
        table += "\n\n" + report
    print("\n" + table + f"\n\n[crescent] run directory: {run_dir}", flush=True)
    return manifest


def _run_rounds(cfg: DictConfig, plan, run_dir: Path) -> dict:
    """Iterated self-improvement (crescent/rounds.py): round t+1 uses round t's trained model;
    at the end, the per-round report (crescent.report) of the whole run."""
    from crescent import report, rounds
    from crescent.fsutil import atomic_write_json
    from crescent.pipeline import build_plan

    n = int(cfg.rounds)
    run_dir.mkdir(parents=True, exist_ok=True)
    marker = {"rounds": n, "dirs": [rounds.round_dir(run_dir, t).name for t in range(1, n + 1)]}
    atomic_write_json(run_dir / rounds.ROUNDS_MARKER, marker)
    trained, before, manifest = None, None, {}
    for t in range(1, n + 1):
        print(f"[crescent] ===== round {t} of {n} =====", flush=True)
        rcfg = rounds.round_config(cfg, t, trained)
        rplan = plan if t == 1 else build_plan(rcfg)
        manifest = _run_once(rcfg, rplan, rounds.round_dir(run_dir, t), before)
        trained = Path(manifest["stages"]["train"]["dir"])
        scored = manifest["stages"].get("eval_trained")
        before = Path(scored["dir"]) if scored else None
    result = report.build(run_dir, run_dir / "report")
    print("\n" + result["rounds_markdown"] + f"\n[crescent] rounds report: {run_dir / 'report'}",
          flush=True)  # fmt: skip
    return manifest


def _remove_if_only_hydra_files(run_dir: Path) -> None:
    """A run rejected before any work leaves no folder behind (Hydra makes one before we start)."""
    if not run_dir.is_dir() or (run_dir / "manifest.json").exists():
        return
    if all(p.name == ".hydra" or p.suffix == ".log" for p in run_dir.iterdir()):
        shutil.rmtree(run_dir, ignore_errors=True)
        for parent in (run_dir.parent, run_dir.parent.parent):
            try:
                parent.rmdir()  # only if empty
            except OSError:
                break
