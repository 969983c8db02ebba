"""BERT pretraining pipeline (data/pretraining_pipeline.py): batch contents, determinism, process
sharding, exact resume, static vs dynamic masking, eval padding, caches, vocab checks, and one
end-to-end run of configs/bert.py:tiny on the real corpus.

The unit tests train on the corpus' small validation split (169 PTB documents, ~1,500 instances
at 64 tokens) through `config.data.train_split`, so they do not tokenize the 188k-sentence train
split; the end-to-end test reads the real train split."""

import collections
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from _data_testing import REPO, assert_batches_equal, raw_data_dir, take, tfds_dir  # noqa: F401
from bert_vs_transformer import config_args, data
from bert_vs_transformer.data import pretraining_examples as pe
from bert_vs_transformer.data import pretraining_pipeline as pp

KEYS = {"input_ids", "token_type_ids", "attention_mask", "masked_lm_positions", "masked_lm_ids",
        "masked_lm_weights", "next_sentence_labels"}


def pretraining_config(tfds_dir, **data_overrides):  # noqa: F811
    cfg = config_args.load("configs/bert.py:tiny")
    cfg.data.tfds_data_dir = tfds_dir
    cfg.data.train_split = "validation"
    cfg.data.batch_size = 8
    cfg.data.num_threads = 0
    for k, v in data_overrides.items():
        cfg.data[k] = v
    return cfg


def _unmasked(batch):
    """Each row's original tokens (masked positions restored) as a tuple, and its masked input."""
    out = []
    for r in range(len(batch["input_ids"])):
        ids = batch["input_ids"][r].copy()
        w = batch["masked_lm_weights"][r] > 0
        ids[batch["masked_lm_positions"][r][w]] = batch["masked_lm_ids"][r][w]
        n = int(batch["attention_mask"][r].sum())
        out.append((tuple(ids[:n].tolist()), tuple(batch["input_ids"][r][:n].tolist())))
    return out


def _source(cfg):
    return pp.instances(cfg, "validation", seed=int(cfg.seed), dupe_factor=int(cfg.data.dupe_factor))[0]


def test_batches(tfds_dir):  # noqa: F811
    cfg = pretraining_config(tfds_dir)
    tok = data.tokenizer(cfg)
    assert tok.vocab_size == cfg.model.vocab_size == 30522
    L, P = cfg.data.max_seq_len, cfg.data.max_predictions_per_seq
    batches = take(data.train_iterator(cfg, process_index=0, process_count=1), 40)
    decisions = collections.Counter()
    for b in batches:
        assert set(b) == KEYS
        for k in ("input_ids", "token_type_ids", "attention_mask"):
            assert b[k].shape == (8, L) and b[k].dtype == np.int32, k
        for k in ("masked_lm_positions", "masked_lm_ids"):
            assert b[k].shape == (8, P) and b[k].dtype == np.int32, k
        assert b["masked_lm_weights"].shape == (8, P) and b["masked_lm_weights"].dtype == np.float32
        assert b["next_sentence_labels"].shape == (8,) and b["next_sentence_labels"].dtype == np.int32
        assert set(np.unique(b["next_sentence_labels"])) <= {0, 1}
        for r in range(8):
            n = int(b["attention_mask"][r].sum())
            np.testing.assert_array_equal(b["attention_mask"][r], np.arange(L) < n)  # real tokens, then padding
            assert not b["input_ids"][r][n:].any() and not b["token_type_ids"][r][n:].any()
            assert b["input_ids"][r][0] == tok.cls_id and b["input_ids"][r][n - 1] == tok.sep_id
            types = b["token_type_ids"][r][:n]
            assert types[0] == 0 and types[-1] == 1 and np.all(np.diff(types) >= 0)  # [CLS] A [SEP] | B [SEP]
            assert np.count_nonzero(b["input_ids"][r][:n] == tok.sep_id) >= 2
            w = b["masked_lm_weights"][r]
            k = int(w.sum())
            assert k >= 1 and np.all(w[:k] == 1) and not w[k:].any()
            pos = b["masked_lm_positions"][r][:k]
            assert np.all(np.diff(pos) > 0) and pos[0] > 0 and pos[-1] < n - 1
            assert not b["masked_lm_positions"][r][k:].any() and not b["masked_lm_ids"][r][k:].any()
            assert k == min(P, max(1, round(0.15 * (n - 3))))
            labels, inputs = b["masked_lm_ids"][r][:k], b["input_ids"][r][pos]
            assert not np.isin(labels, [tok.cls_id, tok.sep_id, tok.pad_id]).any()
            decisions.update(np.where(inputs == tok.mask_id, "mask", np.where(inputs == labels, "keep", "random")))
    total = sum(decisions.values())
    assert 0.74 < decisions["mask"] / total < 0.86 and 0.06 < decisions["keep"] / total < 0.15
    # The corpus' "<unk>" marker is one [UNK] token, never the pieces "< un ##k >".
    originals = [t for b in batches for t, _ in _unmasked(b)]
    assert any(tok.unk_id in t for t in originals)
    pieces = [tok.token_to_id(x) for x in ("<", "un", "##k", ">")]
    assert not any(tuple(t[i: i + 4]) == tuple(pieces) for t in originals for i in range(len(t)))


