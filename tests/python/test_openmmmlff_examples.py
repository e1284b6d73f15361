"""The Python examples run with the random model and print what they promise."""

import math
import os
import subprocess
import sys

from openmmmlff_testing import ROOT, random_model_path, subprocess_environment

EXAMPLES = os.path.join(ROOT, "examples")


def run_example(name, *args):
    result = subprocess.run([sys.executable, os.path.join(EXAMPLES, name), random_model_path(), *args],
                            capture_output=True, text=True, env=subprocess_environment(), timeout=600)
    assert result.returncode == 0, f"{name} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout


def test_md_with_reporter():
    out = run_example("md_with_reporter.py", "--steps", "200", "--report-interval", "20")
    lines = out.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith('#"Step"'))
    rows = [line.split(",") for line in lines[header + 1:header + 11]]
    assert [int(row[0]) for row in rows] == list(range(20, 201, 20))
    for row in rows:
        assert all(math.isfinite(float(value)) for value in row)
    assert "potential energy after 200 steps" in out


def test_replica_energies():
    out = run_example("replica_energies.py", "--replicas", "5", "--steps", "20")
    assert "45 atoms in 5 replicas" in out
    assert out.count("sum") == 3
    assert "replica 4 alone" in out
    assert "after swapping the scales" in out
