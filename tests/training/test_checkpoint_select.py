"""checkpoints.select_step: which pretraining checkpoint fine-tuning builds on, by held-out loss."""

import json
import os

import pytest

from bert_vs_transformer.training import checkpoints


def _workdir(tmp_path, evals, saved, extra_dirs=()):
    wd = str(tmp_path)
    os.makedirs(wd, exist_ok=True)
    with open(os.path.join(wd, "metrics.jsonl"), "w") as f:
        f.write(json.dumps({"step": 1, "loss": 9.0}) + "\n")  # a training record: no eval metric
        for step, loss in evals:
            f.write(json.dumps({"step": step, "eval_mlm_loss": loss}) + "\n")
    for s in saved:
        os.makedirs(os.path.join(wd, "checkpoints", str(s)))
    for d in extra_dirs:
        os.makedirs(os.path.join(wd, "checkpoints", d))
    return wd


def test_still_improving_means_latest(tmp_path):
    wd = _workdir(tmp_path, [(1000, 6.0), (2000, 5.0), (3000, 4.0)], [1000, 2000, 3000, 3100])
    step, why = checkpoints.select_step(wd)
    assert step is None and "last evaluation" in why and "3000" in why


def test_over_fitting_picks_the_best_saved_step(tmp_path):
    # an unfinished orbax write ("4000.orbax-checkpoint-tmp-1") is not a checkpoint
    wd = _workdir(tmp_path, [(1000, 6.0), (2000, 4.5), (3000, 4.8), (4000, 5.1)], [1000, 2000, 3000, 4000],
                  extra_dirs=["5000.orbax-checkpoint-tmp-1"])
    assert checkpoints.saved_steps(wd) == [1000, 2000, 3000, 4000]
    step, why = checkpoints.select_step(wd)
    assert step == 2000 and "4.5" in why and "5.1" in why


def test_best_deleted_by_the_keep_limit(tmp_path):
    wd = _workdir(tmp_path, [(1000, 6.0), (2000, 4.5), (3000, 4.8), (4000, 5.1)], [3000, 4000])
    assert checkpoints.select_step(wd)[0] == 3000  # the best of what is left
    wd2 = _workdir(tmp_path / "b", [(1000, 6.0), (2000, 4.5), (3000, 4.8)], [3100])
    step, why = checkpoints.select_step(wd2)
    assert step is None and "no evaluated step has a checkpoint" in why


def test_max_mode_and_missing_files(tmp_path):
    wd = _workdir(tmp_path, [], [100])
    with open(os.path.join(wd, "metrics.jsonl"), "a") as f:
        for step, acc in [(100, 0.2), (200, 0.3), (300, 0.25)]:
            f.write(json.dumps({"step": step, "eval_mlm_accuracy": acc}) + "\n")
    os.makedirs(os.path.join(wd, "checkpoints", "200"))
    assert checkpoints.select_step(wd, "eval_mlm_accuracy", "max")[0] == 200
    assert checkpoints.select_step(str(tmp_path / "none"))[0] is None
    with pytest.raises(ValueError, match="mode"):
        checkpoints.select_step(wd, mode="lowest")
