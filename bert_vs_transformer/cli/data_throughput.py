"""Input-pipeline throughput: `python -m bert_vs_transformer.cli.data_throughput --config=configs/transformer.py:tiny`.

Builds the training iterator of a config (timing the one-off setup: dataset generation if needed,
tokenizer, tokenizing the split), then draws `--steps` batches after `--warmup` and reports, as
one JSON line: batches/s, examples/s (packed rows count their segments), real tokens/s (non-padding
ids over all sequence features) and the fraction of batch slots holding real tokens. Overrides
work as in main.py (`--config.data.pack=True`, `--config.data.batch_size=256`).
"""

from __future__ import annotations

import json
import time

import numpy as np
from absl import app, flags
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file("config", None, "Training config file (configs/*.py[:arg]).")
flags.DEFINE_integer("steps", 500, "batches to time")
flags.DEFINE_integer("warmup", 20, "batches drawn before timing")
flags.DEFINE_integer("process_count", 1, "simulated processes (this one is process 0)")
FLAGS = flags.FLAGS

_SEQUENCE_KEYS = ("inputs", "targets", "input_ids")


def _count(batch: dict[str, np.ndarray]) -> tuple[int, int, int]:
    """(examples, real tokens, token slots) of a batch."""
    tokens = sum(int(np.count_nonzero(batch[k])) for k in _SEQUENCE_KEYS if k in batch)
    slots = sum(int(batch[k].size) for k in _SEQUENCE_KEYS if k in batch)
    seg = batch.get("inputs_segmentation")
    if seg is not None:
        examples = int(sum(len(np.unique(row[row > 0])) for row in seg))
    else:
        key = next(k for k in _SEQUENCE_KEYS if k in batch)
        examples = int(np.count_nonzero(np.any(batch[key] != 0, axis=1)))
    return examples, tokens, slots


def main(argv):
    del argv
    from bert_vs_transformer import data

    config = _CONFIG.value
    start = time.perf_counter()
    it = data.train_iterator(config, process_index=0, process_count=FLAGS.process_count)
    setup_s = time.perf_counter() - start
    for _ in range(FLAGS.warmup):
        next(it)
    examples = tokens = slots = 0
    shapes: dict[str, int] = {}
    start = time.perf_counter()
    for _ in range(FLAGS.steps):
        batch = next(it)
        e, t, s = _count(batch)
        examples, tokens, slots = examples + e, tokens + t, slots + s
        shape = "x".join(str(d) for d in batch[next(k for k in _SEQUENCE_KEYS if k in batch)].shape)
        shapes[shape] = shapes.get(shape, 0) + 1
    elapsed = time.perf_counter() - start
    print(json.dumps({
        "config": config_flags.get_config_filename(FLAGS["config"]),
        "overrides": {k: repr(v) for k, v in config_flags.get_override_values(FLAGS["config"]).items()},
        "dataset": config.data.dataset,
        "task": config.task,
        "pack": bool(config.data.get("pack", False)),
        "local_batch_size": int(config.data.batch_size) // FLAGS.process_count,
        "steps": FLAGS.steps,
        "setup_s": round(setup_s, 3),
        "batches_per_s": round(FLAGS.steps / elapsed, 1),
        "examples_per_s": round(examples / elapsed, 1),
        "tokens_per_s": round(tokens / elapsed, 1),
        "real_token_fraction": round(tokens / max(slots, 1), 4),
        "shapes": shapes,
    }))


if __name__ == "__main__":
    flags.mark_flag_as_required("config")
    app.run(main)
