"""Translation (Vaswani): label-smoothed cross-entropy normalised per real target token."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from bert_vs_transformer.models import flops, transformer
from bert_vs_transformer.tasks import losses
from bert_vs_transformer.tasks.base import Task


class TranslationTask(Task):
    """Batches: inputs [b, s], targets [b, t] (0 = padding), optional *_segmentation/*_positions
    for packed rows. The decoder reads targets shifted right (per packed segment)."""

    name = "translation"

    def __init__(self, config):
        super().__init__(config)
        if self.model_config.attention_kernel == "cudnn" and config.data.get("pack", False):
            raise ValueError("config.data.pack=True: packed rows need segment masks, which "
                             "model.attention_kernel='cudnn' cannot take; set data.pack=False or attention_kernel='xla'")

    def model(self, deterministic: bool):
        return transformer.EncoderDecoder(self.model_config, deterministic=deterministic)

    def dummy_batch(self, batch_size: int):
        d = self.config.data
        src_len, tgt_len = d.get("max_source_len", d.max_len), d.get("max_target_len", d.max_len)
        return {
            "inputs": np.ones((batch_size, src_len), np.int32),
            "targets": np.ones((batch_size, tgt_len), np.int32),
        }

    def init_args(self, batch):
        return (batch["inputs"], batch["targets"])

    def _forward(self, params, batch, rng, deterministic):
        seg_in, seg_tgt = batch.get("inputs_segmentation"), batch.get("targets_segmentation")
        targets_in = transformer.shift_right(batch["targets"], seg_tgt)
        rngs = None if deterministic else {"dropout": rng}
        return self.model(deterministic).apply(
            {"params": params}, batch["inputs"], targets_in,
            inputs_positions=batch.get("inputs_positions"), targets_positions=batch.get("targets_positions"),
            inputs_segmentation=seg_in, targets_segmentation=seg_tgt,
            targets_padding=batch["targets"] > 0 if seg_tgt is None else None,
            rngs=rngs,
        )

    def normalizers(self, batch):
        return {"tokens": jnp.maximum(jnp.sum(batch["targets"] > 0), 1).astype(jnp.float32)}

    def loss(self, params, batch, normalizers, rng, deterministic):
        logits = self._forward(params, batch, rng, deterministic)
        targets = batch["targets"]
        weights = (targets > 0).astype(jnp.float32)
        ls = self.config.get("label_smoothing", 0.0)
        smoothed = losses.cross_entropy(logits, targets, ls) * weights
        nll = losses.cross_entropy(logits, targets) * weights
        loss = jnp.sum(smoothed) / normalizers["tokens"]
        sums = {
            "nll_sum": jnp.sum(nll),
            "accuracy_sum": jnp.sum(losses.accuracy(logits, targets) * weights),
            "tokens": jnp.sum(weights),
        }
        return loss, sums

    def tokens(self, batch):
        return jnp.sum(batch["inputs"] > 0) + jnp.sum(batch["targets"] > 0)

    @staticmethod
    def summarize(sums):
        """Metric sums over a batch or an eval set -> reported metrics."""
        n = max(float(sums["tokens"]), 1.0)
        nll = float(sums["nll_sum"]) / n
        return {"nll": nll, "perplexity": float(np.exp(min(nll, 50.0))), "accuracy": float(sums["accuracy_sum"]) / n}

    def lengths(self):
        d = self.config.data
        return {"src_len": d.get("max_source_len", d.max_len), "tgt_len": d.get("max_target_len", d.max_len)}

    def forward_flops(self, batch_size):
        n = self.lengths()
        return flops.transformer_forward_flops(self.model_config, batch_size, n["src_len"], n["tgt_len"])
