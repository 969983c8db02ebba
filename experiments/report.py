"""Collects a sweep's metrics.jsonl files into a markdown table (the paper's number beside ours)
and PNG plots (learning curves; one bar chart per metric, a bar per row).

    python -m experiments.report experiments/<name>.py[:args] [--root=DIR] [--out=DIR] [--no_plots]
        [--set=FIELD=VALUE ...]  # the same --set as the sweep was run with

Writes <out>/<sweep>.md and <out>/<sweep>_*.png (out: <root>/<sweep>/report) and prints the
markdown. A cell is the run's last logged value of the metric (its final evaluation); a row fed by
several runs (a learning-rate grid) shows the best of them and names it. `*` marks a value from an
unfinished run, `-` a run without a value yet.

The committed results (experiments/results/<experiment>/, see experiments/result_tables.py):

    python -m experiments.report --all [--only=a,b] [--plots]   # rewrite every tables.md from its folder's files
    python -m experiments.report --all --check                   # exit 1 if a committed tables.md differs
    python -m experiments.report --unpack=<experiment> --out=DIR # its runs as DIR/<run>/{config.json,metrics.jsonl}
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import re
import sys
from typing import Any, Mapping, Sequence

from experiments import status as status_lib
from experiments.sweep import Job, Metric, Row, Sweep, default_root, format_value, load_sweep, parse_set


@dataclasses.dataclass(frozen=True)
class RunResult:
    job: Job
    status: status_lib.Status
    records: list[dict]

    def final(self, keys: Sequence[str]) -> tuple[str, int, float] | None:
        """(key, step, value) of the last record holding any of `keys`, in the keys' order."""
        for key in keys:
            for record in reversed(self.records):
                value = record.get(key)
                if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
                    return key, int(record.get("step", 0)), float(value)
        return None

    def curve(self, key: str) -> tuple[list[int], list[float]]:
        points = [(int(r["step"]), float(r[key])) for r in self.records
                  if "step" in r and isinstance(r.get(key), (int, float)) and not isinstance(r.get(key), bool)]
        return [s for s, _ in points], [v for _, v in points]


@dataclasses.dataclass(frozen=True)
class Cell:
    value: float | None  # scaled
    run: str | None  # the run it came from
    key: str | None
    finished: bool
    candidates: int  # runs of the row that matched the metric's filter


def collect(jobs: Sequence[Job]) -> dict[str, RunResult]:
    return {j.name: RunResult(j, status_lib.run_status(j.workdir, j.num_train_steps),
                              status_lib.read_metrics(j.workdir)) for j in jobs}


def _matches(tags: Mapping[str, Any], where: Mapping[str, Any]) -> bool:
    return all(tags.get(k) == v for k, v in where.items())


def cell(metric: Metric, row: Row, results: Mapping[str, RunResult]) -> Cell:
    runs = [r for r in results.values() if r.job.row == row.name and _matches(r.job.tags, metric.where)]
    found = []
    for r in runs:
        hit = r.final(metric.keys_for(row.name))
        if hit is not None:
            found.append((hit[2] * metric.scale, r, hit[0]))
    if not found:
        return Cell(None, None, None, False, len(runs))
    pick = max if metric.higher_is_better else min
    value, best, key = pick(found, key=lambda t: t[0])
    return Cell(value, best.job.name, key, best.status.finished, len(runs))


