"""Evaluation: offline task YAMLs, scoring, results keys, sanity warnings, bad input, the
contamination check, and (slow) the compatibility proof against the `lm_eval` command line.

Fast tests use the real task YAMLs and the local data (../shared/data); where a model's answers
are needed without a model, a scripted lm-eval LM answers from the gold (pure scoring logic).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from crescent.evaluation import results as R
from crescent.evaluation.registry import TASKS, write_task_yamls

from .cli_helpers import assert_one_line_error, run_cli
from .conftest import ROOT

DATA = Path(os.environ.get("CRESCENT_DATA", ROOT.parent / "shared" / "data"))
needs_data = pytest.mark.skipif(
    not (DATA / "gsm8k" / "test.jsonl").is_file(), reason="no local eval data"
)

ROWS = {
    "gsm8k": 1319,
    "asdiv": 2084,
    "gsm_plus_mini": 2400,
    "svamp": 1000,
    "math500": 500,
    "hellaswag": 10042,
}


@pytest.fixture(scope="module")
def task_manager(tmp_path_factory):
    from lm_eval.tasks import TaskManager

    out = write_task_yamls(list(TASKS), DATA, tmp_path_factory.mktemp("tasks"))
    return TaskManager(include_path=str(out))


def _load(tm, name):
    return tm.load([TASKS[name].lm_eval_name])["tasks"][TASKS[name].lm_eval_name]


# ------------------------------------------------------------------ task YAMLs on local data


@needs_data
@pytest.mark.parametrize("name", list(TASKS))
def test_task_yaml_loads_local_data(task_manager, name):
    task = _load(task_manager, name)
    assert task.config.dataset_path == "json"
    docs = list(task.eval_docs)
    assert len(docs) == ROWS[name]


@needs_data
def test_gsm8k_twin_is_lm_evals_gsm8k(task_manager):
    """Same prompt, shots, decoding and filters as lm-eval's built-in gsm8k; only the data source differs."""
    from lm_eval.tasks._yaml_loader import load_yaml

    from crescent.evaluation.registry import lm_eval_tasks_dir

    builtin = load_yaml(lm_eval_tasks_dir() / "gsm8k" / "gsm8k.yaml")
    task = _load(task_manager, "gsm8k")
    cfg = task.config
    for key in ("doc_to_text", "doc_to_target", "generation_kwargs", "filter_list", "metric_list",
                "training_split", "fewshot_split", "test_split", "num_fewshot"):  # fmt: skip
        assert getattr(cfg, key) == builtin[key], key
    doc = next(iter(task.eval_docs))
    assert task.doc_to_text(doc) == f"Question: {doc['question']}\nAnswer:"


@needs_data
def test_asdiv_and_svamp_take_gsm8k_train_shots(task_manager):
    for name in ("asdiv", "svamp"):
        task = _load(task_manager, name)
        shots = list(task.fewshot_docs())
        assert len(shots) == 7473 and "####" in shots[0]["answer"]


# ------------------------------------------------------------------ scoring with a scripted LM


class GoldLM:
    """An lm-eval LM that answers from the gold: '#### <gold>' (right) or 'The answer is 7.' (wrong)."""

    def __new__(cls, right=True, max_gen_toks=256):
        from lm_eval.api.model import LM

        class _LM(LM):
            def __init__(self):
                super().__init__()
                self.max_gen_toks = max_gen_toks
                self.tokenizer = lambda text, add_special_tokens=False: {"input_ids": text.split()}

            def generate_until(self, requests, disable_tqdm=False):
                out = []
                for r in requests:
                    d = r.doc
                    gold = d.get("answer", "").split("#### ")[-1]
                    if "problem" in d:  # math500
                        out.append(
                            f"The answer is $\\boxed{{{d['answer']}}}$."
                            if right
                            else "$\\boxed{7}$"
                        )
                    else:
                        out.append(f"Reasoning.\n#### {gold}" if right else "The answer is 7.")
                return out

            def loglikelihood(
                self, requests, disable_tqdm=False
            ):  # multiple choice: r.idx = choice
                return [
                    (0.0 if (r.idx == int(r.doc["label"])) == right else -5.0, True)
                    for r in requests
                ]

            def loglikelihood_rolling(self, requests, disable_tqdm=False):
                raise NotImplementedError

        return _LM()


