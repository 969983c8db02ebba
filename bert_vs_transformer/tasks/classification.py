"""Sequence classification / regression fine-tuning (BERT 4.1): cross-entropy, or MSE when
config.num_labels == 1 (STS-B)."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from bert_vs_transformer.models import bert, flops
from bert_vs_transformer.tasks import losses
from bert_vs_transformer.tasks.base import Task


class ClassificationTask(Task):
    """Batches: input_ids, token_type_ids, attention_mask [b, L]; label [b] (int, or float for
    regression)."""

    name = "classification"
    supports_members = True

    @property
    def num_labels(self) -> int:
        return int(self.config.get("num_labels", 2))

    def model(self, deterministic: bool):
        return bert.BertForSequenceClassification(self.model_config, self.num_labels, deterministic=deterministic)

    def dummy_batch(self, batch_size: int):
        seq = self.config.data.max_seq_len
        label_dtype = np.float32 if self.num_labels == 1 else np.int32
        return {
            "input_ids": np.ones((batch_size, seq), np.int32),
            "token_type_ids": np.zeros((batch_size, seq), np.int32),
            "attention_mask": np.ones((batch_size, seq), np.int32),
            "label": np.zeros((batch_size,), label_dtype),
        }

    def init_args(self, batch):
        return (batch["input_ids"], batch["token_type_ids"], batch["attention_mask"])

    def normalizers(self, batch):
        w = batch.get("example_weights")
        n = jnp.asarray(batch["input_ids"].shape[0], jnp.float32) if w is None else jnp.sum(w)
        return {"examples": jnp.maximum(n, 1.0).astype(jnp.float32)}

    def loss(self, params, batch, normalizers, rng, deterministic):
        rngs = None if deterministic else {"dropout": rng}
        logits = self.model(deterministic).apply(
            {"params": params}, batch["input_ids"], batch["token_type_ids"], batch["attention_mask"], rngs=rngs
        )
        w = batch.get("example_weights")
        w = jnp.ones(logits.shape[0], jnp.float32) if w is None else w.astype(jnp.float32)
        if self.num_labels == 1:
            per_example = jnp.square(logits[:, 0] - batch["label"].astype(jnp.float32)) * w
            sums = {"loss_sum": jnp.sum(per_example), "examples": jnp.sum(w)}
        else:
            label = jnp.maximum(batch["label"], 0)
            per_example = losses.cross_entropy(logits, label) * w
            sums = {
                "loss_sum": jnp.sum(per_example),
                "accuracy_sum": jnp.sum(losses.accuracy(logits, label) * w),
                "examples": jnp.sum(w),
            }
        return jnp.sum(per_example) / normalizers["examples"], sums

    def tokens(self, batch):
        return jnp.sum(batch["attention_mask"])

    def summarize(self, sums):
        n = max(float(sums["examples"]), 1.0)
        if self.num_labels == 1:
            return {"mse": float(sums["loss_sum"]) / n}
        return {"loss": float(sums["loss_sum"]) / n, "accuracy": float(sums["accuracy_sum"]) / n}

    def lengths(self):
        return {"seq_len": self.config.data.max_seq_len}

    def forward_flops(self, batch_size):
        return flops.classification_forward_flops(self.model_config, batch_size, self.lengths()["seq_len"],
                                                  self.num_labels)
