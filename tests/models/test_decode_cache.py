"""Incremental decoding with the key/value cache against the teacher-forced full forward.

What is checked against what: for each config, `EncoderDecoder(cfg, decode=True)` is fed the
decoder inputs one token per step through `decode_logits` (cache and positions carried in the
'cache' collection); its logits at every step must equal the logits of one teacher-forced forward
`EncoderDecoder(cfg)(src, tgt_in)` at that position (max |diff| <= 1e-5), on every real
(non-padded) target position of a batch with mixed source and target padding.

Configs: post-LN unrolled, scan_layers=True (same params, stacked), remat_policy='full'
(unrolled and scanned) and pre-LN (norm_position='pre', which adds final LayerNorms).
The last test guards a fixed bug: with *default* target padding the decoder took padding from
`targets_in != 0` and so hid BOS (id 0), letting position 0 attend to future targets.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bert_vs_transformer import config_args
from bert_vs_transformer.models import convert, transformer

TOL = 1e-5
VOCAB = 41
N_ENC, N_DEC = 2, 2
SRC_LENS = [7, 3, 5]
TGT_LENS = [6, 2, 4]  # target length 6


def _config(**overrides):
    return config_args.model_config(
        "configs/transformer.py:tiny",
        vocab_size=VOCAB, num_encoder_layers=N_ENC, num_decoder_layers=N_DEC, dropout_rate=0.0,
        **overrides,
    )


def _batch():
    rng = np.random.default_rng(1)
    src = np.zeros((len(SRC_LENS), max(SRC_LENS)), np.int32)
    tgt = np.zeros((len(TGT_LENS), max(TGT_LENS)), np.int32)
    for row, (s, t) in enumerate(zip(SRC_LENS, TGT_LENS)):
        src[row, :s] = rng.integers(1, VOCAB, size=s)
        tgt[row, :t] = rng.integers(1, VOCAB, size=t)
    tgt_valid = tgt != 0
    # Decoder inputs: BOS (id 0, the pad id) then the targets. Their padding is the targets',
    # passed explicitly since BOS would otherwise read as a pad.
    tgt_in = np.asarray(transformer.shift_right(tgt))
    return src, src != 0, tgt_in, tgt_valid


@pytest.fixture(scope="module")
def batch():
    return _batch()


@pytest.fixture(scope="module")
def post_ln_params(batch):
    src, _, tgt_in, _ = batch
    return _init_params(_config(), src, tgt_in, seed=0)


def _init_params(cfg, src, tgt_in, seed):
    init = transformer.EncoderDecoder(cfg).init
    return nn.unbox(init(jax.random.PRNGKey(seed), src, tgt_in)["params"])


def _stack(params):
    out = dict(params)
    out["encoder"] = convert.stack_layers(params["encoder"], N_ENC)
    out["decoder"] = convert.stack_layers(params["decoder"], N_DEC)
    return out


def _full_logits(cfg, params, src, src_valid, tgt_in, tgt_valid):
    return jax.jit(transformer.EncoderDecoder(cfg).apply)(
        {"params": params}, src, tgt_in, inputs_padding=src_valid, targets_padding=tgt_valid
    )


def _incremental_logits(cfg, params, src, src_valid, tgt_in):
    model = transformer.EncoderDecoder(cfg)
    decoder = transformer.EncoderDecoder(cfg, decode=True)
    memory = model.apply({"params": params}, src, src_valid, method="encode")
    # The sizing call: a cache for the whole target length (its shapes are all that matter).
    cache = _init_cache(decoder, src, tgt_in)

    @jax.jit
    def step(cache, token):
        logits, mutated = decoder.apply(
            {"params": params, "cache": cache}, token, memory, src_valid,
            method="decode_logits", mutable=["cache"],
        )
        return logits[:, 0], mutated["cache"]

    init_cache, out = cache, []
    for t in range(tgt_in.shape[1]):
        logits, cache = step(cache, tgt_in[:, t : t + 1])
        out.append(logits)
    return dict(logits=np.asarray(jnp.stack(out, axis=1)), init_cache=init_cache, final_cache=cache)


def _init_cache(decoder, src, tgt_in):
    return decoder.init(jax.random.PRNGKey(0), src, tgt_in)["cache"]


def _check(name, cfg, params, batch, incremental=None):
    src, src_valid, tgt_in, tgt_valid = batch
    full = np.asarray(_full_logits(cfg, params, src, src_valid, tgt_in, tgt_valid))
    if incremental is None:
        incremental = _incremental_logits(cfg, params, src, src_valid, tgt_in)["logits"]
    assert full.shape == incremental.shape == (*tgt_in.shape, VOCAB)
    per_position = np.abs(full - incremental).max(-1)  # [b, t]
    diff = float(per_position[tgt_valid].max())
    print(f"\n{name}: max |incremental - full| logits over real positions = {diff:.3e}")
    assert np.isfinite(diff) and diff <= TOL, (
        f"{name}: incremental decoding differs from the full forward by {diff:.3e} (> {TOL}); "
        f"per-position max diffs (rows = examples):\n{np.where(tgt_valid, per_position, np.nan)}"
    )
    return full


@pytest.fixture(scope="module")
def post_ln_incremental(batch, post_ln_params):
    src, src_valid, tgt_in, _ = batch
    return _incremental_logits(_config(), post_ln_params, src, src_valid, tgt_in)


def test_post_ln_unrolled(batch, post_ln_params, post_ln_incremental):
    _check("post-LN unrolled", _config(), post_ln_params, batch, post_ln_incremental["logits"])


def test_post_ln_scan_layers(batch, post_ln_params):
    cfg = _config(scan_layers=True)
    full = _check("post-LN scan_layers", cfg, _stack(post_ln_params), batch)
    unrolled = _full_logits(_config(), post_ln_params, *batch)
    assert np.abs(full - np.asarray(unrolled))[batch[3]].max() <= TOL


@pytest.mark.parametrize("scan_layers", [False, True], ids=["unrolled", "scan"])
def test_remat_full(batch, post_ln_params, scan_layers):
    cfg = _config(remat_policy="full", scan_layers=scan_layers)
    params = _stack(post_ln_params) if scan_layers else post_ln_params
    _check(f"remat=full {'scan' if scan_layers else 'unrolled'}", cfg, params, batch)


def test_pre_ln(batch):
    cfg = _config(norm_position="pre")
    src, _, tgt_in, _ = batch
    params = _init_params(cfg, src, tgt_in, seed=1)
    assert "final_norm" in params["encoder"] and "final_norm" in params["decoder"]
    _check("pre-LN", cfg, params, batch)


def test_cache_positions_advance(batch, post_ln_incremental):
    """The sizing call leaves the counters at 0; decoding advances the decoder position and every
    self-attention cache index by one per token, to the full target length. Cross-attention keys
    and values are computed once, from memory, and kept."""
    t = batch[2].shape[1]
    init, final = post_ln_incremental["init_cache"]["decoder"], post_ln_incremental["final_cache"]["decoder"]
    for cache, expected in ((init, 0), (final, t)):
        assert int(cache["position"]) == expected
        for i in range(N_DEC):
            layer = cache[f"layers_{i}"]
            assert int(layer["self_attention"]["cache_index"]) == expected
            assert layer["self_attention"]["cached_key"].shape[1] == t
        # init's random parameters make no cross-attention keys; the first step keeps memory's.
        assert "cross_attention" not in init[f"layers_{i}"]
        cross = final[f"layers_{i}"]["cross_attention"]
        assert cross["cross_key"].shape[:2] == cross["cross_value"].shape[:2] == batch[0].shape


def test_default_target_padding_matches_decoding(batch, post_ln_params, post_ln_incremental):
    """Without targets_padding the full forward equals incremental decoding (BOS = 0 stays visible)."""
    src, _, tgt_in, tgt_valid = batch
    full = np.asarray(jax.jit(transformer.EncoderDecoder(_config()).apply)({"params": post_ln_params}, src, tgt_in))
    diff = float(np.abs(full - post_ln_incremental["logits"]).max(-1)[tgt_valid].max())
    assert diff <= TOL, f"default target padding: full forward vs incremental differ by {diff:.3e}"
