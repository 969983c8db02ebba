"""Optimisers and learning-rate schedules of both papers (optax)."""

from __future__ import annotations

from typing import Any, Mapping

import jax
import jax.numpy as jnp
import optax


def rsqrt_schedule(d_model: int, warmup_steps: int, scale: float = 1.0) -> optax.Schedule:
    """Vaswani 5.3: lr = d_model^-0.5 * min(step^-0.5, step * warmup^-1.5) (step counted from 1)."""

    def schedule(count):
        step = jnp.asarray(count, jnp.float32) + 1.0
        return scale * d_model**-0.5 * jnp.minimum(step**-0.5, step * warmup_steps**-1.5)

    return schedule


def warmup_linear_decay(peak: float, warmup_steps: int, total_steps: int) -> optax.Schedule:
    """BERT A.2: linear warmup to `peak` over warmup_steps, then linear decay to 0 at total_steps."""
    return optax.join_schedules(
        [
            optax.linear_schedule(0.0, peak, max(warmup_steps, 1)),
            optax.linear_schedule(peak, 0.0, max(total_steps - warmup_steps, 1)),
        ],
        [warmup_steps],
    )


def decay_mask(params: Any) -> Any:
    """True for weights that get weight decay: not LayerNorm parameters, not biases (BERT A.2)."""

    def keep(path, _):
        names = [getattr(k, "key", getattr(k, "name", str(k))) for k in path]
        leaf = names[-1]
        in_norm = any("norm" in str(n) for n in names[:-1])
        return not (leaf in ("bias", "output_bias", "scale") or in_norm)

    return jax.tree_util.tree_map_with_path(keep, params)


def make_schedule(opt: Mapping[str, Any], d_model: int, num_train_steps: int) -> optax.Schedule:
    name = opt["schedule"]
    if name == "rsqrt":
        return rsqrt_schedule(d_model, opt["warmup_steps"], opt.get("lr_scale", 1.0))
    if name == "warmup_linear_decay":
        return warmup_linear_decay(opt["learning_rate"], opt["warmup_steps"], num_train_steps)
    if name == "constant":
        return optax.constant_schedule(opt["learning_rate"])
    raise ValueError(f"config.optimizer.schedule={name!r} is not one of rsqrt, warmup_linear_decay, constant")


def make_optimizer(opt: Mapping[str, Any], d_model: int, num_train_steps: int) -> tuple[optax.GradientTransformation, optax.Schedule]:
    """config.optimizer -> (optax transformation, schedule). Adam (Vaswani) or AdamW (BERT)."""
    schedule = make_schedule(opt, d_model, num_train_steps)
    mu_dtype = jnp.dtype(opt["moments_dtype"]) if opt.get("moments_dtype") else None
    name = opt["name"]
    if name == "adam":
        tx = optax.adam(schedule, b1=opt["b1"], b2=opt["b2"], eps=opt["eps"], mu_dtype=mu_dtype)
    elif name == "adamw":
        tx = optax.adamw(
            schedule, b1=opt["b1"], b2=opt["b2"], eps=opt["eps"], weight_decay=opt["weight_decay"],
            mask=decay_mask, mu_dtype=mu_dtype,
        )
    else:
        raise ValueError(f"config.optimizer.name={name!r} is not one of adam, adamw")
    clip = opt.get("grad_clip_norm", 0.0)
    if clip and clip > 0:
        tx = optax.chain(optax.clip_by_global_norm(clip), tx)
    return tx, schedule
