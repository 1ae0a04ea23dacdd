"""Question source `data.source=seed_gsm8k`: the paper's seed-dataset-augmentation baseline.

Instead of bait prompting + self-deduplication, stage `questions` takes a seeded sample of
`questions.target` questions from a seed dataset (GSM8K train by default:
`<paths.data_dir>/<data.data_file>`). Only the question text is kept, never the gold answer, so
`answers` and `vote` label these questions exactly as they label bait questions, and a student
trained on them can be compared with one trained on bait questions at the same budget.

Writes (as stage `questions`): questions.jsonl ({id: "seed-<line>", question, origin: "seed",
call: 0, nearest_*: null, similarity: null, rewrites: 0, raw}), rejected.jsonl (empty),
calls.jsonl (one row describing the sample).
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from crescent.errors import ConfigError
from crescent.fsutil import atomic_write_jsonl, derive_seed, sha256_file
from crescent.records import QUESTIONS, REJECTED


def data_path(cfg) -> Path:
    return Path(str(cfg.paths.data_dir)) / str(cfg.data.data_file)


def check_data_file(cfg) -> None:
    """One line naming the path and how to point at the data (run before any work)."""
    if not cfg.data.get("data_file"):
        raise ConfigError(
            f"data.source={cfg.data.source}: set data.data_file (e.g. gsm8k/train.jsonl)"
        )
    path = data_path(cfg)
    if not path.is_file():
        raise ConfigError(
            f"data.source={cfg.data.source}: seed questions file {path} not found "
            f"(data.data_file={cfg.data.data_file} under paths.data_dir={cfg.paths.data_dir}; "
            f"set CRESCENT_DATA to the folder holding it)"
        )


def identity(cfg) -> dict:
    """What the sampled questions depend on (hashed into stage `questions`)."""
    return {
        "source": str(cfg.data.source),
        "data_file": str(cfg.data.data_file),
        "sha256": sha256_file(data_path(cfg)),
        "target": int(cfg.questions.target),
        "seed": int(cfg.seed),
    }


def read_questions(path: Path) -> list[tuple[int, str]]:
    """(line number, question) for every row with a non-empty "question"; answers are not read."""
    out = []
    with open(path, encoding="utf-8") as fh:
        for i, line in enumerate(fh, 1):
            if line.strip():
                q = json.loads(line).get("question")
                if isinstance(q, str) and q.strip():
                    out.append((i, q.strip()))
    return out


def run(ctx) -> dict:
    cfg = ctx.cfg
    path = data_path(cfg)
    pool = read_questions(path)
    target = int(cfg.questions.target)
    if target > len(pool):
        ctx.warn(f"questions.target={target} > {len(pool)} questions in {path}: taking all")
    rng = random.Random(derive_seed(int(cfg.seed), "seed_questions", str(cfg.data.source)))
    picked = rng.sample(pool, min(target, len(pool)))
    rows = [
        {"id": f"seed-{line:06d}", "question": q, "origin": "seed", "call": 0, "nearest_id": None,
         "nearest_question": None, "similarity": None, "rewrites": 0, "raw": q}
        for line, q in picked
    ]  # fmt: skip
    atomic_write_jsonl(ctx.entry.path(QUESTIONS), rows)
    atomic_write_jsonl(ctx.entry.path(REJECTED), [])
    atomic_write_jsonl(
        ctx.entry.path("calls.jsonl"),
        [{"call": 0, "source": str(cfg.data.source), "samples": len(pool), "accepted": len(rows),
          "rejected": {}, "acceptance_rate": round(len(rows) / max(1, len(pool)), 6)}],
    )  # fmt: skip
    print(f"[crescent] questions: {len(rows)} seed questions sampled from {path}", flush=True)
    return {
        "source": str(cfg.data.source),
        "data_file": str(path),
        "pool": len(pool),
        "accepted": len(rows),
        "target": target,
        "calls": 0,
    }
