"""Decode a translation split and score it with sacreBLEU (Vaswani 6.1: beam 4, alpha 0.6).

    from bert_vs_transformer.evaluation import translation
    scores = translation.bleu(config, params, "test", beam_size=4)   # Multi30k test_2016_flickr
    scores["bleu"], scores["bleu_signature"], scores["bleu_compound_split"]
    scores = translation.score_texts(config, params, sources, references, beam_size=4)  # any pair of files

How: the split's raw source texts (`data.raw_examples`, file order) are encoded with the run's
SentencePiece tokenizer (over-long sources truncated to `max_source_len` keeping EOS, as the
eval batches are), sorted by length, decoded in batches with `decoding.greedy_decode` or
`decoding.beam_search` (maximum output length = source length + 50), put back in file order,
detokenized (`tokenizer.decode`) and compared with the raw references by `bleu.py`: sacreBLEU on
detokenized text (`bleu`, comparable across papers) and the tokenized / compound-split BLEU older
papers quote, from the same decode.

Where it runs: the parameters (replicated, sharded, or host arrays; boxed or not) are gathered
once onto one device (the first local one) and decoding runs jitted there. Shapes are bucketed
(source widths from `config.data.length_buckets`, batch rows rounded up to a power of two) so a
split compiles a handful of programs. With several processes the work is spread: every process
gathers the parameters (a collective: all must call), decodes every P-th sentence on its first
device, and the outputs are all-gathered, so every process scores the whole split (the same
result on all).

In training, `config.evals.<name> = {type: "bleu", split, beam_size, alpha, max_examples,
batch_size, every_steps}` runs it (BleuEvaluator). A finished run is loaded with
`training.run_loading.load_run`.
"""

from __future__ import annotations

import math
import time
from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import numpy as np
from absl import logging
from jax.experimental import multihost_utils

from bert_vs_transformer import data
from bert_vs_transformer.evaluation import bleu as bleu_metrics
from bert_vs_transformer.evaluation.base import Context, Evaluator
from bert_vs_transformer.models import decoding
from bert_vs_transformer.models.model_config import ModelConfig

Progress = Callable[[int, int, float], None]  # (sentences done, total, seconds elapsed)


# ---------------------------------------------------------------------------------------------
# Parameters and shapes.


def params_on_device(params: Any, device: jax.Device | None = None) -> Any:
    """The parameters (unboxed) committed to one device, gathered from whatever sharding."""
    device = device or jax.local_devices()[0]
    params = nn.unbox(params)
    leaves = jax.tree_util.tree_leaves(params)
    if any(isinstance(x, jax.Array) and not x.is_fully_addressable for x in leaves):
        params = multihost_utils.process_allgather(params, tiled=True)
    return jax.device_put(params, device)


def _source_buckets(config) -> tuple[int, ...]:
    d = config.data
    max_src = int(d.get("max_source_len", None) or d.max_len)
    buckets = sorted({int(b) for b in (d.get("length_buckets", None) or ()) if 0 < int(b) < max_src})
    return tuple(buckets) + (max_src,)


def _width(longest: int, buckets: Sequence[int]) -> int:
    for b in buckets:
        if longest <= b:
            return int(b)
    step = 64  # longer than every bucket (translate.py input): round up to a multiple of 64
    return int(math.ceil(longest / step) * step)


def _rows(n: int, batch_size: int) -> int:
    return min(batch_size, 1 << max(n - 1, 0).bit_length())


def truncate_eos(ids: Sequence[int], max_len: int | None, eos_id: int) -> tuple[np.ndarray, bool]:
    """(ids cut to max_len with EOS kept last, whether it was cut) - as the eval pipeline does."""
    ids = list(ids)
    if max_len is not None and len(ids) > max_len:
        return np.asarray(ids[: max_len - 1] + [eos_id], np.int32), True
    return np.asarray(ids, np.int32), False


# ---------------------------------------------------------------------------------------------
# Decoding.


