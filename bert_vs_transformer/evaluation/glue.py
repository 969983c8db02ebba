"""GLUE dev metrics for the training loop and for finished runs (Wang et al. 2019).

    from bert_vs_transformer.evaluation import glue
    preds, labels = glue.predictions(config, task, params, mesh, "validation")
    glue.score("sst2", preds, labels)                                # {'accuracy': ..., 'glue_score': ...}

In training, `config.evals.<name> = {type: "glue", split, max_examples, every_steps}` runs it.

What: the dev split's predictions (argmax of the logits; the regression output for STS-B, as is)
against its labels, scored by `metrics.glue_metrics`:

| task | logged as |
|---|---|
| sst2 | eval_accuracy |
| cola | eval_mcc (Matthews correlation) |
| stsb | eval_pearson, eval_spearman |
| mrpc | eval_f1 (positive = equivalent), eval_accuracy |
| rte | eval_accuracy |

plus `eval_glue_score`, the mean of the task's metrics (GLUE's per-task score, here a fraction;
the GLUE leaderboard shows x100) and `eval_examples`. Accuracy-like metrics are fractions in
[0, 1]; correlations are as is, in [-1, 1].

How: the same global batches as the loss evaluator (`data.eval_batches`, file order, last one
zero-padded with `example_weights`), each process feeding its rows; one jitted forward pass
(`task.model(deterministic=True)`) whose logits come back replicated, so every process holds all
predictions and computes the same metrics. The padding rows are dropped by their weight. This is
a second forward pass over dev next to the loss evaluator's; dev sets are 277-1,500
examples, a small cost next to an epoch of training.
"""

from __future__ import annotations

import functools

import jax
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from bert_vs_transformer import data
from bert_vs_transformer.evaluation import metrics
from bert_vs_transformer.evaluation.base import Context, Evaluator
from bert_vs_transformer.models import partitioning


def glue_task(config) -> str | None:
    """The GLUE task a config fine-tunes on (config.glue_task, else data.dataset), or None."""
    name = config.get("glue_task", None) or config.data.get("dataset", None)
    return name if name in metrics.GLUE_METRICS else None


@functools.lru_cache(maxsize=8)
def _predict_fn(task, mesh):
    model = task.model(deterministic=True)
    fn = jax.jit(
        lambda params, batch: model.apply(
            {"params": params}, batch["input_ids"], batch["token_type_ids"], batch["attention_mask"]),
        out_shardings=NamedSharding(mesh, P()),
    )

    def run(params, batch):
        with partitioning.activate(mesh):
            return fn(params, batch)

    return run


def _on_mesh(params, mesh):
    """params as they are when they live on the mesh's devices (the training loop's), else
    replicated onto it (e.g. a run loaded onto one device by run_loading.load_run)."""
    mesh_devices = set(mesh.devices.flat)
    leaves = jax.tree_util.tree_leaves(params)
    if all(isinstance(x, jax.Array) and set(x.sharding.device_set) == mesh_devices for x in leaves):
        return params
    return jax.device_put(jax.device_get(params), NamedSharding(mesh, P()))


def predictions(config, task, params, mesh, split: str | None = None, max_examples: int = 0):
    """(predictions [n] (class ids, or float scores for regression), labels [n]) over `split`.

    max_examples > 0 stops after the batches holding the first max_examples examples."""
    split = split or config.data.get("eval_split", "validation")
    predict = _predict_fn(task, mesh)
    params = _on_mesh(params, mesh)
    keys = ("input_ids", "token_type_ids", "attention_mask")
    preds, labels = [], []
    seen = 0
    for batch in data.eval_batches(config, split):
        local = data.local_rows({k: batch[k] for k in keys})
        logits = np.asarray(jax.device_get(predict(params, partitioning.global_batch_from_local(local, mesh))))
        real = batch["example_weights"] > 0
        out = logits[:, 0] if logits.shape[-1] == 1 else np.argmax(logits, axis=-1)
        preds.append(out[real])
        labels.append(np.asarray(batch["label"])[real])
        seen += int(real.sum())
        if max_examples and seen >= max_examples:
            break
    if not preds:
        raise ValueError(f"{config.data.dataset}/{split} has no examples")
    p, y = np.concatenate(preds), np.concatenate(labels)
    if max_examples:
        p, y = p[:max_examples], y[:max_examples]
    return p, y


def score(name: str, preds, labels) -> dict[str, float]:
    """GLUE metrics of one task + glue_score (their mean) + examples, unprefixed."""
    out = metrics.glue_metrics(name, preds, labels)
    values = [v for v in out.values() if np.isfinite(v)]
    out["glue_score"] = float(np.mean(values)) if len(values) == len(out) else float("nan")
    out["examples"] = int(np.size(labels))
    return out


class GlueEvaluator(Evaluator):
    """GLUE dev metrics of config.glue_task (else data.dataset); nothing for other datasets.

    Field: max_examples > 0 scores only the first that many examples (smoke tests)."""

    FIELDS = {"max_examples": 0}

    def evaluate(self, ctx: Context) -> dict[int, dict[str, float]]:
        out = {}
        for k in ctx.members:
            config = ctx.configs[k]
            name = glue_task(config)
            if name is None:
                out[k] = {}
                continue
            preds, labels = predictions(config, ctx.task, ctx.member_params(k), ctx.mesh, self.split,
                                        int(self.opts["max_examples"] or 0))
            out[k] = {f"eval_{m}": v for m, v in score(name, preds, labels).items()}
        return out
