"""Evaluation splits read straight from raw files when asked for, not generated with their dataset.

A builder lists them in `FILE_SPLITS` (Multi30k: the WMT17 flickr and mscoco and the WMT18 flickr
test sets; test_2016_flickr is its generated `test`). Their files are `<dataset>/<split>.<field>`
in `sources.UNSTAGED`, each checked against its recorded sha256 and line count. They come from
`$BVT_DATA_DIR` (or config.data.raw_data_dir) when set, else are downloaded into the tfds data
dir's `downloads/`; absent files are one `MissingFileError` naming them and where to get them. So
a dataset builds without them, and a missing one is an error only where it is used.
"""

from __future__ import annotations

import os
from typing import Sequence

import numpy as np

from bert_vs_transformer.data import sources


def file_splits(name: str) -> tuple[str, ...]:
    """The splits of dataset `name` read from raw files on demand."""
    from bert_vs_transformer.data import builders  # imports tfds

    return tuple(getattr(builders.spec(name).builder_cls, "FILE_SPLITS", ()))


def records(name: str, split: str, data_dir: str | None = None, raw_data_dir: str | None = None) -> list[dict] | None:
    """Records of split `split` as tfds decodes a generated one (idx, text fields as bytes, file
    order, pairs with an empty side skipped); None when it is not one of `file_splits(name)`."""
    import tensorflow_datasets as tfds

    from bert_vs_transformer.data import builders

    split = builders.canonical_split(split)
    if split not in file_splits(name):
        return None
    fields = builders.spec(name).fields
    rels = [f"{name}/{split}.{f}" for f in fields]
    dl_manager = None
    if not (raw_data_dir or sources.default_data_dir()):
        download_dir = os.path.join(builders.tfds_data_dir(data_dir), "downloads")
        dl_manager = tfds.download.DownloadManager(download_dir=download_dir)
    files = fetch_all(f"{name}/{split}", rels, dl_manager, raw_data_dir)
    pairs, stats = sources.read_parallel(*(files[r] for r in rels), name=f"{name}/{split}.{{{','.join(fields)}}}")
    stats.log()
    for rel in rels:
        expected = sources.raw_file(rel).num_lines
        if expected and stats.lines != expected:
            raise sources.ChecksumError(f"{rel}: {files[rel]} has {stats.lines} lines, recorded {expected}; "
                                        "replace it with the recorded file")
    return [{"idx": np.int32(i), fields[0]: a.encode("utf-8"), fields[1]: b.encode("utf-8")} for i, a, b in pairs]


def fetch_all(name: str, relpaths: Sequence[str], dl_manager=None, data_dir: str | None = None) -> dict[str, str]:
    """sources.fetch(), where files missing from `data_dir` / $BVT_DATA_DIR (or not downloadable)
    are one MissingFileError naming them all, what needs them (`name`) and where to get them."""
    env = sources.DATA_DIR_ENV
    root = data_dir or sources.default_data_dir()
    if root is not None:
        missing = [r for r in relpaths if not os.path.isfile(os.path.join(root, r))]
        if missing:
            gets = "; ".join(f"{sources.raw_file(r).url} -> {os.path.join(root, r)}" for r in missing)
            raise sources.MissingFileError(
                f"{name} needs {', '.join(missing)}, not found under {env}={root}; to get them, download "
                f"(and gunzip) {gets}; or unset {env} to let the builder download them")
        return sources.fetch(relpaths, None, root)
    try:
        return sources.fetch(relpaths, dl_manager)
    except sources.MissingFileError as e:
        raise sources.MissingFileError(f"{name} needs {', '.join(relpaths)}: {e}; or put them (gunzipped) "
                                       f"under ${env}") from None
