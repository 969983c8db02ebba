"""BERT pretraining examples (Devlin et al. 2018, 3.1 and A.1): NSP sentence pairs, then MLM masking.

The semantics are those of Google's `create_pretraining_data.py`, re-implemented in two stages so
that a pipeline can mask statically (once, with a seed) or dynamically (again every epoch):

1. `create_instances(documents, max_seq_len, short_seq_prob, rng, cls_id=, sep_id=)` ->
   `list[Instance]`. `documents` is a list of documents, each a list of sentences, each a sequence
   of token ids (no special tokens). Per document, sentences are gathered into chunks of about
   `target_seq_length = max_seq_len - 3` tokens (with probability `short_seq_prob` the target is
   instead uniform in [2, max_seq_len - 3], drawn once per document as in Google's script; pass
   `short_seq_per_instance=True` to draw it per instance). Segment A = the first `a_end` whole
   sentences of the chunk (`a_end` uniform in [1, len(chunk) - 1]); B = the rest (IsNext), or with
   probability 1/2 a span of whole sentences from a random other document starting at a random
   sentence (NotNext), and then the chunk's unused sentences are put back for the next chunk.
   One deviation keeps the labels at the paper's 50/50: Google's script makes every chunk of a
   single sentence NotNext (such chunks are common at document ends and with short targets, and
   push NotNext to 56-58% on documents of 5-30 sentences at length 128); here such a chunk that
   draws IsNext is paired with the document's next sentence (the previous one at its end).
   `google_single_sentence_nsp=True` restores the script's rule. The pair is truncated to
   `max_seq_len - 3` tokens by repeatedly removing a token from the front or the back (coin flip)
   of the longer segment. An instance is `[CLS] A [SEP] B [SEP]` with segment ids 0 for `[CLS] A [SEP]` and 1 for
   `B [SEP]`.

2. `mask_instance(instance, rng, max_seq_len=, vocab_size=, cls_id=, sep_id=, mask_id=, ...)` ->
   `dict[str, np.ndarray]`. The candidates are all tokens except [CLS]/[SEP]; with
   `whole_word_mask` a '##' continuation piece (`is_subword[id]`) joins the word before it. The
   number of predictions is `min(max_predictions_per_seq, max(1, round(masked_lm_prob * n)))`,
   n = number of candidate tokens (Google's script uses the length including the 3 special tokens,
   about 0.3 points more at 128; `count_special_tokens=True` reproduces it). Words are visited in
   random order and taken whole while they fit. Each chosen token becomes [MASK] with probability
   0.8, a uniformly random id in [0, vocab_size) with 0.1, and stays itself with 0.1.

   The output has the keys `tasks/pretraining.py` reads, padded to fixed shapes:
   `input_ids`, `token_type_ids`, `attention_mask` int32 [max_seq_len]; `masked_lm_positions`,
   `masked_lm_ids` int32 and `masked_lm_weights` float32 [max_predictions_per_seq] (sorted by
   position, padding 0 / 0 / 0.0); `next_sentence_labels` int32 scalar (0 = IsNext, 1 = NotNext,
   as Google and Hugging Face).

All randomness comes from an explicit `numpy.random.Generator`. For the pipeline:

- `Masker(...)` / `Masker.from_wordpiece(wp, max_seq_len, ...)` holds the masking options; it is a
  callable (element, rng) that grain's `ds.random_map(masker, seed=s)` takes (grain seeds each element's
  generator from (s, index), so after `.repeat(num_epochs)` every epoch is masked afresh) and has
  `masker.for_epoch(instance, seed, epoch, index)`, which masks with `epoch_rng(seed, epoch, index)`
  (static masking = always epoch 0).
- `InstanceSource` stores instances as flat numpy arrays (cheap to pickle into grain workers,
  `save`/`load` as .npz) and is a grain random-access source of `Instance`s;
  `MaskedSource(source, masker, seed, epoch)` is a random-access source of masked example dicts.
- `tokenize_documents(documents, wordpiece)` turns documents of sentence strings into the id form.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Sequence, Union

import numpy as np

RngLike = Union[np.random.Generator, int, Sequence[int]]

# Decisions recorded when `mask_instance(..., return_decisions=True)` (for tests and analysis).
DECISION_NONE, DECISION_MASK, DECISION_RANDOM, DECISION_KEEP = 0, 1, 2, 3


def _rng(rng) -> np.random.Generator:
    return rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)


def epoch_rng(seed: int, epoch: int, index: int) -> np.random.Generator:
    """The generator that masks example `index` in `epoch` (static masking: epoch 0 always)."""
    key = (int(seed), int(epoch), int(index))
    if all(0 <= v < 2**32 for v in key):  # the same SeedSequence words as the list, 2.5 us sooner
        return np.random.default_rng(np.array(key, np.uint32))
    return np.random.default_rng(list(key))


@dataclasses.dataclass(frozen=True)
class Instance:
    """One unmasked pretraining pair: tokens `[CLS] A [SEP] B [SEP]` and their segment ids."""

    tokens: np.ndarray  # int32 [n]
    segment_ids: np.ndarray  # int32 [n]
    is_random_next: bool
    target_seq_length: int = 0  # the chunk's target length (diagnostic)

    @property
    def num_a(self) -> int:
        """Length of `[CLS] A [SEP]`."""
        return int(len(self.segment_ids) - np.count_nonzero(self.segment_ids))


# ---------------------------------------------------------------------------------------------
# Stage 1: sentence pairs
# ---------------------------------------------------------------------------------------------


def _truncate_seq_pair(a: np.ndarray, b: np.ndarray, max_num_tokens: int, rng: np.random.Generator):
    """Google's truncate_seq_pair: while too long, drop one token of the longer segment (b on
    ties) from its front or back with equal probability. The number removed from each side is a
    function of the lengths alone, so the front/back split is drawn as a binomial per side."""
    la, lb = len(a), len(b)
    if la + lb <= max_num_tokens:
        return a, b
    if la > lb:
        cut = min(la - lb, la + lb - max_num_tokens)
        la -= cut
    elif lb > la:
        cut = min(lb - la, la + lb - max_num_tokens)
        lb -= cut
    excess = la + lb - max_num_tokens
    if excess > 0:
        lb -= (excess + 1) // 2
        la -= excess // 2
    out = []
    for seg, keep in ((a, la), (b, lb)):
        removed = len(seg) - keep
        front = int(rng.binomial(removed, 0.5)) if removed else 0
        out.append(seg[front: front + keep])
    return out[0], out[1]


def _concat(sentences: Sequence[np.ndarray]) -> np.ndarray:
    return np.concatenate(sentences) if sentences else np.zeros((0,), np.int32)


def _as_documents(documents) -> list[list[np.ndarray]]:
    docs = []
    for doc in documents:
        sents = [np.asarray(s, dtype=np.int32) for s in doc]
        sents = [s for s in sents if s.size]
        if sents:
            docs.append(sents)
    return docs


def _instances_from_document(
    docs: list[list[np.ndarray]], doc_index: int, max_seq_len: int, short_seq_prob: float,
    rng: np.random.Generator, cls_id: int, sep_id: int, short_seq_per_instance: bool,
    google_single_sentence_nsp: bool,
) -> list[Instance]:
    document = docs[doc_index]
    max_num_tokens = max_seq_len - 3

    def draw_target():
        if rng.random() < short_seq_prob:
            return int(rng.integers(2, max_num_tokens + 1))
        return max_num_tokens

    target = draw_target()
    instances = []
    chunk: list[np.ndarray] = []
    chunk_len = 0
    i = 0
    while i < len(document):
        chunk.append(document[i])
        chunk_len += len(document[i])
        if i == len(document) - 1 or chunk_len >= target:
            random_next = rng.random() < 0.5
            if len(chunk) == 1 and not random_next and not google_single_sentence_nsp:
                # An IsNext pair needs two sentences: take the next one (or, at the document's
                # end, the previous one) so that the label stays a fair coin.
                if i + 1 < len(document):
                    i += 1
                    chunk.append(document[i])
                elif i >= 1:
                    chunk.insert(0, document[i - 1])
            a_end = int(rng.integers(1, len(chunk))) if len(chunk) >= 2 else 1
            tokens_a = _concat(chunk[:a_end])
            if len(chunk) == 1 or random_next:
                is_random_next = True
                target_b = target - len(tokens_a)
                # Up to 10 tries for another document (the same one if there is no other).
                for _ in range(10):
                    r = int(rng.integers(0, len(docs)))
                    if r != doc_index:
                        break
                random_doc = docs[r]
                b_parts, b_len = [], 0
                for j in range(int(rng.integers(0, len(random_doc))), len(random_doc)):
                    b_parts.append(random_doc[j])
                    b_len += len(random_doc[j])
                    if b_len >= target_b:
                        break
                tokens_b = _concat(b_parts)
                i -= len(chunk) - a_end  # put the unused sentences back
            else:
                is_random_next = False
                tokens_b = _concat(chunk[a_end:])
            tokens_a, tokens_b = _truncate_seq_pair(tokens_a, tokens_b, max_num_tokens, rng)
            if len(tokens_a) and len(tokens_b):
                tokens = np.concatenate([[cls_id], tokens_a, [sep_id], tokens_b, [sep_id]]).astype(np.int32)
                segment_ids = np.zeros(len(tokens), np.int32)
                segment_ids[len(tokens_a) + 2:] = 1
                instances.append(Instance(tokens, segment_ids, is_random_next, target))
            chunk, chunk_len = [], 0
            if short_seq_per_instance:
                target = draw_target()
        i += 1
    return instances


def create_instances(
    documents: Sequence[Sequence[Sequence[int]]],
    max_seq_len: int,
    short_seq_prob: float,
    rng: RngLike,
    *,
    cls_id: int,
    sep_id: int,
    dupe_factor: int = 1,
    shuffle: bool = True,
    short_seq_per_instance: bool = False,
    google_single_sentence_nsp: bool = False,
) -> list[Instance]:
    """NSP sentence-pair instances (unmasked) from tokenized documents; see the module docstring.

    `dupe_factor` passes over the documents (each pass draws new chunks and pairs, Google uses
    10 with static masking); `shuffle` shuffles the resulting instances. Empty sentences and
    documents are dropped. Deterministic given `rng` (a Generator or a seed).
    `google_single_sentence_nsp=True` makes every single-sentence chunk NotNext, as Google's script
    does (which pushes the NotNext rate above 1/2: 56-58% on 5-30-sentence documents at 128).
    """
    if max_seq_len < 5:
        raise ValueError(f"max_seq_len={max_seq_len} leaves no room for [CLS] A [SEP] B [SEP]")
    rng = _rng(rng)
    docs = _as_documents(documents)
    instances: list[Instance] = []
    for _ in range(dupe_factor):
        for doc_index in range(len(docs)):
            instances.extend(_instances_from_document(
                docs, doc_index, max_seq_len, short_seq_prob, rng, cls_id, sep_id, short_seq_per_instance,
                google_single_sentence_nsp))
    if shuffle:
        order = rng.permutation(len(instances))
        instances = [instances[k] for k in order]
    return instances


# ---------------------------------------------------------------------------------------------
# Stage 2: masking
# ---------------------------------------------------------------------------------------------


def _subword_flags(is_subword, ids: np.ndarray) -> np.ndarray:
    if is_subword is None:
        return np.zeros(len(ids), bool)
    if callable(is_subword):
        return np.fromiter((bool(is_subword(int(t))) for t in ids), bool, len(ids))
    return np.asarray(is_subword, bool)[ids]


def choose_predictions(tokens: np.ndarray, cand: np.ndarray, num_to_predict: int, rng: np.random.Generator, *,
                       vocab_size: int, whole_word_mask: bool = False, is_subword=None):
    """The random part of masking, every draw from `rng` in order: (positions sorted, u_mask, u_keep,
    random ids) for at most `num_to_predict` of the candidate positions `cand`; `decide(u_mask,
    u_keep)` turns the uniforms into decisions. `mask_instance` and `batch_masking.mask_batch` share it."""
    if whole_word_mask:
        # A continuation piece joins the word before it when that is the adjacent candidate.
        cont = _subword_flags(is_subword, tokens[cand])
        cont &= np.concatenate([[False], np.diff(cand) == 1])
        starts = np.flatnonzero(~cont)
        lengths = np.diff(np.append(starts, len(cand)))
        chosen, total = [], 0
        for w in rng.permutation(len(starts)):
            if total >= num_to_predict:
                break
            if total + lengths[w] > num_to_predict:
                continue
            chosen.append(cand[starts[w]: starts[w] + lengths[w]])
            total += int(lengths[w])
        positions = np.sort(np.concatenate(chosen)) if chosen else np.zeros((0,), np.int64)
    else:
        positions = np.sort(rng.permutation(cand)[:num_to_predict])
    k = len(positions)
    u_mask, u_keep = rng.random(k), rng.random(k)
    random_ids = rng.integers(0, vocab_size, k)
    return positions, u_mask, u_keep, random_ids


def decide(u_mask: np.ndarray, u_keep: np.ndarray) -> np.ndarray:
    """BERT's 80/10/10 (3.1): [MASK] when u_mask < 0.8, else kept when u_keep < 0.5, else a random id."""
    return np.where(u_mask < 0.8, DECISION_MASK, np.where(u_keep < 0.5, DECISION_KEEP, DECISION_RANDOM))


