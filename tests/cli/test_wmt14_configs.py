"""configs/transformer.py:wmt14_base and :wmt14_big: the paper's settings (Vaswani et al. 2017,
Sec. 5-6 and Table 3, written out here), and their train steps compile on 8 simulated devices
under data=8 and fsdp=8 at the real layer shapes (only the vocabulary is shrunk, to compile faster)."""

import pytest

from bert_vs_transformer import config_args
from bert_vs_transformer.cli import benchmark, step_memory

PAPER = {
    "wmt14_base": dict(layers=6, d_model=512, d_ff=2048, heads=8, dropout=0.1, steps=100_000, averaged=5),
    "wmt14_big": dict(layers=6, d_model=1024, d_ff=4096, heads=16, dropout=0.3, steps=300_000, averaged=20),
}


@pytest.mark.parametrize("variant", sorted(PAPER))
def test_paper_settings(variant):
    c, p = config_args.load(f"configs/transformer.py:{variant}"), PAPER[variant]
    m, o, d = c.model, c.optimizer, c.data
    assert (m.num_encoder_layers, m.num_decoder_layers, m.d_model, m.d_ff, m.num_heads) == (
        p["layers"], p["layers"], p["d_model"], p["d_ff"], p["heads"])
    assert m.dropout_rate == p["dropout"] and c.label_smoothing == 0.1
    assert c.num_train_steps == p["steps"] and o.warmup_steps == 4000 and o.lr_scale == 1.0
    assert (o.name, o.b1, o.b2, o.eps, o.schedule) == ("adam", 0.9, 0.98, 1e-9, "rsqrt")
    assert m.vocab_size == 37_000 and m.share_embeddings and m.positional == "sinusoidal"
    assert d.dataset == "wmt14" and d.tokens_per_batch == 25_000 and d.eval_split == "validation"
    assert c.keep_checkpoints == p["averaged"]
    assert c.evals.bleu.beam_size == 4 and c.evals.bleu.alpha == 0.6
    assert m.dtype == "bfloat16"


@pytest.mark.parametrize("mesh", [{"data": 8, "fsdp": 1}, {"data": 1, "fsdp": 8}], ids=["data8", "fsdp8"])
@pytest.mark.parametrize("variant", sorted(PAPER))
def test_compiles_on_eight_devices(devices, variant, mesh):
    config = config_args.load(f"configs/transformer.py:{variant}")
    config.model.vocab_size = 512
    config = benchmark.prepare_config(config, batch_size=16, seq_len=32)
    config.mesh.update(mesh)
    record = step_memory.memory_record(config)
    print(f"{variant} {mesh}: per device {record['argument_bytes'] / 2**20:.0f} MiB arguments, "
          f"{record['temp_bytes'] / 2**20:.0f} MiB temporaries")
    assert record["num_devices"] == 8 and record["mesh"]["fsdp"] == mesh["fsdp"]
    assert record["compute_dtype"] == "bfloat16" and record["hlo_gflops"] > 0
    d, ff = PAPER[variant]["d_model"], PAPER[variant]["d_ff"]
    # fp32 parameters + Adam's two moments: all of them per device under data=8, an eighth under fsdp=8.
    kernels = 12 * (4 * d * d + 2 * d * ff)  # a lower bound: self-attention and FFN kernels of 12 layers
    if mesh["fsdp"] == 1:
        assert record["argument_bytes"] > 3 * 4 * kernels
    else:
        assert record["argument_bytes"] < 3 * 4 * kernels / 4
