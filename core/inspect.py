"""Looking inside a trained model: embed a dataset's records, project them to 2-D, find nearest neighbours."""

from __future__ import annotations

import numpy as np
from sklearn.decomposition import PCA

from core.data.records import Records
from core.inference import Embedder


def raw_inputs(records: Records) -> object:
    """What :meth:`Embedder.embed` takes for these records."""
    if records.vectors is not None:
        return records.vectors
    if records.images is not None:
        return records.images.astype(np.float32) / 255.0
    return records.texts


def embed_records(embedder: Embedder, records: Records, batch: int = 256) -> np.ndarray:
    """(N, D) normalised embeddings of every record, in batches."""
    inputs = raw_inputs(records)
    parts = [embedder.embed(inputs[i : i + batch]).numpy() for i in range(0, len(records), batch)]
    return np.concatenate(parts) if parts else np.zeros((0, embedder.dim), dtype=np.float32)


def project_2d(embeddings: np.ndarray) -> np.ndarray:
    """(N, 2) PCA projection of (N, D) embeddings."""
    if len(embeddings) < 2:
        return np.zeros((len(embeddings), 2), dtype=np.float32)
    return PCA(n_components=2, random_state=0).fit_transform(embeddings).astype(np.float32)


def nearest(query: np.ndarray, bank: np.ndarray, k: int) -> list[tuple[int, float]]:
    """Indices and cosine similarities of the ``k`` rows of ``bank`` nearest to ``query`` (both normalised)."""
    scores = bank @ query
    order = np.argsort(-scores)[:k]
    return [(int(i), float(scores[i])) for i in order]
