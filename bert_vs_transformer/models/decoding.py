"""Greedy and beam-search decoding over the cached decoder (`EncoderDecoder(cfg, decode=True)`).

Both searches are batched, jitted (the ModelConfig and the search settings are static) and run
in one `jax.lax.while_loop` that stops as soon as every sentence is done. Defaults follow
Vaswani et al. (2017), Sec. 6.1: beam size 4, length penalty alpha = 0.6 (Wu et al., 2016) and a
maximum output length of input length + 50.

Conventions shared by both:

* The decoder starts from BOS = 0 (the pad id); `eos_id` is given by the caller.
* The source is right-padded with 0; its real tokens are `src != 0`.
* `max_len=None`: every sentence may produce up to *its own* real source length + 50 target
  tokens (EOS included), as in the paper. A sentence's result therefore does not depend on what
  it is batched with. The returned arrays are `src.shape[1] + 50` wide (the longest allowed
  output of any row; a static shape, so one compilation per padded source width).
  `max_len=N`: every sentence may produce up to N tokens; the returned arrays are N wide.
* Output tokens [b, T]: each hypothesis up to and including EOS, then 0s. A hypothesis that
  reaches its length limit without EOS is cut there (no EOS) and, in beam search, competes with
  the EOS-terminated ones as a finished hypothesis of that length.
* Length penalty (GNMT; Vaswani): lp(Y) = ((5 + |Y|) / 6) ** alpha, |Y| counting EOS;
  a hypothesis scores log P(Y | X) / lp(Y).

Beam search keeps `alive` and `finished` beams as in tensor2tensor's beam_search and
flax/examples/wmt/decode.py: each step extends the alive beams and takes the best 2k candidates
by log-probability (enough to leave k that do not end in EOS). Those of the k best (the beam
proper) that end in EOS, or reach the length limit, join the k best finished hypotheses; the k
best candidates not ending in EOS stay alive. (t2t and flax also finish EOS candidates ranked
k+1..2k; like fairseq we do not, which makes beam_size=1 with alpha=0 exactly greedy.)
A sentence is done when it has k finished hypotheses and even the best alive beam, at the most
favourable length penalty (that of the length limit; log-probabilities only fall as a beam
grows), scores no better than the worst finished one; or when it reaches its length limit. Done
sentences are frozen; the loop ends when all are done. This early stop is exact: it never
changes the result (it needs alpha >= 0, so that lp grows with length).
"""

from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from bert_vs_transformer.models import transformer
from bert_vs_transformer.models.model_config import ModelConfig

BOS_ID = 0  # decoder start token (= pad id)
PAD_ID = 0
EXTRA_LENGTH = 50  # Vaswani 6.1: maximum output length = input length + 50
NEG_INF = -jnp.inf


def length_penalty(length: jax.Array | int, alpha: float) -> jax.Array:
    """GNMT length penalty lp(Y) = ((5 + |Y|) / 6) ** alpha (Wu et al. 2016, eq. 14)."""
    return ((5.0 + jnp.asarray(length, jnp.float32)) / 6.0) ** alpha


def greedy_decode(
    cfg: ModelConfig, params: Any, src: jax.Array, *, eos_id: int, max_len: int | None = None,
    return_steps: bool = False,
):
    """Greedy (argmax) decoding.

    Args:
      cfg: the model config (static).
      params: the EncoderDecoder params (boxed or not).
      src: source ids [b, s], right-padded with 0.
      eos_id: end-of-sentence id.
      max_len: maximum target tokens (EOS included) for every row; None = each row's real source
        length + 50 (see the module docstring).
      return_steps: also return the number of decoder steps the while loop ran (a scalar).

    Returns:
      tokens [b, T] int32 (T = max_len, or s + 50), 0 after EOS; plus steps if return_steps.
    """
    src = jnp.asarray(src, jnp.int32)
    total = _output_width(cfg, src, max_len, eos_id)
    max_len = None if max_len is None else int(max_len)
    tokens, steps = _greedy_jit(cfg, nn.unbox(params), src, jnp.int32(eos_id), total=total, max_len=max_len)
    return (tokens, steps) if return_steps else tokens


