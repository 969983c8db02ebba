"""Dataset tools: `bvt-data inspect` (decoded examples and statistics), `bvt-data throughput` and
`bvt-data batches` (batch shape and padding statistics).

    bvt-data inspect --dataset=multi30k --split=validation [--show=3]
    bvt-data throughput --config=configs/transformer.py:tiny [--steps=500 --warmup=20]
    bvt-data batches --config=configs/transformer.py:tiny --batches=1000   (or bvt-data --config=... --batches=N)

(also `python -m bert_vs_transformer.cli.data SUBCOMMAND ...`.)

inspect: generates the tfds dataset if needed (from $BVT_DATA_DIR, else by download), prints
`--show` examples with their tokens, and as its last line one JSON object: num_examples,
token-length statistics per text field (with the tokenizer the models use: the shared SentencePiece
model for translation datasets, including EOS; uncased WordPiece for the others, without
[CLS]/[SEP]), whitespace-word statistics, labels and the lines the generator skipped. Flags:
--config (take dataset, tokenizer and data dirs from a training config, e.g.
configs/transformer.py:tiny), --vocab_size (SentencePiece pieces, default 8000), --vocab_path
(WordPiece vocab.txt; default BERT's uncased vocab), --tfds_data_dir. Pretraining corpus:
`--masked=N` also prints N masked MLM/NSP instances as the pipeline makes them (train split: the
run's seed and dupe_factor, first epoch's masking; other splits: the eval instances) and adds an
`instances` entry to the JSON line (count, NotNext fraction, lengths, predictions per instance).
Without --config: max_seq_len 128, 20 predictions, static masking.

throughput: builds the training iterator of a config (timing the one-off setup: dataset
generation if needed, tokenizer, tokenizing the split), then draws `--steps` batches after
`--warmup` and prints one JSON line: batches/s, examples/s (packed rows count their segments), real
tokens/s (non-padding ids over all sequence features) and the fraction of batch slots holding real
tokens. Overrides work as in training (`--config.data.pack=True`, `--config.data.batch_size=256`).

batches: draws the first `--batches` GLOBAL training batches of a config (sentence-count, token-budget
with `--config.data.tokens_per_batch=N`, or packed) and prints one JSON line: mean_tokens_per_batch and
max_tokens_per_batch (padded tokens of a batch's larger side, rows x width, as the budget counts them),
padding_fraction (padding slots / all slots, both sides), distinct_shapes, the shapes' counts, mean
examples and real tokens per batch. `--rows_multiple` (default 1) is what token-budget rows are rounded
down to a multiple of; training uses processes x data-parallel shards x grad_accum_steps.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time

import ml_collections
import numpy as np
from absl import flags
from ml_collections import config_flags

from bert_vs_transformer import config_args, data
from bert_vs_transformer.cli import fail, run_absl
from bert_vs_transformer.data import builders, sources
from bert_vs_transformer.data import pretraining_pipeline as pp
from bert_vs_transformer.data import records as data_records

FLAGS = flags.FLAGS
USAGE = "usage: bvt-data {inspect,throughput,batches} [--flags]; bvt-data SUBCOMMAND --helpfull lists the flags"


def _stats(lengths) -> dict:
    x = np.asarray(lengths, np.float64)
    if x.size == 0:
        return {"count": 0}
    num = int if np.all(x == np.round(x)) else (lambda v: round(float(v), 3))
    return {
        "count": int(x.size), "total": num(x.sum()), "min": num(x.min()), "mean": round(float(x.mean()), 3),
        "p50": round(float(np.percentile(x, 50)), 3), "p95": round(float(np.percentile(x, 95)), 3),
        "p99": round(float(np.percentile(x, 99)), 3), "max": num(x.max()),
    }


# ---------------------------------------------------------------------------------------------
# inspect


def define_inspect_flags() -> None:
    flags.DEFINE_string("dataset", None, "dataset name (see bert_vs_transformer.data.builders.REGISTRY)")
    flags.DEFINE_string("split", "train", "split (train, validation / val / dev, test)")
    flags.DEFINE_integer("show", 3, "examples to print")
    flags.DEFINE_string("config", None, "optional training config (path[:arg]) giving dataset and tokenizer")
    flags.DEFINE_integer("vocab_size", 8000, "SentencePiece vocabulary size (translation datasets)")
    flags.DEFINE_string("vocab_path", "", "WordPiece vocab.txt (other datasets); default BERT uncased")
    flags.DEFINE_string("tfds_data_dir", "", "tfds data dir; default $TFDS_DATA_DIR or ~/tensorflow_datasets")
    flags.DEFINE_integer("masked", 0, "pretraining corpus: masked MLM/NSP instances to print (and their statistics)")


def _inspect_config():
    from bert_vs_transformer.data import builders

    if FLAGS.config:
        cfg = config_args.load(FLAGS.config)
        if FLAGS.dataset:
            cfg.data.dataset = FLAGS.dataset
        builders.spec(cfg.data.dataset)
    else:
        if not FLAGS.dataset:
            fail("--dataset is required (or --config)")
        spec = builders.spec(FLAGS.dataset)
        cfg = ml_collections.ConfigDict()
        cfg.seed = 0
        cfg.model = ml_collections.ConfigDict({"vocab_size": FLAGS.vocab_size})
        cfg.data = ml_collections.ConfigDict({"dataset": FLAGS.dataset})
        if spec.kind == "translation":
            cfg.task = "translation"
            cfg.data.source_lang, cfg.data.target_lang = spec.fields[0], spec.fields[1]
        elif spec.kind == "pretraining":
            cfg.task = "pretraining"
            cfg.data.update(vocab=FLAGS.vocab_path, max_seq_len=128, max_predictions_per_seq=20)
        else:
            cfg.task = "classification"
            cfg.data.vocab_path = FLAGS.vocab_path
    if FLAGS.tfds_data_dir:
        cfg.data.tfds_data_dir = FLAGS.tfds_data_dir
    return cfg


def inspect_main(argv):
    """Prints --show decoded examples of a split, then one JSON line of statistics."""
    if len(argv) > 1:
        fail(f"unexpected arguments: {argv[1:]}")
    if FLAGS.show < 0 or FLAGS.masked < 0:
        fail("--show and --masked must be >= 0")
    try:
        cfg = _inspect_config()
        spec = builders.spec(cfg.data.dataset)
        split = builders.canonical_split(FLAGS.split)
        if spec.expected and split not in spec.expected:
            fail(f"dataset {cfg.data.dataset!r} has no split {FLAGS.split!r}; splits: {sorted(spec.expected)}")
        _inspect(cfg, spec, split)
    except (sources.DataError, FileNotFoundError, ValueError) as e:
        fail(e)


def _inspect(cfg, spec, split: str) -> None:

    with contextlib.redirect_stdout(sys.stderr):  # tfds' generation messages: stdout holds examples and JSON
        records = data_records.split_records(cfg, split)
        tok = data.tokenizer(cfg)
    add = {"add_eos": True} if spec.kind == "translation" else {}

    tokens: dict[str, list[int]] = {}
    words: dict[str, list[int]] = {}
    encoded_examples = []
    for field in spec.fields:
        if field == "sentences":  # documents of the pretraining corpus
            sents = [s.decode("utf-8") for r in records for s in r[field]]
            ids = tok.encode_batch(sents, **add)
            tokens["sentence"] = [len(x) for x in ids]
            words["sentence"] = [len(s.split()) for s in sents]
            per_doc, k = [], 0
            for r in records:
                n = len(r[field])
                per_doc.append(sum(tokens["sentence"][k: k + n]))
                k += n
            tokens["document"] = per_doc
            words["document_sentences"] = [len(r[field]) for r in records]
            encoded_examples = [None] * len(records)
            continue
        texts = [r[field].decode("utf-8") for r in records]
        ids = tok.encode_batch(texts, **add)
        tokens[field] = [len(x) for x in ids]
        words[field] = [len(t.split()) for t in texts]
        if not encoded_examples:
            encoded_examples = [{} for _ in records]
        for e, x in zip(encoded_examples, ids):
            e[field] = x

    for i, r in enumerate(records[: FLAGS.show]):
        print(f"--- example {i} (idx {int(r['idx'])})")
        for k, v in r.items():
            if k == "idx":
                continue
            if k == "sentences":
                for j, s in enumerate(v):
                    print(f"  sentence {j}: {s.decode('utf-8')}")
                continue
            text = v.decode("utf-8") if isinstance(v, bytes) else v
            print(f"  {k}: {text}")
            e = encoded_examples[i]
            if e and k in e:
                pieces = [tok.id_to_piece(t) if hasattr(tok, "id_to_piece") else tok.id_to_token(t) for t in e[k]]
                print(f"  {k} tokens ({len(pieces)}): {' '.join(pieces)}")
                print(f"  {k} decoded: {tok.decode(e[k])}")

    summary = {
        "dataset": cfg.data.dataset,
        "tfds_name": spec.tfds_name,
        "split": split,
        "num_examples": len(records),
        "tokenizer": repr(tok),
        "token_lengths": {k: _stats(v) for k, v in tokens.items()},
        "word_lengths": {k: _stats(v) for k, v in words.items()},
    }
    if records and "label" in records[0]:
        labels = [r["label"] for r in records]
        if np.asarray(labels).dtype.kind == "f":
            summary["labels"] = _stats(labels)
        else:
            values, counts = np.unique(np.asarray(labels), return_counts=True)
            summary["labels"] = {str(int(v)): int(c) for v, c in zip(values, counts)}
    if records and "source" in records[0]:
        values, counts = np.unique([r["source"].decode() for r in records], return_counts=True)
        summary["sources"] = {str(v): int(c) for v, c in zip(values, counts)}
    if FLAGS.masked and spec.kind == "pretraining":
        summary["instances"] = _show_instances(cfg, split, tok, FLAGS.masked)
    b = builders.builder(cfg.data.dataset, cfg.data.get("tfds_data_dir", None) or None)
    meta = dict(b.info.metadata or {})
    summary["read_stats"] = {k.split("/", 2)[2]: v for k, v in meta.items() if k.startswith(f"read_stats/{split}/")}
    sys.stdout.flush()
    print(json.dumps(summary, sort_keys=False))


def _show_instances(cfg, split: str, tok, show: int) -> dict:
    """Prints `show` masked instances of `split` as the pretraining pipeline makes them."""

    d = cfg.data
    train = split == "train"
    seed = data_records.seed(cfg) if train else pp.eval_seed(cfg)
    with contextlib.redirect_stdout(sys.stderr):
        source, key = pp.instances(cfg, split, seed=seed, dupe_factor=int(d.get("dupe_factor", 1)) if train else 1,
                                   shuffle=train)
    masker = pp.masker(cfg, tok)
    for i in range(min(show, len(source))):
        ex = masker.for_epoch(source[i], seed, 0, i)
        n = int(ex["attention_mask"].sum())
        w = ex["masked_lm_weights"] > 0
        label = "NotNext" if int(ex["next_sentence_labels"]) else "IsNext"
        print(f"--- instance {i} ({label}, {n} tokens, {int(w.sum())} predictions)")
        print("  input: " + " ".join(tok.id_to_token(t) for t in ex["input_ids"][:n]))
        print("  targets: " + ", ".join(f"{int(p)}:{tok.id_to_token(t)}" for p, t in
                                        zip(ex["masked_lm_positions"][w], ex["masked_lm_ids"][w])))
    lengths = np.diff(source.offsets)
    cand = lengths - 3
    preds = np.minimum(int(d.max_predictions_per_seq),
                       np.maximum(1, np.round(cand * float(d.get("masked_lm_prob", 0.15))))).astype(int)
    return {"cache_key": key, "seed": seed, "num_instances": len(source),
            "not_next": round(float(np.mean(source.is_random_next)), 4), "tokens": _stats(lengths),
            "predictions": _stats(preds), "max_seq_len": int(d.max_seq_len),
            "options": pp.instance_options(cfg, seed=seed, dupe_factor=int(d.get("dupe_factor", 1)) if train else 1,
                                           shuffle=train)}


# ---------------------------------------------------------------------------------------------
# throughput

_SEQUENCE_KEYS = ("inputs", "targets", "input_ids")


def define_throughput_flags() -> None:
    config_flags.DEFINE_config_file("config", None, "Training config file (configs/*.py[:arg]).")
    flags.DEFINE_integer("steps", 500, "batches to time")
    flags.DEFINE_integer("warmup", 20, "batches drawn before timing")
    flags.DEFINE_integer("process_count", 1, "simulated processes (this one is process 0)")
    flags.mark_flag_as_required("config")


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


def throughput_main(argv):
    """Times the config's training iterator; prints one JSON line."""

    if len(argv) > 1:
        fail(f"unexpected arguments: {argv[1:]}")
    if FLAGS.steps < 1 or FLAGS.warmup < 0 or FLAGS.process_count < 1:
        fail("--steps and --process_count must be >= 1, --warmup >= 0")
    try:
        config = FLAGS.config
        config.data  # noqa: B018 - a config file that failed to load raises here
    except OSError as e:
        fail(e)
    start = time.perf_counter()
    try:
        with contextlib.redirect_stdout(sys.stderr):  # tfds' generation messages: stdout holds one JSON line
            it = data.train_iterator(config, process_index=0, process_count=FLAGS.process_count)
    except (sources.DataError, FileNotFoundError, ValueError) as e:
        fail(e)
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
        "tokens_per_batch": int(config.data.get("tokens_per_batch", 0) or 0),  # > 0: local_batch_size is unused
        "steps": FLAGS.steps,
        "setup_s": round(setup_s, 3),
        "batches_per_s": round(FLAGS.steps / elapsed, 1),
        "examples_per_s": round(examples / elapsed, 1),
        "tokens_per_s": round(tokens / elapsed, 1),
        "real_token_fraction": round(tokens / max(slots, 1), 4),
        "shapes": shapes,
    }), flush=True)


