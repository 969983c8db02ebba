"""Causal language modelling over the encoder stack: BERT's body (layers.Encoder) with
model.causal=True and BERT's tied MLM head at every position, trained on next-token cross-entropy
(the left-to-right LM of BERT Table 5 as the whole objective; Radford et al. 2018, 3.1)."""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from bert_vs_transformer.models import bert, flops
from bert_vs_transformer.models.model_config import ModelConfig
from bert_vs_transformer.tasks import losses
from bert_vs_transformer.tasks.base import Task


class EncoderLM(nn.Module):
    """bert.BertEncoder + bert.MaskedLMHead (decoder tied to the token embedding) on every position:
    -> logits [b, L, vocab] in fp32. Parameter names match BertForPreTraining's ('bert', 'mlm')."""

    config: ModelConfig
    deterministic: bool = True

    def setup(self):
        self.bert = bert.BertEncoder(self.config, self.deterministic, name="bert")
        self.mlm = bert.MaskedLMHead(self.config, name="mlm")

    def __call__(self, input_ids, attention_mask=None):
        hidden, _ = self.bert(input_ids, None, attention_mask)
        return self.mlm(hidden, self.bert.token_embed)


class LMTask(Task):
    """Batches: input_ids [b, L] and targets [b, L] (the next token of each position; 0 = padding),
    optional example_weights [b] (eval padding rows)."""

    name = "lm"
    supports_members = False

    def __init__(self, config):
        super().__init__(config)
        if not self.model_config.causal:
            raise ValueError("config.model.causal=False: the lm task predicts the next token, so its encoder "
                             "must be causal (set model.causal=True)")

    def model(self, deterministic: bool):
        return EncoderLM(self.model_config, deterministic=deterministic)

    def dummy_batch(self, batch_size: int):
        seq = self.config.data.max_seq_len
        return {"input_ids": np.ones((batch_size, seq), np.int32), "targets": np.ones((batch_size, seq), np.int32)}

    def init_args(self, batch):
        return (batch["input_ids"],)

    @staticmethod
    def _weights(batch):
        w = (batch["targets"] > 0).astype(jnp.float32)
        ex = batch.get("example_weights")
        return w if ex is None else w * ex.astype(jnp.float32)[:, None]

    def normalizers(self, batch):
        return {"targets": jnp.maximum(jnp.sum(self._weights(batch)), 1.0).astype(jnp.float32)}

    def loss(self, params, batch, normalizers, rng, deterministic):
        """Mean next-token negative log-likelihood over the real targets."""
        rngs = None if deterministic else {"dropout": rng}
        logits = self.model(deterministic).apply({"params": params}, batch["input_ids"], rngs=rngs)
        targets, w = batch["targets"], self._weights(batch)
        nll = losses.cross_entropy(logits, targets) * w
        sums = {
            "nll_sum": jnp.sum(nll),
            "accuracy_sum": jnp.sum(losses.accuracy(logits, targets) * w),
            "targets": jnp.sum(w),
        }
        return jnp.sum(nll) / normalizers["targets"], sums

    def tokens(self, batch):
        return jnp.sum(batch["input_ids"] > 0)

    @staticmethod
    def summarize(sums):
        """loss = mean nll per target token, perplexity = exp(loss), accuracy of the argmax."""
        n = max(float(sums["targets"]), 1.0)
        nll = float(sums["nll_sum"]) / n
        return {"loss": nll, "perplexity": float(np.exp(min(nll, 50.0))), "accuracy": float(sums["accuracy_sum"]) / n}

    def lengths(self):
        return {"seq_len": self.config.data.max_seq_len}

    def forward_flops(self, batch_size):
        """BERT's encoder and MLM head with every position predicted, no NSP (models/flops.py)."""
        return flops.bert_forward_flops(self.model_config, batch_size, self.lengths()["seq_len"], None, nsp=False)
