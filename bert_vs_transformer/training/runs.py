"""What the training loop runs: one model (SingleRun) or a group of members (member_group.Group), behind
one interface, so the loop has a single path.

    run = runs.make(config, workdir)      # SingleRun, or member_group.Group for config.member_seeds/lrs
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from bert_vs_transformer import data, evaluation
from bert_vs_transformer.models import partitioning
from bert_vs_transformer.training import (
    init_from,
    member_group,
    members,
    optim,
    run_logging,
    train_step,
)


class SingleRun:
    """A single run: a group of one, without the member axis in its state or checkpoints."""

    size = 1

    def __init__(self, config, workdir: str):
        self.config, self.workdir = config, workdir
        self.configs = [config]

    def resume_problems(self, saved: dict) -> list[str]:
        return members.resume_problems(saved, self.config)

    def optimizer(self):
        return optim.make_optimizer(self.config.optimizer, int(self.config.model.d_model),
                                    int(self.config.num_train_steps))

    def abstract_state(self, task, tx, batch_size: int, mesh):
        return train_step.abstract_state(task, tx, batch_size, int(self.config.seed), mesh)

    def init_state(self, task, tx, batch_size: int, mesh):
        return train_step.init_state(task, tx, batch_size, int(self.config.seed), mesh)

    def apply_init(self, state, shardings):
        return init_from.apply(self.config, state)

    def train_iterator(self, rows_multiple: int | None = None):
        return data.train_iterator(self.config, rows_multiple=rows_multiple)

    global_batch = staticmethod(partitioning.global_batch_from_local)

    def compile_step(self, step_fn, shardings, mesh):
        """-> run(state, batch); the dropout stream is PRNGKey(seed + 1), folded with the step."""
        jitted = train_step.compile_train_step(step_fn, shardings, mesh)
        rng = jax.random.PRNGKey(int(self.config.seed) + 1)
        return lambda state, batch: jitted(state, batch, rng)

    def compile_loss_sums(self, task, param_shardings, mesh):
        """(params, global batch) -> the task's metric sums, each with a member axis of one."""
        fn = jax.jit(
            lambda params, batch: jax.tree_util.tree_map(
                lambda x: jnp.expand_dims(x, 0),
                task.loss(params, batch, task.normalizers(batch), None, deterministic=True)[1]),
            in_shardings=(param_shardings, partitioning.batch_sharding(mesh)),
            out_shardings=NamedSharding(mesh, P()),
        )

        def run(params, batch):
            with partitioning.activate(mesh):
                return fn(params, batch)

        return run

    check_finite = staticmethod(run_logging.check_finite)

    def open_loggers(self, is_main: bool, resume_step: int | None) -> None:
        """A single run logs to the loop's own metrics.jsonl only."""

    def flush(self, step: int, pending, elapsed: float, window_steps: int, flops_per_step, peak,
              num_devices) -> dict[str, Any]:
        return run_logging.window_record(pending, elapsed, window_steps, flops_per_step, peak, num_devices)

    def evaluate(self, step: int, evaluators, task, params, mesh, loss_sums) -> dict[str, float]:
        ctx = evaluation.Context(task=task, mesh=mesh, configs=self.configs, members=[0],
                                 member_params=lambda k: params, params=params, loss_sums=loss_sums)
        out: dict[str, float] = {}
        for ev in evaluators:
            out.update(ev.evaluate(ctx)[0])
        return out

    def close(self) -> None:
        pass


def make(config, workdir: str):
    """SingleRun, or member_group.Group when config.member_seeds / member_lrs list several runs."""
    member_list = members.parse(config)
    return member_group.Group(config, member_list, workdir) if member_list else SingleRun(config, workdir)
