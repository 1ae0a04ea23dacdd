"""The resumable online-dedup loop shared by the `questions` and `dedup` stages.

Work is done in chunks (one generation call for `questions`, a group of calls for `dedup`). Each
finished chunk is saved as `chunks/<name>.npy` (embeddings of its accepted questions) and then
`chunks/<name>.json` (accepted rows, rejected rows, per-call stats; written last, so its presence
means the chunk is complete). After a crash the loop replays finished chunks into the accepted set
and continues at the first missing one, so the final files equal those of an uninterrupted run
(also with an approximate `dedup.index`: its content depends only on the accepted sequence).
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable

import numpy as np

from crescent.cache import load_or_discard
from crescent.dedup import Candidate, DedupRules, make_accepted_set, process_call
from crescent.fsutil import atomic_write_bytes, atomic_write_json, atomic_write_jsonl
from crescent.records import QUESTIONS, REJECTED

# one call of a chunk: (call id, a function returning its candidates and optional embeddings)
CallSource = tuple[int, Callable[[], tuple[list[Candidate], np.ndarray | None]]]


class DedupLoop:
    def __init__(self, ctx, rules: DedupRules, embed, rewrite_for_call, dim: int, stage: str):
        self.ctx, self.rules, self.embed, self.stage = ctx, rules, embed, stage
        self.rewrite_for_call = rewrite_for_call  # call id -> rewrite function (or None)
        self.accepted_set = make_accepted_set(dim, rules.index)
        self.accepted: list[dict] = []
        self.rejected: list[dict] = []
        self.calls: list[dict] = []
        self.replayed_chunks = 0

    def is_saved(self, name: str) -> bool:
        """Whether chunk `name` was completed by an earlier run (it is checked when replayed)."""
        return self.ctx.entry.chunk(f"{name}.json").is_file()

    def run_chunk(self, name: str, calls: list[CallSource]) -> None:
        jpath, npath = self.ctx.entry.chunk(f"{name}.json"), self.ctx.entry.chunk(f"{name}.npy")

        def load():
            data = json.loads(jpath.read_text(encoding="utf-8"))
            vecs = np.load(npath)
            if len(vecs) != len(data["accepted"]):
                raise ValueError(f"{len(vecs)} embeddings for {len(data['accepted'])} questions")
            return data, vecs

        saved = load_or_discard([jpath, npath], load, "dedup chunk")
        if saved is not None:
            data, vecs = saved
            for row, v in zip(data["accepted"], vecs, strict=True):
                self.accepted_set.add(v, row["id"], row["question"])
            self.replayed_chunks += 1
        else:
            data = {"accepted": [], "rejected": [], "calls": []}
            vecs_out = []
            for call, source in calls:
                cands, vecs = source()
                res = process_call(
                    cands,
                    vecs,
                    self.accepted_set,
                    self.rules,
                    self.embed,
                    self.rewrite_for_call(call),
                    self.stage,
                )
                data["accepted"] += res.accepted
                data["rejected"] += res.rejected
                vecs_out += res.vectors
                data["calls"].append({"call": call, "samples": len(cands), **res.stats})
            buf = io.BytesIO()
            dim = self.accepted_set.dim
            np.save(buf, np.asarray(vecs_out, dtype=np.float32).reshape(len(vecs_out), dim))
            atomic_write_bytes(npath, buf.getvalue())
            atomic_write_json(jpath, data, sort_keys=False)  # last: marks the chunk complete
        self.accepted += data["accepted"]
        self.rejected += data["rejected"]
        for c in data["calls"]:
            c["acceptance_rate"] = round(c["accepted"] / c["samples"], 4) if c["samples"] else 0.0
        self.calls += data["calls"]

    def write_outputs(self, target: int | None = None) -> dict:
        """questions.jsonl, rejected.jsonl and calls.jsonl; questions beyond `target` are rejected."""
        kept = self.accepted if target is None else self.accepted[:target]
        extra = [] if target is None else self.accepted[target:]
        rejected = self.rejected + [
            {**r, "reason": "over_target", "stage": self.stage} for r in extra
        ]
        atomic_write_jsonl(self.ctx.entry.path(QUESTIONS), kept)
        atomic_write_jsonl(self.ctx.entry.path(REJECTED), rejected)
        atomic_write_jsonl(self.ctx.entry.path("calls.jsonl"), self.calls)
        reasons: dict[str, int] = {}
        for r in rejected:
            reasons[r["reason"]] = reasons.get(r["reason"], 0) + 1
        sims = [r["similarity"] for r in kept if r["similarity"] is not None]
        samples = sum(c["samples"] for c in self.calls)
        return {
            "accepted": len(kept),
            "rejected": len(rejected),
            "rejected_by_reason": reasons,
            "calls": len(self.calls),
            "samples": samples,
            "acceptance_rate": round(len(self.accepted) / samples, 4) if samples else 0.0,
            "rewritten": sum(1 for r in kept if r["origin"] == "rewrite"),
            "mean_nearest_similarity": round(float(np.mean(sims)), 4) if sims else None,
            "resumed_chunks": self.replayed_chunks,
        }
