"""grain input pipelines: tokenize, (pack,) batch and shard the tfds datasets by process.

Interface (what the training loop uses):

    train_iterator(config, *, process_index=None, process_count=None, rows_multiple=None) -> DataIterator
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
4. Token budget (`config.data.tokens_per_batch` > 0, translation only): global batches of a fixed
   `[rows, width]` shape per length bucket whose padded tokens (larger side) stay within the budget,
   ordered as `token_batches.py` says; process p keeps rows `[p * r/P, (p + 1) * r/P)` and the state
   is the next global batch, as in 3.
5. Packed (`config.data.pack`, translation only): process p takes every P-th example of the
   stream and packs them T5-style, first-fit, into `b/P` rows of the maximum length
   (`*_segmentation` from 1, 0 = padding; `*_positions` restart at 0 per segment); see
   `packing.PackedTranslation`. The state is the stream position (same process layout required).

Evaluation reads a split in file order, in global batches of `config.data.eval_batch_size`
(default: batch_size) examples; the last partial batch is padded with all-zero rows, and every
batch carries `example_weights` (1.0 real, 0.0 padding). Every process gets the same global
batches (the training loop keeps its own rows). Eval never drops examples (over-long ones are
truncated) and is never packed.

The pretraining task (BERT MLM/NSP) has its own pipeline in `pretraining_pipeline.py` (same
order, sharding and state as the unpacked one here); `bert_vs_transformer.data` picks the
pipeline by task.
"""

from __future__ import annotations

import sys
from typing import Any, Iterator, Sequence

import numpy as np
from absl import logging

from bert_vs_transformer.data import (
    packing,
    records,
    sentencepiece_tokenizer,
    sources,
    token_batches,
    wordpiece,
)

# ---------------------------------------------------------------------------------------------
# Config access.


def _d(config):
    return config.data


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


# ---------------------------------------------------------------------------------------------
# Tokenizers.

_TOKENIZERS: dict[Any, Any] = {}
def translation_tokenizer(config):
    """The shared source/target SentencePiece model of config.data.dataset's training split."""
    from bert_vs_transformer.data import builders  # imports tfds

    d = _d(config)
    spec = builders.spec(d.dataset)
    fields = sorted({d.source_lang, d.target_lang})
    for f in fields:
        if f not in spec.fields:
            raise ValueError(f"{d.dataset} has no language {f!r}; it has {list(spec.fields)}")
    raw = sorted(r.sha256 for p, r in sources.FILES.items() if p.startswith(d.dataset + "/train."))
    cache_key = {"dataset": spec.tfds_name, "version": str(spec.builder_cls.VERSION), "split": "train",
                 "fields": fields, "raw_sha256": raw}
    sample = int(spec.tokenizer_sample)
    if sample:  # a large corpus (WMT14): the BPE is trained on a seeded sample of its training pairs
        cache_key.update(records.sample_key(config, "train", sample))
    options = dict(
        vocab_size=int(config.model.vocab_size),
        model_type=d.get("spm_model_type", "bpe"),
        character_coverage=float(d.get("spm_character_coverage", 1.0)),
        input_sentence_size=int(d.get("spm_input_sentence_size", 2_000_000)),
    )
    memo = ("spm", repr(cache_key), repr(options), d.get("cache_dir", None), records.tfds_dir(config))
    with records.LOCK:
        if memo in _TOKENIZERS:
            return _TOKENIZERS[memo]

    def texts():
        recs = records.sample_records(config, "train", sample) if sample else records.split_records(config, "train")
        for f in fields:
            for r in recs:
                yield records.text(r[f])

    cache_dir = d.get("cache_dir", None) or sentencepiece_tokenizer.default_cache_dir(records.tfds_dir(config))
    tok = sentencepiece_tokenizer.train_or_load(texts, cache_key=cache_key, cache_dir=cache_dir, **options)
    if tok.vocab_size > int(config.model.vocab_size):
        raise ValueError(f"tokenizer has {tok.vocab_size} pieces > config.model.vocab_size={config.model.vocab_size}")
    with records.LOCK:
        _TOKENIZERS[memo] = tok
    return tok


def wordpiece_tokenizer(config):
    d = _d(config)
    path = d.get("vocab_path", None) or wordpiece.default_vocab_path()
    lowercase = bool(d.get("lowercase", True))
    memo = ("wordpiece", path, lowercase)
    with records.LOCK:
        if memo not in _TOKENIZERS:
            _TOKENIZERS[memo] = wordpiece.load_wordpiece(path, lowercase=lowercase)
        return _TOKENIZERS[memo]


def tokenizer(config):
    """The task's tokenizer: SentencePiece for translation, WordPiece for the BERT tasks."""
    if config.task == "translation":
        return translation_tokenizer(config)
    if config.task == "classification":
        return wordpiece_tokenizer(config)
    raise ValueError(f"config.task={config.task!r} has no tokenizer")


# ---------------------------------------------------------------------------------------------
# Tokenized splits (in memory).


