"""tfds builders: the example counts of every split, the corpus's documents, file order."""

import collections

import pytest

from _data_testing import tfds_dir  # noqa: F401  (session fixture)
from bert_vs_transformer.data import builders


@pytest.mark.parametrize("name", sorted(n for n, s in builders.REGISTRY.items() if s.expected))
def test_counts(tfds_dir, name):  # noqa: F811
    b = builders.prepare(name, tfds_dir)
    counts = {split: info.num_examples for split, info in b.info.splits.items()}
    assert counts == builders.REGISTRY[name].expected
    for split, n in counts.items():
        assert len(builders.data_source(name, split, tfds_dir)) == n


def test_files_keep_their_order(tfds_dir):  # noqa: F811
    ds = builders.data_source("multi30k", "test_2016_flickr", tfds_dir)
    assert [int(ds[i]["idx"]) for i in range(5)] == [0, 1, 2, 3, 4]
    assert ds[0]["en"] == b"A man in an orange hat starring at something."
    cola = builders.data_source("cola", "dev", tfds_dir)
    assert cola[527]["sentence1"] == b"Somebody just left - guess who."  # out_of_domain_dev follows in_domain_dev


def test_labels(tfds_dir):  # noqa: F811
    stsb = builders.data_source("stsb", "validation", tfds_dir)
    assert stsb[0]["label"] == pytest.approx(5.0) and stsb[1]["label"] == pytest.approx(4.75)
    rte = builders.data_source("rte", "train", tfds_dir)
    assert [int(rte[i]["label"]) for i in range(2)] == [1, 0]  # not_entailment, entailment
    mrpc_train = builders.data_source("mrpc", "train", tfds_dir)
    mrpc_dev = builders.data_source("mrpc", "validation", tfds_dir)
    train_idx = {int(mrpc_train[i]["idx"]) for i in range(len(mrpc_train))}
    dev_idx = {int(mrpc_dev[i]["idx"]) for i in range(len(mrpc_dev))}
    assert not train_idx & dev_idx and len(train_idx | dev_idx) == 4076


def test_pretraining_corpus_documents(tfds_dir):  # noqa: F811
    ds = builders.data_source("pretraining_corpus", "train", tfds_dir)
    docs = ds.__getitems__(list(range(len(ds))))
    by_source = collections.Counter(d["source"].decode() for d in docs)
    assert by_source == {"ptb": 2104, "wikitext2": 122, "multi30k": 2900, "glue/sst2": 6735,
                         "glue/cola": 856, "glue/stsb": 5749, "glue/mrpc": 3668, "glue/rte": 2490}
    assert all(len(d["sentences"]) >= 1 for d in docs)
    wiki = [d for d in docs if d["source"] == b"wikitext2"]
    assert wiki[0]["sentences"][0].startswith(b"Homarus gammarus , known as the European lobster")
    assert not any(s.startswith(b"= ") and s.endswith(b" =") for d in wiki for s in d["sentences"])  # no headings
    assert len(builders.data_source("pretraining_corpus", "validation", tfds_dir)) == 169  # PTB valid / 20


def test_inspect_command(tfds_dir):  # noqa: F811
    import json
    import os
    import subprocess
    import sys

    env = dict(os.environ, TFDS_DATA_DIR=tfds_dir, JAX_PLATFORMS="cpu")
    cmd = [sys.executable, "-m", "bert_vs_transformer.cli.data", "inspect", "--dataset=rte", "--split=dev", "--show=2"]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True).stdout
    lines = out.strip().splitlines()
    assert lines[0] == "--- example 0 (idx 0)" and "sentence1 tokens" in out
    summary = json.loads(lines[-1])
    assert summary["num_examples"] == 277 and summary["split"] == "validation"
    stats = summary["token_lengths"]["sentence1"]
    assert stats["count"] == 277 and stats["min"] <= stats["p50"] <= stats["max"]
    assert summary["labels"] == {"0": 146, "1": 131}


def test_tfds_data_source_reads_the_builders(tfds_dir):  # noqa: F811
    import tensorflow_datasets as tfds

    ds = tfds.data_source("bvt_multi30k", data_dir=tfds_dir)
    assert {k: len(v) for k, v in ds.items()} == {"train": 29000, "validation": 1014, "test": 1000}
    assert len(tfds.data_source("bvt_glue/mrpc", data_dir=tfds_dir, split="validation")) == 408
