"""Padding and packing invariance of the Transformer and BERT (property tests).

What is checked against what:
  * Transformer: logits at real target positions of a batch (mixed real lengths) against the same
    batch with extra padding appended to the source and/or target, the pad slots holding either
    the pad id or random garbage ids (masked by explicit padding): max |diff| <= 1e-5.
  * BERT: `bert.encode` hidden states at real positions, and the pooled [CLS] vector, against the
    same batch with extra attention_mask=0 padding appended (pad ids 0 or garbage): <= 1e-5.
  * Packing: two examples packed into one row (segmentation 1,1,1,2,2,0,...; positions restarting
    at 0 per segment) give the same encoder memory and the same logits as each example run alone
    in its own row; decoder inputs of the packed row come from `shift_right(targets, segmentation)`.

Examples are drawn by hypothesis (derandomized, no example database written) over a few fixed
shapes, so that the number of compilations stays small.
"""

import flax.linen as nn
import jax
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bert_vs_transformer import config_args
from bert_vs_transformer.models import bert, transformer

TOL = 1e-5
VOCAB = 61
B, S, T = 3, 6, 5  # base batch: 3 rows, source length 6, target length 5
BERT_L = 7
EXTRA = st.sampled_from([0, 2, 5])  # appended pad slots; few distinct shapes = few compiles

PROPERTY = settings(max_examples=12, deadline=None, derandomize=True, database=None)


def _lengths(max_len):
    return st.lists(st.integers(1, max_len), min_size=B, max_size=B)


def _ids(rng, lengths, max_len, low=1):
    ids = np.zeros((len(lengths), max_len), np.int32)
    for row, n in enumerate(lengths):
        ids[row, :n] = rng.integers(low, VOCAB, size=n)
    valid = np.arange(max_len)[None, :] < np.asarray(lengths)[:, None]
    return ids, valid


def _pad(ids, valid, extra, garbage, rng):
    """Appends `extra` pad slots; pad slots (old and new) hold 0 or, with garbage, random ids."""
    ids = np.pad(ids, [(0, 0), (0, extra)])
    valid = np.pad(valid, [(0, 0), (0, extra)])
    if garbage:
        ids = np.where(valid, ids, rng.integers(1, VOCAB, size=ids.shape)).astype(np.int32)
    return ids, valid


def _max_diff(a, b, valid):
    return float(np.abs(np.asarray(a) - np.asarray(b))[valid].max())


# ---------------------------------------------------------------- Transformer


@pytest.fixture(scope="module")
def tf():
    cfg = config_args.model_config("configs/transformer.py:tiny", vocab_size=VOCAB, dropout_rate=0.0)
    model = transformer.EncoderDecoder(cfg)
    src, tgt = np.ones((B, S), np.int32), np.ones((B, T), np.int32)
    params = nn.unbox(jax.jit(model.init)(jax.random.PRNGKey(0), src, tgt)["params"])

    @jax.jit
    def forward(src, src_valid, tgt_in, tgt_valid):
        return model.apply({"params": params}, src, tgt_in, inputs_padding=src_valid, targets_padding=tgt_valid)

    @jax.jit
    def encode(src, src_valid, positions, segmentation):
        return model.apply({"params": params}, src, src_valid, positions, segmentation, method="encode")

    @jax.jit
    def forward_packed(src, tgt_in, src_pos, src_seg, tgt_pos, tgt_seg):
        return model.apply(
            {"params": params}, src, tgt_in, inputs_positions=src_pos, targets_positions=tgt_pos,
            inputs_segmentation=src_seg, targets_segmentation=tgt_seg,
        )

    return dict(cfg=cfg, forward=forward, encode=encode, forward_packed=forward_packed)


@PROPERTY
@given(
    src_lens=_lengths(S), tgt_lens=_lengths(T), extra_src=EXTRA, extra_tgt=EXTRA,
    garbage=st.booleans(), seed=st.integers(0, 2**31 - 1),
)
def test_transformer_extra_padding(tf, src_lens, tgt_lens, extra_src, extra_tgt, garbage, seed):
    rng = np.random.default_rng(seed)
    src, src_valid = _ids(rng, src_lens, S)
    tgt, tgt_valid = _ids(rng, tgt_lens, T)
    tgt_in = np.asarray(transformer.shift_right(tgt))  # BOS = 0, so the padding is explicit
    base = tf["forward"](src, src_valid, tgt_in, tgt_valid)

    src_p, src_valid_p = _pad(src, src_valid, extra_src, garbage, rng)
    tgt_in_p, tgt_valid_p = _pad(tgt_in, tgt_valid, extra_tgt, garbage, rng)
    tgt_in_p[:, 0] = 0  # BOS stays BOS (garbage only fills pad slots; position 0 is always real)
    padded = tf["forward"](src_p, src_valid_p, tgt_in_p, tgt_valid_p)

    diff = _max_diff(base, np.asarray(padded)[:, :T], tgt_valid)
    assert diff <= TOL, f"extra padding (src +{extra_src}, tgt +{extra_tgt}, garbage={garbage}) changed logits by {diff:.3e}"


