"""tfds builders for the project's corpora, written as array_record and read with grain.

| registry name        | tfds name                 | splits (examples)                                      |
|----------------------|---------------------------|--------------------------------------------------------|
| `multi30k`           | `bvt_multi30k`            | train 29,000 · validation 1,014 · test 1,000 (test_2016_flickr); test_2017_flickr 1,000 · test_2017_mscoco 461 · test_2018_flickr 1,071 (on demand) |
| `sst2`               | `bvt_glue/sst2`           | train 67,349 · validation 872                          |
| `cola`               | `bvt_glue/cola`           | train 8,551 · validation 1,043 (in_domain + out_of_domain dev) |
| `stsb`               | `bvt_glue/stsb`           | train 5,749 · validation 1,500 (label: float score 0-5) |
| `mrpc`               | `bvt_glue/mrpc`           | train 3,668 · validation 408 (carved from the training file) |
| `rte`                | `bvt_glue/rte`            | train 2,490 · validation 277                           |
| `pretraining_corpus` | `bvt_pretraining_corpus`  | train (documents) · validation (PTB valid documents)   |
| `ptb`                | `bvt_lm_text/ptb`         | train 42,068 · validation 3,370 · test 3,761 (lines)   |
| `wikitext2`          | `bvt_lm_text/wikitext2`   | train · validation 2,461 · test 2,891 (non-empty lines; train only with internet) |
| `wmt14`              | `bvt_wmt14`               | train (cleaned, ~4.5M) · validation 3,000 (newstest2013) · test 3,003 (newstest2014); see wmt14.py |

Multi30k's 2017/2018 test sets (`BvtMulti30k.FILE_SPLITS`) are read from raw files on demand, not
generated (`raw_splits.py`): the dataset builds without them.

tfds names carry a `bvt_` prefix because tfds already registers `glue`. Raw files come from
`$BVT_DATA_DIR` (checked against recorded sha256 sums) or are downloaded; see `sources.py`.
Examples keep the order of the raw files (`disable_shuffling`): `idx` is the example's line
number in its file (the document number for the corpus), so eval outputs line up with references.
Generated data goes to the tfds data dir: `data_dir=` or `$TFDS_DATA_DIR` (tfds' own variable),
else `~/tensorflow_datasets`.

Documents of the pretraining corpus (BERT's pretraining data is one sentence per line with
blank lines between documents; NSP pairs sentences within a document, and the sequence packer
never crosses a document boundary):

- WikiText-2 valid + test: one document per article, split at the level-1 ` = Title = ` lines
  (section headings dropped); paragraphs split into sentences at the standalone ` . `/` ? `/` ! `
  tokens. These are real documents (60 + 62 articles).
- PTB train: chunks of 20 consecutive lines. The Mikolov PTB keeps WSJ sentences in article order
  but removed the article boundaries; 20 sentences is about one WSJ article, so most chunks are
  contiguous text from one or two articles.
- Multi30k English train: chunks of 10 consecutive captions. Consecutive captions describe
  different images, so these "documents" are not coherent text: the chunking only gives the MLM
  packer multi-sentence sequences of ~128 tokens; NSP on them is a weak signal.
- GLUE training sentences: SST-2 and CoLA (single sentences, independent): chunks of 10 lines, as
  Multi30k. STS-B, MRPC (the 3,668 carved training pairs only) and RTE: each pair is one
  two-segment document (sentence1, sentence2 / premise, hypothesis), the one real relation those
  datasets have. No GLUE dev data enters the corpus.
- validation split: PTB valid in chunks of 20 lines (held out from the train split).

Text is stored as it is in the files (PTB/WikiText keep their `<unk>` tokens). The language-modelling
text (`ptb`, `wikitext2`) is one example per non-empty line, in file order.
"""

from __future__ import annotations

import dataclasses
import os
import time
from typing import Any

import numpy as np
import tensorflow_datasets as tfds
from absl import logging
from etils import epath

from bert_vs_transformer.data import sources, storage, wmt14

