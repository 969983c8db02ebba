"""WMT14 English-German (Vaswani et al. 2017, Sec. 5.1), built from the official archives.

The splits are those of tensorflow-datasets' `wmt14_translate/de-en`, read from the same archives:

| split | corpora | archive (official name) |
|---|---|---|
| train | Europarl v7, CommonCrawl, News Commentary v9 (in this order) | training-parallel-{europarl-v7,commoncrawl,nc-v9}.tgz |
| validation | newstest2013 (3,000) | dev.tgz |
| test | newstest2014, full version (3,003) | dev.tgz |

tfds' own builder (tensorflow_datasets/translate/wmt.py) is not reused: it keeps every pair, reads
newstest2014's de->en files, extracts every archive whole and generates in one process. This one
streams the archives (`tarfile` "r|gz", line by line), cleans the pairs in worker processes (one per
corpus) into chunk files of CHUNK_PAIRS, then writes one array_record shard per chunk with tfds'
shard writer, in worker processes too (one per core).

Archives come from `$BVT_DATA_DIR/wmt14/<official name>` when the variable is set, else from their
official URLs (tfds' download manager). Either way they are checked against the size and sha256
that tensorflow-datasets records in its installed `url_checksums/wmt14_translate.txt`;
`BVT_SKIP_CHECKSUMS=1` skips that check (test fixtures, private mirrors) with a warning.

Text: whitespace runs become one space, ends are stripped (sacreBLEU's cleaning of test sets,
Moses clean-corpus-n.perl's of training text). The SGML test set keeps sacreBLEU's reading: the
text between `<seg ...>` and `</seg>`, entities left as they are (neither sacreBLEU nor tfds
unescapes them). newstest2014 is read from the en->de files (`-src.en.sgm`, `-ref.de.sgm`), as
sacreBLEU's `wmt14/full` en-de (from test-full.tgz), fairseq and tensor2tensor (from dev.tgz) do.

Training pairs are filtered as fairseq's `prepare-wmt14en2de.sh` does with Moses'
`clean-corpus-n.perl -ratio 1.5 ... 1 250`: a pair is dropped when a side is empty, has more than
250 words, or one side has more than 1.5 times the words of the other, or a word is longer than
1,000 characters. fairseq counts Moses-tokenized BPE tokens; here the words of the raw text
(split at whitespace) are counted, since the BPE model is trained on the filtered text (a looser
length cap: tokens outnumber words). Validation and test keep every segment.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import multiprocessing
import os
import re
import shutil
import tarfile
import tempfile
import time
from concurrent import futures
from typing import Iterator, NamedTuple

import numpy as np
import tensorflow_datasets as tfds
from absl import logging
from etils import epath
from tensorflow_datasets.core import example_serializer
from tensorflow_datasets.core import writer as writer_lib

from bert_vs_transformer.data import sources, storage

SKIP_CHECKSUMS_ENV = "BVT_SKIP_CHECKSUMS"
FOLDER = "wmt14"  # under $BVT_DATA_DIR
CHECKSUMS_FILE = "url_checksums/wmt14_translate.txt"  # inside the installed tensorflow_datasets

MAX_WORDS = 250  # clean-corpus-n.perl's MAX argument in prepare-wmt14en2de.sh (MIN is 1)
MAX_RATIO = 1.5  # its -ratio
MAX_WORD_CHARS = 1000  # its default --max-word-length
# The shared BPE is trained on this many training pairs (both sides: 2,000,000 sentences, the
# translation pipeline's spm_input_sentence_size), drawn with numpy's default_rng(0).
TOKENIZER_SAMPLE_PAIRS = 1_000_000
CHUNK_PAIRS = 100_000  # pairs per staged chunk = per array_record shard (tfds holds one in memory)
# Below this many bytes of archives everything runs in this process: a spawned worker spends
# seconds importing tfds and jax, more than a small archive takes.
WORKERS_ABOVE_BYTES = 64 << 20


class Corpus(NamedTuple):
    name: str  # tfds' subset name
    archive: str  # official file name
    en: str  # member paths inside the archive (tensorflow_datasets/translate/wmt.py's subsets)
    de: str
    sgml: bool = False


SPLITS: dict[str, tuple[Corpus, ...]] = {
    "train": (
        Corpus("europarl_v7", "training-parallel-europarl-v7.tgz",
               "training/europarl-v7.de-en.en", "training/europarl-v7.de-en.de"),
        Corpus("commoncrawl", "training-parallel-commoncrawl.tgz", "commoncrawl.de-en.en", "commoncrawl.de-en.de"),
        Corpus("newscommentary_v9", "training-parallel-nc-v9.tgz",
               "training/news-commentary-v9.de-en.en", "training/news-commentary-v9.de-en.de"),
    ),
    "validation": (Corpus("newstest2013", "dev.tgz", "dev/newstest2013.en", "dev/newstest2013.de"),),
    "test": (Corpus("newstest2014", "dev.tgz", "dev/newstest2014-deen-src.en.sgm",
                    "dev/newstest2014-deen-ref.de.sgm", sgml=True),),
}
ARCHIVES = tuple(dict.fromkeys(c.archive for cs in SPLITS.values() for c in cs))


class Archive(NamedTuple):
    name: str
    url: str
    size: int
    sha256: str


def recorded_archives() -> dict[str, Archive]:
    """URL, size and sha256 of every archive, as the installed tensorflow-datasets records them."""
    path = os.path.join(os.path.dirname(tfds.__file__), CHECKSUMS_FILE)
    if not os.path.isfile(path):
        raise sources.DataError(f"{path}: not found; the installed tensorflow-datasets records no WMT14 checksums")
    rows = {}
    for line in open(path, encoding="utf-8"):
        fields = line.rstrip("\n").split("\t")
        if len(fields) == 4:
            url, size, sha256, name = fields
            rows[name] = Archive(name, url, int(size), sha256)
    missing = [a for a in ARCHIVES if a not in rows]
    if missing:
        raise sources.DataError(f"{path}: no entry for {', '.join(missing)}")
    return {a: rows[a] for a in ARCHIVES}


def skip_checksums() -> bool:
    return os.environ.get(SKIP_CHECKSUMS_ENV, "") not in ("", "0")


def verify(path: str, archive: Archive) -> str:
    """The archive's sha256; unless checksums are skipped, a ChecksumError naming it when its size
    or sha256 differ from the recorded ones."""
    label = f"{FOLDER}/{archive.name}"
    how = (f"the archive is corrupt, truncated or another version: fetch it again from {archive.url} "
           f"(or set {SKIP_CHECKSUMS_ENV}=1 to accept a private mirror)")
    size = os.path.getsize(path)
    if not skip_checksums() and size != archive.size:
        raise sources.ChecksumError(f"{label}: {size} bytes at {path}, tensorflow-datasets records {archive.size}; {how}")
    actual = sources.sha256_file(path)
    if skip_checksums():
        logging.warning("%s: sha256 not checked (%s=1): %s", label, SKIP_CHECKSUMS_ENV, actual)
    elif actual != archive.sha256:
        raise sources.ChecksumError(f"{label}: sha256 {actual} at {path}, tensorflow-datasets records "
                                    f"{archive.sha256}; {how}")
    return actual


def locate(archive: Archive, dl_manager=None, data_dir: str | None = None) -> str:
    """The local path of an archive: `<data_dir or $BVT_DATA_DIR>/wmt14/<name>`, else downloaded."""
    root = data_dir or sources.default_data_dir()
    label = f"{FOLDER}/{archive.name}"
    if root is not None:
        path = os.path.join(root, FOLDER, archive.name)
        if not os.path.isfile(path):
            raise sources.MissingFileError(
                f"{label}: not found at {path} (looked under {sources.DATA_DIR_ENV}={root}); to get it, download "
                f"{archive.url} there, or unset {sources.DATA_DIR_ENV} to let the builder download it.")
        return path
    if dl_manager is None:
        raise sources.MissingFileError(f"{label}: ${sources.DATA_DIR_ENV} is not set and no download manager was given")
    try:
        return os.fspath(dl_manager.download(archive.url))
    except Exception as e:  # noqa: BLE001  (no network, HTTP errors: tfds raises many kinds)
        reason = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        raise sources.MissingFileError(f"{label}: not local (${sources.DATA_DIR_ENV} is not set) and its download "
                                       f"from {archive.url} failed: {reason}") from None


# ---------------------------------------------------------------------------------------------
# Streaming and cleaning.


def member_lines(path: str, member: str) -> Iterator[bytes]:
    """The lines (split at b"\\n" only, as tfds reads them) of one member of a .tgz, streamed."""
    with tarfile.open(path, "r|gz") as tar:
        for info in tar:
            if info.isfile() and info.name.removeprefix("./") == member:
                f = tar.extractfile(info)
                for line in f:
                    yield line[:-1] if line.endswith(b"\n") else line
                return
    raise sources.DataError(f"{os.path.basename(path)}: has no member {member} ({path})")


def _decode(line: bytes, where: str, number: int) -> str:
    try:
        return line.decode("utf-8")
    except UnicodeDecodeError as e:
        raise sources.NotUtf8Error(f"{where}:{number + 1}: not UTF-8 (byte 0x{line[e.start]:02x} at column "
                                   f"{e.start + 1}); the archive is damaged or another version") from None


_SEG = re.compile(rb"<seg[^>]*>(.*)</seg>")


def sgml_segments(lines, where: str) -> Iterator[bytes]:
    """The text of each `<seg id=...>text</seg>` line of a WMT SGML file (sacreBLEU's reading:
    lines starting with `<seg `; entities are kept as they are)."""
    for number, line in enumerate(lines):
        if line.startswith(b"<seg "):
            m = _SEG.match(line)
            if m is None:
                raise sources.DataError(f"{where}:{number + 1}: a <seg> line without </seg>")
            yield m.group(1)


@dataclasses.dataclass
class CleanStats:
    """What happened to the lines of one corpus (train: Moses clean-corpus-n's reasons)."""

    source: str
    lines: int = 0
    empty: int = 0  # a side is "" (tfds drops these too)
    blank: int = 0  # a side is whitespace only
    too_long: int = 0  # a side has more than MAX_WORDS words
    ratio: int = 0  # one side has more than MAX_RATIO times the words of the other
    long_word: int = 0  # a word of more than MAX_WORD_CHARS characters
    kept: int = 0

    def as_dict(self) -> dict[str, int]:
        return {k: v for k, v in dataclasses.asdict(self).items() if k != "source"}


def clean_reason(en_words: list[str], de_words: list[str]) -> str | None:
    """Why clean-corpus-n.perl (min 1, max MAX_WORDS, -ratio MAX_RATIO) drops a pair, or None."""
    ne, nd = len(en_words), len(de_words)
    if not ne or not nd:
        return "blank"
    if ne > MAX_WORDS or nd > MAX_WORDS:
        return "too_long"
    if ne > MAX_RATIO * nd or nd > MAX_RATIO * ne:
        return "ratio"
    if any(len(w) > MAX_WORD_CHARS for w in itertools.chain(en_words, de_words)):
        return "long_word"
    return None


def stage(corpus: Corpus, path: str, out_dir: str, clean: bool, chunk_pairs: int = CHUNK_PAIRS):
    """Streams one corpus out of its archive into chunk files of `idx\\ten\\tde` lines (idx: the
    line or segment number from 0); returns (chunk paths, CleanStats as a dict)."""
    where = {lang: f"{corpus.archive}:{member}" for lang, member in (("en", corpus.en), ("de", corpus.de))}
    en_lines, de_lines = member_lines(path, corpus.en), member_lines(path, corpus.de)
    if corpus.sgml:
        en_lines, de_lines = sgml_segments(en_lines, where["en"]), sgml_segments(de_lines, where["de"])
    stats = CleanStats(corpus.name)
    chunks: list[str] = []
    buf: list[bytes] = []

    def flush():
        chunk = os.path.join(out_dir, f"{corpus.name}-{len(chunks):05d}.tsv")
        with open(chunk, "wb") as f:
            f.writelines(buf)
        chunks.append(chunk)
        buf.clear()

    missing = object()
    for i, (a, b) in enumerate(itertools.zip_longest(en_lines, de_lines, fillvalue=missing)):
        if a is missing or b is missing:
            short = where["en"] if a is missing else where["de"]
            raise sources.LineCountMismatchError(
                f"{where['en']} and {where['de']} are not line-aligned: {short} ends at line {i}")
        stats.lines += 1
        en, de = _decode(a, where["en"], i), _decode(b, where["de"], i)
        if clean and (not en or not de):
            stats.empty += 1
            continue
        en_words, de_words = en.split(), de.split()
        reason = clean_reason(en_words, de_words) if clean else None
        if reason is not None:
            setattr(stats, reason, getattr(stats, reason) + 1)
            continue
        buf.append(f"{i}\t{' '.join(en_words)}\t{' '.join(de_words)}\n".encode())
        stats.kept += 1
        if len(buf) >= chunk_pairs:
            flush()
    if buf or not chunks:
        flush()
    return chunks, stats.as_dict()


def read_chunk(path: str, offset: int = 0):
    """The (key, example) pairs of one staged chunk; idx = offset + the line number in its corpus."""
    with open(path, "rb") as f:
        for line in f:
            i, en, de = line.rstrip(b"\n").split(b"\t")
            idx = offset + int(i)
            yield idx, {"idx": idx, "en": en.decode(), "de": de.decode()}


# ---------------------------------------------------------------------------------------------
# The builder.


def _code_path(cls):
    # tfds' default locates the builder's module through importlib_resources (not installed here).
    return epath.Path(__file__)


def features() -> tfds.features.FeaturesDict:
    return tfds.features.FeaturesDict({"idx": np.int32, "en": tfds.features.Text(), "de": tfds.features.Text()})


class BvtWmt14(tfds.core.ShardBasedBuilder):
    """WMT14 en-de: Europarl v7 + CommonCrawl + News Commentary v9 train (cleaned as fairseq's
    recipe), newstest2013 validation, newstest2014 (full) test."""

    code_path = tfds.core.utils.classproperty(classmethod(_code_path))

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "tfds wmt14_translate/de-en's archives; train cleaned (1-250 words, ratio 1.5)."}

    def __init__(self, *, raw_data_dir: str | None = None, **kwargs):
        self._raw_data_dir = raw_data_dir
        self._staging: str | None = None
        self._pool: futures.Executor | None = None  # worker processes, for large archives
        super().__init__(**kwargs)

    def _info(self):
        return tfds.core.DatasetInfo(
            builder=self,
            description="WMT14 en-de (tfds wmt14_translate/de-en's archives), whitespace-normalised raw text.",
            features=features(),
            supervised_keys=("en", "de"),
            homepage="https://www.statmt.org/wmt14/translation-task.html",
            citation="Bojar et al. 2014, Findings of the 2014 Workshop on Statistical Machine Translation (W14-3302).",
            disable_shuffling=True,
            metadata=tfds.core.MetadataDict(),
        )

    def _download_and_prepare(self, dl_manager, download_config=None):
        # ShardBasedBuilder writes its shards one after the other (in parallel only under Apache
        # Beam); serializing is ~100 us a pair in tfds, so the shards are written by worker processes.
        try:
            start = time.perf_counter()
            shards = self._shard_iterators_per_split(dl_manager)
            staged = time.perf_counter()
            templates = {split: self._get_filename_template(split_name=split) for split in shards}
            self.info.set_splits(tfds.core.SplitDict(write_splits(shards, templates, self.info.file_format,
                                                                  self._pool)))
            logging.info("wmt14: archives verified and staged in %.1f s, %d shards written in %.1f s",
                         staged - start, sum(map(len, shards.values())), time.perf_counter() - staged)
        finally:
            if self._pool is not None:
                self._pool.shutdown(cancel_futures=True)
                self._pool = None
            if self._staging:
                shutil.rmtree(self._staging, ignore_errors=True)
                self._staging = None

    def _shard_iterators_per_split(self, dl_manager):
        """Verifies the archives and stages their cleaned pairs; one chunk-reading generator per shard."""
        recorded = recorded_archives()
        paths = {name: locate(a, dl_manager, self._raw_data_dir) for name, a in recorded.items()}
        sums = {name: verify(paths[name], recorded[name]) for name in ARCHIVES}
        if cpu_count() > 1 and sum(os.path.getsize(p) for p in set(paths.values())) >= WORKERS_ABOVE_BYTES:
            # One pool for both steps (a spawned worker imports tfds and jax: ~2 s); workers start on demand.
            self._pool = futures.ProcessPoolExecutor(cpu_count(), mp_context=multiprocessing.get_context("spawn"))
        # Chunks are staged beside the generated data (a local data dir), else in the temp dir.
        root = epath.Path(self.data_dir).parent.parent
        local = None if storage.is_remote(root) else os.fspath(root)
        if local:
            os.makedirs(local, exist_ok=True)
        self._staging = tempfile.mkdtemp(prefix=".bvt_wmt14-staging-", dir=local)
        jobs = [(split, c) for split, cs in SPLITS.items() for c in cs]
        args = [(c, paths[c.archive], self._staging, split == "train", CHUNK_PAIRS) for split, c in jobs]
        results = run_all(stage, args, self._pool, size=lambda a: os.path.getsize(a[1]))
        out: dict[str, list] = {split: [] for split in SPLITS}
        offsets: dict[str, int] = {}
        for (split, corpus), (chunks, stats) in zip(jobs, results):
            offset = offsets.get(split, 0)
            offsets[split] = offset + stats["lines"]
            out[split] += [functools.partial(read_chunk, c, offset) for c in chunks]
            level = logging.INFO if split == "train" or stats["kept"] == stats["lines"] else logging.WARNING
            logging.log(level, "wmt14 %s/%s: %s", split, corpus.name, stats)
            self.info.metadata[f"read_stats/{split}/{corpus.name}"] = stats
        self.info.metadata["raw_sha256"] = sums
        self.info.metadata["checksums_verified"] = not skip_checksums()
        return out


