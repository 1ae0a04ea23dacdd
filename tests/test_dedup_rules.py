"""Self-deduplication rules (crescent/dedup.py) on hand-made unit vectors, and `process_call` with a
fake embedder and a fake rewriter: every rejection reason, the rewrite loop, and its ids."""

from __future__ import annotations

import numpy as np
import pytest

from crescent.dedup import (
    AcceptedSet,
    Candidate,
    Decision,
    DedupRules,
    process_call,
    within_call_duplicates,
)

DIM = 4


def e(i: int, dim: int = DIM) -> np.ndarray:
    v = np.zeros(dim, np.float32)
    v[i] = 1.0
    return v


def tilt(c: float, i: int = 0, j: int = 1) -> np.ndarray:
    """A unit vector whose cosine to e(i) is exactly c (c exactly representable in float32)."""
    v = np.zeros(DIM, np.float32)
    v[i], v[j] = c, np.sqrt(1 - c * c)
    return v


def stack(*vs) -> np.ndarray:
    return np.stack(vs).astype(np.float32)


# ---------------------------------------------------------------- within-call rule


def test_within_call_later_one_survives():
    dups = within_call_duplicates(stack(e(0), e(1), tilt(0.96)), 0.95)
    assert list(dups) == [0]  # 0 is dropped for its later near-twin 2; 2 is kept
    j, sim = dups[0]
    assert j == 2 and sim == pytest.approx(0.96)


def test_within_call_first_later_match_is_recorded():
    dups = within_call_duplicates(stack(e(0), e(0), e(1), e(0)), 0.9)
    assert dups == {0: (1, 1.0), 1: (3, 1.0)}  # the last copy survives


def test_within_call_threshold_is_inclusive():
    vecs = stack(e(0), tilt(0.5))
    assert float(vecs[0] @ vecs[1]) == 0.5  # exact in float32
    assert within_call_duplicates(vecs, 0.5) == {0: (1, 0.5)}
    assert within_call_duplicates(vecs, float(np.nextafter(np.float32(0.5), np.float32(1)))) == {}


@pytest.mark.parametrize("n", [0, 1])
def test_within_call_needs_two(n):
    assert within_call_duplicates(np.zeros((n, DIM), np.float32) + e(0), 0.0) == {}


def test_within_call_no_duplicates():
    assert within_call_duplicates(stack(e(0), e(1), e(2)), 0.5) == {}


# ---------------------------------------------------------------- accepted-set rule


def test_nearest_on_empty_set():
    sims, idx = AcceptedSet(DIM).nearest(stack(e(0), e(1)))
    assert np.all(np.isneginf(sims)) and list(idx) == [-1, -1]


def test_screen_on_empty_set_and_sequential_within_block():
    acc = AcceptedSet(DIM)
    d = acc.screen(stack(e(0), e(0), e(1)), 0.9, ["a", "a2", "b"], ["A?", "A2?", "B?"])
    assert d[0] == Decision(True, None, None)
    # the second row sees the first, accepted a moment earlier in the same block
    assert d[1] == Decision(False, 0, pytest.approx(1.0))
    # the third is unique; its nearest is the first row (cos 0)
    assert d[2].accepted and d[2].nearest == 0 and d[2].similarity == pytest.approx(0.0)
    assert acc.n == 2 and acc.ids == ["a", "b"] and acc.texts == ["A?", "B?"]
    np.testing.assert_array_equal(acc.vectors, stack(e(0), e(1)))


def test_screen_against_existing_set_records_nearest():
    acc = AcceptedSet(DIM)
    acc.add(e(0), "x", "X?")
    acc.add(e(1), "y", "Y?")
    d = acc.screen(
        stack(tilt(0.6, 1, 2), e(2), tilt(0.99, 2, 3)), 0.95, ["p", "q", "r"], list("PQR")
    )
    assert d[0] == Decision(True, 1, pytest.approx(0.6))  # nearest is y (index 1)
    assert d[1] == Decision(True, 2, pytest.approx(0.8))  # nearest is p, joined a moment ago
    # r is a near-twin of q, which joined the set at index 3 (after x, y, p)
    assert d[2] == Decision(False, 3, pytest.approx(0.99))
    assert acc.ids == ["x", "y", "p", "q"]


