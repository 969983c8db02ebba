"""A shared source/target SentencePiece vocabulary (Vaswani 5.1: one BPE vocabulary for both
languages, tied embeddings), trained on the training split and cached on disk.

Ids: pad = 0, eos = 1, unk = 2, no bos (-1 in sentencepiece). The model treats id 0 as padding and
the decoder's first input is 0 (`shift_right`), so `encode` appends EOS and never emits 0.

The cache lives under `$BVT_CACHE_DIR` (else `<tfds data dir>/bvt_cache`), in
`sentencepiece-<hash>/spm.model`, the hash covering a key that names the training text (dataset,
version, split, fields, raw-file sha256s) and every training option, so a changed option or
dataset trains a new model and an unchanged one is reused. Writes are atomic (a temporary folder
renamed into place), so processes sharing the folder can race safely. The cache may be on gs://
(etils.epath): there the model is trained in a local temporary folder and uploaded with
`spm.model` last, the one file a reader looks for (an object appears only once complete).

`vocab_size` is an upper bound (`hard_vocab_limit=False`): on a small corpus sentencepiece may
stop earlier; the model's embedding (config.model.vocab_size rows) must be at least as large.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from typing import Iterable, Sequence

from absl import logging
from etils import epath

from bert_vs_transformer.data import storage

PAD_ID, EOS_ID, UNK_ID = 0, 1, 2
CACHE_DIR_ENV = "BVT_CACHE_DIR"


class SentencePieceTokenizer:
    """encode(str) -> ids + [EOS]; decode(ids) -> str (stops at the first EOS, drops padding)."""

    pad_id = PAD_ID
    eos_id = EOS_ID
    unk_id = UNK_ID
    bos_id = None  # unused: the decoder starts from pad (0) via shift_right

    def __init__(self, model_path: str):
        import sentencepiece as spm

        self.model_path = model_path
        # the serialized model, read through epath (sentencepiece itself opens local files only)
        self._sp = spm.SentencePieceProcessor(model_proto=epath.Path(model_path).read_bytes())
        if (self._sp.pad_id(), self._sp.eos_id(), self._sp.unk_id()) != (PAD_ID, EOS_ID, UNK_ID):
            raise ValueError(
                f"{model_path}: expected pad/eos/unk ids 0/1/2, got "
                f"{self._sp.pad_id()}/{self._sp.eos_id()}/{self._sp.unk_id()}"
            )

    @property
    def vocab_size(self) -> int:
        return int(self._sp.get_piece_size())

    def encode(self, text: str, add_eos: bool = True) -> list[int]:
        ids = self._sp.encode(text, out_type=int)
        return ids + [EOS_ID] if add_eos else ids

    def encode_batch(self, texts: Sequence[str], add_eos: bool = True, num_threads: int = -1) -> list[list[int]]:
        """`encode` over many texts at once (sentencepiece's C++ side, multi-threaded)."""
        return self._sp.encode(list(texts), out_type=int, add_eos=add_eos, num_threads=num_threads)

    def decode(self, ids: Iterable[int]) -> str:
        out = []
        for i in ids:
            i = int(i)
            if i == EOS_ID:
                break
            if i != PAD_ID:
                out.append(i)
        return self._sp.decode(out)

    def id_to_piece(self, i: int) -> str:
        return self._sp.id_to_piece(int(i))

    def __repr__(self) -> str:
        return f"SentencePieceTokenizer(vocab_size={self.vocab_size}, model={self.model_path!r})"


def default_cache_dir(tfds_data_dir: str | None = None) -> str:
    d = os.environ.get(CACHE_DIR_ENV)
    if d:
        return str(storage.as_path(d))
    from bert_vs_transformer.data import builders

    return os.path.join(builders.tfds_data_dir(tfds_data_dir), "bvt_cache")


def _hash(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:16]


def train_or_load(
    texts_fn,
    *,
    vocab_size: int,
    cache_key: dict,
    cache_dir: str | None = None,
    model_type: str = "bpe",
    character_coverage: float = 1.0,
    input_sentence_size: int = 2_000_000,
    num_threads: int | None = None,
    seed: int = 0,
) -> SentencePieceTokenizer:
    """The cached model for (cache_key, options), training it on `texts_fn()` (an iterable of
    sentences, called only on a cache miss) when absent.

    `input_sentence_size` caps the sentences sentencepiece samples (Multi30k's 58,000 all fit);
    training BPE on them with 2 threads takes ~1.5 s for 8,000 pieces.
    """
    import sentencepiece as spm

    options = dict(
        vocab_size=int(vocab_size), model_type=model_type, character_coverage=float(character_coverage),
        input_sentence_size=int(input_sentence_size), seed=int(seed), pad_id=PAD_ID, eos_id=EOS_ID,
        unk_id=UNK_ID, bos_id=-1, hard_vocab_limit=False, version=1,
    )
    key = _hash({"data": cache_key, "options": options})
    root = storage.as_path(cache_dir or default_cache_dir())
    final = root / f"sentencepiece-{key}"
    model_path = os.fspath(final / "spm.model")
    if epath.Path(model_path).is_file():
        return SentencePieceTokenizer(model_path)

    remote = storage.is_remote(root)
    if not remote:
        root.mkdir(parents=True, exist_ok=True)
    tmp = tempfile.mkdtemp(dir=None if remote else os.fspath(root), prefix=".tmp-sentencepiece-")
    try:
        start = time.time()
        spm.set_random_generator_seed(int(seed))
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(texts_fn()),
            model_prefix=os.path.join(tmp, "spm"),
            vocab_size=int(vocab_size),
            model_type=model_type,
            character_coverage=float(character_coverage),
            input_sentence_size=int(input_sentence_size),
            shuffle_input_sentence=True,
            num_threads=int(num_threads or os.cpu_count() or 1),
            pad_id=PAD_ID, eos_id=EOS_ID, unk_id=UNK_ID, bos_id=-1,
            hard_vocab_limit=False,
            minloglevel=2,
        )
        with open(os.path.join(tmp, "options.json"), "w") as f:
            json.dump({"data": cache_key, "options": options}, f, indent=1, sort_keys=True)
        if remote:  # spm.model last: a reader sees the model only once the rest is there
            for name in ("options.json", "spm.vocab", "spm.model"):
                (final / name).write_bytes(epath.Path(tmp, name).read_bytes())
        else:
            try:
                os.replace(tmp, final) if not os.path.exists(final) else None
            except OSError:
                pass  # another process renamed its (identical) model into place first
        logging.info("trained sentencepiece %s in %.1f s -> %s", options, time.time() - start, final)
    finally:
        if os.path.isdir(tmp):
            shutil.rmtree(tmp, ignore_errors=True)
    return SentencePieceTokenizer(model_path)
