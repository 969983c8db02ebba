"""T5-style packing of translation pairs into fixed-width rows, for `config.data.pack`."""

from __future__ import annotations

from typing import Any

import numpy as np

from bert_vs_transformer.data.records import TokenizedSplit


class PackedTranslation:
    """Greedy first-fit packing (as grain's FirstFitPackIterDataset, ~20x faster, state = one int).

    Examples are taken in stream order and each goes to the first of the batch's `rows` rows with
    room for both its input and its target; the first example that fits no row closes the batch
    and opens the next one, so the stream is consumed in order and no example is skipped. Row r's
    j-th example gets segment id j (from 1) on both sides, positions 0.. within it; 0 = padding.
    The state is the stream position of the next batch.
    """

    _CHUNK = 4096

    def __init__(self, data: "TokenizedSplit", order, *, rows: int, max_src: int, max_tgt: int):
        self.data, self.rows, self.max_src, self.max_tgt = data, rows, max_src, max_tgt
        self.lengths = data.lengths()
        self._chunks = order.batch(self._CHUNK)  # grain MapDataset: chunk k = stream[k*C:(k+1)*C]
        self._cached = (-1, None)
        self.position = 0

    def _example(self, i: int) -> int:
        k, j = divmod(i, self._CHUNK)
        if self._cached[0] != k:
            self._cached = (k, np.asarray(self._chunks[k]))
        return int(self._cached[1][j])

    def __iter__(self):
        return self

    def __next__(self) -> dict[str, np.ndarray]:
        len_in, len_tgt = self.lengths["inputs"], self.lengths["targets"]
        room_in = np.full(self.rows, self.max_src)
        room_tgt = np.full(self.rows, self.max_tgt)
        placed: list[tuple[int, int]] = []
        while True:
            ex = self._example(self.position + len(placed))
            fits = np.flatnonzero((room_in >= len_in[ex]) & (room_tgt >= len_tgt[ex]))
            if fits.size == 0:
                break
            r = int(fits[0])
            room_in[r] -= len_in[ex]
            room_tgt[r] -= len_tgt[ex]
            placed.append((ex, r))
        self.position += len(placed)
        batch = {}
        for key, width in (("inputs", self.max_src), ("targets", self.max_tgt)):
            tokens = np.zeros((self.rows, width), np.int32)
            seg = np.zeros((self.rows, width), np.int32)
            pos = np.zeros((self.rows, width), np.int32)
            fill = np.zeros(self.rows, np.int64)
            count = np.zeros(self.rows, np.int32)
            seqs = self.data.features[key]
            for ex, r in placed:
                s = seqs[ex]
                a, b = fill[r], fill[r] + len(s)
                count[r] += 1
                tokens[r, a:b] = s
                seg[r, a:b] = count[r]
                pos[r, a:b] = np.arange(len(s))
                fill[r] = b
            batch[key], batch[f"{key}_segmentation"], batch[f"{key}_positions"] = tokens, seg, pos
        return batch

    def get_state(self) -> dict[str, Any]:
        return {"position": self.position}

    def set_state(self, state: dict[str, Any]) -> None:
        self.position = int(state["position"])
