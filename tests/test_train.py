"""Stage `train` (Lightning + PEFT) on the real embedded model at tiny sizes: data formatting and
masking, LoRA parameters changing, adapter reload + merge, full fine-tuning, kill -9 + resume,
bad input, distillation into a derived student and the seed_gsm8k baseline end to end.

Tests that train are marked slow (6 QA pairs, 128 tokens, batch 2, a few steps each).
"""

from __future__ import annotations

import functools
import json
import shutil
from pathlib import Path

import pytest
import torch

from crescent.main import run

from .cli_helpers import assert_one_line_error, cli, kill_when, run_cli, run_dir_of
from .conftest import ROOT

QA_ROWS = [
    ("Tom has 3 apples and buys 5 more. How many apples does he have?", "3 + 5 = 8.\n#### 8", "8"),
    ("A box holds 4 pens. How many pens are in 6 boxes?", "4 * 6 = 24.\n#### 24", "24"),
    ("Sara saves 15 dollars a week. How much has she saved after 4 weeks?", "15 * 4 = 60.\n#### 60", "60"),
    ("A train goes 60 miles per hour for 3 hours. How far does it go?", "60 * 3 = 180.\n#### 180", "180"),
    ("There are 20 birds and 7 fly away. How many birds are left?", "20 - 7 = 13.\n#### 13", "13"),
    ("Ann has 9 cards and gives 4 away. How many cards does she keep?", "9 - 4 = 5.\n#### 5", "5"),
]  # fmt: skip

# tiny but real: a few steps with a high learning rate so a 6-pair run visibly moves the model
TINY_TRAIN = [
    "stages=[train]", "logger=none", "train.max_length=128", "train.batch_size=2",
    "train.val_fraction=0.2", "train.lr=5e-3", "train.warmup_ratio=0", "train.trainer.max_steps=6",
    "train.trainer.max_epochs=50",
    "train.trainer.enable_progress_bar=false",
]  # fmt: skip


def write_qa(path: Path, rows=QA_ROWS) -> Path:
    path.write_text(
        "".join(
            json.dumps({"id": f"p{i}", "question": q, "answer": a, "response": r}) + "\n"
            for i, (q, r, a) in enumerate(rows)
        )
    )
    return path


@functools.cache
def base_path() -> str:
    """The materialized embedded model (shared by all tests)."""
    from hydra import compose, initialize_config_dir

    from crescent.models import resolve_model_path

    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("config")
    return resolve_model_path(cfg.model, cfg.paths.models_dir)


def manifest(run_dir: Path) -> dict:
    return json.loads((Path(run_dir) / "manifest.json").read_text())


def greedy(model, tok, question: str, n=24) -> str:
    from crescent.engines.base import render_chat

    prompt = render_chat(tok, question, None, True)
    enc = tok(prompt, return_tensors="pt", add_special_tokens=False)
    with torch.inference_mode():
        out = model.generate(
            **enc, max_new_tokens=n, do_sample=False, pad_token_id=tok.pad_token_id
        )
    return tok.decode(out[0, enc["input_ids"].shape[1] :], skip_special_tokens=True)


# ------------------------------------------------------------------------------------ fast


def test_pairs_are_chat_formatted_and_masked_to_the_assistant_turn():
    from transformers import AutoTokenizer

    from crescent.training.data import IGNORE, encode_pair

    tok = AutoTokenizer.from_pretrained(base_path())
    q, r, _ = QA_ROWS[0]
    enc = encode_pair(tok, q, r, None, 512)
    ids, labels = enc["input_ids"], enc["labels"]
    assert len(ids) == len(labels) and not enc["truncated"]
    first = next(i for i, x in enumerate(labels) if x != IGNORE)
    assert all(x == IGNORE for x in labels[:first]) and labels[first:] == ids[first:]
    prompt = tok.decode(ids[:first])
    assert (
        prompt.endswith("<|im_start|>assistant\n") and q in prompt and "<|im_start|>user" in prompt
    )
    assert tok.decode(ids[first:]) == r + "<|im_end|>\n"  # the loss covers the answer and its end
    cut = encode_pair(tok, q, r, None, first + 3)
    assert len(cut["input_ids"]) == first + 3 and cut["truncated"]
    assert encode_pair(tok, q, r, None, first) is None  # no answer token fits: dropped


