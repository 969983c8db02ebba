"""`bvt-benchmark --memory` and `--decode`: compiled costs against what they must show.

- Transformer-big's cached decode step for 64 sentences x beam 4 over 128 source tokens costs at
  most 112 GFLOP (recomputing the cross-attention keys/values every step cost ~892).
- --memory's per-device argument bytes shrink when fsdp shards the parameters and Adam state.
- --decode times real beam searches of the tiny model.
"""

from bert_vs_transformer import config_args
from bert_vs_transformer.cli import benchmark, decode_speed, step_memory


def _prepared(spec, **flags):
    return benchmark.prepare_config(config_args.load(spec), **flags)


def test_big_decode_step_flops_within_budget():
    record = decode_speed.decode_record(_prepared("configs/transformer.py:big"), 64, 128, beam_size=4, repeats=0)
    print(f"Transformer-big decode step, 256 rows: {record['decode_step_gflops']:.1f} GFLOP")
    assert 0 < record["decode_step_gflops"] <= 112
    assert record["sentences_per_s"] is None  # --steps=0: no search was run


def test_decode_times_tiny_beam_search():
    record = decode_speed.decode_record(_prepared("configs/transformer.py:tiny"), 4, 8, beam_size=2, repeats=1)
    assert record["sentences_per_s"] > 0
    assert 1 <= record["decode_steps"] <= 8 + 50


def test_memory_shrinks_under_fsdp(devices):
    per_mesh = {}
    for mesh in ({"data": 8, "fsdp": 1}, {"data": 1, "fsdp": 8}):
        config = _prepared("configs/bert.py:tiny", batch_size=16, seq_len=32)
        config.mesh.update(mesh)
        per_mesh[mesh["fsdp"]] = step_memory.memory_record(config)
    data8, fsdp8 = per_mesh[1], per_mesh[8]
    assert fsdp8["num_devices"] == 8 and fsdp8["mesh"]["fsdp"] == 8
    assert fsdp8["temp_bytes"] > 0 and fsdp8["hlo_gflops"] > 0
    # Parameters + Adam moments: replicated under data=8, 1/8 per device under fsdp=8 (plus the batch).
    assert fsdp8["argument_bytes"] < 0.3 * data8["argument_bytes"], (fsdp8["argument_bytes"], data8["argument_bytes"])
