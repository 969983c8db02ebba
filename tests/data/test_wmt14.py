"""The WMT14 builder on small archives written here with the official names and inner layouts:
pair counts and cleaning against hand counts, SGML parsing, checksums, the translation pipeline."""

import hashlib
import io
import json
import os
import subprocess
import sys
import tarfile

import numpy as np
import pytest

from bert_vs_transformer.data import builders, records, sources, wmt14

# Each training line: (en, de, what Moses clean-corpus-n -ratio 1.5 1 250 does with it).
EUROPARL = [
    ("Resumption of the session", "Wiederaufnahme der Sitzungsperiode", "kept"),
    ("", "Leere Zeile", "empty"),
    ("   ", "nur Leerzeichen", "blank"),
    ("one two three", "eins zwei drei vier fünf", "ratio"),  # 5 > 1.5 x 3
    ("a b", "x y z", "kept"),  # 3 = 1.5 x 2: kept
    ("w " * 251, "v " * 251, "too_long"),
    ("word\tsplit  by\r tabs", "Wort getrennt durch Tabs", "kept"),  # \r inside a line is not a line end
    ("x" * 1001, "lang", "long_word"),
]
COMMONCRAWL = [("Hello world", "Hallo Welt", "kept"), ("Bye", "Tschüss", "kept"), ("End", "Ende", "kept")]
NEWS_COMMENTARY = [("Gold", "Gold", "kept"), ("Über alles", "Über alles", "kept")]

SGML_EN = """<srcset setid="newstest2014" srclang="any">
<doc sysid="ref" docid="1012-bbc" genre="news" origlang="en">
<p>
<seg id="1">Gutach: Increased safety for pedestrians</seg>
<seg id="2"> They are not even 100 metres apart &amp; &quot;close&quot; </seg>
</p>
</doc>
<doc sysid="ref" docid="1013-bbc" genre="news" origlang="de">
<seg id="1">if x < y</seg>
<seg id="2">Last    one</seg>
</doc>
</srcset>
"""
SGML_DE = """<refset setid="newstest2014" srclang="any" trglang="de">
<doc sysid="ref" docid="1012-bbc" genre="news" origlang="en">
<p>
<seg id="1">Gutach: Noch mehr Sicherheit für Fußgänger</seg>
<seg id="2">Sie stehen keine 100 Meter voneinander entfernt &amp; &quot;nah&quot;</seg>
</p>
</doc>
<doc sysid="ref" docid="1013-bbc" genre="news" origlang="de">
<seg id="1">wenn x < y</seg>
<seg id="2">Letzter</seg>
</doc>
</refset>
"""


def _lines(rows, side, last_newline=True):
    text = "\n".join(r[side] for r in rows) + ("\n" if last_newline else "")
    return text.encode("utf-8")


