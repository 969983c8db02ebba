"""The shared blocks: attention, feed-forward, embeddings, encoder and decoder layers and stacks.

Written once; the Transformer (transformer.py) and BERT (bert.py) are both assembled from these.
Every parameter carries logical axis names (partitioning maps them onto a device mesh).
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax.ad_checkpoint import checkpoint_name

from bert_vs_transformer.models import attention as attn_lib
from bert_vs_transformer.models import partitioning
from bert_vs_transformer.models.model_config import ModelConfig

Initializer = Callable[..., jax.Array]

# Logical names of the main activations.
EMBED_ACT = ("batch", "length", "embed")
HEADS_ACT = ("batch", "length", "heads", "kv")
MLP_ACT = ("batch", "length", "mlp")


def kernel_init(config: ModelConfig, in_axis=-2, out_axis=-1) -> Initializer:
    """Glorot uniform (xavier) or BERT's truncated normal(0.02), over multi-axis kernels."""
    if config.initializer == "bert":
        return nn.initializers.truncated_normal(stddev=0.02)
    return nn.initializers.variance_scaling(1.0, "fan_avg", "uniform", in_axis=in_axis, out_axis=out_axis)


def embedding_init(config: ModelConfig) -> Initializer:
    """N(0, d^-1/2) token embeddings (so sqrt(d)-scaled inputs have unit variance) or BERT's."""
    if config.initializer == "bert":
        return nn.initializers.truncated_normal(stddev=0.02)
    return nn.initializers.normal(stddev=config.d_model**-0.5)


