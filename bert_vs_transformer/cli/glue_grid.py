"""The BERT fine-tuning grid on GLUE dev in one command, with a best-of-grid report.

    python -m bert_vs_transformer.cli.glue_grid --task=sst2 --init=minilm --root=runs/glue [--seeds=3]

runs configs/glue.py for every learning rate in --lrs (default the paper's 5e-5, 4e-5, 3e-5,
2e-5; BERT A.3, batch 32, 3 epochs) x every seed (--seeds=N: seeds 0..N-1, default 1), one
`python -m bert_vs_transformer.main` subprocess each, one after another, each in its own workdir

    ROOT/<task>/<init name>/lr<lr>-seed<seed>

`--vmap` trains each task and init's runs as members of one vmapped program instead
(training/member_group.py; each member equals its single run), one process in
ROOT/<task>/<init name>/vmap, the runs' files in its members/lr<lr>-seed<seed>.

A run whose metrics.jsonl already holds the evaluation at its last step is skipped; an
interrupted one resumes from its checkpoint (main.py's contract), so rerunning the command
finishes the grid. --task and --init take comma-separated lists (every combination is run).
`--arch=DIR` makes the scratch runs random inits of DIR's architecture and vocabulary (named
scratch-<DIR name>): "pretrained DIR vs random" at equal size is `--init=DIR,scratch --arch=DIR`.
Extra `--config.x=y` overrides for every run go after `--` (e.g. `-- --config.mesh.data=2`).

The report (printed, and written to ROOT/<task>/<init name>/results.{md,json}) has one row per run
(the dev metrics of its final evaluation: GLUE's metric(s) for the task, see evaluation/glue.py) and one
row per learning rate (mean ± sample std over its finished seeds), then the best of the grid:
the learning rate whose mean GLUE task score (the mean of the task's metrics, e.g. F1 and
accuracy for MRPC) is highest on dev, reported with the number of seeds behind it. As in the
paper the selection is on dev, so the number is optimistic for held-out data. --report_only
prints the report of what exists without running anything; --dry_run prints the commands.

With several inits (`--init=DIR,scratch --arch=DIR`) a last table puts them side by side over the
tasks (`compare`): each init's best of grid (task score, mean ± std, its lr and seeds), the first
init minus each other one, whether every seed of the first scored above every seed of the
other, and the one-sided permutation p-value of the difference over the seeds (exact; with 3 seeds
a side the smallest possible p is 1/20 = 0.05, with 4 it is 1/70; the tally counts p ≤ 0.05);
written to ROOT/comparison-<init>-vs-<init>.{md,json}. Paths do not depend on --epochs or
--batch_size, so one --report_only call reads tasks trained with different recipes.

With the sweep framework of experiments/ this maps onto one sweep: `grid_points(...)` gives the
(config spec, workdir) pairs to fan out (any launcher can run them, in parallel too), and
`report(...)` reads the workdirs back.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from bert_vs_transformer import config_args
from bert_vs_transformer.cli import ArgumentParser
from bert_vs_transformer.evaluation import metrics
from bert_vs_transformer.training.members import run_name

GRID_LRS = (5e-5, 4e-5, 3e-5, 2e-5)
CONFIG_FILE = os.path.join(config_args.REPO_ROOT, "configs", "glue.py")


@dataclass(frozen=True)
class Point:
    task: str
    init: str
    lr: float
    seed: int
    workdir: str
    config_spec: str  # configs/glue.py:task=...,init=...,lr=...,seed=...

    def command(self, extra: Sequence[str] = (), python: str = sys.executable) -> list[str]:
        return [python, "-m", "bert_vs_transformer.main", f"--config={self.config_spec}",
                f"--workdir={self.workdir}", *extra]


def init_name(init: str) -> str:
    """minilm / scratch, or the directory's base name (sanitised) for a DIR init."""
    if init in ("minilm", "scratch"):
        return init
    base = os.path.basename(os.path.normpath(init)) or "dir"
    return "init-" + re.sub(r"[^A-Za-z0-9_.-]+", "_", base)


