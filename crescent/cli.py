"""Command-line helpers for run.py: Hydra resolvers, a one-line check of config-group choices, and
`compose` (the config run.py would build, for scripts, benchmarks and tests)."""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

from omegaconf import OmegaConf

# config group -> folder (relative to the repo root) holding its options
GROUP_DIRS = {
    "experiments": "experiments",
    "sweeps": "sweeps",
    **{
        g: f"conf/{g}"
        for g in (
            "model",
            "engine",
            "sampling",
            "dedup",
            "voting",
            "paths",
            "logger",
            "debug",
            "eval",
            "train",
            "distill",
            "data",
            "train/strategy",
        )
    },
}


def slug(text: str) -> str:
    """A run-directory name from Hydra's override_dirname ('' -> 'default'; no path separators)."""
    text = re.sub(r"[/\\]+", "_", str(text or "")).strip("._ ")
    return (text or "default")[:200]


def register_resolvers() -> None:
    if not OmegaConf.has_resolver("crescent_slug"):
        OmegaConf.register_new_resolver("crescent_slug", slug)


REPO_ROOT = Path(__file__).resolve().parents[1]  # holds conf/, experiments/, sweeps/ and run.py


def compose(overrides=(), return_hydra_config: bool = False):
    """The primary config for `overrides`, as `python run.py OVERRIDES` composes it."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    os.environ.setdefault("CRESCENT_ROOT", str(REPO_ROOT))
    register_resolvers()
    with initialize_config_dir(config_dir=str(REPO_ROOT / "conf"), version_base="1.3"):
        return hydra_compose(
            "config", overrides=list(overrides), return_hydra_config=return_hydra_config
        )


def group_options(root: Path, group: str) -> list[str]:
    d = root / GROUP_DIRS[group]
    return sorted(p.stem for p in d.glob("*.yaml")) if d.is_dir() else []


def check_group_choices(argv: list[str], root: Path) -> None:
    """Exit with one line when `group=option` names an option that does not exist (before Hydra)."""
    for arg in argv:
        m = re.fullmatch(r"[+~]*(?P<group>[\w/]+)=(?P<value>.+)", arg)
        if not m or m["group"] not in GROUP_DIRS:
            continue
        value = m["value"]
        if value == "null" or "(" in value:  # glob(...), choice(...) sweeps are Hydra's to expand
            continue
        options = group_options(root, m["group"])
        for v in value.split(","):
            if v not in options:
                print(
                    f"error: {m['group']}={v}: no such option; allowed: {', '.join(options)}",
                    file=sys.stderr,
                )
                sys.exit(2)
