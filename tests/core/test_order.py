"""The training order: no batch holds one text twice where the data allows it (core.train.order)."""

from __future__ import annotations

import numpy as np
import torch

from core.data.records import Records
from core.train.order import epoch_order, text_keys


def batches(order: torch.Tensor, batch_size: int) -> list[list[int]]:
    full = len(order) // batch_size * batch_size
    return order[:full].view(-1, batch_size).tolist()


def repeats(batch: list[int], keys: np.ndarray) -> int:
    texts = keys[batch].ravel()
    return len(texts) - len(set(texts.tolist()))


def test_pairs_sharing_a_query_or_a_passage_are_trained_in_different_batches() -> None:
    """A query with four relevant passages (a record each), and passages shared between queries: in one batch, one
    record's own positive or its very query would be another's negative. Before, a seeded permutation put such
    records together in most batches."""
    rng = np.random.default_rng(0)
    queries = [f"query {i // 4}" for i in range(256)]  # 64 queries, 4 passages each
    passages = [f"passage {i if i % 8 else 0}" for i in range(256)]  # every eighth record the same passage
    order_of = rng.permutation(256)
    records = Records("text", texts=[queries[i] for i in order_of], positives=[passages[i] for i in order_of])
    keys = text_keys(records)
    assert keys is not None and keys.shape == (256, 2)
    plain = epoch_order(7, 256, 16, None)
    assert sum(repeats(batch, keys) > 0 for batch in batches(plain, 16)) >= 12  # the plain permutation: most
    order = epoch_order(7, 256, 16, keys)
    assert sorted(order.tolist()) == list(range(256))  # every record, once
    spread = batches(order, 16)
    # 32 records share "passage 0": at most one a batch, so 16 batches hold 16 of them and 16 are left to the end
    assert sum(repeats(batch, keys) > 0 for batch in spread) <= 2, [repeats(b, keys) for b in spread]
    assert all(repeats(batch, keys) == 0 for batch in spread[:12])
    assert torch.equal(order, epoch_order(7, 256, 16, keys))  # the same on every rank and every attempt


def test_a_text_in_more_records_than_there_are_batches_ends_the_epoch() -> None:
    texts = ["the same"] * 40 + [f"text {i}" for i in range(40)]
    keys = text_keys(Records("text", texts=texts))
    order = epoch_order(1, 80, 8, keys)
    assert sorted(order.tolist()) == list(range(80))
    firsts = batches(order, 8)
    # one a batch while other texts last (7 others each: 5 batches, then the last 5 and 1), then the rest together
    assert [sum(record < 40 for record in batch) for batch in firsts] == [1, 1, 1, 1, 1, 3, 8, 8, 8, 8]


def test_texts_that_do_not_recur_keep_the_plain_permutation() -> None:
    """No text recurs, or the records are vectors: the order is the seeded permutation, as before."""
    assert text_keys(Records("text", texts=["a", "b", "c"], positives=["d", "e", "f"])) is None
    assert text_keys(Records("vectors", vectors=np.zeros((3, 2), dtype=np.float32))) is None
    assert text_keys(Records("text", texts=["a", "b"], positives=["b", "c"])) is not None  # a text in both columns
    assert torch.equal(epoch_order(3, 50, 8, None), torch.randperm(50, generator=torch.Generator().manual_seed(3)))
