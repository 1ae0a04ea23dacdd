"""The hf engine's decoding shortcuts change nothing but speed: `grouped_eager` attention equals
transformers' eager attention, and a shared prefill gives the text of one prefill per sample."""

from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf

from crescent.engines.base import SamplingSpec

WORDS = ["[PAD]", "[UNK]", "[EOS]", *[f"w{i}" for i in range(61)]]


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory):
    """A random grouped-query Llama (4 query heads, 2 KV heads) with a word-level tokenizer."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    path = tmp_path_factory.mktemp("tiny_gqa")
    vocab = {w: i for i, w in enumerate(WORDS)}
    core = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok = PreTrainedTokenizerFast(
        tokenizer_object=core, unk_token="[UNK]", pad_token="[PAD]", eos_token="[EOS]"
    )
    config = LlamaConfig(
        vocab_size=len(WORDS),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        pad_token_id=0,
        eos_token_id=2,
        bos_token_id=None,
        initializer_range=0.3,  # peaked attention: positions and masks matter to the output
    )
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(path, safe_serialization=True)
    tok.save_pretrained(path)
    return str(path)


def engine(path: str, attn: str, batch_size: int = 4):
    from crescent.engines.hf import HFEngine

    cfg = OmegaConf.create({"name": "tiny", "dtype": "float32", "attn_implementation": attn})
    return HFEngine(cfg, path, batch_size=batch_size, device="cpu", dtype="float32")


PROMPTS = ["w1 w2 w3 w4 w5 w6", "w7 w8", "w9 w10 w11 w12", "w13"]


def test_grouped_eager_attention_equals_eager(tiny_model_dir):
    eager, grouped = engine(tiny_model_dir, "eager"), engine(tiny_model_dir, "grouped_eager")
    enc = eager.tokenizer(PROMPTS, return_tensors="pt", padding=True)  # left padding: a real mask
    assert (enc["attention_mask"] == 0).any()
    with torch.inference_mode():
        a = eager.model(**enc).logits
        b = grouped.model(**enc).logits
    keep = enc["attention_mask"].bool()
    assert torch.allclose(a[keep], b[keep], atol=1e-5), (a[keep] - b[keep]).abs().max()
    spec = SamplingSpec(n=2, temperature=0.0, max_tokens=12)
    texts = [[g.text for g in gs] for gs in eager.generate(PROMPTS, spec)]
    assert texts == [[g.text for g in gs] for gs in grouped.generate(PROMPTS, spec)]


@pytest.mark.parametrize("temperature", [0.0, 0.9])
def test_shared_prefill_gives_the_text_of_separate_prefills(tiny_model_dir, temperature):
    eng = engine(tiny_model_dir, "grouped_eager", batch_size=4)  # 3 samples: groups split batches
    spec = SamplingSpec(n=3, temperature=temperature, top_p=0.95, max_tokens=10, seed=7)
    shared = eng.generate(PROMPTS, spec)
    eng.shared_prefill = lambda batch, enc: None
    separate = eng.generate(PROMPTS, spec)
    assert [[g.text for g in gs] for gs in shared] == [[g.text for g in gs] for gs in separate]
    assert [[g.num_tokens for g in gs] for gs in shared] == [
        [g.num_tokens for g in gs] for gs in separate
    ]


def test_shared_prefill_only_when_a_prompt_repeats(tiny_model_dir):
    eng = engine(tiny_model_dir, "grouped_eager")
    enc = eng.tokenizer(PROMPTS, return_tensors="pt", padding=True)
    assert eng.shared_prefill(PROMPTS, enc) is None
    batch = [PROMPTS[0]] * 3 + [PROMPTS[1]]
    enc = eng.tokenizer(batch, return_tensors="pt", padding=True)
    cache = eng.shared_prefill(batch, enc)
    assert cache.get_seq_length() == enc["input_ids"].shape[1] - 1  # all but the last prompt token
    keys = cache.layers[0].keys
    assert (
        keys.shape[0] == 4 and torch.equal(keys[0], keys[2]) and not torch.equal(keys[0], keys[3])
    )
    # the cache generate's own prefill would build for the repeated rows (left padding included)
    from transformers import DynamicCache

    ids, mask = enc["input_ids"][:, :-1], enc["attention_mask"][:, :-1]
    ref = DynamicCache(config=eng.model.config)
    with torch.inference_mode():
        positions = (mask.long().cumsum(-1) - 1).masked_fill(mask == 0, 0)
        eng.model(input_ids=ids, attention_mask=mask, position_ids=positions, past_key_values=ref)
    real = mask.bool()
    for ours, theirs in zip(cache.layers, ref.layers, strict=True):
        for a, b in ((ours.keys, theirs.keys), (ours.values, theirs.values)):
            assert torch.allclose(a.transpose(1, 2)[real], b.transpose(1, 2)[real], atol=1e-5)