def grid_points(task: str, init: str, root: str, lrs: Sequence[float] = GRID_LRS, seeds: Sequence[int] = (0,),
                epochs: float = 3, batch_size: int = 32, max_seq_len: int = 128, arch: str = "",
                vmap: bool = False) -> list[Point]:
    """Every (lr, seed) run of one task and init (`arch`: scratch's architecture DIR, configs/glue.py).
    vmap: the runs are members of one program (training/member_group.py) in <base>/vmap, each in its members/ dir."""
    init_arg = init if init in ("minilm", "scratch") else os.path.abspath(init)
    arch_arg = os.path.abspath(arch) if arch and init == "scratch" else ""
    for path in (init_arg, arch_arg):
        if "," in path or ":" in path:
            raise ValueError(f"directory {path!r} must not contain ',' or ':' (config argument syntax)")
    name = init_name(init) + ("-" + init_name(arch_arg)[len("init-"):] if arch_arg else "")
    base = os.path.join(os.path.abspath(root), task, name)
    points = []
    for lr in lrs:
        for seed in seeds:
            spec = (f"{CONFIG_FILE}:task={task},init={init_arg},lr={lr:g},seed={seed},epochs={epochs:g},"
                    f"batch_size={batch_size},max_seq_len={max_seq_len}" + (f",arch={arch_arg}" if arch_arg else ""))
            run_dir = os.path.join(base, VMAP_DIR, "members") if vmap else base
            points.append(Point(task, init, float(lr), int(seed), os.path.join(run_dir, run_name(lr, seed)), spec))
    return points


VMAP_DIR = "vmap"  # grid_points(vmap=True): the member program's workdir under <root>/<task>/<init name>


def vmap_workdir(points: Sequence[Point]) -> str:
    """The member program's workdir of grid_points(vmap=True): <root>/<task>/<init name>/vmap."""
    return os.path.dirname(os.path.dirname(points[0].workdir))


def vmap_command(points: Sequence[Point], extra: Sequence[str] = (), python: str = sys.executable) -> tuple[list[str], str]:
    """(the one command that trains every point as a member, its workdir)."""
    workdir = vmap_workdir(points)
    seeds = sorted({p.seed for p in points})
    lrs = sorted({p.lr for p in points}, reverse=True)
    if len(points) != len(seeds) * len(lrs):
        raise ValueError("a vmapped grid needs every seed at every learning rate")
    cmd = points[0].command([f"--config.member_seeds={','.join(map(str, seeds))}",
                             f"--config.member_lrs={','.join(f'{lr:g}' for lr in lrs)}", *extra], python)
    cmd[cmd.index(f"--workdir={points[0].workdir}")] = f"--workdir={workdir}"
    return cmd, workdir


def run_result(workdir: str) -> dict[str, Any] | None:
    """The final evaluation of a finished run ({'step', 'eval_...'}), else None."""
    cfg_path, path = os.path.join(workdir, "config.json"), os.path.join(workdir, "metrics.jsonl")
    if not (os.path.isfile(cfg_path) and os.path.isfile(path)):
        return None
    with open(cfg_path) as f:
        total = int(json.load(f)["num_train_steps"])
    final = None
    with open(path) as f:
        for line in f:
            if not line.strip():
                continue
            rec = json.loads(line)
            if rec.get("step") == total and any(k.startswith("eval_") for k in rec):
                final = rec
    return final


def run_error(workdir: str) -> str | None:
    """The last {"error": ...} record of a run's metrics.jsonl (a member that stopped on a non-finite
    loss, training/member_group.py), else None."""
    path = os.path.join(workdir, "metrics.jsonl")
    if not os.path.isfile(path):
        return None
    error = None
    with open(path) as f:
        for line in f:
            if '"error"' in line:
                error = json.loads(line).get("error", error)
    return error


def _status(workdir: str, otherwise: str) -> str:
    """"done" for a finished run, "failed: <error>" for a member that stopped, else `otherwise`."""
    if run_result(workdir) is not None:
        return "done"
    error = run_error(workdir)
    return f"failed: {error}" if error else otherwise


