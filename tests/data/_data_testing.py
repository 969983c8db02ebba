"""Shared helpers for tests/test_data_*.py: datasets generated once per session into a tmp
tfds data dir from $BVT_DATA_DIR (CI: ../shared/data relative to the repo)."""

from __future__ import annotations

import os

import ml_collections
import numpy as np
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
_STATE: dict[str, str] = {}


def raw_data_dir() -> str:
    value = os.environ.get("BVT_DATA_DIR") or os.path.join(REPO, "..", "shared", "data")
    path = os.path.abspath(value if os.path.isabs(value) else os.path.join(os.getcwd(), value))
    if not os.path.isdir(path):  # relative to the repo, as CI sets it
        path = os.path.abspath(os.path.join(REPO, value))
    return path


@pytest.fixture(scope="session")
def tfds_dir(tmp_path_factory):
    """A tfds data dir holding every registered dataset, generated once per session."""
    if "dir" not in _STATE:
        from bert_vs_transformer.data import builders

        d = str(tmp_path_factory.mktemp("tfds"))
        os.environ["BVT_DATA_DIR"] = raw_data_dir()
        for name in builders.REGISTRY:
            builders.prepare(name, d)
        _STATE["dir"] = d
    return _STATE["dir"]


def translation_config(tfds_dir: str, **data_overrides) -> ml_collections.ConfigDict:
    from bert_vs_transformer import config_args

    cfg = config_args.load("configs/transformer.py:tiny")
    cfg.data.tfds_data_dir = tfds_dir
    cfg.data.batch_size = 8
    cfg.data.num_threads = 0
    for k, v in data_overrides.items():
        cfg.data[k] = v
    return cfg


def classification_config(tfds_dir: str, dataset: str, **data_overrides) -> ml_collections.ConfigDict:
    cfg = ml_collections.ConfigDict()
    cfg.task = "classification"
    cfg.seed = 0
    cfg.num_labels = 1 if dataset == "stsb" else 2
    cfg.data = ml_collections.ConfigDict(dict(
        dataset=dataset, max_seq_len=64, batch_size=8, tfds_data_dir=tfds_dir, num_threads=0,
        length_buckets=(), vocab_path=""))
    for k, v in data_overrides.items():
        cfg.data[k] = v
    return cfg


def take(it, n):
    """The next n batches of an iterator."""
    return [next(it) for _ in range(n)]


def assert_batches_equal(xs, ys):
    assert len(xs) == len(ys)
    for x, y in zip(xs, ys):
        assert x.keys() == y.keys()
        for k in x:
            np.testing.assert_array_equal(x[k], y[k], err_msg=k)