def beam_search(
    cfg: ModelConfig, params: Any, src: jax.Array, *, eos_id: int, beam_size: int = 4,
    alpha: float = 0.6, max_len: int | None = None, return_steps: bool = False,
):
    """Beam search with the GNMT length penalty (Vaswani defaults: beam 4, alpha 0.6).

    Args as greedy_decode, plus beam_size (k) and alpha (length-penalty exponent, >= 0).

    Returns:
      (tokens [b, T] int32, scores [b] float32): the best finished hypothesis of each sentence
      (0 after EOS) and its score log P(Y | X) / lp(Y); plus steps if return_steps.
    """
    if beam_size < 1:
        raise ValueError(f"beam_size must be >= 1, got {beam_size}")
    if alpha < 0:
        raise ValueError(f"alpha must be >= 0 (the early-stop bound assumes it), got {alpha}")
    src = jnp.asarray(src, jnp.int32)
    total = _output_width(cfg, src, max_len, eos_id)
    tokens, scores, steps = _beam_jit(
        cfg, nn.unbox(params), src, jnp.int32(eos_id), jnp.float32(alpha), beam_size=int(beam_size),
        total=total, max_len=None if max_len is None else int(max_len),
    )
    return (tokens, scores, steps) if return_steps else (tokens, scores)


# ---------------------------------------------------------------------------------------------
# Internals.


def _output_width(cfg: ModelConfig, src: jax.Array, max_len: int | None, eos_id: int) -> int:
    if eos_id == PAD_ID:
        raise ValueError(f"eos_id must differ from the pad/BOS id {PAD_ID}")
    if src.ndim != 2:
        raise ValueError(f"src must be [batch, length], got shape {src.shape}")
    if max_len is not None and max_len < 1:
        raise ValueError(f"max_len must be >= 1, got {max_len}")
    total = int(max_len) if max_len is not None else src.shape[1] + EXTRA_LENGTH
    if cfg.positional == "learned" and total > cfg.max_len:
        raise ValueError(
            f"decoding up to {total} target positions needs a learned position table of that size; "
            f"model.max_len={cfg.max_len}. Pass a smaller max_len."
        )
    return total


def _row_limits(src: jax.Array, total: int, max_len: int | None) -> jax.Array:
    """Per-row maximum number of target tokens [b]."""
    if max_len is not None:
        return jnp.full((src.shape[0],), max_len, jnp.int32)
    real = jnp.sum(src != PAD_ID, axis=1).astype(jnp.int32)
    return jnp.minimum(real + EXTRA_LENGTH, total)


def _setup(cfg: ModelConfig, params, src: jax.Array, copies: int, total: int):
    """Encodes once; returns (step_fn, initial cache) for batch b * copies and `total` positions."""
    memory = transformer.EncoderDecoder(cfg).apply({"params": params}, src, method="encode")
    src_valid = src != PAD_ID
    # A call without a cache creates it: self-attention caches of `total` zero positions, and the
    # cross-attention keys/values of the encoder output, computed here once per source sentence
    # rather than at every step. Its logits are discarded (XLA drops what they alone need).
    bos = jnp.full((src.shape[0], 1), BOS_ID, jnp.int32)
    _, created = _decoder(cfg, total).apply(
        {"params": params}, bos, memory, src_valid, method="decode_logits", mutable=["cache"]
    )
    cache = created["cache"]
    if copies > 1:  # beams: each sentence's rows repeated (cross keys/values included)
        cache = _map_batch(cfg, cache, lambda x, axis: jnp.repeat(x, copies, axis=axis))
        src_valid = jnp.repeat(src_valid, copies, axis=0)
    return functools.partial(_step, cfg, total, params, src_valid), cache


def _decoder(cfg: ModelConfig, total: int) -> transformer.EncoderDecoder:
    return transformer.EncoderDecoder(cfg, decode=True, decode_len=total)


def _step(cfg: ModelConfig, total: int, params, src_valid, cache, ids):
    """ids [n] (the previous tokens) -> (log-probs [n, vocab] fp32, new cache)."""
    logits, mutated = _decoder(cfg, total).apply(
        {"params": params, "cache": cache}, ids[:, None], None, src_valid,
        method="decode_logits", mutable=["cache"],
    )
    return jax.nn.log_softmax(logits[:, 0].astype(jnp.float32), axis=-1), mutated["cache"]


def decode_step_program(cfg: ModelConfig, params, src: jax.Array, copies: int = 1, total: int | None = None):
    """(step_fn, initial cache) of the cached decoder: step_fn(cache, ids [n]) -> (log-probs, cache)
    for n = batch * copies rows (beams)."""
    src = jnp.asarray(src, jnp.int32)
    total = src.shape[1] + EXTRA_LENGTH if total is None else int(total)
    return _setup(cfg, nn.unbox(params), src, copies, total)


