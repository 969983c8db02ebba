"""BERT (Devlin et al. 2018): the Transformer's encoder stack (layers.Encoder) plus pooler and heads.

The body is the same `layers.Encoder` the Transformer uses; what makes it BERT is config (GELU,
learned positions, segment embeddings, embedding LayerNorm, no decoder) and the heads below.
"""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp

from bert_vs_transformer.models import layers
from bert_vs_transformer.models.model_config import ModelConfig


class BertEncoder(nn.Module):
    """Embeddings + encoder layers + pooler (tanh dense on [CLS]; `pooling` picks another summary)."""

    config: ModelConfig
    deterministic: bool = True

    def setup(self):
        cfg = self.config
        self.token_embed = layers.TokenEmbed(cfg, name="token_embed")
        self.encoder = layers.Encoder(cfg, self.token_embed, self.deterministic, name="encoder")
        if cfg.pooler:
            self.pooler = layers.DenseGeneral((cfg.d_model,), (cfg.d_model,), ("embed", "mlp"), cfg, name="pooler")

    def __call__(self, input_ids, token_type_ids=None, attention_mask=None, positions=None, segmentation=None):
        """-> (hidden [b, L, d], pooled [b, d] or None)."""
        hidden = self.encoder(
            input_ids, padding_mask=attention_mask, token_types=token_type_ids,
            positions=positions, segmentation=segmentation,
        )
        if not self.config.pooler:
            return hidden, None
        pooling = self.config.pooling
        if pooling in ("last", "mean"):
            valid = layers.default_padding(input_ids, attention_mask, segmentation)
        if pooling == "last":  # under causal attention only the last token sees all
            last = jnp.maximum(jnp.sum(valid, axis=1) - 1, 0)
            summary = jnp.take_along_axis(hidden, last[:, None, None], axis=1)[:, 0]
        elif pooling == "mean":  # Sentence-BERT's mean over real tokens (Reimers & Gurevych 2019, 3)
            w = valid.astype(hidden.dtype)[..., None]
            summary = jnp.sum(hidden * w, axis=1) / jnp.maximum(jnp.sum(w, axis=1), 1)
        else:
            summary = hidden[:, 0]
        return hidden, jnp.tanh(self.pooler(summary))


class MaskedLMHead(nn.Module):
    """BERT's MLM head: dense + activation + LayerNorm, then the tied decoder plus an output bias.

    With `masked_positions` [b, P] only those positions are projected onto the vocabulary.
    """

    config: ModelConfig

    @nn.compact
    def __call__(self, hidden, token_embed: layers.TokenEmbed, masked_positions=None):
        cfg = self.config
        if masked_positions is not None:
            hidden = jnp.take_along_axis(hidden, masked_positions[..., None].astype(jnp.int32), axis=1)
        h = layers.DenseGeneral((cfg.d_model,), (cfg.d_model,), ("embed", "mlp"), cfg, name="transform")(hidden)
        h = layers.activation(cfg.activation)(h)
        h = layers.layer_norm(cfg, "transform_norm")(h)
        bias = self.param(
            "output_bias", nn.with_logical_partitioning(nn.initializers.zeros_init(), ("vocab",)),
            (cfg.vocab_size,), cfg.weight_dtype,
        )
        logits = token_embed.attend(h) + bias.astype(jnp.float32)  # fp32, as attend accumulates
        return layers.constrain(logits, ("batch", "length", "vocab"))


def _classifier(cfg: ModelConfig, num_outputs: int, name: str) -> layers.DenseGeneral:
    return layers.DenseGeneral((cfg.d_model,), (num_outputs,), ("embed", "classes"), cfg, name=name)


class BertForPreTraining(nn.Module):
    """MLM + next-sentence prediction (BERT 3.1): -> (mlm_logits, nsp_logits)."""

    config: ModelConfig
    deterministic: bool = True

    def setup(self):
        self.bert = BertEncoder(self.config, self.deterministic, name="bert")
        self.mlm = MaskedLMHead(self.config, name="mlm")
        self.nsp = _classifier(self.config, 2, "nsp")

    def __call__(self, input_ids, token_type_ids=None, attention_mask=None, masked_positions=None, **kw):
        hidden, pooled = self.bert(input_ids, token_type_ids, attention_mask, **kw)
        mlm_logits = self.mlm(hidden, self.bert.token_embed, masked_positions)
        return mlm_logits, self.nsp(pooled).astype(jnp.float32)


class BertForSequenceClassification(nn.Module):
    """Dropout + linear on the pooled [CLS] vector; num_labels=1 is regression (STS-B)."""

    config: ModelConfig
    num_labels: int = 2
    deterministic: bool = True

    @nn.compact
    def __call__(self, input_ids, token_type_ids=None, attention_mask=None, **kw):
        _, pooled = BertEncoder(self.config, self.deterministic, name="bert")(
            input_ids, token_type_ids, attention_mask, **kw
        )
        pooled = nn.Dropout(self.config.dropout_rate)(pooled, deterministic=self.deterministic)
        return _classifier(self.config, self.num_labels, "classifier")(pooled).astype(jnp.float32)


class BertForSpanPrediction(nn.Module):
    """SQuAD-style extractive QA (BERT 4.2): per-token start and end logits."""

    config: ModelConfig
    deterministic: bool = True

    @nn.compact
    def __call__(self, input_ids, token_type_ids=None, attention_mask=None, **kw):
        hidden, _ = BertEncoder(self.config, self.deterministic, name="bert")(
            input_ids, token_type_ids, attention_mask, **kw
        )
        logits = _classifier(self.config, 2, "span")(hidden).astype(jnp.float32)
        return logits[..., 0], logits[..., 1]


class BertForTokenClassification(nn.Module):
    """Per-token labels (BERT 4.3, NER): dropout + linear on every hidden state."""

    config: ModelConfig
    num_labels: int = 2
    deterministic: bool = True

    @nn.compact
    def __call__(self, input_ids, token_type_ids=None, attention_mask=None, **kw):
        hidden, _ = BertEncoder(self.config, self.deterministic, name="bert")(
            input_ids, token_type_ids, attention_mask, **kw
        )
        hidden = nn.Dropout(self.config.dropout_rate)(hidden, deterministic=self.deterministic)
        return _classifier(self.config, self.num_labels, "classifier")(hidden).astype(jnp.float32)


# ---- pure-functional inference API ----


@functools.partial(jax.jit, static_argnums=0)
def encode(cfg: ModelConfig, params, input_ids, token_type_ids=None, attention_mask=None):
    """-> (hidden [b, L, d], pooled [b, d] or None). `params` is the whole tree ({'bert': ...})."""
    if "bert" not in params:
        raise ValueError(f"params have no 'bert' subtree (top-level keys: {sorted(params)})")
    return BertEncoder(cfg).apply({"params": params["bert"]}, input_ids, token_type_ids, attention_mask)


@functools.partial(jax.jit, static_argnums=0)
def pretraining_logits(cfg: ModelConfig, params, input_ids, token_type_ids=None, attention_mask=None,
                       masked_positions=None):
    """-> (mlm_logits [b, L or P, vocab], nsp_logits [b, 2]) in fp32."""
    missing = sorted({"bert", "mlm", "nsp"} - set(params))
    if missing:
        raise ValueError(
            f"params lack {missing}: pretraining heads are absent (e.g. converted from a BertModel "
            "checkpoint such as sentence-transformers'); use bert.encode"
        )
    return BertForPreTraining(cfg).apply(
        {"params": params}, input_ids, token_type_ids, attention_mask, masked_positions
    )
