"""Entry point: python -m bert_vs_transformer.main --config=configs/<file>.py:<args> --workdir=DIR
[--config.k=v ...]. Trains, evaluates and checkpoints; rerunning the same command resumes.

Several hosts: run the same command on every host (launch/ does this) with either explicit
--coordinator_address/--num_processes/--process_id, or nothing on a Cloud TPU pod (JAX finds it
through the metadata server) and inside a SLURM job step of several tasks (training/distributed.py).

Exit status: 0 when the run finished (a rerun of a finished run says so and writes nothing); 2 for
a config, workdir, data or multi-host layout it refuses (one line on stderr, nothing written to the
workdir); 128 + the signal (143 SIGTERM, 129 SIGHUP, 130 SIGINT) when a signal stopped it after it
saved a checkpoint: the rerun resumes. 143 is the preemption status schedulers requeue on.
"""

from __future__ import annotations

import logging as pylogging
import sys
import traceback

import jax
from absl import app, flags, logging
from etils import epath
from ml_collections import config_flags

from bert_vs_transformer import config_args
from bert_vs_transformer.training import distributed, loop, preemption

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file (configs/<family>.py:<args>).", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics.jsonl and TensorBoard files.")
_COORDINATOR = flags.DEFINE_string("coordinator_address", None, "host:port of process 0 (multi-host).")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Number of processes (multi-host).")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "This process's index (multi-host).")
_VERBOSE = flags.DEFINE_bool("verbose", False, "Show the traceback of a refused config, workdir or data too.")
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
    try:
        distributed.initialize_distributed(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value)
    except distributed.DistributedError as e:
        _refuse(e, e.__cause__ or e)
    config = _CONFIG.value
    _check_workdir(_WORKDIR.value)
    logging.info("devices: %d x %s, processes: %d", jax.device_count(), jax.devices()[0].device_kind, jax.process_count())
    try:
        loop.train_and_evaluate(config, _WORKDIR.value)
    except loop.ConfigError as e:  # refused before anything was written
        _refuse(e, e.__cause__ or e.__context__ or e)
    except preemption.Preempted as e:  # saved; the exit status says it was cut (SLURM requeues on it)
        print(f"stopped: {e}", file=sys.stderr)
        sys.exit(e.exit_code)


def _check_workdir(workdir: str) -> None:
    """Refuses a workdir that is a file, has a URI scheme etils.epath does not read, or is gs://
    without GCS support installed."""
    try:
        path = epath.Path(workdir)
        is_file = path.exists() and not path.is_dir()
    except KeyError:  # epath.Path of an unknown scheme
        _refuse(f"--workdir={workdir}: etils.epath reads no {workdir.split('://')[0]}:// paths "
                "(local paths, gs://, s3://, az://, hf://)")
    except ImportError as e:  # gs:// without gcsfs
        _refuse(f"--workdir={workdir}: {e}; pip install 'bert_vs_transformer[gcs]' (docs/training.md)")
    if is_file:
        _refuse(f"--workdir={workdir} is a file, not a directory; pass a new or existing directory")


def _refuse(message, error: BaseException | None = None, verbose: bool | None = None):
    """Exits with status 2 after one line `error: ...` on stderr (and, with --verbose, `error`'s traceback)."""
    if verbose is None:
        verbose = _VERBOSE.value or logging.get_verbosity() >= logging.DEBUG
    if error is not None and verbose:
        traceback.print_exception(error)
    print("error: " + " ".join(str(message).split()), file=sys.stderr, flush=True)
    sys.exit(2)


def _parse_flags(argv):
    """absl's flag parsing, with a bad flag, config file, variant or override reported as one line."""
    try:
        return config_args.parse_flags(argv)
    except config_args.FlagError as e:
        _refuse(e, e, any(a in ("--verbose", "--verbose=true", "--verbose=1") for a in argv))


def run():
    """Console-script entry point."""
    app.run(main, flags_parser=_parse_flags)


if __name__ == "__main__":
    run()
