"""Translate text with a trained run, or score a split with sacreBLEU.

    python -m bert_vs_transformer.cli.translate --workdir=DIR [--input=FILE] [--output=FILE]
        [--beam_size=4 --alpha=0.6 --batch_size=64 --checkpoint_step=N]
    python -m bert_vs_transformer.cli.translate --workdir=DIR --evaluate_split=test [--max_examples=N]
    python -m bert_vs_transformer.cli.translate --workdir=DIR --evaluate_files=SRC,REF

The first form reads one source sentence per line (stdin without --input) and writes one
detokenized translation per line, in input order (stdout without --output); empty lines stay
empty. Progress (sentences/s) goes to stderr. The second decodes the split's sources, scores them
against the raw references and prints one JSON object: bleu (sacreBLEU 13a, cased),
bleu_lowercase, bleu_tokenized, bleu_compound_split, chrf, their signatures, num_examples, step,
... (as bvt-score; with --output, the translations are written there too). Multi30k's splits:
validation, test (= test_2016_flickr), test_2017_flickr, test_2017_mscoco, test_2018_flickr. The
third scores any pair of line-aligned files the same way. --beam_size=0 decodes greedily.

DIR is a training workdir (or one written by `average_checkpoints`): the model comes from the
config stored with the checkpoint (else DIR/config.json), the parameters from the latest
checkpoint (or --checkpoint_step) - only the parameters are read, not the optimizer state - and
the tokenizer is the run's SentencePiece model (found in its cache, or retrained identically from
the training split, which needs the dataset: $BVT_DATA_DIR / $TFDS_DATA_DIR as for training).
"""

from __future__ import annotations

import json
import os
import sys
import time

from absl import app, flags, logging

from bert_vs_transformer import data
from bert_vs_transformer.cli import fail, run_absl
from bert_vs_transformer.data import sources, storage
from bert_vs_transformer.evaluation import translation as translation_eval
from bert_vs_transformer.training import run_loading

FLAGS = flags.FLAGS


def define_flags() -> None:
    """The command's flags (defined when it runs, so importing the module defines none)."""
    flags.DEFINE_string("workdir", None, "Run directory (holds checkpoints/ and config.json).")
    flags.DEFINE_string("input", None, "Source sentences, one per line (default: stdin).")
    flags.DEFINE_string("output", None, "Translations, one per line (default: stdout).")
    flags.DEFINE_integer("beam_size", 4, "Beam size (Vaswani 6.1: 4); 0 = greedy.")
    flags.DEFINE_float("alpha", 0.6, "Length penalty exponent (Vaswani 6.1: 0.6).")
    flags.DEFINE_integer("batch_size", 64, "Source sentences per decode batch.")
    flags.DEFINE_integer("checkpoint_step", None, "Checkpoint step to load (default: the latest).")
    flags.DEFINE_string("evaluate_split", None, "Score this split with sacreBLEU (e.g. test, validation, "
                        "test_2017_flickr).")
    flags.DEFINE_string("evaluate_files", None, "SRC,REF: translate file SRC and score it against file REF "
                        "(line-aligned, UTF-8).")
    flags.DEFINE_integer("max_examples", None, "With --evaluate_split/--evaluate_files: only the first N examples.")
    flags.DEFINE_string("tfds_data_dir", None, "Override config.data.tfds_data_dir.")
    flags.DEFINE_string("cache_dir", None, "Override config.data.cache_dir (tokenizer cache).")


# ---------------------------------------------------------------------------------------------
# Command line.


class _StderrProgress:
    def __init__(self, every_s: float = 5.0):
        self.every_s, self.last = every_s, 0.0

    def __call__(self, done: int, total: int, elapsed: float) -> None:
        if done == total or elapsed - self.last >= self.every_s:
            self.last = elapsed
            rate = done / max(elapsed, 1e-9)
            print(f"translated {done}/{total} sentences, {rate:.1f} sentences/s, {elapsed:.1f} s",
                  file=sys.stderr, flush=True)


def _read_lines(path: str | None, flag: str = "input") -> list[str]:
    """The source sentences of `path` (stdin if None), strictly UTF-8; bad input exits with one line."""
    name = "<stdin>" if path is None else path
    try:
        if path is None:
            raw = sys.stdin.buffer.read()
        else:
            with open(path, "rb") as f:
                raw = f.read()
    except OSError as e:
        fail(f"--{flag}={path}: {e.strerror}; pass a readable text file, one sentence per line")
    if not raw:
        fail(f"{name} is empty: nothing to translate; pass a text file, one sentence per line")
    return sources.decode_lines(raw, name)


def _evaluation_files(value: str) -> tuple[str, str, list[str], list[str]]:
    """--evaluate_files=SRC,REF -> (SRC, REF, their lines); bad input exits with one line."""
    paths = value.split(",")
    if len(paths) != 2 or not all(paths):
        raise app.UsageError(f"--evaluate_files={value}: expected SRC,REF (two files, comma-separated)")
    src, ref = _read_lines(paths[0], "evaluate_files"), _read_lines(paths[1], "evaluate_files")
    if len(src) != len(ref):
        fail(f"--evaluate_files: {paths[0]} has {len(src)} lines but {paths[1]} has {len(ref)}; "
             "they must be line-aligned")
    return paths[0], paths[1], src, ref


