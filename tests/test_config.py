"""Every option of every config group, experiment and sweep composes; swept keys exist."""

from __future__ import annotations

import pytest
import yaml
from omegaconf import OmegaConf

from crescent.cli import GROUP_DIRS, group_options
from crescent.validate import validate

from .conftest import ROOT

GROUPS = [g for g in GROUP_DIRS if g not in ("experiments", "sweeps")]


@pytest.mark.parametrize("group,option", [(g, o) for g in GROUPS for o in group_options(ROOT, g)])
def test_every_group_option_composes_and_validates(compose, seed_data, group, option):
    cfg = compose([f"{group}={option}"])
    OmegaConf.resolve(cfg)
    validate(cfg)


@pytest.mark.parametrize("name", group_options(ROOT, "sweeps"))
def test_every_sweep_composes_and_its_keys_exist(compose, name):
    cfg = compose([f"sweeps={name}"], return_hydra_config=True)
    params = cfg.hydra.sweeper.params
    assert params, f"sweeps/{name}.yaml sweeps nothing"
    for key, values in params.items():
        assert OmegaConf.select(cfg, key, default="__missing__") != "__missing__", (
            f"{key} not in config"
        )
        for v in str(values).split(","):
            validate(compose([f"sweeps={name}", f"{key}={v}"]))


def test_paper_preset_carries_the_authors_constants(compose):
    cfg = compose(["experiments=paper_llama3"])
    assert cfg.model.path == "meta-llama/Meta-Llama-3-8B-Instruct"
    assert cfg.model.bait_prompt == (
        "Use your creativity, create one unique, special, diverse, high school level math word problem. "
        "Please provide only the problem, no any other words. \n\nProblem: "
    )
    assert cfg.model.answer_suffix == (
        " Please think step by step and provide a detailed explanation. Please provide the answer "
        "figure in the end of the response: \n\n#### Answer: "
    )
    assert cfg.model.rewrite_prompt.format(question="Q", nearest="N") == (
        "This following generated math question:Q is very similar to this question: N. "
        "Please modify it to make it different."
    )
    s = cfg.sampling
    assert (s.questions.n, cfg.questions.max_calls) == (100, 550)
    for part in (s.questions, s.rewrite, s.answers):
        assert (part.temperature, part.top_p, part.max_tokens) == (1.0, 1.0, 2048)
    d, v = cfg.dedup, cfg.voting
    assert (d.batch_threshold, d.threshold, d.max_rewrites, d.recheck) == (0.85, 0.875, 1, False)
    assert (v.k, v.extractor, v.none_can_win, v.min_share) == (3, "paper", True, 0.0)
    assert cfg.questions.cleaner == "paper" and cfg.engine._target_.endswith("VLLMEngine")


def test_llama2_preset_differs_only_in_model(compose):
    a, b = compose(["experiments=paper_llama3"]), compose(["experiments=paper_llama2"])
    assert b.model.bait_prompt.startswith(
        "Use your creativity, create one unique math word problem."
    )
    assert b.model.path == "meta-llama/Llama-2-7b-chat-hf"
    for key in ("sampling", "dedup", "voting", "questions", "answers"):
        assert a[key] == b[key]


def test_every_yaml_key_has_a_comment():
    """House style: a one-line comment on every YAML key of conf/ (meaning, units, paper value)."""
    missing = []
    for path in sorted((ROOT / "conf").rglob("*.yaml")):
        if path.parent.name == "hydra":
            continue
        for line in path.read_text().splitlines():
            s = line.strip()
            if not s or s.startswith("#") or s.startswith("- ") or ":" not in s:
                continue
            if "#" not in s and not s.endswith(":"):
                missing.append(f"{path.relative_to(ROOT)}: {s}")
    assert not missing, "keys without a comment:\n" + "\n".join(missing[:20])


def test_yaml_files_parse():
    for path in list((ROOT / "conf").rglob("*.yaml")) + list((ROOT / "experiments").glob("*.yaml")):
        yaml.safe_load(path.read_text())
