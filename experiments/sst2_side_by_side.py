r"""Our MiniLM fine-tuning on SST-2 beside an independent PyTorch/transformers trainer, N seeds each.

    BVT_DATA_DIR=../shared/data python -m experiments.sst2_side_by_side --root=/tmp/bvt/side_by_side \
        [--seeds=3 --lr=2e-5 --epochs=3 --batch_size=32 --max_seq_len=128 --only=ours|torch]

For every seed: ours is `python -m bert_vs_transformer.main --config=configs/glue.py:task=sst2,
init=minilm,lr=..,seed=..,epochs=..` in ROOT/ours/seed<k>; theirs is `python -m experiments.glue_torch`
with the same hyperparameters, writing ROOT/torch/seed<k>.json (see that file for its recipe). Both
report dev accuracy on all 872 dev sentences after the last step. Finished runs are skipped, so
rerunning the command completes a partial comparison. The report (printed, and ROOT/results.md /
results.json) gives every run, each trainer's mean ± sample std, and ours minus theirs, against the
target |difference of the means| <= 0.7 points at the paper's recipe (3 epochs, 3 seeds).
`--epochs` below 3 gives a cheaper comparison (e.g. on a CPU) that the report labels as such.
`--ours_workdirs=D0,D1,D2` takes our side from finished runs elsewhere (e.g. the committed runs of
experiments/results/glue_minilm, unpacked by `python -m experiments.report --unpack=glue_minilm --out=DIR`
into DIR/sst2/minilm/lr5e-05-seed<k>), after checking each one's config.json is this
recipe with seed k; a torch JSON whose recipe differs from the arguments is refused likewise.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time

from bert_vs_transformer import config_args
from bert_vs_transformer.cli import glue_grid
from experiments import glue_torch

TARGET_POINTS = 0.7  # the target: our mean within 0.7 accuracy points of theirs


def ours_command(seed: int, args, workdir: str) -> list[str]:
    spec = (f"{os.path.join(config_args.REPO_ROOT, 'configs', 'glue.py')}:task=sst2,init=minilm,lr={args.lr:g},"
            f"seed={seed},epochs={args.epochs:g},batch_size={args.batch_size},max_seq_len={args.max_seq_len}")
    cmd = [sys.executable, "-m", "bert_vs_transformer.main", f"--config={spec}", f"--workdir={workdir}"]
    if args.max_eval_examples:
        cmd.append(f"--config.evals.glue.max_examples={args.max_eval_examples}")
    return cmd


def torch_command(seed: int, args, output: str) -> list[str]:
    cmd = [sys.executable, "-m", "experiments.glue_torch", f"--seed={seed}", f"--lr={args.lr:g}",
           f"--epochs={args.epochs:g}", f"--batch_size={args.batch_size}", f"--max_seq_len={args.max_seq_len}",
           f"--output={output}"]
    if args.max_eval_examples:
        cmd.append(f"--max_eval_examples={args.max_eval_examples}")
    return cmd


def _check(where: str, got: dict, want: dict) -> None:
    bad = {k: (got.get(k), v) for k, v in want.items()
           if not (got.get(k) == v or (isinstance(v, float) and isinstance(got.get(k), (int, float))
                                       and math.isclose(got[k], v, rel_tol=1e-9)))}
    if bad:
        raise SystemExit(f"{where} is not this comparison's recipe: " +
                         ", ".join(f"{k} = {g!r}, expected {w!r}" for k, (g, w) in bad.items()))


def ours_result(workdir: str, seed: int | None = None, args=None) -> float | None:
    rec = glue_grid.run_result(workdir)
    if rec is None:
        return None
    if args is not None:  # a run made elsewhere: its config must be this recipe
        with open(os.path.join(workdir, "config.json")) as f:
            c = json.load(f)
        _check(workdir, {"task": c.get("glue_task"), "init": c.get("init"), "seed": c.get("seed"),
                         "lr": c["optimizer"]["learning_rate"], "epochs": float(c.get("epochs", "nan")),
                         "batch_size": c["data"]["batch_size"], "max_seq_len": c["data"]["max_seq_len"]},
               {"task": "sst2", "init": "minilm", "seed": seed, "lr": args.lr, "epochs": float(args.epochs),
                "batch_size": args.batch_size, "max_seq_len": args.max_seq_len})
    return float(rec["eval_accuracy"])


def torch_result(path: str, seed: int | None = None, args=None) -> float | None:
    if not os.path.isfile(path):
        return None
    with open(path) as f:
        r = json.load(f)
    if args is not None:
        _check(path, r, {"seed": seed, "lr": args.lr, "epochs": float(args.epochs), "batch_size": args.batch_size,
                         "max_seq_len": args.max_seq_len})
    return float(r["eval_accuracy"])


def _run(cmd: list[str], log_path: str) -> tuple[int, float]:
    os.makedirs(os.path.dirname(log_path), exist_ok=True)
    start = time.time()
    with open(log_path, "a") as out:
        rc = subprocess.call(cmd, cwd=config_args.REPO_ROOT, stdout=out, stderr=subprocess.STDOUT)
    return rc, time.time() - start


def report(results: dict[str, dict[int, float | None]], args) -> tuple[str, dict]:
    """Markdown + JSON summary; accuracies in points (0-100)."""
    seeds = list(range(args.seeds))
    lines = [f"SST-2 dev accuracy (%), MiniLM, lr {args.lr:g}, batch {args.batch_size}, {args.epochs:g} epochs, "
             f"max_seq_len {args.max_seq_len}" + ("" if args.epochs >= 3 else " (reduced budget: the paper's recipe is 3)"),
             "", "| trainer | " + " | ".join(f"seed {s}" for s in seeds) + " | mean ± std |",
             "|---|" + "---:|" * (len(seeds) + 1)]
    summary = {"lr": args.lr, "epochs": args.epochs, "batch_size": args.batch_size, "max_seq_len": args.max_seq_len,
               "seeds": seeds, "runs": {}, "mean": {}, "std": {}}
    for name, label in (("ours", "ours (JAX/Flax)"), ("torch", "transformers (PyTorch)")):
        vals = [100 * results[name][s] for s in seeds if results[name].get(s) is not None]
        mean, std = glue_grid.mean_std(vals)
        cells = [f"{100 * results[name][s]:.2f}" if results[name].get(s) is not None else "-" for s in seeds]
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {mean:.2f} ± {std:.2f} ({len(vals)} seeds) |")
        summary["runs"][name] = {str(s): results[name].get(s) for s in seeds}
        summary["mean"][name], summary["std"][name] = mean, std
    diff = summary["mean"]["ours"] - summary["mean"]["torch"]
    summary["difference_points"] = diff
    summary["within_target"] = bool(abs(diff) <= TARGET_POINTS) if not math.isnan(diff) else None
    lines += ["", f"ours − theirs: {diff:+.2f} points (target |difference| ≤ {TARGET_POINTS})"]
    return "\n".join(lines), summary


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="SST-2 from MiniLM: ours vs transformers/PyTorch, N seeds each.")
    parser.add_argument("--root", required=True)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--lr", type=float, default=2e-5)
    parser.add_argument("--epochs", type=float, default=3.0)
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--max_seq_len", type=int, default=128)
    parser.add_argument("--max_eval_examples", type=int, default=0, help="0 = all 872 (smoke tests only)")
    parser.add_argument("--only", choices=["", "ours", "torch"], default="", help="run one trainer only")
    parser.add_argument("--report_only", action="store_true")
    parser.add_argument("--ours_workdirs", default="", help="comma-separated finished workdirs of ours, seed 0 first "
                        "(instead of running ROOT/ours/seed<k>)")
    args = parser.parse_args(argv)
    root = os.path.abspath(args.root)
    ours_dirs = [os.path.abspath(d) for d in args.ours_workdirs.split(",") if d]
    if ours_dirs and len(ours_dirs) != args.seeds:
        parser.error(f"--ours_workdirs lists {len(ours_dirs)} workdirs for --seeds={args.seeds}")
    results: dict[str, dict[int, float | None]] = {"ours": {}, "torch": {}}
    failed = False
    for seed in range(args.seeds):
        wd = ours_dirs[seed] if ours_dirs else os.path.join(root, "ours", f"seed{seed}")
        out = os.path.join(root, "torch", f"seed{seed}.json")
        for name, get, cmd, log in (("ours", lambda: ours_result(wd, seed, args), ours_command(seed, args, wd),
                                     wd + ".log"),
                                    ("torch", lambda: torch_result(out, seed, args), torch_command(seed, args, out),
                                     out[:-5] + ".log")):
            if name == "ours" and ours_dirs:
                if get() is None:
                    raise SystemExit(f"--ours_workdirs: {wd} holds no finished run")
            elif get() is None and not args.report_only and args.only in ("", name):
                print(f"[{name} seed {seed}] running (log: {log})", flush=True)
                rc, secs = _run(cmd, log)
                resumable = name == "torch" and rc == glue_torch.STOPPED
                print(f"[{name} seed {seed}] exit {rc} in {secs:.0f} s"
                      + (" (stopped early, state saved: rerun to resume)" if resumable else ""), flush=True)
                failed |= rc != 0
            results[name][seed] = get()
    md, summary = report(results, args)
    os.makedirs(root, exist_ok=True)
    with open(os.path.join(root, "results.md"), "w") as f:
        f.write(md + "\n")
    with open(os.path.join(root, "results.json"), "w") as f:
        json.dump(summary, f, indent=1)
    print(md, flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
