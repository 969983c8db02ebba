"""grain pipelines: tokenizer ids, batch contents, determinism, process sharding, exact resume,
packing, eval padding, classification batches."""

import collections
import json

import grain
import numpy as np
import pytest

from _data_testing import assert_batches_equal, classification_config, take, tfds_dir, translation_config  # noqa: F401
from bert_vs_transformer import data
from bert_vs_transformer.data import pipelines, records, sentencepiece_tokenizer


def _rows(seqs):
    return [tuple(int(t) for t in s[s != 0]) for s in seqs]


# -- tokenizer ----------------------------------------------------------------------------------


def test_sentencepiece_ids_and_cache(tfds_dir):  # noqa: F811
    cfg = translation_config(tfds_dir)
    tok = data.tokenizer(cfg)
    assert (tok.pad_id, tok.eos_id, tok.unk_id) == (0, 1, 2)
    assert tok.vocab_size == cfg.model.vocab_size
    ids = tok.encode("Zwei junge Männer stehen vor einem Haus.")
    assert ids[-1] == tok.eos_id and 0 not in ids and ids.count(1) == 1
    assert tok.decode(ids + [0, 0]) == "Zwei junge Männer stehen vor einem Haus."
    assert tok.decode(tok.encode("A dog runs.") + tok.encode("ignored after EOS")) == "A dog runs."

    # Cached on disk by a hash of its inputs and options: reloading does not train again.
    def no_training():
        raise AssertionError("trained again despite the cache")

    again = sentencepiece_tokenizer.train_or_load(
        no_training, vocab_size=cfg.model.vocab_size, cache_key=_spm_key(cfg), cache_dir=sentencepiece_tokenizer.default_cache_dir(tfds_dir))
    assert again.model_path == tok.model_path
    assert again.encode("A dog runs.") == tok.encode("A dog runs.")


def _spm_key(cfg):
    from bert_vs_transformer.data import builders, sources

    raw = sorted(r.sha256 for p, r in sources.FILES.items() if p.startswith("multi30k/train."))
    return {"dataset": "bvt_multi30k", "version": str(builders.BvtMulti30k.VERSION), "split": "train",
            "fields": ["de", "en"], "raw_sha256": raw}


# -- translation batches ----------------------------------------------------------------------


def test_translation_batches(tfds_dir):  # noqa: F811
    cfg = translation_config(tfds_dir)
    tok = data.tokenizer(cfg)
    it = data.train_iterator(cfg, process_index=0, process_count=1)
    english = {r["en"].decode() for r in records.split_records(cfg, "train")}
    widths = set()
    for batch in take(it, 20):
        assert set(batch) == {"inputs", "targets"}
        assert batch["inputs"].shape[0] == 8 and batch["inputs"].shape == batch["targets"].shape
        assert batch["inputs"].dtype == np.int32
        widths.add(batch["inputs"].shape[1])
        for key in ("inputs", "targets"):
            for row in batch[key]:
                n = int(np.sum(row != 0))
                assert n > 1 and row[n - 1] == tok.eos_id and not np.any(row[n:])  # EOS-terminated, then padding
        assert tok.decode(batch["inputs"][0]) in english  # source = English
    assert widths <= {32, 48, 64, 128}


def test_same_seed_same_batches(tfds_dir):  # noqa: F811
    cfg = translation_config(tfds_dir)
    a = take(data.train_iterator(cfg, process_index=0, process_count=1), 5)
    b = take(data.train_iterator(cfg, process_index=0, process_count=1), 5)
    assert_batches_equal(a, b)
    cfg.seed = 1
    c = take(data.train_iterator(cfg, process_index=0, process_count=1), 1)
    assert not np.array_equal(a[0]["inputs"], c[0]["inputs"])


def test_process_shards_are_disjoint_and_complete(tfds_dir):  # noqa: F811
    """4 processes: their local batches concatenate to the 1-process global batch (whatever the
    process count), and one epoch of global batches holds every example exactly once."""
    cfg = translation_config(tfds_dir, batch_size=1000)
    single = data.train_iterator(cfg, process_index=0, process_count=1)
    shards = [data.train_iterator(cfg, process_index=p, process_count=4) for p in range(4)]
    seen = []
    for _ in range(29):  # 29,000 examples = one epoch
        g = next(single)
        local = [next(s) for s in shards]
        assert all(x["inputs"].shape == (250, g["inputs"].shape[1]) for x in local)
        for k in g:
            np.testing.assert_array_equal(np.concatenate([x[k] for x in local]), g[k])
        seen += list(zip(_rows(g["inputs"]), _rows(g["targets"])))
    split = pipelines.tokenized_split(cfg, "train", train=True)
    everything = list(zip(_rows(split.features["inputs"]), _rows(split.features["targets"])))
    assert collections.Counter(seen) == collections.Counter(everything)
    # The next epoch is a different permutation (seed + epoch).
    assert list(zip(_rows(next(single)["inputs"]), range(5))) != list(zip([r[0] for r in seen[:5]], range(5)))