def test_data_module_split_and_padding(tmp_path):
    from transformers import AutoTokenizer

    from crescent.training.data import IGNORE, QADataModule

    tok = AutoTokenizer.from_pretrained(base_path())
    rows = [{"id": f"p{i}", "question": q, "response": r} for i, (q, r, _) in enumerate(QA_ROWS)]
    dm = QADataModule(rows, tok, max_length=128, val_fraction=0.2, batch_size=4, seed=1)
    dm.prepare()
    assert (dm.stats["train_rows"], dm.stats["val_rows"]) == (5, 1)
    again = QADataModule(rows, tok, max_length=128, val_fraction=0.2, batch_size=4, seed=1)
    again.prepare()
    assert again.val_set.items[0]["index"] == dm.val_set.items[0]["index"]  # seeded split
    batch = next(iter(dm.train_dataloader()))
    n = batch["attention_mask"].sum(1)
    assert batch["input_ids"].shape[1] == int(n.max())  # padded to the longest row only
    short = int(n.argmin())
    assert (batch["labels"][short, int(n[short]) :] == IGNORE).all()


def test_epoch_shuffle_resumes_mid_epoch():
    from crescent.training.data import EpochShuffle

    s = EpochShuffle(10, seed=3)
    s.set_epoch(1)
    full = list(s)
    assert sorted(full) == list(range(10)) and full != list(range(10))
    s.set_epoch(0)
    assert list(s) != full  # a new order per epoch
    s.resume(epoch=1, skip=4)
    s.set_epoch(1)
    assert list(s) == full[4:]
    assert list(s) == full  # the skip applies once
    s.resume(epoch=0, skip=4)
    s.set_epoch(1)
    assert list(s) == full  # a skip for another epoch is dropped


def test_warmup_then_cosine():
    from crescent.training.module import warmup_cosine

    lrs = [warmup_cosine(s, 2, 10, 0.1) for s in range(10)]
    assert lrs[0] < lrs[1] < lrs[2] == 1.0
    assert all(a >= b for a, b in zip(lrs[2:], lrs[3:], strict=False))
    assert abs(warmup_cosine(10, 2, 10, 0.1) - 0.1) < 1e-9


def test_module_checks_targets_and_trains_in_train_mode():
    from crescent.errors import ConfigError
    from crescent.training.module import CausalLMModule

    lora = {"r": 4, "alpha": 8, "dropout": 0.1, "target_modules": ["q_proj", "qkv"]}
    with pytest.raises(ConfigError) as e:
        CausalLMModule(base_path(), "smollm2-135m", lora=lora, lr=1e-3)
    msg = str(e.value)
    assert "'qkv'" in msg and "'q_proj'" not in msg
    for name in ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"):
        assert name in msg
    m = CausalLMModule(
        base_path(), "smollm2-135m", lora={**lora, "target_modules": ["q_proj"]}, lr=1e-3
    )
    assert m.model.training
    drops = [
        x
        for n, x in m.model.named_modules()
        if "lora_dropout" in n and isinstance(x, torch.nn.Dropout)
    ]
    assert drops and all(d.training for d in drops)  # LoRA dropout is live
    counts = m.parameter_counts()
    assert 0 < counts["trainable_params"] < counts["total_params"] / 100


def test_train_fingerprint_ignores_runtime_knobs(compose, tmp_path):
    from crescent.stages import STAGES

    h = STAGES["train"].hashed
    base = h(compose([]))
    assert h(compose(["train.num_workers=2", "train.checkpoint_every=9",
                      "train.trainer.strategy=ddp", f"train.input={tmp_path}/x"])) == base  # fmt: skip
    # train.trainer.devices > 1 is hashed (the effective batch grows): test_distributed_train.py
    assert h(compose(["train.lr=1e-3"])) != base
    assert h(compose(["train=full"])) != base
    assert h(compose(["distill=smollm2-half"]))["model"]["name"] == "smollm2-135m-half"


