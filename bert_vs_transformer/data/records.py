"""What every pipeline shares: config access, the per-process row range, the cache lock, a split's
tfds records, padding and the checkpointable iterator over grain datasets."""

from __future__ import annotations

import dataclasses
import threading
from typing import Any, Sequence

import jax
import numpy as np

from bert_vs_transformer.data import raw_splits

STATE_FORMAT = "bvt_data_iterator/1"


def seed(config) -> int:
    """config.data.seed if set, else config.seed (grain takes seeds in [0, 2**32))."""
    seed = config.data.get("seed", None)
    return int(config.get("seed", 0) if seed is None else seed) % (2**32)


def tfds_dir(config) -> str | None:
    return config.data.get("tfds_data_dir", None) or None


def raw_dir(config) -> str | None:
    return config.data.get("raw_data_dir", None) or None


def process_rows(global_batch_size: int, process_index: int | None, process_count: int | None) -> tuple[int, int, int]:
    """(process index, process count, rows per process) of a global batch; None: this process's.
    (Not data.local_rows, which slices a batch.)"""
    if process_index is None or process_count is None:
        process_index = jax.process_index() if process_index is None else process_index
        process_count = jax.process_count() if process_count is None else process_count
    if not 0 <= process_index < process_count:
        raise ValueError(f"process_index={process_index} is not in [0, {process_count})")
    if global_batch_size % process_count:
        raise ValueError(f"config.data.batch_size={global_batch_size} is not divisible by process_count={process_count}")
    return process_index, process_count, global_batch_size // process_count


LOCK = threading.RLock()  # re-entrant: a cached split builds its cached records


def read_all(source, chunk: int = 4096) -> list[dict]:
    out = []
    for start in range(0, len(source), chunk):
        out.extend(source.__getitems__(list(range(start, min(len(source), start + chunk)))))
    return out


_RECORDS: dict[Any, list[dict]] = {}


def split_records(config, split: str) -> list[dict]:
    """All records of a split of config.data.dataset (decoded by tfds, or read from raw files for a
    builder's FILE_SPLITS; text as bytes), cached."""
    from bert_vs_transformer.data import builders

    d = config.data
    split = builders.canonical_split(split)
    key = (builders.spec(d.dataset).tfds_name, split, builders.tfds_data_dir(tfds_dir(config)), raw_dir(config))
    with LOCK:
        if key not in _RECORDS:
            recs = raw_splits.records(d.dataset, split, tfds_dir(config), raw_dir(config))
            if recs is None:
                recs = read_all(builders.data_source(d.dataset, split, tfds_dir(config), raw_dir(config)))
            _RECORDS[key] = recs
        return _RECORDS[key]


SAMPLE_SEED = 0  # a sample of a split does not change with the run's seed


def sample_key(config, split: str, n: int) -> dict[str, Any]:
    """What names sample_records(config, split, n): the split's size, the sample's size and seed, and
    the raw files' sha256 the builder recorded in its metadata (`raw_sha256`)."""
    from bert_vs_transformer.data import builders

    d = config.data
    b = builders.prepare(d.dataset, tfds_dir(config), raw_dir(config))
    total = b.info.splits[builders.canonical_split(split)].num_examples
    raw = dict(b.info.metadata.get("raw_sha256", {})) if b.info.metadata is not None else {}
    return {"sample_pairs": min(int(n), total), "sample_seed": SAMPLE_SEED, "split_examples": total,
            "raw_sha256": sorted(raw.values())}


def sample_records(config, split: str, n: int, chunk: int = 4096) -> list[dict]:
    """n records of a split drawn uniformly without replacement with numpy's default_rng(SAMPLE_SEED)
    (all of them when it has at most n), in file order; read by random access, so a large split is
    never loaded whole."""
    from bert_vs_transformer.data import builders

    d = config.data
    source = builders.data_source(d.dataset, split, tfds_dir(config), raw_dir(config))
    total = len(source)
    rows = np.arange(total) if n >= total else np.sort(np.random.default_rng(SAMPLE_SEED).choice(total, n, replace=False))
    out: list[dict] = []
    for start in range(0, len(rows), chunk):
        out.extend(source.__getitems__(rows[start: start + chunk].tolist()))
    return out


