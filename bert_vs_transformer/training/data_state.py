"""The data-iterator state in a checkpoint: one JSON file per process, as grain's own handler writes.

Every process saves its own iterator's state as `process_<i>-of-<n>.json`. On restore a process
reads its own file; when the run resumes on another process count it gets process 0's state, which
`records.DataIterator.set_state` accepts only for layout-invariant (unpacked) streams: a packed
stream resumes exactly on the same number of processes and is refused, in one line, on any other.
(grain.checkpoint.CheckpointHandler writes the same files but restores only on the same count, and
only grain iterators; ours wrap one with the pipeline's metadata.)
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import jax
import orbax.checkpoint as ocp
from etils import epath


def _name(index: int, count: int) -> str:
    return f"process_{index}-of-{count}.json"


class DataStateHandler(ocp.CheckpointHandler):
    """Orbax handler: saves and restores this process's data-iterator state (a JSON dict)."""

    def save(self, directory: epath.Path, args: "DataStateSave") -> None:
        directory = epath.Path(directory)
        (directory / _name(jax.process_index(), jax.process_count())).write_text(json.dumps(args.state))

    def restore(self, directory: epath.Path, args: "DataStateRestore | None" = None) -> dict[str, Any]:
        directory = epath.Path(directory)
        for candidate in (
            directory / _name(jax.process_index(), jax.process_count()),  # the same layout
            *sorted(directory.glob(_name(0, "*"))),  # another process count: process 0's
            directory / "metadata",  # written by orbax's JsonCheckpointHandler (one state for all)
        ):
            if candidate.exists():
                return json.loads(candidate.read_text())
        return {}

    def metadata(self, directory: epath.Path) -> None:
        return None

    def finalize(self, directory: epath.Path) -> None:
        pass

    def close(self) -> None:
        pass


@ocp.args.register_with_handler(DataStateHandler, for_save=True)
@dataclasses.dataclass
class DataStateSave(ocp.args.CheckpointArgs):
    state: dict[str, Any]


@ocp.args.register_with_handler(DataStateHandler, for_restore=True)
@dataclasses.dataclass
class DataStateRestore(ocp.args.CheckpointArgs):
    pass
