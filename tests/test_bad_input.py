"""Bad input exits non-zero with one line naming the key or file, before any model loads,
leaving nothing in the cache and no run folder behind."""

from __future__ import annotations

import pytest

from .cli_helpers import assert_one_line_error, run_cli

BROKEN = '{"question": "What is 2 + 2?"}\n{"question": "broken\n'
SHORT_POOL = '{"question": "Q?", "responses": ["1", "2"]}\n'


CASES = [
    (["dedup.threshold=1.5"], "dedup.threshold=1.5", "[0, 1]"),
    (["dedup.threshold=-0.1"], "dedup.threshold=-0.1", "[0, 1]"),
    (["voting.k=0"], "voting.k=0", ">= 1"),
    (["voting.k=5"], "voting.k=5", "answers.n=3"),
    (["model=nosuchmodel"], "model=nosuchmodel", "smollm2-135m"),
    (["engine=nosuch"], "engine=nosuch", "hf, vllm"),
    (["stages=[nosuch]"], "nosuch", "allowed: questions"),
    (["questions.target=-5"], "questions.target=-5", ">= 1"),
    (["stages=[dedup]", "dedup.input=/missing.jsonl"], "dedup.input=/missing.jsonl", "not found"),
    (["stages=[dedup]", "dedup.input={broken}"], "broken.jsonl: line 2", "not valid JSON"),
    (["stages=[vote]", "vote.input={short}"], "row 1 has 2 responses", "voting.k=3"),
    (["stages=[dedup]"], "dedup.input=PATH", "needs"),
    (["stages=[vote]"], "vote.input=PATH", "stages=[answers,vote]"),
    (["sampling.answers.top_p=0"], "sampling.answers.top_p=0", "(0, 1]"),
    (["dedup.recheck=maybe"], "dedup.recheck=maybe", "true or false"),
    (["dedup.index=annoy"], "dedup.index=annoy", "one of exact, hnsw, ivf"),
    (["dedup.index=ivf", "dedup.ivf.train_size=10"], "dedup.ivf.train_size=10", "nlist=1024"),
    (["voting.extractor=regex"], "voting.extractor=regex", "paper, robust"),
    # one or more per remaining config group (issue 7: >= 20 invalid overrides across all groups)
    (["seed=-1"], "seed=-1", "an integer >= 0"),
    (["rounds=0"], "rounds=0", "an integer >= 1"),
    (["answers.n=0"], "answers.n=0", "an integer >= 1"),
    (["questions.cleaner=fancy"], "questions.cleaner=fancy", "one of default, paper"),
    (["logger.mode=loud"], "logger.mode=loud", "auto, disabled, offline, online"),
    (["model.trust_remote_code=yes"], "model.trust_remote_code=yes", "true or false"),
    (["model.attn_implementation=fast"], "model.attn_implementation=fast", "grouped_eager"),
    (["data.source=web"], "data.source=web", "bait, magpie, seed_gsm8k"),
    (["data.contamination.ngram=0"], "data.contamination.ngram=0", "an integer >= 1"),
    (["train.lr=-1"], "train.lr=-1", "(0, 1]"),
    (["train.lora.r=0"], "train.lora.r=0", "an integer >= 1"),
    (["train.trainer.precision=fp8"], "train.trainer.precision=fp8", "bf16-mixed"),
    (["train.trainer.devices=0"], "train.trainer.devices=0", "an integer >= 1"),
    (["train.trainer.strategy=ddp_spawn"], "train.trainer.strategy=ddp_spawn", "not ddp_spawn"),
    (["train.trainer.strategy=nosuch"], "train.trainer.strategy=nosuch", "deepspeed_stage_2"),
    (["distill.kd_weight=2"], "distill.kd_weight=2", "[0, 1]"),
    (["sampling.questions.n=0"], "sampling.questions.n=0", "an integer >= 1"),
    (["eval.backend=tgi"], "eval.backend=tgi", "one of hf, vllm"),
    (["eval.shots=[-1]"], "eval.shots=[-1]", "integers >= 0"),
    (["engine.batch_size=0"], "engine.batch_size=0", "an integer >= 1"),
    (["engine.replicas=0"], "engine.replicas=0", "an integer >= 1"),
    (["voting.min_share=2"], "voting.min_share=2", "[0, 1]"),
]


@pytest.mark.parametrize("args,names,allowed", CASES, ids=[" ".join(c[0]) for c in CASES])
def test_bad_input_is_one_clear_line(tmp_path, args, names, allowed):
    (tmp_path / "broken.jsonl").write_text(BROKEN)
    (tmp_path / "short.jsonl").write_text(SHORT_POOL)
    args = [
        a.format(broken=tmp_path / "broken.jsonl", short=tmp_path / "short.jsonl") for a in args
    ]
    assert_one_line_error(run_cli(args, tmp_path, timeout=120), tmp_path, names, allowed)


def test_multirun_flag_after_the_overrides_is_understood(tmp_path):
    """`python run.py experiments=X -m a=1,2` (flag last) runs like `-m` first: here it reaches our
    validation (one line about the bad value), not argparse's 'unrecognized arguments'."""
    res = run_cli(["voting.k=0", "-m", "seed=1,2"], tmp_path, timeout=120)
    assert "unrecognized arguments" not in res.stderr
    assert res.returncode == 2 and "voting.k=0: must be an integer >= 1" in res.stderr
