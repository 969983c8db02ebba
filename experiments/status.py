"""Where a run's workdir stands: new, started, partial (a checkpoint to resume from) or finished.

Finished: metrics.jsonl records the last step (num_train_steps) and checkpoints/<that step> is
complete (orbax renames a local checkpoint into place only once it is complete; on gs:// it writes
in place and adds commit_success.txt last). Anything else with a workdir is resumed by rerunning
the same command. WORKDIR may be local or gs:// (etils.epath).

    python -m experiments.status WORKDIR [--steps=N] [--quiet]

prints one JSON line and exits 0 when finished, 1 otherwise (the remote launchers' guard).
"""

from __future__ import annotations

import dataclasses
import json
import sys

from etils import epath

from experiments.sweep import ArgumentParser

NEW, STARTED, PARTIAL, FINISHED = "new", "started", "partial", "finished"
# orbax's marker of a complete checkpoint written in place on gs:// (atomicity.COMMIT_SUCCESS_FILE;
# named here so that a status check imports neither orbax nor jax)
COMMIT_SUCCESS_FILE = "commit_success.txt"


@dataclasses.dataclass(frozen=True)
class Status:
    state: str  # new | started | partial | finished
    checkpoint: int | None  # latest complete checkpoint (where a rerun resumes)
    logged: int | None  # last step in metrics.jsonl
    total: int | None  # num_train_steps

    @property
    def finished(self) -> bool:
        return self.state == FINISHED

    def describe(self) -> str:
        steps = "" if self.total is None else f" ({self.total} steps)"
        if self.state == FINISHED:
            return f"finished{steps}"
        if self.state == PARTIAL:
            return f"partial: resumes from step {self.checkpoint}/{'?' if self.total is None else self.total}"
        if self.state == STARTED:
            return f"started, no checkpoint: restarts{steps}"
        return f"new{steps}"


def checkpoint_steps(workdir: str) -> list[int]:
    directory = epath.Path(workdir) / "checkpoints"
    if not directory.is_dir():
        return []
    in_place = "://" in str(directory)  # an object store: complete once the commit file is there
    return sorted(int(d.name) for d in directory.iterdir()
                  if d.name.isdigit() and d.is_dir() and (not in_place or (d / COMMIT_SUCCESS_FILE).exists()))


def read_metrics(workdir: str) -> list[dict]:
    """metrics.jsonl's records (a torn last line from a killed writer is ignored)."""
    path = epath.Path(workdir) / "metrics.jsonl"
    records = []
    if path.exists():
        for line in path.read_text().split("\n"):
            if not line.strip():
                continue
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return records


def saved_total(workdir: str) -> int | None:
    """num_train_steps of the config the run was started with (DIR/config.json)."""
    try:
        return int(json.loads((epath.Path(workdir) / "config.json").read_text())["num_train_steps"])
    except (OSError, KeyError, TypeError, ValueError):
        return None


def run_status(workdir: str, total: int | None = None) -> Status:
    """`total`: the step that finishes the run (None = the workdir's config.json)."""
    if not epath.Path(workdir).is_dir():
        return Status(NEW, None, None, total)
    total = total if total is not None else saved_total(workdir)
    steps = checkpoint_steps(workdir)
    logged = [int(r["step"]) for r in read_metrics(workdir) if "step" in r]
    checkpoint = steps[-1] if steps else None
    last = max(logged) if logged else None
    if total is not None and total in steps and total in logged:
        return Status(FINISHED, checkpoint, last, total)
    return Status(PARTIAL if steps else STARTED, checkpoint, last, total)


def main(argv=None) -> int:
    parser = ArgumentParser(prog="python -m experiments.status", description=__doc__.split("\n")[0])
    parser.add_argument("workdir")
    parser.add_argument("--steps", type=int, default=None, help="num_train_steps (default: DIR/config.json)")
    parser.add_argument("--quiet", action="store_true", help="print nothing, only the exit code")
    args = parser.parse_args(argv)
    status = run_status(args.workdir, args.steps)
    if not args.quiet:
        print(json.dumps(dataclasses.asdict(status)))
    return 0 if status.finished else 1


if __name__ == "__main__":
    sys.exit(main())
