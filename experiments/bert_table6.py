"""Devlin et al. (2018), Table 6: BERT model size (L layers, H hidden, A heads) at small scale.

Each of the paper's six sizes is scaled (L / 3, H / 4, A kept; feed-forward 4H), pretrained with
MLM + NSP on the local corpus with one budget for all (experiments/bert_runs.py), and fine-tuned on
SST-2 and MRPC from its checkpoint over the paper's learning rates; the table shows the held-out
MLM perplexity and the best dev accuracy. MNLI is not among our datasets.

The paper's LM perplexity is on held-out BERT pretraining data (1M steps), its dev accuracies the
mean of 5 fine-tuning restarts; ours come from a far smaller corpus and budget: compare the trend
over sizes, not the values.
"""

from __future__ import annotations

from experiments import bert_runs
from experiments.sweep import Metric, Row, Run, Sweep

# Table 6: L, H, A, LM (ppl), MNLI-m, MRPC, SST-2 (dev accuracy).
PAPER_ROWS = [
    (3, 768, 12, 5.84, 77.9, 79.8, 88.4),
    (6, 768, 3, 5.24, 80.6, 82.2, 90.7),
    (6, 768, 12, 4.68, 81.9, 84.8, 91.3),
    (12, 768, 12, 3.99, 84.4, 86.7, 92.9),
    (12, 1024, 16, 3.54, 85.7, 86.9, 93.3),
    (24, 1024, 16, 3.23, 86.6, 87.8, 93.7),
]
TASKS = ("sst2", "mrpc")


def get_sweep(arg: str | None = None) -> Sweep:
    del arg
    runs, rows = [], []
    for layers, hidden, heads, lm_ppl, mnli, mrpc, sst2 in PAPER_ROWS:
        L, H, A = bert_runs.scaled_size(layers, hidden, heads)
        row = f"L{L}_H{H}_A{A}"
        model = bert_runs.size_overrides(L, H, A)
        pretrain = f"{row}_pretrain"
        runs.append(Run(pretrain, {**model, **bert_runs.PRETRAIN_BUDGET}, row=row, tags={"stage": "pretrain"}))
        runs += bert_runs.finetune_runs(pretrain, row, TASKS)
        rows.append(Row(row, setting=f"L={layers}, H={hidden}, A={heads}", ours=f"L={L}, H={H}, A={A}",
                        paper={"lm_ppl": lm_ppl, "mnli": mnli, "mrpc": mrpc, "sst2": sst2}))
    return Sweep(
        name="bert_table6",
        config=bert_runs.PRETRAIN_CONFIG,
        runs=runs,
        rows=rows,
        metrics=[
            Metric("MLM PPL", ("eval_mlm_perplexity",), paper="lm_ppl", fmt=".2f", higher_is_better=False,
                   where={"stage": "pretrain"}),
            bert_runs.glue_accuracy("mrpc", "MRPC acc (dev)", "mrpc"),
            bert_runs.glue_accuracy("sst2", "SST-2 acc (dev)", "sst2"),
        ],
        curves=[("loss", "pretraining loss"), ("eval_mlm_perplexity", "held-out MLM perplexity")],
        curves_where={"stage": "pretrain"},
        title="Devlin et al. (2018) Table 6 (model size) at small scale",
        notes=(
            "Paper: BERT pretrained 1M steps on BooksCorpus + Wikipedia; LM perplexity of held-out "
            "pretraining data; dev accuracy (mean of 5 fine-tuning restarts). Ours: sizes scaled "
            "L/3, H/4, A kept, pretrained on the local corpus (`configs/bert.py:mini` + "
            "experiments/bert_runs.py's budget); MLM perplexity on its held-out split; dev accuracy "
            "of the best learning rate (the run is named)."
        ),
    )
