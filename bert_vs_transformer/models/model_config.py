"""One architecture config for both models: every Transformer/BERT difference is a field here."""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import jax.numpy as jnp

ACTIVATIONS = ("relu", "gelu", "gelu_tanh")
POSITIONALS = ("sinusoidal", "learned")
NORM_POSITIONS = ("post", "pre")
INITIALIZERS = ("xavier", "bert")
ATTENTION_KERNELS = ("xla", "cudnn")
POOLINGS = ("first", "last", "mean")
REMAT_POLICIES = ("none", "full", "dots", "dots_no_batch", "save_attention_out")
DTYPES = ("float32", "bfloat16", "float16")


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Architecture hyperparameters, passed whole to every module (as in flax/examples/wmt)."""

    vocab_size: int = 37000
    d_model: int = 512  # hidden size H
    num_heads: int = 8  # h (Vaswani) / A (BERT)
    head_dim: int | None = None  # d_k = d_v; None means d_model // num_heads
    d_ff: int = 2048  # inner FFN width
    num_encoder_layers: int = 6  # N (Vaswani) / L (BERT)
    num_decoder_layers: int = 6  # 0: encoder-only (BERT)
    activation: str = "relu"  # FFN nonlinearity: relu (Vaswani 3.3) / gelu (BERT 3)
    positional: str = "sinusoidal"  # sinusoidal (Vaswani 3.5) / learned (BERT)
    max_len: int = 512  # positions available (table size for learned positions)
    type_vocab_size: int = 0  # segment (token type) embeddings; 0 disables (Vaswani)
    embed_scale: bool = True  # multiply token embeddings by sqrt(d_model) (Vaswani 3.4)
    embed_layernorm: bool = False  # LayerNorm after summing embeddings (BERT)
    layernorm_eps: float = 1e-6
    dropout_rate: float = 0.1  # sublayer outputs and embedding sums (Vaswani 5.4)
    attention_dropout_rate: float = 0.0  # on attention probabilities (BERT: 0.1)
    norm_position: str = "post"  # post-LN as both papers; pre-LN for ablations
    use_bias: bool = True  # biases on attention/FFN projections
    share_embeddings: bool = True  # one matrix for source, target and pre-softmax (Vaswani 3.4)
    initializer: str = "xavier"  # xavier: Glorot kernels, N(0, d^-1/2) embeddings; bert: N(0, 0.02)
    pooler: bool = False  # tanh pooler on the first token (BERT)
    pooling: str = "first"  # pooler input: first token ([CLS]), last real token (causal LTR), or mean of real tokens
    causal: bool = False  # causal encoder self-attention: BERT Table 5's left-to-right LM
    dtype: str = "float32"  # compute dtype
    param_dtype: str = "float32"  # master weights
    attention_kernel: str = "xla"  # xla: einsum softmax; cudnn: flash attention (bf16/fp16, no attention dropout)
    remat_policy: str = "none"  # nn.remat checkpoint policy per layer
    scan_layers: bool = False  # nn.scan over layers (stacked params with a leading 'layers' axis)

    def __post_init__(self):
        _check_choice("activation", self.activation, ACTIVATIONS)
        _check_choice("positional", self.positional, POSITIONALS)
        _check_choice("norm_position", self.norm_position, NORM_POSITIONS)
        _check_choice("initializer", self.initializer, INITIALIZERS)
        _check_choice("attention_kernel", self.attention_kernel, ATTENTION_KERNELS)
        _check_choice("remat_policy", self.remat_policy, REMAT_POLICIES)
        _check_choice("pooling", self.pooling, POOLINGS)
        _check_choice("dtype", self.dtype, DTYPES)
        _check_choice("param_dtype", self.param_dtype, DTYPES)
        for name in ("vocab_size", "d_model", "num_heads", "d_ff", "max_len"):
            if getattr(self, name) <= 0:
                raise ValueError(f"ModelConfig.{name} must be positive, got {getattr(self, name)}")
        if self.head_dim is None and self.d_model % self.num_heads:
            raise ValueError(
                f"ModelConfig.d_model={self.d_model} is not divisible by num_heads={self.num_heads}; "
                "set head_dim explicitly"
            )
        if self.attention_kernel == "cudnn":
            _check_cudnn(self)

    @property
    def qkv_dim(self) -> int:
        return self.head_dim if self.head_dim is not None else self.d_model // self.num_heads

    @property
    def compute_dtype(self):
        return jnp.dtype(self.dtype)

    @property
    def weight_dtype(self):
        return jnp.dtype(self.param_dtype)

    def replace(self, **kwargs) -> "ModelConfig":
        return dataclasses.replace(self, **kwargs)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "ModelConfig":
        """Builds from a mapping (e.g. an ml_collections ConfigDict), rejecting unknown keys."""
        d = dict(d)
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown ModelConfig field(s) {unknown}; known: {sorted(known)}")
        return cls(**d)

    @classmethod
    def from_config(cls, config) -> "ModelConfig":
        """The model of a run config (its `model` field)."""
        return cls.from_dict(dict(config.model))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# Fields a resumed run may change: numerics and regularisation, not the parameters' shapes or meaning.
RESUMABLE_FIELDS = frozenset({"dtype", "remat_policy", "attention_kernel", "dropout_rate", "attention_dropout_rate"})


def resume_mismatch(saved: Mapping[str, Any], current: Mapping[str, Any]) -> list[str]:
    """The model fields (outside RESUMABLE_FIELDS) on which a checkpoint's model and this run's differ."""
    fields = sorted((set(saved) | set(current)) - RESUMABLE_FIELDS)
    return [f"model.{k}: checkpoint {saved.get(k)!r} vs config {current.get(k)!r}"
            for k in fields if saved.get(k) != current.get(k)]


def _check_cudnn(cfg: ModelConfig) -> None:
    """What cuDNN's flash attention (through jax.nn.dot_product_attention) cannot do, refused here
    rather than inside JAX at compile time."""
    if cfg.dtype not in ("bfloat16", "float16"):
        raise ValueError(f"ModelConfig.attention_kernel='cudnn' needs dtype bfloat16 or float16 (cuDNN flash "
                         f"attention has no {cfg.dtype} kernel); set model.dtype=bfloat16 or attention_kernel='xla'")
    if cfg.qkv_dim % 8 or cfg.qkv_dim > 256:
        raise ValueError(f"ModelConfig.attention_kernel='cudnn' needs a head dim that is a multiple of 8 and at "
                         f"most 256 (128 before Hopper), got {cfg.qkv_dim}; use attention_kernel='xla'")
    if cfg.attention_dropout_rate > 0:
        raise ValueError(f"ModelConfig.attention_kernel='cudnn' has no attention dropout, got "
                         f"attention_dropout_rate={cfg.attention_dropout_rate}; set model.attention_dropout_rate=0.0 "
                         "or attention_kernel='xla'")


def _check_choice(name, value, choices):
    if value not in choices:
        raise ValueError(f"ModelConfig.{name}={value!r} is not one of {choices}")
