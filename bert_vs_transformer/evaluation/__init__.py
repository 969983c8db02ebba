"""Evaluation: metrics (sacreBLEU, GLUE) and the evaluators the training loop runs.

Evaluators are declared in the config, as big_vision does:

    config.evals = {"validation": {"type": "loss"},
                    "bleu": {"type": "bleu", "split": "validation", "beam_size": 0, "every_steps": 500}}

Each entry's `type` names a class in EVALUATORS; `split` defaults to config.data.eval_split,
`every_steps` to config.eval_every_steps (0 turns the entry off). A config without `evals` gets
the loss evaluator alone. They run loss-type first, then in name order. Metric names stay `eval_<metric>` (eval_loss, eval_bleu, eval_mcc, ...).
"""

from __future__ import annotations

from bert_vs_transformer.evaluation.base import Context, Evaluator
from bert_vs_transformer.evaluation.glue import GlueEvaluator
from bert_vs_transformer.evaluation.loss import LossEvaluator
from bert_vs_transformer.evaluation.translation import BleuEvaluator

EVALUATORS: dict[str, type[Evaluator]] = {
    "loss": LossEvaluator,
    "bleu": BleuEvaluator,
    "glue": GlueEvaluator,
}

DEFAULT_EVALS = {"validation": {"type": "loss"}}


def register(type_name: str, evaluator_class: type[Evaluator]) -> None:
    """Makes `{"type": type_name}` in config.evals build evaluator_class."""
    EVALUATORS[type_name] = evaluator_class


def build(config) -> list[Evaluator]:
    """The evaluators config.evals declares: loss-type ones first, then by name (a ConfigDict keeps
    no declaration order). Where two report the same metric the later one's value is logged (GLUE's
    eval_accuracy over its max_examples replaces the loss pass's over the whole split)."""
    evals = config.get("evals", None)
    specs = DEFAULT_EVALS if evals is None else (evals.to_dict() if hasattr(evals, "to_dict") else dict(evals))
    out = []
    for name, spec in sorted(specs.items(), key=lambda kv: (dict(kv[1]).get("type") != "loss", kv[0])):
        spec = dict(spec)
        kind = spec.get("type", None)
        if kind not in EVALUATORS:
            raise ValueError(f"config.evals.{name}.type={kind!r} is not one of {sorted(EVALUATORS)}")
        out.append(EVALUATORS[kind](name, spec, config))
    return out


__all__ = ["Context", "Evaluator", "EVALUATORS", "register", "build"]
