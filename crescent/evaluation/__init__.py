"""Evaluation with lm-evaluation-harness (DESIGN.md §1.5): offline task YAMLs, the lm-eval runner
behind the `eval_base` / `eval_trained` stages, sanity checks, the before/after report and the
contamination check of generated questions against the eval test sets.

    registry.py       tasks, their data (local copies or the hub) and the generated task YAMLs
    tasks/            task templates layered on lm-eval's own tasks (+ utils.py for `!function`)
    backends.py       lm-eval model arguments for the hf and vllm backends (adapters included)
    runner.py         one lm_eval.simple_evaluate call per (task, shots), saved as a chunk
    results.py        pure functions: lm-eval results -> score cells, sanity warnings
    report.py         before/after table (Markdown), bar chart (PNG), W&B tables
    contamination.py  n-gram and embedding overlap of generated questions with eval test sets
"""
