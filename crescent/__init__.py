"""Crescent: autonomous LLM self-improvement on math reasoning (Sun et al., Findings of ACL 2025).

The package is a pipeline of stages that talk only through JSONL files (see `crescent.records`):
questions (bait prompt + online self-dedup) -> answers (k samples) -> vote (majority) -> ...
Entry point: `python run.py` (Hydra). Library entry: `crescent.main.run(cfg)`.
"""

__version__ = "0.1.0"
