"""Tests of side_by_side.sh and side_by_side_report.py without a GPU: the script runs against a
build folder whose mlff-bench is a stand-in that reads which library is in place and prints a
step time from it (and an MLFF_CUDA_TIMING table), so that the lines, the medians, the merged
table and the JSON copy can be checked against numbers known in advance."""

import json
import os
import stat
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import side_by_side_report as report  # noqa: E402

# Stands in for mlff-bench: its step is the library's number, plus FAKE_EXTRA_US where the library's
# settings give it, plus 0, 10 or 20 µs by the call's number modulo 3 (so that the rounds differ).
FAKE_BENCH = r'''#!/usr/bin/env python3
import json, os, sys
build = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
base = float(open(os.path.join(build, "platforms", "cuda", "libOpenMMMLFFCUDA.so")).read().split()[1])
counter = os.path.join(build, "calls")
calls = int(open(counter).read()) if os.path.exists(counter) else 0
open(counter, "w").write(str(calls + 1))
step = base + float(os.environ.get("FAKE_EXTRA_US", "0")) + 10 * (calls % 3)
if os.environ.get("MLFF_CUDA_TIMING"):
    print("MLFF_CUDA_TIMING: median us per evaluation, by launch", file=sys.stderr)
    print("%12.1f  the messages (3 evaluations)" % (step / 4), file=sys.stderr)
    if base > 1500:
        print("%12.1f  the readout (3 evaluations)" % 5.0, file=sys.stderr)
    print("%12.1f  sum of the medians" % (step / 4 + 5), file=sys.stderr)
print(json.dumps({"step_us": step, "force_us": step - 1, "energy_kj_mol": 12.5, "device": "Made-up GPU",
                  "structure": sys.argv[2]}))
'''


def make_build(tmp_path):
    build = tmp_path / "build"
    (build / "platforms" / "cuda").mkdir(parents=True)
    (build / "benchmarks").mkdir()
    (build / "platforms" / "cuda" / "libOpenMMMLFFCUDA.so").write_text("own 1\n")
    bench = build / "benchmarks" / "mlff-bench"
    bench.write_text(FAKE_BENCH)
    bench.chmod(bench.stat().st_mode | stat.S_IXUSR)
    return build


def test_runs_libraries_in_turn_and_reports_medians_timing_and_json(tmp_path):
    build = make_build(tmp_path)
    (tmp_path / "a.so").write_text("a 1000\n")
    (tmp_path / "b.so").write_text("b 2000\n")
    out = tmp_path / "result.json"
    command = ["bash", os.path.join(HERE, "side_by_side.sh"), "--structures", "benzene_x16", "--rounds", "2",
               "--md-steps", "10", "--repeats", "1", "--timing", "benzene_x16", "--json", str(out),
               str(tmp_path / "a.so"), str(tmp_path / "b.so") + ",FAKE_EXTRA_US=100"]
    # The script's python3 is this test's (numpy for write_structures.py).
    path = os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", "")
    result = subprocess.run(command, env=dict(os.environ, MLFF_BUILD=str(build), PATH=path), capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()

    # The timing runs come first (calls 0 and 1), then round 1 (2, 3), then round 2 (4, 5).
    table = lines[lines.index(next(line for line in lines if line.startswith("== per launch"))):]
    assert table[2].split() == ["the", "messages", "250.0", "527.5"]
    assert table[3].split() == ["the", "readout", "-", "5.0"]  # a launch only one library has
    runs = [line.split() for line in lines if line.startswith(("1 ", "2 "))]
    assert [(r[0], r[1], r[3]) for r in runs] == [("1", "a.so", "1020.0"), ("1", "b.so,FAKE_EXTRA_US=100", "2100.0"),
                                                 ("2", "a.so", "1010.0"), ("2", "b.so,FAKE_EXTRA_US=100", "2120.0")]
    assert all(r[5] == "12.5000" and r[6] == "-" for r in runs)  # no NVML here: no clock
    summary = lines[lines.index("median step_us over the rounds, and against the first library:") + 1:]
    assert summary[0].split() == ["benzene_x16", "a.so", "1015.0", "+0.0", "%"]
    assert summary[1].split() == ["benzene_x16", "b.so,FAKE_EXTRA_US=100", "2110.0", "+107.9", "%"]
    # The build's own library is back in place.
    assert (build / "platforms" / "cuda" / "libOpenMMMLFFCUDA.so").read_text() == "own 1\n"

    copy = json.loads(out.read_text())
    assert copy["device"] == "Made-up GPU"
    assert "--json" in copy["command"] and "b.so,FAKE_EXTRA_US=100" in copy["command"]
    assert [(r["round"], r["file"], r["settings"], r["step_us"]) for r in copy["runs"]] == [
        (1, "a.so", [], 1020.0), (1, "b.so", ["FAKE_EXTRA_US=100"], 2100.0),
        (2, "a.so", [], 1010.0), (2, "b.so", ["FAKE_EXTRA_US=100"], 2120.0)]
    assert copy["runs"][1]["bench"]["structure"].endswith("benzene_x16.txt")
    assert copy["medians"]["benzene_x16"][1] == {"library": "b.so,FAKE_EXTRA_US=100", "step_us": 2110.0,
                                                  "percent_against_first": 100 * (2110.0 / 1015.0 - 1)}
    assert copy["timing"]["structure"] == "benzene_x16"
    assert copy["timing"]["launches_us"]["the readout"] == {"a.so": None, "b.so,FAKE_EXTRA_US=100": 5.0}


def test_medians_are_per_structure_in_run_order_against_the_first_library():
    runs = [{"structure": s, "library": lib, "step_us": v}
            for s, lib, v in [("x", "main", 100.0), ("x", "new", 90.0), ("y", "main", 10.0), ("y", "new", 12.0),
                              ("x", "main", 120.0), ("x", "new", 80.0), ("y", "main", 10.0), ("y", "new", 12.0)]]
    table = report.medians(runs)
    assert list(table) == ["x", "y"]
    assert table["x"] == [("main", 110.0, 0.0), ("new", 85.0, 100 * (85.0 / 110.0 - 1))]
    assert [round(percent, 6) for _, _, percent in table["y"]] == [0.0, 20.0]


def test_a_run_without_a_timing_table_is_shown_whole():
    lines = report.timing_lines("s", ["ok.so", "broken.so"], [{"k": 1.0, "sum of the medians": 1.0}, {}],
                                ["", "error: no CUDA device"])
    assert lines[0] == "== broken.so: no MLFF_CUDA_TIMING table; it printed:\nerror: no CUDA device"
    assert lines[-2].split() == ["k", "1.0", "-"]


def test_the_heading_says_which_timing_made_the_tables():
    events = "MLFF_CUDA_TIMING: median us per evaluation, by launch\n       2.0  the readout (9 evaluations)\n"
    timeline = events.replace("MLFF_CUDA_TIMING:", "MLFF_CUDA_TIMING=timeline:")
    for text, how in [(events, "the events break overlaps"), (timeline, "overlapping as untimed")]:
        lines = report.timing_lines("s", ["a.so"], [report.parse_timing(text)], [text])
        assert how in lines[0]
        assert lines[-2].split() == ["the", "readout", "2.0"]
