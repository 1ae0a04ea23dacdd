"""The stage table's runner: plan (fingerprints, inputs) -> execute or reuse each stage -> manifest.

A plan is made before any model loads: it resolves every stage's inputs (an upstream stage's cache
entry or a user's file given as `<stage>.input=PATH`, read and checked now), computes every
fingerprint, and fails with one line if a needed upstream output does not exist.
Executing a stage takes its entry's lock, reuses a complete entry or runs the stage (which resumes
from its finished chunks), then writes the completion marker last. The run directory gets a
`manifest.json` (rewritten after every stage) and a link per stage to its cache entry.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from crescent.cache import CacheEntry, fingerprint
from crescent.errors import ConfigError
from crescent.fsutil import atomic_write_json, sha256_file


@dataclass(frozen=True)
class Stage:
    """One row of the stage table (see crescent/stages/__init__.py)."""

    name: str
    run: Callable  # run(ctx: StageContext) -> metrics dict; writes `writes` into ctx.entry.dir
    hashed: Callable[[DictConfig], dict]  # the config subset that determines the outputs
    version: int = 1  # bump when the stage's logic changes its outputs
    reads: tuple[str, ...] = ()  # files from upstream (or from the user's `<name>.input`)
    writes: tuple[str, ...] = ()
    input_schema: dict | None = None  # schema of a user's `<name>.input` file
    input_required: bool = False  # only runs on a user's file (stage `dedup`)
    check_input: Callable | None = None  # extra checks of a user's rows: (cfg, rows, key) -> None
    # a user's input that is not a JSONL file (e.g. an adapter folder), under another config key:
    # open_input(cfg, path, label) -> ({read file name: path}, content digest); checked at plan time
    user_key: str | None = None  # config key of the user's input (default `<name>.input`)
    open_input: Callable | None = None
    check_config: Callable | None = None  # plan-time checks of the stage's config: (cfg) -> None

    @property
    def input_key(self) -> str:
        return self.user_key or f"{self.name}.input"


@dataclass
class PlannedStage:
    stage: Stage
    fingerprint: str
    entry: CacheEntry
    inputs: dict[str, Path]
    upstream: dict[str, str]
    execute: bool = True


class Resources:
    """Heavy objects shared by the stages of one process, loaded on first use."""

    def __init__(self, cfg: DictConfig):
        self.cfg = cfg
        self._model_path = None
        self._engine = None
        self._embedder = None

    def model_path(self) -> str:
        if self._model_path is None:
            from crescent.models import resolve_model_path

            self._model_path = resolve_model_path(self.cfg.model, self.cfg.paths.models_dir)
        return self._model_path

    def engine(self):
        if self._engine is None:
            from crescent.engines import build_engine

            self._engine = build_engine(self.cfg.engine, self.cfg.model, self.model_path())
        return self._engine

    def embedder(self):
        if self._embedder is None:
            from crescent.embedding import Embedder

            d = self.cfg.dedup
            self._embedder = Embedder(d.embedder, int(d.embed_batch_size))
        return self._embedder

    def close(self) -> None:
        if self._engine is not None:
            self._engine.close()
        self._engine = self._embedder = None


@dataclass
class StageContext:
    cfg: DictConfig
    planned: PlannedStage
    resources: Resources
    run_dir: Path
    tracker: object = None
    notes: list[str] = field(default_factory=list)

    @property
    def entry(self) -> CacheEntry:
        return self.planned.entry

    def read(self, name: str) -> list[dict]:
        from crescent.records import read_jsonl

        return read_jsonl(self.planned.inputs[name])

    def warn(self, msg: str) -> None:
        print(f"[crescent] warning: {msg}", flush=True)
        self.notes.append(msg)


def _stage_table() -> dict[str, Stage]:
    from crescent.stages import STAGES

    return STAGES


def _producer_of(fname: str, table: dict[str, Stage], reader: Stage) -> Stage:
    for st in table.values():
        if fname in st.writes and not st.input_required:
            return st
    raise ConfigError(
        f"stage '{reader.name}' needs {fname}, which no stage writes: give {reader.input_key}=PATH"
    )


def _plan_stage(
    cfg, st: Stage, produced: dict[str, PlannedStage], table, implicit=False
) -> PlannedStage:
    inputs: dict[str, Path] = {}
    upstream: dict[str, str] = {}
    user_file = OmegaConf.select(cfg, st.input_key, default=None)
    if user_file and not implicit and st.open_input:
        path = Path(str(user_file)).expanduser().resolve()
        opened, digest = st.open_input(cfg, path, f"{st.input_key}={user_file}")
        inputs.update(opened)
        upstream["input"] = digest
    elif user_file and not implicit:
        from crescent.records import read_jsonl

        path = Path(str(user_file)).expanduser().resolve()
        rows = read_jsonl(path, st.input_schema, key=st.input_key)
        if st.check_input:
            st.check_input(cfg, rows, f"{st.input_key}={user_file}")
        inputs[st.reads[0]] = path
        upstream["input"] = sha256_file(path)
    elif st.input_required:
        raise ConfigError(
            f"stages=[{st.name}] needs {st.input_key}=PATH (a JSONL file of questions)"
        )
    else:
        for fname in st.reads:
            prod = produced.get(fname)
            if prod is None:
                prod = _plan_stage(
                    cfg, _producer_of(fname, table, st), produced, table, implicit=True
                )
                prod.execute = False
                if not implicit and not prod.entry.is_complete():
                    raise ConfigError(
                        f"stage '{st.name}' needs {fname} from stage '{prod.stage.name}', which has not "
                        f"been computed for this config: run stages=[{prod.stage.name},{st.name}] "
                        f"or give {st.input_key}=PATH"
                    )
            inputs[fname] = prod.entry.path(fname)
            upstream[prod.stage.name] = prod.fingerprint
    if st.check_config and not implicit:  # after the inputs: a missing input is named first
        st.check_config(cfg)
    fp = fingerprint(st.name, st.version, st.hashed(cfg), upstream)
    return PlannedStage(st, fp, CacheEntry(cfg.paths.cache_dir, st.name, fp), inputs, upstream)


def build_plan(cfg: DictConfig) -> list[PlannedStage]:
    """Resolve inputs and fingerprints of the requested stages (no model is loaded)."""
    table = _stage_table()
    produced: dict[str, PlannedStage] = {}
    plan = []
    for name in cfg.stages:
        ps = _plan_stage(cfg, table[name], produced, table)
        plan.append(ps)
        for fname in ps.stage.writes:
            produced[fname] = ps
    return plan


def execute(cfg: DictConfig, plan: list[PlannedStage], run_dir: Path) -> dict:
    from crescent.tracking import StageTracker

    run_dir.mkdir(parents=True, exist_ok=True)
    manifest = {"run_dir": str(run_dir), "name": cfg.name, "stages": {}}
    resources = Resources(cfg)
    try:
        for ps in plan:
            t0 = time.time()
            with ps.entry.lock():
                if ps.entry.check():
                    info = ps.entry.info()
                    status, metrics, compute_s = "reused", info["metrics"], info["seconds"]
                    print(f"[crescent] {ps.stage.name}: reused {ps.entry.dir}", flush=True)
                else:
                    print(f"[crescent] {ps.stage.name}: computing -> {ps.entry.dir}", flush=True)
                    ps.entry.dir.mkdir(parents=True, exist_ok=True)
                    with StageTracker(cfg, ps.stage.name, run_dir) as tracker:
                        ctx = StageContext(cfg, ps, resources, run_dir, tracker)
                        metrics = ps.stage.run(ctx)
                        if ctx.notes:
                            metrics["warnings"] = ctx.notes
                        tracker.summary(metrics)
                    compute_s = time.time() - t0
                    ps.entry.finalize(
                        list(ps.stage.writes),
                        metrics,
                        compute_s,
                        {"hashed": ps.stage.hashed(cfg), "upstream": ps.upstream},
                    )
                    status = "computed"
            manifest["stages"][ps.stage.name] = {
                "status": status,
                "dir": str(ps.entry.dir),
                "fingerprint": ps.fingerprint,
                "seconds": round(time.time() - t0, 3),
                "compute_seconds": compute_s,
                "metrics": metrics,
                "inputs": {k: str(v) for k, v in ps.inputs.items()},
            }
            _link(run_dir / ps.stage.name, ps.entry.dir)
            atomic_write_json(run_dir / "manifest.json", manifest)
    finally:
        resources.close()
    return manifest


def _link(link: Path, target: Path) -> None:
    try:
        if link.is_symlink() or link.exists():
            link.unlink()
        os.symlink(target, link, target_is_directory=True)
    except OSError:
        pass  # links are a convenience; the manifest has the paths
