"""How fast the WMT14 builder turns its archives into array_record, on synthetic archives.

    python -m experiments.wmt14_build_speed --pairs=300000            # build only
    python -m experiments.wmt14_build_speed --pairs=300000 --vocab_size=37000   # + the shared BPE

Writes archives with the official names and layouts (bert_vs_transformer/data/wmt14.py's SPLITS)
into a temporary folder: WMT-like sentence lengths (words per English line log-normal, median 20;
German length ~ English x exp(N(0, 0.12)); 2% misaligned pairs at 2.5x, 0.3% with an empty side),
Zipfian words, and before the en-de members another member 2.5x their size (the real archives hold
other language pairs, which the stream decompresses through). Then builds the dataset with
BVT_SKIP_CHECKSUMS=1 (the sha256s are still computed) and prints one JSON line: wall time,
pairs/s, peak RSS of this process and of the largest worker, and the time extrapolated to 4.5M pairs.
"""

from __future__ import annotations

import io
import json
import os
import resource
import shutil
import tarfile
import tempfile
import time

import numpy as np
from absl import app, flags

_PAIRS = flags.DEFINE_integer("pairs", 300_000, "training pairs in the three synthetic corpora together")
_VOCAB = flags.DEFINE_integer("vocab_size", 0, ">0: also train the shared BPE of this size on the built data")
_KEEP = flags.DEFINE_string("dir", "", "work in this folder and keep it (default: a temporary folder, removed)")

SHARES = {"europarl_v7": 0.425, "commoncrawl": 0.53, "newscommentary_v9": 0.045}  # of the real 4.5M
OTHER_PAIRS_FACTOR = 2.5


def _vocabulary(rng, size: int, alphabet: str) -> np.ndarray:
    lengths = 1 + rng.poisson(4.2, size)
    letters = np.array(list(alphabet))
    return np.array(["".join(letters[rng.integers(0, len(letters), n)]) for n in lengths], dtype=object)


def _lines(rng, words: np.ndarray, counts: np.ndarray) -> list[bytes]:
    ranks = np.arange(1, len(words) + 1)
    p = 1.0 / (ranks + 2.7) ** 1.05
    ids = rng.choice(len(words), size=int(counts.sum()), p=p / p.sum())
    out, start = [], 0
    for n in counts:
        out.append(" ".join(words[ids[start: start + n]]).encode() + b"\n")
        start += n
    return out


def synthetic_corpus(rng, n: int) -> tuple[bytes, bytes]:
    en_words = rng.lognormal(np.log(20), 0.6, n).round().clip(1, 400).astype(int)
    de_words = (en_words * np.exp(rng.normal(0, 0.12, n))).round().clip(1, 400).astype(int)
    bad = rng.random(n) < 0.02
    de_words[bad] = (en_words[bad] * 2.5).astype(int)
    en = _lines(rng, _vocabulary(rng, 50_000, "etaoinshrdlcumwfgypbvk"), en_words)
    de = _lines(rng, _vocabulary(rng, 80_000, "enisratdhulcgmobwfkzvüpäßöj"), de_words)
    for i in np.flatnonzero(rng.random(n) < 0.003):
        en[i] = b"\n"
    return b"".join(en), b"".join(de)


