"""Helpers shared by the BERT sweeps: small-scale model sizes, the pretraining budget, and the
fine-tuning runs (configs/glue.py:task=<task>,init=<pretraining workdir>) over the paper's
learning-rate grid."""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from experiments.sweep import Metric, Run, ref

PRETRAIN_CONFIG = "configs/bert.py:mini"
GLUE_CONFIG = "configs/glue.py"

# One budget for every pretraining run (the paper gives every size the same 1M steps of 256
# sequences). Sized for the ~2.5M-token local corpus on one GPU; a starting point, not tuned.
PRETRAIN_BUDGET: dict[str, Any] = {
    "num_train_steps": 20_000,
    "optimizer.warmup_steps": 2_000,  # 10% of the steps (the paper: 10k of 1M)
    "optimizer.learning_rate": 5e-4,  # small models, short schedule (the paper: 1e-4 for base)
    "data.batch_size": 128,
    "eval_every_steps": 2_000,
    "checkpoint_every_steps": 2_000,
}

# Fine-tuning (BERT Sec. 4.1): batch 32, 3 epochs, the best of these learning rates on dev.
PAPER_LRS = (5e-5, 4e-5, 3e-5, 2e-5)


def scaled_size(layers: int, hidden: int, heads: int) -> tuple[int, int, int]:
    """The paper's L/H/A at small scale: L / 3 (>= 1), H / 4, A kept (so H / A shrinks with H)."""
    return max(1, round(layers / 3)), hidden // 4, heads


def size_overrides(layers: int, hidden: int, heads: int) -> dict[str, Any]:
    return {"model.num_encoder_layers": layers, "model.d_model": hidden, "model.num_heads": heads,
            "model.d_ff": 4 * hidden}


def finetune_runs(pretrain: str, row: str, tasks: Sequence[str], lrs: Sequence[float] = PAPER_LRS,
                  extra: Mapping[str, Any] | None = None) -> list[Run]:
    """One run per (task, lr), initialised from run `pretrain`'s workdir, feeding report row `row`.

    configs/glue.py takes the model from the pretraining workdir's config.json; `extra` adds
    fine-tuning overrides."""
    return [
        Run(f"{row}_{task}_lr{lr:g}", {**(extra or {}), "optimizer.learning_rate": lr},
            config=f"{GLUE_CONFIG}:task={task},init={ref(pretrain)}", row=row,
            tags={"stage": "finetune", "task": task, "lr": lr})
        for task in tasks for lr in lrs
    ]


def glue_accuracy(task: str, title: str, paper: str) -> Metric:
    """Dev accuracy of `task`'s fine-tuning runs (best over the lr grid), in percent as the paper."""
    return Metric(title, ("eval_accuracy",), paper=paper, fmt=".1f", scale=100.0, where={"task": task})
