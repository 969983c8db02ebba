"""The one training loop for every objective: train, evaluate, checkpoint, resume, preempt.

It knows tasks, evaluators and data only through their interfaces (`tasks.get_task`,
`evaluation.build`, `bert_vs_transformer.data`), and a single run or a group of member runs only
through `runs.make`: a new task or evaluator changes nothing here.
"""

from __future__ import annotations

import collections
import math
import time
from typing import Any

import jax
import numpy as np
from absl import logging

from bert_vs_transformer import data, evaluation, tasks
from bert_vs_transformer.data import sources
from bert_vs_transformer.models import flops, partitioning
from bert_vs_transformer.training import (
    checkpoints,
    preemption,
    profiling,
    run_logging,
    runs,
    train_step,
)


class ConfigError(ValueError):
    """A config problem found before anything is compiled (reported as one line)."""


def validate(config, mesh) -> None:
    """Checks that fail fast, before compilation, each naming the offending field."""
    partitioning.check_batch_size(int(config.data.batch_size), mesh)
    accum = int(config.get("grad_accum_steps", 1))
    per_dp = int(config.data.batch_size) // partitioning.data_parallel_size(mesh)
    # config.data.tokens_per_batch: every shape's rows are multiples of rows_multiple (a ValueError if none fit)
    budget = accum >= 1 and data.token_batch_shapes(config, rows_multiple(config, mesh))
    if accum < 1 or (not budget and (int(config.data.batch_size) % accum or (accum > 1 and per_dp % accum))):
        raise ConfigError(
            f"config.grad_accum_steps={accum} must divide the per-data-parallel-shard batch "
            f"{per_dp} (config.data.batch_size={config.data.batch_size})"
        )
    for field in ("num_train_steps", "log_every_steps", "eval_every_steps", "checkpoint_every_steps"):
        if int(config.get(field, 0)) <= 0:
            raise ConfigError(f"config.{field} must be a positive integer, got {config.get(field)!r}")
    if int(config.get("steps_in_flight", 2)) < 0:
        raise ConfigError(f"config.steps_in_flight must be >= 0, got {config.get('steps_in_flight')!r}")
    stop_at = int(config.get("stop_at_step", 0) or 0)
    if stop_at < 0 or stop_at > int(config.num_train_steps):
        raise ConfigError(f"config.stop_at_step={stop_at} must be 0 (off) or a step of the schedule, "
                          f"1..num_train_steps={int(config.num_train_steps)}")


def rows_multiple(config, mesh) -> int:
    """What a token-budget batch's rows must be a multiple of: the processes (each feeds its rows) and
    the data-parallel shards times grad_accum_steps (each shard splits its rows into microbatches)."""
    return math.lcm(jax.process_count(),
                    partitioning.data_parallel_size(mesh) * max(1, int(config.get("grad_accum_steps", 1))))


def _check_resumable(run, config, workdir: str, latest: int | None) -> None:
    saved = checkpoints.read_saved_config(workdir, latest) if latest is not None else None
    if saved is None:
        return
    problems = checkpoints.model_mismatch(saved, config.to_dict()) + run.resume_problems(saved)
    if problems:
        raise ConfigError(f"workdir {workdir} holds a checkpoint (step {latest}) of a different model: "
                          + "; ".join(problems[:4]))


def _restore_newest_readable(ckpt, abstract, workdir: str):
    """(state, data state, step) from the newest checkpoint that reads; an unreadable one (a truncated
    file, say) is set aside as <step>.unreadable, with a warning naming it and why, never deleted."""
    for step in sorted(ckpt.all_steps(), reverse=True):
        try:
            state, data_state = ckpt.restore(step, abstract)
            return state, data_state, step
        except Exception as e:  # noqa: BLE001  (orbax raises many kinds for a damaged file)
            reason = f"{type(e).__name__}: {' '.join(str(e).split())[:300]}"
            moved = ckpt.set_aside(step, reason)
            logging.warning("checkpoint step %d of %s cannot be read (%s); it is kept as %s and the run resumes "
                            "from the previous checkpoint", step, workdir, reason, moved)
    return None


