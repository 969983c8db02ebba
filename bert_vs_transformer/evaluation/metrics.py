"""Evaluation metrics: the GLUE metrics.

Translation scores live in `bleu.py`: sacreBLEU on detokenized text, plus the tokenized and
compound-split BLEU older papers quote, each with its signature.

GLUE metrics (Wang et al., 2019) are numpy implementations with scikit-learn's / scipy's
conventions (checked against them in tests/evaluation/test_translation_eval.py):

| task  | metrics                  |
|-------|--------------------------|
| cola  | Matthews correlation     |
| sst2  | accuracy                 |
| mrpc  | F1 (positive = 1), accuracy |
| stsb  | Pearson, Spearman        |
| rte   | accuracy                 |

Accuracy-like metrics are fractions in [0, 1].
"""

from __future__ import annotations

import numpy as np


# ---------------------------------------------------------------------------------------------
# GLUE.


def _pair(predictions, labels) -> tuple[np.ndarray, np.ndarray]:
    p, y = np.asarray(predictions).ravel(), np.asarray(labels).ravel()
    if p.shape != y.shape:
        raise ValueError(f"{p.size} predictions but {y.size} labels")
    if p.size == 0:
        raise ValueError("no examples to score")
    return p, y


def accuracy(predictions, labels) -> float:
    """Fraction of exact matches."""
    p, y = _pair(predictions, labels)
    return float(np.mean(p == y))


def matthews_corrcoef(predictions, labels) -> float:
    """Matthews correlation (multi-class form of Gorodkin 2004, as sklearn); 0 when undefined."""
    p, y = _pair(predictions, labels)
    classes, idx = np.unique(np.concatenate([y, p]), return_inverse=True)
    k = len(classes)
    yi, pi = idx[: y.size], idx[y.size:]
    c = np.zeros((k, k), np.float64)
    np.add.at(c, (yi, pi), 1.0)
    t_sum, p_sum = c.sum(axis=1), c.sum(axis=0)
    n_correct, n = np.trace(c), c.sum()
    cov_ytyp = n_correct * n - np.dot(t_sum, p_sum)
    cov_ypyp = n * n - np.dot(p_sum, p_sum)
    cov_ytyt = n * n - np.dot(t_sum, t_sum)
    denom = cov_ytyt * cov_ypyp
    if denom == 0:
        return 0.0
    return float(cov_ytyp / np.sqrt(denom))


def f1_score(predictions, labels, positive=1) -> float:
    """Binary F1 of the `positive` class; 0 when it has no true or predicted positives."""
    p, y = _pair(predictions, labels)
    tp = float(np.sum((p == positive) & (y == positive)))
    fp = float(np.sum((p == positive) & (y != positive)))
    fn = float(np.sum((p != positive) & (y == positive)))
    denom = 2 * tp + fp + fn
    return 0.0 if denom == 0 else 2 * tp / denom


def pearson(predictions, labels) -> float:
    """Pearson's r (nan when either side is constant, as scipy)."""
    x, y = _pair(predictions, labels)
    x, y = x.astype(np.float64), y.astype(np.float64)
    if x.size < 2:
        return float("nan")
    xm, ym = x - x.mean(), y - y.mean()
    denom = np.sqrt(np.dot(xm, xm) * np.dot(ym, ym))
    if denom == 0:
        return float("nan")
    return float(np.clip(np.dot(xm, ym) / denom, -1.0, 1.0))


def _average_ranks(x: np.ndarray) -> np.ndarray:
    """Ranks 1..n with ties given their mean rank (scipy.stats.rankdata(method='average'))."""
    order = np.argsort(x, kind="mergesort")
    sorted_x = x[order]
    # Boundaries of runs of equal values.
    starts = np.concatenate([[True], sorted_x[1:] != sorted_x[:-1]])
    run_id = np.cumsum(starts) - 1
    first = np.flatnonzero(starts)
    ends = np.concatenate([first[1:], [x.size]])
    mean_rank = (first + ends - 1) / 2.0 + 1.0  # ranks first+1 .. ends, averaged
    ranks = np.empty(x.size, np.float64)
    ranks[order] = mean_rank[run_id]
    return ranks


def spearman(predictions, labels) -> float:
    """Spearman's rho: Pearson's r of the average ranks."""
    x, y = _pair(predictions, labels)
    return pearson(_average_ranks(x.astype(np.float64)), _average_ranks(y.astype(np.float64)))


GLUE_METRICS = {
    "cola": ("mcc",),
    "sst2": ("accuracy",),
    "mrpc": ("f1", "accuracy"),
    "stsb": ("pearson", "spearman"),
    "rte": ("accuracy",),
}

_FUNCTIONS = {"accuracy": accuracy, "mcc": matthews_corrcoef, "f1": f1_score, "pearson": pearson,
              "spearman": spearman}


def glue_metrics(task: str, predictions, labels) -> dict[str, float]:
    """The metrics GLUE reports for `task` (see GLUE_METRICS): predicted class ids (or STS-B
    scores) against labels. Names follow metrics.jsonl's eval_<name> (accuracy, mcc, f1, pearson,
    spearman)."""
    if task not in GLUE_METRICS:
        raise ValueError(f"unknown GLUE task {task!r}; known: {sorted(GLUE_METRICS)}")
    return {name: _FUNCTIONS[name](predictions, labels) for name in GLUE_METRICS[task]}
