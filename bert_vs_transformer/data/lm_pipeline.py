"""Language-modelling batches (task "lm") of PTB or WikiText-2 (builders.BvtLmText).

A split's lines are tokenized with a SentencePiece BPE trained on the dataset's train split (ids:
pad 0, eos 1, unk 2), each line followed by EOS (PTB's `<eos>`), concatenated in file order and
cut into blocks of `data.max_seq_len` = L tokens: block i is `input_ids` = stream[iL, (i+1)L) and
`targets` = stream[iL+1, (i+1)L+1), so every token after the first is predicted once per pass
(the last block is zero-padded; 0 is never a token).

Training: the blocks in grain's shuffled, repeated order (`MapDataset.range(n).shuffle(seed)`,
epoch e reseeded), cut into global batches of `data.batch_size` blocks, each process keeping its
rows, as pipelines.py does; the iterator state is exact (records.DataIterator). Evaluation: blocks
in file order, the last batch padded with all-zero rows, with `example_weights`.
"""

from __future__ import annotations

from typing import Any, Iterator

import numpy as np
from absl import logging

from bert_vs_transformer.data import records, sentencepiece_tokenizer, sources

DATASETS = ("ptb", "wikitext2")
SPLITS = ("train", "validation", "test")
_SPLIT_FIELDS = ("train_split", "eval_split")

_TOKENIZERS: dict[Any, Any] = {}
_BLOCKS: dict[Any, tuple[np.ndarray, np.ndarray]] = {}


def check(config) -> None:
    """One-line ValueErrors naming the field: an unknown dataset, a split the dataset lacks."""
    from bert_vs_transformer.data import builders  # imports tfds

    d = config.data
    if d.get("dataset", None) not in DATASETS:
        raise ValueError(f"config.data.dataset={d.get('dataset', None)!r} is not a language-modelling dataset; "
                         f"one of {list(DATASETS) + ['synthetic']}")
    fields = [(f"config.data.{f}", d.get(f, None)) for f in _SPLIT_FIELDS if d.get(f, None)]
    evals = config.get("evals", None) or {}
    fields += [(f"config.evals.{k}.split", dict(v).get("split")) for k, v in evals.items() if dict(v).get("split")]
    for field, split in fields:
        if builders.canonical_split(str(split)) not in SPLITS:
            raise ValueError(f"{field}={split!r} is not a split of {d.dataset}; splits: {list(SPLITS)}")


def _train_file(dataset: str) -> sources.RawFile:
    from bert_vs_transformer.data import builders  # imports tfds

    s = builders.spec(dataset)
    return sources.raw_file(dict(s.builder_cls.builder_configs[s.config].files)["train"])


def tokenizer(config) -> sentencepiece_tokenizer.SentencePieceTokenizer:
    """The SentencePiece BPE of config.data.dataset's train split (model.vocab_size pieces at most)."""
    from bert_vs_transformer.data import builders  # imports tfds

    check(config)
    d = config.data
    s, raw = builders.spec(d.dataset), _train_file(d.dataset)
    cache_key = {"dataset": s.tfds_name, "version": str(s.builder_cls.VERSION), "split": "train",
                 "fields": ["text"], "raw": raw.sha256 or raw.git_blob}
    options = dict(vocab_size=int(config.model.vocab_size), model_type=d.get("spm_model_type", "bpe"),
                   character_coverage=float(d.get("spm_character_coverage", 1.0)),
                   input_sentence_size=int(d.get("spm_input_sentence_size", 2_000_000)))
    cache_dir = d.get("cache_dir", None) or sentencepiece_tokenizer.default_cache_dir(records.tfds_dir(config))
    memo = (repr(cache_key), repr(options), cache_dir)
    with records.LOCK:
        if memo not in _TOKENIZERS:
            texts = lambda: (records.text(r["text"]) for r in records.split_records(config, "train"))  # noqa: E731
            tok = sentencepiece_tokenizer.train_or_load(texts, cache_key=cache_key, cache_dir=cache_dir, **options)
            if tok.vocab_size > int(config.model.vocab_size):
                raise ValueError(f"tokenizer has {tok.vocab_size} pieces > config.model.vocab_size="
                                 f"{config.model.vocab_size}")
            _TOKENIZERS[memo] = tok
        return _TOKENIZERS[memo]


