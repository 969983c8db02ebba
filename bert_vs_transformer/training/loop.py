"""The one training loop for every objective: train, evaluate, checkpoint, resume, preempt."""

from __future__ import annotations

import collections
import os
import shutil
import signal
import time
from typing import Any, Iterable

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging
from jax.experimental import multihost_utils
from jax.sharding import NamedSharding, PartitionSpec as P

from bert_vs_transformer import tasks
from bert_vs_transformer.data import synthetic as synthetic_data
from bert_vs_transformer.evaluation import glue as glue_eval, translation as translation_eval
from bert_vs_transformer.models import flops, partitioning
from bert_vs_transformer.training import checkpoints, init_from, members, optim, run_logging, train_step


class ConfigError(ValueError):
    """A config problem found before anything is compiled (reported as one line)."""


def train_iterator(config):
    if config.data.dataset == "synthetic":
        return synthetic_data.SyntheticIterator(config, jax.process_index(), jax.process_count())
    from bert_vs_transformer import data  # tfds / grain only when real data is used

    return data.train_iterator(config, process_index=jax.process_index(), process_count=jax.process_count())


def keep_learned_vocab(config, workdir: str) -> str | None:
    """A vocabulary learned by a pretraining run (data.vocab = "train:<n>") is copied to
    workdir/vocab.txt, where fine-tuning (configs/glue.py) and export_hf read it; -> that path."""
    if config.task != "pretraining" or config.data.dataset == "synthetic":
        return None
    from bert_vs_transformer.data import pretraining_pipeline

    if not pretraining_pipeline.vocab_spec(config).startswith(pretraining_pipeline.TRAIN_VOCAB_PREFIX):
        return None
    os.makedirs(workdir, exist_ok=True)
    dst = os.path.join(workdir, "vocab.txt")
    shutil.copyfile(pretraining_pipeline.tokenizer(config).vocab_path, dst)
    return dst


def eval_batches(config, split: str) -> Iterable[dict[str, np.ndarray]]:
    """Global evaluation batches (every process reads the same ones and keeps its rows)."""
    if config.data.dataset == "synthetic":
        return synthetic_data.eval_batches(config)
    from bert_vs_transformer import data

    return data.eval_batches(config, split)


