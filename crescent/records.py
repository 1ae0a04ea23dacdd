"""The on-disk contract: the JSONL files stages read and write, their fields, and a strict reader.

Stages talk only through these files (never through in-memory objects):

questions.jsonl   accepted questions (stages `questions`, `dedup`)
    id: str                 stable id, e.g. "c00012-s007" (call 12, sample 7) or "...-r1" (rewrite 1)
    question: str           the cleaned question text
    origin: str             "bait" | "rewrite" | "input" (a user's file) | "seed" (data.source=seed_gsm8k)
    call: int               generation call (or input group) it came from
    nearest_id: str|null    nearest previously accepted question at decision time
    nearest_question: str|null
    similarity: float|null  cosine to that neighbour (null when the accepted set was empty)
    rewrites: int           LLM rewrites it took to become unique
    raw: str                the model's raw text (or the user's row) before cleaning
rejected.jsonl    everything dropped, never silently: the same fields plus
    reason: str             cleaning | within_call | duplicate | duplicate_after_rewrite |
                            empty_rewrite | over_target | no_answer | below_min_share |
                            contaminated (data.decontaminate=true)
    stage: str              the stage that dropped it
answers.jsonl     every sampled response per question (stage `answers`)
    id, question
    responses: list of {text: str, finish_reason: "stop"|"length", num_tokens: int}
qa.jsonl          majority-voted QA pairs (stage `vote`)
    id, question
    answer: str             the majority answer (canonical number string)
    response: str           the chosen chain of thought: first of the k whose answer is the majority
    votes: list[str|null]   the extracted answer of each of the first k responses
    share: float            votes for the winner / k
    k: int
contamination.jsonl  overlap of each QA question with the eval test sets (stage vote)
    id, question
    sets: {task: {ngram, ngram_item, cosine, nearest, nearest_question}}  longest shared word run
                            (0 below 5 words) and nearest MiniLM neighbour in that test set
    max_ngram: int, max_cosine: float, flagged: bool   (thresholds data.contamination.ngram/cosine)

User files (`dedup.input`, `answers.input`, `vote.input`) use the same fields; only `question`
(and `responses` for votes) is required. `responses` may be plain strings.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from crescent.errors import InputError

QUESTIONS = "questions.jsonl"
REJECTED = "rejected.jsonl"
ANSWERS = "answers.jsonl"
QA = "qa.jsonl"
CONTAMINATION = "contamination.jsonl"  # stage vote: overlap of QA questions with eval test sets

REJECT_REASONS = (
    "cleaning",
    "within_call",
    "duplicate",
    "duplicate_after_rewrite",
    "empty_rewrite",
    "over_target",
    "no_answer",
    "below_min_share",
    "contaminated",
)


def _is_str(v) -> bool:
    return isinstance(v, str)


def _is_response_list(v) -> bool:
    return isinstance(v, list) and all(
        isinstance(r, str) or (isinstance(r, dict) and isinstance(r.get("text"), str)) for r in v
    )


# required field -> (check, what is allowed); one schema per file kind a user may bring
QUESTION_ROW = {"question": (_is_str, "a string")}
ANSWER_ROW = {
    "question": (_is_str, "a string"),
    "responses": (_is_response_list, 'a list of strings or {"text": ...} objects'),
}
QA_ROW = {
    "question": (_is_str, "a string"),
    "answer": (_is_str, "a string"),
    "response": (_is_str, "a string"),
}

Schema = dict[str, tuple[Callable[[object], bool], str]]


def read_jsonl(
    path: str | Path, schema: Schema | None = None, key: str | None = None
) -> list[dict]:
    """Read a JSONL file strictly: every non-blank line must be a JSON object with the schema's fields.

    Errors name the config key (if given), the file and the line, e.g.
    `dedup.input=/x.jsonl: line 3 is not valid JSON (Expecting ',' delimiter)`.
    """
    label = f"{key}={path}" if key else str(path)
    p = Path(path)
    if not p.is_file():
        raise InputError(
            f"{label}: file not found (expected a JSONL file, one JSON object per line)"
        )
    rows = []
    with open(p, encoding="utf-8", errors="strict") as fh:
        try:
            lines = fh.readlines()
        except UnicodeDecodeError as e:
            raise InputError(f"{label}: not UTF-8 text ({e.reason})") from None
    for i, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise InputError(f"{label}: line {i} is not valid JSON ({e.msg})") from None
        if not isinstance(row, dict):
            raise InputError(f"{label}: line {i} is not a JSON object")
        for field, (check, allowed) in (schema or {}).items():
            if field not in row:
                raise InputError(f"{label}: line {i} has no '{field}' field (required: {allowed})")
            if not check(row[field]):
                raise InputError(f"{label}: line {i} field '{field}' must be {allowed}")
        rows.append(row)
    if schema and not rows:
        raise InputError(f"{label}: the file has no rows")
    return rows


def response_text(r) -> str:
    return r if isinstance(r, str) else r["text"]


def response_finished(r) -> bool:
    """A response counts as complete unless it was cut at the token cap."""
    return isinstance(r, str) or r.get("finish_reason", "stop") != "length"
