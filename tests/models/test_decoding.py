"""Greedy and beam search (bert_vs_transformer.models.decoding) on a tiny random Transformer.

The model: vocab 32, d_model 32, 2+2 layers, random params made non-trivial: the shared token
embedding is shrunk (so the sinusoidal positions and the source steer the decoder and its output
changes along the sequence) and the last decoder LayerNorm scale enlarged (sharp next-token
distributions). EOS is an id the greedy decoder emits after a few steps in most, not all, rows,
so the batch mixes sentences that end early with ones that run to their length limit.

What is checked against what: beam_size=1 (alpha 0) against greedy; the beam hypothesis against
greedy's under the length-penalised objective, both rescored by teacher-forcing the full
(uncached) model; the reported beam scores against that rescoring; padding after EOS; a batch
of mixed source lengths against each sentence decoded alone; scan_layers (cache with a leading
layer axis) against unrolled layers; and the while loop's early stop on an EOS-biased model.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bert_vs_transformer import config_args
from bert_vs_transformer.models import convert, decoding, transformer

VOCAB = 32
N_ENC, N_DEC = 2, 2
SRC_LENS = [7, 3, 5, 1]
ALPHA = 0.6


def _config(**overrides):
    return config_args.model_config(
        "configs/transformer.py:tiny", vocab_size=VOCAB, d_model=32, num_heads=4, d_ff=64,
        num_encoder_layers=N_ENC, num_decoder_layers=N_DEC, dropout_rate=0.0, **overrides,
    )


@pytest.fixture(scope="module")
def cfg():
    return _config()


@pytest.fixture(scope="module")
def src():
    rng = np.random.default_rng(0)
    out = np.zeros((len(SRC_LENS), max(SRC_LENS)), np.int32)
    for row, n in enumerate(SRC_LENS):
        out[row, :n] = rng.integers(2, VOCAB, size=n)
    return out


@pytest.fixture(scope="module")
def params(cfg, src):
    p = nn.unbox(transformer.EncoderDecoder(cfg).init(jax.random.PRNGKey(0), src, src)["params"])
    p = jax.tree_util.tree_map(np.asarray, p)
    p["token_embed"]["embedding"] = p["token_embed"]["embedding"] * 0.1  # positions/source matter more
    last_norm = p["decoder"][f"layers_{N_DEC - 1}"]["ffn_norm"]
    last_norm["scale"] = last_norm["scale"] * 40.0  # sharp next-token distributions
    return p


@pytest.fixture(scope="module")
def eos(cfg, params, src):
    """An id that the greedy decoder, run with no EOS, emits in some rows (never in its first two
    steps) and not in others: with it as EOS, some sentences end early and some hit their limit."""
    probe = np.asarray(decoding.greedy_decode(cfg, params, src, eos_id=VOCAB))  # VOCAB: never emitted
    rows_with = np.zeros(VOCAB, int)
    for tok in range(1, VOCAB):
        hits = [np.flatnonzero(row == tok) for row in probe]
        if all(len(h) == 0 or h[0] >= 2 for h in hits):
            rows_with[tok] = sum(len(h) > 0 for h in hits)
    rows_with[rows_with == len(probe)] = 0
    assert rows_with.max() > 0, probe
    return int(np.argmax(rows_with))


def _limits(src):
    return (np.asarray(src) != 0).sum(1) + decoding.EXTRA_LENGTH


def _lengths(tokens, eos, limits):
    """Hypothesis lengths |Y|: through the first EOS, else the row's length limit."""
    tokens = np.asarray(tokens)
    out = []
    for row, limit in zip(tokens, limits):
        hits = np.flatnonzero(row == eos)
        out.append(hits[0] + 1 if len(hits) else limit)
    return np.array(out)


