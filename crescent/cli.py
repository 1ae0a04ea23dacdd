"""Command-line helpers for run.py: Hydra resolvers and a one-line check of config-group choices."""

from __future__ import annotations

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
