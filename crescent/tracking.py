"""Weights & Biases tracking: one W&B run per executed stage, always finished in `finally`.

Mode `auto` logs online when an API key is configured (WANDB_API_KEY or a netrc entry) and
offline otherwise (sync later with `wandb sync`); `logger=none` turns tracking off. Metric keys
are `<stage>/<name>`. The config sent to W&B is the resolved run config, which holds no secrets.
"""

from __future__ import annotations

import os
from pathlib import Path

from omegaconf import OmegaConf


def _mode(cfg) -> str:
    mode = cfg.logger.mode
    if mode != "auto":
        return mode
    if os.environ.get("WANDB_API_KEY") or os.environ.get("WANDB_MODE") == "online":
        return "online"
    netrc = Path(os.environ.get("NETRC", Path.home() / ".netrc"))
    if netrc.is_file() and "api.wandb.ai" in netrc.read_text(errors="ignore"):
        return "online"
    return "offline"


def _flat(d: dict, prefix: str) -> dict:
    out = {}
    for k, v in d.items():
        key = f"{prefix}/{k}"
        if isinstance(v, dict):
            out.update(_flat(v, key))
        elif isinstance(v, (int, float, str, bool)) or v is None:
            out[key] = v
    return out


class StageTracker:
    """Context manager around one stage's W&B run (a no-op when tracking is off)."""

    def __init__(self, cfg, stage: str, run_dir: Path):
        self.cfg, self.stage, self.run_dir = cfg, stage, Path(run_dir)
        self.run = None

    def __enter__(self):
        if not self.cfg.logger.enabled or self.cfg.logger.mode == "disabled":
            return self
        import wandb

        os.environ.setdefault("WANDB_SILENT", "true")
        group = f"{self.cfg.name}/{self.run_dir.name}"
        self.run = wandb.init(
            project=self.cfg.logger.project,
            entity=self.cfg.logger.entity,
            group=group,
            job_type=self.stage,
            name=f"{group}/{self.stage}",
            dir=str(self.run_dir),
            mode=_mode(self.cfg),
            config=OmegaConf.to_container(self.cfg, resolve=True),
            reinit="create_new",
        )
        return self

    def summary(self, metrics: dict) -> None:
        if self.run is not None:
            flat = _flat(metrics, self.stage)
            self.run.log(
                {
                    k: v
                    for k, v in flat.items()
                    if isinstance(v, (int, float)) and not isinstance(v, bool)
                }
            )
            self.run.summary.update(flat)

    def table(self, key: str, rows: list[dict], columns: list[str]) -> None:
        if self.run is None or not rows:
            return
        import wandb

        data = [
            [r.get(c) if not isinstance(r.get(c), (dict, list)) else str(r.get(c)) for c in columns]
            for r in rows
        ]
        self.run.log({key: wandb.Table(columns=columns, data=data)})

    def __exit__(self, exc_type, exc, tb):
        if self.run is not None:
            self.run.finish(exit_code=1 if exc_type else 0)
            self.run = None
        return False
