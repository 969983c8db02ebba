"""Data: tfds builders for the corpora, tokenizers, grain pipelines, seeded synthetic batches.

The one entry point every layer above uses; it picks the pipeline by `config.task` (PIPELINES)
and serves seeded synthetic batches when `config.data.dataset == "synthetic"`:

    train_iterator(config, *, process_index=None, process_count=None, rows_multiple=None) -> checkpointable iterator
    token_batch_shapes(config, rows_multiple) -> [(rows, width)] of config.data.tokens_per_batch, or None
    eval_batches(config, split) -> Iterator[dict[str, np.ndarray]]   # global, with example_weights
    local_rows(batch) -> this process's rows of a global batch
    tokenizer(config); raw_examples(config, split); save_vocab(config, workdir)

tfds and grain are imported when a real split is first read, so synthetic runs and the
benchmark never load them.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Iterator

import jax
import numpy as np

from bert_vs_transformer.data import (
    lm_pipeline,
    pipelines,
    pretraining_pipeline,
    synthetic,
)


@dataclasses.dataclass(frozen=True)
class Pipeline:
    """How one task's batches are made from a real dataset."""

    train_iterator: Callable[..., Any]  # (config, *, process_index, process_count) -> iterator
    eval_batches: Callable[[Any, str], Iterator[dict[str, np.ndarray]]]
    tokenizer: Callable[[Any], Any]
    raw_examples: Callable[[Any, str], list[dict[str, Any]]] = pipelines.raw_examples
    save_vocab: Callable[[Any, str], str | None] = lambda config, workdir: None


PIPELINES: dict[str, Pipeline] = {}


def register(task: str, pipeline: Pipeline) -> None:
    """Makes `pipeline` the real-data pipeline of config.task == task."""
    PIPELINES[task] = pipeline


register("translation", Pipeline(pipelines.train_iterator, pipelines.eval_batches, pipelines.translation_tokenizer))
register("classification", Pipeline(pipelines.train_iterator, pipelines.eval_batches, pipelines.wordpiece_tokenizer))
register("pretraining", Pipeline(pretraining_pipeline.train_iterator, pretraining_pipeline.eval_batches,
                                 pretraining_pipeline.tokenizer, save_vocab=pretraining_pipeline.save_learned_vocab))
register("lm", Pipeline(lm_pipeline.train_iterator, lm_pipeline.eval_batches, lm_pipeline.tokenizer))


def is_synthetic(config) -> bool:
    return config.data.get("dataset", None) == "synthetic"


def pipeline(config) -> Pipeline:
    """The registered pipeline of config.task."""
    task = config.get("task", None)
    if task not in PIPELINES:
        raise ValueError(f"config.task={task!r} has no data pipeline; registered: {sorted(PIPELINES)}")
    return PIPELINES[task]


def train_iterator(config, *, process_index: int | None = None, process_count: int | None = None,
                   rows_multiple: int | None = None):
    """This process's infinite, checkpointable stream of training batches (local rows). rows_multiple:
    what the rows of config.data.tokens_per_batch's batches must be a multiple of (the training loop
    passes processes x data-parallel shards x grad_accum_steps; default: the process count)."""
    p = jax.process_index() if process_index is None else process_index
    n = jax.process_count() if process_count is None else process_count
    if pipelines.token_budget(config):  # translation only: pipelines.token_batch_shapes says so otherwise
        return pipelines.train_iterator(config, process_index=p, process_count=n, rows_multiple=rows_multiple)
    if is_synthetic(config):
        return synthetic.SyntheticIterator(config, p, n)
    return pipeline(config).train_iterator(config, process_index=p, process_count=n)


def token_batch_shapes(config, rows_multiple: int) -> list[tuple[int, int]] | None:
    """The global [rows, width] shapes of config.data.tokens_per_batch's batches (None when it is 0);
    a ValueError names the field a config gets wrong."""
    return pipelines.token_batch_shapes(config, rows_multiple) if pipelines.token_budget(config) else None


def eval_batches(config, split: str) -> Iterator[dict[str, np.ndarray]]:
    """Finite, deterministic global eval batches with `example_weights` (0 = padding row); every
    process reads the same ones and keeps its rows (local_rows)."""
    if is_synthetic(config):
        return synthetic.eval_batches(config)
    return pipeline(config).eval_batches(config, split)


def local_rows(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """This process's contiguous share of a global batch's rows."""
    n = batch[next(iter(batch))].shape[0] // jax.process_count()
    lo = jax.process_index() * n
    return {k: v[lo: lo + n] for k, v in batch.items()}


def tokenizer(config):
    """The task's tokenizer: encode(str) -> ids, decode(ids) -> str, vocab_size, pad_id, eos_id."""
    return pipeline(config).tokenizer(config)


def raw_examples(config, split: str) -> list[dict[str, Any]]:
    """The split's raw examples (text as str) in eval order, e.g. BLEU references."""
    return pipeline(config).raw_examples(config, split)


def save_vocab(config, workdir: str) -> str | None:
    """A vocabulary the run learned from its data, copied into workdir (None when there is none)."""
    if is_synthetic(config):
        return None
    return pipeline(config).save_vocab(config, workdir)


__all__ = ["Pipeline", "PIPELINES", "register", "pipeline", "train_iterator", "token_batch_shapes", "eval_batches",
           "local_rows",
           "tokenizer", "raw_examples", "save_vocab", "is_synthetic"]
