"""Evaluation metrics: sacreBLEU (BLEU, chrF) for translation and the GLUE metrics.

Translation scores come from sacreBLEU itself (Post, 2018), on detokenized text, so numbers are
comparable across papers; each score is returned with sacreBLEU's signature string (e.g.
``nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp|version:2.6.0``), which is what a results table
should quote next to it. BLEU and chrF are on sacreBLEU's 0-100 scale.

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

from typing import Any, Sequence

import numpy as np
from sacrebleu.metrics import BLEU, CHRF

# ---------------------------------------------------------------------------------------------
# Translation (sacreBLEU).


def _reference_streams(references: Sequence[Any], n: int) -> list[list[str]]:
    """One reference per hypothesis (a list of str), or several (a list of lists of str, one
    list per hypothesis, all of the same length) -> sacreBLEU's reference streams."""
    if len(references) != n:
        raise ValueError(f"{n} hypotheses but {len(references)} references")
    if n == 0:
        raise ValueError("no hypotheses to score")
    if all(isinstance(r, str) for r in references):
        return [list(references)]
    counts = {len(r) for r in references}
    if len(counts) != 1:
        raise ValueError(f"every hypothesis needs the same number of references, got {sorted(counts)}")
    return [[r[j] for r in references] for j in range(counts.pop())]


def corpus_bleu(hypotheses: Sequence[str], references: Sequence[Any], *, lowercase: bool = False,
                tokenize: str = "13a") -> tuple[float, str, Any]:
    """sacreBLEU corpus BLEU -> (score 0-100, signature string, sacrebleu BLEUScore)."""
    refs = _reference_streams(references, len(hypotheses))
    metric = BLEU(tokenize=tokenize, lowercase=lowercase)
    score = metric.corpus_score(list(hypotheses), refs)
    return float(score.score), str(metric.get_signature()), score


def corpus_chrf(hypotheses: Sequence[str], references: Sequence[Any]) -> tuple[float, str, Any]:
    """sacreBLEU chrF (character 6-grams, beta 2) -> (score 0-100, signature, CHRFScore)."""
    refs = _reference_streams(references, len(hypotheses))
    metric = CHRF()
    score = metric.corpus_score(list(hypotheses), refs)
    return float(score.score), str(metric.get_signature()), score


def translation_metrics(hypotheses: Sequence[str], references: Sequence[Any]) -> dict[str, Any]:
    """Cased and lowercased BLEU (13a) and chrF, their signatures, and BLEU's length statistics.

    Keys: bleu, bleu_lowercase, chrf (floats, 0-100); bleu_signature, bleu_lowercase_signature,
    chrf_signature, bleu_details (str, sacreBLEU's one-line summary); bleu_brevity_penalty,
    bleu_length_ratio (floats); hyp_len, ref_len (13a tokens).
    """
    bleu, bleu_sig, detail = corpus_bleu(hypotheses, references)
    bleu_lc, bleu_lc_sig, _ = corpus_bleu(hypotheses, references, lowercase=True)
    chrf, chrf_sig, _ = corpus_chrf(hypotheses, references)
    return {
        "bleu": bleu,
        "bleu_lowercase": bleu_lc,
        "chrf": chrf,
        "bleu_signature": bleu_sig,
        "bleu_lowercase_signature": bleu_lc_sig,
        "chrf_signature": chrf_sig,
        "bleu_details": str(detail),
        "bleu_brevity_penalty": float(detail.bp),
        "bleu_length_ratio": float(detail.sys_len) / max(float(detail.ref_len), 1.0),
        "hyp_len": int(detail.sys_len),
        "ref_len": int(detail.ref_len),
    }


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
