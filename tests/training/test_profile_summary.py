"""profile_summary: per-step kernel tables from a trace-viewer JSON, checked on a hand-made trace."""

import gzip
import json
import os

import pytest

from bert_vs_transformer.training import profile_summary as ps


def _meta(pid, pname, threads):
    evs = [{"ph": "M", "pid": pid, "name": "process_name", "args": {"name": pname}}]
    evs += [{"ph": "M", "pid": pid, "tid": tid, "name": "thread_name", "args": {"name": t}} for tid, t in threads.items()]
    return evs


def _x(pid, tid, name, ts, dur, **args):
    return {"ph": "X", "pid": pid, "tid": tid, "name": name, "ts": ts, "dur": dur, "args": args}


TRACE = {"traceEvents": (
    _meta(1, "/host:CPU", {10: "python"}) + _meta(7, "/device:GPU:0", {1: "Stream #7", 2: "XLA Ops"}) + [
        # host: a long event the device filter must drop
        _x(1, 10, "PjitFunction(step)", 0, 5000),
        # device stream, 2 steps: per step a 300 us gemm, two fusions of one kind (100 + 50 us)
        _x(7, 1, "sm90_gemm_bf16", 0, 300, hlo_op="dot.1"),
        _x(7, 1, "loop_add_fusion_3", 300, 100, hlo_op="add_fusion.3"),
        _x(7, 1, "loop_add_fusion_12", 400, 50),
        _x(7, 1, "sm90_gemm_bf16", 1000, 300),
        _x(7, 1, "loop_add_fusion_3", 1300, 100),
        _x(7, 1, "loop_add_fusion_12", 1400, 50),
        # the op line overlaps itself (nested): busy is the union, 0-600 and 1000-1200
        _x(7, 2, "fusion.1", 0, 600), _x(7, 2, "fusion.2", 100, 200), _x(7, 2, "fusion.1", 1000, 200),
        {"ph": "i", "pid": 7, "tid": 1, "name": "marker", "ts": 5},  # not a complete event
    ])}


def test_busy_is_the_union_of_intervals():
    assert ps.busy_us([(0, 10), (5, 8), (20, 25), (24, 30)]) == 20  # 10 + (30 - 20)
    assert ps.busy_us([]) == 0


def test_kind_drops_instance_numbers():
    assert ps.kind("fusion.12") == ps.kind("fusion.3") == "fusion"
    assert ps.kind("loop_add_fusion_3") == "loop_add_fusion"
    assert ps.kind("sm90_gemm_bf16") == "sm90_gemm_bf16"  # a number inside the name stays


def test_summary_per_step_on_a_hand_made_trace():
    s = ps.summarize(TRACE, steps=2, top=5)
    assert s["filter_matched"]
    # the busiest timeline first
    assert [(t["process"], t["thread"]) for t in s["timelines"]] == [("/device:GPU:0", "Stream #7"),
                                                                     ("/device:GPU:0", "XLA Ops")]
    stream, ops = s["timelines"]
    assert ops["busy_ms_per_step"] == pytest.approx(0.4)  # (600 + 200) us over 2 steps
    assert stream["busy_ms_per_step"] == pytest.approx(0.45)  # 300 + 100 + 50 us a step
    top = stream["top"][0]
    assert top["name"] == "sm90_gemm_bf16" and top["hlo_op"] == "dot.1"
    assert top["ms_per_step"] == pytest.approx(0.3) and top["calls_per_step"] == 1
    assert top["share"] == pytest.approx(300 / 450)
    kinds = {k["kind"]: k for k in stream["kinds"]}
    assert kinds["loop_add_fusion"]["ms_per_step"] == pytest.approx(0.15)
    assert kinds["loop_add_fusion"]["calls_per_step"] == 2
    table = ps.format_summary(s)
    assert "Stream #7: busy 0.450 ms per step" in table and "| `loop_add_fusion` | 0.150 | 2.0 | 33.3% |" in table


def test_no_matching_process_falls_back_to_all():
    s = ps.summarize(TRACE, steps=1, process="/device:TPU")
    assert not s["filter_matched"] and len(s["timelines"]) == 3
    assert "no process matches" in ps.format_summary(s)
    with pytest.raises(ValueError, match="steps"):
        ps.summarize(TRACE, steps=0)


def test_load_finds_the_trace_in_a_profiler_directory(tmp_path, capsys):
    d = tmp_path / "plugins" / "profile" / "2026_01_01"
    d.mkdir(parents=True)
    with gzip.open(d / "host.trace.json.gz", "wt") as f:
        json.dump(TRACE, f)
    assert ps.find_trace(str(tmp_path)).endswith("host.trace.json.gz")
    assert ps.load(str(tmp_path))["traceEvents"] == TRACE["traceEvents"]
    out_json = str(tmp_path / "s.json")
    assert ps.main(["--trace", str(tmp_path), "--steps", "2", "--json", out_json]) == 0
    assert "sm90_gemm_bf16" in capsys.readouterr().out
    assert json.load(open(out_json))["steps"] == 2
    empty = tmp_path / "empty"
    (empty / "p").mkdir(parents=True)
    (empty / "p" / "vm.xplane.pb").write_bytes(b"")
    with pytest.raises(FileNotFoundError, match="xplane.pb"):
        ps.find_trace(str(empty))
    with pytest.raises(FileNotFoundError):
        ps.find_trace(os.path.join(str(tmp_path), "missing"))
