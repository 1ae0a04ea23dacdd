"""`dedup.index`: the approximate accepted-set indexes (FAISS HNSW / IVF) against exact search,
their resume behaviour, and how the choice enters the fingerprint and the config checks."""

from __future__ import annotations

import numpy as np
import pytest
from omegaconf import OmegaConf

from crescent.dedup import (
    AcceptedSet,
    ApproxAcceptedSet,
    DedupRules,
    IndexSpec,
    make_accepted_set,
)
from crescent.errors import ConfigError
from crescent.stages.keys import dedup_rules
from crescent.validate import validate

pytest.importorskip("faiss")

DIM = 32
THRESHOLD = 0.875


def stream(n: int = 1500, seed: int = 0) -> np.ndarray:
    """Unit rows in topics of ~10 (cosine ~0.3-0.6 within a topic) plus 20% noisy copies of earlier
    rows at cosine 0.88-0.98: a known share of near-duplicates, none close to the threshold."""
    rng = np.random.default_rng(seed)

    def unit(x):
        return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)

    n_base = int(n * 0.8)
    centers = unit(rng.standard_normal((n_base // 10, DIM)))
    w = rng.uniform(0.3, 0.6, (n_base, 1))
    base = unit(
        np.sqrt(w) * centers[rng.integers(0, len(centers), n_base)]
        + np.sqrt(1 - w) * unit(rng.standard_normal((n_base, DIM)))
    )
    rows = list(base)
    for _ in range(n - n_base):  # a copy of a random earlier row, inserted at a random later place
        pos = int(rng.integers(1, len(rows) + 1))
        src = rows[int(rng.integers(0, pos))]
        t = rng.uniform(0.88, 0.98)
        u = rng.standard_normal(DIM)
        u -= (u @ src) * src
        rows.insert(pos, unit(t * src + np.sqrt(1 - t**2) * unit(u)))
    return np.stack(rows)


def decide(acc: AcceptedSet, vecs: np.ndarray, call: int = 100, start: int = 0):
    out = []
    for s in range(0, len(vecs), call):
        block = vecs[s : s + call]
        ids = [f"q{start + s + i}" for i in range(len(block))]
        out += acc.screen(block, THRESHOLD, ids, ids)
    return out


HNSW_FULL = IndexSpec("hnsw", buffer=100, hnsw_m=16, hnsw_ef_construction=200, hnsw_ef_search=512)
IVF_FULL = IndexSpec("ivf", buffer=100, ivf_nlist=8, ivf_nprobe=8, ivf_train_size=200)


@pytest.mark.parametrize("spec", [HNSW_FULL, IVF_FULL], ids=["hnsw", "ivf"])
def test_approximate_index_with_a_wide_search_decides_like_exact(spec):
    vecs = stream()
    exact = decide(AcceptedSet(DIM), vecs)
    approx_set = make_accepted_set(DIM, spec)
    approx = decide(approx_set, vecs)
    assert isinstance(approx_set, ApproxAcceptedSet) and approx_set.index is not None
    assert approx_set.indexed > 500  # most of the accepted set was searched through the index
    assert [d.accepted for d in approx] == [d.accepted for d in exact]
    assert 250 < sum(not d.accepted for d in exact) < 320  # the planted copies, give or take
    for a, e in zip(approx, exact, strict=True):
        assert a.nearest == e.nearest and a.similarity == pytest.approx(e.similarity, abs=1e-5)


@pytest.mark.parametrize("spec", [HNSW_FULL, IVF_FULL], ids=["hnsw", "ivf"])
def test_approximate_set_keeps_ids_and_vectors_in_order(spec):
    vecs = stream(600)
    acc = make_accepted_set(DIM, spec)
    decisions = decide(acc, vecs)
    kept = [i for i, d in enumerate(decisions) if d.accepted]
    assert acc.n == len(kept) and acc.ids == [f"q{i}" for i in kept]
    np.testing.assert_array_equal(acc.vectors, vecs[kept])


@pytest.mark.parametrize(
    "spec",
    [
        IndexSpec("hnsw", buffer=64, hnsw_m=4, hnsw_ef_construction=8, hnsw_ef_search=2),
        IndexSpec("ivf", buffer=64, ivf_nlist=16, ivf_nprobe=1, ivf_train_size=150),
    ],
    ids=["hnsw", "ivf"],
)
def test_resume_replays_into_the_same_index_and_decisions(spec):
    """A weak index (it misses near-duplicates) still decides the same after a resume: replaying
    the saved accepted vectors one by one, as DedupLoop does, rebuilds the index the crashed run
    had, so the run continues exactly as an uninterrupted one."""
    vecs, cut, call = stream(1500, seed=1), 37 * 19, 37
    straight = decide(make_accepted_set(DIM, spec), vecs, call)
    assert decide(make_accepted_set(DIM, spec), vecs, call) == straight  # same run twice

    crashed = make_accepted_set(DIM, spec)
    assert decide(crashed, vecs[:cut], call) == straight[:cut]
    resumed = make_accepted_set(DIM, spec)
    for v, id_ in zip(crashed.vectors, crashed.ids, strict=True):
        resumed.add(v, id_, id_)
    assert decide(resumed, vecs[cut:], call, start=cut) == straight[cut:]

    # the weak index does miss near-duplicates, so the equalities above mean something
    exact = decide(AcceptedSet(DIM), vecs, call)
    assert [d.accepted for d in straight] != [d.accepted for d in exact]


def test_index_content_does_not_depend_on_call_sizes():
    spec = IndexSpec("hnsw", buffer=64, hnsw_m=4, hnsw_ef_construction=8, hnsw_ef_search=2)
    vecs = stream(1200, seed=2)
    a, b = make_accepted_set(DIM, spec), make_accepted_set(DIM, spec)
    for v in vecs:  # the same accepted sequence, added one by one vs in one block
        a.add(v, "x", "x")
    b.screen(vecs, np.inf, ["x"] * len(vecs), ["x"] * len(vecs))  # nothing is a duplicate
    probe = stream(300, seed=3)
    sa, ia = a.nearest(probe)
    sb, ib = b.nearest(probe)
    np.testing.assert_array_equal(ia, ib)
    np.testing.assert_array_equal(sa, sb)


def test_exact_is_the_default_and_the_plain_accepted_set():
    d = OmegaConf.create({"threshold": 0.9, "batch_threshold": 0.9, "max_rewrites": 0,
                          "recheck": True})  # fmt: skip
    rules = DedupRules.from_config(d)  # a config without `index` (older experiment files)
    assert rules.index == IndexSpec() and rules.index.identity() is None
    assert type(make_accepted_set(DIM, rules.index)) is AcceptedSet


def test_fingerprint_unchanged_for_exact_changed_for_approximate(compose):
    base = dedup_rules(compose([]))
    assert base == {  # exactly the keys hashed before `dedup.index` existed
        "embedder": "all-MiniLM-L6-v2",
        "threshold": 0.875,
        "batch_threshold": 0.85,
        "max_rewrites": 2,
        "recheck": True,
    }
    # approximate-index parameters are ignored while the index is exact
    assert dedup_rules(compose(["dedup.hnsw.ef_search=8", "dedup.ivf.nlist=4"])) == base
    hnsw = dedup_rules(compose(["dedup.index=hnsw"]))
    assert hnsw["index"] == {"kind": "hnsw", "buffer": 1000, "m": 32, "ef_construction": 80,
                             "ef_search": 64}  # fmt: skip
    assert {k: v for k, v in hnsw.items() if k != "index"} == base
    assert dedup_rules(compose(["dedup.index=hnsw", "dedup.hnsw.ef_search=128"])) != hnsw
    ivf = dedup_rules(compose(["dedup.index=ivf"]))
    assert ivf["index"]["kind"] == "ivf" and ivf != hnsw
    assert dedup_rules(compose(["dedup.index=ivf", "dedup.ivf.nprobe=8"])) != ivf


@pytest.mark.parametrize(
    "overrides,message",
    [
        (["dedup.index=annoy"], "dedup.index=annoy: must be one of exact, hnsw, ivf"),
        (["dedup.index=hnsw", "dedup.hnsw.ef_search=0"], "dedup.hnsw.ef_search=0: must be an integer >= 1"),
        (["dedup.hnsw.m=1"], "dedup.hnsw.m=1: must be an integer >= 2"),
        (["dedup.index=ivf", "dedup.ivf.train_size=100"], "dedup.ivf.train_size=100: must be >= dedup.ivf.nlist=1024"),
    ],
)  # fmt: skip
def test_index_config_is_validated(compose, overrides, message):
    with pytest.raises(ConfigError, match="^" + message.replace("(", r"\(")):
        validate(compose(overrides))


@pytest.mark.parametrize("index", ["exact", "hnsw", "ivf"])
def test_index_options_validate(compose, index):
    validate(compose([f"dedup.index={index}"]))


@pytest.mark.parametrize("spec", [IndexSpec("hnsw", buffer=50, hnsw_m=4, hnsw_ef_construction=8,
                                            hnsw_ef_search=2)], ids=["hnsw"])  # fmt: skip
def test_dedup_loop_resumes_byte_identical_with_an_approximate_index(tmp_path, spec):
    """The stages' loop with a weak HNSW index: killed after 3 of 8 chunks, re-run on the same
    cache entry (chunks 0-2 replayed into the index), it writes the same files as a run that was
    never interrupted."""
    from types import SimpleNamespace

    from crescent.cache import CacheEntry
    from crescent.dedup import Candidate
    from crescent.stages.dedup_loop import DedupLoop

    vecs = stream(1600, seed=4)
    rules = DedupRules(THRESHOLD, 0.85, 0, True, spec)

    def chunk_calls(k: int):  # chunk k: 2 calls of 100 rows
        def source(call):
            rows = range(call * 100, call * 100 + 100)
            cands = [Candidate(f"r{i:05d}", f"q{i}?", f"q{i}?", call, "input") for i in rows]
            return lambda: (cands, vecs[rows.start : rows.stop])

        return [(c, source(c)) for c in (2 * k, 2 * k + 1)]

    def run(root, stop_after=None):
        ctx = SimpleNamespace(entry=CacheEntry(root, "dedup", "f" * 16))
        loop = DedupLoop(ctx, rules, None, lambda call: None, DIM, "dedup")
        for k in range(8):
            if k == stop_after:
                return None
            loop.run_chunk(f"{k:05d}", chunk_calls(k))
        loop.write_outputs()
        return loop, ctx.entry.dir

    straight, ref_dir = run(tmp_path / "a")
    assert run(tmp_path / "b", stop_after=3) is None
    resumed, out_dir = run(tmp_path / "b")
    assert resumed.replayed_chunks == 3 and resumed.accepted_set.indexed > 0
    for name in ("questions.jsonl", "rejected.jsonl", "calls.jsonl"):
        assert (out_dir / name).read_bytes() == (ref_dir / name).read_bytes(), name
