"""The order records are trained in: a seeded permutation an epoch, in which no batch holds one text twice.

In-batch negatives assume that the other records of a batch are unrelated to each one. A text dataset breaks that
when a text recurs: a query with several relevant passages (one record each), a passage relevant to several
queries, a sentence listed twice. Two such records in one batch make one's own positive (or its very text) a
negative of the other, which the loss then pushes apart. As sentence-transformers' ``NoDuplicatesBatchSampler``
does, such records are placed in different batches where the data allows it.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from core.data.records import Records


def text_keys(records: Records) -> np.ndarray | None:
    """Each record's texts as ids, (N, 1) for texts or (N, 2) for pairs, one id a distinct text across both
    columns; None where no text recurs (or the records are not texts), so that the order is a plain permutation."""
    if records.texts is None:
        return None
    columns = [records.texts] if records.positives is None else [records.texts, records.positives]
    ids: dict[str, int] = {}
    keys = np.array([[ids.setdefault(text, len(ids)) for text in column] for column in columns], dtype=np.int64).T
    return keys if len(ids) < keys.size else None


def epoch_order(seed: int, n: int, batch_size: int, keys: np.ndarray | None) -> Tensor:
    """A permutation of ``n`` records from ``seed`` (the same on every rank and every attempt), rearranged where
    ``keys`` say texts recur so that each batch (``batch_size`` consecutive records) holds a text at most once.

    Records in the way of their batch wait for the next one, ahead of those not yet placed; what cannot be placed
    without a repeat (a text in more records than there are batches) ends the epoch, in its last batches or in the
    records left over from the last full batch."""
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    if keys is None:
        return order
    rows = [tuple(row) for row in keys.tolist()]
    placed: list[int] = []
    waiting: list[int] = []
    stream = iter(order.tolist())
    while True:
        batch: list[int] = []
        seen: set[int] = set()
        waiting = [record for record in waiting if not _took(record, rows[record], batch, seen, batch_size)]
        while len(batch) < batch_size and (record := next(stream, None)) is not None:
            if not _took(record, rows[record], batch, seen, batch_size):
                waiting.append(record)
        placed.extend(batch)
        if len(batch) < batch_size:  # the stream is spent: the rest repeat a text whatever their order
            placed.extend(waiting)
            return torch.tensor(placed, dtype=torch.long)


def _took(record: int, texts: tuple[int, ...], batch: list[int], seen: set[int], batch_size: int) -> bool:
    """Whether ``record`` joined ``batch``: there is room and none of its texts is there yet."""
    if len(batch) == batch_size or not seen.isdisjoint(texts):
        return False
    batch.append(record)
    seen.update(texts)
    return True