@pytest.mark.parametrize("pack", [False, True])
def test_resume_equals_uninterrupted(tfds_dir, pack):  # noqa: F811
    cfg = translation_config(tfds_dir, pack=pack, num_threads=2, max_len=64)
    it = data.train_iterator(cfg, process_index=1, process_count=2)
    take(it, 7)
    state = json.loads(json.dumps(it.get_state()))  # JSON-serialisable
    expected = take(it, 6)
    resumed = data.train_iterator(cfg, process_index=1, process_count=2)
    resumed.set_state(state)
    assert_batches_equal(take(resumed, 6), expected)


def test_unpacked_state_moves_across_topologies_but_checks_the_stream(tfds_dir):  # noqa: F811
    cfg = translation_config(tfds_dir)
    one = data.train_iterator(cfg, process_index=0, process_count=1)
    take(one, 3)
    state = one.get_state()
    g = next(one)
    two = data.train_iterator(cfg, process_index=1, process_count=2)
    two.set_state(state)
    np.testing.assert_array_equal(next(two)["inputs"], g["inputs"][4:])
    cfg.seed = 5
    with pytest.raises(ValueError, match="seed"):
        data.train_iterator(cfg, process_index=0, process_count=1).set_state(state)


@pytest.mark.parametrize("process_index,process_count", [(0, 1), (1, 2)])
def test_packing(tfds_dir, process_index, process_count):  # noqa: F811
    cfg = translation_config(tfds_dir, pack=True, batch_size=4 * process_count, max_len=64)
    tok = data.tokenizer(cfg)
    it = data.train_iterator(cfg, process_index=process_index, process_count=process_count)
    segments = []
    for batch in take(it, 10):
        assert set(batch) == {"inputs", "targets", "inputs_segmentation", "targets_segmentation",
                              "inputs_positions", "targets_positions"}
        assert all(v.shape == (4, 64) and v.dtype == np.int32 for v in batch.values())
        for r in range(4):
            row_segments = {}
            for key in ("inputs", "targets"):
                tokens, seg, pos = (batch[key][r], batch[f"{key}_segmentation"][r], batch[f"{key}_positions"][r])
                np.testing.assert_array_equal(tokens != 0, seg != 0)  # 0 = padding, everywhere
                n = int(np.sum(seg != 0))
                assert not np.any(seg[n:]) and not np.any(pos[n:])  # padding only at the end
                ids = seg[:n]
                assert ids[0] == 1 and np.all(np.diff(ids) >= 0) and np.all(np.diff(ids) <= 1)  # 1, 1, 2, 2, 3...
                for s in np.unique(ids):
                    where = np.flatnonzero(seg == s)
                    np.testing.assert_array_equal(pos[where], np.arange(len(where)))  # positions restart
                    assert tokens[where[-1]] == tok.eos_id  # each segment is one whole sequence
                    row_segments.setdefault(int(s), {})[key] = tuple(int(t) for t in tokens[where])
            assert all(len(v) == 2 for v in row_segments.values())  # inputs and targets share segment ids
            segments += [(v["inputs"], v["targets"]) for v in row_segments.values()]
    # No token lost: the packed segments are exactly the first len(segments) examples of this
    # process's stream (every process_count-th example of the shuffled stream).
    split = pipelines.tokenized_split(cfg, "train", train=True)
    order = grain.MapDataset.range(len(split)).shuffle(seed=0).repeat()
    mine = [order[process_index + process_count * i] for i in range(len(segments))]
    stream = [(tuple(split.features["inputs"][i].tolist()), tuple(split.features["targets"][i].tolist())) for i in mine]
    assert collections.Counter(segments) == collections.Counter(stream)
    assert len(segments) > 10 * 4 * 2  # several pairs per row


def test_overlong_truncate_and_drop(tfds_dir):  # noqa: F811
    trunc = pipelines.tokenized_split(translation_config(tfds_dir, max_len=12), "train", train=True)
    drop = pipelines.tokenized_split(translation_config(tfds_dir, max_len=12, overlong="drop"), "train", train=True)
    assert trunc.stats["truncated"] == drop.stats["dropped"] > 0
    assert len(trunc) == 29000 and len(drop) == 29000 - drop.stats["dropped"]
    for split in (trunc, drop):
        for seqs in split.features.values():
            assert max(len(s) for s in seqs) <= 12 and all(s[-1] == 1 for s in seqs)
    # Evaluation never drops.
    cfg = translation_config(tfds_dir, max_len=12, overlong="drop")
    assert sum(float(b["example_weights"].sum()) for b in data.eval_batches(cfg, "validation")) == 1014


