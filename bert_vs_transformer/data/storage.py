"""Paths on a local disk or an object store (gs://, s3://), all through etils.epath, as orbax and
tfds use it: what a run reads and writes (workdir, caches) goes through `as_path` and `write_atomic`.

    path = storage.as_path("gs://bucket/run") / "metrics.jsonl"   # or a local path, made absolute
    storage.write_atomic(path, text)                                # never seen half-written

gs:// needs epath's GCS backend: `pip install 'bert_vs_transformer[gcs]'` (docs/training.md).
"""

from __future__ import annotations

import os
import uuid

from etils import epath


def is_remote(path) -> bool:
    """True for a URI (gs://bucket/..., s3://...), False for a local path."""
    return "://" in os.fspath(path)


def as_path(path) -> epath.Path:
    """`path` as an epath.Path: a local one with ~ expanded and made absolute, a URI as it is (only a
    local path is resolved: os.path on 'gs://b/x' would make it './gs:/b/x')."""
    text = os.fspath(path)
    if not is_remote(text):
        return epath.Path(os.path.abspath(os.path.expanduser(text)))
    try:
        return epath.Path(text)
    except KeyError:  # a scheme with no registered path class
        raise ValueError(f"{text}: etils.epath reads no {text.split('://')[0]}:// paths "
                         "(it reads local paths, gs://, s3://, az:// and hf://)") from None


def write_atomic(path, data: str | bytes) -> None:
    """Writes the whole of `path` (text as UTF-8) so that no reader sees part of it: locally a
    temporary file in the same folder renamed over it; on an object store one upload (an object
    appears only once complete, and an object cannot be appended to or renamed cheaply)."""
    path = epath.Path(path)
    raw = data.encode("utf-8") if isinstance(data, str) else data
    if is_remote(path):
        path.write_bytes(raw)
        return
    tmp = path.parent / f".tmp-{path.name}-{uuid.uuid4().hex[:12]}"
    try:
        tmp.write_bytes(raw)
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)