def _metric_names(task: str) -> tuple[str, ...]:
    return metrics.GLUE_METRICS[task]


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for one value, nan for none)."""
    vals = [float(v) for v in values]
    if not vals:
        return float("nan"), float("nan")
    mean = sum(vals) / len(vals)
    std = math.sqrt(sum((v - mean) ** 2 for v in vals) / (len(vals) - 1)) if len(vals) > 1 else 0.0
    return mean, std


def permutation_p(a: Sequence[float], b: Sequence[float], max_exact: int = 1_000_000,
                  draws: int = 200_000) -> float:
    """One-sided p-value of mean(a) - mean(b) under the null that the labels a/b are exchangeable.

    The share of the ways to split the pooled values into groups of len(a) and len(b) whose difference
    of means is at least the observed one, the observed split included (so p >= 1 / C(n, len(a))).
    Exact enumeration up to max_exact splits, a seeded Monte Carlo estimate (p = (1 + hits) / (1 + draws))
    beyond; nan when a group is empty. Distribution-free: no normality of seed scores is assumed.
    """
    a, b = [float(v) for v in a], [float(v) for v in b]
    if not a or not b:
        return float("nan")
    pooled, k = np.asarray(a + b), len(a)
    total, n = pooled.sum(), len(pooled)

    def diff(sum_a):
        return sum_a / k - (total - sum_a) / (n - k)

    observed = diff(sum(a))
    tol = 1e-12 * max(1.0, float(np.abs(pooled).max()))
    if math.comb(n, k) <= max_exact:
        sums = np.fromiter((pooled[list(c)].sum() for c in itertools.combinations(range(n), k)), float)
        return float(np.mean(diff(sums) >= observed - tol))
    rng = np.random.default_rng(0)
    sums = np.array([pooled[rng.permutation(n)[:k]].sum() for _ in range(draws)])
    return float((1 + np.sum(diff(sums) >= observed - tol)) / (1 + draws))


def _num(v) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        return float("nan")


def _score(rec: dict[str, Any], task: str) -> float:
    if "eval_glue_score" in rec:
        return _num(rec["eval_glue_score"])
    vals = [_num(rec.get(f"eval_{m}")) for m in _metric_names(task)]
    return sum(vals) / len(vals)


def report(points: Sequence[Point], status: dict[str, str] | None = None) -> tuple[str, dict[str, Any]]:
    """(markdown, json-able summary) of one task/init grid from its workdirs."""
    status = status or {}
    task, init = points[0].task, points[0].init
    names = _metric_names(task)
    runs, by_lr = [], {}
    for p in points:
        rec = run_result(p.workdir)
        row = {"lr": p.lr, "seed": p.seed, "workdir": p.workdir,
               "status": "done" if rec else status.get(p.workdir) or _status(p.workdir, "missing")}
        if rec:
            row.update({m: _num(rec.get(f"eval_{m}")) for m in names})
            row["glue_score"] = _score(rec, task)
            row["step"] = rec["step"]
            by_lr.setdefault(p.lr, []).append(row)
        runs.append(row)
    seeds = len(points) // max(len({p.lr for p in points}), 1)
    lines = [f"### {task} from {init}: GLUE dev, {seeds} seed(s) per learning rate", "",
             "| lr | seed | " + " | ".join(names) + " | status |", "|---|---|" + "---|" * len(names) + "---|"]
    for r in runs:
        vals = [f"{r[m]:.4f}" if m in r else "" for m in names]
        lines.append(f"| {r['lr']:g} | {r['seed']} | " + " | ".join(vals) + f" | {r['status']} |")
    lines += ["", "| lr | seeds done | " + " | ".join(f"{m} (mean ± std)" for m in names) + " | task score |",
              "|---|---|" + "---|" * len(names) + "---|"]
    per_lr = []
    for lr in sorted({p.lr for p in points}, reverse=True):
        done = by_lr.get(lr, [])
        agg = {"lr": lr, "seeds": len(done)}
        for m in names + ("glue_score",):
            agg[m], agg[m + "_std"] = mean_std([r[m] for r in done])
        per_lr.append(agg)
        cells = [f"{agg[m]:.4f} ± {agg[m + '_std']:.4f}" if done else "" for m in names]
        score = f"{agg['glue_score']:.4f}" if done else ""
        lines.append(f"| {lr:g} | {len(done)} | " + " | ".join(cells) + f" | {score} |")
    finished = [a for a in per_lr if a["seeds"] and not math.isnan(a["glue_score"])]
    best = max(finished, key=lambda a: a["glue_score"]) if finished else None
    lines.append("")
    if best:
        parts = ", ".join(f"{m} {best[m]:.4f} ± {best[m + '_std']:.4f}" for m in names)
        complete = sum(1 for r in runs if r["status"] == "done")
        lines.append(f"**Best of grid on dev ({task}, init {init}):** lr {best['lr']:g}: {parts} "
                     f"(mean ± std over {best['seeds']} seed(s); {complete}/{len(runs)} runs of the grid finished)")
    else:
        lines.append(f"**Best of grid on dev ({task}, init {init}):** no finished run yet")
    summary = {"task": task, "init": init, "name": grid_name(points), "metrics": list(names), "runs": runs,
               "per_lr": per_lr, "best": best}
    return "\n".join(lines), summary


def grid_name(points: Sequence[Point]) -> str:
    """The grid's folder name under ROOT/<task>/: minilm, scratch, init-<DIR>, scratch-<DIR>."""
    return os.path.basename(grid_dir(points))


