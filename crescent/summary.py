"""The short table printed at the end of every run (also saved as summary.md in the run directory)."""

from __future__ import annotations

# the metrics worth a glance, per stage (all metrics are in manifest.json)
HEADLINE = {
    "questions": [
        "accepted",
        "calls",
        "acceptance_rate",
        "rewritten",
        "bait_tokens_generated",
        "source",
    ],
    "dedup": ["input_rows", "accepted", "rejected"],
    "answers": ["questions", "responses", "truncated_share", "tokens_generated"],
    "vote": ["qa_pairs", "no_answer", "mean_share"],
    "train": [
        "model",
        "method",
        "steps",
        "first_quarter_loss",
        "last_quarter_loss",
        "val_loss_before",
        "val_loss",
        "tokens_per_s",
        "resumed_from_step",
        "student_note",
    ],  # fmt: skip
    "eval_base": ["items", "seconds_per_item", "apply_chat_template"],  # scores: the eval report
    "eval_trained": ["items", "seconds_per_item", "apply_chat_template"],
}


def summary_table(manifest: dict) -> str:
    lines = ["| stage | status | seconds | key metrics |", "|---|---|---:|---|"]
    for name, rec in manifest["stages"].items():
        m = rec["metrics"]
        keys = HEADLINE.get(name, list(m)[:4])
        shown = ", ".join(f"{k}={m[k]}" for k in keys if k in m)
        lines.append(f"| {name} | {rec['status']} | {rec['seconds']:.1f} | {shown} |")
    return "\n".join(lines)