def _run_cell(tm, tmp_path, task, shots=0, limit=4, right=True):
    from omegaconf import OmegaConf

    from crescent.evaluation.runner import run_cell

    e = OmegaConf.create({"apply_chat_template": False, "max_gen_toks": None, "fewshot_seed": 1234,
                          "system_instruction": None})  # fmt: skip
    return run_cell(GoldLM(right), tm, e, task, shots, limit, tmp_path / "samples.jsonl")


@needs_data
def test_gold_answers_score_full_marks_and_results_keys(task_manager, tmp_path):
    rec = _run_cell(task_manager, tmp_path, "gsm8k", shots=5, limit=4)
    assert set(rec) >= {"task", "shots", "lm_eval_task", "limit", "n", "chat_template", "max_gen_toks",
                        "hit_limit_share", "seconds", "seconds_per_item", "cells", "warnings", "lm_eval"}  # fmt: skip
    json.dumps(rec)  # the chunk file is JSON
    by_key = {c["key"]: c for c in rec["cells"]}
    assert set(by_key) == {"strict-match", "flexible-extract"}
    for c in by_key.values():
        assert (
            c["value"] == 1.0
            and c["n"] == 4
            and c["num_fewshot"] == 5
            and c["chat_template"] is False
        )
        assert set(c) == {"task", "shots", "num_fewshot", "metric", "filter", "key", "value", "stderr",
                          "n", "chat_template"}  # fmt: skip
    rows = [json.loads(x) for x in (tmp_path / "samples.jsonl").read_text().splitlines()]
    assert len(rows) == 8  # 4 questions x 2 filters
    assert rows[0]["arguments"][0][0].count("Question:") == 6  # 5 shots + the question
    metrics = R.nested_metrics(rec["cells"])
    assert metrics["gsm8k"]["5shot"] == {"strict-match": 1.0, "flexible-extract": 1.0, "n": 4,
                                         "chat_template": False}  # fmt: skip


@needs_data
@pytest.mark.parametrize("task,key", [("asdiv", "strict-match"), ("svamp", "strict-match"),
                                      ("math500", "math_verify"), ("hellaswag", "acc")])  # fmt: skip
def test_each_task_scores_right_and_wrong_answers(task_manager, tmp_path, task, key):
    rec = _run_cell(task_manager, tmp_path / "r", task, right=True)
    json.dumps(rec)  # the chunk file is JSON (lm-eval configs hold functions, e.g. process_docs)
    right = {c["key"]: c["value"] for c in rec["cells"]}
    wrong = {
        c["key"]: c["value"]
        for c in _run_cell(task_manager, tmp_path / "w", task, right=False)["cells"]
    }
    assert right[key] == 1.0 and wrong[key] == 0.0


@needs_data
def test_gsm_plus_mini_reports_critical_thinking_apart(task_manager, tmp_path):
    rec = _run_cell(task_manager, tmp_path, "gsm_plus_mini", limit=40)
    cells = {(c["task"], c["key"]): c for c in rec["cells"]}
    crit, num = (
        cells[("gsm_plus_mini:critical_thinking", "strict-match")],
        cells[("gsm_plus_mini:numeric", "strict-match")],
    )
    assert crit["n"] + num["n"] == 40 and crit["n"] > 0
    # gold "None" never matches '#### (number)'; a few fraction golds ("1/4") defeat the regex too
    assert crit["value"] == 0.0 and num["value"] >= 0.9


# ------------------------------------------------------------------ sanity warnings (pure)


def _cell(task, filt, value, shots=0):
    return {"task": task, "shots": shots, "filter": filt, "value": value}


