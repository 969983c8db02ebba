"""Devlin et al. (2018), Table 5: the pretraining tasks, at small scale.

Three pretrainings of the same model (BERT-base scaled as in bert_table6: L=4, H=192, A=12) with the
same budget, each fine-tuned on SST-2 and MRPC over the paper's learning rates:

  mlm_nsp   masked LM + next-sentence prediction (BERT)
  mlm       "No NSP": masked LM only                                  config.nsp_weight=0.0
  ltr       "LTR & No NSP": a left-to-right LM (causal attention, every next token predicted, no
            masking) without NSP, the left-only constraint kept when fine-tuning (Sec. 5.1), with
            the classifier reading the last token (the [CLS] token sees only itself)
                                                                       config.lm_objective=ltr,
                                                                       config.model.causal=True,
                                                                       config.model.pooling=last

The overrides of "mlm" and "ltr" use the library's Table 5 options (config.nsp_weight,
config.lm_objective, config.model.causal, config.model.pooling; tests/tasks/test_lm_objectives.py). The
paper's "+ BiLSTM" row is left out.
"""

from __future__ import annotations

from experiments import bert_runs
from experiments.sweep import Row, Run, Sweep

# Table 5 (dev): MNLI-m, QNLI, MRPC, SST-2, SQuAD F1 (BERT-base, 1M steps).
PAPER_ROWS = [
    # row, paper setting, pretraining overrides, fine-tuning overrides, MNLI-m, QNLI, MRPC, SST-2, SQuAD
    ("mlm_nsp", "BERT-base (MLM + NSP)", {}, {}, 84.4, 88.4, 86.7, 92.7, 88.5),
    ("mlm", "No NSP", {"nsp_weight": 0.0}, {}, 83.9, 84.9, 86.5, 92.6, 87.9),
    ("ltr", "LTR & No NSP",
     {"nsp_weight": 0.0, "lm_objective": "ltr", "model.causal": True},
     {"model.causal": True, "model.pooling": "last"}, 82.1, 84.3, 77.5, 92.1, 77.8),
]
SIZE = bert_runs.scaled_size(12, 768, 12)  # BERT-base
TASKS = ("sst2", "mrpc")


def get_sweep(arg: str | None = None) -> Sweep:
    del arg
    model = bert_runs.size_overrides(*SIZE)
    runs, rows = [], []
    for row, setting, pretrain_overrides, finetune_overrides, mnli, qnli, mrpc, sst2, squad in PAPER_ROWS:
        pretrain = f"{row}_pretrain"
        runs.append(Run(pretrain, {**model, **bert_runs.PRETRAIN_BUDGET, **pretrain_overrides}, row=row,
                        tags={"stage": "pretrain"}))
        runs += bert_runs.finetune_runs(pretrain, row, TASKS, extra=finetune_overrides)
        ours = ", ".join(f"{k}={v}" for k, v in pretrain_overrides.items()) or "MLM + NSP"
        rows.append(Row(row, setting=setting, ours=ours,
                        paper={"mnli": mnli, "qnli": qnli, "mrpc": mrpc, "sst2": sst2, "squad": squad}))
    L, H, A = SIZE
    return Sweep(
        name="bert_table5",
        config=bert_runs.PRETRAIN_CONFIG,
        runs=runs,
        rows=rows,
        metrics=[
            bert_runs.glue_accuracy("mrpc", "MRPC acc (dev)", "mrpc"),
            bert_runs.glue_accuracy("sst2", "SST-2 acc (dev)", "sst2"),
        ],
        curves=[("loss", "pretraining loss")],
        curves_where={"stage": "pretrain"},
        baseline="mlm_nsp",
        title="Devlin et al. (2018) Table 5 (pretraining tasks) at small scale",
        notes=(
            "Paper: BERT-base pretrained 1M steps, dev accuracy. Ours: the same ablations on "
            f"L={L}, H={H}, A={A} pretrained on the local corpus with one budget "
            "(experiments/bert_runs.py); dev accuracy of the best learning rate (the run is named)."
        ),
    )
