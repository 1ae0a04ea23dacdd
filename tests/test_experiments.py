"""Every experiment and sweep composes, validates and documents itself; paper rows have CPU twins.

Config only (no model loads, no stage runs): `compose([...])` builds the config exactly as
`python run.py experiments=NAME --cfg job` prints it, and one CLI call per experiment checks that
command itself.
"""

from __future__ import annotations

import re

import pytest
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.types import RunMode
from omegaconf import OmegaConf

from crescent.cli import group_options
from crescent.validate import validate

from .cli_helpers import run_cli
from .conftest import ROOT

EXPERIMENTS = group_options(ROOT, "experiments")
SWEEPS = group_options(ROOT, "sweeps")
# The data-engine presets that predate the full loop: no compute line, no demo twin (the plain
# `python run.py stages=[questions,answers,vote]` is their CPU counterpart).
DATA_ENGINE_ONLY = {"paper_llama3", "paper_llama2"}
PAPER_ROWS = [e for e in EXPERIMENTS if e.startswith("paper_") and e not in DATA_ENGINE_ONLY]
DEMOS = [e for e in EXPERIMENTS if e.startswith("demo_")]
# the experiment each ablation / distillation row is a diff of, at each scale
BASES = {"paper": "paper_llama3_self_improve", "demo": "demo_self_improve"}
# keys an experiment row is about: a twin must change the same ones the same way
ROW_KEYS = ["stages", "data.source", "voting.k", "answers.n", "dedup.threshold",
            "dedup.batch_threshold", "dedup.max_rewrites", "dedup.recheck", "model.bait_prompt"]  # fmt: skip
_ABSENT = object()


def header(path) -> str:
    """The leading comment block of a YAML file."""
    lines = []
    for line in path.read_text().splitlines():
        if not line.startswith("#"):
            break
        lines.append(line)
    return "\n".join(lines)


def header_field(path, field: str) -> str | None:
    m = re.search(rf"^# {field}[^:\n]*:\s*(\S+)", header(path), re.M)
    return m.group(1) if m else None


def names_itself(text: str, group: str, name: str) -> bool:
    """A `# Command...:` line that runs `group=name` (not a longer name sharing its prefix)."""
    pattern = rf"^#\s*Command[^:\n]*:.*\b{group}={re.escape(name)}(?![\w-])"
    return re.search(pattern, text, re.M) is not None


def sweep_values(key: str, values) -> list[str]:
    """The values (without the key) Hydra's basic sweeper expands `key=values` into."""
    override = OverridesParser.create().parse_override(f"{key}={values}")
    return list(override.sweep_string_iterator()) if override.is_sweep_override() else [str(values)]


