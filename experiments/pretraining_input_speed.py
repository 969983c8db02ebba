"""Batches per second of BERT pretraining's input pipeline alone (no model): is it under the step rate?

    BVT_DATA_DIR=../shared/data python -m experiments.pretraining_input_speed            # the small BERT (4/512), batch 256 x 128
    BVT_DATA_DIR=../shared/data python -m experiments.pretraining_input_speed --workers=2

The config is `configs/bert.py:<variant>` with the learned 8k vocabulary, dupe_factor 4 and dynamic
masking, as experiments/results/small_bert_pretraining was pretrained; prints batches/s and tokens/s after a warm-up.
"""

from __future__ import annotations

import time

from absl import app, flags

_VARIANT = flags.DEFINE_string("variant", "small", "configs/bert.py variant")
_BATCH = flags.DEFINE_integer("batch_size", 256, "global batch size")
_SEQ = flags.DEFINE_integer("seq_len", 128, "max_seq_len")
_WORKERS = flags.DEFINE_integer("workers", 0, "config.data.worker_count (grain worker processes)")
_THREADS = flags.DEFINE_integer("threads", 1, "config.data.num_threads")
_BATCHES = flags.DEFINE_integer("batches", 300, "batches timed, after 20 of warm-up")


def main(argv):
    del argv
    from bert_vs_transformer.data import pretraining_pipeline
    from configs import bert

    c = bert.get_config(_VARIANT.value)
    c.data.vocab, c.model.vocab_size = "train:8000", 8000
    c.data.batch_size, c.data.max_seq_len = _BATCH.value, _SEQ.value
    c.data.dupe_factor, c.data.masking = 4, "dynamic"
    c.data.worker_count, c.data.num_threads = _WORKERS.value, _THREADS.value
    it = pretraining_pipeline.train_iterator(c)
    try:
        for _ in range(20):
            next(it)
        start = time.perf_counter()
        for _ in range(_BATCHES.value):
            next(it)
        rate = _BATCHES.value / (time.perf_counter() - start)
    finally:
        it.close()
    print(f"{_VARIANT.value} {_BATCH.value}x{_SEQ.value}, workers={_WORKERS.value}, threads={_THREADS.value}: "
          f"{rate:.1f} batches/s, {rate * _BATCH.value * _SEQ.value:,.0f} tokens/s")


if __name__ == "__main__":
    app.run(main)
