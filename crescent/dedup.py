"""Rejection-sampling self-deduplication: the rules, on unit-norm embeddings (cosine = dot product).

Two rules (DESIGN.md §1.2), both "duplicate iff cosine >= threshold":
- within-call: question i of a generation call is dropped if it is a near-duplicate of any *later*
  question j of the same call (so the later one survives);
- accepted-set: a question is a duplicate if its max cosine to every question accepted so far is
  >= threshold; questions are decided in order and an accepted one is seen by the next at once.

`AcceptedSet.screen` decides a whole block with two matrix products (block x accepted, block x block)
and a short sequential pass, instead of one nearest-neighbour search per question: identical
decisions to a per-question exact search (bench/dedup_speed.py measures both).

`dedup.index` picks how the accepted set is searched: `exact` (the default, above) or an
approximate FAISS index, `hnsw` (IndexHNSWFlat) or `ivf` (IndexIVFFlat), both on inner product, for
accepted sets too large to scan per call (`ApproxAcceptedSet`; bench/dedup_scale.py measures speed
and recall against exact). An approximate index may miss a near-duplicate, so it changes decisions
and is hashed into the stage fingerprint; exact adds nothing to it.

`process_call` is the per-call procedure shared by the `questions` and `dedup` stages: clean ->
within-call rule -> accepted-set rule -> LLM rewrite of near-duplicates (re-checked up to
`max_rewrites` times, or accepted unchecked as the paper does) -> reject the rest, with reasons.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np


@dataclass
class Decision:
    accepted: bool
    nearest: int | None  # index into the accepted set (None when it was empty)
    similarity: float | None


class AcceptedSet:
    """The growing set of accepted questions: unit vectors, ids and texts."""

    def __init__(self, dim: int, capacity: int = 1024):
        self._vecs = np.zeros((capacity, dim), dtype=np.float32)
        self.n = 0
        self.ids: list[str] = []
        self.texts: list[str] = []

    @property
    def dim(self) -> int:
        return self._vecs.shape[1]

    @property
    def vectors(self) -> np.ndarray:
        return self._vecs[: self.n]

    def add(self, vec: np.ndarray, id_: str, text: str) -> None:
        if self.n == len(self._vecs):
            grown = np.zeros((2 * len(self._vecs), self._vecs.shape[1]), dtype=np.float32)
            grown[: self.n] = self._vecs[: self.n]
            self._vecs = grown
        self._vecs[self.n] = vec
        self.n += 1
        self.ids.append(id_)
        self.texts.append(text)

    def nearest(self, vecs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Max cosine and its index in the accepted set, for each row of `vecs` (-inf/-1 if empty)."""
        if self.n == 0:
            return np.full(len(vecs), -np.inf, np.float32), np.full(len(vecs), -1)
        sims = vecs @ self.vectors.T
        idx = sims.argmax(axis=1)
        return sims[np.arange(len(vecs)), idx], idx

    def screen(
        self,
        vecs: np.ndarray,
        threshold: float,
        ids: list[str],
        texts: list[str],
        add: Callable[[int], bool] | None = None,
    ) -> list[Decision]:
        """Decide rows of `vecs` in order against the accepted set; accepted rows join it at once.

        `add(i)` may veto adding an accepted row (default: every accepted row is added).
        """
        base_sim, base_idx = self.nearest(vecs)
        gram = vecs @ vecs.T if len(vecs) > 1 else None
        start = self.n
        joined: list[int] = []  # block rows added to the set, in order
        decisions = []
        for i in range(len(vecs)):
            sim, idx = float(base_sim[i]), int(base_idx[i])
            if joined:
                row = gram[i, joined]
                j = int(row.argmax())
                if row[j] > sim:
                    sim, idx = float(row[j]), start + j
            dup = idx >= 0 and sim >= threshold
            decisions.append(
                Decision(not dup, idx if idx >= 0 else None, sim if idx >= 0 else None)
            )
            if not dup and (add is None or add(i)):
                self.add(vecs[i], ids[i], texts[i])
                joined.append(i)
        return decisions


INDEXES = ("exact", "hnsw", "ivf")


