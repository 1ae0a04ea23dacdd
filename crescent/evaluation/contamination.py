"""Contamination check: do the generated questions overlap the evaluation test sets?

For every generated question and every evaluated math test set (the math tasks of `eval.tasks`
with a local copy), two measures:
- `ngram`: the longest run of words shared with any test question (lower-cased word tokens;
  runs shorter than `MIN_NGRAM` are reported as 0), and which test item it is;
- `cosine`: the nearest test question by MiniLM embedding (crescent/embedding.py), and its cosine.
A question is flagged when `ngram >= data.contamination.ngram` or `cosine >= data.contamination.cosine`.
The stage `vote` runs it on its QA pairs (writes contamination.jsonl, reports the flagged rate) and,
with `data.decontaminate=true`, drops the flagged pairs before training (reason `contaminated`).

Test-set embeddings are cached under `<paths.models_dir>/embeddings/` (shared like the models) by
file hash and embedder.
"""

from __future__ import annotations

import re
from collections import defaultdict
from difflib import SequenceMatcher
from pathlib import Path

import numpy as np

from crescent.fsutil import sha256_file, sha256_json

MIN_NGRAM = 5  # candidate test items share at least one word 5-gram with the question
_WORD = re.compile(r"[a-z0-9]+(?:[.,][0-9]+)*")
TEXT_FIELD = {"math500": "problem"}  # question text field per task (default: `question`)


def words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


class NgramIndex:
    """Word 5-gram inverted index of a test set; `longest(q)` = the longest shared word run."""

    def __init__(self, texts: list[str]):
        self.docs = [words(t) for t in texts]
        self.index: dict[tuple, set[int]] = defaultdict(set)
        for i, w in enumerate(self.docs):
            for j in range(len(w) - MIN_NGRAM + 1):
                self.index[tuple(w[j : j + MIN_NGRAM])].add(i)

    def longest(self, text: str) -> tuple[int, int | None]:
        """(length of the longest shared word run, test item index); (0, None) below MIN_NGRAM."""
        q = words(text)
        cands = set()
        for j in range(len(q) - MIN_NGRAM + 1):
            cands |= self.index.get(tuple(q[j : j + MIN_NGRAM]), set())
        best, where = 0, None
        for i in sorted(cands):
            m = SequenceMatcher(None, q, self.docs[i], autojunk=False)
            size = m.find_longest_match(0, len(q), 0, len(self.docs[i])).size
            if size > best:
                best, where = size, i
        return (best, where) if best >= MIN_NGRAM else (0, None)


def load_test_set(task: str, path: Path) -> list[str]:
    import json

    field = TEXT_FIELD.get(task, "question")
    return [json.loads(x)[field] for x in path.read_text(encoding="utf-8").splitlines() if x]


def _embed_cached(embedder, texts: list[str], key: dict, cache_dir: Path) -> np.ndarray:
    path = Path(cache_dir) / "embeddings" / f"{sha256_json(key)[:16]}.npy"
    if path.is_file():
        return np.load(path)
    vecs = embedder(texts)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npy")
    np.save(tmp, vecs)
    tmp.replace(path)
    return vecs


def test_sets(cfg) -> tuple[dict[str, Path], list[str]]:
    """({task: local test file} of `data.contamination.sets`, [tasks without a local copy])."""
    from crescent.evaluation.registry import TASKS, local_files

    out, missing = {}, []
    for name in cfg.data.contamination.sets:
        files = local_files(TASKS[name], cfg.paths.data_dir)
        if files is None:
            missing.append(name)
            continue
        out[name] = files[next(s for s in ("test", "testmini", "validation") if s in files)]
    return out, missing


def identity(cfg) -> dict:
    """What the contamination file and a decontaminated qa.jsonl depend on (hashed by stage vote)."""
    c = cfg.data.contamination
    if not c.enabled:
        return {"enabled": False}
    from crescent.evaluation.registry import TASKS, data_digest

    sets = list(c.sets)
    digest = data_digest([s for s in sets if s in TASKS], cfg.paths.data_dir)
    return {"sets": digest, "ngram": int(c.ngram), "cosine": float(c.cosine), "embedder": cfg.dedup.embedder,
            "decontaminate": bool(cfg.data.decontaminate)}  # fmt: skip


def check(questions: list[str], sets: dict[str, Path], embedder, cache_dir: Path,
          ngram_at: int, cosine_at: float) -> list[dict]:  # fmt: skip
    """One row per question: per test set {ngram, ngram_item, cosine, nearest}, and `flagged`."""
    if not questions:
        return []
    q_vecs = embedder(questions)
    rows = [{"sets": {}, "flagged": False, "max_ngram": 0, "max_cosine": 0.0} for _ in questions]
    for name, path in sets.items():
        texts = load_test_set(name, path)
        key = {"file": sha256_file(path), "embedder": embedder.name, "field": TEXT_FIELD.get(name)}
        t_vecs = _embed_cached(embedder, texts, key, cache_dir)
        index = NgramIndex(texts)
        for start in range(0, len(questions), 1024):
            sims = q_vecs[start : start + 1024] @ t_vecs.T
            best = sims.argmax(axis=1)
            for k, j in enumerate(best):
                i = start + k
                n, item = index.longest(questions[i])
                cos = float(sims[k, j])
                rows[i]["sets"][name] = {
                    "ngram": n,
                    "ngram_item": item,
                    "cosine": round(cos, 4),
                    "nearest": int(j),
                    "nearest_question": texts[int(j)],
                }
                rows[i]["max_ngram"] = max(rows[i]["max_ngram"], n)
                rows[i]["max_cosine"] = max(rows[i]["max_cosine"], round(cos, 4))
    for r in rows:
        r["flagged"] = r["max_ngram"] >= ngram_at or r["max_cosine"] >= cosine_at
    return rows


def summary(rows: list[dict], ngram_at: int, cosine_at: float) -> dict:
    n = len(rows)
    rate = lambda k: round(k / n, 4) if n else 0.0  # noqa: E731
    return {
        "checked": n,
        "flagged": sum(r["flagged"] for r in rows),
        "rate": rate(sum(r["flagged"] for r in rows)),
        "ngram_rate": rate(sum(r["max_ngram"] >= ngram_at for r in rows)),
        "cosine_rate": rate(sum(r["max_cosine"] >= cosine_at for r in rows)),
        "ngram_threshold": ngram_at,
        "cosine_threshold": cosine_at,
    }