def _write_lines(path: str | None, lines: list[str]) -> None:
    text = "".join(line.replace("\n", " ") + "\n" for line in lines)
    if path is None:
        sys.stdout.write(text)
        sys.stdout.flush()
    else:
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)


def _print_scores(res: dict, step: int, config, **fields) -> None:
    """Writes the translations (--output) and prints the scores as one JSON line."""
    if FLAGS.output:
        _write_lines(FLAGS.output, res.pop("translations"))
        res.pop("references")
    res.update(workdir=str(storage.as_path(FLAGS.workdir)), step=step, **fields, source_lang=config.data.source_lang,
               target_lang=config.data.target_lang)
    print(json.dumps(res), flush=True)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    if not flags.FLAGS["verbosity"].present:
        logging.set_verbosity(logging.ERROR)  # orbax's INFO/WARNING lines would drown the output
    if FLAGS.workdir is None:
        raise app.UsageError("--workdir is required")
    if FLAGS.beam_size < 0 or FLAGS.batch_size < 1:
        raise app.UsageError("--beam_size must be >= 0 and --batch_size >= 1")

    if FLAGS.evaluate_split and FLAGS.evaluate_files:
        raise app.UsageError("pass --evaluate_split or --evaluate_files, not both")
    pair = _evaluation_files(FLAGS.evaluate_files) if FLAGS.evaluate_files else None
    lines = None if (FLAGS.evaluate_split or pair) else _read_lines(FLAGS.input)
    t0 = time.time()
    try:
        config, params, step = run_loading.load_run(FLAGS.workdir, FLAGS.checkpoint_step)
    except (FileNotFoundError, run_loading.UnreadableCheckpointError) as e:
        fail(e)
    with config.unlocked():
        if FLAGS.tfds_data_dir is not None:
            config.data.tfds_data_dir = FLAGS.tfds_data_dir
        if FLAGS.cache_dir is not None:
            config.data.cache_dir = FLAGS.cache_dir
    if config.get("task") != "translation":
        fail(f"{FLAGS.workdir} holds a {config.get('task')!r} run, not translation; pass a translation run's workdir")
    if data.is_synthetic(config):
        fail(f"{FLAGS.workdir} was trained on synthetic data: it has no tokenizer to translate text with")
    print(f"loaded {FLAGS.workdir} step {step} in {time.time() - t0:.1f} s", file=sys.stderr, flush=True)
    beam = FLAGS.beam_size or None

    if FLAGS.evaluate_split:
        try:
            res = translation_eval.bleu(config, params, FLAGS.evaluate_split, beam_size=beam, alpha=FLAGS.alpha,
                                        max_examples=FLAGS.max_examples, batch_size=FLAGS.batch_size,
                                        progress=_StderrProgress(), return_translations=bool(FLAGS.output))
        except (sources.DataError, FileNotFoundError, ValueError) as e:
            fail(f"cannot read {config.data.dataset}/{FLAGS.evaluate_split}: {e}", e)
        _print_scores(res, step, config, dataset=config.data.dataset)
        return
    if pair:
        src_path, ref_path, src, ref = pair
        n = FLAGS.max_examples or len(src)
        try:
            res = translation_eval.score_texts(config, params, src[:n], ref[:n], beam_size=beam, alpha=FLAGS.alpha,
                                               batch_size=FLAGS.batch_size, progress=_StderrProgress(),
                                               return_translations=bool(FLAGS.output))
        except (sources.DataError, FileNotFoundError, ValueError) as e:
            fail(f"cannot build the tokenizer of {FLAGS.workdir}: {e}", e)
        _print_scores(res, step, config, source_file=os.path.abspath(src_path), reference_file=os.path.abspath(ref_path))
        return

    try:
        tokenizer = data.tokenizer(config)
    except (sources.DataError, FileNotFoundError, ValueError) as e:
        fail(f"cannot build the tokenizer of {FLAGS.workdir}: {e}", e)
    keep = [i for i, line in enumerate(lines) if line.strip()]
    t1 = time.time()
    hyps, stats = translation_eval.translate_texts(config, params, [lines[i] for i in keep], beam_size=beam,
                                                   alpha=FLAGS.alpha, batch_size=FLAGS.batch_size,
                                                   progress=_StderrProgress(), tokenizer=tokenizer)
    out = [""] * len(lines)
    for i, h in zip(keep, hyps):
        out[i] = h
    _write_lines(FLAGS.output, out)
    seconds = time.time() - t1
    print(f"translated {len(keep)} sentences ({len(lines) - len(keep)} empty lines, {stats['truncated']} "
          f"truncated) in {seconds:.1f} s: {len(keep) / max(seconds, 1e-9):.1f} sentences/s "
          f"({'beam %d, alpha %g' % (beam, FLAGS.alpha) if beam else 'greedy'})", file=sys.stderr, flush=True)


def run():
    """Console-script entry point (bvt-translate)."""
    define_flags()
    run_absl(main)


if __name__ == "__main__":
    run()
