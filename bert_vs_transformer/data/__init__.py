"""Data: tfds builders for the corpora, tokenizers, grain pipelines (see pipelines.py; BERT
pretraining, config.task == "pretraining": pretraining_pipeline.py).

The interface the training loop uses (imports tfds/grain only when called):

    train_iterator(config, *, process_index=None, process_count=None) -> DataIterator
    eval_batches(config, split) -> Iterator[dict[str, np.ndarray]]
    tokenizer(config)
"""

from __future__ import annotations


def train_iterator(config, *, process_index: int | None = None, process_count: int | None = None):
    """This process's infinite, checkpointable stream of training batches (local rows)."""
    from bert_vs_transformer.data import pipelines

    return pipelines.train_iterator(config, process_index=process_index, process_count=process_count)


def eval_batches(config, split: str):
    """Finite, deterministic global eval batches with `example_weights` (0 = padding row)."""
    from bert_vs_transformer.data import pipelines

    return pipelines.eval_batches(config, split)


def tokenizer(config):
    """The task's tokenizer: encode(str) -> ids, decode(ids) -> str, vocab_size, pad_id, eos_id."""
    from bert_vs_transformer.data import pipelines

    return pipelines.tokenizer(config)


def raw_examples(config, split: str):
    """The split's raw examples (text as str) in eval order, e.g. BLEU references."""
    from bert_vs_transformer.data import pipelines

    return pipelines.raw_examples(config, split)


__all__ = ["train_iterator", "eval_batches", "tokenizer", "raw_examples"]
