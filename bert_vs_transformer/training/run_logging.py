"""Where a run's numbers go: DIR/metrics.jsonl, TensorBoard event files (tensorboardX, no
TensorFlow) and a console progress line. DIR may be local or gs:// (etils.epath, data/storage.py)."""

from __future__ import annotations

import io
import json
import math
import os
import time
from typing import Any, Mapping

import jax
import numpy as np
from absl import logging
from etils import epath

from bert_vs_transformer.data import storage
from bert_vs_transformer.models import flops


class MetricsLogger:
    """DIR/metrics.jsonl, one JSON object per logged step; only process 0 writes.

    Locally each record is appended. An object store (gs://) cannot append to an object, so there
    the logger holds the file's lines (read once at start, for a resumed run) and uploads the whole
    file at each write. That costs the file's size per log step (about 3 ms a rewrite for 2,000
    lines, 0.4 MB; 73 ms for 100,000 lines locally, hence appends where appends work) and keeps
    metrics.jsonl one file that every reader (experiments.status, reports, glue_grid) reads as
    before; numbered part files would upload only the new record but make every reader list and
    merge a folder."""

    def __init__(self, workdir, enabled: bool = True, tensorboard: bool = True):
        self.enabled = enabled
        self.path = storage.as_path(workdir) / "metrics.jsonl"
        self._lines: list[str] | None = None  # on an object store: the file's lines, uploaded whole
        if enabled and storage.is_remote(self.path):
            self._lines = self._read_lines()
        self._tb = None
        if enabled and tensorboard:
            try:
                from tensorboardX import SummaryWriter  # optional
            except ImportError:  # optional dependency
                logging.warning("tensorboardX not installed: no TensorBoard event files")
            else:
                tb_dir = storage.as_path(workdir) / "tensorboard"
                if storage.is_remote(tb_dir):
                    _event_files_through_epath(os.fspath(tb_dir).split("://")[0])
                self._tb = SummaryWriter(os.fspath(tb_dir))

    def _read_lines(self) -> list[str]:
        if not self.path.exists():
            return []
        return [line + "\n" for line in self.path.read_text().split("\n") if line.strip()]

    def truncate_after(self, step: int) -> None:
        """On resume, drop records of steps after the restored checkpoint (they will be redone)."""
        if not self.enabled:
            return
        records = self._lines if self._lines is not None else self._read_lines()
        kept = [r for r in records if json.loads(r).get("step", 0) <= step]
        if len(kept) != len(records):
            if self._lines is not None:
                self._lines = kept
            storage.write_atomic(self.path, "".join(kept))

    def write(self, step: int, metrics: Mapping[str, Any]) -> None:
        if not self.enabled:
            return
        record = {"step": int(step)}
        record.update({k: _jsonable(v) for k, v in metrics.items()})
        line = json.dumps(record) + "\n"
        if self._lines is None:
            with self.path.open("a") as f:
                f.write(line)
        else:
            self._lines.append(line)
            storage.write_atomic(self.path, "".join(self._lines))
        if self._tb is not None:
            for k, v in record.items():
                if k != "step" and isinstance(v, (int, float)) and v is not None and math.isfinite(v):
                    self._tb.add_scalar(k, v, step)
            self._tb.flush()

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()


class _EpathEventFile:
    """A TensorBoard event file on an object store: tensorboardX's records buffered, the whole file
    uploaded at each flush (an object cannot be appended to)."""

    def __init__(self, path: str):
        self.path, self.buffer = epath.Path(path), io.BytesIO()

    def write(self, data: bytes) -> None:
        self.buffer.write(data)

    def flush(self) -> None:
        self.path.write_bytes(self.buffer.getvalue())

    def close(self) -> None:
        self.flush()


class _EpathEventFiles:
    """tensorboardX's writer factory interface (record_writer.register_writer_factory)."""

    def open(self, path: str) -> _EpathEventFile:
        return _EpathEventFile(path)

    def directory_check(self, path: str) -> None:
        epath.Path(path).mkdir(parents=True, exist_ok=True)


def _event_files_through_epath(scheme: str) -> None:
    """Routes tensorboardX's event files for `scheme`:// through epath. tensorboardX's own gs://
    writer does the same whole-file upload but through google-cloud-storage, outside epath (and
    its s3:// one through boto3); this keeps every file of a run on one I/O path."""
    from tensorboardX import record_writer

    record_writer.register_writer_factory(scheme, _EpathEventFiles())


def write_config(workdir, config) -> str:
    """WORKDIR/config.json: the run's config as it starts (every check passed)."""
    directory = storage.as_path(workdir)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "config.json"
    storage.write_atomic(path, json.dumps(config.to_dict(), indent=2, default=str))
    return os.fspath(path)


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
