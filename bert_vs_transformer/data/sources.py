"""Raw dataset files: where they are, their recorded sha256 sums, robust line readers, errors.

Every raw file the builders read is listed in `FILES` with the sha256 and line count recorded in
the dataset's PROVENANCE.md (see `../shared/data`). Files come from one of two places:

- `$BVT_DATA_DIR` (or an explicit `data_dir`): a folder laid out as `../shared/data`
  (`multi30k/train.en`, `glue/SST-2/train.tsv`, ...). A missing file is a `MissingFileError`
  naming the file, the path it was looked for at and the URL to get it from.
- otherwise the file's `url`, fetched by tfds' download manager (cached in the tfds data dir's
  `downloads/`) and gunzipped where the URL serves a `.gz`.

Either way the final (decompressed) file is checked against the recorded sha256: a mismatch is a
`ChecksumError` naming the file. Files ../shared/data does not stage are in `UNSTAGED`: Multi30k's
2017 and 2018 test sets (with their sha256 sums and line counts), and WikiText-2's train.txt (over
its 4 MiB limit), which has no recorded sha256 and is checked against its git blob id in the source
commit's tree instead. A run without them or internet refuses them with a one-line
`MissingFileError` naming the files. The URLs point at the exact commits PROVENANCE.md records, so a
download reproduces the recorded bytes (the Multi30k URLs are its official repository,
`multi30k/dataset` data/task1/raw). GLUE's own zips (dl.fbaipublicfiles.com) are not used: their
bytes were never recorded here, and MRPC's dev ids are not in them anyway.

Readers decode strictly: a line that is not UTF-8 is a `NotUtf8Error` naming the file and line.
Empty (whitespace-only) lines and rows that are not valid TSV/JSON are skipped and counted in a
`ReadStats`, which is logged. Parallel files whose line counts differ are a
`LineCountMismatchError` naming both.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import json
import os
import shutil
from typing import Any, Callable, Iterator, NamedTuple, Sequence

from absl import logging

DATA_DIR_ENV = "BVT_DATA_DIR"


class DataError(Exception):
    """A problem with a dataset's raw files."""


class MissingFileError(DataError, FileNotFoundError):
    """A raw file is not where it was looked for."""


class ChecksumError(DataError):
    """A raw file's sha256 differs from the recorded one."""


class LineCountMismatchError(DataError):
    """Two line-aligned (parallel) files have different numbers of lines."""


class NotUtf8Error(DataError):
    """A line of a text file that must be UTF-8 is not."""


class RawFile(NamedTuple):
    relpath: str  # path under $BVT_DATA_DIR
    sha256: str  # of the decompressed file, as recorded in PROVENANCE.md
    num_lines: int  # `wc -l` as recorded
    url: str  # where a machine with internet fetches it
    gzipped: bool = False  # the URL serves gzip; the recorded sha256 is of the gunzipped bytes
    git_blob: str = ""  # the file's git blob id at the URL's commit; checks a file whose sha256 is ""


_M30K = "https://raw.githubusercontent.com/multi30k/dataset/a3d2e0d26b56f3846f66a952536ffed4e401d05a/data/task1/raw/"
_COLA = ("https://raw.githubusercontent.com/nyu-mll/CoLA-baselines/dd095d3646ed05a315280aaa8ed4ec84ba435b3e/"
         "acceptability_corpus/cola_public/raw/")
_SST2 = "https://raw.githubusercontent.com/eyalbd2/Reproducing-AutoPrompt/6288fb5bec9c572f2492875ae0111df5b6daed11/glue_data/SST-2/"
_CUTOFF = "https://raw.githubusercontent.com/mieseung/Cutoff_with_Attribution/b74b32ee415e1a3c624568f5d42adc4fdcedd952/glue_data/"
_RTE = "https://raw.githubusercontent.com/nyu-mll/jiant/789e1c0aafa03bf12342be176228e25152bc6a50/data/RTE/"
_PTB = "https://raw.githubusercontent.com/Lasagne/Recipes/d616658de38e69f5036b236b6acbaf6e465ec9bd/examples/penntree/"
_WT2 = ("https://raw.githubusercontent.com/pytorch/examples/d5678bc8ac0cdd79dbd5e44d4130271018bcec4e/"
        "word_language_model/data/wikitext-2/")

