"""The Magpie-style baseline (`data.source=magpie`): the pre-query template of the real embedded
tokenizer, its config checks, and a tiny questions stage on the real model (slow)."""

from __future__ import annotations

import json

import pytest

from crescent.engines.base import render_chat, render_pre_query
from crescent.errors import ConfigError
from crescent.validate import validate

from .cli_helpers import assert_one_line_error, cli, run_cli, run_dir_of
from .test_train import base_path


@pytest.fixture(scope="module")
def tok():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(base_path())


def test_pre_query_is_the_chat_prefix_up_to_an_empty_user_turn(tok):
    pre = render_pre_query(tok, None)
    assert pre.endswith("<|im_start|>user\n") and "<|im_start|>assistant" not in pre
    # the bait prompt's rendering starts with exactly this prefix: only the user's words differ
    assert render_chat(tok, "Write a problem.", None, True).startswith(pre)
    with_system = render_pre_query(tok, "You write math problems.")
    assert "You write math problems." in with_system and with_system.endswith("user\n")


def test_pre_query_without_a_chat_template_is_refused(tok):
    tok = type(tok).from_pretrained(base_path())
    tok.chat_template = None
    with pytest.raises(ConfigError, match="data.source=magpie"):
        render_pre_query(tok, None)


def test_magpie_config_validates_and_needs_the_chat_template(compose, seed_data):
    validate(compose(["data=magpie"]))
    assert compose(["experiments=demo_magpie"]).data.source == "magpie"
    with pytest.raises(ConfigError, match="model.chat_template=true"):
        validate(compose(["data=magpie", "model.chat_template=false"]))


def test_unknown_data_source_names_the_choices(tmp_path):
    res = run_cli(["data.source=empty_turn", "logger=none"], tmp_path)
    assert_one_line_error(res, tmp_path, "data.source", "magpie")


@pytest.mark.slow
def test_magpie_questions_stage_prompts_with_the_empty_user_turn(tmp_path):
    args = ["debug=tiny", "stages=[questions]", "data=magpie", "logger=none"]
    run_dir = run_dir_of(cli(args, tmp_path))
    rows = [
        json.loads(x) for x in (run_dir / "questions" / "questions.jsonl").read_text().splitlines()
    ]
    assert rows and all(r["question"].strip() for r in rows)
    keys = [json.loads(p.read_text()) for p in (tmp_path / "cache").glob("generations/*/key.json")]
    bait = [k for k in keys if k["kind"] == "bait"]
    assert len(bait) == 1 and bait[0]["prompt"].endswith("<|im_start|>user\n")
