"""Crescent entry point (a thin Hydra shim).

    python run.py                                   # the embedded default on CPU
    python run.py model=llama3 engine=vllm dedup.threshold=0.8
    python run.py -m dedup.threshold=0.8,0.9 voting.k=1,3
    python run.py experiments=paper_llama3 --cfg job

Composes the config, runs the pipeline and returns the metric a sweeper optimizes.
"""

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent
os.environ.setdefault("CRESCENT_ROOT", str(ROOT))

import hydra  # noqa: E402

from crescent.cli import check_group_choices, register_resolvers  # noqa: E402

register_resolvers()


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg) -> float | None:
    from crescent.main import run

    return run(cfg)


if __name__ == "__main__":
    # `python run.py experiments=X -m a=1,2` works like `python run.py -m experiments=X a=1,2`
    # (Hydra's parser wants its flags before the overrides)
    flags = [a for a in sys.argv[1:] if a in ("-m", "--multirun")]
    sys.argv[1:] = flags + [a for a in sys.argv[1:] if a not in flags]
    check_group_choices(sys.argv[1:], ROOT)
    main()