FILES: dict[str, RawFile] = {
    f.relpath: f
    for f in [
        # Multi30k Task 1 (raw, true-cased), en-de.
        RawFile("multi30k/train.en", "460a15fbd157e34a7a9957ee388c1ca247fe47af3ef25fb50442af6c274e0fc6", 29000, _M30K + "train.en.gz", True),
        RawFile("multi30k/train.de", "2c2b73fd2b548fbcde3a875e0a78d6ee94d498bfdee6bd3eae3945779e9ddf72", 29000, _M30K + "train.de.gz", True),
        RawFile("multi30k/val.en", "1f2a23d992769b5b3d209b0a10dd0b77c08cceb1f20dfb97ed0aafa49d107227", 1014, _M30K + "val.en.gz", True),
        RawFile("multi30k/val.de", "660e09eb7e1da2f856ea13ee5ad3cf6d36b3d5b0b733c857e94c5747a3dfc660", 1014, _M30K + "val.de.gz", True),
        RawFile("multi30k/test_2016_flickr.en", "399a4382932c1aadd3ceb9bef1008d388a64c76d4ae4e9d4728c6f4301cac182", 1000, _M30K + "test_2016_flickr.en.gz", True),
        RawFile("multi30k/test_2016_flickr.de", "4be6b5b3236b79c25475c6bb829800a7ce559e9ba7a1f6c2394fe4d40be46d16", 1000, _M30K + "test_2016_flickr.de.gz", True),
        # GLUE.
        RawFile("glue/SST-2/train.tsv", "48eac26399f8456935f81dd9e3a745c1430adb6c62e233ccfe22db4a0d15d1d1", 67350, _SST2 + "train_full.tsv"),
        RawFile("glue/SST-2/dev.tsv", "54a9c12c77e402fc14d6a66a506f24d999f596b0176eb777c972cccc2f9cc4b0", 873, _SST2 + "dev.tsv"),
        RawFile("glue/CoLA/in_domain_train.tsv", "f320a10f92d3bce6b29152fde322a362eac39238e50d8de0c8815457fdf4fc12", 8551, _COLA + "in_domain_train.tsv"),
        RawFile("glue/CoLA/in_domain_dev.tsv", "77176f6a03faa5a1c4f23c69971fc1bff565931112fb65af47b2d6e24b7f42f7", 527, _COLA + "in_domain_dev.tsv"),
        RawFile("glue/CoLA/out_of_domain_dev.tsv", "201b9c57b2a20f1282242eec0ed8995729e3be19c29a46c047b3727338836c05", 516, _COLA + "out_of_domain_dev.tsv"),
        RawFile("glue/STS-B/train.tsv", "41c4d978b6162abdcada7e49a982211954cca5459c228db478af333124b257a2", 5750, _CUTOFF + "STS-B/train.tsv"),
        RawFile("glue/STS-B/dev.tsv", "fe7dc0632a5033562f3cadff991f6e8d9b9b6311861660e78c3c82eb7db67f59", 1501, _CUTOFF + "STS-B/dev.tsv"),
        RawFile("glue/MRPC/msr_paraphrase_train.txt", "61a88818ec384d8465297dda1883b469f1b22d442ab90183d13e06233b180591", 4077, _CUTOFF + "MRPC/msr_paraphrase_train.txt"),
        RawFile("glue/RTE/train.jsonl", "fdfb03443abe3ec0424b7fc5d1a8863361719bc061338b7a63e56b94d615f201", 2490, _RTE + "train.jsonl"),
        RawFile("glue/RTE/val.jsonl", "ab990507bf5f35dc176cba7770a72bfa2c50a88ed72b8cc95cfbf9db95ab1af1", 277, _RTE + "val.jsonl"),
        # Unlabelled English.
        RawFile("ptb/ptb.train.txt", "fcea919f6cf83f35d4d00c6cbf08040d13d4155226340912e2fef9c9c4102cbf", 42068, _PTB + "ptb.train.txt.gz", True),
        RawFile("ptb/ptb.valid.txt", "c9fe6985fe0d4ccb578183407d7668fc6066c20700cb4cf87d8ff1cc34df1bf2", 3370, _PTB + "ptb.valid.txt.gz", True),
        RawFile("ptb/ptb.test.txt", "dd65dff31e70846b2a6030a87482edcd5d199130cdcfa1f3dccbb033728deee0", 3761, _PTB + "ptb.test.txt.gz", True),
        RawFile("wikitext2/valid.txt", "f0737ed31fc1329026e95cb8b98e19c2a182c39c240ab909dc31abf2f8af58e8", 3760, _WT2 + "valid.txt"),
        RawFile("wikitext2/test.txt", "d790b833ef8cf03a90db7bf1271b7520b83c45ce07ba3c1a9699df81e239eca0", 4358, _WT2 + "test.txt"),
    ]
}