def test_eval_batches(tfds_dir):  # noqa: F811
    cfg = translation_config(tfds_dir, eval_batch_size=100)
    tok = data.tokenizer(cfg)
    batches = list(data.eval_batches(cfg, "validation"))
    again = list(data.eval_batches(cfg, "val"))
    assert_batches_equal(batches, again)
    assert len(batches) == 11 and all(b["inputs"].shape[0] == 100 for b in batches)
    weights = np.concatenate([b["example_weights"] for b in batches])
    assert weights.dtype == np.float32 and weights.sum() == 1014 and not weights[1014:].any()
    last = batches[-1]
    assert not last["inputs"][14:].any() and not last["targets"][14:].any()
    refs = data.raw_examples(cfg, "validation")
    decoded = [tok.decode(row) for b in batches for row, w in zip(b["targets"], b["example_weights"]) if w]
    assert len(decoded) == 1014 and decoded[:3] == [r["de"] for r in refs[:3]]  # file order
    test = list(data.eval_batches(cfg, "test_2016_flickr"))
    assert sum(float(b["example_weights"].sum()) for b in test) == 1000


# -- classification ---------------------------------------------------------------------------


@pytest.mark.parametrize("dataset", ["rte", "stsb", "cola"])
def test_classification_batches(tfds_dir, dataset):  # noqa: F811
    cfg = classification_config(tfds_dir, dataset)
    tok = data.tokenizer(cfg)
    batch = next(data.train_iterator(cfg, process_index=0, process_count=1))
    assert set(batch) == {"input_ids", "token_type_ids", "attention_mask", "label"}
    assert batch["input_ids"].shape == batch["token_type_ids"].shape == batch["attention_mask"].shape == (8, 64)
    assert batch["label"].shape == (8,)
    assert batch["label"].dtype == (np.float32 if dataset == "stsb" else np.int32)
    np.testing.assert_array_equal(batch["attention_mask"], (batch["input_ids"] != 0).astype(np.int32))
    assert np.all(batch["input_ids"][:, 0] == tok.cls_id)
    pair = dataset != "cola"
    assert np.any(batch["token_type_ids"] == 1) == pair
    evals = list(data.eval_batches(cfg, "validation"))
    n = {"rte": 277, "stsb": 1500, "cola": 1043}[dataset]
    assert sum(float(b["example_weights"].sum()) for b in evals) == n
    last = evals[-1]
    pad = last["example_weights"] == 0
    assert not last["input_ids"][pad].any() and not last["attention_mask"][pad].any()


def test_classification_resume_and_sharding(tfds_dir):  # noqa: F811
    cfg = classification_config(tfds_dir, "mrpc", batch_size=16)
    it = data.train_iterator(cfg, process_index=0, process_count=2)
    take(it, 3)
    state = it.get_state()
    expected = take(it, 2)
    other = data.train_iterator(cfg, process_index=0, process_count=2)
    other.set_state(state)
    assert_batches_equal(take(other, 2), expected)
    assert expected[0]["input_ids"].shape[0] == 8


def test_packed_batches_through_the_model(tfds_dir):  # noqa: F811
    """Attention never crosses packed segments: the model's logits for every pair in a packed
    pipeline row equal the logits of that pair run alone (unpacked, unpadded)."""
    import flax.linen as nn
    import jax
    import jax.numpy as jnp

    from bert_vs_transformer.models import transformer

    cfg = translation_config(tfds_dir, pack=True, batch_size=2, max_len=64)
    batch = next(iter(data.train_iterator(cfg)))
    mcfg = config_args_model(cfg)
    model = transformer.EncoderDecoder(mcfg)
    params = nn.unbox(model.init(jax.random.PRNGKey(0), batch["inputs"][:1], batch["targets"][:1])["params"])
    seg_t = jnp.asarray(batch["targets_segmentation"])
    packed = model.apply(
        {"params": params}, batch["inputs"], transformer.shift_right(batch["targets"], seg_t),
        inputs_positions=batch["inputs_positions"], targets_positions=batch["targets_positions"],
        inputs_segmentation=batch["inputs_segmentation"], targets_segmentation=seg_t,
    )
    checked = 0
    for r in range(2):
        for s in np.unique(batch["inputs_segmentation"][r]):
            if s == 0:
                continue
            src = batch["inputs"][r][batch["inputs_segmentation"][r] == s][None]
            where = np.flatnonzero(batch["targets_segmentation"][r] == s)
            tgt = batch["targets"][r][where][None]
            alone = model.apply({"params": params}, src, transformer.shift_right(jnp.asarray(tgt)))
            np.testing.assert_allclose(np.asarray(packed[r, where]), np.asarray(alone[0]), atol=1e-5)
            checked += 1
    assert checked >= 4, "expected several pairs packed per row"


def config_args_model(cfg):
    from bert_vs_transformer.models.model_config import ModelConfig

    return ModelConfig.from_config(cfg).replace(dropout_rate=0.0)
