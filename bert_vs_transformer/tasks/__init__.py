"""Training objectives: each task builds its model and computes loss sums over a (micro)batch.

A task provides `model(deterministic)`, `dummy_batch(batch_size)`, `normalizers(batch)` (computed
on the full batch so gradient accumulation over microbatches equals the large batch exactly) and
`loss(params, batch, normalizers, rng, deterministic) -> (loss, metric_sums)`.
"""

from __future__ import annotations

from bert_vs_transformer.tasks.base import Task
from bert_vs_transformer.tasks.classification import ClassificationTask
from bert_vs_transformer.tasks.lm import LMTask
from bert_vs_transformer.tasks.pretraining import PretrainingTask
from bert_vs_transformer.tasks.translation import TranslationTask

TASKS = {
    "translation": TranslationTask,
    "pretraining": PretrainingTask,
    "classification": ClassificationTask,
    "lm": LMTask,
}


# A config without `task` (benchmark inputs) trains its model family's pretraining objective.
TASK_OF_FAMILY = {"transformer": "translation", "bert": "pretraining"}


def task_name(config) -> str:
    """config.task, else the task of config.model_family."""
    name = config.get("task", None)
    if name:
        return name
    family = config.get("model_family", None)
    if family not in TASK_OF_FAMILY:
        raise ValueError(f"config has no 'task' and model_family={family!r} is not one of {sorted(TASK_OF_FAMILY)}")
    return TASK_OF_FAMILY[family]


def register(name: str, task_class: type[Task]) -> None:
    """Makes config.task == name build task_class(config)."""
    TASKS[name] = task_class


def get_task(config) -> Task:
    """The task named by config.task (one of TASKS)."""
    name = config.get("task", None)
    if name not in TASKS:
        raise ValueError(f"config.task={name!r} is not one of {sorted(TASKS)}")
    return TASKS[name](config)
