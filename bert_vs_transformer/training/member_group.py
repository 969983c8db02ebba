"""Member runs: several fine-tuning runs of one config trained as one jit-compiled program, vmapped
over a leading member axis (seeds x peak learning rates).

    python -m bert_vs_transformer.main --config=configs/glue.py:task=rte,init=DIR --workdir=W \
        --config.member_seeds=0,1,2 --config.member_lrs=1e-4,3e-4        # six members

Member (seed s, lr l) is the single run `--config.seed=s --config.optimizer.learning_rate=l`:
its own parameter init (PRNGKey(s)), dropout stream (PRNGKey(s + 1)), data order (seed s, unless
config.data.seed pins one order for all), gradient clipping and AdamW moments; its update is the
unit-peak schedule's update times l, which is AdamW's update at peak l (optax scales the whole
update, weight decay included, by the learning rate). Each step's batches are padded to the widest
member's length bucket. The padding is masked, so without dropout a member is its single run exactly;
with dropout a member padded wider than its own batch draws its dropout masks for the wider shape:
a different draw from the same distribution, not the single run's (tests/training/test_members.py
checks members equal to single runs where widths agree; on RTE with a pretrained tiny BERT, 3 members: two
seeds ended on their single runs' dev accuracy, one 2 of 277 examples off). A member whose loss
turns non-finite stops alone (compile_step); the others finish.

Why: a small model's step at a fine-tuning batch is bound by launch overhead, not FLOPs, on an
accelerator; M members then cost about one run (ten separate processes sharing one H200 got 10-40
steps/s each, and each compiled its own programs).

A single run is `runs.SingleRun`, with the same interface as `Group`: the loop has one path.
Which members a config asks for, and their names: members.py.

Output: WORKDIR/members/lr<l>-seed<s>/{config.json, metrics.jsonl}, each a single run's files
(the layout glue_grid --vmap reports from); WORKDIR/metrics.jsonl holds the members' means (training
loss, dev metrics: not any one run's) and the program's throughput (tokens of all members); the
checkpoints hold the stacked state (export_hf --member=K exports one member).
"""

from __future__ import annotations

import json
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from absl import logging
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from bert_vs_transformer import data, evaluation
from bert_vs_transformer.data import storage
from bert_vs_transformer.models import partitioning
from bert_vs_transformer.training import init_from, optim, run_logging, train_step
from bert_vs_transformer.training.members import (
    Member,
    member_config,
    member_slice,
    resume_problems,
)


def _stack_sharding(s: NamedSharding) -> NamedSharding:
    return NamedSharding(s.mesh, P(None, *s.spec))