def decode_step_cost(cfg: ModelConfig, batch_size: int, src_len: int, beam_size: int = 1) -> dict[str, float]:
    """XLA's cost analysis of one compiled decode step over batch_size * beam_size rows (the model's
    part of a beam-search step), with outputs up to src_len + 50: {'flops', 'bytes accessed'}.
    Abstract: compiles, allocates nothing."""
    total = src_len + EXTRA_LENGTH
    src = jax.ShapeDtypeStruct((batch_size, src_len), jnp.int32)
    params = jax.eval_shape(
        lambda: nn.unbox(transformer.EncoderDecoder(cfg).init(jax.random.PRNGKey(0), jnp.ones(src.shape, jnp.int32),
                                                              jnp.ones((batch_size, 1), jnp.int32))["params"])
    )
    cache = jax.eval_shape(lambda p, s: _setup(cfg, p, s, beam_size, total)[1], params, src)
    n = batch_size * beam_size
    src_valid = jax.ShapeDtypeStruct((n, src_len), jnp.bool_)
    ids = jax.ShapeDtypeStruct((n,), jnp.int32)
    compiled = jax.jit(functools.partial(_step, cfg, total)).lower(params, src_valid, cache, ids).compile()
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    return {k: float(cost.get(k, 0.0)) for k in ("flops", "bytes accessed")}


@functools.partial(jax.jit, static_argnames=("cfg", "total", "max_len"))
def _greedy_jit(cfg, params, src, eos_id, *, total, max_len):
    b = src.shape[0]
    limits = _row_limits(src, total, max_len)
    step, cache = _setup(cfg, params, src, 1, total)

    def cond(state):
        t, _, _, _, done = state
        return (t < total) & ~jnp.all(done)

    def body(state):
        t, cache, tokens, last, done = state
        logp, cache = step(cache, last)
        nxt = jnp.argmax(logp, axis=-1).astype(jnp.int32)
        nxt = jnp.where(done, PAD_ID, nxt)
        tokens = jax.lax.dynamic_update_slice(tokens, nxt[:, None], (0, t))
        done = done | (nxt == eos_id) | (t + 1 >= limits)
        return t + 1, cache, tokens, nxt, done

    init = (
        jnp.array(0, jnp.int32), cache, jnp.zeros((b, total), jnp.int32),
        jnp.full((b,), BOS_ID, jnp.int32), jnp.zeros((b,), bool),
    )
    t, _, tokens, _, _ = jax.lax.while_loop(cond, body, init)
    return tokens, t


# Cross-attention keys/values: the same for every beam of a sentence, so beam reordering, which
# only permutes beams within a sentence, leaves them alone.
_PER_SENTENCE = frozenset({"cross_key", "cross_value"})


def _map_batch(cfg: ModelConfig, cache, fn, skip=frozenset()):
    """fn(x, axis) on every per-sequence cache array along its batch axis (axis 0, or 1 under the
    scanned 'layers' module whose arrays have the layer axis first); counters and `skip` names are
    left alone."""

    def apply(path, x):
        names = [getattr(k, "key", None) for k in path]
        axis = 1 if cfg.scan_layers and "layers" in names else 0
        if x.ndim <= axis or names[-1] in skip:  # 'position' / 'cache_index': shared by all rows
            return x
        return fn(x, axis)

    return jax.tree_util.tree_map_with_path(apply, cache)


def _reorder_cache(cfg: ModelConfig, cache, flat_idx: jax.Array):
    """Gathers the self-attention caches' rows `flat_idx` (the surviving beams' origins)."""
    n = flat_idx.shape[0]

    def gather(x, axis):
        if x.shape[axis] != n:
            raise ValueError(f"cache array {x.shape} has no batch axis {axis} of {n}")
        return jnp.take(x, flat_idx, axis=axis)

    return _map_batch(cfg, cache, gather, skip=_PER_SENTENCE)


def _gather_beams(x: jax.Array, idx: jax.Array) -> jax.Array:
    """x [b, m, ...], idx [b, j] -> [b, j, ...]: per-row selection of beams."""
    return jnp.take_along_axis(x, idx.reshape(idx.shape + (1,) * (x.ndim - 2)), axis=1)