def test_screen_threshold_is_inclusive():
    acc = AcceptedSet(DIM)
    acc.add(e(0), "x", "X?")
    assert acc.screen(stack(tilt(0.5)), 0.5, ["p"], ["P?"]) == [Decision(False, 0, 0.5)]
    above = float(np.nextafter(np.float32(0.5), np.float32(1)))
    assert acc.screen(stack(tilt(0.5)), above, ["p"], ["P?"]) == [Decision(True, 0, 0.5)]


def test_screen_prefers_the_closer_of_set_and_block():
    acc = AcceptedSet(DIM)
    acc.add(tilt(0.8), "x", "X?")  # cos 0.8 to e(0)
    d = acc.screen(stack(e(0), e(0)), 0.9, ["p", "q"], ["P?", "Q?"])
    assert d[0] == Decision(True, 0, pytest.approx(0.8))
    assert d[1] == Decision(False, 1, pytest.approx(1.0))  # p (index 1) is closer than x


def test_screen_add_veto():
    acc = AcceptedSet(DIM)
    d = acc.screen(stack(e(0), e(0)), 0.9, ["p", "q"], ["P?", "Q?"], add=lambda i: False)
    assert [x.accepted for x in d] == [True, True]  # p was vetoed, so q does not see it
    assert acc.n == 0


def test_accepted_set_grows_past_capacity():
    dim = 10
    acc = AcceptedSet(dim, capacity=2)
    basis = np.eye(dim, dtype=np.float32)
    for i in range(10):
        acc.add(basis[i], f"id{i}", f"Q{i}?")
    assert acc.n == 10 and acc.vectors.shape == (10, dim)
    np.testing.assert_array_equal(acc.vectors, basis)
    assert acc.ids == [f"id{i}" for i in range(10)] and acc.texts[-1] == "Q9?"
    sims, idx = acc.nearest(basis[::-1])
    assert list(idx) == list(range(9, -1, -1)) and np.allclose(sims, 1.0)


def test_screen_grows_past_capacity():
    acc = AcceptedSet(DIM, capacity=1)
    d = acc.screen(stack(e(0), e(1), e(2), e(3)), 0.5, list("abcd"), list("ABCD"))
    assert all(x.accepted for x in d) and acc.n == 4 and acc.ids == list("abcd")


# ---------------------------------------------------------------- process_call


class FakeEmbed:
    """Maps each text to a fixed unit vector; records every call."""

    def __init__(self, table: dict[str, np.ndarray]):
        self.table, self.calls = table, []

    def __call__(self, texts: list[str]) -> np.ndarray:
        self.calls.append(list(texts))
        return stack(*(self.table[t] for t in texts))


class FakeRewrite:
    """Returns scripted rewrites per attempt; records what it was asked."""

    def __init__(self, *per_attempt: str):
        self.per_attempt, self.calls = per_attempt, []

    def __call__(self, pairs, attempt):
        self.calls.append((list(pairs), attempt))
        text = self.per_attempt[attempt - 1]
        return [(text, f"raw {text} {attempt}") for _ in pairs]


def no_rewrite(pairs, attempt):
    raise AssertionError("rewrite must not be called")


TABLE = {"Old?": e(0), "Dup of old?": e(0), "New?": e(1), "Other?": e(2), "Near new?": e(1)}


def rules(max_rewrites=0, recheck=True) -> DedupRules:
    return DedupRules(
        threshold=0.9, batch_threshold=0.9, max_rewrites=max_rewrites, recheck=recheck
    )


def seeded() -> AcceptedSet:
    acc = AcceptedSet(DIM)
    acc.add(e(0), "old", "Old?")
    return acc