def _teacher_forced_scores(cfg, params, src, tokens, lengths, alpha):
    """log P(Y | X) / lp(|Y|) from one uncached forward over the hypotheses."""
    tokens = jnp.asarray(tokens)
    model = transformer.EncoderDecoder(cfg)
    logits = model.apply({"params": params}, jnp.asarray(src), transformer.shift_right(tokens))
    logp = jax.nn.log_softmax(logits, axis=-1)
    tok_logp = jnp.take_along_axis(logp, tokens[..., None], axis=-1)[..., 0]
    mask = jnp.arange(tokens.shape[1])[None] < jnp.asarray(lengths)[:, None]
    total = jnp.sum(jnp.where(mask, tok_logp, 0.0), axis=1)
    return np.asarray(total / decoding.length_penalty(jnp.asarray(lengths), alpha))


@pytest.fixture(scope="module")
def greedy(cfg, params, src, eos):
    tokens, steps = decoding.greedy_decode(cfg, params, src, eos_id=eos, return_steps=True)
    return np.asarray(tokens), int(steps)


@pytest.fixture(scope="module")
def beam(cfg, params, src, eos):
    tokens, scores, steps = decoding.beam_search(cfg, params, src, eos_id=eos, return_steps=True)
    return np.asarray(tokens), np.asarray(scores), int(steps)


def test_defaults_and_mixed_endings(src, eos, greedy, beam):
    """Output width = source width + 50; some rows end early with EOS, at least one runs to its
    limit (so both endings are exercised by the tests below)."""
    tokens, steps = greedy
    assert tokens.shape == beam[0].shape == (len(SRC_LENS), max(SRC_LENS) + 50)
    ended = (tokens == eos).any(1)
    print(f"\neos={eos}; greedy rows ending in EOS: {ended.tolist()}, steps {steps}; beam steps {beam[2]}")
    assert ended.any() and not ended.all()
    assert steps == _limits(src)[~ended].max()  # the loop ran until the last unfinished row's limit


def test_beam_size_one_is_greedy(cfg, params, src, eos, greedy):
    """beam_size=1 with alpha=0 is exactly greedy. (With alpha > 0 it need not be: a live beam may
    continue past a finished one since longer hypotheses get a larger penalty divisor.)"""
    tokens, _ = decoding.beam_search(cfg, params, src, eos_id=eos, beam_size=1, alpha=0.0)
    np.testing.assert_array_equal(np.asarray(tokens), greedy[0])


def test_beam_scores_match_teacher_forcing(cfg, params, src, eos, beam):
    tokens, scores, _ = beam
    lengths = _lengths(tokens, eos, _limits(src))
    rescored = _teacher_forced_scores(cfg, params, src, tokens, lengths, ALPHA)
    print(f"\nbeam scores {scores}, teacher-forced {rescored}")
    np.testing.assert_allclose(scores, rescored, atol=1e-4, rtol=0)


def test_beam_at_least_as_good_as_greedy(cfg, params, src, eos, greedy, beam):
    limits = _limits(src)
    g = _teacher_forced_scores(cfg, params, src, greedy[0], _lengths(greedy[0], eos, limits), ALPHA)
    b = _teacher_forced_scores(cfg, params, src, beam[0], _lengths(beam[0], eos, limits), ALPHA)
    differ = (greedy[0] != beam[0]).any(1)
    print(f"\ngreedy {g}\nbeam   {b}\nrows where beam differs from greedy: {differ.tolist()}")
    assert np.all(b >= g - 1e-5), (b, g)


@pytest.mark.parametrize("which", ["greedy", "beam"])
def test_padding_after_eos(src, eos, greedy, beam, which):
    tokens = greedy[0] if which == "greedy" else beam[0]
    limits = _limits(src)
    lengths = _lengths(tokens, eos, limits)
    assert (lengths < limits).any()  # some row ended early
    for row, n in zip(tokens, lengths):
        assert np.all(row[n:] == 0), row  # n: through the first EOS, else the row's limit


