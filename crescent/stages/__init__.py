"""The stage table. Stage names and output files are fixed (DESIGN.md §4); each stage module's
docstring says what it Reads and Writes (the fields are in crescent/records.py).

Later stages (eval_base, train, eval_trained, report) register here as they land.
"""

from __future__ import annotations

from crescent.pipeline import Stage
from crescent.records import ANSWERS, QA, QUESTIONS, REJECTED
from crescent.stages import answers, dedup, questions, vote

STAGES: dict[str, Stage] = {
    "questions": Stage(
        "questions", questions.run, questions.hashed, version=1,
        writes=(QUESTIONS, REJECTED, "calls.jsonl"),
    ),
    "dedup": Stage(
        "dedup", dedup.run, dedup.hashed, version=1, reads=(QUESTIONS,),
        writes=(QUESTIONS, REJECTED, "calls.jsonl"), input_schema=dedup.INPUT_SCHEMA, input_required=True,
    ),
    "answers": Stage(
        "answers", answers.run, answers.hashed, version=1, reads=(QUESTIONS,), writes=(ANSWERS,),
        input_schema=answers.INPUT_SCHEMA,
    ),
    "vote": Stage(
        "vote", vote.run, vote.hashed, version=1, reads=(ANSWERS,), writes=(QA, REJECTED),
        input_schema=vote.INPUT_SCHEMA, check_input=vote.check_input,
    ),
}  # fmt: skip

# Every stage name the harness knows (DESIGN.md §4), implemented or not yet.
ALL_STAGE_NAMES = (
    "eval_base",
    "questions",
    "dedup",
    "answers",
    "vote",
    "train",
    "eval_trained",
    "report",
)
