"""The attention kernel and masks against independent references: jax.nn.dot_product_attention's
own XLA implementation (the function behind the cudnn switch) and a numpy softmax by hand."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bert_vs_transformer.models import attention, layers


def _qkv(b=2, q=5, k=7, h=3, d=8, seed=0):
    r = np.random.default_rng(seed)
    return [jnp.asarray(r.standard_normal(s), jnp.float32) for s in ((b, q, h, d), (b, k, h, d), (b, k, h, d))]


def test_xla_kernel_matches_numpy_formula():
    q, k, v = _qkv()
    valid = jnp.array([[1, 1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1, 1]], bool)
    out = attention.dot_product_attention(q, k, v, attention.AttentionMask(key_valid=valid))
    qn, kn, vn = map(np.asarray, (q, k, v))
    s = np.einsum("bqhd,bkhd->bhqk", qn, kn) / np.sqrt(qn.shape[-1])
    s = np.where(np.asarray(valid)[:, None, None, :], s, -np.inf)
    p = np.exp(s - s.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    ref = np.einsum("bhqk,bkhd->bqhd", p, vn)
    np.testing.assert_allclose(np.asarray(out), ref, atol=1e-5)


def test_xla_kernel_matches_jax_fused_path_with_all_masks():
    q, k, v = _qkv(q=6, k=6)
    valid = jnp.array([[1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1]], bool)
    seg = jnp.array([[1, 1, 2, 2, 0, 0], [1, 1, 1, 2, 2, 2]])
    mask = attention.AttentionMask(key_valid=valid, query_segments=seg, key_segments=seg, causal=True)
    ours = attention.dot_product_attention(q, k, v, mask, kernel="xla")
    dense = attention.combine_masks(
        attention.padding_mask(valid, valid), attention.segment_mask(seg, seg), attention.causal_mask(6)
    )
    ref = jax.nn.dot_product_attention(q, k, v, mask=dense, implementation="xla")
    real = np.asarray(valid)
    np.testing.assert_allclose(np.asarray(ours)[real], np.asarray(ref)[real], atol=1e-5)


def test_fully_masked_rows_stay_finite():
    q, k, v = _qkv()
    mask = attention.AttentionMask(key_valid=jnp.zeros((2, 7), bool))
    assert np.isfinite(np.asarray(attention.dot_product_attention(q, k, v, mask))).all()


def test_causal_mask_offset():
    m = np.asarray(attention.causal_mask(2, 5, offset=2))[0, 0]
    np.testing.assert_array_equal(m, [[1, 1, 1, 0, 0], [1, 1, 1, 1, 0]])


def test_cudnn_kernel_refuses_attention_dropout_in_training():
    q, k, v = _qkv()
    with pytest.raises(ValueError, match="attention dropout"):
        attention.dot_product_attention(
            q, k, v, None, kernel="cudnn", dropout_rate=0.1, dropout_rng=jax.random.PRNGKey(0), deterministic=False
        )


def test_unknown_kernel_is_an_error():
    q, k, v = _qkv()
    with pytest.raises(ValueError, match="unknown attention kernel"):
        attention.dot_product_attention(q, k, v, None, kernel="flash")


def test_attention_dropout_drops_and_rescales():
    q, k, v = _qkv()
    rng = jax.random.PRNGKey(0)
    a = attention.dot_product_attention(q, k, v, None, dropout_rate=0.5, dropout_rng=rng, deterministic=False)
    b = attention.dot_product_attention(q, k, v, None, dropout_rate=0.5, dropout_rng=rng, deterministic=False)
    c = attention.dot_product_attention(q, k, v, None)
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert not np.allclose(np.asarray(a), np.asarray(c))


def test_sinusoidal_positions_match_paper_formula():
    d = 16
    pos = np.array([0, 1, 7, 100])
    pe = np.asarray(layers.sinusoidal_positions(jnp.asarray(pos), d))
    ref = np.zeros((len(pos), d))
    for r, p in enumerate(pos):
        for i in range(d // 2):
            ref[r, 2 * i] = np.sin(p / 10000 ** (2 * i / d))
            ref[r, 2 * i + 1] = np.cos(p / 10000 ** (2 * i / d))
    np.testing.assert_allclose(pe, ref, atol=1e-5)