@dataclass(frozen=True)
class IndexSpec:
    """How the accepted set is searched (`dedup.index` and its parameters)."""

    kind: str = "exact"  # exact | hnsw | ivf
    buffer: int = 1000  # approximate: newest accepted vectors searched exactly, indexed in groups
    hnsw_m: int = 32
    hnsw_ef_construction: int = 80
    hnsw_ef_search: int = 64
    ivf_nlist: int = 1024
    ivf_nprobe: int = 32
    ivf_train_size: int = 40000

    @classmethod
    def from_config(cls, d) -> IndexSpec:
        """From the `dedup` config group; a group without `index` (older configs) is exact."""
        kind = d.get("index", "exact") or "exact"
        if kind == "exact":
            return cls()
        h, v = d.get("hnsw") or {}, d.get("ivf") or {}
        base = cls()
        return cls(
            kind=str(kind),
            buffer=int(d.get("index_buffer", base.buffer)),
            hnsw_m=int(h.get("m", base.hnsw_m)),
            hnsw_ef_construction=int(h.get("ef_construction", base.hnsw_ef_construction)),
            hnsw_ef_search=int(h.get("ef_search", base.hnsw_ef_search)),
            ivf_nlist=int(v.get("nlist", base.ivf_nlist)),
            ivf_nprobe=int(v.get("nprobe", base.ivf_nprobe)),
            ivf_train_size=int(v.get("train_size", base.ivf_train_size)),
        )

    def identity(self) -> dict | None:
        """What changes decisions (hashed into the fingerprint); None for exact."""
        if self.kind == "exact":
            return None
        if self.kind == "hnsw":
            params = {
                "m": self.hnsw_m,
                "ef_construction": self.hnsw_ef_construction,
                "ef_search": self.hnsw_ef_search,
            }
        elif self.kind == "ivf":
            params = {
                "nlist": self.ivf_nlist,
                "nprobe": self.ivf_nprobe,
                "train_size": self.ivf_train_size,
            }
        else:
            raise ValueError(f"dedup.index={self.kind}: must be one of {', '.join(INDEXES)}")
        return {"kind": self.kind, "buffer": self.buffer, **params}


