"""Language-modelling text: WikiText-2's unstaged train file is checked by its git blob id and refused
with a one-line error naming it when it is neither local nor downloadable (PTB's split sizes are in
test_data_builders.test_counts)."""

import os

import pytest

from _data_testing import raw_data_dir
from bert_vs_transformer.data import builders, sources


def test_wikitext2_without_its_train_file_is_refused_in_one_line(tmp_path):
    with pytest.raises(sources.MissingFileError) as e:
        builders.prepare("wikitext2", str(tmp_path / "tfds"), raw_data_dir=raw_data_dir())
    msg = str(e.value)
    assert msg.startswith("wikitext2/train.txt: not found") and "\n" not in msg
    assert sources.UNSTAGED["wikitext2/train.txt"].url in msg


class _Offline:
    def download(self, url):
        raise ConnectionError(f"Failed to resolve host for {url}\nretries exhausted")


def test_failed_download_names_the_file_in_one_line(monkeypatch):
    monkeypatch.delenv(sources.DATA_DIR_ENV, raising=False)
    with pytest.raises(sources.MissingFileError) as e:
        sources.fetch(["wikitext2/train.txt"], _Offline())
    msg = str(e.value)
    assert msg.startswith("wikitext2/train.txt: not local") and "Failed to resolve" in msg and "\n" not in msg


def test_git_blob_id_checks_a_file_without_a_recorded_sha256(tmp_path):
    staged = sources.FILES["wikitext2/valid.txt"]
    path = os.path.join(raw_data_dir(), staged.relpath)
    blob = "eec944eb2d9e46061cd34a6913528797db6842fc"  # `git ls-tree` of the source commit
    assert sources.git_blob_id(path) == blob
    sources.verify_raw(path, staged._replace(sha256="", git_blob=blob))
    with pytest.raises(sources.ChecksumError, match="wikitext2/valid.txt: git blob id mismatch"):
        sources.verify_raw(path, staged._replace(sha256="", git_blob="0" * 40))