def mask_instance(
    instance: Instance,
    rng: RngLike,
    *,
    max_seq_len: int,
    vocab_size: int,
    cls_id: int,
    sep_id: int,
    mask_id: int,
    pad_id: int = 0,
    masked_lm_prob: float = 0.15,
    max_predictions_per_seq: int = 20,
    whole_word_mask: bool = False,
    is_subword: np.ndarray | Callable[[int], bool] | None = None,
    count_special_tokens: bool = False,
    return_decisions: bool = False,
) -> dict[str, np.ndarray]:
    """Masked-LM example from an instance; see the module docstring. `is_subword` is a boolean
    array over the vocabulary (e.g. `WordPiece.subword_mask`) or a predicate on ids; it matters
    only with `whole_word_mask`. `return_decisions` adds `masked_lm_decisions` (1 [MASK],
    2 random, 3 kept, 0 padding)."""
    rng = _rng(rng)
    tokens = np.asarray(instance.tokens, np.int32)
    n = len(tokens)
    if n > max_seq_len:
        raise ValueError(f"instance of {n} tokens exceeds max_seq_len={max_seq_len}")
    cand = np.flatnonzero((tokens != cls_id) & (tokens != sep_id))
    base = n if count_special_tokens else len(cand)
    num_to_predict = min(max_predictions_per_seq, max(1, int(round(base * masked_lm_prob))))
    positions, u_mask, u_keep, random_ids = choose_predictions(
        tokens, cand, num_to_predict, rng, vocab_size=vocab_size, whole_word_mask=whole_word_mask,
        is_subword=is_subword)
    decisions = decide(u_mask, u_keep)
    k = len(positions)
    labels = tokens[positions]
    masked = tokens.copy()
    masked[positions] = np.where(
        decisions == DECISION_MASK, mask_id, np.where(decisions == DECISION_RANDOM, random_ids, labels))

    p = max_predictions_per_seq
    out = {
        "input_ids": np.full(max_seq_len, pad_id, np.int32),
        "token_type_ids": np.zeros(max_seq_len, np.int32),
        "attention_mask": np.zeros(max_seq_len, np.int32),
        "masked_lm_positions": np.zeros(p, np.int32),
        "masked_lm_ids": np.zeros(p, np.int32),
        "masked_lm_weights": np.zeros(p, np.float32),
        "next_sentence_labels": np.asarray(int(instance.is_random_next), np.int32),
    }
    out["input_ids"][:n] = masked
    out["token_type_ids"][:n] = instance.segment_ids
    out["attention_mask"][:n] = 1
    out["masked_lm_positions"][:k] = positions
    out["masked_lm_ids"][:k] = labels
    out["masked_lm_weights"][:k] = 1.0
    if return_decisions:
        out["masked_lm_decisions"] = np.zeros(p, np.int32)
        out["masked_lm_decisions"][:k] = decisions
    return out


