"""Stopping on SIGTERM/SIGHUP/SIGINT at a step every process agrees on, so the loop can save and exit."""

from __future__ import annotations

import os
import signal

import jax
import numpy as np
from absl import logging
from jax.experimental import multihost_utils


class Preempted(Exception):
    """The run saved a checkpoint at `step` and stopped on a signal; rerunning resumes it.

    `exit_code` is the shell's code for that signal, 128 + signum (143 SIGTERM, 129 SIGHUP, 130 SIGINT),
    so a scheduler tells a cut run from a finished one (exit 0)."""

    def __init__(self, step: int, signum: int):
        self.step, self.signum = step, signum
        self.exit_code = 128 + signum
        super().__init__(f"stopped by {signal.Signals(signum).name} at step {step} after saving a checkpoint; "
                         "rerun the same command to resume")


class Preemption:
    """SIGTERM/SIGHUP/SIGINT set a flag; the loop finishes the current step, saves and exits. A hangup
    (a dropped ssh session) stops the run like SIGTERM, unless the process started with SIGHUP ignored
    (nohup). The handler runs only when Python is between calls, so the loop bounds how far it
    dispatches ahead of the device (config.steps_in_flight): otherwise it waits out a whole log window
    before reading it.

    Multi-process, every process must stop at the same step. With JAX's preemption service (on by
    default in jax.distributed) its own SIGTERM notifier tells the coordination service, which picks
    the step (multihost_utils.reached_preemption_sync_point): no collective per step. Without it the
    flag is all-gathered every step, which waits on the device each step."""

    def __init__(self, step: int):
        self.requested = False
        self.signum = signal.SIGTERM  # the signal received here (another process's: SIGTERM)
        self._previous = {}
        self._service = jax.process_count() > 1 and _preemption_service(step)
        # with the service, SIGTERM stays with its notifier; SIGINT and SIGHUP are handed to it as a SIGTERM
        for sig in (signal.SIGINT, signal.SIGHUP) if self._service else (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            if sig == signal.SIGHUP and signal.getsignal(sig) == signal.SIG_IGN:
                continue  # nohup: the caller asked for hangups to be ignored
            self._previous[sig] = signal.signal(sig, self._handle)

    def _handle(self, signum, frame):
        logging.warning("received signal %d: saving a checkpoint after this step", signum)
        self.requested, self.signum = True, signum
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