def cand(i: int, text: str, raw: str | None = None) -> Candidate:
    return Candidate(f"c00001-s{i:03d}", text, raw if raw is not None else f"raw {text}", call=1)


def test_process_call_cleaning_rejection_and_acceptance():
    embed = FakeEmbed(TABLE)
    acc = AcceptedSet(DIM)
    res = process_call([cand(0, "", "chatter only"), cand(1, "New?")], None, acc, rules(), embed,
                       no_rewrite, "questions")  # fmt: skip
    assert embed.calls == [["New?"]]  # the empty one is never embedded
    assert [r["id"] for r in res.rejected] == ["c00001-s000"]
    rej = res.rejected[0]
    assert rej["reason"] == "cleaning" and rej["stage"] == "questions"
    assert rej["question"] == "" and rej["raw"] == "chatter only"
    assert [r["question"] for r in res.accepted] == ["New?"]
    row = res.accepted[0]
    assert row["origin"] == "bait" and row["rewrites"] == 0 and row["nearest_id"] is None
    assert "reason" not in row
    assert len(res.vectors) == 1 and np.array_equal(res.vectors[0], e(1))
    assert acc.ids == ["c00001-s001"]
    assert res.stats == {"accepted": 1, "rejected": 1, "reasons": {"cleaning": 1}}


def test_process_call_all_empty_never_embeds():
    res = process_call(
        [cand(0, "")], None, AcceptedSet(DIM), rules(), FakeEmbed({}), no_rewrite, "q"
    )
    assert res.stats == {"accepted": 0, "rejected": 1, "reasons": {"cleaning": 1}}


def test_process_call_uses_given_vectors():
    def embed(texts):
        raise AssertionError("vectors were given")

    vecs = stack(e(3), e(1))  # rows of all candidates, the empty one included
    res = process_call([cand(0, ""), cand(1, "Other?")], vecs, AcceptedSet(DIM), rules(), embed,
                       no_rewrite, "dedup")  # fmt: skip
    assert np.array_equal(res.vectors[0], e(1))


def test_process_call_within_call():
    cands = [cand(0, "New?"), cand(1, "Near new?"), cand(2, "Other?")]
    res = process_call(cands, None, AcceptedSet(DIM), rules(), FakeEmbed(TABLE), no_rewrite, "q")
    assert [r["id"] for r in res.accepted] == ["c00001-s001", "c00001-s002"]
    (rej,) = res.rejected
    assert rej["id"] == "c00001-s000" and rej["reason"] == "within_call"
    assert rej["nearest_id"] == "c00001-s001" and rej["nearest_question"] == "Near new?"
    assert rej["similarity"] == 1.0


def test_process_call_duplicate_without_rewrites():
    acc = seeded()
    res = process_call([cand(0, "Dup of old?"), cand(1, "New?")], None, acc, rules(0),
                       FakeEmbed(TABLE), no_rewrite, "q")  # fmt: skip
    (rej,) = res.rejected
    assert rej["reason"] == "duplicate" and rej["id"] == "c00001-s000"
    assert (rej["nearest_id"], rej["nearest_question"], rej["similarity"]) == ("old", "Old?", 1.0)
    assert [r["question"] for r in res.accepted] == ["New?"]
    assert res.accepted[0]["nearest_id"] == "old" and res.accepted[0]["similarity"] == 0.0
    assert acc.ids == ["old", "c00001-s001"]


def test_process_call_rewrite_still_duplicate_is_retried_then_rejected():
    acc = seeded()
    rw = FakeRewrite("Dup of old?", "Dup of old?")
    res = process_call([cand(0, "Dup of old?")], None, acc, rules(2, recheck=True),
                       FakeEmbed(TABLE), rw, "q")  # fmt: skip
    assert [a for _, a in rw.calls] == [1, 2]
    assert rw.calls[0][0] == [("Dup of old?", "Old?")]  # (question, its nearest accepted)
    assert res.accepted == []
    (rej,) = res.rejected
    assert rej["reason"] == "duplicate_after_rewrite"
    assert rej["id"] == "c00001-s000-r2"  # not "-r1-r2"
    assert rej["origin"] == "rewrite" and rej["rewrites"] == 2
    assert rej["nearest_id"] == "old" and rej["raw"] == "raw Dup of old? 2"
    assert acc.n == 1


