"""Where a run's numbers go: DIR/metrics.jsonl, TensorBoard event files (tensorboardX, no
TensorFlow) and a console progress line."""

from __future__ import annotations

import json
import math
import os
import time
from typing import Any, Mapping

from absl import logging


class MetricsLogger:
    """Appends one JSON object per logged step; only process 0 writes."""

    def __init__(self, workdir: str, enabled: bool = True, tensorboard: bool = True):
        self.enabled = enabled
        self.path = os.path.join(workdir, "metrics.jsonl")
        self._tb = None
        if enabled and tensorboard:
            try:
                from tensorboardX import SummaryWriter

                self._tb = SummaryWriter(os.path.join(workdir, "tensorboard"))
            except ImportError:  # optional dependency
                logging.warning("tensorboardX not installed: no TensorBoard event files")

    def truncate_after(self, step: int) -> None:
        """On resume, drop records of steps after the restored checkpoint (they will be redone)."""
        if not self.enabled or not os.path.exists(self.path):
            return
        with open(self.path) as f:
            records = [line for line in f if line.strip()]
        kept = [r for r in records if json.loads(r).get("step", 0) <= step]
        if len(kept) != len(records):
            with open(self.path, "w") as f:
                f.writelines(kept)

    def write(self, step: int, metrics: Mapping[str, Any]) -> None:
        if not self.enabled:
            return
        record = {"step": int(step)}
        record.update({k: _jsonable(v) for k, v in metrics.items()})
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")
        if self._tb is not None:
            for k, v in record.items():
                if k != "step" and isinstance(v, (int, float)) and v is not None and math.isfinite(v):
                    self._tb.add_scalar(k, v, step)
            self._tb.flush()

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()


def _jsonable(v):
    if hasattr(v, "item"):
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)
    return v


class Progress:
    """Console line: step, loss, lr, steps/s, tokens/s, MFU, ETA."""

    def __init__(self, total_steps: int, start_step: int):
        self.total, self.start = total_steps, start_step
        self.t0 = time.time()

    def line(self, step: int, m: Mapping[str, Any]) -> str:
        elapsed = time.time() - self.t0
        done = max(step - self.start, 1)
        eta = (self.total - step) * elapsed / done
        mfu = m.get("mfu")
        parts = [
            f"step {step}/{self.total}",
            f"loss {m['loss']:.4f}",
            f"lr {m['learning_rate']:.3g}",
            f"{m.get('steps_per_s', 0):.2f} steps/s",
            f"{m.get('tokens_per_s', 0):,.0f} tok/s",
            f"MFU {100 * mfu:.1f}%" if mfu is not None else "MFU n/a",
            f"ETA {_hms(eta)}",
        ]
        return " | ".join(parts)


def _hms(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    return f"{seconds // 3600:d}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"
