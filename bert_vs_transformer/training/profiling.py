"""Tracing a window of training steps with jax.profiler, and its per-kernel summary."""

from __future__ import annotations

import os
import shutil
import tempfile

import jax
from absl import logging
from etils import epath

from bert_vs_transformer.data import storage
from bert_vs_transformer.training import profile_summary


class StepProfiler:
    """config.profile_steps > 0: traces that many steps (input pipeline included) with jax.profiler
    into WORKDIR/profile, starting config.profile_start_step steps into this run (after compilation),
    then logs the top kernels per step and writes profile/summary.md (profile_summary.py). The log
    window holding the traced steps reports a lower rate (tracing and its summary take time), as the
    first window does with compilation: put profile_start_step inside the first window. With a
    gs:// workdir the trace is written to a local temporary folder, summarised there and then
    copied to WORKDIR/profile (the profiler and the summary read and write local files)."""

    def __init__(self, config, workdir: str, first_step: int, is_main: bool):
        self.n = int(config.get("profile_steps", 0) or 0)
        self.start = first_step + int(config.get("profile_start_step", 10) or 0)
        self.dest = storage.as_path(workdir) / "profile"
        self.remote = storage.is_remote(self.dest)
        self.dir = os.fspath(self.dest)  # where the trace is written: local, else a temporary copy
        self.is_main, self.active = is_main, False

    def before(self, step: int) -> None:
        if self.n > 0 and step == self.start:
            if self.remote:
                self.dir = tempfile.mkdtemp(prefix="bvt-profile-")
            jax.profiler.start_trace(self.dir)
            self.active = True

    def after(self, step: int, metrics) -> bool:
        """Stops the trace after its last step (and summarises it); True if it did."""
        if not (self.active and step == self.start + self.n):
            return False
        jax.block_until_ready(metrics)
        self.close()
        if self.is_main:
            self._summarize(step)
        if self.remote:
            self._upload()
        return True

    def _summarize(self, step: int) -> None:
        written = profile_summary.write_summary(self.dir, self.n)
        if written is not None:
            logging.info("profile of steps %d-%d (%s):\n%s", self.start + 1, step, self.dir, written[1])

    def _upload(self) -> None:
        """Copies the local trace folder (and its summary) to WORKDIR/profile, then removes it."""
        for root, _, files in os.walk(self.dir):
            rel = os.path.relpath(root, self.dir)
            target = self.dest if rel == "." else self.dest / rel
            target.mkdir(parents=True, exist_ok=True)
            for name in files:
                (target / name).write_bytes(epath.Path(root, name).read_bytes())
        shutil.rmtree(self.dir, ignore_errors=True)
        logging.info("profile copied to %s", self.dest)

    def close(self) -> None:
        if self.active:
            self.active = False
            jax.profiler.stop_trace()
