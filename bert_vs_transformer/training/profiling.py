"""Tracing a window of training steps with jax.profiler, and its per-kernel summary."""

from __future__ import annotations

import os

import jax
from absl import logging

from bert_vs_transformer.training import profile_summary


class StepProfiler:
    """config.profile_steps > 0: traces that many steps (input pipeline included) with jax.profiler
    into WORKDIR/profile, starting config.profile_start_step steps into this run (after compilation),
    then logs the top kernels per step and writes profile/summary.md (profile_summary.py). The log
    window holding the traced steps reports a lower rate (tracing and its summary take time), as the
    first window does with compilation: put profile_start_step inside the first window."""

    def __init__(self, config, workdir: str, first_step: int, is_main: bool):
        self.n = int(config.get("profile_steps", 0) or 0)
        self.start = first_step + int(config.get("profile_start_step", 10) or 0)
        self.dir = os.path.join(workdir, "profile")
        self.is_main, self.active = is_main, False

    def before(self, step: int) -> None:
        if self.n > 0 and step == self.start:
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
        return True

    def _summarize(self, step: int) -> None:
        written = profile_summary.write_summary(self.dir, self.n)
        if written is not None:
            logging.info("profile of steps %d-%d (%s):\n%s", self.start + 1, step, self.dir, written[1])

    def close(self) -> None:
        if self.active:
            self.active = False
            jax.profiler.stop_trace()
