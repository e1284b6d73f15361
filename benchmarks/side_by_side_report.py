#!/usr/bin/env python3
"""What benchmarks/side_by_side.sh prints and keeps of its runs: a line a run, the libraries'
MLFF_CUDA_TIMING tables as one, each library's median step over the rounds against the first
library's, and (side_by_side.sh --json) all of it as one JSON file, for benchmarks/results/.

    side_by_side_report.py header
        prints the runs' lines' header
    side_by_side_report.py line FOLDER ROUND LIBRARY STRUCTURE
        prints the run's line from FOLDER/run.json (mlff-bench's) and FOLDER/clocks.json
        (gpu_clocks.py's), and appends the run to FOLDER/runs.jsonl
    side_by_side_report.py timing FOLDER STRUCTURE LIBRARY FILE [LIBRARY FILE...]
        prints the libraries' tables (each FILE mlff-bench's stderr under MLFF_CUDA_TIMING) as one,
        a column a library, and keeps it as FOLDER/timing.json
    side_by_side_report.py summary FOLDER
        prints each library's median step over the rounds, structure by structure, and how far it is
        from the first library's
    side_by_side_report.py json FOLDER OUT COMMAND
        writes OUT: COMMAND (side_by_side.sh's own command line), the runs, the medians and the
        timing table

A LIBRARY is side_by_side.sh's argument less its folder: a file name, then any settings after
commas (evict.so,MLFF_CUDA_ROW_EVICT=4).
"""
import datetime
import json
import os
import re
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from gpu_clocks import describe  # noqa: E402

LINE_FORMAT = "%-6s %-36s %-28s %10s %10s %16s  %s"


def header():
    return LINE_FORMAT % ("round", "library", "structure", "step_us", "force_us", "energy_kj_mol", "SM MHz")


def runs_path(folder):
    return os.path.join(folder, "runs.jsonl")


def read_runs(folder):
    """The runs that `line` appended, in the order they ran."""
    if not os.path.exists(runs_path(folder)):
        return []
    with open(runs_path(folder)) as f:
        return [json.loads(line) for line in f if line.strip()]


def record_run(folder, round_, library, structure):
    """The run in FOLDER/run.json and FOLDER/clocks.json, appended to FOLDER/runs.jsonl; returns its line."""
    with open(os.path.join(folder, "run.json")) as f:
        bench = json.load(f)
    with open(os.path.join(folder, "clocks.json")) as f:
        clocks = json.load(f)
    name, *settings = library.split(",")
    run = {"round": int(round_), "library": library, "file": name, "settings": settings, "structure": structure,
           "step_us": bench["step_us"], "force_us": bench["force_us"], "energy_kj_mol": bench["energy_kj_mol"],
           "clocks": clocks, "bench": bench}
    with open(runs_path(folder), "a") as f:
        f.write(json.dumps(run) + "\n")
    return LINE_FORMAT % (run["round"], library, structure, "%.1f" % run["step_us"], "%.1f" % run["force_us"],
                          "%.4f" % run["energy_kj_mol"], describe(clocks))


def medians(runs):
    """{structure: [(library, median step_us, percent against the first library's)]}, in run order."""
    steps = {}
    for run in runs:
        steps.setdefault(run["structure"], {}).setdefault(run["library"], []).append(run["step_us"])
    table = {}
    for structure, libraries in steps.items():
        rows = [(library, statistics.median(values)) for library, values in libraries.items()]
        first = rows[0][1]
        table[structure] = [(library, median, 100 * (median / first - 1)) for library, median in rows]
    return table


def summary_lines(runs):
    lines = ["", "median step_us over the rounds, and against the first library:"]
    for structure, rows in medians(runs).items():
        for library, median, percent in rows:
            lines.append("%-28s %-36s %10.1f %+7.1f %%" % (structure, library, median, percent))
    return lines


TIMING_ROW = re.compile(r"^\s*([0-9.]+)\s+(.*?)(?: \(\d+ evaluations\))?$")
TIMING_SUM = "sum of the medians"


def parse_timing(text):
    """{launch: µs an evaluation} from mlff-bench's MLFF_CUDA_TIMING table, in its order; {} if none."""
    return {m.group(2): float(m.group(1)) for m in map(TIMING_ROW.match, text.splitlines()) if m}


def merge_timing(tables):
    """[(launch, [µs or None, a library each])]: every launch kind in the order they first appear, the sum last."""
    order = []
    for times in tables:
        order += [launch for launch in times if launch not in order and launch != TIMING_SUM]
    order.append(TIMING_SUM)
    return [(launch, [times.get(launch) for times in tables]) for launch in order]


def timing_lines(structure, libraries, tables, texts):
    lines = []
    for library, times, text in zip(libraries, tables, texts):
        if not times:
            lines.append(f"== {library}: no MLFF_CUDA_TIMING table; it printed:\n{text}")
    rows = merge_timing(tables)
    width = max(len(launch) for launch, _ in rows)
    cells = [max(10, len(library)) for library in libraries]
    if any("MLFF_CUDA_TIMING=timeline" in text for text in texts):
        how = "MLFF_CUDA_TIMING=timeline; each launch's share, overlapping as untimed"
    else:
        how = "MLFF_CUDA_TIMING; the events break overlaps"
    lines.append(f"== per launch on {structure}, µs an evaluation ({how})")
    lines.append(" " * width + "".join(f"  {library:>{cell}s}" for library, cell in zip(libraries, cells)))
    for launch, values in rows:
        lines.append(launch.ljust(width) + "".join(f"  {value:{cell}.1f}" if value is not None else f"  {'-':>{cell}s}"
                                                  for value, cell in zip(values, cells)))
    return lines


def write_timing(folder, structure, libraries_and_files):
    """LIBRARY FILE pairs, one after another. Returns the merged table's lines; keeps it as FOLDER/timing.json."""
    libraries, texts = libraries_and_files[0::2], []
    for path in libraries_and_files[1::2]:
        with open(path) as f:
            texts.append(f.read())
    tables = [parse_timing(text) for text in texts]
    with open(os.path.join(folder, "timing.json"), "w") as f:
        json.dump({"structure": structure, "libraries": libraries,
                   "launches_us": {launch: dict(zip(libraries, values)) for launch, values in merge_timing(tables)}},
                  f, indent=1)
    return timing_lines(structure, libraries, tables, texts)


def write_json(folder, out, command):
    runs = read_runs(folder)
    timing_path = os.path.join(folder, "timing.json")
    timing = None
    if os.path.exists(timing_path):
        with open(timing_path) as f:
            timing = json.load(f)
    devices = sorted({run["bench"].get("device", "") for run in runs} - {""})
    report = {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d"),
        "device": devices[0] if len(devices) == 1 else devices,
        "command": command,
        "medians": {structure: [{"library": library, "step_us": median, "percent_against_first": percent}
                                for library, median, percent in rows]
                    for structure, rows in medians(runs).items()},
        "timing": timing,
        "runs": runs,
    }
    with open(out, "w") as f:
        json.dump(report, f, indent=1)
        f.write("\n")


def main(argv):
    if len(argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    command, args = argv[1], argv[2:]
    if command == "header" and not args:
        print(header())
    elif command == "line" and len(args) == 4:
        print(record_run(*args))
    elif command == "timing" and len(args) >= 4 and len(args) % 2 == 0:
        print("\n".join(write_timing(args[0], args[1], args[2:])))
    elif command == "summary" and len(args) == 1:
        print("\n".join(summary_lines(read_runs(args[0]))))
    elif command == "json" and len(args) == 3:
        write_json(*args)
    else:
        print(__doc__, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
