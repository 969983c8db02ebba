r"""Where a step's time goes: the top kernels (or ops) of a JAX profiler trace, per step.

    python -m bert_vs_transformer.training.profile_summary --trace=DIR [--steps=N --top=20 --process=/device:]

DIR is what `jax.profiler.trace(DIR)` wrote (`benchmark --profile_dir=DIR` writes one); the newest
`*.trace.json.gz` under it is read (the trace-viewer JSON the profiler exports beside its
`xplane.pb`; `perfetto_trace.json.gz` also works). Events are complete events ("ph": "X", times in
microseconds), grouped by timeline: a (process, thread) pair such as ("/device:GPU:0", "Stream #7")
or ("/device:GPU:0", "XLA Ops"). For each timeline of the processes whose name contains --process
(default "/device:", the accelerator; every process when none matches, e.g. on a CPU) the table
gives its busy time (the union of its events' intervals) per step and its top events by total
duration: ms per step, calls per step, and share of the timeline's busy time, first by kind (the
name without XLA's instance number, so that `fusion.3` and `fusion.17` add up), then by name.
Host timelines nest events, so there their shares can add up past 100%; device kernels do not nest.
--steps is how many steps the trace holds, so that the numbers are per step.

A kernel that runs long with little memory traffic (nvidia-smi: SM busy, memory bandwidth low)
shows here by name; GEMMs (cuBLAS `*gemm*`, Triton `triton_gemm`/`*_gemm_fusion`), fusions
(`loop_*_fusion`, `input_*_fusion`) and random-number fusions (threefry: xor/shift chains) can
then be told apart.
"""

from __future__ import annotations

import argparse
import glob
import gzip
import json
import os
import re
from collections import defaultdict
from typing import Any, Iterable

from absl import logging

TRACE_PATTERNS = ("*.trace.json.gz", "perfetto_trace.json.gz", "*.trace.json")
_NUMBERED = re.compile(r"([._]\d+)+$")


def kind(name: str) -> str:
    """An event's name without XLA's instance number: fusion.12 / loop_add_fusion_3 -> one kind."""
    return _NUMBERED.sub("", name) or name


def find_trace(path: str) -> str:
    """The trace file: `path` itself, or the newest trace-viewer JSON under the directory `path`."""
    if os.path.isfile(path):
        return path
    if not os.path.isdir(path):
        raise FileNotFoundError(f"{path!r} is neither a trace file nor a directory")
    found = [f for pat in TRACE_PATTERNS for f in glob.glob(os.path.join(path, "**", pat), recursive=True)]
    if not found:
        pbs = glob.glob(os.path.join(path, "**", "*.xplane.pb"), recursive=True)
        hint = f" (only {len(pbs)} xplane.pb: open it with TensorBoard's profile plugin / xprof)" if pbs else ""
        raise FileNotFoundError(f"no {' or '.join(TRACE_PATTERNS)} under {path!r}{hint}")
    return max(found, key=os.path.getmtime)


def load(path: str) -> dict[str, Any]:
    """The trace JSON ({"traceEvents": [...]}, or a bare event list) of a file or directory."""
    path = find_trace(path)
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rt") as f:
        data = json.load(f)
    return {"traceEvents": data} if isinstance(data, list) else data


def busy_us(intervals: Iterable[tuple[float, float]]) -> float:
    """Length of the union of [start, end) intervals (nested or overlapping events count once)."""
    total, end = 0.0, None
    for s, e in sorted(intervals):
        if end is None or s > end:
            total += e - s
            end = e
        elif e > end:
            total += e - end
            end = e
    return total