def test_strict_flexible_gap_warning():
    cells = [_cell("gsm8k", R.STRICT, 0.05), _cell("gsm8k", R.FLEXIBLE, 0.30),
             _cell("svamp", R.STRICT, 0.10), _cell("svamp", R.FLEXIBLE, 0.25)]  # fmt: skip
    warns = R.strict_flexible_gaps(cells)
    assert len(warns) == 1 and warns[0].startswith("gsm8k 0-shot") and "20 points" in warns[0]


def test_token_limit_warning():
    flags = [R.hit_limit(n, 256) for n in (256, 255, 254, 120, 80, 30, 12, 200, 100, 50)]
    assert flags[:3] == [True, True, True] and not any(flags[3:])
    assert (
        R.token_limit_warning("gsm8k", 0, R.token_limit_share(flags), 256) is not None
    )  # 30% > 10%
    assert R.token_limit_warning("gsm8k", 0, 0.10, 256) is None


def test_unchanged_adapter_warning():
    base = [
        {"doc_id": i, "filter": f, "resps": [[f"answer {i}"]]} for i in range(3) for f in ("a", "b")
    ]
    same = [dict(r) for r in base]
    changed = [dict(r, resps=[["other"]]) if r["doc_id"] == 1 else dict(r) for r in base]
    assert R.unchanged_warning(*R.unchanged_outputs(base, same)) is not None
    assert R.unchanged_outputs(base, changed) == (3, 2)
    assert R.unchanged_warning(*R.unchanged_outputs(base, changed)) is None
    assert R.unchanged_warning(0, 0) is None


def test_fewshot_mismatch_is_caught():
    res = {"n-shot": {"t": 0}}
    assert R.fewshot_mismatch(res, "t", 5) is not None and R.fewshot_mismatch(res, "t", 0) is None


def test_before_after_table():
    from crescent.evaluation.report import before_after_rows, markdown

    def mk(v, n):
        return {"task": "gsm8k", "shots": 5, "key": "strict-match", "value": v, "n": n,
                "chat_template": False, "num_fewshot": 5}  # fmt: skip

    rows = before_after_rows([mk(0.10, 20)], [mk(0.15, 20)])
    assert len(rows) == 1 and abs(rows[0]["delta"] - 0.05) < 1e-12
    text = markdown(rows, [])
    assert "| gsm8k | 5 | strict-match | 10.0 | 15.0 | +5.0 | 20 | no |" in text
    assert "machinery check" in text


# ------------------------------------------------------------------ bad input (one line, no model)


BAD = [
    (["stages=[eval_base]", "eval.tasks=[gsm8k,nosuch]"], "eval.tasks", "known tasks: asdiv"),
    (["stages=[eval_base]", "eval.shots=[0,-5]"], "eval.shots=[0, -5]", "integers >= 0"),
    (
        ["stages=[eval_base]", "paths.data_dir=/nonexistent/data"],
        "paths.data_dir=/nonexistent/data",
        "HF_HUB_OFFLINE",
    ),
    (
        ["stages=[eval_trained]", "eval.adapter=/nonexistent/adapter"],
        "eval.adapter=/nonexistent/adapter",
        "does not exist",
    ),
    (["stages=[eval_trained]"], "eval_trained", "eval.adapter=PATH"),
    (["stages=[eval_base]", "eval=full", "eval.per_task.math500.shots=[5]"], "math500", "[0,4]"),
    (["stages=[eval_base]", "eval.backend=nosuch"], "eval.backend=nosuch", "hf, vllm"),
    (["eval=nosuch"], "eval=nosuch", "demo"),
]


@pytest.mark.parametrize("args,names,allowed", BAD, ids=[" ".join(c[0]) for c in BAD])
def test_bad_eval_input_is_one_clear_line(tmp_path, args, names, allowed):
    assert_one_line_error(run_cli(args, tmp_path, timeout=180), tmp_path, names, allowed)