# Official files ../shared/data does not stage. Multi30k's later test sets: sha256 and lines of the
# gunzipped files at the URL's commit. WikiText-2's train.txt: no sha256 or line count was recorded; the
# git blob id is `git ls-tree` of the URL's commit (valid.txt and test.txt there match the staged ones).
UNSTAGED: dict[str, RawFile] = {
    f.relpath: f
    for f in [
        RawFile("multi30k/test_2017_flickr.en", "ce1450ddc5ab0834502579d77a170849952e15a2938b34cc503bdc25ebb4fb98", 1000, _M30K + "test_2017_flickr.en.gz", True),
        RawFile("multi30k/test_2017_flickr.de", "c3078bc3b36808bf9d20eb2347ed6137016179ef59ec0d2b9b8ecc3fb2880081", 1000, _M30K + "test_2017_flickr.de.gz", True),
        RawFile("multi30k/test_2017_mscoco.en", "43051fdfa86fd5395182e718a94ca67b1b227b9f7c79596ff0f6b813216981d2", 461, _M30K + "test_2017_mscoco.en.gz", True),
        RawFile("multi30k/test_2017_mscoco.de", "58277df3c75f92f7145a11b910b553d1cf82c439249d4dc237c899609eafac22", 461, _M30K + "test_2017_mscoco.de.gz", True),
        RawFile("multi30k/test_2018_flickr.en", "4e585c2dd525911a6ea7730e9d0b516239af3f1b1ffae6a2130223cfb639f25e", 1071, _M30K + "test_2018_flickr.en.gz", True),
        RawFile("multi30k/test_2018_flickr.de", "39fcc8b3331d76fb42d648d019c6898b0d5e58baac87bc2a0bb93f44ec8db207", 1071, _M30K + "test_2018_flickr.de.gz", True),
        RawFile("wikitext2/train.txt", "", 0, _WT2 + "train.txt", git_blob="2d84b35af79e411d73ea7cae83c73964c6ac83b4"),
    ]
}


def raw_file(relpath: str) -> RawFile:
    """The record of raw file `relpath` (a key of FILES or UNSTAGED)."""
    if relpath in FILES:
        return FILES[relpath]
    if relpath in UNSTAGED:
        return UNSTAGED[relpath]
    raise KeyError(f"{relpath}: not a recorded raw file")


def default_data_dir() -> str | None:
    """`$BVT_DATA_DIR` as an absolute path (relative values are taken from the working dir)."""
    value = os.environ.get(DATA_DIR_ENV)
    return os.path.abspath(os.path.expanduser(value)) if value else None