def test_groups_are_not_empty():
    assert PAPER_ROWS and DEMOS and SWEEPS


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_experiment_composes_validates_and_names_its_run(compose, seed_data, name):
    cfg = compose([f"experiments={name}"])
    OmegaConf.resolve(cfg)  # no broken interpolations
    validate(cfg)
    assert cfg.name == name, (
        f"experiments/{name}.yaml: set `name: {name}` (it names the run directory)"
    )


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_experiment_header_says_what_and_how(name):
    path = ROOT / "experiments" / f"{name}.yaml"
    text = header(path)
    assert text.startswith("# @package _global_"), (
        f"{path.name}: first line must be `# @package _global_`"
    )
    assert "Reproduces" in text, f"{path.name}: header must say what it reproduces"
    assert names_itself(text, "experiments", name), (
        f"{path.name}: header needs a `# Command: python run.py experiments={name}` line"
    )
    if name not in DATA_ENGINE_ONLY:
        assert re.search(r"^# Compute", text, re.M), (
            f"{path.name}: header must give the expected compute"
        )


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_experiment_command_line_composes(tmp_path, name):
    """`python run.py experiments=NAME --cfg job` itself, from another working directory."""
    res = run_cli([f"experiments={name}", "--cfg", "job"], tmp_path, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    assert f"\nname: {name}\n" in res.stdout


@pytest.mark.parametrize("name", PAPER_ROWS)
def test_paper_row_has_a_demo_twin_that_changes_the_same_keys(compose, name):
    twin = header_field(ROOT / "experiments" / f"{name}.yaml", "Demo twin")
    assert twin, f"experiments/{name}.yaml: header needs `# Demo twin: experiments/demo_....yaml`"
    demo = twin.removeprefix("experiments/").removesuffix(".yaml")
    assert demo in DEMOS, f"experiments/{name}.yaml: demo twin {twin} does not exist"
    back = header_field(ROOT / "experiments" / f"{demo}.yaml", "Paper twin")
    assert back == f"experiments/{name}.yaml", (
        f"{twin}: `# Paper twin:` must name experiments/{name}.yaml"
    )

    p, d = compose([f"experiments={name}"]), compose([f"experiments={demo}"])
    pb, db = compose([f"experiments={BASES['paper']}"]), compose([f"experiments={BASES['demo']}"])
    for key in ROW_KEYS:
        pv, dv = OmegaConf.select(p, key), OmegaConf.select(d, key)
        inherited = pv == OmegaConf.select(pb, key) and dv == OmegaConf.select(db, key)
        assert pv == dv or inherited, f"{key}: {name} has {pv}, its demo twin {demo} has {dv}"
    assert (p.distill.student is None) == (d.distill.student is None), (
        "one twin distills, the other not"
    )


@pytest.mark.parametrize("name", DEMOS)
def test_demo_twin_is_sized_for_the_cpu(compose, name):
    cfg = compose([f"experiments={name}"])
    assert cfg.model.name == "smollm2-135m" and cfg.model.path is None, "demo: the embedded model"
    assert cfg.engine._target_.endswith("HFEngine"), "demo: engine=hf"
    plain = compose([])  # conf/config.yaml defaults: the CPU profile
    sized = [
        "sampling",
        "eval",
        "questions.max_calls",
        "answers.chunk_size",
        "train.trainer.max_epochs",
    ]
    for key in sized:
        assert OmegaConf.select(cfg, key) == OmegaConf.select(plain, key), (
            f"{name}: {key} is not the demo size"
        )
    back = header_field(ROOT / "experiments" / f"{name}.yaml", "Paper twin")
    assert back, f"experiments/{name}.yaml: header needs `# Paper twin: experiments/paper_....yaml`"
    assert back.removeprefix("experiments/").removesuffix(".yaml") in PAPER_ROWS, (
        f"{name}: no such paper row {back}"
    )


@pytest.mark.parametrize("name", PAPER_ROWS)
def test_paper_rows_keep_the_authors_data_engine(compose, name):
    cfg, ref = compose([f"experiments={name}"]), compose(["experiments=paper_llama3"])
    assert cfg.engine._target_.endswith("VLLMEngine") and cfg.model.path.startswith("meta-llama/")
    assert cfg.sampling == ref.sampling and cfg.questions.cleaner == "paper"
    assert (cfg.voting.extractor, cfg.voting.none_can_win) == ("paper", True)
    assert list(cfg.eval.tasks) == ["gsm8k", "asdiv", "gsm_plus_mini"]
    assert list(cfg.eval.shots) == [0, 5]


def test_ablations_switch_off_what_they_name(compose):
    no_dedup = compose(["experiments=paper_llama3_no_dedup"]).dedup
    assert (no_dedup.threshold, no_dedup.batch_threshold, no_dedup.max_rewrites) == (None, None, 0)
    assert compose(["experiments=paper_llama3_no_voting"]).voting.k == 1
    assert compose(["experiments=paper_llama3_no_rewrite"]).dedup.max_rewrites == 0
    assert compose(["experiments=paper_llama3_magpie"]).data.source == "magpie"
    distill = compose(["experiments=paper_distill_llama3_to_llama2"])
    assert distill.model.path == "meta-llama/Meta-Llama-3-8B-Instruct"  # the teacher
    assert distill.distill.student.path == "meta-llama/Llama-2-7b-chat-hf"
    seed = compose(["experiments=paper_distill_llama3_to_llama2_seed_baseline"])
    assert seed.data.source == "seed_gsm8k" and seed.distill.student == distill.distill.student


@pytest.mark.parametrize("experiment", [None, *BASES.values()])
@pytest.mark.parametrize("name", SWEEPS)
def test_sweep_keys_exist_and_every_value_validates(compose, name, experiment):
    extra = [f"experiments={experiment}"] if experiment else []
    cfg = compose([f"sweeps={name}", *extra], return_hydra_config=True)
    assert cfg.hydra.mode == RunMode.MULTIRUN, f"sweeps/{name}.yaml: set hydra.mode: MULTIRUN"
    params = cfg.hydra.sweeper.params
    assert params, f"sweeps/{name}.yaml sweeps nothing"
    for key, values in params.items():
        assert OmegaConf.select(cfg, key, default=_ABSENT) is not _ABSENT, (
            f"{key} is not in the config"
        )
        for v in sweep_values(key, values):
            validate(compose([f"sweeps={name}", *extra, f"{key}={v}"]))


@pytest.mark.parametrize("name", SWEEPS)
def test_sweep_header_names_its_command(name):
    text = header(ROOT / "sweeps" / f"{name}.yaml")
    assert names_itself(text, "sweeps", name), (
        f"sweeps/{name}.yaml: needs `# Command: python run.py sweeps={name}`"
    )


def test_readmes_map_every_file():
    experiments_readme = (ROOT / "experiments" / "README.md").read_text()
    for name in EXPERIMENTS:
        assert f"{name}.yaml" in experiments_readme, (
            f"experiments/README.md does not mention {name}.yaml"
        )
    sweeps_readme = (ROOT / "sweeps" / "README.md").read_text()
    for name in SWEEPS:
        assert f"sweeps={name}" in sweeps_readme or f"{name}.yaml" in sweeps_readme, (
            f"sweeps/README.md does not mention {name}"
        )
        assert f"{name}.yaml" in experiments_readme, (
            f"experiments/README.md does not mention sweeps/{name}.yaml"
        )


def test_launchers_are_optional_extras():
    tomllib = pytest.importorskip("tomllib")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    assert any(d.startswith("hydra-submitit-launcher") for d in extras["slurm"])
    assert any(d.startswith("hydra-joblib-launcher") for d in extras["local-parallel"])
    assert not any("launcher" in d for d in project["dependencies"]), (
        "the base install must not need them"
    )


def test_slurm_launcher_overrides_compose_when_installed(compose):
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    cfg = compose(["sweeps=voting_k", "hydra/launcher=submitit_slurm", "hydra.launcher.partition=gpu",
                   "hydra.launcher.gpus_per_node=1", "hydra.launcher.timeout_min=720"],
                  return_hydra_config=True)  # fmt: skip
    assert cfg.hydra.launcher.partition == "gpu" and cfg.hydra.launcher.timeout_min == 720
