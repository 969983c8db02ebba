"""Sweeps, launchers and reports (experiments/, launch/): the shipped sweeps against the papers'
tables, the launchers' dry runs (TPU ssh --worker=all, valid sbatch scripts), the report on fixture
metrics.jsonl files, and a tiny synthetic sweep interrupted and resumed."""

import json
import os
import re
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
if REPO not in sys.path:  # experiments/ and launch/ are run from the checkout, not installed
    sys.path.insert(0, REPO)

from bert_vs_transformer import config_args  # noqa: E402
from experiments import report, run, status  # noqa: E402
from experiments.sweep import Run, Sweep, load_sweep, name_of, product, ref, zip_  # noqa: E402
from launch import common  # noqa: E402

# Vaswani et al. (2017) Table 3, newstest2013 dev: row -> (paper setting, PPL, BLEU).
TABLE3 = {
    "base": (4.92, 25.8),
    "A_h1": (5.29, 24.9), "A_h4": (5.00, 25.5), "A_h16": (4.91, 25.8), "A_h32": (5.01, 25.4),
    "B_dk16": (5.16, 25.1), "B_dk32": (5.01, 25.4),
    "C_N2": (6.11, 23.7), "C_N4": (5.19, 25.3), "C_N8": (4.88, 25.5),
    "C_d256": (5.75, 24.5), "C_d1024": (4.66, 26.0), "C_ff1024": (5.12, 25.4), "C_ff4096": (4.75, 26.2),
    "D_drop0.0": (5.77, 24.6), "D_drop0.2": (4.95, 25.5), "D_ls0.0": (4.67, 25.3), "D_ls0.2": (5.47, 25.7),
    "E_learned": (4.92, 25.7),
}
# Devlin et al. (2018) Table 6: (L, H, A) -> (LM ppl, MRPC, SST-2); Table 5: row -> (MRPC, SST-2).
TABLE6 = {(3, 768, 12): (5.84, 79.8, 88.4), (6, 768, 3): (5.24, 82.2, 90.7), (6, 768, 12): (4.68, 84.8, 91.3),
          (12, 768, 12): (3.99, 86.7, 92.9), (12, 1024, 16): (3.54, 86.9, 93.3), (24, 1024, 16): (3.23, 87.8, 93.7)}
TABLE5 = {"mlm_nsp": (86.7, 92.7), "mlm": (86.5, 92.6), "ltr": (77.5, 92.1)}


def _dry_run(capsys, *argv):
    rc = run.main(list(argv))
    out = capsys.readouterr().out
    assert rc == 0, out
    return out