def _local_rows(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    n = batch[next(iter(batch))].shape[0] // jax.process_count()
    lo = jax.process_index() * n
    return {k: v[lo: lo + n] for k, v in batch.items()}


class _Preemption:
    """SIGTERM/SIGINT set a flag; the loop finishes the current step, saves and exits. The handler
    runs only when Python is between calls, so the loop bounds how far it dispatches ahead of the
    device (config.steps_in_flight): otherwise it waits out a whole log window before reading it.

    Multi-process, every process must stop at the same step. With JAX's preemption service (on by
    default in jax.distributed) its own SIGTERM notifier tells the coordination service, which picks
    the step (multihost_utils.reached_preemption_sync_point): no collective per step. Without it the
    flag is all-gathered every step, which waits on the device each step."""

    def __init__(self, step: int):
        self.requested = False
        self._previous = {}
        self._service = jax.process_count() > 1 and _preemption_service(step)
        # with the service, SIGTERM stays with its notifier; SIGINT is handed to it as a SIGTERM
        for sig in (signal.SIGINT,) if self._service else (signal.SIGTERM, signal.SIGINT):
            self._previous[sig] = signal.signal(sig, self._handle)

    def _handle(self, signum, frame):
        logging.warning("received signal %d: saving a checkpoint after this step", signum)
        self.requested = True
        if self._service:
            os.kill(os.getpid(), signal.SIGTERM)

    def should_stop(self, step: int) -> bool:
        if jax.process_count() == 1:
            return self.requested
        if self._service:
            if multihost_utils.reached_preemption_sync_point(step):
                logging.warning("every process reached the preemption sync point at step %d", step)
                return True
            return False
        return bool(np.any(multihost_utils.process_allgather(np.array(self.requested))))

    def restore(self):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def _preemption_service(step: int) -> bool:
    """Whether JAX's preemption sync manager runs (jax.distributed with jax_enable_preemption_service);
    its first call, at the run's first step, is also where the sync step count starts."""
    try:
        multihost_utils.reached_preemption_sync_point(step)
    except RuntimeError:  # the service is disabled
        return False
    return True


def validate(config, mesh) -> None:
    """Checks that fail fast, before compilation, each naming the offending field."""
    partitioning.check_batch_size(int(config.data.batch_size), mesh)
    accum = int(config.get("grad_accum_steps", 1))
    per_dp = int(config.data.batch_size) // partitioning.data_parallel_size(mesh)
    if accum < 1 or int(config.data.batch_size) % accum or (accum > 1 and per_dp % accum):
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


def train_and_evaluate(config, workdir: str) -> dict[str, Any]:
    """Runs config in workdir (resuming from its latest checkpoint); returns the last metrics."""
    try:
        mesh = partitioning.make_mesh(config.mesh)
        validate(config, mesh)
        task = tasks.get_task(config)
        member_list = members.parse(config)  # None: one run; else members.py's vmapped runs
    except ValueError as e:
        raise ConfigError(str(e)) from None
    group = members.Group(config, member_list, workdir) if member_list else None
    is_main = jax.process_index() == 0
    ckpt = checkpoints.Checkpointer(workdir, keep=int(config.get("keep_checkpoints", 3)),
                                    async_save=bool(config.get("async_checkpointing", True)))
    latest = ckpt.latest_step()
    if latest is not None:
        saved = ckpt.saved_config(latest)
        if saved is not None:
            problems = checkpoints.model_mismatch(saved, config.to_dict())
            for field in ("member_seeds", "member_lrs"):
                if str(saved.get(field, "") or "") != str(config.get(field, "") or ""):
                    problems.append(f"{field} {saved.get(field, '')!r} there, {config.get(field, '')!r} here "
                                    "(the checkpoint's member axis differs)")
            if problems:
                raise ConfigError(
                    f"workdir {workdir} holds a checkpoint (step {latest}) of a different model: "
                    + "; ".join(problems[:4])
                )

    batch_size = int(config.data.batch_size)
    if group is None:
        tx, schedule = optim.make_optimizer(config.optimizer, int(config.model.d_model), int(config.num_train_steps))
        abstract, shardings = train_step.abstract_state(task, tx, batch_size, int(config.seed), mesh)
    else:
        tx, schedule = group.optimizer(int(config.model.d_model), int(config.num_train_steps))
        abstract, shardings = group.abstract_state(task, tx, batch_size, mesh)
    try:
        data_iter = train_iterator(config) if group is None else group.train_iterator(train_iterator)
    except ValueError as e:  # e.g. model.vocab_size disagreeing with the tokenizer
        raise ConfigError(str(e)) from None
    if is_main:
        keep_learned_vocab(config, workdir)
    logger = run_logging.MetricsLogger(workdir, enabled=is_main)
    if group is not None:
        group.open_loggers(is_main, latest)
    if latest is not None:
        state, data_state = ckpt.restore(latest, abstract)
        if data_state:
            data_iter.set_state(data_state)
        logger.truncate_after(latest)
        logging.info("resumed from step %d", latest)
    else:
        if group is None:
            state, _ = train_step.init_state(task, tx, batch_size, int(config.seed), mesh)
        else:
            state, _ = group.init_state(task, tx, batch_size, mesh)
        try:  # config.init: a pretrained encoder (params['bert']); the heads stay fresh
            state = init_from.apply(config, state) if group is None else group.apply_init(state, shardings)
        except ValueError as e:
            raise ConfigError(str(e)) from None

    one_step = train_step.make_train_step(task, tx, schedule, int(config.get("grad_accum_steps", 1)))
    if group is None:
        step_fn = train_step.compile_train_step(one_step, shardings, mesh)
        eval_fn = _compile_eval(task, shardings.params, mesh)
    else:
        step_fn = group.compile_step(one_step, shardings, mesh)
        eval_fn = group.compile_eval(task, shardings.params, mesh)
    to_global = partitioning.global_batch_from_local if group is None else group.global_batch
    finite_fn = jax.jit(train_step.all_finite)
    check_finite = _check_finite if group is None else group.check_finite  # members: a stopped one is logged
    rng = jax.random.PRNGKey(int(config.seed) + 1)
    flops_per_step = flops.step_flops(config, batch_size)  # per member
    peak = flops.peak_flops_per_device(config.get("peak_flops_per_device") or None)

    step = int(np.max(jax.device_get(state.step)))  # members: every member's step is the same
    # config.stop_at_step: stop (evaluate, save) at that step of the num_train_steps schedule, e.g. to
    # redo a run a time limit cut; rerun without it to go on
    total = int(config.get("stop_at_step", 0) or 0) or int(config.num_train_steps)
    progress = run_logging.Progress(total, step)
    preemption = _Preemption(step)
    profiler = _StepProfiler(config, workdir, step, is_main)
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
            batch = to_global(next(data_iter), mesh)
            state, metrics = step_fn(state, batch, rng)
            step += 1
            profiler.after(step, metrics)
            window_steps += 1
            pending.append((step, metrics))
            in_flight.append(metrics)
            while len(in_flight) > max_in_flight:
                jax.block_until_ready(in_flight.popleft())
            stop = preemption.should_stop(step)
            if step % int(config.log_every_steps) == 0 or step == total or stop:
                jax.block_until_ready(metrics)  # the window's compute, not just its dispatch
                elapsed = time.time() - window_start
                if group is None:
                    last = _flush(pending, elapsed, window_steps, flops_per_step, peak, jax.device_count())
                else:
                    last = group.flush(step, pending, elapsed, window_steps, _flush, flops_per_step, peak,
                                       jax.device_count())
                logger.write(step, last)
                if is_main:
                    logging.info(progress.line(step, last))
                pending, window_start, window_steps = [], time.time(), 0
                in_flight.clear()
            if step % int(config.eval_every_steps) == 0 or step == total:
                check_finite(pending)
                if group is None:
                    ev = evaluate(config, task, eval_fn, state.params, mesh)
                    ev.update(translation_eval.eval_metrics(config, state.params))  # BLEU; {} for other tasks
                    ev.update(glue_eval.eval_metrics(config, task, state.params, mesh))  # GLUE dev; {} for other tasks
                else:  # each member's metrics go to its own metrics.jsonl; the group logs their mean
                    ev = group.evaluate(step, task, eval_fn, state.params, mesh,
                                        eval_batches(config, config.data.get("eval_split", "validation")), _local_rows)
                logger.write(step, ev)
                last.update(ev)
                if is_main:
                    logging.info("eval at step %d: %s", step, ", ".join(f"{k} {v:.4g}" for k, v in ev.items()))
                window_start = time.time()
            if step % int(config.checkpoint_every_steps) == 0 or step == total or stop:
                check_finite(pending)
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
        if group is not None:
            group.close()
        logger.close()
        preemption.restore()
    return last


class _StepProfiler:
    """config.profile_steps > 0: traces that many steps (input pipeline included) with jax.profiler
    into WORKDIR/profile, starting config.profile_start_step steps into this run (after compilation),
    then logs the top kernels per step and writes profile/summary.md (profile_summary.py). The log
    window holding the traced steps reports a lower rate (tracing and its summary take time), as the
    first window does with compilation: put profile_start_step inside the first window."""

    def __init__(self, config, workdir: str, first_step: int, is_main: bool):
        self.n = int(config.get("profile_steps", 0) or 0)
        self.start = first_step + int(config.get("profile_start_step", 10) or 0)
        self.dir = os.path.join(workdir, "profile")
        self.is_main, self.active = is_main, False

    def before(self, step: int) -> None:
        if self.n > 0 and step == self.start:
            jax.profiler.start_trace(self.dir)
            self.active = True

    def after(self, step: int, metrics) -> bool:
        """Stops the trace after its last step (and summarises it); True if it did."""
        if not (self.active and step == self.start + self.n):
            return False
        jax.block_until_ready(metrics)
        self.close()
        if self.is_main:
            self._summarize(step)
        return True

    def _summarize(self, step: int) -> None:
        from bert_vs_transformer.training import profile_summary

        written = profile_summary.write_summary(self.dir, self.n)
        if written is not None:
            logging.info("profile of steps %d-%d (%s):\n%s", self.start + 1, step, self.dir, written[1])

    def close(self) -> None:
        if self.active:
            self.active = False
            jax.profiler.stop_trace()


def _check_finite(pending) -> None:
    """Raises at the first step whose loss or gradient norm is NaN/Inf (members: Group.check_finite)."""
    for s, m in pending:
        loss, grad_norm = (float(x) for x in jax.device_get((m["loss"], m["grad_norm"])))
        if not np.isfinite(loss):
            raise FloatingPointError(f"non-finite loss {loss} at step {s}; the last good checkpoint is kept")
        if not np.isfinite(grad_norm):
            raise FloatingPointError(f"non-finite gradient norm {grad_norm} at step {s} (loss {loss}); "
                                     "the last good checkpoint is kept")


def _flush(pending, elapsed, steps, flops_per_step, peak, num_devices) -> dict[str, Any]:
    """Mean loss over the window (and the NaN check), throughput and MFU."""
    _check_finite(pending)
    host = [(s, jax.device_get(m)) for s, m in pending]
    losses = [float(m["loss"]) for _, m in host]
    tokens = sum(float(m["tokens"]) for _, m in host)
    steps_per_s = steps / max(elapsed, 1e-9)
    out = {
        "loss": float(np.mean(losses)),
        "learning_rate": float(host[-1][1]["learning_rate"]),
        "grad_norm": float(host[-1][1]["grad_norm"]),
        "steps_per_s": steps_per_s,
        "tokens_per_s": tokens / max(elapsed, 1e-9),
        "mfu": flops.mfu(flops_per_step, steps_per_s, num_devices, peak) if peak else None,
    }
    return out


def _compile_eval(task, param_shardings, mesh):
    replicated = NamedSharding(mesh, P())
    fn = jax.jit(
        lambda params, batch: task.loss(params, batch, task.normalizers(batch), None, deterministic=True)[1],
        in_shardings=(param_shardings, partitioning.batch_sharding(mesh)),
        out_shardings=replicated,
    )

    def run(params, batch):
        with partitioning.activate(mesh):
            return fn(params, batch)

    return run


def evaluate(config, task, eval_fn, params, mesh, split: str | None = None) -> dict[str, float]:
    """Sums the task's metric sums over the eval split; returns eval_<name> metrics."""
    split = split or config.data.get("eval_split", "validation")
    totals: dict[str, float] = {}
    for batch in eval_batches(config, split):
        gbatch = partitioning.global_batch_from_local(_local_rows(batch), mesh)
        sums = jax.device_get(eval_fn(params, gbatch))
        for k, v in sums.items():
            totals[k] = totals.get(k, 0.0) + float(v)
    if not totals:
        return {}
    return {f"eval_{k}": v for k, v in task.summarize(totals).items()}