class Masker:
    """`mask_instance` with fixed options: a grain RandomMapTransform and a plain callable."""

    def __init__(
        self,
        *,
        max_seq_len: int,
        vocab_size: int,
        cls_id: int,
        sep_id: int,
        mask_id: int,
        pad_id: int = 0,
        masked_lm_prob: float = 0.15,
        max_predictions_per_seq: int = 20,
        whole_word_mask: bool = False,
        is_subword: np.ndarray | None = None,
        count_special_tokens: bool = False,
    ):
        if whole_word_mask and is_subword is None:
            raise ValueError("whole_word_mask needs is_subword (e.g. WordPiece.subword_mask)")
        self.options = dict(
            max_seq_len=max_seq_len, vocab_size=vocab_size, cls_id=cls_id, sep_id=sep_id,
            mask_id=mask_id, pad_id=pad_id, masked_lm_prob=masked_lm_prob,
            max_predictions_per_seq=max_predictions_per_seq, whole_word_mask=whole_word_mask,
            is_subword=None if is_subword is None else np.asarray(is_subword, bool),
            count_special_tokens=count_special_tokens,
        )

    @classmethod
    def from_wordpiece(cls, wp, max_seq_len: int, **kwargs) -> "Masker":
        """Options from a `wordpiece.WordPiece` (vocab size, special ids, '##' pieces)."""
        return cls(max_seq_len=max_seq_len, vocab_size=wp.vocab_size, cls_id=wp.cls_id, sep_id=wp.sep_id,
                   mask_id=wp.mask_id, pad_id=wp.pad_id, is_subword=wp.subword_mask, **kwargs)

    def random_map(self, element: Instance, rng: np.random.Generator) -> dict[str, np.ndarray]:
        return mask_instance(element, rng, **self.options)

    __call__ = random_map

    def for_epoch(self, instance: Instance, seed: int, epoch: int, index: int) -> dict[str, np.ndarray]:
        """Masks with `epoch_rng(seed, epoch, index)`: static masking = epoch 0 every epoch."""
        return mask_instance(instance, epoch_rng(seed, epoch, index), **self.options)

    def __repr__(self) -> str:
        opts = {k: v for k, v in self.options.items() if k != "is_subword"}
        return f"Masker({opts})"


