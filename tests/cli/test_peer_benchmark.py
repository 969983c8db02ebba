"""The PyTorch peer benchmark (HF BertForPreTraining, torch.nn.Transformer) and compare_speed:
the peer builds our architectures (parameter counts), counts FLOPs as benchmark.py does, runs tiny
variants on CPU, and compare_speed pairs the two programs at identical shapes."""

import json
import os
import subprocess
import sys

import jax.numpy as jnp
import pytest
import torch

from bert_vs_transformer import config_args, tasks
from bert_vs_transformer.cli import benchmark, compare, compare_speed
from bert_vs_transformer.models import bert, flops, layers
from bert_vs_transformer.cli import peer_benchmark as pb
from bert_vs_transformer.models import transformer
from bert_vs_transformer.models.model_config import ModelConfig

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
IDS = jnp.ones((1, 8), jnp.int32)
POSITIVE = ("step_time_s", "steps_per_s", "seq_per_s", "tokens_per_step", "tokens_per_s", "model_tflops_per_step",
            "achieved_tflops_per_s", "param_count")


def _env():
    env = dict(os.environ)
    env["JAX_PLATFORMS"] = "cpu"
    env.pop("XLA_FLAGS", None)
    env.setdefault("JAX_COMPILATION_CACHE_DIR", os.environ.get("BVT_JAX_CACHE_DIR", os.path.join(REPO, ".jax_cache")))
    return env


