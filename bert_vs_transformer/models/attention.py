"""Attention masks and the scaled dot-product attention kernel behind one switch.

Vaswani et al. (2017) Sec. 3.2.1: Attention(Q, K, V) = softmax(QK^T / sqrt(d_k)) V.
Masks are boolean, True where a query may attend to a key, shaped [batch, 1, q_len, kv_len]
(broadcast over heads).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp


def padding_mask(query_valid: jax.Array, key_valid: jax.Array) -> jax.Array:
    """[b, q] x [b, k] validity -> [b, 1, q, k]: both the query and the key are real tokens."""
    return nn.make_attention_mask(query_valid, key_valid, jnp.logical_and, dtype=bool)


def key_padding_mask(key_valid: jax.Array) -> jax.Array:
    """[b, k] -> [b, 1, 1, k]: mask only keys (the cheap form when every query is real)."""
    # Not nn.make_attention_mask: it builds the full [b, 1, q, k] pairwise mask.
    return key_valid[:, None, None, :].astype(bool)


def segment_mask(query_segments: jax.Array, key_segments: jax.Array) -> jax.Array:
    """Packed sequences: a token attends only within its own example (same segment id)."""
    return nn.make_attention_mask(query_segments, key_segments, jnp.equal, dtype=bool)


def causal_mask(q_len: int, kv_len: int | None = None, offset: int | jax.Array = 0) -> jax.Array:
    """[1, 1, q, k] lower-triangular mask; query i sits at absolute position offset + i."""
    # Not nn.make_causal_mask: it is square, batch-shaped and has no offset (the decode cache needs both).
    kv_len = q_len if kv_len is None else kv_len
    q_pos = jnp.arange(q_len)[:, None] + offset
    k_pos = jnp.arange(kv_len)[None, :]
    return (k_pos <= q_pos)[None, None]


def combine_masks(*masks: jax.Array | None) -> jax.Array | None:
    """Logical AND of the given masks (None entries ignored)."""
    return nn.combine_masks(*masks, dtype=bool)


def dot_product_attention(
    query: jax.Array,
    key: jax.Array,
    value: jax.Array,
    mask: jax.Array | None,
    *,
    kernel: str = "xla",
    dropout_rate: float = 0.0,
    dropout_rng: jax.Array | None = None,
    deterministic: bool = True,
) -> jax.Array:
    """query [b, q, h, d], key/value [b, k, h, d] -> [b, q, h, d].

    kernel='xla': einsum, fp32 softmax, optional dropout on the probabilities (BERT).
    kernel='cudnn': `jax.nn.dot_product_attention(implementation='cudnn')`, the fused flash kernel
    on NVIDIA GPUs (bf16/fp16 only; no attention dropout).
    """
    if kernel == "xla":
        return _xla_attention(query, key, value, mask, dropout_rate, dropout_rng, deterministic)
    if kernel == "cudnn":
        if dropout_rate > 0.0 and not deterministic:
            raise ValueError(
                "attention_kernel='cudnn' does not support attention dropout; set "
                "model.attention_dropout_rate=0.0 or use attention_kernel='xla'"
            )
        return fused_attention(query, key, value, mask, implementation="cudnn")
    raise ValueError(f"unknown attention kernel {kernel!r}; expected 'xla' or 'cudnn'")


def fused_attention(query, key, value, mask, implementation: str | None):
    """jax.nn.dot_product_attention with our mask convention (shared by the cudnn switch)."""
    return jax.nn.dot_product_attention(
        query, key, value, mask=None if mask is None else mask.astype(bool),
        implementation=implementation,
    )


def _xla_attention(query, key, value, mask, dropout_rate, dropout_rng, deterministic):
    # Not nn.dot_product_attention (logits in the input dtype, not fp32; dropout broadcast over batch
    # and heads) nor jax.nn.dot_product_attention (no attention dropout): both change the outputs.
    depth = query.shape[-1]
    query = query / jnp.sqrt(depth).astype(query.dtype)
    logits = jnp.einsum("bqhd,bkhd->bhqk", query, key, preferred_element_type=jnp.float32)
    if mask is not None:
        # A large finite negative keeps fully-masked rows (padding queries) finite.
        logits = jnp.where(mask, logits, jnp.finfo(jnp.float32).min)
    probs = jax.nn.softmax(logits, axis=-1)
    if dropout_rate > 0.0 and not deterministic:
        keep = jax.random.bernoulli(dropout_rng, 1.0 - dropout_rate, probs.shape)
        probs = jnp.where(keep, probs / (1.0 - dropout_rate), 0.0)
    probs = probs.astype(value.dtype)
    return jnp.einsum("bhqk,bkhd->bqhd", probs, value)