def test_whole_word_mask(tfds_dir):  # noqa: F811
    cfg = pretraining_config(tfds_dir, whole_word_mask=True)
    tok = data.tokenizer(cfg)
    words = 0
    for b in take(data.train_iterator(cfg, process_index=0, process_count=1), 20):
        for r in range(8):
            w = b["masked_lm_weights"][r] > 0
            masked = set(b["masked_lm_positions"][r][w].tolist())
            ids = b["input_ids"][r].copy()
            ids[b["masked_lm_positions"][r][w]] = b["masked_lm_ids"][r][w]
            special = (tok.cls_id, tok.sep_id)
            for p in masked:  # a word's pieces are masked together
                if tok.is_subword(ids[p]) and ids[p - 1] not in special:
                    assert p - 1 in masked
                if tok.is_subword(ids[p + 1]):
                    assert p + 1 in masked
                    words += 1
    assert words > 10


def test_vocab_size_must_match_the_model(tfds_dir):  # noqa: F811
    cfg = pretraining_config(tfds_dir)
    cfg.model.vocab_size = 30000
    with pytest.raises(pp.VocabSizeMismatchError, match=r"config\.model\.vocab_size=30000.*config\.data\.vocab.*30522"):
        data.train_iterator(cfg, process_index=0, process_count=1)
    with pytest.raises(ValueError, match="config.model.vocab_size"):
        next(data.eval_batches(cfg, "validation"))


def test_trained_vocab(tfds_dir):  # noqa: F811
    cfg = pretraining_config(tfds_dir, vocab="train:2000")
    tok = data.tokenizer(cfg)
    assert tok.vocab_size <= 2000 and (tok.pad_id, tok.cls_id, tok.sep_id, tok.mask_id) == (0, 2, 3, 4)
    assert os.path.isfile(tok.vocab_path) and tok.vocab_path.startswith(pp._cache_dir(cfg))
    with pytest.raises(pp.VocabSizeMismatchError, match=f"--config.model.vocab_size={tok.vocab_size}"):
        data.train_iterator(cfg, process_index=0, process_count=1)
    cfg.model.vocab_size = tok.vocab_size
    b = next(data.train_iterator(cfg, process_index=0, process_count=1))
    assert b["input_ids"].max() < tok.vocab_size and np.all(b["input_ids"][:, 0] == tok.cls_id)
    with pytest.raises(ValueError, match="train:<vocab size>"):
        data.tokenizer(pretraining_config(tfds_dir, vocab="train:lots"))
    # A training run keeps the learned vocabulary in its workdir (fine-tuning and export read it there).
    workdir = os.path.join(tfds_dir, "..", "run")
    kept = data.save_vocab(cfg, workdir)
    assert kept == os.path.join(workdir, "vocab.txt")
    with open(kept) as a, open(tok.vocab_path) as b:
        assert a.read() == b.read()
    assert data.save_vocab(pretraining_config(tfds_dir), workdir + "2") is None  # a given vocab: nothing


