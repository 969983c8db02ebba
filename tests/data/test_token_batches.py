"""Token-budget batches (config.data.tokens_per_batch): fill and shapes on WMT-like lengths, each
example once per epoch with the remainder carried, exact resume, process shards, `bvt-data
--batches`, and a short training run that compiles once per shape."""

import json
import os
import pickle
import subprocess
import sys

import grain
import numpy as np
import pytest

from _data_testing import REPO, assert_batches_equal, take, tfds_dir, translation_config  # noqa: F401
from bert_vs_transformer import data
from bert_vs_transformer.data import packing, records, token_batches

WIDTHS = (16, 24, 32, 48, 64, 96, 128, 256)
BUDGET, MULTIPLE = 25_000, 8


@pytest.fixture(scope="module")
def wmt_like():
    """(source, target) token lengths of 50,000 pairs: lognormal, mean ~27 (WMT14 en-de after BPE),
    targets ~10% longer, capped at 256 (EOS included)."""
    rng = np.random.default_rng(0)
    src = np.clip(np.round(rng.lognormal(np.log(27) - 0.5**2 / 2, 0.5, 50_000)), 2, 256).astype(np.int32)
    tgt = np.clip(np.round(src * rng.lognormal(0.1, 0.15, src.size)), 2, 256).astype(np.int32)
    return src, tgt


FINER = (12, 16, 20, 24, 28, 32, 36, 40, 48, 56, 64, 80, 96, 128, 256)


@pytest.mark.parametrize("widths", [WIDTHS, FINER], ids=["8_buckets", "15_buckets"])
def test_shapes_fill_the_budget_and_never_exceed_it(wmt_like, widths):
    src, tgt = wmt_like
    shapes = token_batches.shapes(BUDGET, widths, MULTIPLE)
    assert shapes[-1] == (96, 256)  # 25,000 // 256 = 97 -> 96
    assert dict((w, r) for r, w in shapes)[16] == 1560  # 25,000 // 16 = 1562 -> 1560
    plan = token_batches.TokenBatches(np.maximum(src, tgt), widths, [r for r, _ in shapes], seed=3)
    padded, real, real_larger, seen = [], 0, 0, set()
    for j in range(1000):
        k, idx = plan[j]
        rows, width = shapes[k]
        assert idx.shape == (rows,) and rows % MULTIPLE == 0
        for i in idx[:50]:  # the bucket rule, written out: the first width >= the longer side
            assert k == next(b for b, w in enumerate(widths) if max(src[i], tgt[i]) <= w)
        padded.append(rows * width)
        real += int(src[idx].sum() + tgt[idx].sum())
        real_larger += int(np.maximum(src[idx], tgt[idx]).sum())
        seen.add(shapes[k])
    padding = 1 - real / (2 * sum(padded))
    print(f"WMT-like lengths, budget {BUDGET}, {len(widths)} buckets: mean {np.mean(padded):.0f} padded tokens per "
          f"batch (larger side), max {max(padded)}, padding fraction {padding:.3f} (both sides; larger side "
          f"{1 - real_larger / sum(padded):.3f}), {len(seen)} shapes")
    assert max(padded) <= BUDGET
    assert np.mean(padded) >= 0.9 * BUDGET
    assert len(seen) <= len(widths)
    assert 0 < padding < 0.5


def test_packing_the_same_lengths_for_comparison(wmt_like):
    """Packing to one [96, 256] shape (the budget's rows at the widest width): its padding, printed."""
    src, tgt = wmt_like
    split = records.TokenizedSplit({"inputs": [np.ones(n, np.int32) for n in src],
                                    "targets": [np.ones(n, np.int32) for n in tgt]}, {}, np.arange(src.size), {})
    order = grain.MapDataset.range(src.size).shuffle(seed=3).repeat()
    packer = packing.PackedTranslation(split, order, rows=96, max_src=256, max_tgt=256)
    real = slots = 0
    for _ in range(100):
        b = next(packer)
        assert b["inputs"].shape == b["targets"].shape == (96, 256)
        real += int(np.count_nonzero(b["inputs"]) + np.count_nonzero(b["targets"]))
        slots += 2 * 96 * 256
    print(f"WMT-like lengths packed into 96 x 256: padding fraction {1 - real / slots:.3f} (both sides), 1 shape")
    consumed = np.asarray([order[i] for i in range(packer.position)])
    assert real == int(src[consumed].sum() + tgt[consumed].sum())  # every pair drawn is in a batch, whole


def test_a_budget_without_a_row_of_the_widest_bucket_names_the_field():
    with pytest.raises(ValueError, match=r"config.data.tokens_per_batch=2000 .* 8 rows .* x 256 tokens = 2048"):
        token_batches.shapes(2000, WIDTHS, 8)