def grid_dir(points: Sequence[Point]) -> str:
    """ROOT/<task>/<init name>, where results.{md,json} go."""
    parent = os.path.dirname(points[0].workdir)
    return os.path.dirname(os.path.dirname(parent)) if parent.endswith(os.path.join(VMAP_DIR, "members")) else parent


def _best_scores(summary: dict[str, Any]) -> list[float]:
    """The task scores of the best learning rate's finished seeds."""
    best = summary.get("best")
    if not best:
        return []
    return [r["glue_score"] for r in summary["runs"] if r["lr"] == best["lr"] and r["status"] == "done"]


def compare(summaries: dict[str, list[dict[str, Any]]]) -> tuple[str, dict[str, Any]]:
    """(markdown, json-able) of inits side by side: {task: [report summaries, one per init]} -> per task each
    init's best of grid (task score: the mean of the task's GLUE metrics), and the first init against each
    other one: the difference of those means, whether every seed of the first (at its best lr) scored
    above every seed of the other (at its), and the one-sided permutation p-value of the difference over
    those seeds (`permutation_p`). This is "init A beats init B" on dev, with its seed spread. With more
    than one lr the lrs were picked on the same dev scores, so p is optimistic there."""
    tasks = list(summaries)
    names = [s["name"] for s in summaries[tasks[0]]]
    ref = names[0]
    lines = ["### Inits side by side: best of grid on GLUE dev, task score x100 (mean ± std, lr, seeds)", "",
             "| task | " + " | ".join(names) + " | " + " | ".join(f"{ref} − {n} | every seed above | p" for n in names[1:]) + " |",
             "|---|" + "---:|" * len(names) + "---:|---|---:|" * (len(names) - 1)]
    out = {"reference": ref, "inits": names, "tasks": {}}
    tally = {n: {"ahead": [], "tied": [], "behind": [], "every_seed_above": [], "p_at_most_0.05": [], "missing": []}
             for n in names[1:]}
    for task in tasks:
        by_name = {s["name"]: s for s in summaries[task]}
        cells, row = [], {}
        for n in names:
            s = by_name[n]
            b = s.get("best")
            row[n] = None if not b else {"lr": b["lr"], "seeds": b["seeds"], "score": b["glue_score"],
                                          "std": b["glue_score_std"], "seed_scores": _best_scores(s)}
            cells.append("–" if not b else f"{100 * b['glue_score']:.2f} ± {100 * b['glue_score_std']:.2f} "
                                           f"({b['lr']:g}, {b['seeds']})")
        for n in names[1:]:
            a, o = row[ref], row[n]
            if not a or not o:
                tally[n]["missing"].append(task)
                cells += ["–", "–", "–"]
                continue
            diff = a["score"] - o["score"]
            above = min(a["seed_scores"]) > max(o["seed_scores"])
            p = permutation_p(a["seed_scores"], o["seed_scores"])
            row[f"{ref} - {n}"] = {"diff": diff, "every_seed_above": above, "p": p}
            tally[n]["ahead" if diff > 1e-9 else "behind" if diff < -1e-9 else "tied"].append(task)
            if above:
                tally[n]["every_seed_above"].append(task)
            if p <= 0.05 + 1e-12:
                tally[n]["p_at_most_0.05"].append(task)
            cells += [f"{100 * diff:+.2f}", "yes" if above else "no", f"{p:.3f}"]
        out["tasks"][task] = row
        lines.append(f"| {task} | " + " | ".join(cells) + " |")
    lines.append("")
    for n, t in tally.items():
        done = len(tasks) - len(t["missing"])
        lines.append(f"**{ref} vs {n}:** ahead on {len(t['ahead'])}/{done} task(s)"
                     + (f" ({', '.join(t['ahead'])})" if t["ahead"] else "")
                     + f"; every seed above on {len(t['every_seed_above'])}"
                     + (f" ({', '.join(t['every_seed_above'])})" if t["every_seed_above"] else "")
                     + f"; p ≤ 0.05 on {len(t['p_at_most_0.05'])}"
                     + (f" ({', '.join(t['p_at_most_0.05'])})" if t["p_at_most_0.05"] else "")
                     + (f"; tied on {', '.join(t['tied'])}" if t["tied"] else "")
                     + (f"; behind on {', '.join(t['behind'])}" if t["behind"] else "")
                     + (f"; not comparable yet (no finished run): {', '.join(t['missing'])}" if t["missing"] else "") + ".")
    out["tally"] = tally
    return "\n".join(lines), out


