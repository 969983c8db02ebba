"""Entry point: python -m bert_vs_transformer.main --config=configs/<file>.py:<args> --workdir=DIR
[--config.k=v ...]. Trains, evaluates and checkpoints; rerunning the same command resumes.

Several hosts: run the same command on every host (launch/ does this) with either explicit
--coordinator_address/--num_processes/--process_id, or nothing on TPU pods and SLURM, where
jax.distributed detects the cluster from the environment.

Exit status: 0 when the run finished (a rerun of a finished run says so and writes nothing); 2 for
a config, workdir or data it refuses (one line on stderr, nothing written to the workdir); 128 +
the signal (143 SIGTERM, 130 SIGINT) when a signal stopped it after it saved a checkpoint, so a
scheduler requeues it and the rerun resumes.
"""

from __future__ import annotations

import logging as pylogging
import sys

import jax
from absl import app, flags, logging
from ml_collections import config_flags

from bert_vs_transformer.training import distributed, loop, preemption

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file (configs/<family>.py:<args>).", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics.jsonl and TensorBoard files.")
_COORDINATOR = flags.DEFINE_string("coordinator_address", None, "host:port of process 0 (multi-host).")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Number of processes (multi-host).")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "This process's index (multi-host).")
flags.mark_flags_as_required(["config", "workdir"])


class _QuietLibraries:
    """Keeps INFO lines from this package only (orbax and jax log every save step at INFO)."""

    def filter(self, record) -> bool:
        return record.levelno >= pylogging.WARNING or "bert_vs_transformer" in record.pathname


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    if logging.get_verbosity() <= logging.INFO:  # --verbosity=1 shows every library's INFO lines
        logging.get_absl_handler().addFilter(_QuietLibraries())
    distributed.initialize_distributed(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value)
    config = _CONFIG.value
    logging.info("devices: %d x %s, processes: %d", jax.device_count(), jax.devices()[0].device_kind, jax.process_count())
    try:
        loop.train_and_evaluate(config, _WORKDIR.value)
    except loop.ConfigError as e:  # refused before anything was written
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except preemption.Preempted as e:  # saved; the exit status says it was cut (SLURM requeues on it)
        print(f"stopped: {e}", file=sys.stderr)
        sys.exit(e.exit_code)


def _parse_flags(argv):
    """absl's flag parsing, with config-override mistakes reported as one line."""
    try:
        return flags.FLAGS(argv)
    except flags.Error as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except (AttributeError, KeyError, TypeError, ValueError) as e:  # raised by config_flags overrides
        bad = [a for a in argv[1:] if a.startswith("--config.")]
        detail = str(e).strip("'\"").replace("\\n", " ").replace("\n", " ").replace("\\'", "")
        print(f"error: bad config override among {bad}: no such field or wrong type: {detail}", file=sys.stderr)
        sys.exit(2)


def run():
    """Console-script entry point."""
    app.run(main, flags_parser=_parse_flags)


if __name__ == "__main__":
    run()
