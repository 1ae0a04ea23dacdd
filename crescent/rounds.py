"""Iterated self-improvement (`rounds=N`; the paper runs one round).

Round 1 is the ordinary loop (the same cache entries as `rounds=1`). Round t+1 takes round t's
fine-tuned model as *the* model: it writes the questions, answers and votes, and its LoRA (or full
fine-tuning) starts from it, so the improvements compound. Round t+1 has no `eval_base`: its
"before" is round t's `eval_trained`, the same model. Each round is a run directory of its own,
`<run>/round_<t>/` (manifest, eval report), and every stage of every round is cached, so a killed
`rounds=3` resumes inside the round it was in. At the end `crescent.report` of the run writes
`<run>/report/`: rounds.csv (score per round, deltas to the previous round and the base),
rounds_data.csv (acceptance rate, QA pairs, vote share per round), rounds.png and results.md.

Round t's model is the train stage's merged folder when it has one (`train.merge=true`, or full
fine-tuning); otherwise its adapter is merged into round t's base once, under the models folder.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from crescent.models import build_once, save_model_folder

ROUND_DIR = "round_{}"
ROUND_DIR_RE = re.compile(r"round_(\d+)")  # reads ROUND_DIR back (crescent.report)
ROUNDS_MARKER = "rounds.json"  # written into the folder holding round_<t>/


def round_dir(run_dir: Path, r: int) -> Path:
    return run_dir / ROUND_DIR.format(r)


def round_config(cfg: DictConfig, r: int, trained: Path | None) -> DictConfig:
    """Round `r`'s config: `cfg` itself for round 1; later, the model trained in round r-1
    (`trained`: that round's train entry) replaces the model and `eval_base` is dropped."""
    if r == 1:
        return cfg
    out = OmegaConf.create(OmegaConf.to_container(cfg, resolve=True))
    base_name = str(cfg.model.name).split("-round")[0]
    out.model.name = f"{base_name}-round{r - 1}"
    out.model.path = model_of_round(cfg, trained, r - 1)
    out.model.gguf = None
    out.stages = [s for s in cfg.stages if s != "eval_base"]
    return out


def model_of_round(cfg: DictConfig, train_entry: Path, r: int) -> str:
    """A plain HF folder holding the model trained in round `r` (from its train cache entry)."""
    outputs = json.loads((train_entry / "train_outputs.json").read_text())
    folder = outputs.get("merged") or outputs.get("full_model")
    if folder:
        return str(train_entry / folder)
    base_name = str(outputs["model_name"]).split("-round")[0]
    dest = Path(cfg.paths.models_dir) / f"{base_name}-round{r}-{train_entry.name}"
    adapter = train_entry / outputs["adapter"]
    return build_once(dest, lambda: merge_adapter(outputs["base_model"], adapter, dest))


def merge_adapter(base: str, adapter: Path, dest: Path) -> None:
    """Merge a PEFT LoRA adapter into its base model and save the result as a plain folder."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    print(f"[crescent] rounds: merging {adapter} into {base} -> {dest} (once)", flush=True)
    model = AutoModelForCausalLM.from_pretrained(base, dtype="auto", use_safetensors=True)
    merged = PeftModel.from_pretrained(model, str(adapter)).merge_and_unload()
    merged.config.use_cache = True
    record = {"base_model": base, "adapter": str(adapter), "method": "PEFT merge_and_unload"}
    extra = {"derivation.json": json.dumps(record, indent=2) + "\n"}
    save_model_folder(dest, merged, AutoTokenizer.from_pretrained(str(adapter)), extra)