def _tgz(path: str, members: dict[str, bytes]) -> None:
    with tarfile.open(path, "w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def write_archives(folder: str, pairs: int, seed: int = 0) -> None:
    from bert_vs_transformer.data import wmt14

    rng = np.random.default_rng(seed)
    os.makedirs(folder, exist_ok=True)
    for corpus in wmt14.SPLITS["train"]:
        en, de = synthetic_corpus(rng, max(1, int(pairs * SHARES[corpus.name])))
        lines = (en + de).splitlines(keepends=True)
        other = b"".join(lines[i] for i in rng.permutation(len(lines)))  # another pair's text, as big
        other = other * int(OTHER_PAIRS_FACTOR) + other[: int(len(other) * (OTHER_PAIRS_FACTOR % 1))]
        _tgz(os.path.join(folder, corpus.archive), {"other-pairs.txt": other, corpus.de: de, corpus.en: en})
    members = {}
    for corpus, n in ((wmt14.SPLITS["validation"][0], 3000), (wmt14.SPLITS["test"][0], 3003)):
        en, de = synthetic_corpus(rng, n)
        if corpus.sgml:
            def sgml(text):
                segs = text.decode().splitlines()
                return "".join(f'<seg id="{i + 1}">{s}</seg>\n' for i, s in enumerate(segs)).encode()
            en, de = sgml(en), sgml(de)
        members.update({corpus.en: en, corpus.de: de})
    _tgz(os.path.join(folder, "dev.tgz"), members)


def _peak_rss_mb() -> int:
    """This process's own peak resident memory (VmHWM of /proc/self/status), in MiB."""
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) // 1024 for line in f if line.startswith("VmHWM:"))


def _build(raw: str, tfds_dir: str, queue) -> None:
    """Builds the dataset (in a fresh process, so its peak RSS is the builder's alone)."""
    from bert_vs_transformer.data import builders

    os.environ["BVT_SKIP_CHECKSUMS"] = "1"
    start = time.perf_counter()
    b = builders.prepare("wmt14", tfds_dir, raw_data_dir=raw)
    wall = time.perf_counter() - start
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    queue.put({
        "pairs_read": sum(v["lines"] for k, v in b.info.metadata.items() if k.startswith("read_stats/train/")),
        "pairs_kept": b.info.splits["train"].num_examples, "train_shards": b.info.splits["train"].num_shards,
        "generated_mb": round(b.info.dataset_size / 2**20, 1), "build_s": round(wall, 1),
        "cpu_s": round(me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime, 1),
        # VmHWM, not ru_maxrss: Linux carries ru_maxrss across exec, so a spawned process would report
        # the parent's peak (the archives generated in memory) as its own.
        "peak_rss_mb": _peak_rss_mb(), "worker_peak_rss_mb": round(kids.ru_maxrss / 1024),
    })


def main(argv):
    del argv
    import multiprocessing

    work = _KEEP.value or tempfile.mkdtemp(prefix="wmt14-speed-")
    raw, tfds_dir = os.path.join(work, "raw"), os.path.join(work, "tfds")
    try:
        folder = os.path.join(raw, "wmt14")
        if not os.path.isdir(folder):
            write_archives(folder, _PAIRS.value)
        archives = sum(e.stat().st_size for e in os.scandir(folder))
        shutil.rmtree(tfds_dir, ignore_errors=True)
        ctx = multiprocessing.get_context("spawn")
        queue = ctx.Queue()
        proc = ctx.Process(target=_build, args=(raw, tfds_dir, queue))
        proc.start()
        out = queue.get()
        proc.join()
        out.update(archives_mb=round(archives / 2**20, 1), cpus=os.cpu_count(),
                   pairs_per_s=round(out["pairs_read"] / out["build_s"]),
                   pairs_per_cpu_s=round(out["pairs_read"] / out["cpu_s"]))
        out["cpu_min_for_4.5M"] = round(4.5e6 / out["pairs_per_cpu_s"] / 60, 1)
        if _VOCAB.value:
            from bert_vs_transformer import data
            from bert_vs_transformer.data import builders
            from configs import transformer

            cfg = transformer.get_config("base")
            cfg.data.dataset, cfg.data.tfds_data_dir, cfg.data.raw_data_dir = "wmt14", tfds_dir, raw
            cfg.data.cache_dir = os.path.join(work, "cache")
            cfg.model.vocab_size = _VOCAB.value
            start = time.perf_counter()
            tok = data.tokenizer(cfg)
            out.update(tokenizer_s=round(time.perf_counter() - start, 1), tokenizer_pieces=tok.vocab_size,
                       tokenizer_sample_pairs=min(builders.spec("wmt14").tokenizer_sample, out["pairs_kept"]),
                       tokenizer_peak_rss_mb=round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024))
        print(json.dumps(out))
    finally:
        if not _KEEP.value:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    app.run(main)
