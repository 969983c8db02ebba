"""Seeded synthetic batches (config.data.dataset = "synthetic"): for tests of the training system
and for benchmarks, never for results. Same checkpointable-iterator contract as the real loaders.

Batch i of the global stream is a pure function of (seed, i), so every process slices its own
rows of the same global batch and a restored iterator continues exactly.
"""

from __future__ import annotations

from typing import Callable

import numpy as np


def _translation(config, rng, b: int, vocab: int) -> dict[str, np.ndarray]:
    s = t = int(config.data.max_len)
    out = {}
    for key, length in (("inputs", s), ("targets", t)):
        ids = rng.integers(3, vocab, size=(b, length), dtype=np.int32)
        lens = rng.integers(max(2, length // 2), length + 1, size=b)
        ids[np.arange(length)[None, :] >= lens[:, None]] = 0
        out[key] = ids
    return out


def _encoder_rows(config, rng, b: int, vocab: int):
    """Token ids, segment ids and attention mask of BERT-style rows; -> (batch, lengths)."""
    seq = int(config.data.max_seq_len)
    ids = rng.integers(5, vocab, size=(b, seq), dtype=np.int32)
    lens = rng.integers(max(4, seq // 2), seq + 1, size=b)
    mask = (np.arange(seq)[None, :] < lens[:, None]).astype(np.int32)
    ids = ids * mask
    types = ((np.arange(seq)[None, :] >= (lens // 2)[:, None]) * mask).astype(np.int32)
    return {"input_ids": ids, "token_type_ids": types, "attention_mask": mask}, lens


def _pretraining(config, rng, b: int, vocab: int) -> dict[str, np.ndarray]:
    batch, lens = _encoder_rows(config, rng, b, vocab)
    p = int(config.data.max_predictions_per_seq)
    pos = np.stack([np.sort(rng.choice(np.arange(1, n), size=min(p, n - 1), replace=False).tolist()
                            + [0] * (p - min(p, n - 1))) for n in lens]).astype(np.int32)
    weights = np.zeros((b, p), np.float32)
    for i, n in enumerate(lens):
        weights[i, : min(p, n - 1)] = 1.0
    batch.update(
        masked_lm_positions=pos,
        masked_lm_ids=rng.integers(5, vocab, size=(b, p), dtype=np.int32),
        masked_lm_weights=weights,
        next_sentence_labels=rng.integers(0, 2, size=b, dtype=np.int32),
    )
    return batch


def _classification(config, rng, b: int, vocab: int) -> dict[str, np.ndarray]:
    batch, _ = _encoder_rows(config, rng, b, vocab)
    n = int(config.get("num_labels", 2))
    batch["label"] = (rng.random(b).astype(np.float32) * 5 if n == 1
                      else rng.integers(0, n, size=b, dtype=np.int32))
    return batch


def _lm(config, rng, b: int, vocab: int) -> dict[str, np.ndarray]:
    """Blocks of arithmetic sequences (random start and stride mod the vocabulary): learnable next tokens."""
    seq = int(config.data.max_seq_len)
    start, stride = rng.integers(0, vocab - 3, size=(b, 1)), rng.integers(1, 5, size=(b, 1))
    ids = (3 + (start + stride * np.arange(seq + 1)[None, :]) % (vocab - 3)).astype(np.int32)
    return {"input_ids": ids[:, :-1], "targets": ids[:, 1:]}


# config.task -> fn(config, rng, batch_size, vocab_size) -> a global batch of that task's fields
GENERATORS: dict[str, Callable[..., dict[str, np.ndarray]]] = {
    "translation": _translation,
    "pretraining": _pretraining,
    "classification": _classification,
    "lm": _lm,
}


def global_batch(config, index: int) -> dict[str, np.ndarray]:
    """The index-th global batch for config.task, with random lengths and padding."""
    rng = np.random.default_rng([int(config.seed), int(index)])
    if config.task not in GENERATORS:
        raise ValueError(f"synthetic data has no task {config.task!r}; it has {sorted(GENERATORS)}")
    return GENERATORS[config.task](config, rng, int(config.data.batch_size), int(config.model.vocab_size))


class SyntheticIterator:
    """Infinite iterator over this process's rows of the synthetic global batches."""

    def __init__(self, config, process_index: int = 0, process_count: int = 1):
        self.config = config
        self.process_index, self.process_count = process_index, process_count
        self.index = 0

    def __iter__(self):
        return self

    def __next__(self) -> dict[str, np.ndarray]:
        batch = global_batch(self.config, self.index)
        self.index += 1
        rows = batch[next(iter(batch))].shape[0] // self.process_count
        lo = self.process_index * rows
        return {k: v[lo: lo + rows] for k, v in batch.items()}

    def get_state(self) -> dict:
        return {"index": self.index}

    def set_state(self, state: dict) -> None:
        self.index = int(state["index"])


def eval_batches(config, num_batches: int = 2):
    """A fixed, finite evaluation set (batches drawn far from the training stream)."""
    for i in range(num_batches):
        batch = global_batch(config, 10**9 + i)
        batch["example_weights"] = np.ones(batch[next(iter(batch))].shape[0], np.float32)
        yield batch
