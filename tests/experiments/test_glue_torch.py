"""The independent PyTorch trainer of the SST-2 side-by-side (experiments/glue_torch.py) and its report.

Checked against: our optax schedule (the torch LambdaLR multiplier equals
optim.warmup_linear_decay / peak at every step, to float32), our data pipeline (its csv reading of the raw
dev file gives the same sentences and labels as bvt_glue/sst2), and a hand-computed report
(means, sample stds, difference); plus a few real training steps from MiniLM in PyTorch.
"""

from __future__ import annotations

import math
import os

import numpy as np
import pytest

from bert_vs_transformer import config_args
from bert_vs_transformer.training import optim
from experiments import glue_torch, sst2_side_by_side


def test_lr_multiplier_equals_our_schedule():
    steps = math.ceil(0.1 * 67349 / 32)
    warmup = int(0.1 * steps)
    ours = optim.warmup_linear_decay(2e-5, warmup, steps)
    for s in range(steps + 2):
        assert glue_torch.lr_factor(s, warmup, steps) * 2e-5 == pytest.approx(float(ours(s)), rel=1e-6, abs=1e-12), s


def test_reads_the_same_dev_set_as_our_pipeline():
    from bert_vs_transformer.data import pipelines

    data_dir = os.environ["BVT_DATA_DIR"]
    x, y = glue_torch.read_tsv(os.path.join(data_dir, "glue", "SST-2", "dev.tsv"))
    ours = pipelines.raw_examples(config_args.load("configs/glue.py:task=sst2,init=scratch"), "validation")
    assert len(x) == len(ours) == 872
    assert [r["label"] for r in ours] == y
    assert [r["sentence1"] for r in ours] == [t.strip() for t in x]  # the raw file has trailing spaces


def test_report_means_stds_and_difference(tmp_path):
    args = type("A", (), dict(seeds=3, lr=2e-5, epochs=3.0, batch_size=32, max_seq_len=128))()
    md, s = sst2_side_by_side.report({"ours": {0: 0.91, 1: 0.92, 2: 0.90}, "torch": {0: 0.915, 1: 0.905, 2: None}},
                                     args)
    assert s["mean"]["ours"] == pytest.approx(91.0) and s["std"]["ours"] == pytest.approx(1.0)
    assert s["mean"]["torch"] == pytest.approx(91.0) and s["std"]["torch"] == pytest.approx(math.sqrt(0.5))
    assert s["difference_points"] == pytest.approx(0.0) and s["within_target"] is True
    assert "| transformers (PyTorch) | 91.50 | 90.50 | - |" in md and "(2 seeds)" in md


def test_torch_trainer_runs_a_few_steps(tmp_path, capsys):
    pytest.importorskip("torch")
    out = tmp_path / "r.json"
    assert glue_torch.main(["--epochs=0.0003", "--batch_size=8", "--max_eval_examples=16", "--threads=2",
                            f"--output={out}", f"--data_dir={os.environ['BVT_DATA_DIR']}"]) == 0
    import json

    r = json.loads(out.read_text())
    assert r["steps"] == math.ceil(0.0003 * 67349 / 8) and r["dev_examples"] == 16
    assert 0.0 <= r["eval_accuracy"] <= 1.0 and np.isclose(r["eval_accuracy"] * 16, round(r["eval_accuracy"] * 16))


def test_torch_trainer_resumes_to_the_uninterrupted_run(tmp_path):
    """Stopped after step 2 (state saved) and rerun: the same last-step loss and dev accuracy as one run."""
    pytest.importorskip("torch")
    import json

    common = ["--epochs=0.0005", "--batch_size=8", "--max_eval_examples=16", "--threads=2", "--lr=1e-4",
              f"--data_dir={os.environ['BVT_DATA_DIR']}"]  # 5 steps
    whole, split = tmp_path / "whole.json", tmp_path / "split.json"
    assert glue_torch.main(common + [f"--output={whole}"]) == 0
    assert glue_torch.main(common + [f"--output={split}", "--stop_after_steps=2"]) == glue_torch.STOPPED
    assert not split.exists() and (tmp_path / "split.ckpt.pt").exists()
    with pytest.raises(SystemExit, match="not"):  # a different recipe refuses the saved state
        glue_torch.main(common + [f"--output={split}", "--seed=1"])
    assert glue_torch.main(common + [f"--output={split}"]) == 0
    a, b = json.loads(whole.read_text()), json.loads(split.read_text())
    assert a["steps"] == b["steps"] == 5 and b["resumed_at_step"] == 2 and a["resumed_at_step"] == 0
    assert b["last_step_loss"] == pytest.approx(a["last_step_loss"], rel=1e-5)
    assert b["eval_accuracy"] == a["eval_accuracy"]
    assert not (tmp_path / "split.ckpt.pt").exists()  # removed once the result is written


def test_side_by_side_takes_our_committed_runs_and_checks_recipes(tmp_path, capsys):
    """Our committed GPU runs (experiments/results/glue_minilm, unpacked) as our side; a torch JSON of
    another recipe is refused."""
    import json

    from experiments import result_tables

    result_tables.unpack("glue_minilm", str(tmp_path / "runs"))
    runs = tmp_path / "runs" / "sst2" / "minilm"
    ours = ",".join(str(runs / f"lr5e-05-seed{k}") for k in range(3))
    (tmp_path / "torch").mkdir()
    rec = dict(seed=0, lr=5e-5, epochs=3.0, batch_size=32, max_seq_len=128, eval_accuracy=0.9)
    (tmp_path / "torch" / "seed0.json").write_text(json.dumps(rec))
    argv = [f"--root={tmp_path}", "--lr=5e-5", "--report_only", f"--ours_workdirs={ours}"]
    assert sst2_side_by_side.main(argv) == 0
    s = json.loads((tmp_path / "results.json").read_text())
    assert [round(100 * s["runs"]["ours"][k], 2) for k in "012"] == [90.02, 89.91, 89.22]
    assert s["runs"]["torch"] == {"0": 0.9, "1": None, "2": None}
    with pytest.raises(SystemExit, match="expected 2e-05"):  # our runs were lr 5e-5
        sst2_side_by_side.main([f"--root={tmp_path}", "--lr=2e-5", "--report_only", f"--ours_workdirs={ours}"])
    (tmp_path / "torch" / "seed0.json").write_text(json.dumps(dict(rec, epochs=1.0)))
    with pytest.raises(SystemExit, match="epochs = 1.0, expected 3.0"):
        sst2_side_by_side.main(argv)
    with pytest.raises(SystemExit):  # one workdir per seed
        sst2_side_by_side.main(argv[:-1] + [f"--ours_workdirs={runs}/lr5e-05-seed0"])
