"""Sequence classification / regression fine-tuning (BERT 4.1): cross-entropy, or MSE when
config.num_labels == 1 (STS-B)."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from bert_vs_transformer import bert
from bert_vs_transformer.tasks import losses
from bert_vs_transformer.tasks.base import Task


class ClassificationTask(Task):
    """Batches: input_ids, token_type_ids, attention_mask [b, L]; label [b] (int, or float for
    regression)."""

    name = "classification"

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
        return {"examples": jnp.asarray(batch["input_ids"].shape[0], jnp.float32)}

    def loss(self, params, batch, normalizers, rng, deterministic):
        rngs = None if deterministic else {"dropout": rng}
        logits = self.model(deterministic).apply(
            {"params": params}, batch["input_ids"], batch["token_type_ids"], batch["attention_mask"], rngs=rngs
        )
        if self.num_labels == 1:
            pred = logits[:, 0]
            per_example = jnp.square(pred - batch["label"].astype(jnp.float32))
            sums = {"loss_sum": jnp.sum(per_example), "examples": jnp.asarray(pred.shape[0], jnp.float32)}
        else:
            per_example = losses.cross_entropy(logits, batch["label"])
            sums = {
                "loss_sum": jnp.sum(per_example),
                "accuracy_sum": jnp.sum(losses.accuracy(logits, batch["label"])),
                "examples": jnp.asarray(logits.shape[0], jnp.float32),
            }
        return jnp.sum(per_example) / normalizers["examples"], sums

    def tokens(self, batch):
        return jnp.sum(batch["attention_mask"])
