"""Orbax checkpoints: train state + data-iterator state + config, keep-last-K, asynchronous.

A checkpoint restores onto whatever mesh the restoring run uses (orbax reshards to the target
shardings), and orbax's atomic rename means an interrupted write is never mistaken for a
checkpoint: the rerun resumes from the previous complete one.
"""

from __future__ import annotations

import json
import os
from typing import Any

import jax
import orbax.checkpoint as ocp
from absl import logging


class Checkpointer:
    """Saves/restores {'state', 'data', 'config'} under DIR/checkpoints/<step>."""

    def __init__(self, workdir: str, keep: int = 3, async_save: bool = True):
        self.directory = os.path.abspath(os.path.join(workdir, "checkpoints"))
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
            data=ocp.args.JsonSave(data_state or {}),
            config=ocp.args.JsonSave(config_dict),
        )
        self.manager.save(step, args=args, force=force)

    def saved_config(self, step: int | None = None) -> dict | None:
        """The config stored with a checkpoint (read without touching the arrays)."""
        step = self.latest_step() if step is None else step
        if step is None:
            return None
        path = os.path.join(self.directory, str(step), "config")
        for candidate in (path, os.path.join(path, "metadata")):
            if os.path.isfile(candidate):
                with open(candidate) as f:
                    return json.load(f)
        restored = self.manager.restore(step, args=ocp.args.Composite(config=ocp.args.JsonRestore()))
        return dict(restored["config"])

    def restore(self, step: int, abstract_state: Any) -> tuple[Any, dict]:
        """-> (state placed by abstract_state's shardings, data-iterator state)."""
        restored = self.manager.restore(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardRestore(abstract_state),
                data=ocp.args.JsonRestore(),
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
    """Model fields on which a saved config and the current one differ (shape-relevant or not)."""
    a, b = saved.get("model", {}), current.get("model", {})
    ignore = {"dtype", "remat_policy", "attention_kernel", "dropout_rate", "attention_dropout_rate"}
    fields = sorted((set(a) | set(b)) - ignore)
    return [f"model.{k}: checkpoint {a.get(k)!r} vs config {b.get(k)!r}" for k in fields if a.get(k) != b.get(k)]


def state_to_host(state: Any) -> Any:
    return jax.device_get(state)