def _run(module, *args, timeout=600):
    proc = subprocess.run([sys.executable, "-m", module, *args], cwd=REPO, env=_env(), capture_output=True,
                          text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return [line for line in proc.stdout.splitlines() if line.strip()]


def _peer(*args):
    lines = _run("bert_vs_transformer.cli.peer_benchmark", *args)
    assert len(lines) == 1, lines  # one JSON line, as benchmark.py
    return json.loads(lines[0])


def _model_cfg(model, variant):
    return ModelConfig.from_config(pb.load_config(model, variant))


def test_peer_bert_tiny_cpu():
    rec = _peer("--model=bert", "--variant=tiny", "--batch_size=2", "--seq_len=16", "--steps=2", "--warmup=1",
                "--device=cpu", "--dtype=fp32", "--nocompile")
    for key in POSITIVE:
        assert rec[key] > 0, (key, rec[key])
    assert rec["implementation"] == "transformers.BertForPreTraining" and rec["platform"] == "cpu"
    assert rec["task"] == "pretraining" and rec["seq_len"] == 16 and rec["num_masked"] == 2  # as benchmark.py
    assert rec["tokens_per_step"] == 2 * 16
    assert rec["seq_per_s"] == pytest.approx(2 / rec["step_time_s"])
    assert rec["mfu"] is None and rec["peak_memory_gb"] is None  # CPU: no peak, no CUDA statistics
    assert rec["compute_dtype"] == "float32" and not rec["compile"] and rec["torch_version"]
    assert rec["peer_config"]["attn_implementation"] == "sdpa"
    assert rec["peer_config"]["hidden_size"] == 128 and rec["peer_config"]["num_hidden_layers"] == 2
    assert rec["optimizer"]["name"] == "AdamW" and rec["optimizer"]["foreach"]
    assert 0 < rec["final_loss"] < 30  # MLM + NSP cross-entropy at initialisation, finite
    assert rec["model_tflops_per_step"] == pytest.approx(
        flops.bert_step_flops(_model_cfg("bert", "tiny"), 2, 16, 2) / 1e12)


def test_peer_transformer_tiny_cpu():
    rec = _peer("--model=transformer", "--variant=tiny", "--batch_size=2", "--seq_len=8", "--steps=2", "--warmup=1",
                "--device=cpu", "--dtype=fp32", "--nocompile")
    for key in POSITIVE:
        assert rec[key] > 0, (key, rec[key])
    assert rec["implementation"] == "torch.nn.Transformer" and rec["task"] == "translation"
    assert rec["src_len"] == rec["tgt_len"] == 8 and rec["tokens_per_step"] == 2 * (8 + 8)
    p = rec["peer_config"]
    assert (p["d_model"], p["nhead"], p["dim_feedforward"], p["num_encoder_layers"]) == (64, 4, 256, 2)
    assert p["batch_first"] and not p["norm_first"] and p["activation"] == "relu" and p["tied_embeddings"]
    assert p["label_smoothing"] == 0.1 and p["attention_dropout"] == 0.0 and p["ffn_inner_dropout"] == 0.0
    assert rec["optimizer"]["name"] == "Adam" and rec["optimizer"]["betas"] == [0.9, 0.98]
    assert rec["optimizer"]["eps"] == 1e-9
    assert 0 < rec["final_loss"] < 30


def _peer_count(model, variant):
    config = pb.load_config(model, variant)
    cfg = ModelConfig.from_config(config)
    with torch.device("meta"):  # shapes only, nothing allocated
        return pb.count_params(pb.build_model(model, config, cfg)), cfg


def test_peer_bert_base_params_equal_ours():
    n, cfg = _peer_count("bert", "base")
    ours = layers.count_params(compare.param_shapes(bert.BertForPreTraining(cfg), IDS))
    assert n == ours == 110_106_428  # HF BertForPreTraining, tied decoder: the same tensors as ours


@pytest.mark.parametrize("variant", ["base", "big"])
def test_peer_transformer_params_match_ours(variant):
    n, cfg = _peer_count("transformer", variant)
    ours = layers.count_params(compare.param_shapes(transformer.EncoderDecoder(cfg), IDS, IDS))
    assert abs(n - ours) / ours < 0.01
    # nn.Transformer appends a LayerNorm after the encoder stack and after the decoder stack.
    assert n - ours == 2 * 2 * cfg.d_model


@pytest.mark.parametrize("name", sorted(compare_speed.WORKLOADS))
def test_peer_flops_and_shapes_equal_benchmark(name):
    """The peer's shapes and model FLOPs are benchmark.prepare_config's at the same flags."""
    w = compare_speed.WORKLOADS[name]
    config = pb.load_config(w.model, w.variant)
    ours = benchmark.prepare_config(config_args.load(f"{compare_speed.CONFIG_FILES[w.model]}:{w.variant}"),
                                    batch_size=w.batch_size, seq_len=w.seq_len)
    shape = pb.shapes(config, w.batch_size, w.seq_len)
    assert {k: v for k, v in shape.items() if k != "batch_size"} == tasks.get_task(ours).lengths()
    cfg = ModelConfig.from_config(config)
    assert pb.step_flops(cfg, shape) == tasks.get_task(ours).step_flops(w.batch_size)
    if name == "bert_large_512":
        assert shape["num_masked"] == 80  # BERT A.2


def test_peer_bert_labels_only_at_masked_positions():
    cfg = _model_cfg("bert", "tiny")
    batch = pb.synthetic_batch("bert", cfg, {"batch_size": 3, "seq_len": 32, "num_masked": 5}, torch.device("cpu"))
    assert ((batch["labels"] != -100).sum(1) == 5).all()
    assert (batch["token_type_ids"][:, 16:] == 1).all() and (batch["token_type_ids"][:, :16] == 0).all()
    assert batch["input_ids"].min() >= 1 and batch["input_ids"].max() < cfg.vocab_size


def test_compare_speed_dry_run_lists_both_commands():
    for device in ("cuda", "cpu"):
        lines = _run("bert_vs_transformer.cli.compare_speed", "--all", "--dry_run", "--json", f"--device={device}")
        plans = [json.loads(line) for line in lines]
        assert [p["workload"] for p in plans] == list(compare_speed.WORKLOADS)
        for p in plans:
            w = compare_speed.WORKLOADS[p["workload"]]
            ours, peer = p["our_command"], p["peer_command"]
            assert "bert_vs_transformer.cli.benchmark" in ours and "bert_vs_transformer.cli.peer_benchmark" in peer
            for cmd in (ours, peer):
                assert f"--batch_size={w.batch_size}" in cmd and f"--seq_len={w.seq_len}" in cmd
            assert f"{w.model}.py:{w.variant}" in ours and f"--variant={w.variant}" in peer
            assert ("--compile" in peer.split()) == w.peer_compile
            if device == "cuda":
                assert "--config.model.dtype=bfloat16" in ours and "--dtype=bf16" in peer
    text = "\n".join(_run("bert_vs_transformer.cli.compare_speed", "--all", "--dry_run", "--device=cuda"))
    assert text.count("python -m bert_vs_transformer.cli.benchmark") == 5
    assert text.count("python -m bert_vs_transformer.cli.peer_benchmark") == 5


def test_compare_speed_tiny_end_to_end_cpu():
    lines = _run(
        "bert_vs_transformer.cli.compare_speed", "--workload=transformer_base", "--variant=tiny", "--batch_size=2",
        "--seq_len=8", "--num_layers=1", "--steps=2", "--warmup=1", "--device=cpu", "--peer_compile=false", "--json",
    )
    (result,) = [json.loads(line) for line in lines]
    ours, peer = result["ours"], result["peer_result"]
    assert "error" not in ours and "error" not in peer, (ours, peer)
    assert ours["tokens_per_step"] == peer["tokens_per_step"] == 2 * (8 + 8)
    assert ours["model_tflops_per_step"] == pytest.approx(peer["model_tflops_per_step"])
    assert "--config.model.num_decoder_layers=1" in result["our_command"]
    assert peer["peer_config"]["num_decoder_layers"] == 1
    assert result["ratio_tokens_per_s"] == pytest.approx(ours["tokens_per_s"] / peer["tokens_per_s"])
    row = compare_speed.row(result)
    assert row.startswith("| transformer_base | Transformer-tiny | 2 x (8 + 8) |")
    assert f"{result['ratio_tokens_per_s']:.2f}x" in row and "peer_benchmark" in row and "benchmark --config" in row
