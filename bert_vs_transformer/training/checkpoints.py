"""Orbax checkpoints: train state + data-iterator state (per process) + config, keep-last-K, asynchronous.

A checkpoint restores onto whatever mesh the restoring run uses (orbax reshards to the target
shardings), and orbax's atomic rename means an interrupted write is never mistaken for a
checkpoint: the rerun resumes from the previous complete one. (On gs:// orbax writes in place and
marks a complete checkpoint with a commit file instead; `saved_steps` asks orbax which are complete.)
The workdir may be local or gs:// (etils.epath, data/storage.py).
"""

from __future__ import annotations

import json
from typing import Any

import jax
import orbax.checkpoint as ocp
from jax.experimental import multihost_utils
from absl import logging

from bert_vs_transformer.data import storage
from bert_vs_transformer.models import model_config
from bert_vs_transformer.training import data_state as data_state_lib


class Checkpointer:
    """Saves/restores {'state', 'data', 'config'} under DIR/checkpoints/<step>."""

    def __init__(self, workdir, keep: int = 3, async_save: bool = True):
        self.directory = storage.as_path(workdir) / "checkpoints"
        options = ocp.CheckpointManagerOptions(
            max_to_keep=keep,
            enable_async_checkpointing=async_save,
            cleanup_tmp_directories=True,  # leftovers of a write killed midway
            create=True,
        )
        self.manager = ocp.CheckpointManager(self.directory, options=options)

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def all_steps(self) -> list[int]:
        return list(self.manager.all_steps())

    def save(self, step: int, state: Any, data_state: dict | None, config_dict: dict, force: bool = True) -> None:
        args = ocp.args.Composite(
            state=ocp.args.StandardSave(state),
            data=data_state_lib.DataStateSave(data_state or {}),
            config=ocp.args.JsonSave(config_dict),
        )
        self.manager.save(step, args=args, force=force)

    def saved_config(self, step: int | None = None) -> dict | None:
        """The config stored with a checkpoint (read without touching the arrays)."""
        step = self.latest_step() if step is None else step
        if step is None:
            return None
        found = read_saved_config(self.directory.parent, step)
        if found is not None:
            return found
        restored = self.manager.restore(step, args=ocp.args.Composite(config=ocp.args.JsonRestore()))
        return dict(restored["config"])

    def set_aside(self, step: int, reason: str) -> str:
        """Renames the unreadable checkpoint <step> to <step>.unreadable (orbax then ignores it, and a
        new save at that step does not collide); nothing is deleted. -> the new path."""
        src = self.directory / str(step)
        dst = src.with_name(f"{step}.unreadable")
        n = 1
        while dst.exists():
            n += 1
            dst = src.with_name(f"{step}.unreadable{n}")
        if jax.process_index() == 0:
            src.rename(dst)  # on an object store: a copy of each object, then a delete
            (dst / "WHY_UNREADABLE.txt").write_text(reason + "\n")
        if jax.process_count() > 1:
            multihost_utils.sync_global_devices(f"bvt_set_aside_{step}")
        self.manager.reload()
        return str(dst)

    def restore(self, step: int, abstract_state: Any) -> tuple[Any, dict]:
        """-> (state placed by abstract_state's shardings, data-iterator state)."""
        restored = self.manager.restore(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardRestore(abstract_state),
                data=data_state_lib.DataStateRestore(),
            ),
        )
        logging.info("restored checkpoint %s/%d", self.directory, step)
        return restored["state"], dict(restored["data"] or {})

    def wait(self) -> None:
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()


def model_mismatch(saved: dict, current: dict) -> list[str]:
    """Model fields a resume may not change on which a saved run config and this one differ."""
    return model_config.resume_mismatch(saved.get("model", {}), current.get("model", {}))


def read_saved_config(workdir, step: int) -> dict | None:
    """The run config saved with checkpoint `step` of WORKDIR, read from its JSON file (None if absent
    or unreadable); opens no CheckpointManager, so it writes nothing."""
    path = storage.as_path(workdir) / "checkpoints" / str(step) / "config"
    for candidate in (path, path / "metadata"):
        if candidate.is_file():
            try:
                return json.loads(candidate.read_text())
            except (OSError, ValueError):
                return None
    return None


def state_to_host(state: Any) -> Any:
    return jax.device_get(state)


def saved_steps(workdir) -> list[int]:
    """Steps with a complete checkpoint in WORKDIR/checkpoints, as orbax tells them (an unfinished
    write carries a suffix locally, lacks its commit file on gs://); opens no CheckpointManager."""
    directory = storage.as_path(workdir) / "checkpoints"
    if not directory.is_dir():
        return []
    return sorted(ocp.path.step.checkpoint_steps(directory))


def select_step(workdir, metric: str = "eval_mlm_loss", mode: str = "min") -> tuple[int | None, str]:
    """The checkpoint to build on, by a held-out metric in WORKDIR/metrics.jsonl: None (= the latest)
    while the metric was still improving at its last evaluation; else the saved step where it was
    best (the run went on past its best: over-fitting a small corpus). -> (step or None, reason)."""
    # Not orbax's best_fn / best_mode: they choose which checkpoints to keep while saving; this picks
    # among the kept ones after the run, from the metrics it logged, without changing retention.
    if mode not in ("min", "max"):
        raise ValueError(f"mode={mode!r}: use 'min' or 'max'")
    sign = 1.0 if mode == "min" else -1.0
    evaluated: dict[int, float] = {}
    path = storage.as_path(workdir) / "metrics.jsonl"
    if path.is_file():
        for line in path.read_text().split("\n"):
            rec = json.loads(line) if line.strip() else {}
            if metric in rec and "step" in rec:
                evaluated[int(rec["step"])] = float(rec[metric])
    saved = set(saved_steps(workdir))
    if not evaluated or not saved:
        return None, f"latest: no {metric} evaluations or no checkpoints in {workdir}"
    best = min(evaluated, key=lambda s: (sign * evaluated[s], -s))
    last = max(evaluated)
    if best == last:
        return None, f"latest: {metric} best at its last evaluation ({evaluated[last]:.4g} at step {last})"
    candidates = [s for s in evaluated if s in saved]
    if not candidates:
        return None, f"latest: {metric} was best at step {best}, but no evaluated step has a checkpoint left"
    pick = min(candidates, key=lambda s: (sign * evaluated[s], -s))
    return pick, (f"step {pick}: {metric} {evaluated[pick]:.4g} there, {evaluated[last]:.4g} at the last "
                  f"evaluation (step {last}); best overall {evaluated[best]:.4g} at step {best}")