def _fmt(value: float | None, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def _delta(value: float | None, base: float | None, fmt: str) -> str:
    if value is None or base is None:
        return ""
    return " (" + format(value - base, "+" + fmt) + ")"


def _ours_text(row: Row, results: Mapping[str, RunResult]) -> str:
    if row.ours:
        return row.ours
    jobs = [r.job for r in results.values() if r.job.row == row.name]
    if len(jobs) == 1:
        own = jobs[0].own_overrides
        return ", ".join(f"{k}={format_value(v)}" for k, v in own) if own else "(config as is)"
    return f"{len(jobs)} runs"


def _progress(row: Row, results: Mapping[str, RunResult]) -> str:
    rs = [r for r in results.values() if r.job.row == row.name]
    if len(rs) == 1:
        st = rs[0].status
        if st.finished:
            return "done"
        if st.state == status_lib.NEW:
            return "not run"
        step = st.logged if st.logged is not None else 0
        return f"{step}/{st.total if st.total is not None else '?'}"
    done = sum(r.status.finished for r in rs)
    return f"{done}/{len(rs)} done"


def _escape(text: str) -> str:
    return str(text).replace("|", "\\|")


def markdown_table(sweep: Sweep, results: Mapping[str, RunResult]) -> str:
    rows = sweep.table_rows()
    cells = {(m.title, r.name): cell(m, r, results) for m in sweep.metrics for r in rows}
    base_row = next((r for r in rows if r.name == sweep.baseline), None)
    grouped = any(r.group for r in rows)
    header = (["group"] if grouped else []) + ["row", "paper setting", "ours"]
    for m in sweep.metrics:
        if m.paper:
            header.append(f"{m.title}: paper")
        header.append(f"{m.title}: ours")
    header.append("runs")
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for row in rows:
        out = ([row.group] if grouped else []) + [f"`{row.name}`", row.setting, _ours_text(row, results)]
        for m in sweep.metrics:
            if m.paper:
                paper = row.paper.get(m.paper)
                base = base_row.paper.get(m.paper) if base_row is not None and row is not base_row else None
                out.append(_fmt(paper, m.fmt) + _delta(paper, base, m.fmt))
            c = cells[(m.title, row.name)]
            base_c = cells[(m.title, base_row.name)] if base_row is not None and row is not base_row else None
            text = _fmt(c.value, m.fmt) + _delta(c.value, base_c.value if base_c else None, m.fmt)
            if c.value is not None and not c.finished:
                text += "*"
            if c.value is not None and c.candidates > 1:
                text += f" (`{c.run}`)"
            out.append(text)
        out.append(_progress(row, results))
        lines.append("| " + " | ".join(_escape(x) for x in out) + " |")
    return "\n".join(lines)


def render(sweep: Sweep, results: Mapping[str, RunResult], plots: Sequence[str] = (),
           extra: Mapping[str, Any] | None = None) -> str:
    parts = [f"# {sweep.title or sweep.name}", ""]
    if sweep.notes:
        parts += [sweep.notes.strip(), ""]
    if extra:
        sets = " ".join(f"--set={k}={format_value(v)}" for k, v in extra.items())
        parts += [f"Every run with `{sets}` (after its own overrides).", ""]
    parts += [markdown_table(sweep, results), ""]
    legend = ["`*`: value from an unfinished run", "`-`: no value yet"]
    if sweep.baseline:
        legend.insert(0, f"(±x): difference to the `{sweep.baseline}` row")
    parts += ["; ".join(legend) + ".", ""]
    for path in plots:
        parts += [f"![{os.path.basename(path)}]({os.path.basename(path)})", ""]
    return "\n".join(parts)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", text).strip("_").lower()


def plot(sweep: Sweep, results: Mapping[str, RunResult], out_dir: str) -> list[str]:
    """Learning curves (one PNG per curve key) and bars per metric (paper | ours); returns the paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    os.makedirs(out_dir, exist_ok=True)
    paths = []
    runs = [r for r in results.values() if _matches(r.job.tags, sweep.curves_where)]
    styles = _styles(sweep, [r.job for r in runs])
    for key, title in sweep.curves:
        drawn = [(r.job.name, *r.curve(key)) for r in runs]
        drawn = [d for d in drawn if d[1]]
        if not drawn:
            continue
        fig, ax = plt.subplots(figsize=(8, 5))
        for name, steps, values in drawn:
            color, linestyle = styles[name]
            ax.plot(steps, values, label=name, color=color, linestyle=linestyle,
                    marker="." if len(steps) < 30 else None)
        ax.set_xlabel("step")
        ax.set_ylabel(key)
        ax.set_title(f"{sweep.name}: {title}")
        if len(drawn) <= 24:
            ax.legend(fontsize=7, ncol=2 if len(drawn) > 12 else 1)
        ax.grid(alpha=0.3)
        path = os.path.join(out_dir, f"{sweep.name}_curve_{_slug(key)}.png")
        fig.tight_layout()
        fig.savefig(path, dpi=100)
        plt.close(fig)
        paths.append(path)
    rows = sweep.table_rows()
    for m in sweep.metrics:
        ours = [cell(m, r, results).value for r in rows]
        paper = [r.paper.get(m.paper) if m.paper else None for r in rows]
        if all(v is None for v in ours + paper):
            continue
        panels = [("paper", paper)] if any(v is not None for v in paper) else []
        panels.append(("ours", ours))
        fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 0.35 * len(rows) + 1.5), squeeze=False)
        labels = [f"{r.group} {r.name}".strip() for r in rows]
        for ax, (who, values) in zip(axes[0], panels):
            ys = list(range(len(rows)))
            ax.barh(ys, [v if v is not None else 0.0 for v in values],
                    color=["C0" if r.name != sweep.baseline else "C1" for r in rows])
            ax.set_yticks(ys)
            ax.set_yticklabels(labels, fontsize=8)
            ax.invert_yaxis()
            ax.set_title(f"{m.title}: {who}")
            finite = [v for v in values if v is not None]
            if finite:
                lo, hi = min(finite), max(finite)
                pad = (hi - lo) * 0.15 or abs(hi) * 0.05 or 1.0
                ax.set_xlim(max(0.0, lo - pad) if lo >= 0 else lo - pad, hi + pad)
            base = next((v for r, v in zip(rows, values) if r.name == sweep.baseline), None)
            if base is not None:
                ax.axvline(base, color="C1", linestyle="--", linewidth=1)
            ax.grid(axis="x", alpha=0.3)
        fig.tight_layout()
        path = os.path.join(out_dir, f"{sweep.name}_bars_{_slug(m.title)}.png")
        fig.savefig(path, dpi=100)
        plt.close(fig)
        paths.append(path)
    return paths


def _styles(sweep: Sweep, jobs: Sequence[Job]) -> dict[str, tuple[str, str]]:
    """(color, linestyle) per run: one color per row group (an ablation), line styles within it;
    without groups, one color per run."""
    group_of = {r.name: r.group for r in sweep.table_rows()}
    groups = list(dict.fromkeys(group_of.get(j.row, "") for j in jobs))
    out, seen = {}, {}
    for i, job in enumerate(jobs):
        if len(groups) > 1:
            g = group_of.get(job.row, "")
            k = seen[g] = seen.get(g, -1) + 1
            out[job.name] = (f"C{groups.index(g) % 10}", ("-", "--", ":", "-.")[k % 4])
        else:
            out[job.name] = (f"C{i % 10}", ("-", "--", ":", "-.")[(i // 10) % 4])
    return out


def report(sweep: Sweep, root: str, out_dir: str | None = None, plots: bool = True,
           extra: Mapping[str, Any] | None = None) -> tuple[str, list[str]]:
    """Writes the markdown (and plots); returns (markdown, paths written). `extra`: the `--set`
    overrides the sweep was run with (they decide when a run is finished, and are listed)."""
    jobs = sweep.expand(root, extra)
    results = collect(jobs)
    out_dir = out_dir or os.path.join(root, sweep.name, "report")
    os.makedirs(out_dir, exist_ok=True)
    pngs = plot(sweep, results, out_dir) if plots else []
    text = render(sweep, results, pngs, extra)
    md = os.path.join(out_dir, f"{sweep.name}.md")
    with open(md, "w") as f:
        f.write(text)
    return text, [md] + pngs


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m experiments.report", description=__doc__.split("\n")[0])
    parser.add_argument("sweep", nargs="?", default="", help="experiments/<name>.py[:args]")
    parser.add_argument("--all", action="store_true",
                        help="render every experiments/results/<experiment>/tables.md from its folder's files")
    parser.add_argument("--check", action="store_true", help="with --all: compare instead of writing (exit 1 if any differs)")
    parser.add_argument("--only", default="", help="with --all: comma-separated experiment folders")
    parser.add_argument("--plots", action="store_true", help="with --all: also the PNG curves (matplotlib)")
    parser.add_argument("--unpack", default="", metavar="EXPERIMENT",
                        help="write that results folder's runs as --out/<run>/{config.json,metrics.jsonl}")
    parser.add_argument("--root", default=None, help="workdir root (default $BVT_SWEEP_ROOT or workdirs/)")
    parser.add_argument("--out", default=None, help="output folder (default <root>/<sweep>/report)")
    parser.add_argument("--no_plots", action="store_true", help="markdown only (no matplotlib needed)")
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                        help="the --set overrides the sweep was run with (repeatable), as experiments.run")
    args = parser.parse_args(argv)
    if args.all or args.unpack:
        from experiments import result_tables

        only = [x for x in args.only.split(",") if x]
        return result_tables.run(result_tables.RESULTS, only, args.check, args.plots, args.unpack, args.out or "")
    if not args.sweep:
        parser.error("give a sweep (experiments/<name>.py), or --all, or --unpack")
    try:
        sweep = load_sweep(args.sweep)
        extra = dict(parse_set(s) for s in args.set)
    except (ValueError, FileNotFoundError, AttributeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if not args.no_plots:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            print("error: the plots need matplotlib (pip install matplotlib); or pass --no_plots", file=sys.stderr)
            return 2
    text, paths = report(sweep, os.path.abspath(args.root or default_root()), args.out, not args.no_plots, extra)
    print(text)
    print("wrote: " + ", ".join(paths), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
