"""Multi30k's official test sets by name: read from raw files on demand, checked against the recorded
sha256 sums and line counts. The 2017/2018 files are not staged here, so the tests write their own
(which the recorded sums reject) and point the sums table at them for the success paths."""

import gzip
import os

import ml_collections
import pytest
import tensorflow_datasets as tfds

from bert_vs_transformer import data
from bert_vs_transformer.data import builders, raw_splits, sources

EN = ["A man rides a bike.", "", "Two dogs play in the snow."]
DE = ["Ein Mann fährt Fahrrad.", "Leer links.", "Zwei Hunde spielen im Schnee."]


def _write(root, split):
    paths = {}
    for lang, lines in (("en", EN), ("de", DE)):
        path = os.path.join(root, "multi30k", f"{split}.{lang}")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w", encoding="utf-8") as f:
            f.write("".join(line + "\n" for line in lines))
        paths[f"multi30k/{split}.{lang}"] = path
    return paths


def _record_sums(monkeypatch, paths, lines=len(EN)):
    fake = {rel: sources.UNSTAGED[rel]._replace(sha256=sources.sha256_file(p), num_lines=lines)
            for rel, p in paths.items()}
    monkeypatch.setattr(sources, "UNSTAGED", {**sources.UNSTAGED, **fake})


def _config(tmp_path, raw):
    return ml_collections.ConfigDict(dict(task="translation", data=dict(
        dataset="multi30k", source_lang="en", target_lang="de", tfds_data_dir=str(tmp_path / "tfds"),
        raw_data_dir=raw)))


def test_every_official_test_set_is_a_split():
    assert builders.BvtMulti30k.SPLIT_FILES["test"] == "test_2016_flickr"
    assert builders.canonical_split("test_2016_flickr") == "test"
    assert raw_splits.file_splits("multi30k") == ("test_2017_flickr", "test_2017_mscoco", "test_2018_flickr")
    assert raw_splits.records("multi30k", "test_2016_flickr") is None  # generated with the dataset
    for split in raw_splits.file_splits("multi30k"):
        for lang in ("en", "de"):
            raw = sources.raw_file(f"multi30k/{split}.{lang}")
            assert raw.gzipped and raw.url.startswith("https://raw.githubusercontent.com/multi30k/dataset/")
            assert raw.url.endswith(f"/data/task1/raw/{split}.{lang}.gz") and len(raw.sha256) == 64


def test_absent_files_are_one_error_naming_them(tmp_path):
    (tmp_path / "multi30k").mkdir()
    with pytest.raises(sources.MissingFileError) as e:
        raw_splits.records("multi30k", "test_2017_mscoco", raw_data_dir=str(tmp_path))
    msg = str(e.value)
    assert "\n" not in msg
    for lang in ("en", "de"):
        assert f"multi30k/test_2017_mscoco.{lang}" in msg and sources.raw_file(f"multi30k/test_2017_mscoco.{lang}").url in msg
    assert str(tmp_path) in msg


def test_files_that_differ_from_the_recorded_sums_are_refused(tmp_path, monkeypatch):
    paths = _write(tmp_path, "test_2018_flickr")
    with pytest.raises(sources.ChecksumError, match=r"multi30k/test_2018_flickr\.en: sha256 mismatch"):
        raw_splits.records("multi30k", "test_2018_flickr", raw_data_dir=str(tmp_path))
    _record_sums(monkeypatch, paths, lines=4)  # the right bytes, the wrong line count
    with pytest.raises(sources.ChecksumError, match=r"multi30k/test_2018_flickr\.en: .* has 3 lines, recorded 4"):
        raw_splits.records("multi30k", "test_2018_flickr", raw_data_dir=str(tmp_path))


def test_verified_files_read_as_a_split(tmp_path, monkeypatch):
    _record_sums(monkeypatch, _write(tmp_path, "test_2017_flickr"))
    examples = data.raw_examples(_config(tmp_path, str(tmp_path)), "test_2017_flickr")
    # As the generated splits: file order, idx = line number, a pair with an empty side skipped.
    assert examples == [{"idx": 0, "en": EN[0], "de": DE[0]}, {"idx": 2, "en": EN[2], "de": DE[2]}]
    assert not os.path.exists(tmp_path / "tfds")  # nothing generated


def test_downloaded_when_no_data_dir_is_set(tmp_path, monkeypatch):
    paths = _write(tmp_path / "upstream", "test_2017_flickr")
    _record_sums(monkeypatch, paths)
    served = {}
    for rel, path in paths.items():  # what the repository serves: the gzipped files
        gz = str(tmp_path / (os.path.basename(path) + ".gz"))
        with open(path, "rb") as src, gzip.open(gz, "wb") as dst:
            dst.write(src.read())
        served[sources.raw_file(rel).url] = gz

    class FakeDownloads:
        def __init__(self, download_dir):
            assert download_dir == os.path.join(str(tmp_path / "tfds"), "downloads")

        def download(self, url):
            if url not in served:
                raise ConnectionError(f"no route to {url}")
            return served[url]

    monkeypatch.delenv(sources.DATA_DIR_ENV, raising=False)
    monkeypatch.setattr(tfds.download, "DownloadManager", FakeDownloads)
    recs = raw_splits.records("multi30k", "test_2017_flickr", data_dir=str(tmp_path / "tfds"))
    assert [(int(r["idx"]), r["en"].decode(), r["de"].decode()) for r in recs] == [
        (0, EN[0], DE[0]), (2, EN[2], DE[2])]

    with pytest.raises(sources.MissingFileError) as e:  # offline: what to fetch, in one line
        raw_splits.records("multi30k", "test_2017_mscoco", data_dir=str(tmp_path / "tfds"))
    msg = str(e.value)
    assert "\n" not in msg and "multi30k/test_2017_mscoco.en" in msg and "multi30k/test_2017_mscoco.de" in msg
    assert sources.raw_file("multi30k/test_2017_mscoco.en").url in msg and sources.DATA_DIR_ENV in msg