def _bash_n(text: str, tmp_path, name="script.sh"):
    path = tmp_path / name
    path.write_text(text)
    result = subprocess.run(["bash", "-n", str(path)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr + text


# --- sweep definitions --------------------------------------------------------------------------


def test_product_zip_and_refs(tmp_path):
    grid = product({"model.num_heads": [1, 2]}, seed=[0, 1])
    assert grid == [{"model.num_heads": 1, "seed": 0}, {"model.num_heads": 1, "seed": 1},
                    {"model.num_heads": 2, "seed": 0}, {"model.num_heads": 2, "seed": 1}]
    assert zip_({"model.d_model": [64, 256], "model.d_ff": [128, 512]}) == [
        {"model.d_model": 64, "model.d_ff": 128}, {"model.d_model": 256, "model.d_ff": 512}]
    with pytest.raises(ValueError):
        zip_(a=[1, 2], b=[1])
    assert name_of({"model.num_heads": 1, "optimizer.learning_rate": 5e-5}) == "num_heads1_learning_rate5e-05"
    sweep = Sweep("s", "configs/bert.py:tiny", [
        Run("pre", {"num_train_steps": 10}),
        Run("ft", {"optimizer.learning_rate": 1e-4}, config=f"configs/glue.py:task=sst2,init={ref('pre')}"),
    ])
    pre, ft = sweep.expand(str(tmp_path))
    assert ft.config == f"configs/glue.py:task=sst2,init={tmp_path}/s/pre"
    assert ft.after == ("pre",) and pre.workdir == f"{tmp_path}/s/pre"
    assert ft.command("python")[3:] == [f"--config=configs/glue.py:task=sst2,init={tmp_path}/s/pre",
                                        f"--workdir={tmp_path}/s/ft", "--config.optimizer.learning_rate=0.0001"]
    assert pre.num_train_steps == 10
    with pytest.raises(ValueError, match="earlier"):
        Sweep("s", "c.py", [Run("ft", {"x": ref("pre")}), Run("pre")])
    with pytest.raises(ValueError, match="two runs"):
        Sweep("s", "c.py", [Run("a"), Run("a")])


def test_vaswani_table3_p_drop_pins_the_base_dropout(tmp_path):
    """p_drop=0.3 sets every run's dropout, and rows (D) step from it (0 stays 0, +0.1 -> 0.4)."""
    jobs = {j.name: dict(j.overrides) for j in load_sweep("experiments/vaswani_table3.py:p_drop=0.3").expand(str(tmp_path))}
    assert jobs["base"]["model.dropout_rate"] == 0.3 and jobs["A_h1"]["model.dropout_rate"] == 0.3
    assert jobs["D_drop0.0"]["model.dropout_rate"] == 0.0
    assert jobs["D_drop0.2"]["model.dropout_rate"] == 0.4


def test_vaswani_table3_rows_match_the_paper(tmp_path, capsys):
    sweep = load_sweep("experiments/vaswani_table3.py")
    jobs = sweep.expand(str(tmp_path))
    base = config_args.load("configs/transformer.py:multi30k")
    m = base.model
    d_k = m.d_model // m.num_heads
    assert len(jobs) >= 15
    assert len({j.name for j in jobs}) == len({j.workdir for j in jobs}) == len(jobs)
    assert len({frozenset(j.own_overrides) for j in jobs}) == len(jobs), "two runs with the same overrides"
    rows = {r.name: r for r in sweep.table_rows()}
    assert {name: (r.paper["ppl"], r.paper["bleu"]) for name, r in rows.items()} == TABLE3
    o = {j.name: dict(j.own_overrides) for j in jobs}
    assert all(dict(j.overrides)["evals.bleu.beam_size"] == 4 for j in jobs)  # the paper's beam search
    assert o["base"] == {}
    # (A): heads at constant compute, d_k = d_model / h (head_dim left to follow).
    heads = [o[n]["model.num_heads"] for n in ("A_h1", "A_h4", "A_h16", "A_h32")]
    assert heads[0] == 1 and heads == sorted(heads) and heads[1] < m.num_heads < heads[2]
    assert heads[1:] == [m.num_heads // 2, m.num_heads * 2, m.num_heads * 4]
    assert all(m.d_model % h == 0 and set(o[n]) == {"model.num_heads"}
               for n, h in zip(("A_h1", "A_h4", "A_h16", "A_h32"), heads))
    # (B): smaller keys (1/4, 1/2 of the base d_k, as 16 and 32 of 64), heads kept.
    assert o["B_dk16"] == {"model.head_dim": d_k // 4} and o["B_dk32"] == {"model.head_dim": d_k // 2}
    # (C): depth (encoder and decoder together), width with h kept, feed-forward.
    depths = [o[n]["model.num_encoder_layers"] for n in ("C_N2", "C_N4", "C_N8")]
    assert depths == sorted(depths) and depths[1] < m.num_encoder_layers < depths[2] and depths[0] >= 1
    assert all(o[n]["model.num_decoder_layers"] == o[n]["model.num_encoder_layers"] for n in ("C_N2", "C_N4", "C_N8"))
    assert o["C_d256"] == {"model.d_model": m.d_model // 2} and o["C_d1024"] == {"model.d_model": m.d_model * 2}
    assert o["C_ff1024"] == {"model.d_ff": m.d_ff // 2} and o["C_ff4096"] == {"model.d_ff": m.d_ff * 2}
    # (D): no dropout / more dropout; label smoothing 0.0 / 0.2.
    assert o["D_drop0.0"] == {"model.dropout_rate": 0.0}
    assert o["D_drop0.2"]["model.dropout_rate"] > m.dropout_rate
    assert o["D_ls0.0"] == {"label_smoothing": 0.0} and o["D_ls0.2"] == {"label_smoothing": 0.2}
    # (E): learned positions.
    assert o["E_learned"] == {"model.positional": "learned"}
    assert rows["A_h1"].group == "(A)" and rows["E_learned"].group == "(E)"

    out = _dry_run(capsys, "experiments/vaswani_table3.py", "--dry_run", f"--root={tmp_path}")
    commands = [line for line in out.splitlines() if "bert_vs_transformer.main" in line]
    assert len(commands) == len(jobs)
    assert any(c.endswith("--config.model.num_heads=1") for c in commands)
    assert any("--config.model.positional=learned" in c for c in commands)
    assert not os.listdir(tmp_path), "a dry run writes nothing"
    _bash_n(out, tmp_path.parent, "local_dry_run.sh")


def test_bert_sweeps_expand(tmp_path, capsys):
    t6 = load_sweep("experiments/bert_table6.py")
    rows = {r.setting: r.paper for r in t6.table_rows()}
    assert {tuple(int(x.split("=")[1]) for x in s.split(", ")): (p["lm_ppl"], p["mrpc"], p["sst2"])
            for s, p in rows.items()} == TABLE6
    jobs = t6.expand(str(tmp_path))
    pre = [j for j in jobs if j.tags.get("stage") == "pretrain"]
    assert len(pre) == 6 and len({frozenset(j.own_overrides) for j in pre}) == 6
    for j in pre:
        o = dict(j.overrides)
        assert o["model.d_ff"] == 4 * o["model.d_model"] and o["model.d_model"] % o["model.num_heads"] == 0
    ft = [j for j in jobs if j.tags.get("stage") == "finetune"]
    assert len(ft) == 6 * 2 * 4  # sizes x {SST-2, MRPC} x the paper's learning rates
    for j in ft:
        assert j.config.startswith(f"configs/glue.py:task={j.tags['task']},init={tmp_path}/bert_table6/")
        assert j.config.endswith(f"/{j.after[0]}") and j.after[0].endswith("_pretrain")
        assert dict(j.overrides)["optimizer.learning_rate"] in (5e-5, 4e-5, 3e-5, 2e-5)

    t5 = load_sweep("experiments/bert_table5.py")
    assert {r.name: (r.paper["mrpc"], r.paper["sst2"]) for r in t5.table_rows()} == TABLE5
    o = {j.name: dict(j.own_overrides) for j in t5.expand(str(tmp_path))}
    assert "nsp_weight" not in o["mlm_nsp_pretrain"]
    assert o["mlm_pretrain"]["nsp_weight"] == 0.0
    assert o["ltr_pretrain"]["nsp_weight"] == 0.0 and o["ltr_pretrain"]["model.causal"] is True
    assert o["ltr_pretrain"]["lm_objective"] == "ltr" and o["ltr_sst2_lr5e-05"]["model.causal"] is True
    # The library has the Table 5 options (nsp_weight, lm_objective, model.causal/pooling): main accepts them.
    out = _dry_run(capsys, "experiments/bert_table5.py", "--dry_run", f"--root={tmp_path}", "--launcher=slurm")
    assert "--config.nsp_weight=0.0" in out and "--config.model.causal=True" in out
    assert "main would reject" not in out

    glue = load_sweep("experiments/glue_finetune.py")
    gjobs = glue.expand(str(tmp_path))
    assert len(gjobs) == 5 * 4
    assert {(j.config, dict(j.own_overrides)["optimizer.learning_rate"]) for j in gjobs} == {
        (f"configs/glue.py:task={t},init=minilm", lr) for t in ("cola", "sst2", "mrpc", "stsb", "rte")
        for lr in (5e-5, 4e-5, 3e-5, 2e-5)}
    assert load_sweep("experiments/glue_finetune.py:init=scratch,tasks=rte").name == "glue_finetune_scratch"


def test_run_checks_overrides_before_launching(tmp_path, capsys):
    rc = run.main(["experiments/vaswani_table3.py", f"--root={tmp_path}", "--only=base", "--set=model.not_a_field=1"])
    captured = capsys.readouterr()
    assert rc == 2 and "not_a_field" in captured.out and "would fail at startup" in captured.err
    assert run.main(["experiments/vaswani_table3.py", "--dry_run", "--only=Z_*"]) == 2


# --- launchers ----------------------------------------------------------------------------------


def test_local_launcher_multiprocess_dry_run(tmp_path, capsys):
    out = _dry_run(capsys, "experiments/vaswani_table3.py", "--dry_run", f"--root={tmp_path}", "--only=base",
                   "--local_processes=2", "--local_devices_per_process=4")
    procs = [line for line in out.splitlines() if "bert_vs_transformer.main" in line]
    assert len(procs) == 2
    for i, line in enumerate(procs):
        assert line.startswith("JAX_PLATFORMS=cpu JAX_NUM_CPU_DEVICES=4 JAX_CPU_COLLECTIVES_IMPLEMENTATION=gloo ")
        assert line.endswith(f"--coordinator_address=localhost:12355 --num_processes=2 --process_id={i} &")
    assert out.rstrip().endswith("wait")
    _bash_n(out, tmp_path)


def test_tpu_launcher_dry_run(tmp_path, capsys):
    out = _dry_run(capsys, "experiments/vaswani_table3.py", "--dry_run", "--root=/mnt/shared/bvt", "--tpu_shared_root",
                   "--launcher=tpu", "--tpu_name=pod", "--tpu_zone=us-central2-b", "--tpu_type=v4-32",
                   "--tpu_create", "--tpu_delete", "--env=BVT_DATA_DIR=/mnt/shared/data", "--only=A_*,base")
    lines = [line for line in out.splitlines() if line.startswith("gcloud")]
    ssh = [line for line in lines if " tpu-vm ssh " in line]
    assert all("--worker=all" in line for line in ssh + [x for x in lines if " scp " in x] if "--worker=0" not in line)
    assert len(ssh) == 1 + 5 * 3  # setup + per job: start, poll, outcome
    jobs = [line for line in ssh if "launch.tpu_worker start" in line]
    assert len(jobs) == 5
    assert all("export BVT_DATA_DIR=/mnt/shared/data" in line and "bert_vs_transformer.main" in line for line in jobs)
    assert all("--workdir=/mnt/shared/bvt/vaswani_table3/" in line for line in jobs)
    assert "--coordinator_address" not in out  # TPU pods: jax.distributed detects the pod
    assert lines[0].startswith("gcloud compute tpus tpu-vm create pod --zone=us-central2-b --accelerator-type=v4-32")
    assert lines[-1] == "gcloud compute tpus tpu-vm delete pod --zone=us-central2-b --quiet"
    _bash_n(out, tmp_path)


def _sbatch_scripts(out: str) -> dict[str, str]:
    return dict(re.findall(r"cat > \S+/slurm/(\S+)\.sbatch <<'BVT_SBATCH_EOF'\n(.*?)\nBVT_SBATCH_EOF", out, re.S))


def test_slurm_launcher_dry_run(tmp_path, capsys):
    out = _dry_run(capsys, "experiments/bert_table6.py", "--dry_run", f"--root={tmp_path}", "--launcher=slurm",
                   "--slurm_nodes=2", "--slurm_gpus_per_node=4", "--slurm_partition=gpu",
                   "--slurm_setup=source ~/venv/bin/activate", "--only=L1_H192_A12*")
    _bash_n(out, tmp_path, "submit.sh")
    scripts = _sbatch_scripts(out)
    assert len(scripts) == 1 + 8
    for name, script in scripts.items():
        _bash_n(script, tmp_path, f"{name}.sbatch")
        assert script.startswith("#!/bin/bash\n")
        for option in ("--nodes=2", "--ntasks-per-node=4", "--gpus-per-node=4", "--partition=gpu", "--requeue",
                       "--signal=TERM@"):
            assert f"#SBATCH {option}" in script
        assert "source ~/venv/bin/activate" in script
        assert 'COORDINATOR_HOST=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)' in script
        srun = [line for line in script.splitlines() if line.startswith("srun ")]
        assert len(srun) == 1 and "-m bert_vs_transformer.main" in srun[0]
        assert '--coordinator_address="${COORDINATOR_HOST}:${COORDINATOR_PORT}"' in srun[0]
        assert f"--workdir={tmp_path}/bert_table6/{name}" in srun[0]
    # Fine-tuning waits for its pretraining run.
    assert "JOB_L1_H192_A12_pretrain=$(sbatch --parsable " in out
    assert out.count("--dependency=afterok:${JOB_L1_H192_A12_pretrain}") == 8


def test_slurm_launcher_submits_with_dependencies(tmp_path, capsys, monkeypatch):
    """Real submission against a stand-in sbatch that records its arguments and prints job ids."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "calls.txt"
    (bin_dir / "sbatch").write_text(f'#!/bin/bash\necho "$@" >> {calls}\necho $((100 + $(wc -l < {calls})))\n')
    (bin_dir / "sbatch").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    root = tmp_path / "root"
    assert run.main(["experiments/bert_table6.py", f"--root={root}", "--launcher=slurm",
                     "--only=L1_H192_A12_pretrain,L1_H192_A12_mrpc*"]) == 0
    submitted = calls.read_text().splitlines()
    assert len(submitted) == 5
    assert submitted[0] == f"--parsable {root}/bert_table6/slurm/L1_H192_A12_pretrain.sbatch"
    assert all(line.startswith("--parsable --dependency=afterok:101 ") for line in submitted[1:])
    for line in submitted:
        _bash_n(open(line.split()[-1]).read(), tmp_path)
    events = [json.loads(x) for x in open(root / "bert_table6" / "sweep.jsonl")]
    assert [e["job_id"] for e in events if e["event"] == "submit"] == ["101", "102", "103", "104", "105"]


@pytest.mark.parametrize("rc,restarts,requeued,exit_code", [(143, 0, True, 0), (1, 0, False, 1), (2, 0, False, 2),
                                                            (130, 0, False, 130), (0, 0, False, 1),
                                                            (143, 3, False, 143)])
def test_slurm_script_requeues_a_stopped_run(tmp_path, rc, restarts, requeued, exit_code):
    """The sbatch script under stand-in srun/scontrol: an unfinished workdir is requeued on the
    preemption status (143) alone, and not after --slurm_max_requeue; a refused config (2), a crash
    or non-finite loss (1), a person's Ctrl-C (130) are not."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "scontrol.txt"
    (bin_dir / "srun").write_text(f"#!/bin/bash\nexit {rc}\n")
    (bin_dir / "scontrol").write_text(f'#!/bin/bash\necho "$@" >> {calls}\necho node1\n')
    for f in bin_dir.iterdir():
        f.chmod(0o755)
    job = Sweep("s", "configs/transformer.py:tiny", [Run("r", {"num_train_steps": 4})]).expand(str(tmp_path))[0]
    _fake_run(job.workdir, 4, {2: {"eval_loss": 1.0}}, [2])  # stopped at step 2 of 4
    args = run.build_parser().parse_args(["x", f"--slurm_python={sys.executable}"])
    script = tmp_path / "r.sbatch"
    script.write_text(common.get("slurm").sbatch_script(job, args, str(tmp_path)))
    env = dict(os.environ, PATH=f"{bin_dir}:{os.environ['PATH']}", SLURM_JOB_ID="77", SLURM_NTASKS="1",
               SLURM_JOB_NUM_NODES="1", SLURM_RESTART_COUNT=str(restarts), SLURM_JOB_NODELIST="node1")
    result = subprocess.run(["bash", str(script)], env=env, capture_output=True, text=True)
    assert result.returncode == exit_code, result.stdout + result.stderr
    assert ("requeue 77" in (calls.read_text() if calls.exists() else "")) == requeued


def test_single_job_launchers(tmp_path, capsys):
    argv = ["--dry_run", "--", "--config=configs/transformer.py:tiny", f"--workdir={tmp_path}/one",
            "--config.data.dataset=synthetic"]
    assert common.single_job_main("slurm", argv) == 0
    out = capsys.readouterr().out
    (script,) = _sbatch_scripts(out).values()
    _bash_n(script, tmp_path)
    assert "--config.data.dataset=synthetic" in script
    assert common.single_job_main("tpu", argv[:1] + ["--tpu_shared_root"] + argv[1:]) == 0
    assert "--worker=all" in capsys.readouterr().out


# --- status and report --------------------------------------------------------------------------


def _fake_run(workdir, total, evals: dict[int, dict], checkpoints, config=True):
    """A workdir as main leaves it: training records every 100 steps, evals, checkpoint dirs."""
    os.makedirs(os.path.join(workdir, "checkpoints"), exist_ok=True)
    last = max(list(evals) + list(checkpoints) + [0])
    with open(os.path.join(workdir, "metrics.jsonl"), "w") as f:
        for step in sorted(set(range(100, last + 1, 100)) | set(evals) | set(checkpoints)):
            f.write(json.dumps({"step": step, "loss": 5.0 * 100 / step, "learning_rate": 1e-3}) + "\n")
            if step in evals:
                f.write(json.dumps({"step": step, **evals[step]}) + "\n")
    for step in checkpoints:
        os.makedirs(os.path.join(workdir, "checkpoints", str(step)))
    if config:
        with open(os.path.join(workdir, "config.json"), "w") as f:
            json.dump({"num_train_steps": total}, f)


def test_status(tmp_path):
    w = str(tmp_path / "run")
    assert status.run_status(w, 400).state == status.NEW
    os.makedirs(w)
    assert status.run_status(w, 400).state == status.STARTED
    _fake_run(w, 400, {200: {"eval_loss": 1.0}}, [200])
    st = status.run_status(w)
    assert (st.state, st.checkpoint, st.logged, st.total) == (status.PARTIAL, 200, 200, 400)
    _fake_run(w, 400, {400: {"eval_loss": 1.0}}, [400])
    assert status.run_status(w).finished and not status.run_status(w, 800).finished
    with open(os.path.join(w, "metrics.jsonl"), "a") as f:
        f.write('{"step": 40')  # a torn last line
    assert status.run_status(w).finished
    os.rename(os.path.join(w, "checkpoints", "400"), os.path.join(w, "checkpoints", "400.orbax-checkpoint-tmp-1"))
    st = status.run_status(w)  # the final save never completed: resumes from the one before
    assert (st.state, st.checkpoint) == (status.PARTIAL, 200)
    assert status.main([w, "--steps=400", "--quiet"]) == 1


def test_report_from_metrics_files(tmp_path, capsys):
    root = tmp_path / "runs"
    d = root / "vaswani_table3"
    _fake_run(d / "base", 8000, {8000: {"eval_perplexity": 10.0, "eval_bleu": 35.04}}, [8000])
    _fake_run(d / "A_h1", 8000, {4000: {"eval_perplexity": 13.0, "eval_bleu": 30.0},
                                 8000: {"eval_perplexity": 11.5, "eval_bleu": 33.2}}, [8000])
    _fake_run(d / "A_h4", 8000, {4000: {"eval_perplexity": 12.0, "eval_bleu": 31.0}}, [4000])
    out = tmp_path / "out"
    assert report.main(["experiments/vaswani_table3.py", f"--root={root}", f"--out={out}"]) == 0
    md = (out / "vaswani_table3.md").read_text()
    assert capsys.readouterr().out.strip() == md.strip()
    rows = {line.split(" | ")[1].strip("`"): line for line in md.splitlines() if line.startswith("| ")}
    # | group | row | paper setting | ours | PPL paper | PPL ours | BLEU paper | BLEU ours | runs |
    cells = lambda name: [c.strip() for c in rows[name].strip("|").split("|")]  # noqa: E731
    assert cells("base")[4:] == ["4.92", "10.00", "25.8", "35.0", "done"]
    assert cells("A_h1")[4:] == ["5.29 (+0.37)", "11.50 (+1.50)", "24.9 (-0.9)", "33.2 (-1.8)", "done"]
    assert cells("A_h4")[4:] == ["5.00 (+0.08)", "12.00 (+2.00)*", "25.5 (-0.3)", "31.0 (-4.0)*", "4000/8000"]
    assert cells("A_h1")[2] == "h=1, d_k=d_v=512" and cells("A_h1")[3] == "h=1, d_k=128"
    assert cells("B_dk16")[4:] == ["5.16 (+0.24)", "-", "25.1 (-0.7)", "-", "not run"]
    pngs = sorted(p for p in os.listdir(out) if p.endswith(".png"))
    assert "vaswani_table3_curve_loss.png" in pngs and "vaswani_table3_curve_eval_perplexity.png" in pngs
    assert "vaswani_table3_bars_ppl_dev.png" in pngs and "vaswani_table3_bars_bleu_dev.png" in pngs
    for p in pngs:
        assert (out / p).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"![{p}]({p})" in md


def test_report_of_a_sweep_run_with_set(tmp_path, capsys):
    """A sweep run with --set=num_train_steps=500 is finished at 500 only if the report is told."""
    root = tmp_path / "runs"
    _fake_run(root / "vaswani_table3" / "base", 500, {500: {"eval_perplexity": 20.0, "eval_bleu": 9.5}}, [500])
    base_row = lambda md: next(l for l in md.splitlines() if l.startswith("|  | `base`"))  # noqa: E731
    args = ["experiments/vaswani_table3.py", f"--root={root}", "--no_plots"]
    assert report.main(args + [f"--out={tmp_path / 'a'}"]) == 0
    md = capsys.readouterr().out
    assert base_row(md).endswith("| 20.00* | 25.8 | 9.5* | 500/8000 |") and "--set" not in md
    assert report.main(args + [f"--out={tmp_path / 'b'}", "--set=num_train_steps=500",
                               "--set=config.data.batch_size=64"]) == 0
    md = capsys.readouterr().out
    assert base_row(md).endswith("| 20.00 | 25.8 | 9.5 | done |")
    assert "Every run with `--set=num_train_steps=500 --set=data.batch_size=64`" in md
    assert report.main(args + ["--set=oops"]) == 2


def test_report_best_of_a_learning_rate_grid(tmp_path):
    root = tmp_path / "runs"
    sweep = load_sweep("experiments/glue_finetune.py")
    total = {j.name: j.num_train_steps for j in sweep.expand(str(root))}  # configs/glue.py: 3 epochs
    for name, evals, last in [
        ("sst2_lr5e-05", {"eval_accuracy": 0.912}, None),
        ("sst2_lr4e-05", {"eval_accuracy": 0.931}, None),
        ("sst2_lr2e-05", {"eval_accuracy": 0.95}, 200),  # unfinished, still the best
        ("mrpc_lr3e-05", {"eval_accuracy": 0.80, "eval_f1": 0.861}, None),  # F1 is MRPC's metric
        ("cola_lr3e-05", {"eval_accuracy": 0.80}, None),  # no MCC logged
    ]:
        step = last or total[name]
        _fake_run(root / "glue_finetune" / name, total[name], {step: evals}, [step])
    md, paths = report.report(sweep, str(root), str(tmp_path / "out"), plots=False)
    rows = {line.split(" | ")[0].strip("| `"): [c.strip() for c in line.strip("|").split("|")]
            for line in md.splitlines() if line.startswith("| `")}
    assert rows["sst2"][3:] == ["93.5", "95.0* (`sst2_lr2e-05`)", "2/4 done"]
    assert rows["mrpc"][3:] == ["88.9", "86.1 (`mrpc_lr3e-05`)", "1/4 done"]  # F1, not accuracy
    assert rows["cola"][3:] == ["52.1", "-", "1/4 done"]
    assert paths == [str(tmp_path / "out" / "glue_finetune.md")]


# --- an interrupted sweep -----------------------------------------------------------------------

TINY_SWEEP = '''
from experiments.sweep import Run, Sweep

TINY = {"data.dataset": "synthetic", "num_train_steps": 4, "log_every_steps": 1, "eval_every_steps": 4,
        "checkpoint_every_steps": 2, "data.batch_size": 4, "data.max_len": 8, "model.vocab_size": 32,
        "model.d_model": 16, "model.d_ff": 32, "model.num_heads": 2, "model.num_encoder_layers": 1,
        "model.num_decoder_layers": 1}


def get_sweep(arg=None):
    return Sweep("tiny", "configs/transformer.py:tiny", [Run("a", {"seed": 0}), Run("b", {"seed": 1})],
                 overrides=TINY)
'''


@pytest.mark.slow
def test_interrupted_sweep_resumes_unfinished_and_skips_finished(tmp_path):
    sweep_file = tmp_path / "tiny_sweep.py"
    sweep_file.write_text(TINY_SWEEP)
    root = tmp_path / "root"
    env = dict(os.environ, JAX_PLATFORMS="cpu",
               JAX_COMPILATION_CACHE_DIR=os.environ.get("BVT_JAX_CACHE_DIR", os.path.join(REPO, ".jax_cache")),
               JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0.5")
    env.pop("JAX_NUM_CPU_DEVICES", None)

    def sweep(*extra):
        result = subprocess.run([sys.executable, "-m", "experiments.run", str(sweep_file), f"--root={root}", *extra],
                                cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
        return result.stdout

    def events():
        return [(e["run"], e["event"], e.get("step")) for e in map(json.loads, open(root / "tiny" / "sweep.jsonl"))]

    # Run a to the end; stop b after 2 of its 4 steps (as a preemption leaves it: checkpoint 2).
    sweep("--only=a")
    sweep("--only=b", "--set=num_train_steps=2")
    a, b = root / "tiny" / "a", root / "tiny" / "b"
    assert status.run_status(str(a), 4).finished
    st = status.run_status(str(b), 4)
    assert (st.state, st.checkpoint) == (status.PARTIAL, 2)
    a_metrics = (a / "metrics.jsonl").read_text()
    before = len(events())

    out = sweep()
    assert re.search(r"a\s+finished \(4 steps\)", out) and re.search(r"b\s+partial: resumes from step 2/4", out)
    assert events()[before:] == [("a", "skip", 4), ("b", "resume", 2), ("b", "end", 4)]
    assert (a / "metrics.jsonl").read_text() == a_metrics  # a did not run again
    assert "resumed from step 2" in (b / "launch.log").read_text()
    steps = [r["step"] for r in status.read_metrics(str(b)) if "loss" in r]
    assert steps == [1, 2, 3, 4]
    assert status.run_status(str(b), 4).finished

    out = sweep()
    assert "nothing to run" in out
    assert events()[-2:] == [("a", "skip", 4), ("b", "skip", 4)]