def sinusoidal_positions(positions: jax.Array, d_model: int) -> jax.Array:
    """Vaswani 3.5: PE(pos, 2i) = sin(pos / 10000^(2i/d)), PE(pos, 2i+1) = cos(...)."""
    i = jnp.arange(d_model // 2, dtype=jnp.float32)
    inv_freq = jnp.exp(-jnp.log(10000.0) * 2.0 * i / d_model)
    angles = positions.astype(jnp.float32)[..., None] * inv_freq
    pe = jnp.stack([jnp.sin(angles), jnp.cos(angles)], axis=-1).reshape(*positions.shape, -1)
    if d_model % 2:
        pe = jnp.pad(pe, [(0, 0)] * positions.ndim + [(0, 1)])
    return pe


def constrain(x: jax.Array, names: Sequence[str]) -> jax.Array:
    """Logical sharding constraint on an activation (a no-op without axis rules)."""
    return nn.with_logical_constraint(x, tuple(names))


def lookup(table: jax.Array, ids: jax.Array, row_axis: str) -> jax.Array:
    """Rows `ids` of an embedding table. Its 'embed' (fsdp) shards are all-gathered first, as FSDP
    does for every weight; left to itself, XLA's SPMD partitioner can only turn a gather from an
    embed-sharded table into batch-sharded rows by replicating both ("involuntary full
    rematerialization"). A row axis sharded over 'tensor' (the vocabulary) stays sharded."""
    return jnp.take(constrain(table, (row_axis, None)), ids, axis=0)


class DenseGeneral(nn.Module):
    """y = x . W + b contracting the last len(in_shape) axes of x; named kernel axes."""

    in_shape: tuple[int, ...]
    out_shape: tuple[int, ...]
    kernel_axes: tuple[str, ...]
    config: ModelConfig

    def setup(self):
        cfg = self.config
        n_in, n_out = len(self.in_shape), len(self.out_shape)
        init = kernel_init(cfg, in_axis=tuple(range(n_in)), out_axis=tuple(range(n_in, n_in + n_out)))
        self.kernel = self.param(
            "kernel",
            nn.with_logical_partitioning(init, self.kernel_axes),
            self.in_shape + self.out_shape,
            cfg.weight_dtype,
        )
        if cfg.use_bias:
            self.bias = self.param(
                "bias",
                nn.with_logical_partitioning(nn.initializers.zeros_init(), self.kernel_axes[n_in:]),
                self.out_shape,
                cfg.weight_dtype,
            )

    def weights(self) -> tuple[jax.Array, jax.Array | None]:
        """(kernel, bias or None) in the compute dtype."""
        dtype = self.config.compute_dtype
        return self.kernel.astype(dtype), (self.bias.astype(dtype) if self.config.use_bias else None)

    def __call__(self, x: jax.Array, preferred_element_type=None) -> jax.Array:
        kernel, bias = self.weights()
        return contract(x.astype(self.config.compute_dtype), kernel, bias, len(self.in_shape), preferred_element_type)


def contract(x, kernel, bias, n_in: int, preferred_element_type=None) -> jax.Array:
    """x's last n_in axes against kernel's first n_in, plus bias."""
    dims = ((tuple(range(x.ndim - n_in, x.ndim)), tuple(range(n_in))), ((), ()))
    y = jax.lax.dot_general(x, kernel, dims, preferred_element_type=preferred_element_type)
    return y if bias is None else y + bias.astype(y.dtype)


def fused_projection(modules: Sequence[DenseGeneral], x: jax.Array) -> list[jax.Array]:
    """The same input through several projections as one matmul over their stacked kernels.

    Under tensor parallelism x's gradient is then one partial sum and one all-reduce instead of
    one per projection (self-attention's Q, K, V: 3 -> 1). The parameters stay separate, so
    checkpoints and the Hugging Face conversion are unchanged.
    """
    if len(modules) == 1:
        return [modules[0](x)]
    weights = [m.weights() for m in modules]
    n_in = len(modules[0].in_shape)
    kernel = jnp.stack([k for k, _ in weights], axis=n_in)
    bias = None if weights[0][1] is None else jnp.stack([b for _, b in weights], axis=0)
    y = contract(x.astype(modules[0].config.compute_dtype), kernel, bias, n_in)
    axis = x.ndim - n_in
    return [jnp.squeeze(part, axis) for part in jnp.split(y, len(modules), axis=axis)]


def layer_norm(config: ModelConfig, name: str) -> nn.LayerNorm:
    return nn.LayerNorm(
        epsilon=config.layernorm_eps,
        dtype=config.compute_dtype,
        param_dtype=config.weight_dtype,
        scale_init=nn.with_logical_partitioning(nn.initializers.ones_init(), ("embed",)),
        bias_init=nn.with_logical_partitioning(nn.initializers.zeros_init(), ("embed",)),
        name=name,
    )


class MultiHeadAttention(nn.Module):
    """Multi-head attention (Vaswani 3.2.2): self, cross or causal, with an optional decode cache.

    With decode=True the module keeps `cached_key`, `cached_value` and `cache_index` in the
    'cache' collection: the first (initialising) call sizes the cache (decode_len positions, else
    its inputs' length); later calls append their keys/values and let each query see every cached
    position up to its own. The caller must not decode past that length (writes would clamp).
    With cache_kv=True (cross-attention while decoding) the first call after `init` keeps the
    keys/values of `inputs_kv` (the encoder output) as `cross_key` / `cross_value` in the cache,
    and later calls reuse them.
    """

    config: ModelConfig
    deterministic: bool = True
    decode: bool = False
    decode_len: int | None = None
    cache_kv: bool = False

    @nn.compact
    def __call__(self, inputs_q: jax.Array, inputs_kv: jax.Array | None,
                 mask: attn_lib.AttentionMask | None) -> jax.Array:
        cfg = self.config
        h, d = cfg.num_heads, cfg.qkv_dim
        query_p, key_p, value_p = (
            DenseGeneral((cfg.d_model,), (h, d), ("embed", "heads", "kv"), cfg, name=name)
            for name in ("query", "key", "value")
        )
        if self.cache_kv and self.has_variable("cache", "cross_key"):
            query = query_p(inputs_q)
            key, value = self.get_variable("cache", "cross_key"), self.get_variable("cache", "cross_value")
        elif inputs_kv is inputs_q:
            query, key, value = fused_projection((query_p, key_p, value_p), inputs_q)
        else:
            query = query_p(inputs_q)
            key, value = fused_projection((key_p, value_p), inputs_kv)
            if self.cache_kv and not self.is_initializing():  # not init's: its params are random
                self.put_variable("cache", "cross_key", key)
                self.put_variable("cache", "cross_value", value)
        query, key, value = (constrain(x, HEADS_ACT) for x in (query, key, value))

        if self.decode:
            key, value, mask = self._update_cache(key, value, mask)

        dropout_rng = None
        if cfg.attention_dropout_rate > 0.0 and not self.deterministic:
            dropout_rng = self.make_rng("dropout")
        out = attn_lib.dot_product_attention(
            query, key, value, mask,
            kernel=cfg.attention_kernel,
            dropout_rate=cfg.attention_dropout_rate,
            dropout_rng=dropout_rng,
            deterministic=self.deterministic,
        )
        out = checkpoint_name(constrain(out, HEADS_ACT), "attention_out")
        out = DenseGeneral((h, d), (cfg.d_model,), ("heads", "kv", "embed"), cfg, name="out")(out)
        return constrain(out, EMBED_ACT)

    def _update_cache(self, key, value, mask):
        is_initialized = self.has_variable("cache", "cached_key")
        shape = key.shape if self.decode_len is None else (key.shape[0], self.decode_len) + key.shape[2:]
        cached_key = self.variable("cache", "cached_key", jnp.zeros, shape, key.dtype)
        cached_value = self.variable("cache", "cached_value", jnp.zeros, shape, value.dtype)
        cache_index = self.variable("cache", "cache_index", lambda: jnp.array(0, dtype=jnp.int32))
        if not is_initialized:  # the sizing call: its outputs are discarded
            return key, value, mask
        step_len = key.shape[1]
        index = cache_index.value
        zero = jnp.array(0, dtype=index.dtype)
        start = (zero, index, zero, zero)
        cached_key.value = jax.lax.dynamic_update_slice(cached_key.value, key.astype(cached_key.value.dtype), start)
        cached_value.value = jax.lax.dynamic_update_slice(cached_value.value, value.astype(cached_value.value.dtype), start)
        cache_index.value = index + step_len
        # Query i of this chunk sits at absolute position index + i and sees keys 0..index + i.
        mask = attn_lib.AttentionMask() if mask is None else mask
        return cached_key.value, cached_value.value, mask.replace(causal=True, offset=index)


class FeedForward(nn.Module):
    """Position-wise FFN (Vaswani 3.3): act(x W1 + b1) W2 + b2; ReLU (Vaswani) or GELU (BERT)."""

    config: ModelConfig
    deterministic: bool = True

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        cfg = self.config
        h = DenseGeneral((cfg.d_model,), (cfg.d_ff,), ("embed", "mlp"), cfg, name="wi")(x)
        h = activation(cfg.activation)(h)
        h = constrain(h, MLP_ACT)
        return DenseGeneral((cfg.d_ff,), (cfg.d_model,), ("mlp", "embed"), cfg, name="wo")(h)


def activation(name: str) -> Callable[[jax.Array], jax.Array]:
    if name == "relu":
        return nn.relu
    if name == "gelu":  # exact erf form, as BERT's original code and HF's "gelu"
        return lambda x: nn.gelu(x, approximate=False)
    if name == "gelu_tanh":
        return lambda x: nn.gelu(x, approximate=True)
    raise ValueError(f"unknown activation {name!r}")


class TokenEmbed(nn.Module):
    """Token embedding table; `attend` is the tied pre-softmax projection (Vaswani 3.4).

    Cast to the compute dtype and all-gathered (fsdp) once per forward pass; under a data-parallel
    mesh every use reads it as one copy per batch shard, so the gradients of all uses add up on each
    device and are reduced once: one gather and one reduction a step, however often it is used.
    """

    config: ModelConfig
    num_embeddings: int | None = None

    def setup(self):
        cfg = self.config
        self.embedding = self.param(
            "embedding",
            nn.with_logical_partitioning(embedding_init(cfg), ("vocab", "embed")),
            (self.num_embeddings or cfg.vocab_size, cfg.d_model),
            cfg.weight_dtype,
        )
        self.table = constrain(self.embedding.astype(cfg.compute_dtype), ("vocab", None))
        shards = partitioning.batch_shard_count()  # [shards, vocab, d], split like the batch
        self.tables = None if shards == 1 else constrain(
            jnp.broadcast_to(self.table, (shards, *self.table.shape)), ("batch", "vocab", None))

    def _per_shard(self, rows: int) -> jax.Array | None:
        return None if self.tables is None or rows % self.tables.shape[0] else self.tables  # else `table`

    def __call__(self, ids: jax.Array) -> jax.Array:
        tables = self._per_shard(ids.shape[0])
        if tables is None:
            return jnp.take(self.table, ids, axis=0)
        rows = ids.reshape(tables.shape[0], -1, *ids.shape[1:])
        return jax.vmap(lambda t, i: jnp.take(t, i, axis=0))(tables, rows).reshape(*ids.shape, -1)

    def attend(self, x: jax.Array) -> jax.Array:
        """x [batch, ..., d] -> logits [batch, ..., vocab], accumulated and returned in fp32."""
        x = x.astype(self.config.compute_dtype)
        tables = self._per_shard(x.shape[0])
        if tables is None:
            return jnp.einsum("...d,vd->...v", x, self.table, preferred_element_type=jnp.float32)
        rows = x.reshape(tables.shape[0], -1, *x.shape[1:])
        logits = jnp.einsum("n...d,nvd->n...v", rows, tables, preferred_element_type=jnp.float32)
        return logits.reshape(*x.shape[:-1], -1)


class InputEmbedding(nn.Module):
    """Token (optionally x sqrt(d)) + positional (+ segment) embeddings, [LayerNorm], dropout.

    Vaswani 3.4-3.5 (scaled tokens + sinusoids) and BERT 3 / Fig. 2 (tokens + learned positions +
    segments, then LayerNorm) are the same module with different config fields.
    """

    config: ModelConfig
    token_embed: TokenEmbed
    deterministic: bool = True

    @nn.compact
    def __call__(self, ids, positions=None, token_types=None):
        cfg = self.config
        x = self.token_embed(ids)
        if cfg.embed_scale:
            x = x * jnp.sqrt(cfg.d_model).astype(x.dtype)
        if positions is None:
            positions = jnp.broadcast_to(jnp.arange(ids.shape[-1]), ids.shape)
        if cfg.positional == "sinusoidal":
            x = x + sinusoidal_positions(positions, cfg.d_model).astype(x.dtype)
        else:
            table = self.param(
                "position_embedding",
                nn.with_logical_partitioning(nn.initializers.truncated_normal(0.02), ("position", "embed")),
                (cfg.max_len, cfg.d_model),
                cfg.weight_dtype,
            )
            x = x + lookup(table, positions, "position").astype(x.dtype)
        if cfg.type_vocab_size > 0:
            table = self.param(
                "token_type_embedding",
                nn.with_logical_partitioning(nn.initializers.truncated_normal(0.02), ("token_type", "embed")),
                (cfg.type_vocab_size, cfg.d_model),
                cfg.weight_dtype,
            )
            if token_types is None:
                token_types = jnp.zeros_like(ids)
            x = x + lookup(table, token_types, "token_type").astype(x.dtype)
        if cfg.embed_layernorm:
            x = layer_norm(cfg, "layernorm")(x)
        x = nn.Dropout(cfg.dropout_rate)(x, deterministic=self.deterministic)
        return constrain(x, EMBED_ACT)


def residual(config: ModelConfig, deterministic: bool, norm: nn.LayerNorm, x, sublayer):
    """One sublayer with its residual. Post-LN, LayerNorm(x + Dropout(f(x))) (Vaswani 5.4, BERT);
    pre-LN, x + Dropout(f(LayerNorm(x))), for ablations."""
    h = norm(x) if config.norm_position == "pre" else x
    h = nn.Dropout(config.dropout_rate)(sublayer(h), deterministic=deterministic)
    x = x + h
    return norm(x) if config.norm_position == "post" else x


class EncoderLayer(nn.Module):
    """Self-attention then FFN, each wrapped in a residual + LayerNorm (Vaswani 3.1, BERT 3)."""

    config: ModelConfig
    deterministic: bool = True

    @nn.compact
    def __call__(self, x: jax.Array, mask: attn_lib.AttentionMask | None) -> jax.Array:
        cfg, det = self.config, self.deterministic
        attn = MultiHeadAttention(cfg, det, name="attention")
        x = residual(cfg, det, layer_norm(cfg, "attention_norm"), x, lambda h: attn(h, h, mask))
        x = residual(cfg, det, layer_norm(cfg, "ffn_norm"), x, FeedForward(cfg, det, name="ffn"))
        return constrain(x, EMBED_ACT)


class DecoderLayer(nn.Module):
    """Masked self-attention, encoder-decoder attention, FFN (Vaswani 3.1)."""

    config: ModelConfig
    deterministic: bool = True
    decode: bool = False
    decode_len: int | None = None

    @nn.compact
    def __call__(self, x, memory, self_mask, cross_mask):
        cfg, det = self.config, self.deterministic
        self_attn = MultiHeadAttention(cfg, det, self.decode, self.decode_len, name="self_attention")
        cross_attn = MultiHeadAttention(cfg, det, cache_kv=self.decode, name="cross_attention")
        x = residual(cfg, det, layer_norm(cfg, "self_attention_norm"), x, lambda h: self_attn(h, h, self_mask))
        x = residual(cfg, det, layer_norm(cfg, "cross_attention_norm"), x, lambda h: cross_attn(h, memory, cross_mask))
        x = residual(cfg, det, layer_norm(cfg, "ffn_norm"), x, FeedForward(cfg, det, name="ffn"))
        return constrain(x, EMBED_ACT)


_REMAT_POLICIES = {
    "full": jax.checkpoint_policies.nothing_saveable,
    "dots": jax.checkpoint_policies.checkpoint_dots,
    "dots_no_batch": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
    "save_attention_out": jax.checkpoint_policies.save_only_these_names("attention_out"),
}


def apply_layers(parent: nn.Module, layer_cls, num_layers: int, x, *args, **layer_kwargs) -> jax.Array:
    """Runs `num_layers` copies of layer_cls(config, **layer_kwargs)(x, *args).

    Unrolled layers are named layers_0..layers_{n-1}; with config.scan_layers they run under
    nn.scan as one module 'layers' whose params have a leading axis (logical name 'layers').
    config.remat_policy wraps each layer in nn.remat with that checkpoint policy.
    """
    cfg: ModelConfig = parent.config
    if cfg.remat_policy != "none":
        layer_cls = nn.remat(layer_cls, policy=_REMAT_POLICIES[cfg.remat_policy], prevent_cse=not cfg.scan_layers)
    if not cfg.scan_layers:
        for i in range(num_layers):
            x = layer_cls(cfg, **layer_kwargs, name=f"layers_{i}")(x, *args)
        return x

    def body(layer, carry, *bcast):
        return layer(carry, *bcast), None

    scanned = nn.scan(
        body,
        variable_axes={"params": 0, "cache": 0},
        split_rngs={"params": True, "dropout": True},
        in_axes=(nn.broadcast,) * len(args),
        length=num_layers,
        metadata_params={nn.PARTITION_NAME: "layers"},
    )
    x, _ = scanned(layer_cls(cfg, **layer_kwargs, name="layers"), x, *args)
    return x


def default_padding(ids: jax.Array, padding_mask, segmentation, pad_id: int = 0) -> jax.Array:
    """Which tokens are real: the given mask, else segmentation > 0, else ids != pad_id."""
    if padding_mask is not None:
        return padding_mask.astype(bool)
    if segmentation is not None:
        return segmentation > 0
    return ids != pad_id


class Encoder(nn.Module):
    """Input embedding + N encoder layers (+ final LayerNorm under pre-LN): Vaswani's encoder and
    BERT's whole body."""

    config: ModelConfig
    token_embed: TokenEmbed
    deterministic: bool = True

    @nn.compact
    def __call__(self, ids, padding_mask=None, token_types=None, positions=None, segmentation=None):
        cfg = self.config
        valid = default_padding(ids, padding_mask, segmentation)
        x = InputEmbedding(cfg, self.token_embed, self.deterministic, name="embeddings")(ids, positions, token_types)
        # Key padding suffices: padded queries' outputs are never read (and stay finite).
        # model.causal: a left-to-right encoder (BERT Table 5, "LTR & No NSP").
        mask = attn_lib.AttentionMask(key_valid=valid, causal=cfg.causal,
                                      query_segments=segmentation, key_segments=segmentation)
        x = apply_layers(self, EncoderLayer, cfg.num_encoder_layers, x, mask, deterministic=self.deterministic)
        if cfg.norm_position == "pre":
            x = layer_norm(cfg, "final_norm")(x)
        return x


class Decoder(nn.Module):
    """Target embedding + N decoder layers with causal self-attention and cross-attention.

    decode=True: one step at a time over the layers' caches (decode_len positions); `memory` may
    then be None once the cross-attention caches hold the encoder output's keys and values.
    """

    config: ModelConfig
    token_embed: TokenEmbed
    deterministic: bool = True
    decode: bool = False
    decode_len: int | None = None

    @nn.compact
    def __call__(
        self, ids, memory, memory_valid, padding_mask=None, positions=None,
        segmentation=None, memory_segmentation=None,
    ):
        cfg = self.config
        if self.decode and positions is None:
            positions = self._decode_positions(ids)
        x = InputEmbedding(cfg, self.token_embed, self.deterministic, name="embeddings")(ids, positions)
        cross_mask = attn_lib.AttentionMask(key_valid=memory_valid, query_segments=segmentation,
                                            key_segments=memory_segmentation)
        if self.decode:
            # Causality comes from the cache; positions must be given by the caller.
            self_mask = None
        elif padding_mask is None and segmentation is None:
            # No explicit padding: the causal mask alone. Decoder inputs start with BOS = 0 (the
            # pad id), so `ids != 0` would hide BOS; with right padding a real query never sees a
            # padded key anyway.
            self_mask = attn_lib.AttentionMask(causal=True)
        else:
            valid = default_padding(ids, padding_mask, segmentation)
            self_mask = attn_lib.AttentionMask(key_valid=valid, causal=True, query_segments=segmentation,
                                               key_segments=segmentation)
        x = apply_layers(
            self, DecoderLayer, cfg.num_decoder_layers, x, memory, self_mask, cross_mask,
            deterministic=self.deterministic, decode=self.decode, decode_len=self.decode_len,
        )
        if cfg.norm_position == "pre":
            x = layer_norm(cfg, "final_norm")(x)
        return x

    def _decode_positions(self, ids):
        """Absolute positions of the tokens fed in this decode step, tracked in the cache."""
        is_initialized = self.has_variable("cache", "position")
        position = self.variable("cache", "position", lambda: jnp.array(0, dtype=jnp.int32))
        positions = jnp.broadcast_to(jnp.arange(ids.shape[1], dtype=jnp.int32), ids.shape)
        if is_initialized:
            positions = positions + position.value
            position.value = position.value + ids.shape[1]
        return positions


def count_params(tree: Any) -> int:
    return int(sum(np.prod(x.shape) for x in jax.tree_util.tree_leaves(tree)))