def run_grid(points: Sequence[Point], extra: Sequence[str] = (), dry_run: bool = False,
             log=print) -> dict[str, str]:
    """Runs the unfinished points one after another; -> {workdir: status}."""
    status = {}
    for i, p in enumerate(points):
        tag = f"[{i + 1}/{len(points)}] {p.task} {init_name(p.init)} lr={p.lr:g} seed={p.seed}"
        if run_result(p.workdir) is not None:
            log(f"{tag}: finished, skipped ({p.workdir})")
            status[p.workdir] = "done"
            continue
        cmd = p.command(extra)
        if dry_run:
            log(" ".join(cmd))
            status[p.workdir] = "dry run"
            continue
        os.makedirs(p.workdir, exist_ok=True)
        log(f"{tag}: running -> {p.workdir} (log: {p.workdir}/train.log)")
        t0 = time.time()
        with open(os.path.join(p.workdir, "train.log"), "a") as out:
            rc = subprocess.call(cmd, cwd=config_args.REPO_ROOT, stdout=out, stderr=subprocess.STDOUT)
        ok = rc == 0 and run_result(p.workdir) is not None
        status[p.workdir] = "done" if ok else f"failed (exit {rc})"
        log(f"{tag}: {status[p.workdir]} in {time.time() - t0:.0f} s")
    return status


def run_vmapped(points: Sequence[Point], extra: Sequence[str] = (), dry_run: bool = False,
                log=print) -> dict[str, str]:
    """Runs the grid as one member program (training/member_group.py) unless every point is finished; -> {workdir: status}."""
    tag = f"{points[0].task} {init_name(points[0].init)}: {len(points)} runs vmapped"
    before = {p.workdir: _status(p.workdir, "") for p in points}
    if all(before.values()):  # a member that stopped on a non-finite loss would stop again
        log(f"{tag}: finished, skipped")
        return before
    cmd, workdir = vmap_command(points, extra)
    if dry_run:
        log(" ".join(cmd))
        return {p.workdir: "dry run" for p in points}
    os.makedirs(workdir, exist_ok=True)
    log(f"{tag}: running -> {workdir} (log: {workdir}/train.log)")
    t0 = time.time()
    with open(os.path.join(workdir, "train.log"), "a") as out:
        rc = subprocess.call(cmd, cwd=config_args.REPO_ROOT, stdout=out, stderr=subprocess.STDOUT)
    status = {p.workdir: _status(p.workdir, f"failed (exit {rc})") for p in points}
    if rc != 0:  # a non-zero exit fails every member, whatever its files say
        status = {w: s if s.startswith("failed") else f"failed (exit {rc})" for w, s in status.items()}
    log(f"{tag}: exit {rc} in {time.time() - t0:.0f} s")
    return status


