r"""Times training steps on synthetic batches; prints one JSON line of throughput, FLOPs and MFU.

    python -m bert_vs_transformer.cli.benchmark --config=configs/bert.py:base \
        [--config.model.dtype=bfloat16 ...] [--batch_size=N --seq_len=L --steps=N --warmup=N \
         --peak_tflops=X --task=NAME --max_predictions=P --grad_accum_steps=K --members=N]
    ... --memory    compile only: per-device bytes and GFLOPs of the step (cli/step_memory.py)
    ... --decode [--beam_size=4 --alpha=0.6]    beam-search speed (cli/decode_speed.py)

The step is the training loop's own: `tasks.get_task`, `optim.make_optimizer`,
`partitioning.make_mesh`, `train_step.init_state` and `train_step.compile_train_step(make_train_step)`,
fed through `partitioning.global_batch_from_local`. One synthetic batch (random token ids, no
padding; for pretraining P random distinct masked positions per sequence with weight 1) is placed
on the devices once and reused, so the timing holds no host-to-device input transfer. The warm-up
steps (at least one: it compiles) are excluded; the timed steps are dispatched back to back and
synchronised once at the end. `--profile_dir=D` then traces `--profile_steps` more steps with
`jax.profiler` into D and logs where the step's time goes (profile_summary.py; D/summary.md).
`--members=N` (configs with member_seeds, e.g. configs/glue.py) times N fine-tuning runs vmapped as
one step (training/member_group.py): steps_per_s is then member-steps / N, and tokens, FLOPs and seq_per_s count
all members.

`--seq_len` sets config.data.max_len (translation: source and target) or config.data.max_seq_len;
for pretraining it also scales max_predictions_per_seq in proportion (20 at 128 -> 80 at 512, as
BERT A.2) unless `--max_predictions` is given. The task is config.task, else inferred from
config.model_family (transformer -> translation, bert -> pretraining), else `--task`.

Output fields (one JSON object on stdout): task, batch_size, seq_len (src_len / tgt_len for
translation), num_masked, steps, warmup, step_time_s, steps_per_s, seq_per_s, tokens_per_step,
tokens_per_s, model_tflops_per_step (model FLOPs of one step, models/flops.py; `model_tflops` is the same
number under a second name), achieved_tflops_per_s (all devices together),
peak_tflops_per_device, mfu (null when the peak is unknown, e.g. CPU), peak_memory_gb (null when
the backend keeps no memory statistics, e.g. CPU), compile_and_warmup_s, final_loss, device_kind,
platform, num_devices, process_count, jax_version, flax_version, data_modules_imported (must be
empty: this command never imports tensorflow_datasets or grain) and config (the final config).

Needs no dataset: it imports nothing from bert_vs_transformer.data, tensorflow_datasets or grain.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any

import jax
import numpy as np
from absl import app, flags, logging
from ml_collections import config_flags

from bert_vs_transformer import tasks
from bert_vs_transformer.cli import decode_speed, run_absl, step_memory
from bert_vs_transformer.models import flops, partitioning
from bert_vs_transformer.training import (
    member_group,
    members,
    optim,
    profile_summary,
    train_step,
)

FLAGS = flags.FLAGS


def define_flags() -> None:
    """Defines the command-line flags (only when run as a program, so that importing this module
    next to main.py, which also defines --config, is safe)."""
    config_flags.DEFINE_config_file("config", None, "Training config file (configs/*.py[:arg]).")
    flags.DEFINE_integer("batch_size", None, "Global batch (sequences); default config.data.batch_size.")
    flags.DEFINE_integer("seq_len", None, "Sequence length; default from config.data.")
    flags.DEFINE_integer("steps", 10, "Timed steps.")
    flags.DEFINE_integer("warmup", 2, "Untimed steps before timing (the first compiles); at least 1.")
    flags.DEFINE_float("peak_tflops", None, "Peak TFLOP/s per device for MFU (overrides the table).")
    flags.DEFINE_string("task", None, "translation | pretraining | classification, if the config names none.")
    flags.DEFINE_integer("max_predictions", None, "Masked positions per sequence (pretraining).")
    flags.DEFINE_integer("grad_accum_steps", None, "Microbatches per step; default config.grad_accum_steps or 1.")
    flags.DEFINE_integer("members", None, "Time N member runs vmapped as one step (training/member_group.py; configs with "
                         "member_seeds, e.g. configs/glue.py): sets config.member_seeds=0..N-1.")
    flags.DEFINE_string("profile_dir", None, "After timing, trace --profile_steps more steps with jax.profiler "
                        "into this directory and log the top kernels per step (profile_summary.py).")
    flags.DEFINE_integer("profile_steps", 3, "Steps traced with --profile_dir (not part of the timing).")
    flags.DEFINE_bool("memory", False, "Compile the step only and print its per-device argument, output and temp "
                      "bytes and XLA's GFLOPs (cli/step_memory.py); any backend, any --config.mesh.*.")
    flags.DEFINE_bool("decode", False, "Time beam search on synthetic sources of --batch_size x --seq_len instead "
                      "(--steps searches, 0 for the step's FLOPs only; cli/decode_speed.py); encoder-decoder configs.")
    flags.DEFINE_integer("beam_size", 4, "Beam size for --decode (Vaswani 6.1: 4).")
    flags.DEFINE_float("alpha", 0.6, "Length penalty for --decode (Vaswani 6.1: 0.6).")


DATA_MODULES = ("tensorflow_datasets", "grain", "tensorflow")


def prepare_config(config, batch_size=None, seq_len=None, task=None, max_predictions=None, grad_accum_steps=None):
    """The config the benchmark runs: task set, lengths and batch from the flags written in."""
    config = config.copy_and_resolve_references()
    with config.unlocked():
        if task:
            config.task = task
        elif not config.get("task", None):
            config.task = tasks.task_name(config)
        config.grad_accum_steps = int(grad_accum_steps or config.get("grad_accum_steps", 1) or 1)
        if batch_size:
            config.data.batch_size = int(batch_size)
        d = config.data
        if config.task == "translation":
            if seq_len:
                d.max_len = int(seq_len)
                for key in ("max_source_len", "max_target_len"):
                    if key in d:
                        d[key] = int(seq_len)
        else:
            if "max_seq_len" not in d:
                raise ValueError(f"config.data has no max_seq_len, needed by task {config.task!r}")
            if config.task == "pretraining":
                old_len, old_pred = d.max_seq_len, d.get("max_predictions_per_seq", None)
                if max_predictions:
                    d.max_predictions_per_seq = int(max_predictions)
                elif seq_len and old_pred:
                    d.max_predictions_per_seq = max(1, round(old_pred * int(seq_len) / old_len))
            if seq_len:
                d.max_seq_len = int(seq_len)
    lengths = tasks.get_task(config).lengths()
    longest = max(v for k, v in lengths.items() if k.endswith("len"))
    if config.model.positional == "learned" and longest > config.model.max_len:
        raise ValueError(f"sequence length {longest} exceeds the learned position table (model.max_len={config.model.max_len})")
    if config.task == "pretraining" and (lengths["num_masked"] or 0) > lengths["seq_len"]:
        raise ValueError(f"max_predictions_per_seq={lengths['num_masked']} exceeds max_seq_len={lengths['seq_len']}")
    return config


def synthetic_batch(task, config, local_batch_size: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Random token ids with the shapes and dtypes of task.dummy_batch (no padding)."""
    rng = np.random.default_rng(seed)
    batch = dict(task.dummy_batch(local_batch_size))
    vocab = task.model_config.vocab_size
    for key in batch:  # every example / position counts (e.g. example_weights, if a task has them)
        if key.endswith("_weights"):
            batch[key] = np.ones_like(batch[key])

    def ids(shape):
        return rng.integers(1, vocab, size=shape, dtype=np.int32)

    if task.name == "translation":
        batch["inputs"] = ids(batch["inputs"].shape)
        batch["targets"] = ids(batch["targets"].shape)
        return batch
    b, seq = batch["input_ids"].shape
    batch["input_ids"] = ids((b, seq))
    types = np.zeros((b, seq), np.int32)
    if task.model_config.type_vocab_size > 1:
        types[:, seq // 2:] = 1  # sentence A, then sentence B
    batch["token_type_ids"] = types
    batch["attention_mask"] = np.ones((b, seq), np.int32)
    if task.name == "pretraining":
        p = batch["masked_lm_positions"].shape[1]
        batch["masked_lm_positions"] = np.stack(
            [np.sort(rng.choice(seq, size=p, replace=p > seq)) for _ in range(b)]
        ).astype(np.int32)
        batch["masked_lm_ids"] = ids((b, p))
        batch["masked_lm_weights"] = np.ones((b, p), np.float32)
        batch["next_sentence_labels"] = rng.integers(0, 2, size=(b,), dtype=np.int32)
    elif task.name == "classification":
        label = batch["label"]
        if label.dtype.kind == "f":
            batch["label"] = rng.uniform(0.0, 5.0, size=label.shape).astype(label.dtype)
        else:
            batch["label"] = rng.integers(0, max(task.num_labels, 1), size=label.shape, dtype=label.dtype)
    return batch


def peak_memory_gb() -> float | None:
    """Largest peak_bytes_in_use over this process's devices; None without memory statistics."""
    peaks = []
    for d in jax.local_devices():
        try:
            stats = d.memory_stats()
        except Exception:  # noqa: BLE001 - backends without statistics raise or return None
            stats = None
        if stats and "peak_bytes_in_use" in stats:
            peaks.append(stats["peak_bytes_in_use"])
    return max(peaks) / 1e9 if peaks else None


def measure(config, steps: int = 10, warmup: int = 2, peak_tflops: float | None = None,
        profile_dir: str | None = None, profile_steps: int = 3) -> dict[str, Any]:
    """Benchmarks the prepared config; returns the result record. With `profile_dir`, then traces
    `profile_steps` more steps (after the timing, so tracing does not slow the timed steps)."""
    if steps < 1 or warmup < 1:
        raise ValueError(f"--steps ({steps}) and --warmup ({warmup}) must be at least 1 (warm-up compiles)")
    task = tasks.get_task(config)
    batch_size, accum = int(config.data.batch_size), int(config.grad_accum_steps)
    if batch_size % accum:
        raise ValueError(f"batch_size={batch_size} is not divisible by grad_accum_steps={accum}")
    mesh = partitioning.make_mesh(config.mesh)
    partitioning.check_batch_size(batch_size, mesh)
    partitioning.check_batch_size(batch_size // accum, mesh, "batch_size / grad_accum_steps")

    member_list = members.parse(config)
    n_members = len(member_list) if member_list else 1
    local_rows = batch_size // jax.process_count()
    if member_list is None:
        tx, schedule = optim.make_optimizer(config.optimizer, config.model.d_model, config.num_train_steps)
        state, shardings = train_step.init_state(task, tx, batch_size, config.seed, mesh)
        compiled = train_step.compile_train_step(train_step.make_train_step(task, tx, schedule, accum), shardings, mesh)
        rng = jax.random.PRNGKey(config.seed)
        step = lambda state, batch: compiled(state, batch, rng)  # noqa: E731  (members: rng per member)
        local = synthetic_batch(task, config, local_rows, seed=config.seed + jax.process_index())
        batch = partitioning.global_batch_from_local(local, mesh)
    else:  # N runs vmapped (training/member_group.py): each member its own synthetic batch
        group = member_group.Group(config, member_list, workdir="")
        tx, schedule = group.optimizer()
        state, shardings = group.init_state(task, tx, batch_size, mesh)
        step = group.compile_step(train_step.make_train_step(task, tx, schedule, accum), shardings, mesh)
        local = member_group.stack_batches([synthetic_batch(task, config, local_rows, seed=m.seed * 7919 + jax.process_index())
                                       for m in member_list])
        batch = group.global_batch(local, mesh)
    tokens_per_step = float(np.sum(jax.device_get(task.tokens(batch))))

    t0 = time.perf_counter()
    for _ in range(warmup):
        state, metrics = step(state, batch)
    jax.block_until_ready((state, metrics))
    t1 = time.perf_counter()
    for _ in range(steps):
        state, metrics = step(state, batch)
    jax.block_until_ready((state, metrics))
    t2 = time.perf_counter()
    profile = None
    if profile_dir:
        if profile_steps < 1:
            raise ValueError(f"--profile_steps ({profile_steps}) must be at least 1")
        with jax.profiler.trace(profile_dir):
            for _ in range(profile_steps):
                state, metrics = step(state, batch)
            jax.block_until_ready((state, metrics))
        profile = _profile_record(profile_dir, profile_steps)

    step_time = (t2 - t1) / steps
    flops_per_step = tasks.get_task(config).step_flops(batch_size) * n_members
    num_devices = jax.device_count()
    device = jax.devices()[0]
    peak = flops.peak_flops_per_device(peak_tflops * 1e12 if peak_tflops else None, device.device_kind)
    lengths = tasks.get_task(config).lengths()
    record = {
        "task": config.task,
        "model_family": config.get("model_family", None),
        "variant": config.get("variant", None),
        "batch_size": batch_size,
        "members": n_members,  # runs per step (training/member_group.py); batch_size, seq_per_s: per member / all members
        **{k: v for k, v in lengths.items()},
        "grad_accum_steps": accum,
        "steps": steps,
        "warmup": warmup,
        "step_time_s": step_time,
        "steps_per_s": 1.0 / step_time,
        "seq_per_s": n_members * batch_size / step_time,
        "tokens_per_step": tokens_per_step,
        "tokens_per_s": tokens_per_step / step_time,
        "model_tflops_per_step": flops_per_step / 1e12,
        "model_tflops": flops_per_step / 1e12,
        "achieved_tflops_per_s": flops_per_step / step_time / 1e12,
        "peak_tflops_per_device": peak / 1e12 if peak else None,
        "mfu": flops.mfu(flops_per_step, 1.0 / step_time, num_devices, peak),
        "peak_memory_gb": peak_memory_gb(),
        "compile_and_warmup_s": t1 - t0,
        "final_loss": float(np.mean(jax.device_get(metrics["loss"]))),
        "compute_dtype": config.model.dtype,
        "device_kind": device.device_kind,
        "platform": device.platform,
        "num_devices": num_devices,
        "process_count": jax.process_count(),
        "mesh": dict(zip(mesh.axis_names, (int(s) for s in mesh.devices.shape))),
        "jax_version": jax.__version__,
        "flax_version": _version("flax"),
        "data_modules_imported": sorted(m for m in DATA_MODULES if m in sys.modules),
        "config": config.to_dict(),
    }
    if profile is not None:
        record["profile"] = profile
    return record


def _profile_record(profile_dir: str, profile_steps: int) -> dict[str, Any]:
    """The trace's summary (logged as tables, written to profile_dir/summary.{md,json}), compact."""
    written = profile_summary.write_summary(profile_dir, profile_steps)
    if written is None:
        return {"dir": profile_dir, "error": "no readable trace (see the warning above)"}
    summary, table = written
    logging.info("profile of %d steps (%s):\n%s", profile_steps, profile_dir, table)
    busiest = summary["timelines"][0] if summary["timelines"] else {"top": []}
    return {"dir": profile_dir, "steps": profile_steps, "timeline": [busiest.get("process"), busiest.get("thread")],
            "busy_ms_per_step": busiest.get("busy_ms_per_step"),
            "top5": [[r["name"][:80], round(r["ms_per_step"], 4)] for r in busiest["top"][:5]]}


def _version(module: str) -> str | None:
    try:
        return __import__(module).__version__
    except Exception:  # noqa: BLE001
        return None


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments {argv[1:]}")
    if FLAGS.config is None:
        raise app.UsageError("--config is required, e.g. --config=configs/bert.py:base")
    if (FLAGS.steps < 1 and not (FLAGS.decode and FLAGS.steps == 0)) or FLAGS.warmup < 1 or FLAGS.profile_steps < 1:
        raise app.UsageError("--steps, --warmup (it compiles) and --profile_steps must be at least 1 "
                             "(--decode --steps=0: the decode step's FLOPs only)")
    try:
        config = prepare_config(
            FLAGS.config, FLAGS.batch_size, FLAGS.seq_len, FLAGS.task, FLAGS.max_predictions, FLAGS.grad_accum_steps
        )
    except ValueError as e:
        raise app.UsageError(str(e)) from e
    if FLAGS.members:
        if "member_seeds" not in config:
            raise app.UsageError("--members needs a config with member_seeds (configs/glue.py)")
        config.member_seeds = ",".join(str(k) for k in range(FLAGS.members))
    if FLAGS.memory and FLAGS.decode:
        raise app.UsageError("--memory and --decode are separate modes; pass one")
    if FLAGS.memory:
        record = step_memory.memory_record(config)
        logging.info("memory: %.3f GB temp + %.3f GB arguments per device", record["temp_bytes"] / 1e9,
                     record["argument_bytes"] / 1e9)
    elif FLAGS.decode:
        d = config.data
        record = decode_speed.decode_record(config, int(d.batch_size), int(FLAGS.seq_len or d.max_len),
                                            FLAGS.beam_size, FLAGS.alpha, FLAGS.steps)
        logging.info("decode: %.2f sentences/s", record["sentences_per_s"])
    else:
        record = measure(config, FLAGS.steps, FLAGS.warmup, FLAGS.peak_tflops, FLAGS.profile_dir, FLAGS.profile_steps)
        logging.info("benchmark: %.4f s/step, %.1f seq/s", record["step_time_s"], record["seq_per_s"])
    if jax.process_index() == 0:
        print(json.dumps(record, default=str), flush=True)


def run():
    """Console-script entry point (bvt-benchmark)."""
    define_flags()
    run_absl(main)


if __name__ == "__main__":
    run()
