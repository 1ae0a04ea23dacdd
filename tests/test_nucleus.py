"""NucleusSampler draws from the same distribution as transformers' temperature + top-p warpers."""

from __future__ import annotations

import pytest
import torch
from transformers.generation.logits_process import TemperatureLogitsWarper, TopPLogitsWarper

from crescent.engines.nucleus import NucleusSampler


def hf_kept(scores: torch.Tensor, temperature: float, top_p: float) -> torch.Tensor:
    warped = TopPLogitsWarper(top_p)(
        None, TemperatureLogitsWarper(temperature)(None, scores.clone())
    )
    return torch.isfinite(warped)


def our_kept(sampler: NucleusSampler, scores: torch.Tensor) -> torch.Tensor:
    ids, _, keep = sampler.kept(scores)
    return torch.zeros_like(scores, dtype=torch.bool).scatter_(-1, ids, keep)


@pytest.mark.parametrize("temperature,top_p", [(0.7, 0.95), (1.0, 0.9), (0.5, 0.5), (1.3, 0.99)])
def test_kept_set_is_transformers_top_p(temperature, top_p):
    gen = torch.Generator().manual_seed(0)
    # peaked rows (nucleus inside the candidates) and flat rows (it is not: the full-sort fallback)
    peaked = torch.randn(16, 3000, generator=gen) * 4
    flat = torch.randn(4, 3000, generator=gen) * 0.1
    scores = torch.cat([peaked, flat])
    sampler = NucleusSampler(temperature, top_p, candidates=64)
    ours, ref = our_kept(sampler, scores), hf_kept(scores, temperature, top_p)
    assert ref[16:].sum(-1).min() > 64, "flat rows must need more than the candidates"
    mismatched = (ours != ref).sum().item()
    assert mismatched <= 1, f"{mismatched} tokens differ (rounding at the nucleus edge allows one)"


def test_draws_follow_the_renormalized_nucleus():
    logits = torch.log(torch.tensor([[0.4, 0.25, 0.15, 0.1, 0.05, 0.03, 0.02]]))
    sampler = NucleusSampler(1.0, 0.75, candidates=2)  # nucleus {0, 1, 2}: falls back to a sort
    torch.manual_seed(0)
    n = 20000
    draws = torch.stack([sampler(None, logits).argmax(-1) for _ in range(n)]).flatten()
    freq = torch.bincount(draws, minlength=7).float() / n
    expected = torch.tensor([0.4, 0.25, 0.15, 0, 0, 0, 0]) / 0.8
    assert (freq - expected).abs().max() < 0.015, freq


def test_full_distribution_when_top_p_is_one():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.2]]))
    torch.manual_seed(1)
    sampler = NucleusSampler(1.0, 1.0)
    draws = torch.stack([sampler(None, logits).argmax(-1) for _ in range(20000)]).flatten()
    freq = torch.bincount(draws, minlength=3).float() / 20000
    assert (freq - torch.tensor([0.5, 0.3, 0.2])).abs().max() < 0.015, freq


def test_masked_tokens_are_never_drawn_and_output_is_one_hot():
    torch.manual_seed(2)
    scores = torch.randn(8, 500) * 2
    scores[:, 7] = float("-inf")  # e.g. EOS before min_new_tokens
    scores[:, 0] = 50.0
    scores[:, 0] = float("-inf")  # the would-be top token is masked
    for top_p in (0.3, 1.0):
        out = NucleusSampler(0.9, top_p, candidates=16)(None, scores)
        assert ((out == 0).sum(-1) == 1).all() and (out[out != 0] == float("-inf")).all()
        picked = out.argmax(-1)
        assert not ((picked == 7) | (picked == 0)).any()


def test_same_seed_same_tokens():
    scores = torch.randn(32, 1000) * 3

    def draw():
        torch.manual_seed(123)
        return NucleusSampler(0.8, 0.95)(None, scores).argmax(-1)

    assert torch.equal(draw(), draw())


@pytest.mark.parametrize("temperature,top_p", [(0.0, 0.9), (0.8, 0.0), (0.8, 1.5)])
def test_bad_parameters_are_refused(temperature, top_p):
    with pytest.raises(ValueError, match="temperature|top_p"):
        NucleusSampler(temperature, top_p)