# ---------------------------------------------------------------------------------------------
# batches


def define_batches_flags() -> None:
    config_flags.DEFINE_config_file("config", None, "Training config file (configs/*.py[:arg]).")
    flags.DEFINE_integer("batches", 1000, "global training batches to draw")
    flags.DEFINE_integer("rows_multiple", 1, "token budgets: rows are rounded down to a multiple of this")
    flags.mark_flag_as_required("config")


def batches_main(argv):
    """Prints one JSON line of padded-token, padding and shape statistics over --batches global batches."""
    if len(argv) > 1:
        fail(f"unexpected arguments: {argv[1:]}")
    if FLAGS.batches < 1 or FLAGS.rows_multiple < 1:
        fail("--batches and --rows_multiple must be >= 1")
    try:
        config = FLAGS.config
        config.data  # noqa: B018 - a config file that failed to load raises here
    except OSError as e:
        fail(e)
    try:
        with contextlib.redirect_stdout(sys.stderr):
            it = data.train_iterator(config, process_index=0, process_count=1, rows_multiple=FLAGS.rows_multiple)
    except (sources.DataError, FileNotFoundError, ValueError) as e:
        fail(e)
    padded, examples, tokens, slots = [], 0, 0, 0
    shapes: dict[str, int] = {}
    for _ in range(FLAGS.batches):
        batch = next(it)
        sides = [batch[k] for k in _SEQUENCE_KEYS if k in batch]
        padded.append(max(x.size for x in sides))
        e, t, s = _count(batch)
        examples, tokens, slots = examples + e, tokens + t, slots + s
        shape = " ".join("x".join(str(d) for d in x.shape) for x in sides)
        shapes[shape] = shapes.get(shape, 0) + 1
    if hasattr(it, "close"):
        it.close()
    n = FLAGS.batches
    print(json.dumps({
        "config": config_flags.get_config_filename(FLAGS["config"]),
        "overrides": {k: repr(v) for k, v in config_flags.get_override_values(FLAGS["config"]).items()},
        "dataset": config.data.dataset,
        "mode": ("tokens_per_batch" if int(config.data.get("tokens_per_batch", 0) or 0)
                 else "pack" if bool(config.data.get("pack", False)) else "batch_size"),
        "batches": n,
        "mean_tokens_per_batch": round(float(np.mean(padded)), 1),
        "max_tokens_per_batch": int(max(padded)),
        "padding_fraction": round(1 - tokens / max(slots, 1), 4),
        "distinct_shapes": len(shapes),
        "shapes": shapes,
        "mean_examples_per_batch": round(examples / n, 1),
        "mean_real_tokens_per_batch": round(tokens / n, 1),
    }), flush=True)


