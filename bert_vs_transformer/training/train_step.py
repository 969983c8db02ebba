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


def _microbatches(batch, num: int, shards: int = 1):
    """[B, ...] -> [num, shards, B / (num * shards), ...]: microbatch i is rows i::num, and its
    shard d is the rows of batch shard d (B / shards contiguous rows), so the split moves no data."""

    def split(x):
        b = x.shape[0]
        if b % (shards * num):
            raise ValueError(f"batch size {b} is not divisible by {num} microbatches x {shards} "
                             "data-parallel shards")
        x = x.reshape((shards, b // (shards * num), num) + x.shape[1:])
        return jnp.moveaxis(x, 2, 0)

    return jax.tree_util.tree_map(split, batch)


_DP = ("data", "fsdp")


def _is_spec(x) -> bool:
    return isinstance(x, P)


def _data_parallel_size() -> int | None:
    """data x fsdp of the mesh active at trace time (partitioning.activate); None without one."""
    get = getattr(jax.sharding, "get_abstract_mesh", None)
    mesh = get() if get is not None else None
    if mesh is None or mesh.empty or not set(_DP) <= set(mesh.axis_names):
        return None
    return mesh.shape["data"] * mesh.shape["fsdp"]


def _param_specs(task: Task, params, rules):
    """The parameters' mesh PartitionSpecs under logical `rules`, as a tree like `params`."""
    boxed = jax.eval_shape(
        lambda: task.model(deterministic=True).init(jax.random.PRNGKey(0), *task.init_args(task.dummy_batch(1)))
    )["params"]
    specs = jax.tree_util.tree_map(lambda s: nn.logical_to_mesh_axes(s, rules), nn.get_partition_spec(boxed),
                                   is_leaf=_is_spec)
    return jax.tree_util.tree_map(lambda _, s: s, params, specs, is_leaf=_is_spec)


def _without_dp(spec) -> tuple:
    """`spec`'s entries with the data-parallel mesh axes dropped."""

    def drop(entry):
        axes = entry if isinstance(entry, tuple) else (entry,)
        kept = tuple(a for a in axes if a is not None and a not in _DP)
        return kept[0] if len(kept) == 1 else (kept or None)

    return tuple(drop(e) for e in spec)


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

    def accumulate(params, batch, norms, rng):
        """(loss, sums, fp32 grads) over k microbatches: each data-parallel shard sums its own gradients,
        reduced over data x fsdp once after the loop, not once per microbatch (the SPMD partitioner's way)."""
        # Trade-off: under fsdp every device holds a full-size fp32 gradient accumulator (not a 1/fsdp
        # shard): memory spent for k times less gradient traffic.
        dp = _data_parallel_size()
        if dp is None:  # no mesh: one device, nothing to reduce
            dp, spmd_axis, constrain, shard_rules = 1, None, lambda x, _: x, None
            specs = local = params  # placeholders: this `constrain` ignores its second argument
        else:
            rules = nn.get_logical_axis_rules()
            spmd_axis, constrain = _DP, jax.lax.with_sharding_constraint
            specs = _param_specs(task, params, rules)
            # data and fsdp shard the vmapped shard axis (spmd_axis_name): within a shard no logical axis
            # ('batch' or 'embed' of an activation) may map onto them.
            shard_rules = tuple((name, _without_dp((axes,))[0]) for name, axes in rules)
            local = jax.tree_util.tree_map(lambda s: P(_DP, *_without_dp(s)), specs, is_leaf=_is_spec)

        def shard_loss_and_grads(params, batch, norms, rng):
            if shard_rules is None:
                return loss_and_grads(params, batch, norms, rng)
            with nn.logical_axis_rules(shard_rules):
                return loss_and_grads(params, batch, norms, rng)

        per_shard = jax.vmap(shard_loss_and_grads, in_axes=(None, 0, None, 0), spmd_axis_name=spmd_axis)

        # A dropout key per microbatch and shard: under accumulation the masks depend on data x fsdp.
        def shard_rngs(i):
            return jax.vmap(jax.random.fold_in, (None, 0))(jax.random.fold_in(rng, i), jnp.arange(dp))

        def body(carry, xs):
            i, mb = xs
            mb = jax.tree_util.tree_map(lambda x: constrain(x, P(_DP)), mb)
            (l, s), g = per_shard(params, mb, norms, shard_rngs(i))
            acc_l, acc_s, acc_g = carry
            acc_g = jax.tree_util.tree_map(lambda a, b, sp: constrain(a + b, sp), acc_g, g, local)
            return (acc_l + l, jax.tree_util.tree_map(jnp.add, acc_s, s), acc_g), None

        micro = _microbatches(batch, grad_accum_steps, dp)
        micro = jax.tree_util.tree_map(lambda x: constrain(x, P(None, _DP)), micro)
        first = jax.tree_util.tree_map(lambda x: x[0], micro)
        shapes = jax.eval_shape(per_shard, params, first, norms, shard_rngs(0))[0][1]
        zeros_s = jax.tree_util.tree_map(lambda a: jnp.zeros(a.shape, a.dtype), shapes)
        zeros_g = jax.tree_util.tree_map(
            lambda p, sp: constrain(jnp.zeros((dp,) + p.shape, jnp.float32), sp), params, local)
        (loss, sums, grads), _ = jax.lax.scan(
            body, (jnp.zeros((dp,), jnp.float32), zeros_s, zeros_g), (jnp.arange(grad_accum_steps), micro))
        # The one reduction over data x fsdp: an all-reduce, or under fsdp a reduce-scatter onto the shards.
        grads = jax.tree_util.tree_map(lambda g, sp: constrain(jnp.sum(g, 0), sp), grads, specs)
        return jnp.sum(loss), jax.tree_util.tree_map(lambda x: jnp.sum(x, 0), sums), grads

    def step(state: TrainState, batch, rng, lr_factor=None):
        rng = jax.random.fold_in(rng, state.step)
        norms = task.normalizers(batch)
        if grad_accum_steps == 1:
            (loss, sums), grads = loss_and_grads(state.params, batch, norms, rng)
        else:
            loss, sums, grads = accumulate(state.params, batch, norms, rng)
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
