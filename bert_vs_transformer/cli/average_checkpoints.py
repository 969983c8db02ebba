"""Average the parameters of a run's last k checkpoints (Vaswani et al. 2017, 6.1: "the base
models ... averaging the last 5 checkpoints").

    python -m bert_vs_transformer.cli.average_checkpoints --workdir=DIR [--last=5 | --steps=a,b,c]
        [--output_dir=DIR/averaged] [--output_step=N] [--overwrite]

Writes a checkpoint with the Checkpointer's layout into OUTPUT_DIR/checkpoints/<step> (state:
the element-wise mean of the parameters, computed in float64 and cast back, with the optimizer
state and step of the newest averaged checkpoint; its data-iterator state; its config) plus
OUTPUT_DIR/config.json and OUTPUT_DIR/averaged.json (which steps), so that
`translate --workdir=OUTPUT_DIR` decodes with the averaged model. <step> is the newest averaged
step unless --output_step names another (the state's own step counter stays the newest one).
Prints one JSON line: steps, output_dir, output_step.

Fewer than k checkpoints in DIR is an error (train with --config.keep_checkpoints >= k, or pass
--last / --steps explicitly), so a table never silently reports a 3-checkpoint average as 5.
The source directory is only read (a read-only orbax manager), so a running job is unaffected.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any, Sequence

import jax
import numpy as np
import orbax.checkpoint as ocp
from absl import app, flags, logging

from bert_vs_transformer import tasks
from bert_vs_transformer.cli import fail, run_absl
from bert_vs_transformer.data import storage
from bert_vs_transformer.models import partitioning
from bert_vs_transformer.training import checkpoints, data_state, optim, run_loading, train_step

FLAGS = flags.FLAGS


def define_flags() -> None:
    """The command's flags (defined when it runs, so importing the module defines none)."""
    flags.DEFINE_string("workdir", None, "Run directory whose checkpoints are averaged.")
    flags.DEFINE_integer("last", 5, "Average the last k checkpoints (Vaswani 6.1: 5).")
    flags.DEFINE_list("steps", None, "Explicit checkpoint steps to average (instead of --last).")
    flags.DEFINE_string("output_dir", None, "Where to write (default: WORKDIR/averaged).")
    flags.DEFINE_integer("output_step", None,
                         "Step number of the written checkpoint (default: the newest averaged).")
    flags.DEFINE_bool("overwrite", False, "Replace an existing checkpoint at the output step.")


def choose_steps(available: Sequence[int], last: int | None = None, steps: Sequence[int] | None = None) -> list[int]:
    available = sorted(int(s) for s in available)
    if steps:
        chosen = sorted({int(s) for s in steps})
        missing = [s for s in chosen if s not in available]
        if missing:
            raise ValueError(f"no checkpoint at steps {missing}; available: {available}")
        return chosen
    if last is None or last < 1:
        raise ValueError(f"--last must be >= 1, got {last}")
    if len(available) < last:
        raise ValueError(
            f"asked to average the last {last} checkpoints but only {len(available)} exist (steps {available}); "
            f"pass --last={len(available)} or train with --config.keep_checkpoints={last} or more"
        )
    return available[-last:]


def average_params(workdir: str, config, steps: Sequence[int], manager=None) -> Any:
    """The element-wise mean of the parameters of `steps` (host numpy arrays, original dtypes)."""

    manager = manager or run_loading.read_only_manager(workdir)
    total = None
    dtypes = None
    for s in steps:
        params, _ = run_loading.restore_params(workdir, config, s, manager=manager)
        host = jax.tree_util.tree_map(np.asarray, jax.device_get(params))
        if total is None:
            dtypes = jax.tree_util.tree_map(lambda x: x.dtype, host)
            total = jax.tree_util.tree_map(lambda x: x.astype(np.float64), host)
        else:
            total = jax.tree_util.tree_map(lambda a, x: a + x.astype(np.float64), total, host)
        del params, host
    return jax.tree_util.tree_map(lambda a, d: (a / len(steps)).astype(d), total, dtypes)