PTB_LINES_PER_DOC = 20
CAPTIONS_PER_DOC = 10
GLUE_SENTENCES_PER_DOC = 10

SPLIT_ALIASES = {"val": "validation", "dev": "validation", "valid": "validation", "test_2016_flickr": "test"}


def _code_path(cls):
    # tfds' default locates the builder's module through importlib_resources (not installed
    # here); the checksums file it looks for would sit next to this file.
    return epath.Path(__file__)


def _raw_dir_of(builder) -> str | None:
    return getattr(builder, "_raw_data_dir", None)


def _metadata_stats(builder, split: str, stats: sources.ReadStats, expected_empty: bool = False):
    stats.log(expected_empty=expected_empty)
    if builder.info.metadata is not None:
        builder.info.metadata[f"read_stats/{split}/{stats.source}"] = stats.as_dict()


class BvtMulti30k(tfds.core.GeneratorBasedBuilder):
    """Multi30k Task 1 (Elliott et al. 2016), English-German raw image captions."""

    code_path = tfds.core.utils.classproperty(classmethod(_code_path))

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Raw (true-cased) Task 1 text; test = test_2016_flickr."}
    SPLIT_FILES = {"train": "train", "validation": "val", "test": "test_2016_flickr"}
    FILE_SPLITS = ("test_2017_flickr", "test_2017_mscoco", "test_2018_flickr")  # see raw_splits.py

    def __init__(self, *, raw_data_dir: str | None = None, **kwargs):
        self._raw_data_dir = raw_data_dir
        super().__init__(**kwargs)

    def _info(self):
        return tfds.core.DatasetInfo(
            builder=self,
            description="Multi30k Task 1 en-de (WMT16 multimodal), raw text, line-aligned.",
            features=tfds.features.FeaturesDict({"idx": np.int32, "en": tfds.features.Text(), "de": tfds.features.Text()}),
            supervised_keys=("en", "de"),
            homepage="https://github.com/multi30k/dataset",
            citation="Elliott et al. 2016, Multi30K: Multilingual English-German Image Descriptions (W16-3210).",
            disable_shuffling=True,
            metadata=tfds.core.MetadataDict(),
        )

    def _split_generators(self, dl_manager):
        rel = {split: (f"multi30k/{stem}.en", f"multi30k/{stem}.de") for split, stem in self.SPLIT_FILES.items()}
        files = sources.fetch([p for pair in rel.values() for p in pair], dl_manager, _raw_dir_of(self))
        return {split: self._generate_examples(split, files[en], files[de]) for split, (en, de) in rel.items()}

    def _generate_examples(self, split, path_en, path_de):
        pairs, stats = sources.read_parallel(path_en, path_de, name=f"multi30k/{self.SPLIT_FILES[split]}.{{en,de}}")
        _metadata_stats(self, split, stats)
        for i, en, de in pairs:
            yield i, {"idx": i, "en": en, "de": de}


@dataclasses.dataclass
class GlueConfig(tfds.core.BuilderConfig):
    label_names: tuple[str, ...] | None = None  # None: regression (STS-B)
    pair: bool = False


def _cola(fields):
    text = fields[3].strip()
    return (text, "", int(fields[1])) if text else None


def _sst2(fields):
    text = fields[0].strip()
    return (text, "", int(fields[1])) if text else None


def _stsb(fields):
    a, b = fields[7].strip(), fields[8].strip()
    return (a, b, float(fields[9])) if a and b else None


def _mrpc(fields):
    a, b = fields[3].strip(), fields[4].strip()
    return (a, b, int(fields[0]), f"{fields[1]}-{fields[2]}") if a and b else None


_RTE_LABELS = ("entailment", "not_entailment")


def _rte(obj):
    a, b = str(obj["premise"]).strip(), str(obj["hypothesis"]).strip()
    return (a, b, _RTE_LABELS.index(obj["label"])) if a and b else None


