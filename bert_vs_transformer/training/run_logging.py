"""Where a run's numbers go: DIR/metrics.jsonl, TensorBoard event files (tensorboardX, no
TensorFlow) and a console progress line."""

from __future__ import annotations

import json
import math
import os
import time
from typing import Any, Mapping

import jax
import numpy as np
from absl import logging

from bert_vs_transformer.models import flops


class MetricsLogger:
    """Appends one JSON object per logged step; only process 0 writes."""

    def __init__(self, workdir: str, enabled: bool = True, tensorboard: bool = True):
        self.enabled = enabled
        self.path = os.path.join(workdir, "metrics.jsonl")
        self._tb = None
        if enabled and tensorboard:
            try:
                from tensorboardX import SummaryWriter  # optional

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


def write_config(workdir: str, config) -> str:
    """WORKDIR/config.json: the run's config as it starts (every check passed)."""
    os.makedirs(workdir, exist_ok=True)
    path = os.path.join(workdir, "config.json")
    with open(path, "w") as f:
        json.dump(config.to_dict(), f, indent=2, default=str)
    return path


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


def check_finite(pending) -> None:
    """Raises at the first step in `pending` [(step, metrics)] whose loss or gradient norm is NaN/Inf."""
    for s, m in pending:
        loss, grad_norm = (float(x) for x in jax.device_get((m["loss"], m["grad_norm"])))
        if not np.isfinite(loss):
            raise FloatingPointError(f"non-finite loss {loss} at step {s}; the last good checkpoint is kept")
        if not np.isfinite(grad_norm):
            raise FloatingPointError(f"non-finite gradient norm {grad_norm} at step {s} (loss {loss}); "
                                     "the last good checkpoint is kept")


def window_record(pending, elapsed: float, steps: int, flops_per_step: float, peak: float | None,
                  num_devices: int) -> dict[str, Any]:
    """A log window's record: mean loss (after the NaN check), last learning rate and gradient
    norm, throughput and MFU."""
    check_finite(pending)
    host = [(s, jax.device_get(m)) for s, m in pending]
    losses = [float(m["loss"]) for _, m in host]
    tokens = sum(float(m["tokens"]) for _, m in host)
    steps_per_s = steps / max(elapsed, 1e-9)
    return {
        "loss": float(np.mean(losses)),
        "learning_rate": float(host[-1][1]["learning_rate"]),
        "grad_norm": float(host[-1][1]["grad_norm"]),
        "steps_per_s": steps_per_s,
        "tokens_per_s": tokens / max(elapsed, 1e-9),
        "mfu": flops.mfu(flops_per_step, steps_per_s, num_devices, peak) if peak else None,
    }