# ---------------------------------------------------------------------------------------------
# Random-access sources (grain's protocol: __len__, __getitem__, __repr__; picklable)
# ---------------------------------------------------------------------------------------------


class InstanceSource:
    """Instances stored as flat arrays: tokens [total], offsets [N+1], num_a [N] (length of
    `[CLS] A [SEP]`), is_random_next [N], target_seq_length [N]."""

    def __init__(self, tokens, offsets, num_a, is_random_next, target_seq_length=None):
        self.tokens = np.asarray(tokens, np.int32)
        self.offsets = np.asarray(offsets, np.int64)
        self.num_a = np.asarray(num_a, np.int32)
        self.is_random_next = np.asarray(is_random_next, bool)
        self.target_seq_length = (
            np.zeros(len(self.num_a), np.int32) if target_seq_length is None
            else np.asarray(target_seq_length, np.int32))

    @classmethod
    def from_instances(cls, instances: Sequence[Instance]) -> "InstanceSource":
        lengths = np.array([len(x.tokens) for x in instances], np.int64)
        return cls(
            _concat([x.tokens for x in instances]),
            np.concatenate([[0], np.cumsum(lengths)]),
            [x.num_a for x in instances],
            [x.is_random_next for x in instances],
            [x.target_seq_length for x in instances],
        )

    def __len__(self) -> int:
        return len(self.num_a)

    def __getitem__(self, index: int) -> Instance:
        index = int(index)
        if index < 0:
            index += len(self)
        tokens = self.tokens[self.offsets[index]: self.offsets[index + 1]]
        segment_ids = np.zeros(len(tokens), np.int32)
        segment_ids[self.num_a[index]:] = 1
        return Instance(tokens, segment_ids, bool(self.is_random_next[index]), int(self.target_seq_length[index]))

    def save(self, path: str) -> None:
        np.savez(path, tokens=self.tokens, offsets=self.offsets, num_a=self.num_a,
                 is_random_next=self.is_random_next, target_seq_length=self.target_seq_length)

    @classmethod
    def load(cls, path: str) -> "InstanceSource":
        with np.load(path, allow_pickle=False) as f:
            return cls(f["tokens"], f["offsets"], f["num_a"], f["is_random_next"], f["target_seq_length"])

    def __repr__(self) -> str:
        return f"InstanceSource(num_instances={len(self)}, num_tokens={len(self.tokens)})"


class MaskedSource:
    """Masked examples of `source` for one epoch: `source[i]` masked with
    `epoch_rng(seed, epoch, i)`. Make one per epoch for dynamic masking, or keep epoch=0."""

    def __init__(self, source, masker: Masker, seed: int, epoch: int = 0):
        self.source, self.masker, self.seed, self.epoch = source, masker, int(seed), int(epoch)

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, index: int) -> dict[str, np.ndarray]:
        return self.masker.for_epoch(self.source[index], self.seed, self.epoch, int(index))

    def __repr__(self) -> str:
        return f"MaskedSource({self.source!r}, {self.masker!r}, seed={self.seed}, epoch={self.epoch})"


def tokenize_documents(documents: Sequence[Sequence[str]], wordpiece) -> list[list[list[int]]]:
    """Documents of sentence strings -> documents of WordPiece id lists (for `create_instances`)."""
    flat = [s for doc in documents for s in doc]
    ids = wordpiece.encode_batch(flat) if flat else []
    out, k = [], 0
    for doc in documents:
        out.append(ids[k: k + len(doc)])
        k += len(doc)
    return out