def test_process_call_unique_rewrite_is_accepted():
    acc = seeded()
    rw = FakeRewrite("New?", "Other?")
    res = process_call([cand(0, "Dup of old?")], None, acc, rules(2, recheck=True),
                       FakeEmbed(TABLE), rw, "q")  # fmt: skip
    assert len(rw.calls) == 1  # unique at the first attempt
    assert res.rejected == []
    (row,) = res.accepted
    assert row["id"] == "c00001-s000-r1" and row["origin"] == "rewrite" and row["rewrites"] == 1
    assert row["question"] == "New?" and row["raw"] == "raw New? 1" and row["call"] == 1
    assert acc.ids == ["old", "c00001-s000-r1"]


def test_process_call_second_rewrite_accepted():
    acc = seeded()
    rw = FakeRewrite("Dup of old?", "New?")
    res = process_call([cand(0, "Dup of old?")], None, acc, rules(3, recheck=True),
                       FakeEmbed(TABLE), rw, "q")  # fmt: skip
    assert rw.calls[1][0] == [("Dup of old?", "Old?")]
    assert [r["id"] for r in res.accepted] == ["c00001-s000-r2"]
    assert res.accepted[0]["rewrites"] == 2 and res.rejected == []


def test_process_call_paper_accepts_rewrites_unchecked():
    acc = seeded()
    rw = FakeRewrite("Dup of old?", "New?")
    res = process_call([cand(0, "Dup of old?")], None, acc, rules(2, recheck=False),
                       FakeEmbed(TABLE), rw, "q")  # fmt: skip
    assert len(rw.calls) == 1
    (row,) = res.accepted
    assert row["id"] == "c00001-s000-r1" and row["question"] == "Dup of old?"
    assert row["nearest_id"] == "old" and row["similarity"] == 1.0  # recorded, not enforced
    assert res.rejected == [] and acc.n == 2


def test_process_call_empty_rewrite():
    acc = seeded()
    rw = FakeRewrite("", "New?")
    res = process_call([cand(0, "Dup of old?")], None, acc, rules(2, recheck=True),
                       FakeEmbed(TABLE), rw, "q")  # fmt: skip
    assert len(rw.calls) == 1  # nothing left to rewrite
    (rej,) = res.rejected
    assert rej["reason"] == "empty_rewrite" and rej["id"] == "c00001-s000-r1"
    assert rej["origin"] == "rewrite" and rej["question"] == "" and rej["raw"] == "raw  1"
    assert res.accepted == [] and acc.n == 1


def test_null_thresholds_switch_both_rules_off():
    """dedup.threshold=null and dedup.batch_threshold=null (the no-deduplication ablation): even
    identical questions, within a call and against the accepted set, are all kept."""
    from omegaconf import OmegaConf

    off = DedupRules.from_config(OmegaConf.create(
        {"threshold": None, "batch_threshold": None, "max_rewrites": 0, "recheck": True}))  # fmt: skip
    on = DedupRules.from_config(OmegaConf.create(
        {"threshold": 0.9, "batch_threshold": 0.9, "max_rewrites": 0, "recheck": True}))  # fmt: skip
    assert on == rules()
    calls = [cand(0, "Old?"), cand(1, "Dup of old?"), cand(2, "New?"), cand(3, "Near new?")]
    res = process_call(calls, None, seeded(), off, FakeEmbed(TABLE), no_rewrite, "questions")
    assert [r["question"] for r in res.accepted] == [c.text for c in calls] and not res.rejected
    res = process_call(calls, None, seeded(), on, FakeEmbed(TABLE), no_rewrite, "questions")
    assert len(res.accepted) == 1  # with the rules on, only one of the four is new
