"""The GLUE grid (glue_grid) from fake finished workdirs: the commands it runs, skipping finished runs,
the per-lr table and best of grid, and inits side by side (hand-computed)."""

from __future__ import annotations

import json
import math
import os
import shutil

import numpy as np
import pytest

from bert_vs_transformer import config_args
from bert_vs_transformer.cli import glue_grid


def _glue(arg: str):
    return config_args.load(f"configs/glue.py:{arg}")


def _fake_run(point, acc, f1, finished=True):
    os.makedirs(point.workdir, exist_ok=True)
    with open(os.path.join(point.workdir, "config.json"), "w") as f:
        json.dump({"num_train_steps": 10}, f)
    with open(os.path.join(point.workdir, "metrics.jsonl"), "w") as f:
        f.write(json.dumps({"step": 5, "eval_accuracy": 0.1, "eval_f1": 0.1}) + "\n")
        if finished:
            f.write(json.dumps({"step": 10, "loss": 0.3}) + "\n")
            f.write(json.dumps({"step": 10, "eval_accuracy": acc, "eval_f1": f1,
                                "eval_glue_score": (acc + f1) / 2}) + "\n")


def test_grid_commands_skips_and_best_of_grid(tmp_path, capsys):
    points = glue_grid.grid_points("mrpc", "minilm", str(tmp_path), seeds=range(2))
    assert [(p.lr, p.seed) for p in points] == [(lr, s) for lr in (5e-5, 4e-5, 3e-5, 2e-5) for s in (0, 1)]
    assert len({p.workdir for p in points}) == 8
    cmd = points[0].command(["--config.mesh.data=1"])
    assert cmd[1:3] == ["-m", "bert_vs_transformer.main"]
    assert "task=mrpc,init=minilm,lr=5e-05,seed=0" in cmd[3] and cmd[-1] == "--config.mesh.data=1"
    assert _glue(cmd[3].split("configs/glue.py:")[1]).optimizer.learning_rate == 5e-5
    # --arch=DIR: scratch runs of DIR's architecture, in their own folder; other inits ignore it.
    (tmp_path / "pre").mkdir()
    (tmp_path / "pre" / "config.json").write_text(json.dumps(config_args.load("configs/bert.py:tiny").to_dict()))
    arch = glue_grid.grid_points("rte", "scratch", str(tmp_path), lrs=(1e-4,), arch=str(tmp_path / "pre"))
    assert arch[0].workdir == str(tmp_path / "rte" / "scratch-pre" / "lr0.0001-seed0")
    a = _glue(arch[0].config_spec.split("configs/glue.py:")[1])
    assert a.init == "scratch" and a.arch == str(tmp_path / "pre") and a.model.d_model == 128
    assert ",arch=" not in glue_grid.grid_points("rte", "minilm", str(tmp_path), arch=str(tmp_path / "pre"))[0].config_spec

    scores = {5e-5: (0.80, 0.86), 4e-5: (0.84, 0.88), 3e-5: (0.83, 0.87)}
    for p in points:
        if p.lr in scores:
            acc, f1 = scores[p.lr]
            _fake_run(p, acc + 0.01 * p.seed, f1 + 0.01 * p.seed)
        elif p.seed == 0:
            _fake_run(p, 0.9, 0.9, finished=False)  # interrupted: not finished
    status = glue_grid.run_grid(points, dry_run=True, log=lambda s: None)
    assert sum(s == "done" for s in status.values()) == 6 and sum(s == "dry run" for s in status.values()) == 2
    md, summary = glue_grid.report(points, status)
    assert summary["best"]["lr"] == 4e-5 and summary["best"]["seeds"] == 2
    assert summary["best"]["accuracy"] == pytest.approx(0.845)
    assert summary["best"]["accuracy_std"] == pytest.approx(np.std([0.84, 0.85], ddof=1))
    assert "**Best of grid on dev (mrpc, init minilm):** lr 4e-05: f1 0.8850" in md
    assert "(mean ± std over 2 seed(s); 6/8 runs of the grid finished)" in md

    assert glue_grid.main(["--task=mrpc", "--init=minilm", f"--root={tmp_path}", "--seeds=2", "--report_only"]) == 0
    assert "lr 4e-05" in capsys.readouterr().out
    assert os.path.isfile(os.path.join(tmp_path, "mrpc", "minilm", "results.md"))