def text(value) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def pad(seqs: Sequence[np.ndarray], width: int) -> np.ndarray:
    out = np.zeros((len(seqs), width), np.int32)
    for i, s in enumerate(seqs):
        out[i, : len(s)] = s[:width]
    return out



@dataclasses.dataclass
class TokenizedSplit:
    """One split's examples as token arrays, in file order (`idx`: the tfds example's idx)."""

    features: dict[str, list[np.ndarray]]  # ragged int32 sequences, e.g. inputs / targets
    scalars: dict[str, np.ndarray]  # one value per example, e.g. label
    idx: np.ndarray  # int32 [n]
    stats: dict[str, int]

    def __len__(self) -> int:
        return len(self.idx)

    def lengths(self) -> dict[str, np.ndarray]:
        return {k: np.fromiter((len(x) for x in v), np.int32, len(v)) for k, v in self.features.items()}


class DataIterator:
    """Infinite iterator over this process's batches, with an exact, JSON-serialisable state.

    `get_state()` -> dict; `set_state(state)` restores the position, so a restored iterator yields
    exactly the batches an uninterrupted one would have yielded next.
    """

    def __init__(self, dataset, meta: dict[str, Any], layout_invariant: bool):
        self._dataset = dataset  # a grain IterDataset
        self._iter = iter(dataset)
        self.meta = meta
        self.layout_invariant = layout_invariant

    def __iter__(self):
        return self

    def __next__(self) -> dict[str, np.ndarray]:
        return next(self._iter)

    def get_state(self) -> dict[str, Any]:
        return {"format": STATE_FORMAT, "meta": dict(self.meta), "iterator": self._iter.get_state()}

    def close(self) -> None:
        """Stops worker processes, if any (grain's mp_prefetch; a no-op otherwise)."""
        close = getattr(self._iter, "close", None)
        if close is not None:
            close()

    def set_state(self, state: dict[str, Any]) -> None:
        if state.get("format") != STATE_FORMAT:
            raise ValueError(f"not a data iterator state of format {STATE_FORMAT}: {str(state)[:200]}")
        saved_workers, workers = int(state["meta"].get("workers", 0)), int(self.meta.get("workers", 0))
        if saved_workers != workers:  # the same stream, but grain keeps one position per worker
            raise ValueError(
                f"data iterator state was saved with config.data.worker_count={saved_workers}; this pipeline has "
                f"{workers}, and the state's layout depends on it: resume with worker_count={saved_workers}")
        layout = {"process_index", "process_count", "workers"}
        for k, v in state["meta"].items():
            if self.layout_invariant and k in layout:
                continue
            if self.meta.get(k) != v:
                raise ValueError(
                    f"data iterator state was saved with {k}={v!r} but this pipeline has {k}="
                    f"{self.meta.get(k)!r}; the stream would differ"
                )
        self._iter.set_state(state["iterator"])


def worker_count(config) -> int:
    """data.worker_count: grain worker processes preparing batches (0: this process's threads)."""
    w = int(config.data.get("worker_count", 0) or 0)
    if w < 0:
        raise ValueError(f"config.data.worker_count must be >= 0, got {w}")
    return w


def iter_dataset(batches, config):
    """A grain MapDataset of batches as the IterDataset a DataIterator reads: data.num_threads
    threads, and with data.worker_count > 0 that many spawned processes, worker i preparing batches
    i, i + w, ... (grain's mp_prefetch: the same batches in the same order as without workers). BERT
    pretraining's masking draws per row in Python (~100 batches of 256 x 128 a second in one process
    on a 2-core CPU): workers lift that ceiling on a many-core host."""
    import grain

    ds = batches.to_iter_dataset(read_options(config))
    w = worker_count(config)
    return ds.mp_prefetch(grain.MultiprocessingOptions(num_workers=w)) if w else ds


def read_options(config):
    import grain

    threads = int(config.data.get("num_threads", 2))
    return grain.ReadOptions(num_threads=threads, prefetch_buffer_size=int(config.data.get("prefetch", 4))) if threads > 0 \
        else grain.ReadOptions(num_threads=0, prefetch_buffer_size=0)