@pytest.mark.parametrize("kind", ["peft", "model"])
def test_pickled_weights_are_refused_before_any_model_loads(tmp_path, kind):
    """An adapter (or full model) folder whose weights are only pickles (.bin) is never loaded."""
    folder = tmp_path / "user_model"
    folder.mkdir()
    config = "adapter_config.json" if kind == "peft" else "config.json"
    (folder / config).write_text("{}")
    (folder / ("adapter_model.bin" if kind == "peft" else "pytorch_model.bin")).write_bytes(b"x")
    res = run_cli(["stages=[eval_trained]", f"eval.adapter={folder}"], tmp_path, timeout=180)
    assert_one_line_error(res, tmp_path, f"eval.adapter={folder}", "never loaded")


def test_lm_eval_loads_weights_from_safetensors_only(compose):
    """lm-eval loads the model itself: its model args force safetensors on both backends."""
    from crescent.evaluation.backends import model_args

    for backend, key, value in (
        ("hf", "use_safetensors", True),
        ("vllm", "load_format", "safetensors"),
    ):
        cfg = compose([f"eval.backend={backend}"])
        _, args = model_args(cfg, "/models/base", None)
        assert args[key] == value, (backend, args)


# ------------------------------------------------------------------ contamination


def test_contamination_of_no_questions_needs_no_embedder(tmp_path):
    from crescent.evaluation.contamination import check, summary

    assert check([], {"gsm8k": DATA / "gsm8k" / "test.jsonl"}, None, tmp_path, 13, 0.9) == []
    assert summary([], 13, 0.9)["rate"] == 0.0


def test_ngram_index_longest_run():
    from crescent.evaluation.contamination import NgramIndex

    idx = NgramIndex(
        [
            "Tom has 3 red apples and buys 5 more red apples at the shop today.",
            "Unrelated text here.",
        ]
    )
    assert idx.longest("Sara has 3 red apples and buys 5 more red apples at the market.") == (12, 0)
    assert idx.longest("A train goes 60 miles per hour.") == (0, None)


@needs_data
def test_contamination_flags_a_copied_test_question(tmp_path):
    from crescent.embedding import Embedder
    from crescent.evaluation.contamination import check, load_test_set, summary

    test = tmp_path / "test.jsonl"  # the first 60 GSM8K test questions keep the embedding quick
    test.write_text(
        "".join((DATA / "gsm8k" / "test.jsonl").read_text().splitlines(keepends=True)[:60])
    )
    copied = load_test_set("gsm8k", test)[7]
    novel = "A wizard brews 4 potions per hour for 3 hours, then sells half. How many are left?"
    rows = check([copied, novel], {"gsm8k": test}, Embedder("all-MiniLM-L6-v2"), tmp_path, 13, 0.9)
    assert (
        rows[0]["flagged"]
        and rows[0]["sets"]["gsm8k"]["nearest"] == 7
        and rows[0]["max_cosine"] > 0.99
    )
    assert rows[0]["max_ngram"] >= 13 and not rows[1]["flagged"]
    assert summary(rows, 13, 0.9)["rate"] == 0.5
    assert list((tmp_path / "embeddings").glob("*.npy")), "test-set embeddings are cached"


# ------------------------------------------------------------------ slow: real model


def _qa_free_cfg(compose, extra):
    return compose(["stages=[eval_base]", "logger=none", "eval.tasks=[gsm8k]", *extra])


@pytest.mark.slow
@needs_data
def test_compatibility_with_the_lm_eval_command_line(compose, workdir):
    """Our gsm8k 5-shot score equals, to the last digit, what `lm_eval` gives for the same model,
    data and settings (and so do the per-question generations)."""
    from crescent.main import run

    limit = 5
    cfg = _qa_free_cfg(compose, ["eval.shots=[5]", f"eval.limit={limit}", "eval.max_gen_toks=null",
                                 "eval.batch_size=1"])  # fmt: skip
    run(cfg, run_dir=workdir / "run")
    from crescent.evaluation.compat import compare

    result = compare(workdir / "run" / "eval_base", "gsm8k", 5, workdir / "cli")
    # two cells, strict-match and flexible-extract, each equal to the CLI's to the last digit
    assert result["n_shot"] == 5 and len(result["rows"]) == 2, result
    assert all(r["ours"] == r["cli"] for r in result["rows"]), result
    # the same generations, too: one sample row per question and filter
    assert result["same"] == result["generations"] == 2 * limit, result
    assert result["equal"]