def test_grid_compares_inits_side_by_side(tmp_path, capsys):
    """--init=A,B: each task's best of grid per init, A - B, and whether every seed of A is above every
    seed of B; hand-computed from fake finished runs (vmapped layout for A, single runs for B)."""
    (tmp_path / "pre").mkdir()
    (tmp_path / "pre" / "config.json").write_text(json.dumps(config_args.load("configs/bert.py:tiny").to_dict()))
    pre, root = str(tmp_path / "pre"), str(tmp_path / "g")
    # (task, init) -> {lr: [seed scores]}; MRPC's score is the mean of F1 and accuracy (both set to it)
    grids = {("mrpc", "pt"): {1e-4: [0.80, 0.82], 3e-4: [0.70, 0.90]},     # best 1e-4 (0.81) vs 3e-4 (0.80)
             ("mrpc", "scratch"): {1e-4: [0.76, 0.79], 3e-4: [0.60, 0.61]},  # best 1e-4: 0.775
             ("rte", "pt"): {1e-4: [0.55, 0.52], 3e-4: [0.50, 0.50]},        # best 1e-4: 0.535
             ("rte", "scratch"): {1e-4: [0.53, 0.53], 3e-4: [0.54, 0.54]}}   # best 3e-4: 0.54
    for (task, init), by_lr in grids.items():
        points = glue_grid.grid_points(task, pre if init == "pt" else "scratch", root, (1e-4, 3e-4), range(2),
                                       arch="" if init == "pt" else pre, vmap=init == "pt")
        for p in points:
            v = by_lr[p.lr][p.seed]
            os.makedirs(p.workdir)
            with open(os.path.join(p.workdir, "config.json"), "w") as f:
                json.dump({"num_train_steps": 10}, f)
            with open(os.path.join(p.workdir, "metrics.jsonl"), "w") as f:
                f.write(json.dumps({"step": 10, "eval_accuracy": v} | ({"eval_f1": v} if task == "mrpc" else {})) + "\n")
    argv = ["--task=mrpc,rte", f"--init={pre},scratch", f"--arch={pre}", f"--root={root}", "--lrs=1e-4,3e-4",
            "--seeds=2", "--report_only"]
    assert glue_grid.main(argv) == 0  # without --vmap the pretrained grid (members) is not found
    assert "ahead on 0/0 task(s); every seed above on 0; p ≤ 0.05 on 0; not comparable yet (no finished run): mrpc, rte." \
        in capsys.readouterr().out
    # the two layouts, read together: the pt grid as members, scratch's as single runs
    summaries = {}
    for task in ("mrpc", "rte"):
        for init, vmap in ((pre, True), ("scratch", False)):
            pts = glue_grid.grid_points(task, init, root, (1e-4, 3e-4), range(2), arch=pre, vmap=vmap)
            summaries.setdefault(task, []).append(glue_grid.report(pts)[1])
    md, table = glue_grid.compare(summaries)
    assert table["inits"] == ["init-pre", "scratch-pre"]
    mrpc = table["tasks"]["mrpc"]
    assert mrpc["init-pre"]["lr"] == 1e-4 and mrpc["init-pre"]["score"] == pytest.approx(0.81)
    assert mrpc["scratch-pre"]["score"] == pytest.approx(0.775)
    assert mrpc["init-pre - scratch-pre"]["diff"] == pytest.approx(0.035)
    assert mrpc["init-pre - scratch-pre"]["every_seed_above"]  # 0.80 > 0.79
    rte = table["tasks"]["rte"]
    assert rte["scratch-pre"]["lr"] == 3e-4 and rte["init-pre - scratch-pre"]["diff"] == pytest.approx(-0.005)
    assert not rte["init-pre - scratch-pre"]["every_seed_above"]
    # 2 seeds a side: 6 splits of {.76, .79, .80, .82}; only the observed one has a difference >= 0.035
    assert mrpc["init-pre - scratch-pre"]["p"] == pytest.approx(1 / 6)
    assert "| mrpc | 81.00 ± 1.41 (0.0001, 2) | 77.50 ± 2.12 (0.0001, 2) | +3.50 | yes | 0.167 |" in md
    assert ("**init-pre vs scratch-pre:** ahead on 1/2 task(s) (mrpc); every seed above on 1 (mrpc); "
            "p ≤ 0.05 on 0; behind on rte.") in md
    same = glue_grid.compare({"mrpc": [summaries["mrpc"][0], dict(summaries["mrpc"][0], name="again")]})[1]
    assert same["tally"]["again"]["tied"] == ["mrpc"] and not same["tasks"]["mrpc"]["init-pre - again"]["every_seed_above"]

    # both grids as single runs: main prints and writes the comparison
    for task in ("mrpc", "rte"):
        src = glue_grid.grid_points(task, pre, root, (1e-4, 3e-4), range(2), vmap=True)
        dst = glue_grid.grid_points(task, pre, root, (1e-4, 3e-4), range(2))
        for a, b in zip(src, dst):
            shutil.copytree(a.workdir, b.workdir)
    assert glue_grid.main(argv) == 0
    out = capsys.readouterr().out
    assert "every seed above on 1 (mrpc); p ≤ 0.05 on 0; behind on rte." in out
    with open(os.path.join(root, "comparison-init-pre-vs-scratch-pre.json")) as f:
        assert json.load(f)["tally"]["scratch-pre"]["ahead"] == ["mrpc"]