def glue_rows(task: str, split: str, files: dict[str, str]) -> tuple[list[tuple[int, tuple]], list[sources.ReadStats]]:
    """(idx, (sentence1, sentence2, label)) rows of a GLUE task's split from verified raw files."""
    if task == "sst2":
        rows, st = sources.read_tsv(files[f"glue/SST-2/{'train' if split == 'train' else 'dev'}.tsv"], _sst2,
                                    num_fields=2, header=True, name=f"SST-2/{split}")
        return rows, [st]
    if task == "cola":
        names = ["in_domain_train"] if split == "train" else ["in_domain_dev", "out_of_domain_dev"]
        rows, stats, offset = [], [], 0
        for n in names:  # dev = in_domain_dev followed by out_of_domain_dev (as GLUE's dev.tsv)
            r, st = sources.read_tsv(files[f"glue/CoLA/{n}.tsv"], _cola, num_fields=4, header=False, name=f"CoLA/{n}")
            rows += [(offset + i, row) for i, row in r]
            offset += st.lines
            stats.append(st)
        return rows, stats
    if task == "stsb":
        rows, st = sources.read_tsv(files[f"glue/STS-B/{'train' if split == 'train' else 'dev'}.tsv"], _stsb,
                                    num_fields=10, header=True, name=f"STS-B/{split}")
        return rows, [st]
    if task == "mrpc":
        rows, st = sources.read_tsv(files["glue/MRPC/msr_paraphrase_train.txt"], _mrpc, num_fields=5, header=True,
                                    name=f"MRPC/{split}")
        dev = sources.mrpc_dev_keys([row[3] for _, row in rows])
        keep = [(i, row[:3]) for i, row in rows if (row[3] in dev) == (split == "validation")]
        return keep, [st]
    if task == "rte":
        rows, st = sources.read_jsonl(files[f"glue/RTE/{'train' if split == 'train' else 'val'}.jsonl"], _rte,
                                      name=f"RTE/{split}")
        return rows, [st]
    raise ValueError(f"unknown GLUE task {task!r}")


GLUE_FILES = {
    "sst2": ["glue/SST-2/train.tsv", "glue/SST-2/dev.tsv"],
    "cola": ["glue/CoLA/in_domain_train.tsv", "glue/CoLA/in_domain_dev.tsv", "glue/CoLA/out_of_domain_dev.tsv"],
    "stsb": ["glue/STS-B/train.tsv", "glue/STS-B/dev.tsv"],
    "mrpc": ["glue/MRPC/msr_paraphrase_train.txt"],
    "rte": ["glue/RTE/train.jsonl", "glue/RTE/val.jsonl"],
}


class BvtGlue(tfds.core.GeneratorBasedBuilder):
    """GLUE tasks (Wang et al. 2018) used by BERT: one config per task, uniform features
    (sentence2 is "" for single-sentence tasks; label is a class index, or a float for STS-B)."""

    code_path = tfds.core.utils.classproperty(classmethod(_code_path))

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "SST-2, CoLA, STS-B, MRPC (dev carved by pair-id hash), RTE; train + validation."}
    BUILDER_CONFIGS = [
        GlueConfig(name="sst2", description="SST-2 sentiment", label_names=("negative", "positive")),
        GlueConfig(name="cola", description="CoLA acceptability", label_names=("unacceptable", "acceptable")),
        GlueConfig(name="stsb", description="STS-B similarity (regression 0-5)", label_names=None, pair=True),
        GlueConfig(name="mrpc", description="MRPC paraphrase", label_names=("not_equivalent", "equivalent"), pair=True),
        GlueConfig(name="rte", description="RTE entailment", label_names=_RTE_LABELS, pair=True),
    ]

    def __init__(self, *, raw_data_dir: str | None = None, **kwargs):
        self._raw_data_dir = raw_data_dir
        super().__init__(**kwargs)

    def _info(self):
        cfg = self.builder_config
        label = (tfds.features.ClassLabel(names=list(cfg.label_names)) if cfg.label_names
                 else tfds.features.Scalar(np.float32))
        return tfds.core.DatasetInfo(
            builder=self,
            description=f"GLUE {cfg.name}: {cfg.description}.",
            features=tfds.features.FeaturesDict({
                "idx": np.int32,
                "sentence1": tfds.features.Text(),
                "sentence2": tfds.features.Text(),
                "label": label,
            }),
            homepage="https://gluebenchmark.com/",
            disable_shuffling=True,
            metadata=tfds.core.MetadataDict(),
        )

    def _split_generators(self, dl_manager):
        files = sources.fetch(GLUE_FILES[self.builder_config.name], dl_manager, _raw_dir_of(self))
        return {split: self._generate_examples(split, files) for split in ("train", "validation")}

    def _generate_examples(self, split, files):
        rows, stats = glue_rows(self.builder_config.name, split, files)
        for st in stats:
            _metadata_stats(self, split, st)
        for i, (a, b, label) in rows:
            yield i, {"idx": i, "sentence1": a, "sentence2": b, "label": label}