def test_corpus_sources_filter_the_training_documents(tfds_dir):  # noqa: F811
    """config.data.corpus_sources keeps the named sources' training documents (BERT's setting: no GLUE
    text), with its own digest (so its own vocab and instance caches); held-out documents stay."""
    from bert_vs_transformer.data import records

    full = pretraining_config(tfds_dir, train_split="train")
    counts = collections.Counter(pp._source_of(r) for r in records.split_records(full, "train"))
    assert {"ptb", "wikitext2", "multi30k", "glue/sst2", "glue/rte"} <= set(counts)
    docs, digest = pp.documents(full, "train")
    assert len(docs) == sum(counts.values())
    clean = pretraining_config(tfds_dir, train_split="train", corpus_sources="ptb, wikitext2,multi30k")
    kept, kept_digest = pp.documents(clean, "train")
    assert len(kept) == sum(n for s, n in counts.items() if not s.startswith("glue/")) and kept_digest != digest
    glue = pp.documents(pretraining_config(tfds_dir, train_split="train", corpus_sources="glue"), "train")[0]
    assert len(glue) == sum(n for s, n in counts.items() if s.startswith("glue/"))
    assert pp.documents(clean, "validation") == pp.documents(full, "validation")  # evaluation unchanged
    with pytest.raises(ValueError, match=r"no documents from \['books'\]"):
        pp.documents(pretraining_config(tfds_dir, train_split="train", corpus_sources="books"), "train")


def test_same_seed_same_batches(tfds_dir):  # noqa: F811
    cfg = pretraining_config(tfds_dir)
    a = take(data.train_iterator(cfg, process_index=0, process_count=1), 5)
    b = take(data.train_iterator(cfg, process_index=0, process_count=1), 5)
    assert_batches_equal(a, b)
    cfg.seed = 1
    c = take(data.train_iterator(cfg, process_index=0, process_count=1), 1)
    assert not np.array_equal(a[0]["input_ids"], c[0]["input_ids"])


