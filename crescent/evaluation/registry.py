"""The evaluation tasks, where their data lives, and the concrete lm-eval task YAMLs made from them.

Each task is an lm-eval task YAML written at run time (`write_task_yamls`) that `include:`s
lm-eval's own task (gsm8k, gsm_plus_mini, hellaswag) and/or a template in
crescent/evaluation/tasks/, and points `dataset_path: json` + `dataset_kwargs.data_files` at the
local copies under `paths.data_dir` (absolute paths, hence written at run time). With no local
copy and a reachable hub, the same YAML keeps the hub dataset instead (tasks whose hub dataset has
the same rows and fields). lm-eval loads the folder with `TaskManager(include_path=...)`, exactly
as its command line does with `--include_path`:

    python -m crescent.evaluation.registry /tmp/crescent_tasks          # writes the YAMLs
    lm_eval --model hf --model_args pretrained=PATH --include_path /tmp/crescent_tasks \\
        --tasks crescent_gsm8k --num_fewshot 5 --limit 5
"""

from __future__ import annotations

import importlib.util
import os
import socket
import sys
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import yaml

from crescent.errors import ConfigError

TEMPLATES = Path(__file__).parent / "tasks"


@dataclass(frozen=True)
class EvalTask:
    """One evaluation task: its lm-eval YAML layers, local files and hub fallback."""

    name: str  # our key (config, reports, W&B): gsm8k
    includes: tuple[str, ...]  # "lm_eval:<path under lm_eval/tasks>" or a template in ./tasks
    # lm-eval split -> file under paths.data_dir. The json builder takes its columns from the first
    # file; later files may lack columns (filled with null) but not add any: test split first.
    files: dict[str, str]
    hub: dict | None = None  # YAML keys that select the hub dataset when there is no local copy
    overrides: dict = field(default_factory=dict)  # extra YAML keys for the local variant
    max_shots: int | None = None  # size of a fixed few-shot pool (math500: 4 Minerva exemplars)
    kind: str = "math"  # math | general (the general-ability check)
    note: str = ""  # printed under the report table

    @property
    def lm_eval_name(self) -> str:
        return f"crescent_{self.name}"


TASKS: dict[str, EvalTask] = {
    t.name: t
    for t in (
        EvalTask(
            "gsm8k",
            ("lm_eval:gsm8k/gsm8k.yaml",),
            {"train": "gsm8k/train.jsonl", "test": "gsm8k/test.jsonl"},
            hub={"dataset_path": "openai/gsm8k", "dataset_name": "main"},
        ),
        EvalTask(
            "asdiv",
            ("lm_eval:gsm8k/gsm8k.yaml", "asdiv.yaml"),
            {"test": "asdiv/test.jsonl", "train": "gsm8k/train.jsonl"},
            note="asdiv: generative, the 2,084-row numeric subset, GSM8K-style prompt and shots; "
            "not comparable to lm-eval's loglikelihood `asdiv`.",
        ),
        EvalTask(
            "gsm_plus_mini",
            ("lm_eval:gsm_plus/gsm_plus_mini.yaml",),
            {"testmini": "gsm_plus_mini/test.jsonl"},
            hub={"dataset_path": "qintongli/GSM-Plus", "dataset_name": None},
            note="gsm_plus_mini: lm-eval's task (shots drawn from testmini itself); its 300 "
            "'critical thinking' items have gold 'None' and cannot be matched by either filter: "
            "rows gsm_plus_mini:numeric and gsm_plus_mini:critical_thinking split them out.",
        ),
        EvalTask(
            "svamp",
            ("lm_eval:gsm8k/gsm8k.yaml", "svamp.yaml"),
            {"test": "svamp/test.jsonl", "train": "gsm8k/train.jsonl"},
        ),
        EvalTask(
            "math500",
            ("math500.yaml",),
            {"test": "math500/test.jsonl"},
            hub={"dataset_path": "HuggingFaceH4/MATH-500", "dataset_name": None},
            max_shots=4,
            note="math500: Minerva prompt and exemplars, scored by math-verify.",
        ),
        EvalTask(
            "hellaswag",
            ("lm_eval:hellaswag/hellaswag.yaml",),
            {"validation": "hellaswag/val.jsonl"},
            hub={"dataset_path": "Rowan/hellaswag", "dataset_name": None},
            overrides={"training_split": None},  # no local train split; 0-shot
            kind="general",
            note="hellaswag: general-ability check (lm-eval's task, log-likelihood of 4 endings).",
        ),
    )
}


def lm_eval_tasks_dir() -> Path:
    spec = importlib.util.find_spec("lm_eval")
    if spec is None or spec.origin is None:
        raise ConfigError("eval: the lm-eval package is not installed (pip install lm-eval)")
    return Path(spec.origin).parent / "tasks"