def decode_ids(
    cfg: ModelConfig, params: Any, sources: Sequence[np.ndarray], *, eos_id: int, beam_size: int | None = None,
    alpha: float = 0.6, batch_size: int = 64, buckets: Sequence[int] = (32, 48, 64, 128),
    progress: Progress | None = None,
) -> list[np.ndarray]:
    """Decodes token-id sources (each EOS-terminated, no padding) -> output ids in the same order,
    each up to and including EOS (or cut at the length limit).

    `params` should already be on one device (`params_on_device`); beam_size None or 0 = greedy.
    Sources are decoded sorted by length, so a batch's rows have similar widths and length limits
    and its while loop stops early; the result is in the order of `sources`.
    """
    n = len(sources)
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    lengths = np.fromiter((len(s) for s in sources), np.int64, n)
    if n and lengths.min() == 0:
        raise ValueError("empty source (it needs at least EOS)")
    order = np.argsort(lengths, kind="stable")
    out: list[np.ndarray | None] = [None] * n
    t0 = time.time()
    done = 0
    for start in range(0, n, batch_size):
        chunk = order[start: start + batch_size]
        width = _width(int(lengths[chunk].max()), buckets)
        rows = _rows(len(chunk), batch_size)
        src = np.zeros((rows, width), np.int32)
        for r in range(rows):  # padding rows repeat the last real row (same length limit)
            s = sources[chunk[min(r, len(chunk) - 1)]]
            src[r, : len(s)] = s
        if beam_size:
            tokens, _ = decoding.beam_search(cfg, params, src, eos_id=eos_id, beam_size=int(beam_size), alpha=alpha)
        else:
            tokens = decoding.greedy_decode(cfg, params, src, eos_id=eos_id)
        tokens = np.asarray(jax.device_get(tokens))
        for r, i in enumerate(chunk):
            row = tokens[r]
            ends = np.flatnonzero(row == eos_id)  # else the row ran to its limit: length + 50
            stop = int(ends[0]) + 1 if ends.size else min(int(lengths[i]) + decoding.EXTRA_LENGTH, row.size)
            out[i] = row[:stop]
        done += len(chunk)
        if progress is not None:
            progress(done, n, time.time() - t0)
    return out  # type: ignore[return-value]


