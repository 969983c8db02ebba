"""The configs name the papers' settings, config arguments parse as documented, and the compare
command prints the relation from those configs."""

import subprocess
import sys

import pytest

from bert_vs_transformer import config_args
from bert_vs_transformer.cli import compare
from bert_vs_transformer.config_args import REPO_ROOT


def test_paper_settings():
    t = config_args.load("configs/transformer.py:base")
    assert (t.model.d_model, t.model.d_ff, t.model.num_heads, t.model.num_encoder_layers) == (512, 2048, 8, 6)
    assert t.model.dropout_rate == 0.1 and t.label_smoothing == 0.1
    assert (t.optimizer.b1, t.optimizer.b2, t.optimizer.eps, t.optimizer.warmup_steps) == (0.9, 0.98, 1e-9, 4000)
    big = config_args.load("configs/transformer.py:big").model
    assert (big.d_model, big.d_ff, big.num_heads, big.dropout_rate) == (1024, 4096, 16, 0.3)
    b = config_args.load("configs/bert.py:large").model
    assert (b.num_encoder_layers, b.d_model, b.num_heads, b.d_ff) == (24, 1024, 16, 4096)
    assert (b.activation, b.positional, b.type_vocab_size, b.layernorm_eps) == ("gelu", "learned", 2, 1e-12)


def test_config_arguments():
    assert config_args.parse("tiny", {"variant": "base"}) == {"variant": "tiny"}
    assert config_args.parse("variant=big,flag=false", {"variant": "base", "flag": True}) == {
        "variant": "big", "flag": False}
    with pytest.raises(ValueError, match="unknown config argument 'vairant'"):
        config_args.parse("vairant=big", {"variant": "base"})
    with pytest.raises(ValueError, match="unknown transformer variant"):
        config_args.load("configs/transformer.py:huge")
    with pytest.raises(FileNotFoundError, match="nope.py"):
        config_args.load("configs/nope.py:tiny")


def test_compare_lists_the_differences():
    text = compare.render("configs/transformer.py:base", "configs/bert.py:base")
    for row in ["| `activation` | relu | gelu |", "| `positional` | sinusoidal | learned |",
                "| `type_vocab_size` | 0 | 2 |", "| `embed_scale` | True | False |",
                "| `num_decoder_layers` | 6 | 0 |", "| = whole model | 63,082,496 | 110,106,428 |"]:
        assert row in text, row
    # Equal fields are not listed as differences.
    assert "| `norm_position` |" not in text


def test_compare_command_runs():
    out = subprocess.run(
        [sys.executable, "-m", "bert_vs_transformer.cli.compare", "--transformer=configs/transformer.py:tiny",
         "--bert=configs/bert.py:tiny"],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=300,
    )
    assert out.returncode == 0, out.stderr
    assert "Settings that differ" in out.stdout and "Parameters per component" in out.stdout