class Group:
    """What the training loop needs to run `members` of `config` as one program."""

    def __init__(self, config, members: Sequence[Member], workdir: str):
        self.config, self.members, self.workdir = config, list(members), workdir
        self.configs = [member_config(config, m) for m in self.members]
        self.size = len(self.members)
        self.dirs = [storage.as_path(workdir) / "members" / m.name for m in self.members]
        self.diverged: dict[int, int] = {}  # member index -> the step it stopped at (check_finite)

    # -- optimizer and state ----------------------------------------------------------------------

    def optimizer(self):
        """(tx, schedule) at unit peak; each member's step scales the update by its own peak."""
        opt = self.config.optimizer.to_dict()
        if opt["schedule"] != "rsqrt":
            opt["learning_rate"] = 1.0
        return optim.make_optimizer(opt, int(self.config.model.d_model), int(self.config.num_train_steps))

    def resume_problems(self, saved: dict) -> list[str]:
        """Why a checkpoint saved with run config `saved` cannot be resumed by this group."""
        return resume_problems(saved, self.config)

    def lr_factors(self) -> np.ndarray:
        unit = self.config.optimizer.schedule != "rsqrt"
        return np.asarray([m.learning_rate if unit else 1.0 for m in self.members], np.float32)

    def _init(self, task, tx, batch_size: int):
        def one(seed):
            return nn.unbox(train_step._init_fn(task, tx, batch_size, seed)())

        return jax.vmap(one)

    def abstract_state(self, task, tx, batch_size: int, mesh):
        """(abstract stacked state, its shardings): each member leaf sharded like a single run's, the
        member axis replicated."""
        _, single = train_step.abstract_state(task, tx, batch_size, self.members[0].seed, mesh)
        shardings = jax.tree_util.tree_map(_stack_sharding, single)
        seeds = jax.ShapeDtypeStruct((self.size,), jnp.int32)
        with partitioning.activate(mesh):
            shapes = jax.eval_shape(self._init(task, tx, batch_size), seeds)
        abstract = jax.tree_util.tree_map(
            lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), shapes, shardings)
        return abstract, shardings

    def init_state(self, task, tx, batch_size: int, mesh):
        _, shardings = self.abstract_state(task, tx, batch_size, mesh)
        seeds = jnp.asarray([m.seed for m in self.members], jnp.int32)
        with partitioning.activate(mesh):
            state = jax.jit(self._init(task, tx, batch_size), out_shardings=shardings)(seeds)
        return state, shardings

    def apply_init(self, state, shardings):
        """config.init's encoder into every member (init_from.apply for each; scratch: unchanged)."""
        if self.config.get("init", None) in init_from.SCRATCH:
            return state
        params = dict(state.params)
        if "bert" not in params:
            raise ValueError(f"config.init={self.config.init!r}: the model has no 'bert' encoder")
        stacked = params["bert"]
        first = member_slice(stacked, 0)
        loaded = init_from.load_encoder(first, init_from.source_encoder(self.config), repr(self.config.init))

        def spread(new, old_first, old):
            if new is old_first:  # a leaf the source lacks (a pooler): each member keeps its own init
                return old
            return jnp.broadcast_to(new[None], old.shape)

        params["bert"] = jax.tree_util.tree_map(
            lambda n, f, o, s: jax.device_put(spread(n, f, o), s), loaded, first, stacked, shardings.params["bert"])
        return state.replace(params=params)

    # -- data -------------------------------------------------------------------------------------

    def train_iterator(self, rows_multiple: int | None = None):
        iterator = StackedIterator([data.train_iterator(c, rows_multiple=rows_multiple) for c in self.configs])
        iterator.diverged = self.diverged  # one dict: checkpoints keep it with the data state
        return iterator

    @staticmethod
    def global_batch(local: dict[str, np.ndarray], mesh) -> dict[str, jax.Array]:
        sharding = NamedSharding(mesh, P(None, ("data", "fsdp")))
        return {k: jax.make_array_from_process_local_data(sharding, np.asarray(v)) for k, v in local.items()}

    # -- compiled functions -----------------------------------------------------------------------

    def compile_step(self, step_fn, shardings, mesh):
        """step_fn(state, batch, rng, lr_factor) vmapped over members; -> run(state, batch): member
        k's dropout stream is PRNGKey(seed_k + 1), as its single run's.

        A member whose loss or gradient norm turns non-finite stops there (its single run would raise):
        its update is discarded, it stays frozen from then on (a device-side alive flag, carried from
        step to step; metrics["alive"]) and the others go on. check_finite logs it."""
        replicated = NamedSharding(mesh, P())

        def guarded(state, batch, rng, factor, alive):
            new_state, metrics = step_fn(state, batch, rng, factor)
            ok = alive & jnp.isfinite(metrics["loss"]) & jnp.isfinite(metrics["grad_norm"])
            new_state = jax.tree_util.tree_map(lambda n, o: jnp.where(ok, n, o), new_state, state)
            return new_state, dict(metrics, alive=ok)

        jitted = jax.jit(
            jax.vmap(guarded),
            in_shardings=(shardings, NamedSharding(mesh, P(None, ("data", "fsdp"))), replicated, replicated,
                          replicated),
            out_shardings=(shardings, replicated),
            donate_argnums=(0,),
        )
        rngs = jnp.stack([jax.random.PRNGKey(m.seed + 1) for m in self.members])
        factors = jnp.asarray(self.lr_factors())
        self._alive = jnp.asarray([k not in self.diverged for k in range(self.size)])

        def run(state, batch):
            with partitioning.activate(mesh):
                state, metrics = jitted(state, batch, rngs, factors, self._alive)
            self._alive = metrics["alive"]
            return state, metrics

        run.jitted = jitted
        return run

    # -- divergence -------------------------------------------------------------------------------

    def check_finite(self, pending) -> None:
        """Logs each member that stopped in `pending` (an error record in its metrics.jsonl, a warning);
        raises FloatingPointError, as a single run would, once every member has stopped."""
        for s, m in pending:
            alive = np.asarray(jax.device_get(m["alive"]))
            for k in np.flatnonzero(~alive):
                k = int(k)
                if k in self.diverged:
                    continue
                loss, grad_norm = (float(np.asarray(jax.device_get(m[n]))[k]) for n in ("loss", "grad_norm"))
                msg = (f"member {self.members[k].name}: non-finite loss {loss} or gradient norm {grad_norm} at "
                       f"step {s}; it stopped there (its update discarded), the other members go on")
                self.diverged[k] = s
                logging.warning(msg)
                if hasattr(self, "loggers"):
                    self.loggers[k].write(s, {"error": msg})
        if len(self.diverged) == self.size:
            raise FloatingPointError(f"every member stopped on a non-finite loss or gradient norm (steps "
                                     f"{sorted(self.diverged.values())}); the last good checkpoint is kept")

    def compile_loss_sums(self, task, param_shardings, mesh):
        """(stacked params, global batch) -> the task's metric sums, [members] each."""
        def sums(params, batch):
            return task.loss(params, batch, task.normalizers(batch), None, deterministic=True)[1]

        fn = jax.jit(jax.vmap(sums, in_axes=(0, None)),
                     in_shardings=(param_shardings, partitioning.batch_sharding(mesh)),
                     out_shardings=NamedSharding(mesh, P()))

        def run(params, batch):
            with partitioning.activate(mesh):
                return fn(params, batch)

        return run

    # -- logging and evaluation -------------------------------------------------------------------

    def open_loggers(self, is_main: bool, resume_step: int | None):
        self.loggers = []
        for c, d in zip(self.configs, self.dirs):
            if is_main:
                d.mkdir(parents=True, exist_ok=True)
                storage.write_atomic(d / "config.json", json.dumps(
                    dict(c.to_dict(), member_of=str(storage.as_path(self.workdir))), indent=2, default=str))
            logger = run_logging.MetricsLogger(d, enabled=is_main, tensorboard=False)
            if resume_step is not None:
                logger.truncate_after(resume_step)
            self.loggers.append(logger)

    def close(self):
        for logger in getattr(self, "loggers", []):
            logger.close()

    def flush(self, step: int, pending, elapsed: float, window_steps: int, flops_per_step, peak,
              num_devices) -> dict[str, Any]:
        """Each running member's window record (run_logging.window_record) to its metrics.jsonl; -> the
        group's record: mean loss and grad norm, summed tokens/s, MFU of all members' FLOPs, the first
        running member's learning rate, and `members` (how many are running)."""
        self.check_finite(pending)
        host = [(s, jax.device_get(m)) for s, m in pending]
        records = {}
        for k, logger in enumerate(self.loggers):
            mine = [(s, {name: v[k] for name, v in m.items()}) for s, m in host if m["alive"][k]]
            if not mine:  # stopped before this window
                continue
            rec = run_logging.window_record(mine, elapsed, window_steps, flops_per_step, peak, num_devices)
            logger.write(step, rec)
            records[k] = rec
        recs = list(records.values())
        out = dict(recs[0])  # learning_rate: the first running member's (members' peaks differ)
        out["loss"] = float(np.mean([r["loss"] for r in recs]))
        out["grad_norm"] = float(np.mean([r["grad_norm"] for r in recs]))
        out["tokens_per_s"] = float(sum(r["tokens_per_s"] for r in recs))
        out["mfu"] = None if recs[0]["mfu"] is None else float(sum(r["mfu"] for r in recs))
        out["members"] = len(recs)
        return out

    def evaluate(self, step: int, evaluators, task, params, mesh, loss_sums) -> dict[str, float]:
        """Every running member's metrics from `evaluators` to its metrics.jsonl; -> their mean."""
        running = [k for k in range(self.size) if k not in self.diverged]  # a stopped member: no record
        ctx = evaluation.Context(task=task, mesh=mesh, configs=self.configs, members=running,
                                 member_params=lambda k: member_slice(params, k), params=params, loss_sums=loss_sums)
        per_member = {k: {} for k in running}
        for ev in evaluators:
            for k, metrics in ev.evaluate(ctx).items():
                per_member[k].update(metrics)
        for k in running:
            self.loggers[k].write(step, per_member[k])
        first = per_member[running[0]]
        return {name: float(np.mean([float(per_member[k][name]) for k in running])) for name in first}


