"""Token-budget batches (`config.data.tokens_per_batch`): fairseq's `--max-tokens` with a fixed set
of `[rows, width]` shapes, one per length bucket, so the train step compiles once per bucket.

An example belongs to the bucket of its longer side (the first width of `data.length_buckets` +
max_len that holds it). Every batch of bucket k has rows_k = budget // width_k rounded down to a
multiple of `rows_multiple` rows, all real examples, padded to width_k: its padded tokens (larger
side) never exceed the budget.

Order, a pure function of (seed, global batch number j):
- epoch e is the permutation `numpy.random.default_rng([seed, e]).permutation(n)`;
- bucket k's stream is its examples in epoch 0's order, then epoch 1's, ...; it is cut into
  consecutive batches of rows_k, so an epoch's remainder is carried into the next (nothing is
  dropped or repeated within a pass);
- epoch e holds the batches that end in it, of every bucket, shuffled with `default_rng([seed, e, 1])`.
Bucket k completes floor(e * N_k / rows_k) batches in epochs 0..e-1, so the epoch and place of global
batch j are arithmetic: the iterator state is j, on any number of processes.
"""

from __future__ import annotations

import collections
import threading
from typing import Sequence

import numpy as np


def shapes(tokens_per_batch: int, widths: Sequence[int], rows_multiple: int) -> list[tuple[int, int]]:
    """[(rows, width)] per bucket width; a budget too small for one multiple of rows at the widest
    width is a ValueError naming config.data.tokens_per_batch."""
    budget, m = int(tokens_per_batch), int(rows_multiple)
    if m < 1:
        raise ValueError(f"rows_multiple must be >= 1, got {m}")
    out = [((budget // int(w)) // m * m, int(w)) for w in widths]
    if budget <= 0 or out[-1][0] == 0:
        raise ValueError(
            f"config.data.tokens_per_batch={tokens_per_batch} holds no batch of the widest bucket: it needs at "
            f"least {m} rows (processes x data-parallel shards x grad_accum_steps) x {max(widths)} tokens "
            f"= {m * max(widths)}")
    return out


class TokenBatches:
    """Global batch j -> (bucket, example indices [rows_k]) as the module docstring orders them.

    Thread-safe (grain's threads call it concurrently) and picklable (grain's worker processes)."""

    def __init__(self, lengths: np.ndarray, widths: Sequence[int], rows: Sequence[int], seed: int,
                 cached_epochs: int = 4):
        lengths = np.asarray(lengths)
        self.widths, self.rows, self.seed = tuple(int(w) for w in widths), tuple(int(r) for r in rows), int(seed)
        if len(self.widths) != len(self.rows) or min(self.rows) < 1 or list(self.widths) != sorted(set(self.widths)):
            raise ValueError(f"bucket widths {self.widths} must increase and each have >= 1 row ({self.rows})")
        # the first width >= length; a longer example (not after truncation) goes to the widest
        self.bucket = np.minimum(np.searchsorted(self.widths, lengths, side="left"),
                                 len(self.widths) - 1).astype(np.int16)
        self.counts = np.bincount(self.bucket, minlength=len(self.widths)).astype(np.int64)
        if self.counts.sum() == 0:
            raise ValueError("no examples to batch")
        self.n = len(lengths)
        self._cached_epochs = cached_epochs
        self._init_cache()

    def _init_cache(self) -> None:
        self._lock = threading.Lock()
        self._members: collections.OrderedDict = collections.OrderedDict()
        self._batches: collections.OrderedDict = collections.OrderedDict()

    def __getstate__(self):
        return {k: v for k, v in self.__dict__.items() if k not in ("_lock", "_members", "_batches")}

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._init_cache()

    def completed(self, epochs: int) -> int:
        """Global batches that end in epochs 0..epochs-1."""
        return int(sum(epochs * int(c) // r for c, r in zip(self.counts, self.rows)))

    def epoch_of(self, j: int) -> int:
        """The epoch e with completed(e) <= j < completed(e + 1)."""
        lo, hi = 0, 1
        while self.completed(hi) <= j:
            lo, hi = hi, hi * 2
        while hi - lo > 1:  # completed(lo) <= j < completed(hi)
            mid = (lo + hi) // 2
            lo, hi = (mid, hi) if self.completed(mid) <= j else (lo, mid)
        return lo

    def _cached(self, cache: collections.OrderedDict, e: int, make):
        with self._lock:
            if e in cache:
                cache.move_to_end(e)
                return cache[e]
            value = cache[e] = make(e)
            while len(cache) > self._cached_epochs:
                cache.popitem(last=False)
            return value

    def _make_members(self, e: int) -> list[np.ndarray]:
        perm = np.random.default_rng([self.seed, e]).permutation(self.n).astype(np.int32)
        by_bucket = perm[np.argsort(self.bucket[perm], kind="stable")]  # each bucket in epoch e's order
        return np.split(by_bucket, np.cumsum(self.counts)[:-1])

    def _make_batches(self, e: int) -> np.ndarray:
        """[(bucket, batch number in the bucket's stream)] of the batches that end in epoch e, shuffled."""
        parts = [np.stack([np.full(b - a, k), np.arange(a, b)], 1)
                 for k, (c, r) in enumerate(zip(self.counts, self.rows))
                 for a, b in [(e * int(c) // r, (e + 1) * int(c) // r)]]
        batches = np.concatenate(parts).astype(np.int64)
        return batches[np.random.default_rng([self.seed, e, 1]).permutation(len(batches))]

    def __getitem__(self, j: int) -> tuple[int, np.ndarray]:
        """(bucket, example indices) of global batch j."""
        j = int(j)
        e = self.epoch_of(j)
        k, i = (int(x) for x in self._cached(self._batches, e, self._make_batches)[j - self.completed(e)])
        r, c = self.rows[k], int(self.counts[k])
        positions = np.arange(i * r, (i + 1) * r, dtype=np.int64)  # in bucket k's stream
        epochs, offsets = positions // c, positions % c
        out = np.empty(r, np.int32)
        for ep in np.unique(epochs):
            sel = epochs == ep
            out[sel] = self._cached(self._members, int(ep), self._make_members)[k][offsets[sel]]
        return k, out