def summarize(trace: dict[str, Any], steps: int = 1, top: int = 20, process: str = "/device:") -> dict[str, Any]:
    """Per-timeline busy time and top events, per step (see the module docstring)."""
    if steps < 1:
        raise ValueError(f"steps={steps} must be at least 1")
    events = trace.get("traceEvents", [])
    pnames, tnames = {}, {}
    for e in events:
        if e.get("ph") == "M" and e.get("name") == "process_name":
            pnames[e.get("pid")] = str(e.get("args", {}).get("name", e.get("pid")))
        elif e.get("ph") == "M" and e.get("name") == "thread_name":
            tnames[(e.get("pid"), e.get("tid"))] = str(e.get("args", {}).get("name", e.get("tid")))
    complete = [e for e in events if e.get("ph") == "X" and "dur" in e and "ts" in e]
    matched = {e.get("pid") for e in complete if process and process in pnames.get(e.get("pid"), "")}
    selected = [e for e in complete if e.get("pid") in matched] if matched else complete
    lines: dict[tuple, list[dict]] = defaultdict(list)
    for e in selected:
        lines[(e.get("pid"), e.get("tid"))].append(e)
    out = []
    for (pid, tid), evs in lines.items():
        busy = busy_us((float(e["ts"]), float(e["ts"]) + float(e["dur"])) for e in evs)
        by_name: dict[str, list] = defaultdict(lambda: [0.0, 0, ""])
        for e in evs:
            rec = by_name[str(e.get("name", "?"))]
            rec[0] += float(e["dur"])
            rec[1] += 1
            if not rec[2]:
                args = e.get("args") or {}
                rec[2] = str(args.get("hlo_op", "") or args.get("long_name", "") or "")[:60]
        ranked = sorted(by_name.items(), key=lambda kv: -kv[1][0])
        by_kind: dict[str, list] = defaultdict(lambda: [0.0, 0])
        for n, (d, c, _) in by_name.items():
            by_kind[kind(n)][0] += d
            by_kind[kind(n)][1] += c
        kinds = sorted(by_kind.items(), key=lambda kv: -kv[1][0])
        out.append({
            "process": pnames.get(pid, str(pid)), "thread": tnames.get((pid, tid), str(tid)),
            "busy_ms_per_step": busy / 1e3 / steps, "events_per_step": len(evs) / steps,
            "top": [{"name": n, "ms_per_step": d / 1e3 / steps, "calls_per_step": c / steps,
                     "share": d / busy if busy else 0.0, "hlo_op": h} for n, (d, c, h) in ranked[:top]],
            "kinds": [{"kind": k, "ms_per_step": d / 1e3 / steps, "calls_per_step": c / steps,
                       "share": d / busy if busy else 0.0} for k, (d, c) in kinds[:top]],
        })
    out.sort(key=lambda t: -t["busy_ms_per_step"])
    return {"steps": steps, "process_filter": process, "filter_matched": bool(matched), "timelines": out}


def format_summary(summary: dict[str, Any], max_timelines: int = 4, name_width: int = 70) -> str:
    """Markdown: one table per timeline (the busiest `max_timelines`)."""
    lines = []
    if not summary["filter_matched"]:
        lines.append(f"(no process matches {summary['process_filter']!r}: every process's timelines shown)")
    for t in summary["timelines"][:max_timelines]:
        lines.append(f"\n{t['process']} / {t['thread']}: busy {t['busy_ms_per_step']:.3f} ms per step, "
                     f"{t['events_per_step']:.0f} events per step ({summary['steps']} steps)\n")
        lines.append("| kind (name without its instance number) | ms / step | calls / step | share of busy |")
        lines.append("|---|---:|---:|---:|")
        for r in t["kinds"][:10]:
            name = r["kind"] if len(r["kind"]) <= name_width else r["kind"][:name_width - 3] + "..."
            lines.append(f"| `{name}` | {r['ms_per_step']:.3f} | {r['calls_per_step']:.1f} | {100 * r['share']:.1f}% |")
        lines.append("")
        lines.append("| event | ms / step | calls / step | share of busy | hlo op |")
        lines.append("|---|---:|---:|---:|---|")
        for r in t["top"]:
            name = r["name"] if len(r["name"]) <= name_width else r["name"][:name_width - 3] + "..."
            lines.append(f"| `{name}` | {r['ms_per_step']:.3f} | {r['calls_per_step']:.1f} | "
                         f"{100 * r['share']:.1f}% | {r['hlo_op']} |")
    return "\n".join(lines)


def write_summary(trace_dir: str, steps: int, top: int = 25) -> tuple[dict[str, Any], str] | None:
    """Summarises the trace under trace_dir into trace_dir/summary.{md,json}; -> (summary, markdown),
    or None (a warning logged) when the directory holds no readable trace."""
    try:
        summary = summarize(load(trace_dir), steps, top=top)
    except (FileNotFoundError, ValueError) as e:  # e.g. a profiler build that writes only xplane.pb
        logging.warning("profile: %s", e)
        return None
    table = format_summary(summary)
    with open(os.path.join(trace_dir, "summary.md"), "w") as f:
        f.write(table + "\n")
    with open(os.path.join(trace_dir, "summary.json"), "w") as f:
        json.dump(summary, f, indent=1)
    return summary, table


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--trace", required=True, help="a jax.profiler.trace directory or a trace JSON file")
    ap.add_argument("--steps", type=int, default=1, help="steps the trace holds (numbers are per step)")
    ap.add_argument("--top", type=int, default=20)
    ap.add_argument("--process", default="/device:", help="substring of the process names to show")
    ap.add_argument("--timelines", type=int, default=4, help="how many of the busiest timelines to print")
    ap.add_argument("--json", default="", help="also write the summary here")
    a = ap.parse_args(argv)
    summary = summarize(load(a.trace), a.steps, a.top, a.process)
    print(format_summary(summary, a.timelines))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(summary, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
