"""experiments/results/: every committed tables.md equals what its folder's files render (no training,
file reading only), the folders' layout and size, and the unpacked runs read back by bvt-glue-grid."""

import json
import os
import re
import shutil
import sys

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
if REPO not in sys.path:  # experiments/ is run from the checkout, not installed
    sys.path.insert(0, REPO)

from experiments import report, result_tables  # noqa: E402

RESULTS = result_tables.RESULTS
# split so that this file does not match itself
HISTORY = re.compile(r"\bl" r"ease|session [0-9]|sessions [0-9]|must" r"-hold|issue #?[0-9]", re.IGNORECASE)


def _files(top):
    for dirpath, _, names in os.walk(top):
        for name in names:
            yield os.path.join(dirpath, name)


def test_committed_tables_equal_their_rendering(capsys):
    assert report.main(["--all", "--check"]) == 0, capsys.readouterr().out
    assert "match their files" in capsys.readouterr().out


def test_one_folder_per_experiment_small_and_named_by_what_it_is():
    folders = sorted(d for d in os.listdir(RESULTS) if os.path.isdir(os.path.join(RESULTS, d)))
    assert folders == sorted(result_tables.EXPERIMENTS)
    for name in folders:
        have = set(os.listdir(os.path.join(RESULTS, name)))
        assert {"README.md", "tables.md", "runs.jsonl"} <= have, name
    files = list(_files(RESULTS))
    assert len(files) < 200
    assert sum(os.path.getsize(f) for f in files) < 2.5e6
    for path in files:  # no date, machine or rented-machine episode in a path
        rel = os.path.relpath(path, RESULTS)
        assert not re.search(r"20\d\d-\d\d|h100|h200|cpu_|l" r"ease|call\d", rel, re.IGNORECASE), rel


def test_no_development_history_in_experiments_or_results_doc():
    paths = [p for p in _files(os.path.join(REPO, "experiments")) if p.endswith((".py", ".md", ".json", ".jsonl"))
             and "__pycache__" not in p]
    paths.append(os.path.join(REPO, "docs", "results.md"))
    for path in paths:
        with open(path, encoding="utf-8") as f:
            for i, line in enumerate(f, 1):
                assert not HISTORY.search(line), f"{os.path.relpath(path, REPO)}:{i}: {line.strip()[:120]}"


def test_every_run_record_is_complete():
    for name in result_tables.EXPERIMENTS:
        with open(os.path.join(RESULTS, name, "runs.jsonl")) as f:
            records = [json.loads(line) for line in f if line.strip()]
        assert records and len({r["run"] for r in records}) == len(records), name
        for r in records:
            assert r["hardware"] and r["metrics"] and ("config" in r or "overrides" in r), (name, r["run"])
            assert any(k.startswith("eval_") for m in r["metrics"] for k in m), (name, r["run"])


def test_a_changed_run_makes_its_table_differ(tmp_path):
    root = tmp_path / "results"
    shutil.copytree(os.path.join(RESULTS, "small_bert_pretraining"), root / "small_bert_pretraining")
    assert result_tables.check(str(root), ["small_bert_pretraining"]) == []
    path = root / "small_bert_pretraining" / "runs.jsonl"
    lines = path.read_text().splitlines()
    rec = json.loads(lines[-1])
    rec["metrics"][-1]["eval_accuracy"] = 0.01  # one RTE run's final dev accuracy
    lines[-1] = json.dumps(rec)
    path.write_text("\n".join(lines) + "\n")
    assert result_tables.check(str(root), ["small_bert_pretraining"]) == [str(root / "small_bert_pretraining" / "tables.md")]


def test_unpacked_runs_give_glue_grid_the_committed_comparison(tmp_path):
    """bvt-glue-grid --report_only on the unpacked runs reads the same best-of-grid cells and p-values."""
    from bert_vs_transformer.cli import glue_grid

    result_tables.unpack("small_bert_pretraining", str(tmp_path))
    tasks, summaries = ["sst2", "cola", "mrpc", "rte", "stsb"], {}
    for task in tasks:
        summaries[task] = []
        for init in ("X/pt_small_hf", "scratch"):
            points = glue_grid.grid_points(task, init, str(tmp_path), lrs=[1e-4], seeds=range(6), arch="X/pt_small_hf")
            summaries[task].append(glue_grid.report(points)[1])
    md, out = glue_grid.compare(summaries)
    runs = result_tables.glue_runs(result_tables.load_runs("small_bert_pretraining"))
    assert md == result_tables.compare_inits(runs, ["init-pt_small_hf", "scratch-pt_small_hf"], tasks, lrs=[1e-4])
    assert out["tasks"]["cola"]["init-pt_small_hf - scratch-pt_small_hf"]["p"] > 0.2  # the CoLA tie
    assert round(100 * out["tasks"]["cola"]["init-pt_small_hf"]["score"], 2) == 10.26