def cpu_count() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def run_all(fn, args: list[tuple], pool: futures.Executor | None, size=None) -> list:
    """[fn(*a) for a in args], on `pool`'s worker processes when there is one; `size(a)` orders the
    work largest first, so the longest task starts at once."""
    if pool is None:
        return [fn(*a) for a in args]
    order = sorted(range(len(args)), key=lambda i: -size(args[i])) if size else range(len(args))
    submitted = {i: pool.submit(fn, *args[i]) for i in order}
    return [submitted[i].result() for i in range(len(args))]


def write_shard(gen, path: str, file_format) -> tuple[int, int]:
    """Writes one shard as tfds' ShardWriter does; (examples, bytes)."""
    f = features()
    shard_writer = writer_lib.ShardWriter(features=f, serializer=example_serializer.ExampleSerializer(
        f.get_serialized_info()), example_writer=writer_lib.ExampleWriter(file_format=file_format))
    n = shard_writer.write(examples=gen(), path=epath.Path(path))
    return n, epath.Path(path).stat().length


def write_splits(shards: dict[str, list], templates: dict, file_format, pool: futures.Executor | None) -> list:
    """Every split's shards (in order, one generator each), written by run_all; their SplitInfos."""
    tasks, owners = [], []
    for split, gens in shards.items():
        template = templates[split].replace(split=split)
        for i, gen in enumerate(gens):
            tasks.append((gen, os.fspath(template.sharded_filepath(shard_index=i, num_shards=len(gens))), file_format))
            owners.append(split)
    results = run_all(write_shard, tasks, pool)
    infos = []
    for split in shards:
        mine = [r for r, owner in zip(results, owners) if owner == split]
        infos.append(tfds.core.SplitInfo(name=split, shard_lengths=[n for n, _ in mine],
                                         num_bytes=sum(b for _, b in mine),
                                         filename_template=templates[split].replace(split=split)))
    return infos