_SPLITS: dict[Any, records.TokenizedSplit] = {}


def _truncate_eos(ids: list[int], max_len: int, eos_id: int) -> np.ndarray:
    if len(ids) > max_len:
        ids = ids[: max_len - 1] + [eos_id]
    return np.asarray(ids, np.int32)


def tokenized_split(config, split: str, *, train: bool) -> records.TokenizedSplit:
    """The tokenized split for config.task, cached per process."""
    from bert_vs_transformer.data import builders  # imports tfds

    d = _d(config)
    split = builders.canonical_split(split)
    if config.task == "translation":
        tok = translation_tokenizer(config)
        overlong = d.get("overlong", "truncate") if train else "truncate"
        key = ("translation", d.dataset, split, tok.model_path, d.source_lang, d.target_lang, _max_lens(config),
               overlong, records.tfds_dir(config))
        build = lambda: _tokenize_translation(config, split, tok, overlong)  # noqa: E731
    elif config.task == "classification":
        tok = wordpiece_tokenizer(config)
        key = ("classification", d.dataset, split, tok.vocab_path, int(d.max_seq_len), records.tfds_dir(config))
        build = lambda: _tokenize_classification(config, split, tok)  # noqa: E731
    else:
        raise ValueError(f"no tokenized split for config.task={config.task!r}")
    with records.LOCK:
        if key not in _SPLITS:
            _SPLITS[key] = build()
        return _SPLITS[key]


def _tokenize_translation(config, split, tok, overlong: str) -> records.TokenizedSplit:
    d = _d(config)
    if overlong not in ("truncate", "drop"):
        raise ValueError(f"config.data.overlong={overlong!r}: use 'truncate' or 'drop'")
    recs = records.split_records(config, split)
    src = tok.encode_batch([records.text(r[d.source_lang]) for r in recs])
    tgt = tok.encode_batch([records.text(r[d.target_lang]) for r in recs])
    max_src, max_tgt = _max_lens(config)
    inputs, targets, idx = [], [], []
    too_long = 0
    for r, s, t in zip(recs, src, tgt):
        if len(s) > max_src or len(t) > max_tgt:
            too_long += 1
            if overlong == "drop":
                continue
        inputs.append(_truncate_eos(s, max_src, tok.eos_id))
        targets.append(_truncate_eos(t, max_tgt, tok.eos_id))
        idx.append(int(r["idx"]))
    stats = {"examples": len(recs), "kept": len(idx), "overlong": too_long,
             "truncated": too_long if overlong == "truncate" else 0, "dropped": too_long if overlong == "drop" else 0}
    (logging.warning if too_long else logging.info)(
        "%s/%s %s->%s: %d pairs, %d longer than (%d, %d) tokens (%s)", d.dataset, split, d.source_lang,
        d.target_lang, len(recs), too_long, max_src, max_tgt, "dropped" if overlong == "drop" else "truncated")
    return records.TokenizedSplit({"inputs": inputs, "targets": targets}, {}, np.asarray(idx, np.int32), stats)


def _tokenize_classification(config, split, tok) -> records.TokenizedSplit:
    d = _d(config)
    max_len = int(d.max_seq_len)
    recs = records.split_records(config, split)
    a = tok.encode_batch([records.text(r["sentence1"]) for r in recs])
    b_text = [records.text(r["sentence2"]) for r in recs]
    pair = any(b_text)
    b = tok.encode_batch(b_text) if pair else [None] * len(recs)
    ids, types, truncated = [], [], 0
    for x, y in zip(a, b):
        full = len(x) + (len(y) + 3 if y is not None else 2)
        truncated += full > max_len
        i, t = tok.encode_pair(x, y, max_len=max_len)
        ids.append(np.asarray(i, np.int32))
        types.append(np.asarray(t, np.int32))
    regression = np.asarray(recs[0]["label"]).dtype.kind == "f" if recs else False
    labels = np.asarray([r["label"] for r in recs], np.float32 if regression else np.int32)
    stats = {"examples": len(recs), "kept": len(recs), "truncated": truncated, "dropped": 0}
    (logging.warning if truncated else logging.info)("%s/%s: %d examples, %d truncated to %d tokens",
                                                     d.dataset, split, len(recs), truncated, max_len)
    return records.TokenizedSplit({"input_ids": ids, "token_type_ids": types}, {"label": labels},
                          np.asarray([int(r["idx"]) for r in recs], np.int32), stats)


# ---------------------------------------------------------------------------------------------
# Collation.


def _collate(config, data: records.TokenizedSplit, indices: np.ndarray, rows: slice | None = None,
             width: int | None = None) -> dict[str, np.ndarray]:
    """The padded batch of examples `indices` (padded to `width`, else to a width chosen from all of
    them), keeping only `rows` of it. Index -1 is an all-zero padding row."""
    real = indices >= 0
    idx = np.where(real, indices, 0)
    if config.task == "translation":
        max_src, max_tgt = _max_lens(config)
        if width is None:
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
        batch[k] = records.pad([seqs[idx[j]] if real[j] else np.zeros(0, np.int32) for j in sel], widths[k])
    if config.task == "classification":
        batch["attention_mask"] = (batch["input_ids"] != 0).astype(np.int32)
    for k, v in data.scalars.items():
        batch[k] = np.where(real[sel], v[idx[sel]], 0).astype(v.dtype)
    return batch