def _tgz(path, members):
    with tarfile.open(path, "w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def write_archives(folder):
    """The five official archives' layouts (as tensorflow_datasets/translate/wmt.py reads them), with
    other members before and around the en-de ones."""
    os.makedirs(folder, exist_ok=True)
    _tgz(os.path.join(folder, "training-parallel-europarl-v7.tgz"), {
        "training/europarl-v7.fr-en.en": b"not this one\n",
        "training/europarl-v7.de-en.de": _lines(EUROPARL, 1),
        "training/europarl-v7.de-en.en": _lines(EUROPARL, 0),
        "training/europarl-v7.fr-en.fr": b"pas celle-ci\n"})
    _tgz(os.path.join(folder, "training-parallel-commoncrawl.tgz"), {
        "commoncrawl.de-en.annotation": b"x\n",
        "commoncrawl.de-en.en": _lines(COMMONCRAWL, 0, last_newline=False),
        "commoncrawl.de-en.de": _lines(COMMONCRAWL, 1, last_newline=False)})
    _tgz(os.path.join(folder, "training-parallel-nc-v9.tgz"), {
        "training/news-commentary-v9.de-en.de": _lines(NEWS_COMMENTARY, 1),
        "training/news-commentary-v9.de-en.en": _lines(NEWS_COMMENTARY, 0),
        "training/news-commentary-v9.cs-en.cs": b"ne\n"})
    _tgz(os.path.join(folder, "dev.tgz"), {
        "dev/newstest2012.en": b"not this year\n", "dev/newstest2012.de": b"nicht dieses Jahr\n",
        "dev/newstest2013.en": b"A  first  one\nSecond\nThird \n", "dev/newstest2013.de": b"Ein erster\nZweiter\nDritter\n",
        "dev/newstest2014-deen-src.de.sgm": SGML_DE.replace("Letzter", "WRONG FILE").encode(),
        "dev/newstest2014-deen-ref.en.sgm": SGML_EN.replace("Last", "WRONG FILE").encode(),
        "dev/newstest2014-deen-src.en.sgm": SGML_EN.encode(),
        "dev/newstest2014-deen-ref.de.sgm": SGML_DE.encode()})


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("wmt14")
    raw, tfds_dir = str(root / "raw"), str(root / "tfds")
    write_archives(os.path.join(raw, "wmt14"))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("BVT_SKIP_CHECKSUMS", "1")
        b = builders.prepare("wmt14", tfds_dir, raw_data_dir=raw)
    return b, raw, tfds_dir


def _all(name, split, tfds_dir, raw):
    ds = builders.data_source(name, split, tfds_dir, raw)
    return [{k: (v.decode() if isinstance(v, bytes) else int(v)) for k, v in ds[i].items()} for i in range(len(ds))]


def test_pair_counts_and_cleaning(built):
    _, raw, tfds_dir = built
    b = builders.builder("wmt14", tfds_dir)  # as read back from disk
    assert {s: i.num_examples for s, i in b.info.splits.items()} == {"train": 8, "validation": 3, "test": 4}
    europarl = b.info.metadata["read_stats/train/europarl_v7"]
    assert europarl == {"lines": 8, "empty": 1, "blank": 1, "too_long": 1, "ratio": 1, "long_word": 1, "kept": 3}
    assert b.info.metadata["read_stats/train/commoncrawl"]["kept"] == 3  # the last line has no "\n"
    train = _all("wmt14", "train", tfds_dir, raw)
    kept = [(en, de) for en, de, what in EUROPARL + COMMONCRAWL + NEWS_COMMENTARY if what == "kept"]
    assert [(r["en"], r["de"]) for r in train] == [(" ".join(en.split()), de) for en, de in kept]
    assert train[2]["en"] == "word split by tabs"
    # idx: the pair's line in the three corpora joined in order (dropped lines leave gaps)
    assert [r["idx"] for r in train] == [0, 4, 6, 8, 9, 10, 11, 12]
    assert not b.info.metadata["checksums_verified"]


def test_newstest_splits(built):
    b, raw, tfds_dir = built
    val = _all("wmt14", "validation", tfds_dir, raw)
    assert [(r["en"], r["de"]) for r in val] == [("A first one", "Ein erster"), ("Second", "Zweiter"), ("Third", "Dritter")]
    test = _all("wmt14", "test", tfds_dir, raw)
    assert [r["en"] for r in test] == ["Gutach: Increased safety for pedestrians",
                                       "They are not even 100 metres apart &amp; &quot;close&quot;",  # as sacreBLEU
                                       "if x < y", "Last one"]
    assert [r["de"] for r in test][-1] == "Letzter"  # the en->de files, not src.de / ref.en
    assert [r["idx"] for r in test] == [0, 1, 2, 3]


def test_pipeline_reads_it(built, tmp_path):
    """data.dataset='wmt14' selects the builder: a BPE on its (seeded sample of) training pairs, eval
    batches and references of newstest2014."""
    from _data_testing import translation_config
    from bert_vs_transformer import data

    _, raw, tfds_dir = built
    cfg = translation_config(tfds_dir, dataset="wmt14", raw_data_dir=raw, cache_dir=str(tmp_path))
    cfg.model.vocab_size = 100
    sample = records.sample_records(cfg, "train", 3)
    rows = np.sort(np.random.default_rng(0).choice(8, 3, replace=False))
    assert [int(r["idx"]) for r in sample] == [[0, 4, 6, 8, 9, 10, 11, 12][i] for i in rows]
    tok = data.tokenizer(cfg)
    assert tok.decode(tok.encode("Hallo Welt")) == "Hallo Welt"
    batches = list(data.eval_batches(cfg, "test"))
    assert sum(int(b["example_weights"].sum()) for b in batches) == 4
    assert data.raw_examples(cfg, "test")[3]["de"] == "Letzter"


def test_wmt14_base_trains_on_it(built, tmp_path):
    """configs/transformer.py:wmt14_base's data path end to end on the fixture: its BPE, token-budget
    batches over its 15 length buckets, and newstest2013 loss; only the model is shrunk."""
    _, raw, tfds_dir = built
    workdir = tmp_path / "run"
    env = dict(os.environ, BVT_DATA_DIR=raw, TFDS_DATA_DIR=tfds_dir, BVT_CACHE_DIR=str(tmp_path / "cache"),
               BVT_SKIP_CHECKSUMS="1", JAX_PLATFORMS="cpu", JAX_NUM_CPU_DEVICES="1")
    cmd = [sys.executable, "-m", "bert_vs_transformer.main", "--config=configs/transformer.py:wmt14_base",
           f"--workdir={workdir}", "--config.model.num_encoder_layers=1", "--config.model.num_decoder_layers=1",
           "--config.model.d_model=32", "--config.model.d_ff=64", "--config.model.num_heads=2",
           "--config.model.vocab_size=100", "--config.data.tokens_per_batch=512", "--config.num_train_steps=3",
           "--config.log_every_steps=1", "--config.eval_every_steps=3", "--config.checkpoint_every_steps=3",
           "--config.evals.bleu.every_steps=0"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    records_ = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in records_ if "loss" in r]
    assert len(losses) == 3 and all(np.isfinite(losses))
    assert any(np.isfinite(r.get("eval_nll", np.nan)) for r in records_), records_[-2:]


def test_worker_processes_build_the_same(built, tmp_path, monkeypatch):
    b, raw, tfds_dir = built
    monkeypatch.setenv("BVT_SKIP_CHECKSUMS", "1")
    monkeypatch.setattr(wmt14, "WORKERS_ABOVE_BYTES", 0)
    monkeypatch.setattr(wmt14, "CHUNK_PAIRS", 2)
    monkeypatch.setattr(wmt14, "cpu_count", lambda: 2)
    other = builders.prepare("wmt14", str(tmp_path / "tfds"), raw_data_dir=raw)
    assert other.info.splits["train"].num_shards == 5  # 3 kept pairs: 2 chunks of <= 2; 3: 2; 2: 1
    for split in ("train", "validation", "test"):
        assert _all("wmt14", split, str(tmp_path / "tfds"), raw) == _all("wmt14", split, tfds_dir, raw)
    assert not [p for p in os.listdir(tmp_path / "tfds") if "staging" in p]  # staged chunks removed


def test_recorded_checksums_are_tfds():
    rec = wmt14.recorded_archives()
    assert rec["training-parallel-europarl-v7.tgz"].sha256 == \
        "0224c7c710c8a063dfd893b0cc0830202d61f4c75c17eb8e31836103d27d96e7"
    assert rec["training-parallel-commoncrawl.tgz"].size == 918311367
    assert rec["training-parallel-nc-v9.tgz"].url == "http://www.statmt.org/wmt14/training-parallel-nc-v9.tgz"
    assert rec["dev.tgz"].url == "http://data.statmt.org/wmt19/translation-task/dev.tgz"


def _sha256(path):
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


@pytest.mark.parametrize("damage", ["flip", "truncate"])
def test_corrupted_archive_is_a_one_line_error(tmp_path, monkeypatch, damage):
    folder = tmp_path / "raw" / "wmt14"
    write_archives(str(folder))
    real = wmt14.recorded_archives()
    fixture = {n: a._replace(size=os.path.getsize(folder / n), sha256=_sha256(folder / n)) for n, a in real.items()}
    monkeypatch.setattr(wmt14, "recorded_archives", lambda: fixture)
    monkeypatch.delenv("BVT_SKIP_CHECKSUMS", raising=False)
    bad = folder / "training-parallel-commoncrawl.tgz"
    data = bytearray(bad.read_bytes())
    if damage == "flip":
        data[len(data) // 2] ^= 1
    bad.write_bytes(bytes(data) if damage == "flip" else bytes(data[:-10]))
    with pytest.raises(sources.ChecksumError) as e:
        builders.prepare("wmt14", str(tmp_path / "tfds"), raw_data_dir=str(tmp_path / "raw"))
    message = str(e.value)
    assert "\n" not in message and message.startswith("wmt14/training-parallel-commoncrawl.tgz: ")
    assert ("sha256" if damage == "flip" else "bytes") in message and real[bad.name].url in message
    assert not (tmp_path / "tfds" / "bvt_wmt14" / "1.0.0" / "dataset_info.json").exists()


def test_skipping_checksums_warns(tmp_path, monkeypatch, caplog):
    path = tmp_path / "dev.tgz"
    path.write_bytes(b"not the archive")
    archive = wmt14.recorded_archives()["dev.tgz"]
    monkeypatch.setenv("BVT_SKIP_CHECKSUMS", "1")
    with caplog.at_level("WARNING"):
        assert wmt14.verify(str(path), archive) == hashlib.sha256(b"not the archive").hexdigest()
    assert "wmt14/dev.tgz: sha256 not checked (BVT_SKIP_CHECKSUMS=1)" in caplog.text
    monkeypatch.setenv("BVT_SKIP_CHECKSUMS", "0")
    with pytest.raises(sources.ChecksumError, match="wmt14/dev.tgz: 15 bytes"):
        wmt14.verify(str(path), archive)


def test_checksums_on_by_default_from_the_command_line(tmp_path):
    """bvt-data on archives that are not the recorded ones: exit 2 and one line naming the first."""
    write_archives(str(tmp_path / "raw" / "wmt14"))
    env = {k: v for k, v in os.environ.items() if k != "BVT_SKIP_CHECKSUMS"}
    env.update(BVT_DATA_DIR=str(tmp_path / "raw"), TFDS_DATA_DIR=str(tmp_path / "tfds"), JAX_PLATFORMS="cpu")
    cmd = [sys.executable, "-m", "bert_vs_transformer.cli.data", "inspect", "--dataset=wmt14", "--split=test"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    assert proc.returncode == 2
    last = proc.stderr.strip().splitlines()[-1]
    assert "wmt14/training-parallel-europarl-v7.tgz:" in last and "Traceback" not in proc.stderr


def test_missing_archive_names_it_and_its_url(tmp_path):
    with pytest.raises(sources.MissingFileError) as e:
        builders.prepare("wmt14", str(tmp_path / "tfds"), raw_data_dir=str(tmp_path / "empty"))
    message = str(e.value)
    assert "\n" not in message and "wmt14/training-parallel-europarl-v7.tgz" in message
    assert "http://www.statmt.org/wmt13/training-parallel-europarl-v7.tgz" in message


def test_clean_rule_matches_clean_corpus_n():
    """Hand-checked pairs of word counts against Moses' rule (min 1, max 250, ratio 1.5)."""
    words = lambda n: ["w"] * n  # noqa: E731
    assert wmt14.clean_reason(words(2), words(3)) is None
    assert wmt14.clean_reason(words(2), words(4)) == "ratio"
    assert wmt14.clean_reason(words(250), words(250)) is None
    assert wmt14.clean_reason(words(251), words(250)) == "too_long"
    assert wmt14.clean_reason([], words(1)) == "blank"
    assert wmt14.clean_reason(["x" * 1000], ["y"]) is None and wmt14.clean_reason(["x" * 1001], ["y"]) == "long_word"