# ---------------------------------------------------------------------------------------------
# Command line.

SUBCOMMANDS = {
    "inspect": (define_inspect_flags, inspect_main),
    "throughput": (define_throughput_flags, throughput_main),
    "batches": (define_batches_flags, batches_main),
}


def run(argv=None):
    """Console-script entry point (bvt-data): dispatches on the subcommand in argv[1]."""
    argv = list(sys.argv if argv is None else argv)
    if len(argv) > 1 and argv[1].startswith("--") and any(a.split("=")[0] == "--batches" for a in argv[1:]):
        argv.insert(1, "batches")  # bvt-data --config=... --batches=N
    name = argv[1] if len(argv) > 1 else None
    if name in ("-h", "--help", "help"):
        print(__doc__ + "\n" + USAGE)
        sys.exit(0)
    if name not in SUBCOMMANDS:
        what = "missing subcommand" if name is None else f"unknown subcommand {name!r}"
        print(f"error: {what}; valid: {', '.join(SUBCOMMANDS)} ({USAGE})", file=sys.stderr)
        sys.exit(2)
    define, main = SUBCOMMANDS[name]
    define()
    prog = os.path.basename(argv[0])
    run_absl(main, [f"{prog} {name}", *argv[2:]])


if __name__ == "__main__":
    run()
