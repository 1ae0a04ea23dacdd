"""`engine.replicas > 1`: the configured engine runs as N Ray actors, one chunk of work per actor.

A chunk is one `generate` call (a bait call of `questions`, a chunk of `answers`, a batch of
rewrites), and every call carries its own seed, so a replica returns exactly what a single engine
returns for that call: the stage files are the same for any number of replicas (same engine
settings, same micro-batch size, same threads per replica). The driver keeps the tokenizer (prompt
rendering), reads results back in order and does everything sequential itself (the online dedup,
writing chunks), while the replicas work ahead on the next chunks.

`engine.ray.address`: null starts a local Ray cluster for the run (the CPUs and GPUs the replicas
ask for); `auto` or `ray://host:port` joins a running cluster (SLURM / Kubernetes set-ups).
"""

from __future__ import annotations

import os
import time
from collections import deque

from omegaconf import DictConfig, OmegaConf

from crescent.engines.base import Engine, Generation, SamplingSpec
from crescent.errors import CrescentError

POOL_KEYS = ("replicas", "ray")  # engine keys read by the pool, not passed to the engine class


def engine_class_config(engine_cfg) -> DictConfig:
    """The engine config without the pool's keys (what one replica instantiates)."""
    plain = OmegaConf.to_container(engine_cfg, resolve=True)
    return OmegaConf.create({k: v for k, v in plain.items() if k not in POOL_KEYS})


class _Replica:
    """One engine inside a Ray actor (the class is wrapped with `ray.remote` at start-up)."""

    def __init__(self, engine_cfg: dict, model_cfg: dict, model_path: str):
        os.environ["TQDM_DISABLE"] = "1"  # the driver reports progress; no bars from workers
        from crescent.engines import build_engine

        self.engine = build_engine(
            OmegaConf.create(engine_cfg), OmegaConf.create(model_cfg), model_path
        )

    def generate(self, prompts, spec, desc):
        return self.engine.generate(prompts, spec, desc)

    def pid(self) -> int:
        return os.getpid()


class RayEnginePool(Engine):
    def __init__(self, engine_cfg, model_cfg, model_path: str):
        super().__init__(model_cfg, model_path)
        try:
            import ray
        except ImportError as e:
            raise CrescentError(
                f"engine.replicas={engine_cfg.replicas}: the ray package is not importable ({e}); "
                "install it with `pip install -e .[ray]`, or set engine.replicas=1"
            ) from None
        from transformers import AutoTokenizer

        self._ray = ray
        opts = engine_cfg.get("ray") or {}
        self.replicas = int(engine_cfg.replicas)
        cpus = float(opts.get("cpus_per_replica", 1))
        gpus = float(opts.get("gpus_per_replica", 0))
        self._started_ray = not ray.is_initialized()
        if self._started_ray:
            address = opts.get("address")
            local = {} if address else {"num_cpus": max(int(cpus * self.replicas), 1)}
            if not address and gpus:
                local["num_gpus"] = int(gpus * self.replicas)
            ray.init(address=address, include_dashboard=False, configure_logging=False, **local)
        trust = bool(model_cfg.get("trust_remote_code", False))
        self.tokenizer = AutoTokenizer.from_pretrained(model_path, trust_remote_code=trust)
        actor = ray.remote(num_cpus=cpus, num_gpus=gpus)(_Replica)
        one = OmegaConf.to_container(engine_class_config(engine_cfg))
        model = OmegaConf.to_container(model_cfg, resolve=True)
        t0 = time.time()
        self.actors = [actor.remote(one, model, model_path) for _ in range(self.replicas)]
        self.pids = ray.get([a.pid.remote() for a in self.actors])  # waits for every model load
        self.startup_seconds = round(time.time() - t0, 1)
        print(
            f"[crescent] engine: {self.replicas} Ray replicas of {engine_cfg._target_} "
            f"(pids {self.pids}) started in {self.startup_seconds} s",
            flush=True,
        )
        self.identity = {"replicas": self.replicas}
        self.stats = {"generated_tokens": 0, "seconds": 0.0}
        self._next = 0

    def _count(self, gens: list[list[Generation]], t0: float) -> list[list[Generation]]:
        self.stats["generated_tokens"] += sum(g.num_tokens for gs in gens for g in gs)
        self.stats["seconds"] += time.time() - t0
        return gens

    def generate(
        self, prompts: list[str], spec: SamplingSpec, desc: str = "generate"
    ) -> list[list[Generation]]:
        """One call on one replica (round robin)."""
        actor = self.actors[self._next % self.replicas]
        self._next += 1
        t0 = time.time()
        return self._count(self._ray.get(actor.generate.remote(prompts, spec, desc)), t0)

    def generate_many(self, jobs):
        """Up to one call per replica in flight; results yielded in the order of `jobs`."""
        ray = self._ray
        jobs = iter(jobs)
        free, busy = list(self.actors), {}  # busy: object ref -> actor running it
        pending: deque = deque()  # (tag, ref or None) in job order
        finished: set = set()
        exhausted = False
        t0 = time.time()
        try:
            while True:
                while free and not exhausted:
                    try:
                        tag, request = next(jobs)
                    except StopIteration:
                        exhausted = True
                        break
                    ref = None
                    if request is not None:
                        actor = free.pop(0)
                        ref = actor.generate.remote(*request)
                        busy[ref] = actor
                    pending.append((tag, ref))
                if not pending:
                    return
                tag, ref = pending[0]
                if ref is not None and ref not in finished:
                    ready, _ = ray.wait(list(busy), num_returns=1)
                    for r in ready:
                        free.append(busy.pop(r))
                        finished.add(r)
                    continue
                pending.popleft()
                if ref is None:
                    yield tag, None
                    continue
                finished.discard(ref)
                gens = ray.get(ref)
                yield tag, self._count(gens, t0)
                t0 = time.time()
        finally:
            for ref in busy:  # the caller stopped early (e.g. questions.target reached)
                try:
                    ray.cancel(ref)
                except Exception:  # already finished, or not cancellable: its result is unused
                    pass

    def close(self) -> None:
        for a in getattr(self, "actors", []):
            self._ray.kill(a)
        self.actors = []
        if getattr(self, "_started_ray", False) and self._ray.is_initialized():
            self._ray.shutdown()