def sha256_file(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def git_blob_id(path: str) -> str:
    """What `git hash-object` prints: sha1 of b"blob <size>\\0" followed by the file's bytes."""
    h = hashlib.sha1(f"blob {os.path.getsize(path)}\0".encode())
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def verify(path: str, expected_sha256: str, name: str | None = None) -> None:
    """Raises ChecksumError (naming the file) unless `path`'s sha256 is `expected_sha256`."""
    actual = sha256_file(path)
    if actual != expected_sha256:
        raise ChecksumError(
            f"{name or os.path.basename(path)}: sha256 mismatch for {path}: got {actual}, recorded "
            f"{expected_sha256}. The file is corrupt, truncated or a different version; replace it "
            "with the recorded one (see the dataset's PROVENANCE.md)."
        )


def verify_raw(path: str, raw: RawFile) -> None:
    """Checks `path` against raw's sha256, or its git blob id where no sha256 was recorded."""
    if raw.sha256:
        verify(path, raw.sha256, raw.relpath)
        return
    actual = git_blob_id(path)
    if actual != raw.git_blob:
        raise ChecksumError(f"{raw.relpath}: git blob id mismatch for {path}: got {actual}, expected {raw.git_blob} "
                            f"(the file at {raw.url})")
    logging.info("%s: git blob %s verified; sha256 %s (not recorded)", raw.relpath, actual, sha256_file(path))


def _how_to_get(raw: RawFile) -> str:
    step = f"download {raw.url}" + (" and gunzip it" if raw.gzipped else "")
    return f"{step}, or unset {DATA_DIR_ENV} to let the builder download it"


def local_file(relpath: str, data_dir: str | None = None, *, check: bool = True) -> str:
    """The verified path of raw file `relpath` (see raw_file) under `data_dir` / $BVT_DATA_DIR."""
    raw = raw_file(relpath)
    root = data_dir or default_data_dir()
    if root is None:
        raise MissingFileError(f"{relpath}: no data dir given and ${DATA_DIR_ENV} is not set")
    path = os.path.join(root, relpath)
    if not os.path.isfile(path):
        raise MissingFileError(
            f"{relpath}: not found at {path} (looked under {DATA_DIR_ENV}={root}); "
            f"to get it, {_how_to_get(raw)}."
        )
    if check:
        verify_raw(path, raw)
    return path


def fetch(relpaths: Sequence[str], dl_manager=None, data_dir: str | None = None) -> dict[str, str]:
    """Verified local paths of raw files: from `data_dir` / $BVT_DATA_DIR when set, else
    downloaded with tfds' `dl_manager` (gunzipped next to the download) and verified."""
    root = data_dir or default_data_dir()
    if root is not None:
        return {r: local_file(r, root) for r in relpaths}
    if dl_manager is None:
        raise MissingFileError(
            f"{list(relpaths)}: ${DATA_DIR_ENV} is not set and no download manager was given "
            "(set it to a folder laid out as ../shared/data)"
        )
    out = {}
    for relpath in relpaths:
        raw = raw_file(relpath)
        try:
            path = os.fspath(dl_manager.download(raw.url))
        except Exception as e:  # noqa: BLE001  (no network, HTTP errors: tfds raises many kinds)
            reason = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
            raise MissingFileError(f"{relpath}: not local (${DATA_DIR_ENV} is not set) and its download from "
                                   f"{raw.url} failed: {reason}") from None
        if raw.gzipped:
            target = path + ".gunzipped"
            if not os.path.isfile(target):
                with gzip.open(path, "rb") as src, open(target + ".tmp", "wb") as dst:
                    shutil.copyfileobj(src, dst)
                os.replace(target + ".tmp", target)
            path = target
        verify_raw(path, raw)
        out[relpath] = path
    return out


# ---------------------------------------------------------------------------------------------
# Readers.


@dataclasses.dataclass
class ReadStats:
    """What a reader kept and skipped (and why) in one file or pair of files."""

    source: str
    lines: int = 0
    kept: int = 0
    empty: int = 0
    malformed: int = 0

    @property
    def skipped(self) -> int:
        return self.empty + self.malformed

    def log(self, expected_empty: bool = False) -> None:
        msg = (f"{self.source}: {self.lines} lines, kept {self.kept}; skipped {self.empty} empty, "
               f"{self.malformed} malformed")
        bad = self.malformed + (0 if expected_empty else self.empty)
        (logging.warning if bad else logging.info)(msg)

    def as_dict(self) -> dict[str, int]:
        return {k: getattr(self, k) for k in ("lines", "kept", "empty", "malformed")}


def _raw_lines(path: str) -> list[bytes]:
    """Lines of a file as bytes, without line terminators (\\n or \\r\\n) or a UTF-8 BOM."""
    if not os.path.isfile(path):
        raise MissingFileError(f"{os.path.basename(path)}: not found at {path}")
    with open(path, "rb") as f:
        return _split_lines(f.read())


def _split_lines(data: bytes) -> list[bytes]:
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    return [line[:-1] if line.endswith(b"\r") else line for line in lines]


def decode_lines(data: bytes, name: str) -> list[str]:
    """The lines of `data` (no terminators or BOM), decoded strictly: a line that is not UTF-8 raises
    NotUtf8Error naming `name` and the line (from 1)."""
    out = []
    for number, line in enumerate(_split_lines(data), 1):
        try:
            out.append(line.decode("utf-8"))
        except UnicodeDecodeError as e:
            raise NotUtf8Error(f"{name}:{number}: not UTF-8 (byte 0x{line[e.start]:02x} at column {e.start + 1}); "
                               "convert the file to UTF-8, e.g. iconv -f latin1 -t utf-8") from None
    return out


def _decode(line: bytes, path: str, index: int) -> str:
    """Line `index` (from 0) of `path`, decoded strictly: NotUtf8Error names the file and line."""
    try:
        return line.decode("utf-8")
    except UnicodeDecodeError as e:
        raise NotUtf8Error(f"{path}:{index + 1}: not UTF-8 (byte 0x{line[e.start]:02x} at column {e.start + 1}); "
                           "the file is damaged or in another encoding: replace it with the recorded one") from None


def read_lines(path: str, *, name: str | None = None, keep_empty: bool = False) -> tuple[list[tuple[int, str]], ReadStats]:
    """(line number from 0, stripped text) of every usable line, and what was skipped.

    With `keep_empty` empty lines are returned (as "") instead of skipped: WikiText needs them.
    """
    stats = ReadStats(name or path)
    out = []
    for i, raw in enumerate(_raw_lines(path)):
        stats.lines += 1
        text = _decode(raw, path, i).strip()
        if not text and not keep_empty:
            stats.empty += 1
            continue
        out.append((i, text))
    stats.kept = len(out)
    return out, stats


def read_parallel(path_a: str, path_b: str, *, name: str | None = None) -> tuple[list[tuple[int, str, str]], ReadStats]:
    """Line-aligned pairs (line number, a, b). Different line counts are an error naming both
    files; a pair whose either side is empty is skipped and counted; a line that is not UTF-8 is an
    error naming its file and line."""
    lines_a, lines_b = _raw_lines(path_a), _raw_lines(path_b)
    if len(lines_a) != len(lines_b):
        raise LineCountMismatchError(
            f"parallel files differ in length: {path_a} has {len(lines_a)} lines, {path_b} has "
            f"{len(lines_b)}; they must be line-aligned"
        )
    stats = ReadStats(name or f"{path_a} | {path_b}")
    out = []
    for i, (ra, rb) in enumerate(zip(lines_a, lines_b)):
        stats.lines += 1
        a, b = _decode(ra, path_a, i).strip(), _decode(rb, path_b, i).strip()
        if not a or not b:
            stats.empty += 1
            continue
        out.append((i, a, b))
    stats.kept = len(out)
    return out, stats


def read_tsv(
    path: str,
    parse: Callable[[list[str]], Any],
    *,
    num_fields: int,
    header: bool,
    name: str | None = None,
) -> tuple[list[tuple[int, Any]], ReadStats]:
    """Rows of a tab-separated file (no quoting, as GLUE's files), each passed to `parse`.

    Rows with another number of fields, or where `parse` raises ValueError/KeyError or returns
    None (e.g. an empty sentence), are skipped as malformed; the header row is not counted.
    """
    stats = ReadStats(name or path)
    out = []
    for i, raw in enumerate(_raw_lines(path)):
        if header and i == 0:
            continue
        stats.lines += 1
        text = _decode(raw, path, i)
        if not text.strip():
            stats.empty += 1
            continue
        fields = text.split("\t")
        if len(fields) != num_fields:
            stats.malformed += 1
            continue
        try:
            row = parse(fields)
        except (ValueError, KeyError, IndexError):
            row = None
        if row is None:
            stats.malformed += 1
            continue
        out.append((i, row))
    stats.kept = len(out)
    return out, stats


def read_jsonl(path: str, parse: Callable[[dict], Any], *, name: str | None = None) -> tuple[list[tuple[int, Any]], ReadStats]:
    """Rows of a JSON-lines file passed to `parse` (invalid JSON / parse errors: malformed)."""
    stats = ReadStats(name or path)
    out = []
    for i, raw in enumerate(_raw_lines(path)):
        stats.lines += 1
        text = _decode(raw, path, i)
        if not text.strip():
            stats.empty += 1
            continue
        try:
            row = parse(json.loads(text))
        except (ValueError, KeyError, TypeError):
            row = None
        if row is None:
            stats.malformed += 1
            continue
        out.append((i, row))
    stats.kept = len(out)
    return out, stats


# ---------------------------------------------------------------------------------------------
# Dataset-specific structure.

MRPC_DEV_SIZE = 408  # GLUE's MRPC dev size (3,668 train + 408 dev = the 4,076 pairs of the file)


def mrpc_dev_keys(pair_keys: Sequence[str], dev_size: int = MRPC_DEV_SIZE) -> set[str]:
    """The deterministic MRPC dev split: the `dev_size` pairs whose sha256("id1-id2") sort first.

    GLUE's own dev ids (dev_ids.tsv) are not available here; hashing the pair ids gives a split
    that is independent of file order, of any RNG implementation and of the machine.
    """
    ranked = sorted(pair_keys, key=lambda k: hashlib.sha256(k.encode()).hexdigest())
    return set(ranked[:dev_size])


def wikitext_articles(lines: Sequence[str]) -> Iterator[tuple[str, list[str]]]:
    """(title, sentences) per WikiText article.

    An article starts at a level-1 heading line ` = Title = ` (one '=' each side; ` = = Section
    = = ` lines are section headings, dropped). Paragraph lines are split into sentences after a
    ` . `, ` ? ` or ` ! ` token (the text is tokenised, so sentence-final punctuation stands
    alone), which gives the one-sentence-per-line form BERT's pretraining data uses.
    """
    title, sentences = None, []
    for line in lines:
        s = line.strip()
        if not s:
            continue
        if s.startswith("= ") and s.endswith(" =") and not s.startswith("= ="):
            if title is not None and sentences:
                yield title, sentences
            title, sentences = s.strip("= ").strip(), []
            continue
        if s.startswith("= ="):
            continue
        sentences.extend(split_tokenised_sentences(s))
    if title is not None and sentences:
        yield title, sentences


def split_tokenised_sentences(paragraph: str) -> list[str]:
    out, current = [], []
    for token in paragraph.split():
        current.append(token)
        if token in (".", "?", "!"):
            out.append(" ".join(current))
            current = []
    if current:
        out.append(" ".join(current))
    return out


def chunks(items: Sequence[str], size: int) -> Iterator[list[str]]:
    """Consecutive chunks of `size` items (the last may be shorter)."""
    for start in range(0, len(items), size):
        yield list(items[start: start + size])