CORPUS_FILES = [
    "ptb/ptb.train.txt", "ptb/ptb.valid.txt", "wikitext2/valid.txt", "wikitext2/test.txt",
    "multi30k/train.en",
    *{p for ps in GLUE_FILES.values() for p in ps},
]


def corpus_documents(split: str, files: dict[str, str], log=None) -> list[tuple[str, list[str]]]:
    """(source, sentences) documents of the pretraining corpus (see the module docstring)."""
    log = log or (lambda split, st, expected_empty=False: st.log(expected_empty))
    docs: list[tuple[str, list[str]]] = []
    if split == "validation":
        lines, st = sources.read_lines(files["ptb/ptb.valid.txt"], name="ptb.valid")
        log(split, st)
        return [("ptb", c) for c in sources.chunks([t for _, t in lines], PTB_LINES_PER_DOC)]
    lines, st = sources.read_lines(files["ptb/ptb.train.txt"], name="ptb.train")
    log(split, st)
    docs += [("ptb", c) for c in sources.chunks([t for _, t in lines], PTB_LINES_PER_DOC)]
    for name in ("valid", "test"):
        lines, st = sources.read_lines(files[f"wikitext2/{name}.txt"], name=f"wikitext2.{name}")
        log(split, st, expected_empty=True)  # blank lines separate WikiText paragraphs
        docs += [("wikitext2", sents) for _, sents in sources.wikitext_articles([t for _, t in lines])]
    lines, st = sources.read_lines(files["multi30k/train.en"], name="multi30k.train.en")
    log(split, st)
    docs += [("multi30k", c) for c in sources.chunks([t for _, t in lines], CAPTIONS_PER_DOC)]
    for task in ("sst2", "cola", "stsb", "mrpc", "rte"):
        rows, stats = glue_rows(task, "train", files)
        for s in stats:
            log(split, s)
        if task in ("sst2", "cola"):
            docs += [(f"glue/{task}", c) for c in sources.chunks([a for _, (a, _, _) in rows], GLUE_SENTENCES_PER_DOC)]
        else:
            docs += [(f"glue/{task}", [a, b]) for _, (a, b, _) in rows]
    return docs


class BvtPretrainingCorpus(tfds.core.GeneratorBasedBuilder):
    """Unlabelled English documents for BERT pretraining (MLM + NSP)."""

    code_path = tfds.core.utils.classproperty(classmethod(_code_path))

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "PTB train, WikiText-2 valid/test, Multi30k en train, GLUE train sentences; PTB valid held out."}

    def __init__(self, *, raw_data_dir: str | None = None, **kwargs):
        self._raw_data_dir = raw_data_dir
        super().__init__(**kwargs)

    def _info(self):
        return tfds.core.DatasetInfo(
            builder=self,
            description="English documents (lists of sentences) for MLM/NSP pretraining.",
            features=tfds.features.FeaturesDict({
                "idx": np.int32,
                "source": tfds.features.Text(),
                "sentences": tfds.features.Sequence(tfds.features.Text()),
            }),
            disable_shuffling=True,
            metadata=tfds.core.MetadataDict(),
        )

    def _split_generators(self, dl_manager):
        files = sources.fetch(CORPUS_FILES, dl_manager, _raw_dir_of(self))
        return {split: self._generate_examples(split, files) for split in ("train", "validation")}

    def _generate_examples(self, split, files):
        def log(split_, st, expected_empty=False):
            _metadata_stats(self, split_, st, expected_empty)

        for i, (source, sentences) in enumerate(corpus_documents(split, files, log)):
            yield i, {"idx": i, "source": source, "sentences": sentences}


