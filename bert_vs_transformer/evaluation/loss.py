"""The task's own metrics (loss, accuracy, perplexity, ...) summed over an evaluation split."""

from __future__ import annotations

import jax
import numpy as np

from bert_vs_transformer import data
from bert_vs_transformer.evaluation.base import Context, Evaluator
from bert_vs_transformer.models import partitioning


class LossEvaluator(Evaluator):
    """`eval_<metric>` for every metric the task's `summarize` reports, over the whole split."""

    def evaluate(self, ctx: Context) -> dict[int, dict[str, float]]:
        totals: dict[str, np.ndarray] = {}
        for batch in data.eval_batches(ctx.config, self.split):
            gbatch = partitioning.global_batch_from_local(data.local_rows(batch), ctx.mesh)
            for k, v in jax.device_get(ctx.loss_sums(ctx.params, gbatch)).items():
                totals[k] = totals.get(k, 0.0) + np.asarray(v, np.float64)
        if not totals:
            return {k: {} for k in ctx.members}
        return {k: {f"eval_{n}": v for n, v in ctx.task.summarize({s: float(t[k]) for s, t in totals.items()}).items()}
                for k in ctx.members}