def train_and_evaluate(config, workdir: str) -> dict[str, Any]:
    """Runs config in workdir (resuming from its latest checkpoint); returns the last metrics.

    Raises ConfigError (nothing written) for a config or workdir it refuses, and
    preemption.Preempted after saving when a signal stopped it. A finished run returns {} at once."""
    try:
        mesh = partitioning.make_mesh(config.mesh)
        validate(config, mesh)
        task = tasks.get_task(config)
        run = runs.make(config, workdir)
        evaluators = evaluation.build(config)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    is_main = jax.process_index() == 0
    # config.stop_at_step: stop (evaluate, save) at that step of the num_train_steps schedule, e.g. to
    # redo a run a time limit cut; rerun without it to go on
    total = int(config.get("stop_at_step", 0) or 0) or int(config.num_train_steps)
    saved_steps = checkpoints.saved_steps(workdir)
    latest = saved_steps[-1] if saved_steps else None
    _check_resumable(run, config, workdir, latest)
    if latest is not None and latest >= total:
        if is_main:
            logging.warning("%s already holds the finished run (checkpoint at step %d of %d): nothing to do",
                            workdir, latest, total)
        return {}

    batch_size = int(config.data.batch_size)
    tx, schedule = run.optimizer()
    abstract, shardings = run.abstract_state(task, tx, batch_size, mesh)
    try:
        data_iter = run.train_iterator(rows_multiple(config, mesh))
    except (ValueError, sources.DataError, FileNotFoundError) as e:  # a vocab_size the tokenizer refutes, a raw file
        raise ConfigError(str(e)) from e
    if is_main:  # every check passed: from here on the workdir is written
        run_logging.write_config(workdir, config)
        data.save_vocab(config, workdir)
    ckpt = checkpoints.Checkpointer(workdir, keep=int(config.get("keep_checkpoints", 3)),
                                    async_save=bool(config.get("async_checkpointing", True)))
    logger = run_logging.MetricsLogger(workdir, enabled=is_main)
    restored = _restore_newest_readable(ckpt, abstract, workdir) if latest is not None else None
    if latest is not None and restored is None:
        raise ConfigError(f"no checkpoint in {workdir}/checkpoints can be read (each was set aside as "
                          "<step>.unreadable); move them away to start afresh")
    run.open_loggers(is_main, restored[2] if restored else None)
    if restored is not None:
        state, data_state, latest = restored
        if data_state:
            data_iter.set_state(data_state)
        logger.truncate_after(latest)
        logging.info("resumed from step %d", latest)
    else:
        state, _ = run.init_state(task, tx, batch_size, mesh)
        try:  # config.init: a pretrained encoder (params['bert']); the heads stay fresh
            state = run.apply_init(state, shardings)
        except ValueError as e:
            raise ConfigError(str(e)) from None

    one_step = train_step.make_train_step(task, tx, schedule, int(config.get("grad_accum_steps", 1)))
    step_fn = run.compile_step(one_step, shardings, mesh)
    loss_sums = run.compile_loss_sums(task, shardings.params, mesh)
    finite_fn = jax.jit(train_step.all_finite)
    # per member. Token budgets: the widest shape's FLOPs. Every shape's padded tokens are within a
    # rows_multiple x width of the budget, so the token-linear FLOPs agree to that rounding; attention's
    # scores (quadratic in the width) are overstated for the narrower shapes.
    shapes = data.token_batch_shapes(config, rows_multiple(config, mesh))
    flops_per_step = task.step_flops(shapes[-1][0] if shapes else batch_size)
    peak = flops.peak_flops_per_device(config.get("peak_flops_per_device") or None)

    step = int(np.max(jax.device_get(state.step)))  # members: every member's step is the same
    progress = run_logging.Progress(total, step)
    stopper = preemption.Preemption(step)
    stop = False
    profiler = profiling.StepProfiler(config, workdir, step, is_main)
    pending: list[tuple[int, dict]] = []
    # steps dispatched but not waited for: at most steps_in_flight beyond the one Python blocks on, so
    # a signal is read within about that many steps of arriving, not at the end of a log window
    in_flight: collections.deque = collections.deque()
    max_in_flight = int(config.get("steps_in_flight", 2))
    last: dict[str, Any] = {}
    window_start, window_steps = time.time(), 0
    try:
        while step < total:
            profiler.before(step)
            batch = run.global_batch(next(data_iter), mesh)
            state, metrics = step_fn(state, batch)
            step += 1
            profiler.after(step, metrics)
            window_steps += 1
            pending.append((step, metrics))
            in_flight.append(metrics)
            while len(in_flight) > max_in_flight:
                jax.block_until_ready(in_flight.popleft())
            stop = stopper.should_stop(step)
            if step % int(config.log_every_steps) == 0 or step == total or stop:
                jax.block_until_ready(metrics)  # the window's compute, not just its dispatch
                last = run.flush(step, pending, time.time() - window_start, window_steps, flops_per_step, peak,
                                 jax.device_count())
                logger.write(step, last)
                if is_main:
                    logging.info(progress.line(step, last))
                pending, window_start, window_steps = [], time.time(), 0
                in_flight.clear()
            due = [e for e in evaluators if e.due(step, total)]
            if due:
                run.check_finite(pending)
                # members: each member's metrics go to its own metrics.jsonl; the group logs their mean
                ev = run.evaluate(step, due, task, state.params, mesh, loss_sums)
                logger.write(step, ev)
                last.update(ev)
                if is_main:
                    logging.info("eval at step %d: %s", step, ", ".join(f"{k} {v:.4g}" for k, v in ev.items()))
                window_start = time.time()
            if step % int(config.checkpoint_every_steps) == 0 or step == total or stop:
                run.check_finite(pending)
                if not bool(finite_fn(state.params)):
                    raise FloatingPointError(
                        f"non-finite parameters after step {step}; not saved, the last good checkpoint "
                        f"(step {ckpt.latest_step()}) is kept"
                    )
                ckpt.save(step, state, data_iter.get_state(), config.to_dict())
                window_start = time.time()  # throughput excludes eval and checkpoint time
            if stop:
                logging.warning("stopping at step %d after a preemption signal", step)
                break
    finally:
        profiler.close()
        if hasattr(data_iter, "close"):
            data_iter.close()  # worker processes (data.worker_count)
        ckpt.close()
        run.close()
        logger.close()
        stopper.restore()
    if stop and step < total:
        raise preemption.Preempted(step, stopper.signum)
    return last