class StackedIterator:
    """Members' batch streams as one: each step's batches padded to the widest and stacked [M, b, ...];
    its state is every member's iterator state."""

    def __init__(self, iterators):
        self.iterators = list(iterators)
        self.diverged: dict[int, int] = {}  # Group.check_finite's stopped members, saved with the state

    def __iter__(self):
        return self

    def __next__(self) -> dict[str, np.ndarray]:
        return stack_batches([next(it) for it in self.iterators])

    def close(self) -> None:
        for it in self.iterators:
            if hasattr(it, "close"):
                it.close()

    def get_state(self) -> dict[str, Any]:
        return {"members": [it.get_state() for it in self.iterators],
                "diverged": {str(k): int(v) for k, v in self.diverged.items()}}

    def set_state(self, state: dict[str, Any]) -> None:
        states = state.get("members")
        if not isinstance(states, list) or len(states) != len(self.iterators):
            raise ValueError(f"data state of a member run with {len(self.iterators)} members expected, got "
                             f"{str(state)[:200]}")
        for it, s in zip(self.iterators, states):
            it.set_state(s)
        self.diverged.clear()
        self.diverged.update({int(k): int(v) for k, v in (state.get("diverged") or {}).items()})


def stack_batches(batches: Sequence[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """[M] batches -> one batch [M, b, ...]; 2-D fields are zero-padded on axis 1 to the widest
    (the pipelines pad with 0 and mask it)."""
    out = {}
    for k in batches[0]:
        arrays = [np.asarray(b[k]) for b in batches]
        if arrays[0].ndim >= 2:
            width = max(a.shape[1] for a in arrays)
            arrays = [np.pad(a, [(0, 0), (0, width - a.shape[1])] + [(0, 0)] * (a.ndim - 2)) for a in arrays]
        out[k] = np.stack(arrays)
    return out