def no_chat_template_model(tmp_path: Path) -> Path:
    """A model folder whose tokenizer has no chat template (config + tokenizer are enough)."""
    from transformers import AutoTokenizer

    src = Path(base_path())
    dest = tmp_path / "nochat"
    tok = AutoTokenizer.from_pretrained(src)
    tok.chat_template = None
    tok.save_pretrained(dest)
    (dest / "chat_template.jinja").unlink(missing_ok=True)
    shutil.copy(src / "config.json", dest / "config.json")
    return dest


BAD = [
    (["train.lora.r=0"], "train.lora.r=0", ">= 1"),
    (["train.lora.target_modules=[q_proj,qkv_proj]"], "target_modules", "down_proj, gate_proj"),
    (["train.input={empty}"], "empty.jsonl", "no rows"),
    (["train.input={broken}"], "broken.jsonl: line 2", "not valid JSON"),
    (["train.input={noresp}"], "noresp.jsonl: line 1", "'response'"),
    (["distill=smollm2-half", "distill.student.path={nochat}", "distill.student.name=nochat"],
     "'nochat'", "no chat template"),
]  # fmt: skip


@pytest.mark.parametrize("args,names,allowed", BAD, ids=[" ".join(b[0]) for b in BAD])
def test_bad_training_input_is_one_line_before_training(tmp_path, args, names, allowed):
    qa = write_qa(tmp_path / "qa.jsonl")
    (tmp_path / "empty.jsonl").write_text("")
    (tmp_path / "broken.jsonl").write_text(qa.read_text().splitlines()[0] + '\n{"question": "x\n')
    (tmp_path / "noresp.jsonl").write_text('{"question": "Q?", "answer": "1"}\n')
    files = {"empty": tmp_path / "empty.jsonl", "broken": tmp_path / "broken.jsonl",
             "noresp": tmp_path / "noresp.jsonl"}  # fmt: skip
    if any("{nochat}" in a for a in args):
        files["nochat"] = no_chat_template_model(tmp_path)
    args = [a.format(**files) for a in args]
    if not any(a.startswith("train.input=") for a in args):
        args.append(f"train.input={qa}")
    res = run_cli([*TINY_TRAIN, *args], tmp_path)
    assert_one_line_error(res, tmp_path, names, allowed, plan_time=False)


# ------------------------------------------------------------------------------------ slow