# ---------------------------------------------------------------------------------------------
# Iterators.


def token_budget(config) -> int:
    """config.data.tokens_per_batch (0 or absent: batches of config.data.batch_size examples)."""
    return int(_d(config).get("tokens_per_batch", 0) or 0)


def token_batch_shapes(config, rows_multiple: int) -> list[tuple[int, int]]:
    """The global [rows, width] batch shapes of config.data.tokens_per_batch, one per length bucket;
    rows are multiples of rows_multiple. A ValueError names the field a config gets wrong."""
    d = _d(config)
    if config.task != "translation" or d.get("dataset", None) == "synthetic":
        raise ValueError(f"config.data.tokens_per_batch is implemented for translation datasets, not "
                         f"task={config.task!r} dataset={d.get('dataset', None)!r}; set it to 0")
    if bool(d.get("pack", False)):
        raise ValueError("config.data.tokens_per_batch and config.data.pack exclude each other: packed rows are "
                         "config.data.batch_size rows of max_len (set tokens_per_batch=0 or pack=False)")
    return token_batches.shapes(token_budget(config), _buckets(config, max(_max_lens(config))), rows_multiple)


def train_iterator(config, *, process_index: int | None = None, process_count: int | None = None,
                   rows_multiple: int | None = None) -> records.DataIterator:
    """This process's infinite stream of training batches (see the module docstring). rows_multiple:
    what a token-budget batch's rows are a multiple of (default: the process count)."""
    import grain

    d = _d(config)
    if token_budget(config):
        return _token_budget_iterator(config, process_index, process_count, rows_multiple)
    B = int(d.batch_size)
    p, P, L = records.process_rows(B, process_index, process_count)
    data = tokenized_split(config, d.get("train_split", "train"), train=True)
    n, seed = len(data), records.seed(config)
    if n == 0:
        raise ValueError(f"{d.dataset}: no training examples left after filtering")
    pack = bool(d.get("pack", False))
    meta = {"dataset": d.dataset, "task": config.task, "seed": seed, "batch_size": B, "examples": n,
            "pack": pack, "process_index": p, "process_count": P}
    order = grain.MapDataset.range(n).shuffle(seed=seed).repeat()
    if not pack:
        batches = order.batch(B).map(lambda ids: _collate(config, data, np.asarray(ids), slice(p * L, (p + 1) * L)))
        meta["workers"] = records.worker_count(config)
        return records.DataIterator(records.iter_dataset(batches, config), meta, layout_invariant=True)
    if config.task != "translation":
        raise ValueError("config.data.pack is implemented for translation only")
    max_src, max_tgt = _max_lens(config)
    packer = packing.PackedTranslation(data, order[p::P], rows=L, max_src=max_src, max_tgt=max_tgt)
    return records.DataIterator(packer, meta, layout_invariant=False)


def _token_budget_iterator(config, process_index, process_count, rows_multiple) -> records.DataIterator:
    import grain

    d = _d(config)
    p, P, _ = records.process_rows(0, process_index, process_count)
    multiple = P if rows_multiple is None else int(rows_multiple)
    if multiple < 1 or multiple % P:
        raise ValueError(f"rows_multiple={multiple} is not a multiple of the process count {P}")
    shapes = token_batch_shapes(config, multiple)
    data = tokenized_split(config, d.get("train_split", "train"), train=True)
    if len(data) == 0:
        raise ValueError(f"{d.dataset}: no training examples left after filtering")
    lengths = data.lengths()
    plan = token_batches.TokenBatches(np.maximum(lengths["inputs"], lengths["targets"]), [w for _, w in shapes],
                                      [r for r, _ in shapes], records.seed(config))

    def batch(j):
        k, indices = plan[j]
        rows, width = shapes[k]
        return _collate(config, data, indices, slice(p * rows // P, (p + 1) * rows // P), width)

    meta = {"dataset": d.dataset, "task": config.task, "seed": records.seed(config),
            "tokens_per_batch": token_budget(config), "shapes": [list(s) for s in shapes], "examples": len(data),
            "pack": False, "process_index": p, "process_count": P, "workers": records.worker_count(config)}
    # one global batch per index: grain's range is as long as its repeat() (sys.maxsize)
    batches = grain.MapDataset.range(sys.maxsize).map(batch)
    return records.DataIterator(records.iter_dataset(batches, config), meta, layout_invariant=True)


def eval_batches(config, split: str) -> Iterator[dict[str, np.ndarray]]:
    """Global eval batches of `split` in file order, last one zero-padded, with example_weights."""
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
    recs = records.split_records(config, split)
    return [{k: (records.text(v) if isinstance(v, bytes) else v) for k, v in r.items()} for r in recs]