def _include_path(ref: str) -> str:
    if ref.startswith("lm_eval:"):
        return str(lm_eval_tasks_dir() / ref.split(":", 1)[1])
    return str(TEMPLATES / ref)


def local_files(task: EvalTask, data_dir: str | Path) -> dict[str, Path] | None:
    """The task's local files under data_dir, or None when any is missing."""
    paths = {split: Path(data_dir).expanduser().resolve() / f for split, f in task.files.items()}
    return paths if all(p.is_file() for p in paths.values()) else None


def hub_offline() -> bool:
    """True when the HF hub cannot be used: offline flags set, or huggingface.co unreachable."""
    for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
        if os.environ.get(var, "").lower() in ("1", "true", "yes", "on"):
            return True
    return not _hub_reachable()


@cache
def _hub_reachable() -> bool:
    try:
        socket.create_connection(("huggingface.co", 443), timeout=3).close()
        return True
    except OSError:
        return False


def data_source(task: EvalTask, data_dir: str | Path) -> str:
    """'local' or 'hub'; a ConfigError (one line) when neither can be used."""
    if local_files(task, data_dir) is not None:
        return "local"
    missing = ", ".join(f for f in task.files.values() if not (Path(data_dir) / f).is_file())
    where = f"paths.data_dir={data_dir} has no {missing}"
    if task.hub is None:
        raise ConfigError(
            f"eval task {task.name}: {where}, and it has no hub fallback (its rows are a local "
            "conversion); set CRESCENT_DATA or paths.data_dir to the offline data folder"
        )
    if hub_offline():
        raise ConfigError(
            f"eval task {task.name}: {where}, and the Hugging Face hub is unreachable or offline "
            "(HF_HUB_OFFLINE); set CRESCENT_DATA or paths.data_dir to the offline data folder"
        )
    return "hub"


def task_yaml(task: EvalTask, data_dir: str | Path) -> dict:
    """The concrete task config: includes, our task name, and the local files (or the hub)."""
    doc = {
        "include": [_include_path(i) for i in task.includes],
        "task": task.lm_eval_name,
        "tag": ["crescent"],
    }
    files = local_files(task, data_dir)
    if files is not None:
        doc["dataset_path"] = "json"
        doc["dataset_name"] = None
        doc["dataset_kwargs"] = {"data_files": {k: str(v) for k, v in files.items()}}
        doc.update(task.overrides)
    else:
        data_source(task, data_dir)  # raises when the hub cannot be used either
        doc.update(task.hub or {})
    return doc


def write_task_yamls(names, data_dir: str | Path, out_dir: str | Path) -> Path:
    """Write one `<lm_eval_name>.yaml` per task into out_dir (for TaskManager / --include_path)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    from crescent.fsutil import atomic_write_text

    for name in names:
        t = TASKS[name]
        text = f"# written by crescent.evaluation.registry for task '{name}'\n"
        text += yaml.safe_dump(task_yaml(t, data_dir), sort_keys=False, allow_unicode=True)
        atomic_write_text(out / f"{t.lm_eval_name}.yaml", text)
    return out


def data_digest(names, data_dir: str | Path) -> dict:
    """Content hashes of the local files the tasks read ('hub' for hub datasets): part of cache keys."""
    from crescent.fsutil import sha256_file

    out = {}
    for name in names:
        files = local_files(TASKS[name], data_dir)
        out[name] = (
            {split: _sha(str(p), p.stat().st_mtime_ns, sha256_file) for split, p in files.items()}
            if files
            else "hub"
        )
    return out


def task_code_identity(names) -> dict:
    """lm-eval's version and the content of every YAML/utils layer the tasks use (cache keys)."""
    from importlib.metadata import version

    from crescent.fsutil import sha256_file

    refs = sorted({i for n in names for i in TASKS[n].includes} | {"utils.py"})
    files = {}
    for ref in refs:
        path = Path(_include_path(ref))
        files[ref] = _sha(str(path), path.stat().st_mtime_ns, sha256_file)
    return {"version": version("lm_eval"), "files": files}


@cache
def _sha(path: str, mtime_ns: int, fn) -> str:
    return fn(path)


if __name__ == "__main__":
    # python -m crescent.evaluation.registry OUT_DIR [DATA_DIR]
    if len(sys.argv) < 2:
        sys.exit("usage: python -m crescent.evaluation.registry OUT_DIR [DATA_DIR]")
    default_data = Path(__file__).resolve().parents[2].parent / "shared" / "data"
    data = sys.argv[2] if len(sys.argv) > 2 else os.environ.get("CRESCENT_DATA", str(default_data))
    usable = []
    for name, task in TASKS.items():
        try:
            data_source(task, data)
            usable.append(name)
        except ConfigError as e:
            print(f"skipped: {e}", file=sys.stderr)
    print(write_task_yamls(usable, data, sys.argv[1]))