def stream(config, split: str) -> np.ndarray:
    """The split's tokens: every line's ids and EOS, in file order (int32 [n])."""
    tok = tokenizer(config)
    texts = [records.text(r["text"]) for r in records.split_records(config, split)]
    ids = tok.encode_batch(texts, add_eos=True)
    return np.concatenate([np.asarray(x, np.int32) for x in ids]) if ids else np.zeros(0, np.int32)


def to_blocks(tokens: np.ndarray, length: int) -> tuple[np.ndarray, np.ndarray]:
    """(input_ids, targets) [n, length]: consecutive blocks and the same blocks one token later."""
    n = max(-(-(len(tokens) - 1) // length), 0)
    padded = np.zeros(n * length + 1, np.int32)
    padded[: len(tokens)] = tokens
    return padded[:-1].reshape(n, length), padded[1:].reshape(n, length)


def blocks(config, split: str) -> tuple[np.ndarray, np.ndarray]:
    """The split's (input_ids, targets) blocks of data.max_seq_len tokens, cached per process."""
    from bert_vs_transformer.data import builders  # imports tfds

    check(config)
    d = config.data
    split = builders.canonical_split(split)
    key = (d.dataset, split, tokenizer(config).model_path, int(d.max_seq_len), records.tfds_dir(config))
    with records.LOCK:
        if key not in _BLOCKS:
            tokens = stream(config, split)
            _BLOCKS[key] = to_blocks(tokens, int(d.max_seq_len))
            logging.info("%s/%s: %d tokens in %d blocks of %d", d.dataset, split, len(tokens),
                         len(_BLOCKS[key][0]), int(d.max_seq_len))
        return _BLOCKS[key]


def _rows(inputs: np.ndarray, targets: np.ndarray, indices: np.ndarray) -> dict[str, np.ndarray]:
    """The blocks `indices` (-1: an all-zero padding row)."""
    real = indices >= 0
    idx = np.where(real, indices, 0)
    return {"input_ids": inputs[idx] * real[:, None], "targets": targets[idx] * real[:, None]}


def train_iterator(config, *, process_index: int | None = None, process_count: int | None = None):
    """This process's infinite, checkpointable stream of shuffled training blocks."""
    import grain

    d = config.data
    B = int(d.batch_size)
    p, P, rows = records.process_rows(B, process_index, process_count)
    try:
        inputs, targets = blocks(config, d.get("train_split", None) or "train")
    except sources.DataError as e:  # e.g. WikiText-2's train file offline: a one-line config error
        raise ValueError(str(e)) from None
    n, seed = len(inputs), records.seed(config)
    if n == 0:
        raise ValueError(f"{d.dataset}: the training split has no tokens")
    meta = {"dataset": d.dataset, "task": config.task, "seed": seed, "batch_size": B, "examples": n,
            "max_seq_len": int(d.max_seq_len), "process_index": p, "process_count": P,
            "workers": records.worker_count(config)}
    order = grain.MapDataset.range(n).shuffle(seed=seed).repeat()
    batches = order.batch(B).map(lambda ids: _rows(inputs, targets, np.asarray(ids)[p * rows: (p + 1) * rows]))
    return records.DataIterator(records.iter_dataset(batches, config), meta, layout_invariant=True)


def eval_batches(config, split: str) -> Iterator[dict[str, np.ndarray]]:
    """Global eval batches of `split`'s blocks in file order, the last one zero-padded, with example_weights."""
    d = config.data
    B = int(d.get("eval_batch_size", None) or d.batch_size)
    inputs, targets = blocks(config, split)
    for start in range(0, len(inputs), B):
        indices = np.arange(start, start + B)
        indices[indices >= len(inputs)] = -1
        batch = _rows(inputs, targets, indices)
        batch["example_weights"] = (indices >= 0).astype(np.float32)
        yield batch
