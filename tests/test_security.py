"""Security defaults: no remote code unless a model opts in, weights from safetensors only, no shell
commands, and secrets from the environment never written to any file (W&B included)."""

from __future__ import annotations

import ast

import pytest

from .cli_helpers import run_cli, run_dir_of
from .conftest import ROOT

PACKAGE = ROOT / "crescent"


@pytest.mark.parametrize("name", sorted(p.stem for p in (ROOT / "conf" / "model").glob("*.yaml")))
def test_no_model_runs_remote_code_by_default(compose, name):
    assert compose([f"model={name}"]).model.trust_remote_code is False


def test_students_run_no_remote_code(compose):
    for d in sorted(p.stem for p in (ROOT / "conf" / "distill").glob("*.yaml")):
        student = compose([f"distill={d}"]).distill.student
        assert student is None or student.trust_remote_code is False, d


def _calls(tree) -> list[tuple[str, ast.Call]]:
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            f = node.func
            name = f.attr if isinstance(f, ast.Attribute) else getattr(f, "id", "")
            out.append((name, node))
    return out


def test_no_shell_no_pickles_and_weights_from_safetensors():
    """Static check of the package: no shell (os.system/popen, shell=True), no pickle or torch.load,
    and every model load we make passes use_safetensors=True (lm-eval's own loads prefer
    safetensors when the folder has them; every folder this harness writes has only those)."""
    problems = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(ROOT)
        for name, call in _calls(ast.parse(path.read_text())):
            kw = {k.arg: k.value for k in call.keywords}
            if name in ("system", "popen") or (
                "shell" in kw
                and not (isinstance(kw["shell"], ast.Constant) and kw["shell"].value is False)
            ):
                problems.append(f"{rel}:{call.lineno}: shell command")
            if name in ("load", "loads") and getattr(call.func, "value", None) is not None:
                owner = getattr(call.func.value, "id", "")
                if owner in ("pickle", "torch", "dill", "joblib"):
                    problems.append(f"{rel}:{call.lineno}: {owner}.{name} (pickle)")
            # (the embedded GGUF is read by transformers' GGUF parser: not a pickle either)
            if (
                name == "from_pretrained"
                and "ForCausalLM" in ast.unparse(call.func)
                and "gguf_file" not in kw
            ):
                if not (
                    isinstance(kw.get("use_safetensors"), ast.Constant)
                    and kw["use_safetensors"].value
                ):
                    problems.append(f"{rel}:{call.lineno}: model load without use_safetensors=True")
    assert not problems, "\n".join(problems)


SECRETS = {
    "WANDB_API_KEY": "local-0123456789abcdef0123456789abcdef01234567",
    "HF_TOKEN": "hf_CrescentFakeTokenNeverWrittenAnywhere",
    "HUGGING_FACE_HUB_TOKEN": "hf_CrescentFakeHubTokenNeverWritten",
}


@pytest.mark.slow
def test_secrets_in_the_environment_are_never_written(tmp_path):
    args = ["debug=tiny", "stages=[questions,answers,vote]", "questions.max_calls=1",
            "logger.enabled=true", "logger.mode=offline"]  # fmt: skip
    res = run_cli(args, tmp_path, timeout=1800, env_extra=SECRETS)
    assert res.returncode == 0, res.stderr[-3000:]
    run_dir = run_dir_of(res)
    assert list(run_dir.rglob("*.wandb")), "W&B wrote no offline run"  # it really logged
    leaks = []
    for f in tmp_path.rglob("*"):
        if f.is_file() and not f.is_symlink():
            data = f.read_bytes()
            leaks += [f"{f}: {k}" for k, v in SECRETS.items() if v.encode() in data]
    leaks += [f"stdout/stderr: {k}" for k, v in SECRETS.items() if v in res.stdout + res.stderr]
    assert not leaks, "\n".join(leaks)
