"""The stage table. Stage names and output files are fixed (DESIGN.md §4); each stage module's
docstring says what it Reads and Writes (the fields are in crescent/records.py).

Later stages (eval_base, train, eval_trained, report) register here as they land.
"""

from __future__ import annotations

from crescent.pipeline import Stage
from crescent.records import ANSWERS, CONTAMINATION, QA, QUESTIONS, REJECTED
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
        # version 2: a ratio with a zero denominator extracts as no answer (1/0 was read as 1)
        "vote", vote.run, vote.hashed, version=2, reads=(ANSWERS,), writes=(QA, REJECTED, CONTAMINATION),
        input_schema=vote.INPUT_SCHEMA, check_input=vote.check_input,
    ),
}  # fmt: skip

# Fine-tuning on the QA pairs: self-improvement or distillation (crescent/stages/train.py,
# crescent/training/). Its output folders differ between LoRA (adapter/) and full fine-tuning
# (model/), so `writes` lists the files every run leaves; train_outputs.json says which folders exist.
from crescent.stages import train  # noqa: E402

STAGES["train"] = Stage(
    "train", train.run, train.hashed, version=1, reads=(QA,),
    writes=(train.OUTPUTS, "hparams.json", "metrics.json", "train_log.jsonl"),
    input_schema=train.INPUT_SCHEMA, check_input=train.check_input,
)  # fmt: skip

# Evaluation before/after training (crescent/stages/evaluate.py, crescent/evaluation/).
from crescent.stages import evaluate  # noqa: E402

STAGES["eval_base"] = Stage(
    "eval_base", evaluate.run_base, evaluate.hashed, version=1, writes=(evaluate.RESULTS,),
    check_config=evaluate.check_config,
)  # fmt: skip
STAGES["eval_trained"] = Stage(
    "eval_trained", evaluate.run_trained, evaluate.hashed, version=1,
    reads=(evaluate.TRAIN_OUTPUTS,), writes=(evaluate.RESULTS,), user_key="eval.adapter",
    open_input=evaluate.open_adapter, check_config=evaluate.check_config,
)  # fmt: skip

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
