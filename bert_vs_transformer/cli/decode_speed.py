"""`bvt-benchmark --decode`: beam-search speed on synthetic sources, and one decode step's FLOPs.

Sources are random ids of exactly `seq_len` tokens (no padding). Randomly initialised weights
rarely emit EOS, so every sentence runs to its length limit (source + 50, Vaswani 6.1): the worst
case, and the same work for every build compared. `decode_steps` says how many steps ran.
"""

from __future__ import annotations

import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from bert_vs_transformer.models import decoding, transformer
from bert_vs_transformer.models.model_config import ModelConfig

EOS_ID = 1  # any id but the pad/BOS id 0


def decode_record(config, batch_size: int, seq_len: int, beam_size: int = 4, alpha: float = 0.6,
                  repeats: int = 3) -> dict[str, Any]:
    """Times `repeats` beam searches (after one that compiles) -> one record; repeats=0 gives the
    decode step's cost alone (no weights, no search)."""
    if config.get("model_family", None) != "transformer":
        raise ValueError("--decode needs an encoder-decoder config (configs/transformer.py)")
    if repeats < 0:
        raise ValueError(f"--steps must be 0 (the step's cost only) or more, got {repeats}")
    cfg = ModelConfig.from_config(config)
    cost = decoding.decode_step_cost(cfg, batch_size, seq_len, beam_size)
    timing = _time_searches(config, cfg, batch_size, seq_len, beam_size, alpha, repeats) if repeats else {}
    device = jax.devices()[0]
    return {
        "mode": "decode",
        "variant": config.get("variant", None),
        "batch_size": batch_size,
        "src_len": seq_len,
        "beam_size": beam_size,
        "alpha": alpha,
        "repeats": repeats,
        "decode_steps": timing.get("steps"),
        "search_time_s": timing.get("search_time_s"),
        "sentences_per_s": timing.get("sentences_per_s"),
        "decode_step_gflops": cost["flops"] / 1e9,  # one cached step, all batch_size x beam_size rows
        "decode_step_gb_accessed": cost["bytes accessed"] / 1e9,
        "compile_and_first_search_s": timing.get("compile_and_first_search_s"),
        "compute_dtype": cfg.dtype,
        "device_kind": device.device_kind,
        "platform": device.platform,
        "jax_version": jax.__version__,
        "config": config.to_dict(),
    }


def _time_searches(config, cfg: ModelConfig, batch_size, seq_len, beam_size, alpha, repeats) -> dict[str, Any]:
    """Random weights and sources; one search compiles, `repeats` more are timed."""
    rng = np.random.default_rng(config.seed)
    src = jnp.asarray(rng.integers(EOS_ID + 1, cfg.vocab_size, size=(batch_size, seq_len), dtype=np.int32))
    params = jax.jit(lambda: transformer.EncoderDecoder(cfg).init(
        jax.random.PRNGKey(config.seed), src[:1], src[:1, :1])["params"])()

    def search():
        out = decoding.beam_search(cfg, params, src, eos_id=EOS_ID, beam_size=beam_size, alpha=alpha,
                                   return_steps=True)
        return jax.block_until_ready(out)

    t0 = time.perf_counter()
    _, _, steps = search()
    t1 = time.perf_counter()
    for _ in range(repeats):
        search()
    t2 = time.perf_counter()
    per_search = (t2 - t1) / repeats
    return {"steps": int(steps), "search_time_s": per_search, "sentences_per_s": batch_size / per_search,
            "compile_and_first_search_s": t1 - t0}
