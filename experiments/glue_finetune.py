"""The BERT paper's GLUE fine-tuning grid (Devlin et al. 2018, Sec. 4.1): batch 32, 3 epochs, and
for each task the best learning rate of {5e-5, 4e-5, 3e-5, 2e-5} on dev.

    python -m experiments.run experiments/glue_finetune.py[:init=minilm|scratch|DIR,tasks=cola+sst2]

runs `configs/glue.py:task=<task>,init=<init>` with `--config.optimizer.learning_rate=<lr>` for each
of our five GLUE tasks. The paper's column is BERT-base on the GLUE test server (Table 1: MCC for
CoLA, F1 for MRPC, Spearman for STS-B, accuracy otherwise); ours is dev, so it is a reference
point, not a like-for-like comparison.
"""

from __future__ import annotations

import os

from bert_vs_transformer import config_args
from experiments import bert_runs
from experiments.sweep import Metric, Row, Run, Sweep

TASKS = ("cola", "sst2", "mrpc", "stsb", "rte")
# Table 1, BERT-base and BERT-large (GLUE test), in each task's metric.
PAPER = {
    "cola": ("MCC", 52.1, 60.5),
    "sst2": ("accuracy", 93.5, 94.9),
    "mrpc": ("F1", 88.9, 89.3),
    "stsb": ("Spearman", 85.8, 86.5),
    "rte": ("accuracy", 66.4, 70.1),
}
# Our metrics.jsonl names for each (the first one logged is used).
KEYS = {
    "cola": ("eval_mcc",),
    "sst2": ("eval_accuracy",),
    "mrpc": ("eval_f1", "eval_accuracy"),
    "stsb": ("eval_spearman", "eval_pearson"),
    "rte": ("eval_accuracy",),
}


def get_sweep(arg: str | None = None) -> Sweep:
    args = config_args.parse(arg, {"init": "minilm", "tasks": "+".join(TASKS)})
    tasks = [t for t in args["tasks"].split("+") if t]
    unknown = sorted(set(tasks) - set(TASKS))
    if unknown:
        raise ValueError(f"unknown GLUE task(s) {unknown}; choose from {TASKS}")
    init = args["init"]
    label = init if init in ("minilm", "scratch") else os.path.basename(os.path.normpath(init))
    runs = [
        Run(f"{task}_lr{lr:g}", {"optimizer.learning_rate": lr},
            config=f"{bert_runs.GLUE_CONFIG}:task={task},init={init}", row=task, tags={"task": task, "lr": lr})
        for task in tasks for lr in bert_runs.PAPER_LRS
    ]
    rows = [Row(task, setting=f"BERT-base, test, {PAPER[task][0]}", ours=f"init={init}, dev, best lr",
                paper={"base": PAPER[task][1], "large": PAPER[task][2]}) for task in tasks]
    return Sweep(
        name="glue_finetune" if init == "minilm" else f"glue_finetune_{label}",
        config=f"{bert_runs.GLUE_CONFIG}:init={init}",
        runs=runs,
        rows=rows,
        metrics=[Metric("score", {t: KEYS[t] for t in tasks}, paper="base", fmt=".1f", scale=100.0)],
        curves=[("loss", "fine-tuning loss")],
        title=f"GLUE fine-tuning grid (Devlin et al. 2018, Sec. 4.1), init={init}",
        notes=(
            "Paper: BERT-base, GLUE test server (Table 1). Ours: dev split, the best of the paper's "
            "learning rates {5e-5, 4e-5, 3e-5, 2e-5} (batch 32, 3 epochs as configs/glue.py sets), "
            f"init={init}; the metric is the task's (MCC, accuracy, F1, Spearman) x 100."
        ),
    )