def numbers(s: str) -> list[float]:
    """Comma-separated numbers (argparse's type for --lrs)."""
    return [float(x) for x in s.split(",") if x.strip()]


def main(argv=None) -> int:
    parser = ArgumentParser(
        description="BERT's GLUE fine-tuning grid (lr x seeds) with a best-of-grid report.")
    parser.add_argument("--task", default="sst2", help="comma-separated: sst2,cola,stsb,mrpc,rte")
    parser.add_argument("--init", default="minilm", help="comma-separated: minilm, scratch, or DIRs")
    parser.add_argument("--root", required=True, help="runs go to ROOT/<task>/<init name>/lr<lr>-seed<seed>")
    parser.add_argument("--lrs", type=numbers, default=list(GRID_LRS), help="comma-separated learning rates")
    parser.add_argument("--seeds", type=int, default=1, help="seeds 0..N-1 per learning rate")
    parser.add_argument("--epochs", type=float, default=3)
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--max_seq_len", type=int, default=128)
    parser.add_argument("--arch", default="", help="DIR: scratch runs take DIR's architecture and vocabulary "
                        "(runs named scratch-<DIR name>); default minilm's")
    parser.add_argument("--vmap", action="store_true", help="train each task and init's lr x seed runs as "
                        "members of one vmapped program (training/member_group.py): one process, one compilation")
    parser.add_argument("--dry_run", action="store_true", help="print the commands, run nothing")
    parser.add_argument("--report_only", action="store_true", help="only report what the workdirs hold")
    args, extra = parser.parse_known_args(argv)
    extra = [a for a in extra if a != "--"]
    bad = [a for a in extra if not a.startswith("--config.")]
    if bad:
        parser.error(f"unknown arguments {bad} (per-run overrides must be --config.x=y)")
    tasks = [t.strip().lower() for t in args.task.split(",") if t.strip()]
    unknown = [t for t in tasks if t not in metrics.GLUE_METRICS]
    if unknown:
        parser.error(f"unknown task(s) {unknown}; choose from {sorted(metrics.GLUE_METRICS)}")
    inits = [i.strip() for i in args.init.split(",") if i.strip()]
    missing = [d for d in inits + [args.arch] if d and d not in ("minilm", "scratch") and not os.path.isdir(d)]
    if missing and not args.report_only:
        parser.error(f"--init / --arch folder(s) {missing} do not exist; pass a run's workdir or a Hugging Face folder")
    failed = False
    summaries: dict[str, list[dict[str, Any]]] = {}
    for task in tasks:
        for init in inits:
            points = grid_points(task, init, args.root, args.lrs, range(args.seeds), args.epochs,
                                 args.batch_size, args.max_seq_len, args.arch, args.vmap)
            run = run_vmapped if args.vmap else run_grid
            status = {} if args.report_only else run(points, extra, args.dry_run)
            failed |= any(s.startswith("failed") for s in status.values())
            md, summary = report(points, status)
            summaries.setdefault(task, []).append(summary)
            print(md + "\n", flush=True)
            if not args.dry_run:
                base = grid_dir(points)
                os.makedirs(base, exist_ok=True)
                with open(os.path.join(base, "results.md"), "w") as f:
                    f.write(md + "\n")
                with open(os.path.join(base, "results.json"), "w") as f:
                    json.dump(summary, f, indent=2, default=str)
    if len(inits) > 1 and not args.dry_run:
        md, table = compare(summaries)
        print(md + "\n", flush=True)
        stem = os.path.join(os.path.abspath(args.root), "comparison-" + "-vs-".join(table["inits"]))
        with open(stem + ".md", "w") as f:
            f.write(md + "\n")
        with open(stem + ".json", "w") as f:
            json.dump(dict(table, tasks_run=tasks), f, indent=2, default=str)
        print(f"(written to {stem}.md / .json)", flush=True)
    return 1 if failed else 0


def run():
    """Console-script entry point (bvt-glue-grid)."""
    sys.exit(main())


if __name__ == "__main__":
    run()