def test_permutation_p_matches_hand_counts_and_scipy():
    """The one-sided permutation p-value of a difference of means: hand-counted splits, then scipy's
    exact permutation_test (an independent implementation), then the Monte Carlo branch against exact."""
    # {1, 2, 3, 4} into pairs: 6 splits, pair sums 3, 4, 5, 5, 6, 7; difference = sum - 5
    assert glue_grid.permutation_p([3, 4], [1, 2]) == pytest.approx(1 / 6)  # only the observed split
    assert glue_grid.permutation_p([1, 4], [2, 3]) == pytest.approx(4 / 6)  # sums 5, 5, 6, 7 reach 0
    assert glue_grid.permutation_p([1, 2], [3, 4]) == pytest.approx(1.0)
    # 3 seeds a side, every seed above: 1 / C(6, 3), the smallest p 3 seeds can give
    assert glue_grid.permutation_p([0.61, 0.62, 0.60], [0.52, 0.51, 0.53]) == pytest.approx(0.05)
    assert math.isnan(glue_grid.permutation_p([], [1.0]))
    scipy_stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(3)
    for na, nb in ((4, 4), (5, 3), (2, 6)):
        a, b = rng.normal(0.1, 1, na).round(1), rng.normal(0, 1, nb).round(1)  # rounding makes ties
        want = scipy_stats.permutation_test((a, b), lambda x, y: np.mean(x) - np.mean(y), n_resamples=np.inf,
                                            permutation_type="independent", alternative="greater").pvalue
        assert glue_grid.permutation_p(a, b) == pytest.approx(want)
    a, b = rng.normal(0.5, 1, 6), rng.normal(0, 1, 6)
    exact = glue_grid.permutation_p(a, b)
    assert glue_grid.permutation_p(a, b, max_exact=10, draws=20_000) == pytest.approx(exact, abs=0.01)
