"""Majority voting over the first k sampled answers (maj@k by prefix of one pool).

Extraction, normalisation and voting stay separate: `crescent.extraction` turns a response into a
canonical answer; this module only counts. Ties go to the answer seen first (the paper's
`Counter.most_common(1)`); `None` ("no answer") wins only when `none_can_win` (the paper's behaviour).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from crescent.extraction import EXTRACTORS
from crescent.records import response_finished, response_text


@dataclass
class VoteResult:
    answer: str | None  # the winner (None: no answer won, or nothing to vote for)
    votes: list  # the extracted answer of each of the first k responses
    share: float  # count of the winner / k
    chosen: int | None  # index of the first response whose answer is the winner


def majority(votes: list, none_can_win: bool = False) -> tuple[str | None, int]:
    """The most frequent vote and its count; ties -> first seen. (None, 0) if nothing can win."""
    counts = Counter(v for v in votes if none_can_win or v is not None)
    if not counts:
        return None, 0
    ((winner, count),) = counts.most_common(1)
    return winner, count


def vote(
    responses: list,
    k: int,
    extractor: str = "robust",
    none_can_win: bool = False,
    count_truncated: bool = False,
) -> VoteResult:
    """Vote on the first k responses (str or {"text", "finish_reason"} dicts)."""
    if k < 1 or len(responses) < k:
        raise ValueError(f"need at least k={k} responses, got {len(responses)}")
    extract = EXTRACTORS[extractor]
    votes = []
    for r in responses[:k]:
        ok = count_truncated or response_finished(r)
        votes.append(extract(response_text(r)) if ok else None)
    winner, count = majority(votes, none_can_win)
    if count == 0:
        return VoteResult(None, votes, 0.0, None)
    chosen = votes.index(winner)
    return VoteResult(winner, votes, count / k, chosen)