@pytest.mark.slow
def test_lora_trains_changes_the_model_and_the_adapter_reloads_and_merges(compose, workdir):
    from peft import PeftModel
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    qa = write_qa(workdir / "qa.jsonl")
    cfg = compose([*TINY_TRAIN, f"train.input={qa}", "train.merge=true", "logger=wandb"])
    run(cfg, run_dir=workdir / "run")
    out = workdir / "run" / "train"
    m = json.loads((out / "metrics.json").read_text())
    assert manifest(workdir / "run")["stages"]["train"]["metrics"]["steps"] == m["steps"]
    assert m["method"] == "lora" and m["steps"] == 6 and m["batches"] == 6
    assert m["trainable_params"] == 30 * (
        9216 + 2 * 6144 + 9216 + 3 * 16896
    )  # r=8 on 7 projections
    assert m["first_train_loss"] > m["last_train_loss"], m  # the loss falls over the run
    assert m["val_loss"] < m["val_loss_before"], m
    assert m["tokens_per_s"] > 0 and m["resumed_from_step"] is None
    log = [json.loads(x) for x in (out / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == list(range(6)) and all(len(r["ids"]) == 2 for r in log[:2])
    outputs = json.loads((out / "train_outputs.json").read_text())
    assert (outputs["kind"], outputs["adapter"], outputs["merged"]) == ("lora", "adapter", "merged")
    for f in ("adapter/adapter_config.json", "adapter/adapter_model.safetensors",
              "adapter/tokenizer_config.json", "merged/config.json", "merged/model.safetensors",
              "hparams.json"):  # fmt: skip
        assert (out / f).is_file(), f
    assert not (out / "checkpoints").exists()  # removed once the outputs are written
    assert (out / "logs").is_dir() and any((workdir / "run" / "wandb").iterdir())

    # the LoRA parameters changed: B starts at zero, A from a seeded init we can rebuild
    from crescent.fsutil import derive_seed
    from crescent.training.module import CausalLMModule

    saved = load_file(out / "adapter" / "adapter_model.safetensors")
    lora_b = [v for k, v in saved.items() if "lora_B" in k]
    assert len(lora_b) == 30 * 7 and all(v.abs().sum() > 0 for v in lora_b)
    import pytorch_lightning as pl

    pl.seed_everything(derive_seed(int(cfg.seed), "train"), verbose=False)
    init = CausalLMModule(base_path(), "smollm2-135m", lora=dict(cfg.train.lora), lr=1e-3)
    init_a = {k: v for k, v in init.model.state_dict().items() if "lora_A" in k}
    changed = sum(
        not torch.equal(init_a[k.replace(".weight", ".default.weight")], v)
        for k, v in saved.items() if "lora_A" in k
    )  # fmt: skip
    assert changed == len(init_a) == 30 * 7
    del init

    # the adapter loads back onto the base model and changes its greedy output on a training question
    tok = AutoTokenizer.from_pretrained(out / "adapter")
    base = AutoModelForCausalLM.from_pretrained(base_path()).eval()
    q = QA_ROWS[0][0]
    before = greedy(base, tok, q)
    tuned = PeftModel.from_pretrained(base, out / "adapter").eval()
    after = greedy(tuned, tok, q)
    assert after != before, (before, after)
    # the merged folder loads in plain transformers and answers like base + adapter
    merged = AutoModelForCausalLM.from_pretrained(out / "merged").eval()
    assert greedy(merged, tok, q) == after
    assert "train" in (workdir / "run" / "summary.md").read_text()


@pytest.mark.slow
def test_full_finetuning_writes_a_plain_model_folder(compose, workdir):
    from safetensors.torch import load_file

    qa = write_qa(workdir / "qa.jsonl")
    cfg = compose([*TINY_TRAIN, f"train.input={qa}", "train=full", "train.lr=1e-4",
                   "train.trainer.max_steps=3", "train.checkpoint_every=100"])  # fmt: skip
    run(cfg, run_dir=workdir / "run")
    out = workdir / "run" / "train"
    m = json.loads((out / "metrics.json").read_text())
    assert m["method"] == "full" and m["trainable_params"] == m["total_params"] and m["steps"] == 3
    outputs = json.loads((out / "train_outputs.json").read_text())
    assert (outputs["kind"], outputs["full_model"], outputs["adapter"]) == ("full", "model", None)
    new = load_file(out / "model" / "model.safetensors")
    old = load_file(Path(base_path()) / "model.safetensors")
    key = "model.layers.0.self_attn.q_proj.weight"
    assert not torch.equal(new[key], old[key])
    from transformers import AutoModelForCausalLM

    assert AutoModelForCausalLM.from_pretrained(out / "model").config.num_hidden_layers == 30


@pytest.mark.slow
def test_kill9_during_training_resumes_from_the_last_checkpoint(tmp_path):
    qa = write_qa(tmp_path / "qa.jsonl")
    args = [*TINY_TRAIN, f"train.input={qa}", "train.trainer.max_steps=6", "train.checkpoint_every=2",
            "train.lr=1e-3"]  # fmt: skip
    ref_dir = run_dir_of(cli(args, tmp_path / "ref"))
    ref_log = [
        json.loads(x) for x in (ref_dir / "train" / "train_log.jsonl").read_text().splitlines()
    ]

    work = tmp_path / "killed"
    kill_when(args, work, "stages/train/*/checkpoints/last.ckpt")
    assert not list((work / "cache").glob("stages/train/*/_COMPLETE.json"))
    ckpt = next((work / "cache").glob("stages/train/*/checkpoints/last.ckpt"))
    saved_step = torch.load(ckpt, map_location="cpu", weights_only=False)["global_step"]
    assert saved_step >= 2
    res = cli(args, work)
    assert "resuming from" in res.stdout
    out = run_dir_of(res) / "train"
    m = json.loads((out / "metrics.json").read_text())
    assert m["resumed_from_step"] == saved_step and m["steps"] == 6  # continued, not restarted
    log = [json.loads(x) for x in (out / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == list(range(6))
    assert [r["ids"] for r in log] == [r["ids"] for r in ref_log]  # the same data order
    for a, b in zip(log, ref_log, strict=True):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-4)  # RNG restored too
    assert (out / "adapter" / "adapter_model.safetensors").is_file()


# end to end on the embedded model: responses long enough to end (tiny sizes otherwise)
E2E = ["debug=tiny", "sampling.answers.max_tokens=160", "voting.count_truncated=true",
       "train.max_length=256", "train.batch_size=2", "train.trainer.max_steps=3",
       "train.trainer.max_epochs=50", "logger=none",
       "train.trainer.enable_progress_bar=false"]  # fmt: skip


@pytest.mark.slow
def test_self_improvement_then_distillation_end_to_end(compose, workdir):
    cfg = compose([*E2E, "stages=[questions,answers,vote,train]"])
    run(cfg, run_dir=workdir / "self")
    st = manifest(workdir / "self")["stages"]
    assert st["vote"]["metrics"]["qa_pairs"] >= 1
    assert (
        st["train"]["metrics"]["model"] == "smollm2-135m" and st["train"]["metrics"]["steps"] == 3
    )

    cfg = compose([*E2E, "stages=[questions,answers,vote,train]", "distill=smollm2-half",
                   "distill.kd_weight=0.5"])  # fmt: skip
    run(cfg, run_dir=workdir / "distill")
    st = manifest(workdir / "distill")["stages"]
    assert [st[s]["status"] for s in ("questions", "answers", "vote")] == ["reused"] * 3
    m = st["train"]["metrics"]
    assert m["model"] == "smollm2-135m-half" and "not a published model" in m["student_note"]
    assert m["kd_weight"] == 0.5 and m["total_params"] < 0.75 * 134_515_008
    assert "not a published model" in (workdir / "distill" / "summary.md").read_text()
    student = Path(
        json.loads((workdir / "distill" / "train" / "train_outputs.json").read_text())["base_model"]
    )
    derivation = json.loads((student / "derivation.json").read_text())
    assert derivation["kept_layers"] == list(range(0, 30, 2))


@pytest.mark.slow
def test_seed_gsm8k_baseline_end_to_end(compose, workdir):
    data = ROOT.parent / "shared" / "data"
    if not (data / "gsm8k" / "train.jsonl").is_file():
        pytest.skip("no offline GSM8K copy")
    cfg = compose([*E2E, "stages=[questions,answers,vote,train]", "data=seed_gsm8k",
                   "distill=smollm2-half", f"paths.data_dir={data}"])  # fmt: skip
    run(cfg, run_dir=workdir / "run")
    st = manifest(workdir / "run")["stages"]
    assert st["questions"]["metrics"]["source"] == "seed_gsm8k"
    qs = [
        json.loads(x)
        for x in (workdir / "run" / "questions" / "questions.jsonl").read_text().splitlines()
    ]
    gsm = {
        json.loads(x)["question"] for x in (data / "gsm8k" / "train.jsonl").read_text().splitlines()
    }
    assert len(qs) == cfg.questions.target and all(r["question"] in gsm for r in qs)
    assert all(set(r) >= {"id", "question", "origin"} and r["origin"] == "seed" for r in qs)
    assert not any("####" in r["question"] for r in qs)  # question text only
    assert st["train"]["metrics"]["model"] == "smollm2-135m-half"