def _pack(a, b, length):
    """Two 1-D id arrays -> one row of `length`: ids, segmentation (1.., 2.., 0..), positions."""
    ids = np.zeros(length, np.int32)
    seg = np.zeros(length, np.int32)
    pos = np.zeros(length, np.int32)
    ids[: len(a)], ids[len(a) : len(a) + len(b)] = a, b
    seg[: len(a)], seg[len(a) : len(a) + len(b)] = 1, 2
    pos[: len(a)], pos[len(a) : len(a) + len(b)] = np.arange(len(a)), np.arange(len(b))
    return ids, seg, pos


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_transformer_packing(tf, seed):
    """Row 0 packs (x, y), row 1 packs (y, x): each example is seen at both offsets."""
    rng = np.random.default_rng(100 + seed)
    sl = rng.integers(1, S, size=2)
    sl[1] = rng.integers(1, S - sl[0] + 1)  # both fit in S
    tl = rng.integers(1, T, size=2)
    tl[1] = rng.integers(1, T - tl[0] + 1)
    srcs = [rng.integers(1, VOCAB, size=n).astype(np.int32) for n in sl]
    tgts = [rng.integers(1, VOCAB, size=n).astype(np.int32) for n in tl]

    # Alone: example k in row k, ordinary padding.
    src_alone, src_valid = _ids(rng, list(sl), S)
    tgt_alone, tgt_valid = _ids(rng, list(tl), T)
    for k in range(2):
        src_alone[k, : sl[k]], tgt_alone[k, : tl[k]] = srcs[k], tgts[k]
    tgt_in_alone = np.asarray(transformer.shift_right(tgt_alone))
    memory_alone = np.asarray(tf["encode"](src_alone, src_valid, None, None))
    logits_alone = np.asarray(tf["forward"](src_alone, src_valid, tgt_in_alone, tgt_valid))

    # Packed.
    rows = [(0, 1), (1, 0)]
    packed_src = [_pack(srcs[i], srcs[j], S) for i, j in rows]
    packed_tgt = [_pack(tgts[i], tgts[j], T) for i, j in rows]
    src_p, src_seg, src_pos = (np.stack(x) for x in zip(*packed_src))
    tgt_p, tgt_seg, tgt_pos = (np.stack(x) for x in zip(*packed_tgt))
    tgt_in_p = np.asarray(transformer.shift_right(tgt_p, tgt_seg))
    memory_p = np.asarray(tf["encode"](src_p, src_seg > 0, src_pos, src_seg))
    logits_p = np.asarray(tf["forward_packed"](src_p, tgt_in_p, src_pos, src_seg, tgt_pos, tgt_seg))

    diffs = []
    for row, order in enumerate(rows):
        s_off = t_off = 0
        for k in order:
            diffs.append(np.abs(memory_p[row, s_off : s_off + sl[k]] - memory_alone[k, : sl[k]]).max())
            diffs.append(np.abs(logits_p[row, t_off : t_off + tl[k]] - logits_alone[k, : tl[k]]).max())
            s_off, t_off = s_off + sl[k], t_off + tl[k]
    assert max(diffs) <= TOL, f"packed vs alone: max diff {max(diffs):.3e} (src lens {sl}, tgt lens {tl})"


# ---------------------------------------------------------------- BERT


@pytest.fixture(scope="module")
def bert_setup():
    cfg = config_args.model_config("configs/bert.py:tiny", vocab_size=VOCAB, dropout_rate=0.0,
                                   attention_dropout_rate=0.0)
    ids = np.ones((B, BERT_L), np.int32)
    params = nn.unbox(jax.jit(bert.BertForPreTraining(cfg).init)(jax.random.PRNGKey(0), ids)["params"])
    return cfg, params


@PROPERTY
@given(lens=_lengths(BERT_L), extra=EXTRA, garbage=st.booleans(), seed=st.integers(0, 2**31 - 1))
def test_bert_extra_padding(bert_setup, lens, extra, garbage, seed):
    cfg, params = bert_setup
    rng = np.random.default_rng(seed)
    ids, valid = _ids(rng, lens, BERT_L)
    types = np.where(valid, rng.integers(0, 2, size=ids.shape), 0).astype(np.int32)
    hidden, pooled = bert.encode(cfg, params, ids, types, valid.astype(np.int32))

    ids_p, valid_p = _pad(ids, valid, extra, garbage, rng)
    types_p = np.pad(types, [(0, 0), (0, extra)])
    if garbage:
        types_p = np.where(valid_p, types_p, rng.integers(0, 2, size=types_p.shape)).astype(np.int32)
    hidden_p, pooled_p = bert.encode(cfg, params, ids_p, types_p, valid_p.astype(np.int32))

    d_hidden = _max_diff(hidden, np.asarray(hidden_p)[:, :BERT_L], valid)
    d_pooled = float(np.abs(np.asarray(pooled) - np.asarray(pooled_p)).max())
    assert d_hidden <= TOL and d_pooled <= TOL, (
        f"extra padding (+{extra}, garbage={garbage}) changed hidden by {d_hidden:.3e}, pooled by {d_pooled:.3e}"
    )
