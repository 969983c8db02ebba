"""Console scripts: every bvt-* in setup.py loads, `bvt-data` runs both subcommands on Multi30k and
rejects a bad subcommand in one line."""

import importlib.metadata
import json
import os
import re
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCRIPTS = {"bvt-train", "bvt-translate", "bvt-average-checkpoints", "bvt-export-hf", "bvt-benchmark",
           "bvt-compare", "bvt-data", "bvt-glue-grid", "bvt-score"}


def declared() -> dict[str, str]:
    """setup.py's console_scripts: name -> "module:function"."""
    with open(os.path.join(REPO, "setup.py")) as f:
        block = re.search(r'"console_scripts":\s*\[(.*?)\]', f.read(), re.S).group(1)
    return dict(re.findall(r'"([\w-]+)\s*=\s*([\w.]+:\w+)"', block))


def _env(**extra) -> dict[str, str]:
    return dict(os.environ, JAX_PLATFORMS="cpu", **extra)


def _raw_data_dir() -> str:
    """$BVT_DATA_DIR (relative: from the working directory, else the repo), default ../shared/data."""
    value = os.environ.get("BVT_DATA_DIR") or os.path.join(REPO, "..", "shared", "data")
    path = os.path.abspath(value)
    return path if os.path.isdir(path) else os.path.abspath(os.path.join(REPO, value))


def _bvt_data() -> list[str]:
    """The installed bvt-data script."""
    script = os.path.join(os.path.dirname(sys.executable), "bvt-data")
    if not os.path.isfile(script):
        pytest.fail(f"{script} is missing: run `pip install -e .` after editing setup.py")
    return [script]


def test_setup_declares_every_script_as_a_cli_run():
    scripts = declared()
    assert set(scripts) == SCRIPTS
    for name, target in scripts.items():
        module, function = target.split(":")
        assert function == "run", target
        if name != "bvt-train":
            assert module == "bert_vs_transformer.cli." + name[len("bvt-"):].replace("-", "_"), target
        with open(os.path.join(REPO, *module.split(".")) + ".py") as f:  # python -m MODULE works too
            assert re.search(r'^if __name__ == "__main__":\n    run\(\)\n', f.read(), re.M), module


def test_installed_entry_points_match_setup():
    try:
        dist = importlib.metadata.distribution("bert_vs_transformer")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("bert_vs_transformer is not installed")
    installed = {ep.name: ep.value for ep in dist.entry_points if ep.group == "console_scripts"}
    assert installed == declared(), "stale install: run `pip install -e .` after editing setup.py"


def test_every_script_resolves_to_a_callable():
    """All in one process (as bvt-train's flags are global: importing the others must define none)."""
    code = ("import importlib, json, sys\n"
            "targets = json.loads(sys.argv[1])\n"
            "out = {}\n"
            "for name, target in targets.items():\n"
            "    module, function = target.split(':')\n"
            "    out[name] = callable(getattr(importlib.import_module(module), function))\n"
            "print(json.dumps(out))\n")
    proc = subprocess.run([sys.executable, "-c", code, json.dumps(declared())], cwd=REPO, env=_env(),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == {name: True for name in SCRIPTS}


@pytest.fixture(scope="module")
def data_env(tmp_path_factory):
    """Raw data from $BVT_DATA_DIR, datasets generated into a fresh tfds dir shared by this module's runs."""
    return _env(BVT_DATA_DIR=_raw_data_dir(), TFDS_DATA_DIR=str(tmp_path_factory.mktemp("tfds")))


def test_data_inspect(data_env):
    # vocab_size 4000: the SentencePiece model of configs/transformer.py:tiny, reused by the throughput test.
    proc = subprocess.run([*_bvt_data(), "inspect", "--dataset=multi30k", "--split=validation", "--show=1",
                           "--vocab_size=4000"], cwd=REPO, env=data_env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.strip().splitlines()
    assert lines[0] == "--- example 0 (idx 0)" and sum(line.startswith("--- example") for line in lines) == 1
    assert any(line.startswith("  en tokens (") for line in lines)
    summary = json.loads(lines[-1])
    assert summary["num_examples"] == 1014 and summary["split"] == "validation"
    for field in ("en", "de"):
        stats = summary["token_lengths"][field]
        assert stats["count"] == 1014 and 1 <= stats["min"] <= stats["p50"] <= stats["max"]


def test_data_throughput(data_env):
    proc = subprocess.run([*_bvt_data(), "throughput", "--config=configs/transformer.py:tiny", "--steps=5",
                           "--warmup=1", "--config.data.batch_size=8"],
                          cwd=REPO, env=data_env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rec = json.loads(proc.stdout.strip().splitlines()[-1])
    assert rec["dataset"] == "multi30k" and rec["steps"] == 5 and rec["local_batch_size"] == 8
    assert rec["overrides"] == {"data.batch_size": "8"}
    assert sum(rec["shapes"].values()) == 5 and all(s.startswith("8x") for s in rec["shapes"])
    assert rec["batches_per_s"] > 0 and rec["tokens_per_s"] > 0 and 0 < rec["real_token_fraction"] <= 1


@pytest.mark.parametrize("args, says", [
    (["bogus"], "unknown subcommand 'bogus'"),
    ([], "missing subcommand"),
    (["inspect", "--dataset=nope"], "unknown dataset 'nope'"),
    (["throughput"], "--config"),
])
def test_data_bad_input_is_one_line(args, says):
    proc = subprocess.run([*_bvt_data(), *args], cwd=REPO, env=_env(), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert proc.stdout == "" and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert says in proc.stderr and "Traceback" not in proc.stderr
    if not args or args[0] == "bogus":
        assert "inspect" in proc.stderr and "throughput" in proc.stderr