def test_an_epoch_holds_each_example_once_and_carries_the_remainder():
    """Epoch 0's batches hold every example at most once; per bucket the N_k mod rows_k left out are the
    last of that bucket in epoch 0's permutation, and they open one of the bucket's batches of epoch 1."""
    rng = np.random.default_rng(1)
    lengths = rng.integers(2, 65, 5000)
    widths, rows, seed = (16, 32, 64), (47, 23, 13), 7  # 1200, 1282, 2518 examples: 25, 17, 9 left over
    plan = token_batches.TokenBatches(lengths, widths, rows, seed)
    perm = np.random.default_rng([seed, 0]).permutation(len(lengths))
    order = {k: [int(i) for i in perm if min(b for b, w in enumerate(widths) if lengths[i] <= w) == k] for k in range(3)}
    n0 = plan.completed(1)
    assert n0 == sum(len(order[k]) // rows[k] for k in range(3))
    epoch0 = [plan[j] for j in range(n0)]
    for k in range(3):
        got = np.concatenate([idx for b, idx in epoch0 if b == k])
        assert len(set(got.tolist())) == len(got)  # nothing twice
        left = len(order[k]) % rows[k]
        assert sorted(got.tolist()) == sorted(order[k][: len(order[k]) - left])
        epoch1 = [idx for b, idx in (plan[j] for j in range(n0, plan.completed(2))) if b == k]
        assert left and sum(idx[:left].tolist() == order[k][len(order[k]) - left:] for idx in epoch1) == 1
    # epochs are shuffled batch orders, not bucket by bucket
    assert len({b for b, _ in epoch0[:20]}) > 1


def test_random_access_matches_the_stream_so_resume_is_exact():
    """Global batch j is a pure function of (seed, j): a fresh (or unpickled, as grain's workers get it)
    plan read backwards gives what one read forwards gave, across epoch boundaries."""
    lengths = np.random.default_rng(2).integers(2, 100, 3000)
    plan = token_batches.TokenBatches(lengths, (32, 64, 128), (64, 32, 16), seed=0)
    forward = [plan[j] for j in range(plan.completed(3) + 5)]
    again = pickle.loads(pickle.dumps(token_batches.TokenBatches(lengths, (32, 64, 128), (64, 32, 16), seed=0)))
    for j in reversed(range(len(forward))):
        k, idx = again[j]
        assert k == forward[j][0] and np.array_equal(idx, forward[j][1]), j
    other = token_batches.TokenBatches(lengths, (32, 64, 128), (64, 32, 16), seed=1)
    assert not np.array_equal(other[0][1], forward[0][1])


# -- the pipeline on Multi30k -------------------------------------------------------------------


def _budget_config(tfds_dir, **overrides):  # noqa: F811
    return translation_config(tfds_dir, **{"tokens_per_batch": 2048, "length_buckets": (16, 24, 32), "max_len": 64,
                                           **overrides})


def test_multi30k_batches_stay_within_the_budget_in_bucket_shapes(tfds_dir):  # noqa: F811
    cfg = _budget_config(tfds_dir)
    tok = data.tokenizer(cfg)
    shapes = data.token_batch_shapes(cfg, 8)
    assert shapes == [(128, 16), (80, 24), (64, 32), (32, 64)]
    it = data.train_iterator(cfg, process_index=0, process_count=1, rows_multiple=8)
    seen = set()
    for batch in take(it, 60):
        rows, width = batch["inputs"].shape
        assert batch["targets"].shape == (rows, width) and (rows, width) in shapes
        seen.add((rows, width))
        lengths = np.maximum((batch["inputs"] != 0).sum(1), (batch["targets"] != 0).sum(1))
        assert lengths.max() <= width and lengths.min() > max([w for _, w in shapes if w < width], default=0)
        for row in batch["targets"][:4]:
            n = int(np.sum(row != 0))
            assert row[n - 1] == tok.eos_id
    assert len(seen) >= 2


def test_multi30k_resume_is_exact_and_moves_across_process_counts(tfds_dir):  # noqa: F811
    cfg = _budget_config(tfds_dir, num_threads=2)
    it = data.train_iterator(cfg, process_index=1, process_count=2, rows_multiple=8)
    take(it, 7)
    state = json.loads(json.dumps(it.get_state()))
    expected = take(it, 6)
    resumed = data.train_iterator(cfg, process_index=1, process_count=2, rows_multiple=8)
    resumed.set_state(state)
    assert_batches_equal(take(resumed, 6), expected)
    # the state is the global batch number: one process resumes it and holds process 1's rows at the back
    single = data.train_iterator(cfg, process_index=0, process_count=1, rows_multiple=8)
    single.set_state(state)
    for g, local in zip(take(single, 6), expected):
        np.testing.assert_array_equal(g["inputs"][g["inputs"].shape[0] // 2:], local["inputs"])
    # other shapes (another rows multiple) are another stream
    with pytest.raises(ValueError, match="shapes"):
        data.train_iterator(cfg, process_index=0, process_count=1, rows_multiple=32).set_state(state)


def test_multi30k_two_process_shards_are_disjoint_and_complete(tfds_dir):  # noqa: F811
    cfg = _budget_config(tfds_dir)
    single = data.train_iterator(cfg, process_index=0, process_count=1, rows_multiple=2)
    shards = [data.train_iterator(cfg, process_index=p, process_count=2, rows_multiple=2) for p in range(2)]
    for _ in range(40):
        g = next(single)
        local = [next(s) for s in shards]
        assert all(x["inputs"].shape[0] == g["inputs"].shape[0] // 2 for x in local)
        for k in g:
            np.testing.assert_array_equal(np.concatenate([x[k] for x in local]), g[k])
    with pytest.raises(ValueError, match="rows_multiple=3 is not a multiple of the process count 2"):
        data.train_iterator(cfg, process_index=0, process_count=2, rows_multiple=3)


def test_bvt_data_batches_statistics(tfds_dir):  # noqa: F811
    env = dict(os.environ, JAX_PLATFORMS="cpu", TFDS_DATA_DIR=tfds_dir)
    cmd = [sys.executable, "-m", "bert_vs_transformer.cli.data", "--config=configs/transformer.py:tiny",
           "--batches=200", "--config.data.tokens_per_batch=2048", "--config.data.num_threads=0"]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rec = json.loads(proc.stdout.strip().splitlines()[-1])
    assert rec["mode"] == "tokens_per_batch" and rec["batches"] == 200
    sizes = {tuple(int(x) for x in s.split()[0].split("x")): n for s, n in rec["shapes"].items()}
    assert sum(sizes.values()) == 200 and rec["distinct_shapes"] == len(sizes) <= 4
    assert rec["max_tokens_per_batch"] == max(r * w for r, w in sizes) <= 2048
    assert rec["mean_tokens_per_batch"] == pytest.approx(sum(r * w * n for (r, w), n in sizes.items()) / 200, abs=0.1)
    assert rec["mean_tokens_per_batch"] >= 0.9 * 2048 and 0 < rec["padding_fraction"] < 1
    bad = subprocess.run([*cmd[:4], "--batches=3", "--config.data.tokens_per_batch=100"], cwd=REPO,
                         env=env, capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert bad.stderr.strip().splitlines()[-1].startswith("error: config.data.tokens_per_batch=100 holds no batch")


# -- training ------------------------------------------------------------------------------------


def test_training_with_a_token_budget_compiles_once_per_shape(tfds_dir, tmp_path, monkeypatch, devices):  # noqa: F811
    """8 devices x grad_accum_steps 2: rows are multiples of 16. The step's Python body runs once per jit
    trace (a compile), so counting its calls counts compiles."""
    from bert_vs_transformer.training import loop, train_step

    traced = []
    real = train_step.make_train_step

    def counting(task, tx, schedule, grad_accum_steps=1):
        step = real(task, tx, schedule, grad_accum_steps)

        def traced_step(state, batch, rng, *rest):
            traced.append((batch["inputs"].shape, batch["targets"].shape))
            return step(state, batch, rng, *rest)

        return traced_step

    monkeypatch.setattr(train_step, "make_train_step", counting)
    cfg = _budget_config(tfds_dir, tokens_per_batch=1024, length_buckets=(24,))  # 2 buckets: 2 compiles
    cfg.grad_accum_steps = 2
    cfg.model.num_encoder_layers = cfg.model.num_decoder_layers = 1
    cfg.num_train_steps, cfg.log_every_steps = 6, 3
    cfg.eval_every_steps = cfg.checkpoint_every_steps = 6
    cfg.evals.validation.every_steps = cfg.evals.bleu.every_steps = 0
    shapes = data.token_batch_shapes(cfg, 16)
    assert shapes == [(32, 24), (16, 64)]  # 1024 // 24 = 42 -> 32 rows; 1024 // 64 = 16
    loop.train_and_evaluate(cfg, str(tmp_path))
    with open(tmp_path / "metrics.jsonl") as f:
        losses = [r["loss"] for r in map(json.loads, f) if "loss" in r]
    assert len(losses) == 2 and all(np.isfinite(losses))
    assert len(traced) == len(set(traced)) == len(shapes)  # each shape compiled once, never again
    assert {s[0] for s in traced} <= set(shapes)