def test_process_shards_are_disjoint_and_complete(tfds_dir):  # noqa: F811
    """2 processes' local rows concatenate to the 1-process global batch, and an epoch of global
    batches holds every instance once."""
    cfg = pretraining_config(tfds_dir, batch_size=16)
    single = data.train_iterator(cfg, process_index=0, process_count=1)
    shards = [data.train_iterator(cfg, process_index=p, process_count=2) for p in range(2)]
    source = _source(cfg)
    seen = []
    for _ in range(len(source) // 16):
        g = next(single)
        local = [next(s) for s in shards]
        assert all(x["input_ids"].shape == (8, cfg.data.max_seq_len) for x in local)
        for k in g:
            np.testing.assert_array_equal(np.concatenate([x[k] for x in local]), g[k], err_msg=k)
        seen += [t for t, _ in _unmasked(g)]
    everything = collections.Counter(tuple(source[i].tokens.tolist()) for i in range(len(source)))
    assert len(seen) == 16 * (len(source) // 16) > 1400
    assert not collections.Counter(seen) - everything  # each instance at most once in the epoch


def test_resume_equals_uninterrupted(tfds_dir):  # noqa: F811
    cfg = pretraining_config(tfds_dir, masking="dynamic", num_threads=2)
    it = data.train_iterator(cfg, process_index=1, process_count=2)
    take(it, 7)
    state = json.loads(json.dumps(it.get_state()))  # JSON-serialisable
    expected = take(it, 6)
    resumed = data.train_iterator(cfg, process_index=1, process_count=2)
    resumed.set_state(state)
    assert_batches_equal(take(resumed, 6), expected)
    # The state is one position in the global stream: it moves to another process layout.
    one = data.train_iterator(cfg, process_index=0, process_count=1)
    one.set_state(state)
    np.testing.assert_array_equal(next(one)["input_ids"][4:], expected[0]["input_ids"])


def test_worker_processes_give_the_same_stream(tfds_dir):  # noqa: F811
    """data.worker_count=2: two spawned grain processes mask the batches; the stream is the one
    process's, a state resumes it with 2 workers, and a state of another worker count is refused."""
    from absl import flags
    if not flags.FLAGS.is_parsed():  # grain's workers read absl flags
        flags.FLAGS.mark_as_parsed()
    cfg = pretraining_config(tfds_dir, masking="dynamic")
    expected = take(data.train_iterator(cfg, process_index=0, process_count=1), 9)
    cfg.data.worker_count = 2
    it = data.train_iterator(cfg, process_index=0, process_count=1)
    try:
        assert_batches_equal(take(it, 5), expected[:5])
        state = json.loads(json.dumps(it.get_state()))
    finally:
        it.close()
    resumed = data.train_iterator(cfg, process_index=0, process_count=1)
    try:
        resumed.set_state(state)
        assert_batches_equal(take(resumed, 4), expected[5:])
    finally:
        resumed.close()
    cfg.data.worker_count = 0
    with pytest.raises(ValueError, match="worker_count=2"):
        data.train_iterator(cfg, process_index=0, process_count=1).set_state(state)


@pytest.mark.parametrize("change", [dict(seed=5), dict(masking="static"), dict(max_seq_len=32),
                                    dict(masked_lm_prob=0.2), dict(batch_size=16)])
def test_state_of_another_stream_is_refused(tfds_dir, change):  # noqa: F811
    cfg = pretraining_config(tfds_dir, masking="dynamic")
    it = data.train_iterator(cfg, process_index=0, process_count=1)
    next(it)
    state = it.get_state()
    for k, v in change.items():
        if k == "seed":
            cfg.seed = v
        else:
            cfg.data[k] = v
    with pytest.raises(ValueError, match="stream would differ"):
        data.train_iterator(cfg, process_index=0, process_count=1).set_state(state)


@pytest.mark.parametrize("masking", ["static", "dynamic"])
def test_static_and_dynamic_masking(tfds_dir, masking):  # noqa: F811
    """Over two epochs each instance is seen twice: masked the same way (static) or afresh (dynamic)."""
    cfg = pretraining_config(tfds_dir, masking=masking, batch_size=32)
    n = len(_source(cfg))
    it = data.train_iterator(cfg, process_index=0, process_count=1)
    by_instance = collections.defaultdict(list)
    for _ in range(2 * n // 32):
        for tokens, masked in _unmasked(next(it)):
            by_instance[tokens].append(masked)
    twice = [v for v in by_instance.values() if len(v) == 2]
    assert len(twice) > n // 2
    same = sum(a == b for a, b in twice) / len(twice)
    if masking == "static":
        assert same == 1.0
    else:
        assert same < 0.05, same  # ~9 of ~60 tokens chosen again at random


def test_eval_batches(tfds_dir):  # noqa: F811
    cfg = pretraining_config(tfds_dir, eval_batch_size=100)
    n = len(pp.instances(cfg, "validation", seed=0, dupe_factor=1, shuffle=False)[0])
    batches = list(data.eval_batches(cfg, "validation"))
    assert_batches_equal(batches, list(data.eval_batches(cfg, "valid")))
    assert len(batches) == -(-n // 100) and all(b["input_ids"].shape == (100, 64) for b in batches)
    for b in batches:
        assert set(b) == KEYS | {"example_weights"}
    weights = np.concatenate([b["example_weights"] for b in batches])
    assert weights.dtype == np.float32 and weights.sum() == n and not weights[n:].any()
    last = batches[-1]
    pad = last["example_weights"] == 0
    assert pad.any() and all(not v[pad].any() for k, v in last.items() if k != "example_weights")
    assert all(b["masked_lm_weights"][b["example_weights"] > 0].sum(1).min() >= 1 for b in batches)
    # Fixed whatever the run's seed, masking mode or dupe factor (eval_seed, static, one pass).
    cfg.seed, cfg.data.masking, cfg.data.dupe_factor = 3, "dynamic", 2
    assert_batches_equal(list(data.eval_batches(cfg, "validation")), batches)
    cfg.data.eval_seed = 1
    assert not np.array_equal(next(data.eval_batches(cfg, "validation"))["input_ids"], batches[0]["input_ids"])


def test_instances_are_cached_on_disk(tfds_dir, monkeypatch):  # noqa: F811
    cfg = pretraining_config(tfds_dir, short_seq_prob=0.2, dupe_factor=2)
    source, key = pp.instances(cfg, "validation", seed=0, dupe_factor=2)
    path = os.path.join(pp._cache_dir(cfg), f"pretraining-instances-{key}.npz")
    assert os.path.isfile(path)
    with open(path[:-4] + ".json") as f:
        assert json.load(f)["options"]["short_seq_prob"] == 0.2
    monkeypatch.setattr(pp, "_MEMO", {})

    def no_creation(*args, **kwargs):
        raise AssertionError("created again despite the cache")

    monkeypatch.setattr(pe, "create_instances", no_creation)
    again, key2 = pp.instances(cfg, "validation", seed=0, dupe_factor=2)
    assert key2 == key and len(again) == len(source)
    np.testing.assert_array_equal(again.tokens, source.tokens)
    np.testing.assert_array_equal(again.is_random_next, source.is_random_next)
    # Any option is part of the key.
    cfg.data.short_seq_prob = 0.3
    with pytest.raises(AssertionError, match="despite the cache"):
        pp.instances(cfg, "validation", seed=0, dupe_factor=2)
    monkeypatch.undo()
    assert 0.4 < float(np.mean(source.is_random_next)) < 0.6  # NSP: 50% NotNext
    assert len(source) > 2 * 1400  # two passes


def test_inspect_shows_masked_instances(tfds_dir):  # noqa: F811
    env = dict(os.environ, BVT_DATA_DIR=raw_data_dir(), JAX_PLATFORMS="cpu")
    proc = subprocess.run(
        [sys.executable, "-m", "bert_vs_transformer.cli.data", "inspect", "--config=configs/bert.py:tiny",
         "--split=validation", "--show=0", "--masked=2", f"--tfds_data_dir={tfds_dir}"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.strip().splitlines()
    assert sum(line.startswith("--- instance") for line in lines) == 2
    assert any("[MASK]" in line for line in lines)
    summary = json.loads(lines[-1])
    inst = summary["instances"]
    assert inst["num_instances"] > 1400 and inst["tokens"]["max"] <= 64 and 0.4 < inst["not_next"] < 0.6


def test_tiny_bert_trains_on_real_corpus(tmp_path):
    """configs/bert.py:tiny (MLM + NSP) on the real pretraining corpus, shortened to 20 steps."""
    data_dir = os.environ.get("BVT_DATA_DIR")
    assert data_dir, "set BVT_DATA_DIR to the shared datasets (CI: ../shared/data)"
    workdir = str(tmp_path / "run")
    env = dict(os.environ, JAX_PLATFORMS="cpu", JAX_NUM_CPU_DEVICES="1", BVT_DATA_DIR=raw_data_dir(),
               TFDS_DATA_DIR=str(tmp_path / "tfds"))
    env.setdefault("BVT_JAX_CACHE_DIR", os.path.join(REPO, ".jax_cache"))
    env["JAX_COMPILATION_CACHE_DIR"] = env["BVT_JAX_CACHE_DIR"]
    cmd = [sys.executable, "-m", "bert_vs_transformer.main", "--config=configs/bert.py:tiny", f"--workdir={workdir}",
           "--config.num_train_steps=20", "--config.log_every_steps=5", "--config.eval_every_steps=20",
           "--config.checkpoint_every_steps=20", "--config.optimizer.warmup_steps=5",
           "--config.optimizer.learning_rate=1e-3"]  # BERT's 1e-4 moves a 2-layer model slowly in 20 steps
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        records = [json.loads(line) for line in f]
    losses = [r["loss"] for r in records if "loss" in r]
    assert len(losses) == 4 and all(np.isfinite(losses)), losses
    assert all(b < a for a, b in zip(losses, losses[1:])) and losses[-1] < losses[0] - 0.5, losses
    ev = [r for r in records if "eval_mlm_accuracy" in r]
    assert ev and ev[-1]["step"] == 20, records
    assert 0.0 <= ev[-1]["eval_mlm_accuracy"] <= 1.0 and 0.0 <= ev[-1]["eval_nsp_accuracy"] <= 1.0
    assert 0.0 < ev[-1]["eval_mlm_loss"] < 11.0
