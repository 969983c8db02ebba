"""The benchmark command: runs the training step on synthetic batches, prints one JSON line, and
imports neither tensorflow_datasets nor grain."""

import json
import os
import subprocess
import sys

import pytest

from bert_vs_transformer import config_args
from bert_vs_transformer.cli import benchmark

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

POSITIVE = (
    "step_time_s", "steps_per_s", "seq_per_s", "tokens_per_step", "tokens_per_s",
    "model_tflops_per_step", "model_tflops", "achieved_tflops_per_s", "num_devices",
)


def _run_benchmark(*args):
    env = dict(os.environ)
    env["JAX_PLATFORMS"] = "cpu"
    env.pop("XLA_FLAGS", None)
    env.setdefault("JAX_COMPILATION_CACHE_DIR", os.environ.get("BVT_JAX_CACHE_DIR", os.path.join(REPO, ".jax_cache")))
    proc = subprocess.run(
        [sys.executable, "-m", "bert_vs_transformer.cli.benchmark", *args],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stdout
    return json.loads(lines[0])


def _check_record(rec):
    for key in POSITIVE:
        assert rec[key] > 0, (key, rec[key])
    assert rec["mfu"] is None and rec["peak_tflops_per_device"] is None  # CPU: no peak in the table
    assert rec["peak_memory_gb"] is None or rec["peak_memory_gb"] > 0
    assert rec["device_kind"] and rec["jax_version"]
    assert rec["data_modules_imported"] == []  # no tensorflow_datasets, no grain
    assert rec["final_loss"] == pytest.approx(rec["final_loss"])  # finite, not NaN
    assert rec["seq_per_s"] == pytest.approx(rec.get("members", 1) * rec["batch_size"] / rec["step_time_s"])
    assert rec["achieved_tflops_per_s"] == pytest.approx(rec["model_tflops_per_step"] / rec["step_time_s"])


def test_transformer_tiny():
    rec = _run_benchmark(
        "--config=configs/transformer.py:tiny", "--batch_size=2", "--seq_len=8", "--steps=2", "--warmup=1",
        "--config.model.num_encoder_layers=1", "--config.model.num_decoder_layers=1",
    )
    _check_record(rec)
    assert rec["task"] == "translation" and rec["src_len"] == rec["tgt_len"] == 8
    assert rec["tokens_per_step"] == 2 * (8 + 8)
    assert rec["config"]["model"]["num_decoder_layers"] == 1  # the override reached the config
    assert rec["config"]["data"]["batch_size"] == 2


def test_bert_tiny_pretraining(tmp_path):
    prof = str(tmp_path / "prof")
    rec = _run_benchmark(
        "--config=configs/bert.py:tiny", "--batch_size=2", "--seq_len=16", "--steps=2", "--warmup=1",
        f"--profile_dir={prof}", "--profile_steps=2",
    )
    # --profile_dir: a real jax.profiler trace of 2 more steps, summarised (on a CPU: host timelines)
    assert rec["profile"]["dir"] == prof and rec["profile"]["steps"] == 2, rec["profile"]
    assert rec["profile"]["busy_ms_per_step"] > 0 and rec["profile"]["top5"]
    with open(os.path.join(prof, "summary.json")) as f:
        summary = json.load(f)
    names = [r["name"] for t in summary["timelines"] for r in t["top"]]
    assert any("fusion" in n for n in names), names  # XLA's own ops of the step are in the trace
    assert os.path.getsize(os.path.join(prof, "summary.md")) > 0
    _check_record(rec)
    assert rec["task"] == "pretraining" and rec["seq_len"] == 16
    assert rec["num_masked"] == 2  # 20 per 128 tokens, scaled to 16
    assert rec["tokens_per_step"] == 2 * 16
    assert rec["config"]["data"]["max_predictions_per_seq"] == 2


def test_members_step():
    """--members=3: three fine-tuning runs vmapped as one step (members.py), counted as such."""
    tiny = ["--config=configs/glue.py:task=rte,init=scratch", "--batch_size=4", "--seq_len=16", "--steps=2",
            "--warmup=1", "--config.model.d_model=32", "--config.model.num_heads=2", "--config.model.d_ff=64",
            "--config.model.num_encoder_layers=1"]
    one, three = _run_benchmark(*tiny), _run_benchmark(*tiny, "--members=3")
    for rec in (one, three):
        _check_record(rec)
        assert rec["task"] == "classification"
    assert one["members"] == 1 and three["members"] == 3
    assert three["config"]["member_seeds"] == "0,1,2"
    assert three["tokens_per_step"] == 3 * one["tokens_per_step"] == 3 * 4 * 16
    assert three["model_tflops_per_step"] == pytest.approx(3 * one["model_tflops_per_step"])


def test_prepare_config():
    bcfg = config_args.load("configs/bert.py:base")
    if "task" in bcfg:
        del bcfg["task"]  # inferred from model_family when a config names no task
    cfg = benchmark.prepare_config(bcfg, batch_size=8, seq_len=512)
    assert cfg.task == "pretraining" and cfg.grad_accum_steps == 1
    assert cfg.data.max_seq_len == 512 and cfg.data.max_predictions_per_seq == 80  # BERT A.2
    assert cfg.data.batch_size == 8
    assert bcfg.data.max_seq_len == 128 and "task" not in bcfg  # the input is left alone
    cfg = benchmark.prepare_config(bcfg, task="classification")
    assert cfg.task == "classification" and cfg.data.max_seq_len == 128
    cfg = benchmark.prepare_config(bcfg, seq_len=256, max_predictions=7, task="pretraining")
    assert cfg.data.max_predictions_per_seq == 7
    with pytest.raises(ValueError, match="learned position table"):
        benchmark.prepare_config(bcfg, seq_len=1024)
    tcfg = benchmark.prepare_config(config_args.load("configs/transformer.py:tiny"), seq_len=64)
    assert tcfg.task == "translation" and tcfg.data.max_len == 64