@functools.partial(jax.jit, static_argnames=("cfg", "beam_size", "total", "max_len"))
def _beam_jit(cfg, params, src, eos_id, alpha, *, beam_size, total, max_len):
    b, k = src.shape[0], beam_size
    limits = _row_limits(src, total, max_len)  # [b]
    best_possible_lp = length_penalty(limits, alpha)  # [b]: the largest lp any hypothesis can get
    step, cache = _setup(cfg, params, src, k, total)
    rows = jnp.arange(b, dtype=jnp.int32)[:, None]

    def cond(state):
        return (state["t"] < total) & ~jnp.all(state["done"])

    def body(s):
        t = s["t"]
        last = jnp.where(t == 0, BOS_ID, jax.lax.dynamic_index_in_dim(s["alive_seqs"], jnp.maximum(t - 1, 0), 2, False))
        logp, cache = step(s["cache"], last.reshape(b * k))
        vocab = logp.shape[-1]
        cand = s["alive_logp"][:, :, None] + logp.reshape(b, k, vocab)  # [b, k, V]
        # 2k candidates always leave k that do not end in EOS (when the vocabulary allows).
        top_logp, top_idx = jax.lax.top_k(cand.reshape(b, k * vocab), min(2 * k, k * vocab))
        origin = top_idx // vocab  # [b, 2k]: alive beam each candidate extends
        token = (top_idx % vocab).astype(jnp.int32)
        seqs = _gather_beams(s["alive_seqs"], origin)
        seqs = jax.lax.dynamic_update_slice(seqs, token[:, :, None], (0, 0, t))
        is_eos = token == eos_id
        at_limit = (t + 1 >= limits)[:, None]  # [b, 1]: this step reaches the row's length limit

        # Alive: the k best candidates not ending in EOS.
        alive_logp, pick = jax.lax.top_k(jnp.where(is_eos, NEG_INF, top_logp), k)
        alive_seqs = _gather_beams(seqs, pick)
        alive_origin = jnp.take_along_axis(origin, pick, axis=1)

        # Finished: the k best of the old finished and the candidates that end here: those among
        # the k best of the step (the beam proper) that end in EOS or reach the length limit.
        in_beam = jnp.arange(top_logp.shape[1]) < k
        ends = (is_eos | at_limit) & in_beam & (top_logp > NEG_INF)
        new_scores = jnp.where(ends, top_logp / length_penalty(t + 1, alpha), NEG_INF)
        all_scores = jnp.concatenate([s["fin_scores"], new_scores], axis=1)
        all_seqs = jnp.concatenate([s["fin_seqs"], seqs], axis=1)
        fin_scores, pick = jax.lax.top_k(all_scores, k)
        fin_seqs = _gather_beams(all_seqs, pick)

        # Freeze sentences that were already done.
        was_done = s["done"]
        keep = lambda old, new: jnp.where(was_done.reshape((b,) + (1,) * (new.ndim - 1)), old, new)  # noqa: E731
        alive_logp, alive_seqs = keep(s["alive_logp"], alive_logp), keep(s["alive_seqs"], alive_seqs)
        fin_scores, fin_seqs = keep(s["fin_scores"], fin_scores), keep(s["fin_seqs"], fin_seqs)
        alive_origin = keep(jnp.broadcast_to(jnp.arange(k), (b, k)), alive_origin)
        cache = _reorder_cache(cfg, cache, (rows * k + alive_origin).reshape(b * k))

        # Done: the length limit, or no alive beam can beat the worst of k finished ones.
        bound_met = jnp.max(alive_logp, axis=1) / best_possible_lp <= jnp.min(fin_scores, axis=1)
        done = was_done | at_limit[:, 0] | bound_met
        return dict(t=t + 1, cache=cache, alive_seqs=alive_seqs, alive_logp=alive_logp,
                    fin_seqs=fin_seqs, fin_scores=fin_scores, done=done)

    init = dict(
        t=jnp.array(0, jnp.int32),
        cache=cache,
        alive_seqs=jnp.zeros((b, k, total), jnp.int32),
        # One live beam at the start (the others would only duplicate it).
        alive_logp=jnp.tile(jnp.array([0.0] + [NEG_INF] * (k - 1), jnp.float32), (b, 1)),
        fin_seqs=jnp.zeros((b, k, total), jnp.int32),
        fin_scores=jnp.full((b, k), NEG_INF, jnp.float32),
        done=jnp.zeros((b,), bool),
    )
    final = jax.lax.while_loop(cond, body, init)
    # top_k sorts descending: slot 0 is the best finished hypothesis.
    return final["fin_seqs"][:, 0], final["fin_scores"][:, 0], final["t"]
