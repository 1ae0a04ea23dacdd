"""Majority voting (crescent/voting.py): ties, None, share, maj@k by prefix, truncated responses."""

from __future__ import annotations

import pytest

from crescent.voting import VoteResult, majority, vote


def test_majority_counts():
    assert majority(["3", "4", "4"]) == ("4", 2)


@pytest.mark.parametrize(
    "votes, want",
    [
        (["5", "7", "7", "5"], ("5", 2)),
        (["7", "5", "5", "7"], ("7", 2)),
        (["1", "2", "3"], ("1", 1)),
        ([None, "2", "3", "3", "2"], ("2", 2)),
    ],
)
def test_majority_ties_go_to_the_first_seen(votes, want):
    assert majority(votes) == want


def test_majority_none_never_wins_by_default():
    assert majority([None, None, None, "4"]) == ("4", 1)
    assert majority([None, None]) == (None, 0)
    assert majority([]) == (None, 0)


def test_majority_none_can_win_when_allowed():
    assert majority([None, None, None, "4"], none_can_win=True) == (None, 3)
    assert majority(["4", None, None, "4"], none_can_win=True) == ("4", 2)  # tie: first seen
    assert majority([None, "4", "4", None], none_can_win=True) == (None, 2)


def test_vote_share_and_chosen():
    res = vote(["#### 3", "#### 4", "#### 4", "#### 5"], k=4)
    assert isinstance(res, VoteResult)
    assert res.answer == "4"
    assert res.votes == ["3", "4", "4", "5"]
    assert res.share == pytest.approx(0.5)
    assert res.chosen == 1  # the first response whose answer is the winner


def test_vote_compares_canonical_values():
    res = vote(["The answer is 42.", "#### 42.0", "\\boxed{42}", "so 41"], k=4)
    assert res.answer == "42" and res.share == pytest.approx(0.75) and res.chosen == 0


def test_vote_maj_at_k_uses_the_first_k_only():
    responses = ["#### 1", "#### 2", "#### 2", "#### 3", "#### 3", "#### 3"]
    r3 = vote(responses, k=3)
    assert (r3.answer, r3.share, r3.chosen, r3.votes) == (
        "2",
        pytest.approx(2 / 3),
        1,
        ["1", "2", "2"],
    )
    r6 = vote(responses, k=6)
    assert (r6.answer, r6.share, r6.chosen) == ("3", pytest.approx(0.5), 3)
    assert len(r6.votes) == 6
    r1 = vote(responses, k=1)
    assert (r1.answer, r1.share, r1.chosen, r1.votes) == ("1", 1.0, 0, ["1"])


def test_vote_ignores_responses_beyond_k_even_unparseable():
    res = vote(["#### 5", "#### 5", object()], k=2)  # the third is never looked at
    assert res.answer == "5" and res.votes == ["5", "5"]


def test_vote_tie_goes_to_the_first_seen():
    assert vote(["#### 9", "#### 8", "#### 8", "#### 9"], k=4).answer == "9"


def test_vote_none_does_not_win_by_default():
    res = vote(["no idea", "still no idea", "#### 12"], k=3)
    assert res.votes == [None, None, "12"]
    assert (res.answer, res.share, res.chosen) == ("12", pytest.approx(1 / 3), 2)


def test_vote_none_can_win_when_allowed():
    res = vote(["no idea", "still no idea", "#### 12"], k=3, none_can_win=True)
    assert (res.answer, res.share, res.chosen) == (None, pytest.approx(2 / 3), 0)


def test_vote_nothing_to_vote_for():
    res = vote(["no idea", "none"], k=2)
    assert res == VoteResult(None, [None, None], 0.0, None)
    res = vote(["no idea", "none"], k=2, none_can_win=True)
    assert (res.answer, res.share, res.chosen) == (None, 1.0, 0)


def test_vote_truncated_response_votes_none_unless_counted():
    responses = [
        {"text": "#### 5", "finish_reason": "length"},
        {"text": "#### 6", "finish_reason": "stop"},
        {"text": "#### 5"},  # no finish_reason: complete
    ]
    res = vote(responses, k=3)
    assert res.votes == [None, "6", "5"]
    assert (res.answer, res.chosen) == ("6", 1)  # tie 6 vs 5: first seen
    res = vote(responses, k=3, count_truncated=True)
    assert res.votes == ["5", "6", "5"]
    assert (res.answer, res.share, res.chosen) == ("5", pytest.approx(2 / 3), 0)


def test_vote_plain_strings_are_never_truncated():
    assert vote(["#### 5"], k=1, count_truncated=False).votes == ["5"]


def test_vote_extractor_choice():
    responses = ["The total is 1,250", "The total is 1250", "The total is 250"]
    robust = vote(responses, k=3)
    assert robust.votes == ["1250", "1250", "250"] and robust.answer == "1250"
    paper = vote(responses, k=3, extractor="paper")
    assert paper.votes == ["250", "1250", "250"] and paper.answer == "250"
    assert paper.chosen == 0


def test_vote_unknown_extractor():
    with pytest.raises(KeyError):
        vote(["#### 1"], k=1, extractor="nope")


@pytest.mark.parametrize("n, k", [(2, 3), (0, 1), (5, 0), (5, -1)])
def test_vote_needs_k_responses(n, k):
    with pytest.raises(ValueError, match=f"k={k}"):
        vote(["#### 1"] * n, k=k)