def average_checkpoints(workdir: str, *, last: int | None = 5, steps: Sequence[int] | None = None,
                        output_dir: str | None = None, output_step: int | None = None,
                        overwrite: bool = False) -> dict[str, Any]:
    """Averages and writes (see the module docstring); returns {steps, output_dir, output_step}."""

    manager = run_loading.read_only_manager(workdir)
    run_loading.resolve_step(manager, None, workdir)  # FileNotFoundError when it holds no complete checkpoint
    chosen = choose_steps(manager.all_steps(), last, steps)
    newest = chosen[-1]
    source = storage.as_path(workdir)
    out = storage.as_path(output_dir) if output_dir else source / "averaged"  # local or gs://
    output_dir = str(out)
    output_step = int(newest if output_step is None else output_step)
    if out == source:
        raise ValueError("--output_dir must differ from --workdir (the averaged checkpoint would join the run's own)")
    config = run_loading.load_config(workdir, newest, manager)
    averaged = average_params(workdir, config, chosen, manager)

    # The newest checkpoint's full train state (optimizer state, step) and data state, on one device.
    task = tasks.get_task(config)
    tx, _ = optim.make_optimizer(config.optimizer, int(config.model.d_model), int(config.num_train_steps))
    mesh = partitioning.make_mesh({"data": 1, "fsdp": 1, "tensor": 1}, devices=[jax.local_devices()[0]])
    abstract, _ = train_step.abstract_state(task, tx, 1, int(config.seed), mesh)
    manager.close()
    manager = run_loading.read_only_manager(workdir)  # a manager binds each item to one handler
    restored = manager.restore(newest, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract), data=data_state.DataStateRestore()))
    manager.close()
    state = restored["state"]
    saved_data_state = dict(restored["data"] or {})
    params = jax.tree_util.tree_map(lambda x, a: jax.device_put(x, a.sharding), averaged, abstract.params)
    state = state.replace(params=params)

    ckpt = checkpoints.Checkpointer(output_dir, keep=None, async_save=False)
    try:
        if output_step in ckpt.all_steps():
            if not overwrite:
                raise FileExistsError(f"{output_dir} already has a checkpoint at step {output_step}; pass --overwrite")
            ckpt.manager.delete(output_step)
        ckpt.save(output_step, state, saved_data_state, config.to_dict())
        ckpt.wait()
    finally:
        ckpt.close()
    storage.write_atomic(out / "config.json", json.dumps(config.to_dict(), indent=2, default=str))
    info = {"steps": chosen, "source_workdir": str(source), "output_dir": output_dir,
            "output_step": output_step, "state_step": int(jax.device_get(state.step))}
    path = out / "averaged.json"
    records = json.loads(path.read_text()) if path.exists() else {}
    records[str(output_step)] = info
    storage.write_atomic(path, json.dumps(records, indent=2))
    return info


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    if not flags.FLAGS["verbosity"].present:
        logging.set_verbosity(logging.ERROR)  # orbax warns about read-only managers
    if FLAGS.workdir is None:
        raise app.UsageError("--workdir is required")
    t0 = time.time()
    try:
        info = average_checkpoints(FLAGS.workdir, last=FLAGS.last, steps=[int(s) for s in FLAGS.steps or []] or None,
                                   output_dir=FLAGS.output_dir, output_step=FLAGS.output_step,
                                   overwrite=FLAGS.overwrite)
    except (ValueError, FileNotFoundError, FileExistsError) as e:
        fail(e)
    print(f"averaged steps {info['steps']} of {info['source_workdir']} into {info['output_dir']}/checkpoints/"
          f"{info['output_step']} in {time.time() - t0:.1f} s", file=sys.stderr)
    print(json.dumps(info), flush=True)


def run():
    """Console-script entry point (bvt-average-checkpoints)."""
    define_flags()
    run_absl(main)


if __name__ == "__main__":
    run()
