"""BERT pretraining (Devlin 3.1): masked-LM over the chosen positions plus next-sentence prediction."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from bert_vs_transformer.models import bert, flops
from bert_vs_transformer.tasks import losses
from bert_vs_transformer.tasks.base import Task


class PretrainingTask(Task):
    """Batches: input_ids, token_type_ids, attention_mask [b, L]; masked_lm_positions,
    masked_lm_ids, masked_lm_weights [b, P]; next_sentence_labels [b] (0 = IsNext)."""

    name = "pretraining"

    def model(self, deterministic: bool):
        return bert.BertForPreTraining(self.model_config, deterministic=deterministic)

    def dummy_batch(self, batch_size: int):
        d = self.config.data
        seq, preds = d.max_seq_len, d.max_predictions_per_seq
        return {
            "input_ids": np.ones((batch_size, seq), np.int32),
            "token_type_ids": np.zeros((batch_size, seq), np.int32),
            "attention_mask": np.ones((batch_size, seq), np.int32),
            "masked_lm_positions": np.zeros((batch_size, preds), np.int32),
            "masked_lm_ids": np.zeros((batch_size, preds), np.int32),
            "masked_lm_weights": np.zeros((batch_size, preds), np.float32),
            "next_sentence_labels": np.zeros((batch_size,), np.int32),
        }

    def init_args(self, batch):
        return (batch["input_ids"], batch["token_type_ids"], batch["attention_mask"], batch["masked_lm_positions"])

    @property
    def ltr(self) -> bool:
        objective = self.config.get("lm_objective", "mlm")
        if objective not in ("mlm", "ltr"):
            raise ValueError(f"config.lm_objective={objective!r} is not one of mlm, ltr")
        return objective == "ltr"

    @staticmethod
    def unmasked_ids(batch):
        """The original tokens: masked_lm_ids put back at the masked positions (for the LTR LM)."""
        ids, pos = batch["input_ids"], batch["masked_lm_positions"].astype(jnp.int32)
        rows = jnp.arange(ids.shape[0])[:, None]
        original = jnp.where(batch["masked_lm_weights"] > 0, batch["masked_lm_ids"], ids[rows, pos])
        return ids.at[rows, pos].set(original)

    def _lm_targets(self, batch):
        """(positions' targets, weights): masked tokens (MLM) or every next real token (LTR)."""
        ex = self._example_weights(batch)
        if self.ltr:
            ids = self.unmasked_ids(batch)
            targets = jnp.pad(ids[:, 1:], ((0, 0), (0, 1)))
            weights = jnp.pad(batch["attention_mask"][:, 1:], ((0, 0), (0, 1))).astype(jnp.float32)
            return targets, weights * ex[:, None]
        return batch["masked_lm_ids"], batch["masked_lm_weights"].astype(jnp.float32) * ex[:, None]

    def normalizers(self, batch):
        return {
            "masked": jnp.maximum(jnp.sum(self._lm_targets(batch)[1]), 1.0).astype(jnp.float32),
            "sequences": jnp.maximum(self._examples(batch), 1.0),
        }

    @staticmethod
    def _example_weights(batch):
        ex = batch.get("example_weights")
        return jnp.ones(batch["input_ids"].shape[0], jnp.float32) if ex is None else ex.astype(jnp.float32)

    @staticmethod
    def _examples(batch):
        ex = batch.get("example_weights")
        return jnp.asarray(batch["input_ids"].shape[0], jnp.float32) if ex is None else jnp.sum(ex).astype(jnp.float32)

    def loss(self, params, batch, normalizers, rng, deterministic):
        """MLM + nsp_weight x NSP (BERT 3.1). With config.lm_objective='ltr' the LM term is a
        left-to-right next-token loss on the unmasked text (Table 5; pair with model.causal=True);
        its metrics keep the mlm_* names."""
        rngs = None if deterministic else {"dropout": rng}
        ids = self.unmasked_ids(batch) if self.ltr else batch["input_ids"]
        positions = None if self.ltr else batch["masked_lm_positions"]
        mlm_logits, nsp_logits = self.model(deterministic).apply(
            {"params": params}, ids, batch["token_type_ids"], batch["attention_mask"], positions, rngs=rngs,
        )
        ex = self._example_weights(batch)
        targets, w = self._lm_targets(batch)
        mlm = losses.cross_entropy(mlm_logits, targets) * w
        nsp = losses.cross_entropy(nsp_logits, batch["next_sentence_labels"]) * ex
        nsp_weight = float(self.config.get("nsp_weight", 1.0))
        loss = jnp.sum(mlm) / normalizers["masked"] + nsp_weight * jnp.sum(nsp) / normalizers["sequences"]
        sums = {
            "mlm_loss_sum": jnp.sum(mlm),
            "mlm_accuracy_sum": jnp.sum(losses.accuracy(mlm_logits, targets) * w),
            "masked": jnp.sum(w),
            "nsp_loss_sum": jnp.sum(nsp),
            "nsp_accuracy_sum": jnp.sum(losses.accuracy(nsp_logits, batch["next_sentence_labels"]) * ex),
            "sequences": jnp.sum(ex),
        }
        return loss, sums

    def tokens(self, batch):
        return jnp.sum(batch["attention_mask"])

    @staticmethod
    def summarize(sums):
        m, s = max(float(sums["masked"]), 1.0), max(float(sums["sequences"]), 1.0)
        mlm = float(sums["mlm_loss_sum"]) / m
        return {
            "mlm_loss": mlm, "mlm_perplexity": float(np.exp(min(mlm, 50.0))),
            "mlm_accuracy": float(sums["mlm_accuracy_sum"]) / m,
            "nsp_loss": float(sums["nsp_loss_sum"]) / s, "nsp_accuracy": float(sums["nsp_accuracy_sum"]) / s,
        }

    def lengths(self):
        d = self.config.data
        return {"seq_len": d.max_seq_len, "num_masked": d.get("max_predictions_per_seq", None)}

    def forward_flops(self, batch_size):
        n = self.lengths()
        return flops.bert_forward_flops(self.model_config, batch_size, n["seq_len"], n["num_masked"])
