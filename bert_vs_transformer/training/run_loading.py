"""Loading a finished (or still running) run: its config and parameters, read-only.

    config, params, step = run_loading.load_run(workdir, step=None)   # latest checkpoint

`load_run` reads the config stored with the checkpoint and only the `params` subtree of its train
state (orbax partial restore), through a read-only CheckpointManager that never writes to or
cleans up the directory (safe while the owning run is still training). A member run's
parameters come stacked on a leading member axis. The workdir may be local or gs:// (etils.epath).
"""

from __future__ import annotations

import json
import sys
from typing import Any

import flax.linen as nn
import jax
import ml_collections
import orbax.checkpoint as ocp

from bert_vs_transformer import tasks
from bert_vs_transformer.data import storage
from bert_vs_transformer.training import members


class UnreadableCheckpointError(ValueError):
    """A checkpoint whose files cannot be read (truncated, damaged, or of another model)."""


def checkpoint_directory(workdir):
    return storage.as_path(workdir) / "checkpoints"


def read_only_manager(workdir: str):
    """An orbax CheckpointManager over DIR/checkpoints that never writes or deletes (safe while
    the run that owns the directory is still training)."""
    directory = checkpoint_directory(workdir)
    if not storage.as_path(workdir).is_dir():
        raise FileNotFoundError(f"workdir {workdir} does not exist; pass the --workdir of a training run")
    if not directory.is_dir():
        raise FileNotFoundError(f"no checkpoints directory {directory}: {workdir} is not a training workdir, or its "
                                "run has saved no checkpoint yet")
    return ocp.CheckpointManager(directory, options=ocp.CheckpointManagerOptions(read_only=True, create=False))


def resolve_step(manager, step: int | None, workdir: str) -> int:
    steps = sorted(manager.all_steps())
    if not steps:
        raise FileNotFoundError(f"no complete checkpoint in {checkpoint_directory(workdir)}; wait for the run's "
                                "first save (config.checkpoint_every_steps) or pass another --workdir")
    if step is None:
        return steps[-1]
    if step not in steps:
        raise FileNotFoundError(f"no checkpoint at step {step} in {checkpoint_directory(workdir)}; it has {steps}")
    return int(step)


def load_config(workdir: str, step: int | None = None, manager=None):
    """The run's config as an ml_collections.ConfigDict: the one saved with the checkpoint at
    `step` (latest if None), else DIR/config.json."""
    raw = None
    try:
        manager = manager or read_only_manager(workdir)
        step = resolve_step(manager, step, workdir)
        base = checkpoint_directory(workdir) / str(step) / "config"
        for candidate in (base, base / "metadata"):
            if candidate.is_file():
                raw = json.loads(candidate.read_text())
                break
        if raw is None:
            raw = dict(manager.restore(step, args=ocp.args.Composite(config=ocp.args.JsonRestore()))["config"])
    except (FileNotFoundError, KeyError, ValueError):
        raw = None
    if raw is None:
        path = storage.as_path(workdir) / "config.json"
        if not path.is_file():
            raise FileNotFoundError(f"{workdir}: no checkpoint config and no config.json")
        raw = json.loads(path.read_text())
    return ml_collections.ConfigDict(raw)


def abstract_params(config, device=None) -> Any:
    """ShapeDtypeStructs of the model's (unboxed) parameters, placed on one device (a member run's:
    [members, ...])."""
    device = device or jax.local_devices()[0]
    task = tasks.get_task(config)
    batch = task.dummy_batch(1)
    init = lambda: task.model(True).init(jax.random.PRNGKey(0), *task.init_args(batch))["params"]  # noqa: E731
    shapes = nn.unbox(jax.eval_shape(init))
    group = members.parse(config)  # a member run's checkpoint stacks its members on a leading axis
    if group:
        shapes = jax.tree_util.tree_map(lambda a: jax.ShapeDtypeStruct((len(group),) + a.shape, a.dtype), shapes)
    sharding = jax.sharding.SingleDeviceSharding(device)
    return jax.tree_util.tree_map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=sharding), shapes)


def restore_params(workdir: str, config, step: int | None = None, device=None, manager=None) -> tuple[Any, int]:
    """(parameters of the checkpoint at `step` (latest if None) on one device, the step).

    Reads only the 'params' subtree of the saved train state (orbax partial restore)."""
    owned = manager is None
    manager = manager or read_only_manager(workdir)
    try:
        step = resolve_step(manager, step, workdir)
        target = abstract_params(config, device)
        restore_args = jax.tree_util.tree_map(lambda a: ocp.ArrayRestoreArgs(sharding=a.sharding), target)
        previous = sys.unraisablehook
        sys.unraisablehook = _quiet_aborted_reads(previous)  # kept if the restore fails: reads call back late
        try:
            restored = manager.restore(step, args=ocp.args.Composite(
                state=ocp.args.PyTreeRestore(item={"params": target}, restore_args={"params": restore_args},
                                             partial_restore=True)))
            sys.unraisablehook = previous
        except Exception as e:  # noqa: BLE001  (orbax and tensorstore raise many kinds for a damaged file)
            reason = ": ".join(" ".join(str(e).split(" [tensorstore_spec")[0].split()).split(": ")[-2:])[-300:]
            raise UnreadableCheckpointError(
                f"checkpoint step {step} of {workdir} cannot be read ({type(e).__name__}: {reason}); its files are "
                "truncated or damaged: load another step, or restore the files from a copy") from e
    finally:
        if owned:
            manager.close()
    return restored["state"]["params"], step


def _quiet_aborted_reads(previous):
    """An unraisable-exception hook that drops the 'Event loop is closed' reports of reads a failed restore
    left in flight (tensorstore calls back into orbax's closed asyncio loop) and passes on the rest."""

    def hook(unraisable):
        if not (unraisable.exc_type is RuntimeError and str(unraisable.exc_value) == "Event loop is closed"):
            previous(unraisable)

    return hook


def load_run(workdir: str, step: int | None = None, device=None) -> tuple[Any, Any, int]:
    """-> (config, params on one device, step) of a run directory."""
    manager = read_only_manager(workdir)
    try:
        step = resolve_step(manager, step, workdir)
        config = load_config(workdir, step, manager)
        params, step = restore_params(workdir, config, step, device, manager)
    finally:
        manager.close()
    return config, params, step
