"""Train state, its sharded initialisation, and the jit-compiled train step.

The step is compiled once with `jax.jit(in_shardings, out_shardings, donate_argnums)`: parameters
and optimizer state sharded by their logical names, batches over data x fsdp.
"""

from __future__ import annotations

from typing import Any, Callable

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from bert_vs_transformer.models import partitioning
from bert_vs_transformer.tasks import Task


@flax.struct.dataclass
class TrainState:
    step: jax.Array
    params: Any
    opt_state: Any


def _init_fn(task: Task, tx: optax.GradientTransformation, batch_size: int, seed: int) -> Callable[[], TrainState]:
    def init():
        batch = task.dummy_batch(batch_size)
        rng = jax.random.PRNGKey(seed)
        params = task.model(deterministic=True).init(rng, *task.init_args(batch))["params"]
        # Boxed params give the optimizer state the same logical names (flax/examples/lm1b).
        return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params))

    return init


def abstract_state(task: Task, tx, batch_size: int, seed: int, mesh: Mesh) -> tuple[TrainState, Any]:
    """(abstract unboxed state, its shardings), without allocating anything."""
    boxed = jax.eval_shape(_init_fn(task, tx, batch_size, seed))
    shardings = partitioning.state_shardings(boxed, mesh)
    abstract = nn.unbox(boxed)
    abstract = jax.tree_util.tree_map(
        lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract, shardings
    )
    return abstract, shardings


def init_state(task: Task, tx, batch_size: int, seed: int, mesh: Mesh) -> tuple[TrainState, Any]:
    """Initialises parameters and optimizer state directly in their shards."""
    _, shardings = abstract_state(task, tx, batch_size, seed, mesh)
    init = _init_fn(task, tx, batch_size, seed)
    with partitioning.activate(mesh):
        state = jax.jit(lambda: nn.unbox(init()), out_shardings=shardings)()
    return state, shardings


def _microbatches(batch, num: int):
    """[B, ...] -> [num, B / num, ...] taking rows i::num, so every microbatch spans all shards."""

    def split(x):
        b = x.shape[0]
        x = x.reshape((b // num, num) + x.shape[1:])
        return jnp.swapaxes(x, 0, 1)

    return jax.tree_util.tree_map(split, batch)


def make_train_step(task: Task, tx, schedule, grad_accum_steps: int = 1):
    """(state, batch, rng[, lr_factor]) -> (state, metrics). With grad_accum_steps = k the batch is
    split into k microbatches whose gradients are summed: the loss normalisers come from the whole
    batch, so the update equals the large batch's exactly (up to float summation order). lr_factor
    scales the update and the logged learning rate (members.py: a unit-peak schedule times each
    member's peak)."""

    def loss_and_grads(params, batch, norms, rng):
        def f(p):
            return task.loss(p, batch, norms, rng, deterministic=False)

        return jax.value_and_grad(f, has_aux=True)(params)

    def step(state: TrainState, batch, rng, lr_factor=None):
        rng = jax.random.fold_in(rng, state.step)
        norms = task.normalizers(batch)
        if grad_accum_steps == 1:
            (loss, sums), grads = loss_and_grads(state.params, batch, norms, rng)
        else:
            micro = _microbatches(batch, grad_accum_steps)

            def body(carry, xs):
                i, mb = xs
                (l, s), g = loss_and_grads(state.params, mb, norms, jax.random.fold_in(rng, i))
                acc_l, acc_s, acc_g = carry
                return (acc_l + l, jax.tree_util.tree_map(jnp.add, acc_s, s),
                        jax.tree_util.tree_map(jnp.add, acc_g, g)), None

            zeros_g = jax.tree_util.tree_map(lambda p: jnp.zeros(p.shape, jnp.float32), state.params)
            first_mb = jax.tree_util.tree_map(lambda x: x[0], micro)
            zeros_s = jax.tree_util.tree_map(
                jnp.zeros_like, jax.eval_shape(lambda: task.loss(state.params, first_mb, norms, rng, False)[1])
            )
            (loss, sums, grads), _ = jax.lax.scan(
                body, (jnp.zeros((), jnp.float32), zeros_s, zeros_g), (jnp.arange(grad_accum_steps), micro)
            )
            grads = jax.tree_util.tree_map(lambda g, p: g.astype(p.dtype), grads, state.params)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        lr = schedule(state.step)
        if lr_factor is not None:
            # Not optax.inject_hyperparams: it would put each member's learning rate in opt_state (another
            # checkpoint tree than a single run's) for what is one multiply of the unit-peak update.
            updates = jax.tree_util.tree_map(lambda u: u * lr_factor.astype(u.dtype), updates)
            lr = lr * lr_factor
        params = optax.apply_updates(state.params, updates)
        metrics = {
            "loss": loss,
            "learning_rate": lr,
            "grad_norm": _global_norm(grads),
            "tokens": task.tokens(batch).astype(jnp.float32),
            **sums,
        }
        return TrainState(step=state.step + 1, params=params, opt_state=opt_state), metrics

    return step


def _global_norm(tree):
    norm = getattr(getattr(optax, "tree", None), "norm", None)  # optax >= 0.2.5
    return norm(tree) if norm is not None else optax.global_norm(tree)


def all_finite(tree) -> jax.Array:
    """One boolean: every element of every leaf is finite."""
    leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree_util.tree_leaves(tree)]
    return jnp.all(jnp.stack(leaves)) if leaves else jnp.array(True)


def compile_train_step(step_fn, state_shardings, mesh: Mesh, donate: bool = True):
    """jax.jit with explicit shardings: state by logical rules, batch over data x fsdp."""
    replicated = NamedSharding(mesh, P())
    jitted = jax.jit(
        step_fn,
        in_shardings=(state_shardings, partitioning.batch_sharding(mesh), replicated),
        out_shardings=(state_shardings, replicated),
        donate_argnums=(0,) if donate else (),
    )

    def run(state, batch, rng):
        with partitioning.activate(mesh):
            return jitted(state, batch, rng)

    run.jitted = jitted
    return run
