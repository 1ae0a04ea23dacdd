"""Temperature + nucleus (top-p) sampling for the hf engine, without sorting the whole vocabulary.

transformers' TopPLogitsWarper sorts every row of the vocabulary (49,152 tokens for SmolLM2) at
every step and then draws from the full distribution: on a 2-core CPU that is a third of a decode
step at batch 48. `NucleusSampler` keeps the same distribution (the same kept set as
TopPLogitsWarper: the smallest top-probability prefix whose mass reaches top_p) but finds it among
the `candidates` most likely tokens (torch.topk), falling back to a full sort only for a row whose
nucleus is larger, and draws by inverse CDF from one uniform per row.

It is used as the last logits processor of a greedy `generate`: it returns 0 at the drawn token and
-inf elsewhere, so the argmax is the sample and everything else (EOS, stop strings, padding of
finished rows) stays transformers'.
"""

from __future__ import annotations

import torch

# Part of the engine identity: a different rule or draw gives different text for the same seed.
SAMPLER_VERSION = "nucleus-topk-v1"


class NucleusSampler:
    def __init__(self, temperature: float, top_p: float, candidates: int = 512):
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0 for sampling, got {temperature}")
        if not 0 < top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {top_p}")
        self.temperature = float(temperature)
        self.top_p = float(top_p)
        self.candidates = int(candidates)

    def kept(self, scores: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Per row, the tokens that may be drawn: (token ids, probabilities, kept mask), each
        [rows, width]. With top_p < 1 the kept tokens are a prefix in descending probability and
        width is `candidates` unless some row's nucleus is larger (then the whole vocabulary)."""
        logits = scores.float() / self.temperature
        lse = torch.logsumexp(logits, dim=-1, keepdim=True)
        if self.top_p >= 1.0:  # no nucleus: the whole distribution, in vocabulary order
            probs = (logits - lse).exp()
            ids = torch.arange(logits.shape[-1], device=logits.device).expand_as(logits)
            return ids, probs, probs > 0
        k = min(self.candidates, logits.shape[-1])
        values, ids = torch.topk(logits, k, dim=-1, sorted=True)
        probs = (values - lse).exp()
        if k < logits.shape[-1] and bool((probs.sum(-1) < self.top_p).any()):
            values, ids = torch.sort(logits, dim=-1, descending=True, stable=True)
            probs = (values - lse).exp()
        mass_above = probs.cumsum(-1) - probs  # mass of the strictly more likely tokens
        keep = (mass_above < self.top_p) & (probs > 0)  # -inf from earlier processors: never
        keep[:, 0] = True  # at least one token (TopPLogitsWarper's min_tokens_to_keep=1)
        return ids, probs, keep

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        ids, probs, keep = self.kept(scores)
        weights = torch.where(keep, probs, torch.zeros_like(probs))
        cdf = weights.cumsum(-1)
        u = torch.rand(cdf.shape[0], 1, dtype=cdf.dtype, device=cdf.device) * cdf[:, -1:]
        pick = torch.searchsorted(cdf, u, right=True)  # first token whose cdf passes u: kept
        width = cdf.shape[-1]
        last_kept = width - 1 - keep.flip(-1).int().argmax(-1, keepdim=True)
        pick = torch.where(pick < width, pick, last_kept)  # u rounded up to the total
        token = ids.gather(-1, pick)
        out = torch.full_like(scores, float("-inf"))
        return out.scatter_(-1, token, 0.0)