@dataclasses.dataclass
class LmTextConfig(tfds.core.BuilderConfig):
    files: tuple[tuple[str, str], ...] = ()  # (split, raw file) pairs
    blank_lines: bool = False  # the files separate paragraphs with blank lines (not counted as bad)


class BvtLmText(tfds.core.GeneratorBasedBuilder):
    """Running text for language modelling: PTB (Mikolov et al. 2010's version of the Penn Treebank)
    and WikiText-2 (Merity et al. 2016), one example per non-empty line."""

    code_path = tfds.core.utils.classproperty(classmethod(_code_path))

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "PTB and WikiText-2 train/validation/test, one line per example."}
    BUILDER_CONFIGS = [
        LmTextConfig(name="ptb", description="Penn Treebank, Mikolov's LM version (10k words, <unk>)",
                     files=(("train", "ptb/ptb.train.txt"), ("validation", "ptb/ptb.valid.txt"),
                            ("test", "ptb/ptb.test.txt"))),
        LmTextConfig(name="wikitext2", description="WikiText-2 v1, tokenised, with <unk>",
                     files=(("train", "wikitext2/train.txt"), ("validation", "wikitext2/valid.txt"),
                            ("test", "wikitext2/test.txt")), blank_lines=True),
    ]

    def __init__(self, *, raw_data_dir: str | None = None, **kwargs):
        self._raw_data_dir = raw_data_dir
        super().__init__(**kwargs)

    def _info(self):
        return tfds.core.DatasetInfo(
            builder=self,
            description=f"{self.builder_config.description}: one example per non-empty line, in file order.",
            features=tfds.features.FeaturesDict({"idx": np.int32, "text": tfds.features.Text()}),
            disable_shuffling=True,
            metadata=tfds.core.MetadataDict(),
        )

    def _split_generators(self, dl_manager):
        cfg = self.builder_config
        files = sources.fetch([rel for _, rel in cfg.files], dl_manager, _raw_dir_of(self))
        return {split: self._generate_examples(split, rel, files[rel]) for split, rel in cfg.files}

    def _generate_examples(self, split, rel, path):
        lines, st = sources.read_lines(path, name=rel)
        _metadata_stats(self, split, st, expected_empty=self.builder_config.blank_lines)
        for i, text in lines:
            yield i, {"idx": i, "text": text}


# ---------------------------------------------------------------------------------------------
# Registry.


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
    builder_cls: type
    config: str | None
    kind: str  # translation | classification | pretraining | lm
    expected: dict[str, int]  # examples per split (checked by the tests)
    fields: tuple[str, ...]  # text fields
    tokenizer_sample: int = 0  # >0: the translation BPE is trained on this many seeded training pairs

    @property
    def tfds_name(self) -> str:
        return self.builder_cls.name + (f"/{self.config}" if self.config else "")


