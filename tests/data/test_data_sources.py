"""Raw files: sha256 checks, missing files, misaligned parallel files, bad lines (skipped, counted)."""

import os

import pytest

from _data_testing import raw_data_dir
from bert_vs_transformer.data import builders, sources


def _write(path, data: bytes):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)
    return str(path)


def test_recorded_files_verify():
    root = raw_data_dir()
    for relpath in sources.FILES:
        assert sources.local_file(relpath, root) == os.path.join(root, relpath)


def test_checksum_mismatch_names_the_file(tmp_path):
    src = os.path.join(raw_data_dir(), "glue/RTE/val.jsonl")
    data = bytearray(open(src, "rb").read())
    data[10] ^= 1
    _write(tmp_path / "glue/RTE/val.jsonl", bytes(data))
    with pytest.raises(sources.ChecksumError, match=r"glue/RTE/val\.jsonl.*sha256"):
        sources.local_file("glue/RTE/val.jsonl", str(tmp_path))


def test_checksum_mismatch_fails_generation(tmp_path):
    root = tmp_path / "raw"
    for rel in builders.GLUE_FILES["rte"]:
        _write(root / rel, open(os.path.join(raw_data_dir(), rel), "rb").read())
    with open(root / "glue/RTE/train.jsonl", "ab") as f:
        f.write(b'{"premise": "x", "hypothesis": "y", "label": "entailment", "idx": 9999}\n')
    with pytest.raises(sources.ChecksumError, match=r"glue/RTE/train\.jsonl"):
        builders.prepare("rte", str(tmp_path / "tfds"), raw_data_dir=str(root))


def test_missing_file_says_where_and_how(tmp_path):
    with pytest.raises(sources.MissingFileError) as e:
        sources.local_file("multi30k/val.de", str(tmp_path))
    msg = str(e.value)
    assert "multi30k/val.de" in msg
    assert os.path.join(str(tmp_path), "multi30k/val.de") in msg  # where it was looked for
    assert "https://raw.githubusercontent.com/multi30k/dataset/" in msg and "gunzip" in msg  # how to get it


def test_missing_file_fails_generation(tmp_path):
    with pytest.raises(sources.MissingFileError, match="multi30k/train.en"):
        builders.prepare("multi30k", str(tmp_path / "tfds"), raw_data_dir=str(tmp_path / "empty"))


def test_parallel_line_count_mismatch_names_both(tmp_path):
    a = _write(tmp_path / "x.en", b"one\ntwo\nthree\n")
    b = _write(tmp_path / "x.de", b"eins\nzwei\n")
    with pytest.raises(sources.LineCountMismatchError) as e:
        sources.read_parallel(a, b)
    assert a in str(e.value) and b in str(e.value) and "3" in str(e.value) and "2" in str(e.value)


def test_empty_lines_are_skipped_and_counted_and_bad_bytes_named(tmp_path):
    a = _write(tmp_path / "x.en", b"\xef\xbb\xbfgood one\r\n\nbad one here\nfine\n   \nlast")
    b = _write(tmp_path / "x.de", b"gut eins\nleer links\nschlecht\n\nrechts leer\nletzte\n")
    pairs, stats = sources.read_parallel(a, b)
    assert [(i, x, y) for i, x, y in pairs] == [(0, "good one", "gut eins"), (2, "bad one here", "schlecht"),
                                                (5, "last", "letzte")]
    assert (stats.lines, stats.kept, stats.empty) == (6, 3, 3)

    lines, stats = sources.read_lines(a)
    assert [t for _, t in lines] == ["good one", "bad one here", "fine", "last"]
    assert stats.empty == 2

    c = _write(tmp_path / "y.en", b"good one\n\nbad \xff\xfe here\nfine\n")
    d = _write(tmp_path / "y.de", b"eins\nzwei\ndrei\nvier\n")
    for read in (lambda: sources.read_lines(c), lambda: sources.read_parallel(d, c)):
        with pytest.raises(sources.NotUtf8Error, match=r"y\.en:3: not UTF-8 \(byte 0xff at column 5\)"):
            read()


def test_tsv_and_jsonl_skip_malformed_rows(tmp_path):
    tsv = _write(tmp_path / "t.tsv", b"sentence\tlabel\nok\t1\nno label\n\t0\nbad\tx\nfine\t0\n")
    rows, stats = sources.read_tsv(tsv, builders._sst2, num_fields=2, header=True)
    assert [r for _, r in rows] == [("ok", "", 1), ("fine", "", 0)]
    assert (stats.lines, stats.malformed) == (5, 3)
    bad = _write(tmp_path / "b.tsv", b"sentence\tlabel\nok\t1\n\xff\t1\n")
    with pytest.raises(sources.NotUtf8Error, match=r"b\.tsv:3: not UTF-8"):
        sources.read_tsv(bad, builders._sst2, num_fields=2, header=True)
    js = _write(tmp_path / "t.jsonl", b'{"premise": "a", "hypothesis": "b", "label": "entailment"}\n{oops\n'
                b'{"premise": "a", "hypothesis": "b", "label": "maybe"}\n\n')
    rows, stats = sources.read_jsonl(js, builders._rte)
    assert [r for _, r in rows] == [("a", "b", 0)]
    assert (stats.malformed, stats.empty) == (2, 1)


def test_bad_lines_skipped_during_generation(tmp_path, monkeypatch):
    """A whole Multi30k build on fake files with empty lines: skipped, counted in the metadata."""
    root = tmp_path / "raw"
    en = b"a dog .\n\n   \nok\n" * 3
    de = b"ein hund .\nleer\nschlecht\n\n" * 3
    fake = {}
    for stem in ("train", "val", "test_2016_flickr"):
        for lang, data in (("en", en), ("de", de)):
            rel = f"multi30k/{stem}.{lang}"
            path = _write(root / rel, data)
            fake[rel] = sources.FILES[rel]._replace(sha256=sources.sha256_file(path))
    monkeypatch.setattr(sources, "FILES", {**sources.FILES, **fake})
    b = builders.prepare("multi30k", str(tmp_path / "tfds"), raw_data_dir=str(root))
    assert b.info.splits["train"].num_examples == 3
    ds = b.as_data_source(split="train")
    assert [ds[i]["en"] for i in range(3)] == [b"a dog ."] * 3
    stats = b.info.metadata["read_stats/train/multi30k/train.{en,de}"]
    assert stats == {"lines": 12, "kept": 3, "empty": 9, "malformed": 0}


def test_mrpc_dev_split_is_deterministic_and_disjoint():
    keys = [f"{i}-{i + 7}" for i in range(4076)]
    dev = sources.mrpc_dev_keys(keys)
    assert len(dev) == 408 and dev == sources.mrpc_dev_keys(list(reversed(keys)))


def test_wikitext_articles_and_sentences():
    lines = ["", " = First = ", "", " A b . C d ? ", " = = Section = = ", " E f ", " = Second = ", " G . "]
    assert list(sources.wikitext_articles(lines)) == [("First", ["A b .", "C d ?", "E f"]), ("Second", ["G ."])]


def test_data_dir_env_is_absolute(monkeypatch):
    monkeypatch.setenv("BVT_DATA_DIR", "some/rel")
    assert sources.default_data_dir() == os.path.abspath("some/rel")