@pytest.mark.slow
@needs_data
def test_eval_trained_with_an_untrained_adapter_warns_and_reports(compose, workdir):
    """A fresh LoRA adapter (B = 0) changes no output: eval_trained says so; the table has both columns."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from crescent.main import run
    from crescent.models import resolve_model_path

    extra = ["eval.shots=[0]", "eval.limit=2", "eval.max_gen_toks=32"]
    cfg = _qa_free_cfg(compose, extra)
    path = resolve_model_path(cfg.model, cfg.paths.models_dir)
    model = AutoModelForCausalLM.from_pretrained(path)
    peft_model = get_peft_model(model, LoraConfig(r=4, target_modules=["q_proj", "v_proj"]))
    peft_model.save_pretrained(workdir / "adapter")
    run(cfg, run_dir=workdir / "base")
    trained = compose(["stages=[eval_trained]", "logger=none", "eval.tasks=[gsm8k]", *extra,
                       f"eval.adapter={workdir / 'adapter'}"])  # fmt: skip
    run(trained, run_dir=workdir / "trained")
    manifest = json.loads((workdir / "trained" / "manifest.json").read_text())
    warnings = manifest["stages"]["eval_trained"]["metrics"].get("warnings", [])
    assert any("changed none of 2 outputs" in w for w in warnings), warnings
    report = (workdir / "trained" / "eval_report.md").read_text()
    assert "| gsm8k | 0 | strict-match |" in report and "| +0.0 |" in report
    assert (workdir / "trained" / "eval_report.png").stat().st_size > 1000
    m = manifest["stages"]["eval_trained"]["metrics"]
    assert set(m["gsm8k"]["0shot"]) == {"strict-match", "flexible-extract", "n", "chat_template"}


def test_samples_table_takes_generation_and_loglikelihood_rows_together():
    """A W&B column keeps one type: a GSM8K generation and a HellaSwag log-likelihood sample
    (numbers, label index) must both fit the same samples table."""
    import wandb

    from crescent.stages.evaluate import SAMPLE_COLUMNS, sample_row

    gen = {"doc_id": 0, "filter": "strict-match", "doc": {"question": "What is 2+2?"},
           "target": "#### 4", "resps": [["The answer is 4."]], "filtered_resps": ["4"],
           "metrics": ["exact_match"], "exact_match": 1.0, "hit_limit": False}  # fmt: skip
    ll = {"doc_id": 0, "filter": "none", "doc": {"query": "A man is on a roof. He"}, "target": 3,
          "resps": [[[-39.9, False]], [[-41.2, False]]], "filtered_resps": [[-39.9, False]],
          "metrics": ["acc", "acc_norm"], "acc": 0.0, "acc_norm": 1.0}  # fmt: skip
    table = wandb.Table(columns=SAMPLE_COLUMNS)
    for task, s in (("gsm8k", gen), ("hellaswag", ll)):
        row = sample_row(task, 0, False, s)
        table.add_data(*[row[c] for c in SAMPLE_COLUMNS])
    assert [r[5] for r in table.data] == ["#### 4", "3"] and table.data[1][6] == "-39.9"
    assert json.loads(table.data[1][8]) == {"acc": 0.0, "acc_norm": 1.0}


def test_per_task_limit_replaces_the_global_one(compose):
    """eval=demo: GSM8K takes eval.limit (20), HellaSwag its per-task 100; a user's eval.limit=200
    reaches GSM8K (it is not silently capped by a per-task value)."""
    from crescent.evaluation.runner import plan_cells

    assert plan_cells(compose([]).eval) == [("gsm8k", 0, 20), ("hellaswag", 0, 100)]
    cells = plan_cells(compose(["eval.limit=200", "eval.shots=[0,5]"]).eval)
    assert cells == [
        ("gsm8k", 0, 200),
        ("gsm8k", 5, 200),
        ("hellaswag", 0, 100),  # its per-task shots: [0]
    ]