class ApproxAcceptedSet(AcceptedSet):
    """The accepted set searched through an approximate FAISS index (inner product = cosine).

    The newest accepted vectors (fewer than `spec.buffer`; for `ivf`, until `ivf_train_size` of
    them have been accepted, all of them) are kept in a small matrix searched exactly; when it
    fills, it enters the index in one group (`ivf`: the first group also trains the k-means cells).
    So the index's content is a function of the accepted sequence alone, not of how it was cut
    into calls or chunks: replaying saved chunks on resume rebuilds the same index and the run
    continues with the same decisions. Graph inserts run on one thread because FAISS's parallel
    HNSW insert depends on thread timing (with one thread it is also no slower here: 2 cores).

    A decision's `nearest`/`similarity` are the best match found, not always the true nearest.
    Only the exact part is held in numpy; the rest lives in the index (`vectors` rebuilds it).
    """

    def __init__(self, dim: int, spec: IndexSpec):
        if spec.kind not in ("hnsw", "ivf"):
            raise ValueError(f"ApproxAcceptedSet needs index hnsw or ivf, not {spec.kind}")
        try:
            import faiss  # noqa: F401  (fail here, not at the first flush mid-run)
        except ImportError as e:
            raise ImportError(
                f"dedup.index={spec.kind} needs faiss-cpu: pip install faiss-cpu"
            ) from e
        super().__init__(dim, capacity=min(spec.buffer, 1024))
        self.spec = spec
        self.k = 0  # accepted vectors not yet in the index (rows of self._vecs)
        self.index = None  # the FAISS index, created at the first flush

    @property
    def indexed(self) -> int:
        return self.n - self.k

    @property
    def vectors(self) -> np.ndarray:
        tail = self._vecs[: self.k]
        if not self.indexed:
            return tail.copy()
        return np.concatenate([self.index.reconstruct_n(0, self.indexed), tail])

    def add(self, vec: np.ndarray, id_: str, text: str) -> None:
        if self.k == len(self._vecs):
            grown = np.zeros((2 * len(self._vecs), self.dim), dtype=np.float32)
            grown[: self.k] = self._vecs[: self.k]
            self._vecs = grown
        self._vecs[self.k] = vec
        self.k += 1
        self.n += 1
        self.ids.append(id_)
        self.texts.append(text)
        first = self.spec.ivf_train_size if self.spec.kind == "ivf" else self.spec.buffer
        if self.k >= (self.spec.buffer if self.index is not None else first):
            self._flush()

    def _flush(self) -> None:
        import faiss

        tail = np.ascontiguousarray(self._vecs[: self.k])
        if self.index is None:
            self.index = self._build(faiss, tail)
        threads = faiss.omp_get_max_threads()
        faiss.omp_set_num_threads(1)  # serial insert: the HNSW graph must not depend on timing
        try:
            self.index.add(tail)
        finally:
            faiss.omp_set_num_threads(threads)
        self.k = 0
        if len(self._vecs) >= 2 * max(self.spec.buffer, 1024):  # IVF's training rows: free them
            self._vecs = np.zeros((min(self.spec.buffer, 1024), self.dim), dtype=np.float32)

    def _build(self, faiss, train: np.ndarray):
        s = self.spec
        if s.kind == "hnsw":
            index = faiss.IndexHNSWFlat(self.dim, s.hnsw_m, faiss.METRIC_INNER_PRODUCT)
            index.hnsw.efConstruction = s.hnsw_ef_construction
            index.hnsw.efSearch = s.hnsw_ef_search
            return index
        self._quantizer = faiss.IndexFlatIP(self.dim)
        index = faiss.IndexIVFFlat(
            self._quantizer, self.dim, s.ivf_nlist, faiss.METRIC_INNER_PRODUCT
        )
        index.cp.spherical = True  # unit-norm centroids: cells by cosine
        index.cp.seed = 1234  # faiss's default, pinned: the cells must not change between runs
        index.train(train)  # exactly the first ivf_train_size accepted vectors
        index.nprobe = s.ivf_nprobe
        index.make_direct_map()  # lets `vectors` reconstruct rows
        return index

    def nearest(self, vecs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Max cosine and its index: the index's best match or the exact part's, the larger."""
        if self.n == 0:
            return np.full(len(vecs), -np.inf, np.float32), np.full(len(vecs), -1)
        sims = np.full(len(vecs), -np.inf, np.float32)
        idx = np.full(len(vecs), -1, np.int64)
        if self.indexed:
            d, i = self.index.search(np.ascontiguousarray(vecs, dtype=np.float32), 1)
            found = i[:, 0] >= 0  # an IVF search can probe only empty cells
            sims[found], idx[found] = d[found, 0], i[found, 0]
        if self.k:
            block = vecs @ self._vecs[: self.k].T
            j = block.argmax(axis=1)
            best = block[np.arange(len(vecs)), j]
            closer = best > sims  # ties keep the earlier (indexed) question
            sims[closer], idx[closer] = best[closer], self.indexed + j[closer]
        return sims, idx


def make_accepted_set(dim: int, spec: IndexSpec | None = None) -> AcceptedSet:
    """An empty accepted set searched as `spec` says (default: exact)."""
    if spec is None or spec.kind == "exact":
        return AcceptedSet(dim)
    return ApproxAcceptedSet(dim, spec)


def within_call_duplicates(vecs: np.ndarray, threshold: float) -> dict[int, tuple[int, float]]:
    """{i: (j, cos)} for each i that has a later j with cos >= threshold (the first such j)."""
    out = {}
    if len(vecs) < 2:
        return out
    gram = vecs @ vecs.T
    for i in range(len(vecs) - 1):
        later = np.nonzero(gram[i, i + 1 :] >= threshold)[0]
        if len(later):
            j = i + 1 + int(later[0])
            out[i] = (j, float(gram[i, j]))
    return out


@dataclass
class Candidate:
    id: str
    text: str  # cleaned question ("" = cleaning rejected it)
    raw: str  # model output / user's row before cleaning
    call: int
    origin: str = "bait"  # bait | rewrite | input
    rewrites: int = 0
    nearest_id: str | None = None
    nearest_question: str | None = None
    similarity: float | None = None

    def row(self, **extra) -> dict:
        sim = None if self.similarity is None else round(self.similarity, 6)
        return {
            "id": self.id,
            "question": self.text,
            "origin": self.origin,
            "call": self.call,
            "nearest_id": self.nearest_id,
            "nearest_question": self.nearest_question,
            "similarity": sim,
            "rewrites": self.rewrites,
            "raw": self.raw,
            **extra,
        }


@dataclass
class CallResult:
    accepted: list[dict] = field(default_factory=list)
    rejected: list[dict] = field(default_factory=list)
    vectors: list[np.ndarray] = field(default_factory=list)  # of accepted rows, in order

    @property
    def stats(self) -> dict:
        reasons: dict[str, int] = {}
        for r in self.rejected:
            reasons[r["reason"]] = reasons.get(r["reason"], 0) + 1
        return {"accepted": len(self.accepted), "rejected": len(self.rejected), "reasons": reasons}


@dataclass
class DedupRules:
    threshold: float  # accepted-set rule
    batch_threshold: float  # within-call rule
    max_rewrites: int  # 0: drop near-duplicates without asking the model
    recheck: bool  # re-check rewrites (ours) or accept them unchecked (paper)
    index: IndexSpec = IndexSpec()  # how the accepted set is searched (exact by default)

    @classmethod
    def from_config(cls, d) -> DedupRules:
        """From the `dedup` config group; a threshold of null switches that rule off (no cosine
        reaches infinity), e.g. for the no-deduplication ablation."""
        off = lambda t: math.inf if t is None else float(t)  # noqa: E731
        return cls(
            off(d.threshold),
            off(d.batch_threshold),
            int(d.max_rewrites),
            bool(d.recheck),
            IndexSpec.from_config(d),
        )


Embed = Callable[[list[str]], np.ndarray]
# rewrite(pairs of (question, nearest question), attempt) -> cleaned rewrites (may be "")
Rewrite = Callable[[list[tuple[str, str]], int], list[tuple[str, str]]]


def process_call(
    cands: list[Candidate],
    vecs: np.ndarray | None,
    accepted: AcceptedSet,
    rules: DedupRules,
    embed: Embed,
    rewrite: Rewrite | None,
    stage: str,
) -> CallResult:
    """Run one generation call's candidates through cleaning, both rules and the rewrite loop.

    `vecs` are the candidates' embeddings (None: embed the non-empty ones here). `rewrite` returns
    (cleaned, raw) pairs. Mutates `accepted`.
    """
    res = CallResult()

    def reject(c: Candidate, reason: str) -> None:
        res.rejected.append(c.row(reason=reason, stage=stage))

    live = [i for i, c in enumerate(cands) if c.text]
    for c in cands:
        if not c.text:
            reject(c, "cleaning")
    if not live:
        return res
    live_vecs = vecs[live] if vecs is not None else embed([cands[i].text for i in live])
    live_cands = [cands[i] for i in live]

    dups = within_call_duplicates(live_vecs, rules.batch_threshold)
    for i, (j, sim) in dups.items():
        c = live_cands[i]
        c.nearest_id, c.nearest_question, c.similarity = live_cands[j].id, live_cands[j].text, sim
        reject(c, "within_call")
    keep = [i for i in range(len(live_cands)) if i not in dups]
    pending = _screen(
        accepted, [live_cands[i] for i in keep], live_vecs[keep], rules.threshold, res
    )

    attempt = 0
    while pending and attempt < rules.max_rewrites and rewrite is not None:
        attempt += 1
        outs = rewrite([(c.text, c.nearest_question or "") for c in pending], attempt)
        fresh = []
        for c, (text, raw) in zip(pending, outs, strict=True):
            base = c.id.rsplit("-r", 1)[0] if c.origin == "rewrite" else c.id
            c2 = Candidate(f"{base}-r{attempt}", text, raw, c.call, "rewrite", attempt)
            if text:
                fresh.append(c2)
            else:
                reject(c2, "empty_rewrite")
        if not fresh:
            pending = []
            break
        fvecs = embed([c.text for c in fresh])
        if rules.recheck:
            pending = _screen(accepted, fresh, fvecs, rules.threshold, res)
        else:  # paper: accept every rewrite unchecked (nearest recorded for the record)
            pending = []
            _screen(accepted, fresh, fvecs, float("inf"), res)
    for c in pending:
        reject(c, "duplicate" if rules.max_rewrites == 0 else "duplicate_after_rewrite")
    return res


def _screen(
    accepted: AcceptedSet,
    cands: list[Candidate],
    vecs: np.ndarray,
    threshold: float,
    res: CallResult,
) -> list[Candidate]:
    """Accept the unique candidates (recorded in `res`), return the near-duplicates."""
    if not cands:
        return []
    decisions = accepted.screen(vecs, threshold, [c.id for c in cands], [c.text for c in cands])
    pending = []
    for c, v, d in zip(cands, vecs, decisions, strict=True):
        if d.nearest is not None:
            c.nearest_id, c.nearest_question = accepted.ids[d.nearest], accepted.texts[d.nearest]
            c.similarity = d.similarity
        if d.accepted:
            res.accepted.append(c.row())
            res.vectors.append(v)
        else:
            pending.append(c)
    return pending