def test_batch_equals_each_sentence_alone(cfg, params, src, eos, greedy, beam):
    """Mixed source lengths: every row decodes (tokens; beam scores to 1e-5) as it does alone,
    including the per-sentence default length limit (its own length + 50)."""
    for row, n in enumerate(SRC_LENS):
        alone_src = src[row : row + 1, :n]
        g = np.asarray(decoding.greedy_decode(cfg, params, alone_src, eos_id=eos))[0]
        bt, bs = decoding.beam_search(cfg, params, alone_src, eos_id=eos)
        width = n + 50
        assert g.shape == (width,)
        np.testing.assert_array_equal(g, greedy[0][row, :width])
        assert np.all(greedy[0][row, width:] == 0)
        np.testing.assert_array_equal(np.asarray(bt)[0], beam[0][row, :width])
        assert abs(float(bs[0]) - beam[1][row]) <= 1e-5


def test_scan_layers_matches_unrolled(params, src, eos, greedy, beam):
    """The scanned cache (layer axis first, counters per layer) reorders beams correctly."""
    cfg = _config(scan_layers=True)
    stacked = dict(params)
    stacked["encoder"] = convert.stack_layers(params["encoder"], N_ENC)
    stacked["decoder"] = convert.stack_layers(params["decoder"], N_DEC)
    np.testing.assert_array_equal(np.asarray(decoding.greedy_decode(cfg, stacked, src, eos_id=eos)), greedy[0])
    tokens, scores = decoding.beam_search(cfg, stacked, src, eos_id=eos)
    np.testing.assert_array_equal(np.asarray(tokens), beam[0])
    np.testing.assert_allclose(np.asarray(scores), beam[1], atol=1e-5, rtol=0)


def test_explicit_max_len(cfg, params, src, eos):
    """max_len=N: N-wide outputs; hypotheses cut at N (no EOS) are scored with lp(N)."""
    n = 4
    g = np.asarray(decoding.greedy_decode(cfg, params, src, eos_id=eos, max_len=n))
    tokens, scores = decoding.beam_search(cfg, params, src, eos_id=eos, max_len=n)
    assert g.shape == tokens.shape == (len(SRC_LENS), n)
    limits = np.full(len(SRC_LENS), n)
    lengths = _lengths(tokens, eos, limits)
    assert (lengths == n).any()
    rescored = _teacher_forced_scores(cfg, params, src, tokens, lengths, ALPHA)
    np.testing.assert_allclose(np.asarray(scores), rescored, atol=1e-4, rtol=0)


def test_early_stop(cfg, params, src, eos):
    """With EOS made likely, the while loop stops well before the length limit: greedy right after
    the last row's EOS; beam search once no live beam can beat the k-th finished one."""
    biased = jax.tree_util.tree_map(np.asarray, params)
    norm = biased["decoder"][f"layers_{N_DEC - 1}"]["ffn_norm"]
    direction = params["token_embed"]["embedding"][eos]
    norm["bias"] = norm["bias"] + 1.0 * direction / np.linalg.norm(direction) ** 2
    limit = int(_limits(src).min())

    tokens, steps = decoding.greedy_decode(cfg, biased, src, eos_id=eos, return_steps=True)
    lengths = _lengths(tokens, eos, _limits(src))
    print(f"\ngreedy lengths {lengths.tolist()}, steps {int(steps)}")
    assert int(steps) == lengths.max() < limit

    tokens, scores, steps = decoding.beam_search(cfg, biased, src, eos_id=eos, return_steps=True)
    lengths = _lengths(tokens, eos, _limits(src))
    print(f"beam lengths {lengths.tolist()}, steps {int(steps)}")
    assert int(steps) < limit
    assert (np.asarray(tokens)[np.arange(len(lengths)), lengths - 1] == eos).all()
    rescored = _teacher_forced_scores(cfg, biased, src, tokens, lengths, ALPHA)
    np.testing.assert_allclose(np.asarray(scores), rescored, atol=1e-4, rtol=0)