def decode_spread(
    cfg: ModelConfig, params: Any, sources: Sequence[np.ndarray], *, process_index: int | None = None,
    process_count: int | None = None, allgather: Callable[[np.ndarray], np.ndarray] | None = None, **kwargs,
) -> list[np.ndarray]:
    """decode_ids over all processes: process p decodes sources p, p + P, ... on its first device,
    and every process gets all outputs (one all-gather of the padded ids). The same on every process;
    all must call it. kwargs: decode_ids'."""
    p = jax.process_index() if process_index is None else process_index
    count = jax.process_count() if process_count is None else process_count
    if count == 1:
        return decode_ids(cfg, params, sources, **kwargs)
    gather = allgather or (lambda x: np.asarray(multihost_utils.process_allgather(x)))
    mine = decode_ids(cfg, params, sources[p::count], **kwargs)
    width = int(gather(np.array([max((len(o) for o in mine), default=0)], np.int32)).max())
    ids = np.full((-(-len(sources) // count), max(width, 1)), -1, np.int32)  # -1: past the output's end
    for j, o in enumerate(mine):
        ids[j, : len(o)] = o
    every = gather(ids)  # [processes, rows, width]
    return [(row := every[i % count, i // count])[row >= 0] for i in range(len(sources))]


def translate_texts(
    config, params: Any, texts: Sequence[str], *, beam_size: int | None = None, alpha: float = 0.6,
    batch_size: int | None = None, progress: Progress | None = None, tokenizer=None,
) -> tuple[list[str], dict[str, int]]:
    """Source sentences -> (detokenized translations in the same order, stats).

    stats: sentences, truncated (sources longer than max_source_len, cut keeping EOS).
    """
    tok = tokenizer or data.tokenizer(config)
    cfg = ModelConfig.from_config(config)
    d = config.data
    max_src = int(d.get("max_source_len", None) or d.max_len)
    batch_size = int(batch_size or d.get("eval_batch_size", None) or d.batch_size)
    encoded = tok.encode_batch(list(texts)) if texts else []
    sources, truncated = [], 0
    for ids in encoded:
        s, cut = truncate_eos(ids, max_src, tok.eos_id)
        sources.append(s)
        truncated += cut
    if truncated:
        logging.warning("%d of %d sources longer than %d tokens were truncated", truncated, len(texts), max_src)
    outputs = decode_spread(cfg, params_on_device(params), sources, eos_id=tok.eos_id, beam_size=beam_size,
                            alpha=alpha, batch_size=batch_size, buckets=_source_buckets(config), progress=progress)
    return [tok.decode(o) for o in outputs], {"sentences": len(texts), "truncated": truncated}


def logging_progress(every_s: float = 30.0, label: str = "decoding") -> Progress:
    """A progress callback that logs (absl INFO) at most every `every_s` seconds and at the end."""
    last = [0.0]

    def report(done: int, total: int, elapsed: float) -> None:
        if done == total or elapsed - last[0] >= every_s:
            last[0] = elapsed
            rate = done / max(elapsed, 1e-9)
            eta = (total - done) / max(rate, 1e-9)
            logging.info("%s: %d/%d sentences, %.1f sentences/s, ETA %.0f s", label, done, total, rate, eta)

    return report


# ---------------------------------------------------------------------------------------------
# BLEU on a split.


def score_texts(
    config, params: Any, sources: Sequence[str], references: Sequence[str], *, beam_size: int | None = None,
    alpha: float = 0.6, batch_size: int | None = None, progress: Progress | None = None,
    return_translations: bool = False, label: str = "decoding",
) -> dict[str, Any]:
    """Translates `sources` and scores the translations against `references` (line-aligned).

    Returns bleu_metrics.translation_metrics' keys (language: config.data.target_lang) and
    num_examples, truncated_sources, decode_seconds, sentences_per_s, beam_size, alpha
    (+ translations, references if return_translations).
    """
    if len(sources) != len(references):
        raise ValueError(f"{len(sources)} sources but {len(references)} references")
    if not sources:
        raise ValueError("no sentences to translate")
    t0 = time.time()
    hyps, stats = translate_texts(config, params, sources, beam_size=beam_size, alpha=alpha, batch_size=batch_size,
                                  progress=progress or logging_progress(label=label))
    seconds = time.time() - t0
    out = bleu_metrics.translation_metrics(hyps, references, language=str(config.data.target_lang))
    out.update(num_examples=len(sources), truncated_sources=stats["truncated"], decode_seconds=seconds,
               sentences_per_s=len(sources) / max(seconds, 1e-9), beam_size=int(beam_size) if beam_size else 0,
               alpha=float(alpha) if beam_size else None)
    if return_translations:
        out.update(translations=hyps, references=list(references))
    return out


def bleu(
    config, params: Any, split: str, *, beam_size: int | None = None, alpha: float = 0.6,
    max_examples: int | None = None, batch_size: int | None = None, progress: Progress | None = None,
    return_translations: bool = False,
) -> dict[str, Any]:
    """Decodes `split` (its first max_examples examples, file order) and scores it (score_texts).

    beam_size None/0: greedy; an int: beam search with length penalty alpha. batch_size: source
    sentences per decode batch (default config.data.eval_batch_size or batch_size).

    Returns score_texts' keys (bleu, bleu_lowercase, bleu_tokenized, bleu_compound_split, chrf, their
    signatures, ...) and 'split'.
    """
    d = config.data
    examples = data.raw_examples(config, split)
    if max_examples:
        examples = examples[: int(max_examples)]
    if not examples:
        raise ValueError(f"{d.dataset}/{split} has no examples")
    label = f"{d.dataset}/{split} {'beam %d' % beam_size if beam_size else 'greedy'}"
    out = score_texts(config, params, [e[d.source_lang] for e in examples], [e[d.target_lang] for e in examples],
                      beam_size=beam_size, alpha=alpha, batch_size=batch_size, progress=progress,
                      return_translations=return_translations, label=label)
    out["split"] = split
    return out


class BleuEvaluator(Evaluator):
    """sacreBLEU of the decoded split: `eval_bleu` (13a, cased), `eval_bleu_lowercase`,
    `eval_bleu_tokenized`, `eval_bleu_compound_split`, `eval_chrf`, `eval_bleu_brevity_penalty`,
    `eval_decode_sentences_per_s` (the signatures are logged; see bleu.py). Nothing on synthetic data.

    Fields: beam_size (0 = greedy), alpha (length penalty, Sec. 6.1), max_examples (0 = all),
    batch_size (0 = data.eval_batch_size or batch_size)."""

    FIELDS = {"beam_size": 0, "alpha": 0.6, "max_examples": 0, "batch_size": 0}

    def evaluate(self, ctx: Context) -> dict[int, dict[str, float]]:
        return {k: self._one(ctx.configs[k], ctx.member_params(k)) for k in ctx.members}

    def _one(self, config, params) -> dict[str, float]:
        if data.is_synthetic(config):
            return {}
        beam = int(self.opts["beam_size"] or 0)
        res = bleu(config, params, self.split, beam_size=beam or None, alpha=float(self.opts["alpha"]),
                   max_examples=int(self.opts["max_examples"] or 0) or None,
                   batch_size=int(self.opts["batch_size"] or 0) or None)
        if jax.process_index() == 0:
            logging.info("BLEU on %s (%d sentences, %s): %.2f [%s]; lowercase %.2f; tokenized %.2f; compound-split "
                         "%.2f [%s]; chrF %.2f [%s]; %s", self.split, res["num_examples"],
                         f"beam {beam}" if beam else "greedy", res["bleu"], res["bleu_signature"],
                         res["bleu_lowercase"], res["bleu_tokenized"], res["bleu_compound_split"],
                         res["bleu_compound_split_signature"], res["chrf"], res["chrf_signature"], res["bleu_details"])
        return {"eval_bleu": res["bleu"], "eval_bleu_lowercase": res["bleu_lowercase"],
                "eval_bleu_tokenized": res["bleu_tokenized"], "eval_bleu_compound_split": res["bleu_compound_split"],
                "eval_chrf": res["chrf"],
                "eval_bleu_brevity_penalty": res["bleu_brevity_penalty"],
                "eval_decode_sentences_per_s": res["sentences_per_s"]}
