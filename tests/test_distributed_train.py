"""Multi-process training (crescent/training/distributed.py): DDP with 2 CPU processes (gloo) on the
embedded model end to end, the data sharding and process-count logic, and the FSDP / DeepSpeed
configs (composed only: FSDP needs CUDA in Lightning, deepspeed is not installed here).

The slow tests run `run.py train/strategy=ddp_cpu` like a researcher (6 QA pairs, 128 tokens,
batch 2, a few steps): about a minute each on 2 cores.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from .cli_helpers import cli, kill_when, run_dir_of
from .test_train import QA_ROWS, TINY_TRAIN, base_path, write_qa

DDP = [*TINY_TRAIN, "train/strategy=ddp_cpu"]
STRATEGIES = ["ddp_cpu", "ddp", "fsdp", "deepspeed_stage_2"]

# ------------------------------------------------------------------------------------ fast


def test_process_count_is_devices_times_nodes():
    from crescent.training.distributed import process_count

    def n(**kw) -> int:
        return process_count(OmegaConf.create({"accelerator": "cpu", **kw}))

    assert n(devices=1) == 1 and n(devices=2) == 2 and n(devices="3") == 3
    assert n(devices=[0, 1]) == 2 and n(devices="0,1") == 2 and n(devices="0,") == 1
    assert n(devices="auto") == 1  # Lightning: `auto` on CPU is one process
    assert n(devices=2, num_nodes=2) == 4
    assert n(devices=4, strategy="single_device") == 1
    gpus = max(1, torch.cuda.device_count())
    assert process_count(OmegaConf.create({"accelerator": "gpu", "devices": "auto"})) == gpus


def test_epoch_shuffle_shards_each_epoch_across_processes():
    from crescent.training.data import EpochShuffle

    one = EpochShuffle(5, seed=3)
    one.set_epoch(1)
    full = list(one)
    shards = []
    for rank in (0, 1):
        s = EpochShuffle(5, seed=3)
        s.shard(rank, 2)
        s.set_epoch(1)
        assert len(s) == 3  # 5 rows padded to 6: every process runs the same number of batches
        shards.append(list(s))
    assert shards[0] == full[0::2] and shards[1] == full[1::2] + full[:1]  # wrap-around padding
    assert set(shards[0]) | set(shards[1]) == set(range(5))
    s = EpochShuffle(5, seed=3)
    s.shard(1, 2)
    s.resume(epoch=1, skip=2)  # a resumed process skips its own batches, not the others'
    s.set_epoch(1)
    assert list(s) == shards[1][2:]
    with pytest.raises(ValueError):
        s.shard(2, 2)


def test_combine_ranks_averages_one_steps_micro_batches():
    from crescent.training.module import combine_ranks

    rows = [
        {"step": 0, "rank": 0, "loss": 2.0, "tokens": 10, "seconds": 1.0},
        {"step": 0, "rank": 1, "loss": 4.0, "tokens": 12, "seconds": 1.5},
        {"step": 1, "rank": 0, "loss": 1.0, "tokens": 8, "seconds": 0.5},
        {"step": 1, "rank": 1, "loss": 3.0, "tokens": 9, "seconds": 0.25},
    ]
    assert combine_ranks(rows) == [
        {"step": 0, "loss": 3.0, "tokens": 22, "seconds": 1.5},
        {"step": 1, "loss": 2.0, "tokens": 17, "seconds": 0.5},
    ]
    single = [{"step": 0, "loss": 1.5, "tokens": 4, "seconds": 0.1}]  # older rows: no rank
    assert combine_ranks(single) == single


def test_fingerprint_counts_processes_not_the_strategy(compose):
    from crescent.stages import STAGES

    h = STAGES["train"].hashed
    base = h(compose([]))
    assert "processes" not in base["train"]  # one process: the keys single runs always had
    ddp = h(compose(["train/strategy=ddp_cpu"]))
    assert ddp != base and ddp["train"]["processes"] == 2  # the effective batch doubles
    assert h(compose(["train.trainer.devices=2", "train.trainer.accelerator=cpu"])) == ddp
    assert h(compose(["train.trainer.strategy=ddp"])) == base  # how, not what: not hashed


def test_trainer_takes_its_ranks_from_our_launcher_even_inside_slurm(
    compose, tmp_path, monkeypatch
):
    from lightning_fabric.plugins.environments import LightningEnvironment

    from crescent.training.trainer import build_trainer

    for k, v in {"SLURM_NTASKS": "1", "SLURM_JOB_NAME": "job", "SLURM_PROCID": "0",
                 "SLURM_LOCALID": "0", "SLURM_NODEID": "0"}.items():  # fmt: skip
        monkeypatch.setenv(k, v)
    cfg = compose(["train/strategy=ddp_cpu", "train.trainer.strategy=auto"])
    trainer = build_trainer(cfg, tmp_path, None, [], has_val=False)  # no process starts here
    assert type(trainer.strategy).__name__ == "DDPStrategy"  # `auto` made explicit
    assert type(trainer.strategy.cluster_environment) is LightningEnvironment
    assert not trainer._accelerator_connector.use_distributed_sampler  # data.py shards


@pytest.mark.parametrize("name", STRATEGIES)
def test_strategy_configs_compose_and_validate(compose, name):
    from hydra.utils import instantiate

    from crescent.training.distributed import SPAWNING
    from crescent.validate import validate

    cfg = compose([f"train/strategy={name}"])
    validate(cfg)
    tr = OmegaConf.to_container(cfg.train.trainer, resolve=True)
    assert tr["_target_"] == "pytorch_lightning.Trainer" and tr["max_epochs"] == 2  # rest kept
    if name == "ddp_cpu":
        assert (tr["accelerator"], tr["devices"], tr["strategy"]) == ("cpu", 2, "ddp")
        return
    assert (tr["accelerator"], tr["devices"]) == ("gpu", "auto")  # every GPU of the machine
    if name == "ddp":
        assert tr["strategy"] == "ddp"
    elif name == "fsdp":
        from pytorch_lightning.strategies import FSDPStrategy

        from crescent.training.trainer import wrap_decoder_layers

        strategy = instantiate(cfg.train.trainer.strategy)  # builds on CPU; runs on CUDA only
        assert isinstance(strategy, FSDPStrategy)
        assert strategy.kwargs["auto_wrap_policy"] is wrap_decoder_layers
        assert strategy.kwargs["use_orig_params"] and strategy._state_dict_type == "full"
        assert str(strategy.sharding_strategy).endswith("FULL_SHARD")
        block = type("LlamaDecoderLayer", (torch.nn.Module,), {})()
        assert wrap_decoder_layers(block, False, 0) and not wrap_decoder_layers(
            torch.nn.Linear(2, 2), False, 0
        )
    else:  # deepspeed: a name Lightning registers without deepspeed installed
        from pytorch_lightning.strategies import StrategyRegistry

        assert tr["strategy"] == "deepspeed_stage_2" and tr["plugins"] is None
        assert "deepspeed_stage_2" in StrategyRegistry.available_strategies()
    assert tr["strategy"] not in SPAWNING
    assert (
        compose([f"train/strategy={name}", "train=full"]).train.lora is None
    )  # composes with full


# ------------------------------------------------------------------------------------ slow


def _log(out: Path) -> list[dict]:
    return [json.loads(x) for x in (out / "train_log.jsonl").read_text().splitlines()]


def _logits(model, tok, question: str) -> torch.Tensor:
    from crescent.engines.base import render_chat

    enc = tok(render_chat(tok, question, None, True), return_tensors="pt", add_special_tokens=False)
    with torch.inference_mode():
        return model(**enc).logits[0]


@pytest.mark.slow
def test_ddp_with_two_cpu_processes_trains_and_its_adapter_loads(tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    qa = write_qa(tmp_path / "qa.jsonl")
    t0 = time.time()
    res = cli([*DDP, f"train.input={qa}", "train.trainer.max_steps=3"], tmp_path)
    print(f"DDP run: {time.time() - t0:.1f} s wall")
    assert "train: 2 processes" in res.stdout
    out = run_dir_of(res) / "train"
    m = json.loads((out / "metrics.json").read_text())
    assert (m["processes"], m["strategy"], m["steps"], m["batches"]) == (2, "DDPStrategy", 3, 3)
    assert m["val_loss"] < m["val_loss_before"], m

    # both processes trained every step, on different rows; together they cover the epoch
    log = _log(out)
    assert [(r["step"], r["rank"]) for r in log] == [(s, k) for s in range(3) for k in (0, 1)]
    first_epoch = {i for r in log if r["epoch"] == 0 for i in r["ids"]}
    assert first_epoch == {f"p{i}" for i in range(6)} - set(_val_ids())
    assert all(set(a["ids"]).isdisjoint(b["ids"]) for a, b in zip(log[::2], log[1::2], strict=True))

    # written once, by rank 0: one adapter in the whole cache, no job file, no checkpoints left
    cache = tmp_path / "cache"
    assert len(list(cache.rglob("adapter_model.safetensors"))) == 1
    assert not list(cache.rglob("train_job.json")) and not (out / "checkpoints").exists()
    assert len(list(cache.glob("stages/train/*/_COMPLETE.json"))) == 1

    # the adapter loads onto the base model with PEFT and changes its logits
    tok = AutoTokenizer.from_pretrained(out / "adapter")
    base = AutoModelForCausalLM.from_pretrained(base_path()).eval()
    before = _logits(base, tok, QA_ROWS[0][0])
    tuned = PeftModel.from_pretrained(base, out / "adapter").eval()
    after = _logits(tuned, tok, QA_ROWS[0][0])
    assert before.shape == after.shape and (after - before).abs().max() > 1e-2


def _val_ids() -> list[str]:
    """The QA ids held out for validation (seeded split, as the stage makes it)."""
    return [f"p{it['index']}" for it in _data_module().val_set.items]


def _data_module():
    from transformers import AutoTokenizer

    from crescent.training.data import QADataModule

    tok = AutoTokenizer.from_pretrained(base_path())
    rows = [{"id": f"p{i}", "question": q, "response": r} for i, (q, r, _) in enumerate(QA_ROWS)]
    dm = QADataModule(rows, tok, max_length=128, val_fraction=0.2, batch_size=2, seed=1234)
    dm.prepare()
    return dm


def _expected_ids(steps: int, batch_size: int = 2, world: int = 2) -> dict:
    """(step, rank) -> QA ids: the order an uninterrupted 2-process run trains in."""
    dm = _data_module()
    index = [f"p{it['index']}" for it in dm.train_set.items]
    out, step, epoch = {}, 0, 0
    while step < steps:
        shards = []
        for rank in range(world):
            dm.sampler.shard(rank, world)
            shards.append(dm.sampler.indices(epoch))
        for b in range(0, len(shards[0]), batch_size):
            for rank in range(world):
                out[(step, rank)] = [index[i] for i in shards[rank][b : b + batch_size]]
            step += 1
        epoch += 1
    return {k: v for k, v in out.items() if k[0] < steps}


def _running(fragment: str) -> list[int]:
    """Pids whose command line holds `fragment` (this test's own job file: no other process's)."""
    pids = []
    for d in Path("/proc").iterdir():
        try:
            if d.name.isdigit() and fragment in (d / "cmdline").read_bytes().decode(
                errors="ignore"
            ):
                pids.append(int(d.name))
        except OSError:
            continue
    return pids


@pytest.mark.slow
def test_killed_ddp_run_resumes_with_the_same_data_order(tmp_path):
    qa = write_qa(tmp_path / "qa.jsonl")
    args = [*DDP, f"train.input={qa}", "train.trainer.max_steps=5", "train.checkpoint_every=3"]
    kill_when(args, tmp_path, "stages/train/*/checkpoints/last.ckpt")
    ckpt = next((tmp_path / "cache").glob("stages/train/*/checkpoints/last.ckpt"))
    job = ckpt.parent.parent / "train_job.json"
    deadline = time.time() + 30
    while _running(str(job)) and time.time() < deadline:  # rank 1 follows its killed parent
        time.sleep(0.5)
    assert not _running(str(job)), "a worker outlived the killed rank 0"
    saved_step = torch.load(ckpt, map_location="cpu", weights_only=False)["global_step"]
    assert saved_step >= 3

    res = cli(args, tmp_path)
    assert "resuming from" in res.stdout
    out = run_dir_of(res) / "train"
    m = json.loads((out / "metrics.json").read_text())
    assert m["resumed_from_step"] == saved_step and m["steps"] == 5 and m["processes"] == 2
    log = _log(out)  # every process's rows, from before and after the kill
    assert {(r["step"], r["rank"]): r["ids"] for r in log} == _expected_ids(5)
    assert len(log) == 10 and not job.exists()
    assert (out / "adapter" / "adapter_model.safetensors").is_file()
