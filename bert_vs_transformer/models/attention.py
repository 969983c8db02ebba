"""Attention masks and the scaled dot-product attention kernel behind one switch.

Vaswani et al. (2017) Sec. 3.2.1: Attention(Q, K, V) = softmax(QK^T / sqrt(d_k)) V.
A mask is an `AttentionMask`: right padding as key validity, causality as a flag, packing as
segment ids. The xla kernel expands it to a boolean [batch, 1, q_len, kv_len] array (broadcast
over heads); the cudnn kernel passes it to cuDNN as per-row key lengths and `is_causal`.
"""

from __future__ import annotations

from typing import Any

import flax
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


@flax.struct.dataclass
class AttentionMask:
    """Which keys each query may see (Vaswani 3.2.3), in terms both kernels understand.

    key_valid [b, k]: the real keys. Rows are right-padded (real tokens first), as every pipeline
    here makes them, so the cudnn kernel can take them as per-row lengths.
    causal: query i sees keys at positions <= offset + i (offset: the decode cache's index).
    query_segments [b, q] / key_segments [b, k]: packed rows; a query sees only its own segment.
    """

    key_valid: jax.Array | None = None
    query_segments: jax.Array | None = None
    key_segments: jax.Array | None = None
    offset: jax.Array | None = None
    causal: bool = flax.struct.field(pytree_node=False, default=False)

    def dense(self, q_len: int, kv_len: int) -> jax.Array | None:
        """The boolean [b or 1, 1, q_len, kv_len] mask (None when nothing is masked)."""
        masks = []
        if self.key_valid is not None:
            masks.append(key_padding_mask(self.key_valid))
        if self.query_segments is not None:
            masks.append(segment_mask(self.query_segments, self.key_segments))
        if self.causal:
            masks.append(causal_mask(q_len, kv_len, 0 if self.offset is None else self.offset))
        return combine_masks(*masks)


def dot_product_attention(
    query: jax.Array,
    key: jax.Array,
    value: jax.Array,
    mask: AttentionMask | None,
    *,
    kernel: str = "xla",
    dropout_rate: float = 0.0,
    dropout_rng: jax.Array | None = None,
    deterministic: bool = True,
) -> jax.Array:
    """query [b, q, h, d], key/value [b, k, h, d] -> [b, q, h, d].

    kernel='xla': einsum, fp32 softmax, optional dropout on the probabilities (BERT).
    kernel='cudnn': `jax.nn.dot_product_attention(implementation='cudnn')`, the fused flash kernel
    on NVIDIA GPUs: bf16/fp16, head_dim a multiple of 8, no attention dropout, no packed segments
    (ModelConfig and the tasks refuse the rest before anything compiles).
    """
    if kernel == "xla":
        dense = None if mask is None else mask.dense(query.shape[1], key.shape[1])
        return _xla_attention(query, key, value, dense, dropout_rate, dropout_rng, deterministic)
    if kernel == "cudnn":
        if dropout_rate > 0.0 and not deterministic:
            raise ValueError(
                "attention_kernel='cudnn' does not support attention dropout; set "
                "model.attention_dropout_rate=0.0 or use attention_kernel='xla'"
            )
        args = cudnn_arguments(mask, query.shape[0], query.shape[1])
        return jax.nn.dot_product_attention(query, key, value, implementation="cudnn", **args)
    raise ValueError(f"unknown attention kernel {kernel!r}; expected 'xla' or 'cudnn'")


def cudnn_arguments(mask: AttentionMask | None, batch: int, q_len: int) -> dict[str, Any]:
    """The mask as cuDNN's flash kernel takes it: `is_causal` (masked blocks are skipped, no dense
    bias) and `key_value_seq_lengths` (right padding)."""
    if mask is None:
        return {}
    if mask.query_segments is not None or mask.key_segments is not None:
        raise ValueError("attention_kernel='cudnn' cannot mask packed segments; set data.pack=False "
                         "or model.attention_kernel='xla'")
    args: dict[str, Any] = {}
    lengths = None if mask.key_valid is None else jnp.sum(mask.key_valid, axis=-1, dtype=jnp.int32)
    if mask.causal and mask.offset is not None:
        # A cached decode step: its one query, at position offset, sees the cache's keys 0..offset.
        if q_len != 1:
            raise ValueError(f"attention_kernel='cudnn' decodes one token per step, got {q_len}")
        seen = jnp.broadcast_to(jnp.asarray(mask.offset, jnp.int32) + 1, (batch,))
        lengths = seen if lengths is None else jnp.minimum(lengths, seen)
    elif mask.causal:
        args["is_causal"] = True
    if lengths is not None:
        # A row with no real key (a padding row of the batch) would be an empty softmax; it attends
        # to key 0 instead. Its outputs are never read (the xla kernel averages all keys there).
        args["key_value_seq_lengths"] = jnp.maximum(lengths, 1)
    return args


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