REGISTRY: dict[str, DatasetSpec] = {
    "multi30k": DatasetSpec(BvtMulti30k, None, "translation", {"train": 29000, "validation": 1014, "test": 1000}, ("en", "de")),
    "sst2": DatasetSpec(BvtGlue, "sst2", "classification", {"train": 67349, "validation": 872}, ("sentence1",)),
    "cola": DatasetSpec(BvtGlue, "cola", "classification", {"train": 8551, "validation": 1043}, ("sentence1",)),
    "stsb": DatasetSpec(BvtGlue, "stsb", "classification", {"train": 5749, "validation": 1500}, ("sentence1", "sentence2")),
    "mrpc": DatasetSpec(BvtGlue, "mrpc", "classification", {"train": 3668, "validation": 408}, ("sentence1", "sentence2")),
    "rte": DatasetSpec(BvtGlue, "rte", "classification", {"train": 2490, "validation": 277}, ("sentence1", "sentence2")),
    "pretraining_corpus": DatasetSpec(BvtPretrainingCorpus, None, "pretraining", {}, ("sentences",)),
    "ptb": DatasetSpec(BvtLmText, "ptb", "lm", {"train": 42068, "validation": 3370, "test": 3761}, ("text",)),
}
# Datasets with a raw file that ../shared/data does not stage (sources.UNSTAGED): generated only where
# the builder can download it, so they stay out of REGISTRY (which the tests generate offline).
DOWNLOAD_ONLY: dict[str, DatasetSpec] = {
    "wikitext2": DatasetSpec(BvtLmText, "wikitext2", "lm", {}, ("text",)),
    # WMT14's archives (1.7 GB): $BVT_DATA_DIR/wmt14/<official name>, else downloaded.
    "wmt14": DatasetSpec(wmt14.BvtWmt14, None, "translation", {}, ("en", "de"),
                         tokenizer_sample=wmt14.TOKENIZER_SAMPLE_PAIRS),
}
_NAME_ALIASES = {"glue/sst2": "sst2", "glue/cola": "cola", "glue/stsb": "stsb", "glue/mrpc": "mrpc",
                 "glue/rte": "rte", "sst-2": "sst2", "sts-b": "stsb", "corpus": "pretraining_corpus",
                 "wikitext-2": "wikitext2"}


def spec(name: str) -> DatasetSpec:
    key = _NAME_ALIASES.get(name.lower(), name.lower())
    known = {**REGISTRY, **DOWNLOAD_ONLY}
    if key not in known:
        raise ValueError(f"unknown dataset {name!r}; known: {sorted(known)}")
    return known[key]


def canonical_split(split: str) -> str:
    return SPLIT_ALIASES.get(split, split)


def tfds_data_dir(data_dir: str | None = None) -> str:
    """Where generated datasets live: `data_dir`, else $TFDS_DATA_DIR, else ~/tensorflow_datasets."""
    d = data_dir or os.environ.get("TFDS_DATA_DIR") or os.path.join("~", "tensorflow_datasets")
    return str(storage.as_path(d))  # a local one made absolute; gs://... as it is


def builder(name: str, data_dir: str | None = None, raw_data_dir: str | None = None):
    s = spec(name)
    kwargs: dict[str, Any] = dict(data_dir=tfds_data_dir(data_dir), file_format="array_record", raw_data_dir=raw_data_dir)
    if s.config:
        kwargs["config"] = s.config
    return s.builder_cls(**kwargs)


def is_prepared(b) -> bool:
    # (tfds' own is_prepared() logs a warning for every dataset not generated yet)
    return (epath.Path(b.data_dir) / "dataset_info.json").is_file() and b.is_prepared()


def prepare(name: str, data_dir: str | None = None, raw_data_dir: str | None = None):
    """The builder of `name`, generated first if its data is not in the data dir yet."""
    b = builder(name, data_dir, raw_data_dir)
    if not is_prepared(b):
        start = time.time()
        tfds.disable_progress_bar()
        try:
            b.download_and_prepare()
        except (OSError, FileExistsError):
            # Another process finished the same generation first (shared data dir).
            b = builder(name, data_dir, raw_data_dir)
            if not is_prepared(b):
                raise
        logging.info("generated %s in %s in %.1f s", s_name(name), b.data_dir, time.time() - start)
    return b


def s_name(name: str) -> str:
    return spec(name).tfds_name


def data_source(name: str, split: str, data_dir: str | None = None, raw_data_dir: str | None = None):
    """A random-access (grain) source of split `split` of dataset `name`, generating it if needed.

    Elements are dicts of numpy values / bytes as tfds decodes them (text fields are bytes).
    """
    b = prepare(name, data_dir, raw_data_dir)
    split = canonical_split(split)
    if split not in b.info.splits:
        known = sorted(b.info.splits) + list(getattr(spec(name).builder_cls, "FILE_SPLITS", ()))
        raise ValueError(f"{name} has no split {split!r}; splits: {known}")
    return b.as_data_source(split=split)
