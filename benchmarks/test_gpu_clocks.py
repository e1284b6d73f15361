"""Tests of gpu_clocks.py without a GPU: the reasons' names, the sampling thread and its summary
with a made-up source, and the command-line wrapper (whose summary is null where there is no NVML)."""

import json
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from gpu_clocks import ClockLog, describe, reason_names  # noqa: E402


def test_reason_names_name_each_bit_and_show_unknown_ones_in_hex():
    assert reason_names(0) == []
    assert reason_names(0x4 | 0x40) == ["sw_power_cap", "hw_thermal_slowdown"]
    assert reason_names(0x1 | 0x1000) == ["gpu_idle", "0x1000"]


class MadeUpGpu:
    """Samples a GPU that holds its clock down by its power cap from the third sample on."""

    def __init__(self):
        self.count = 0
        self.closed = False

    def sample(self):
        self.count += 1
        capped = self.count >= 3
        return {"sm_mhz": 1500 if capped else 1980, "mem_mhz": 3201, "power_w": 690.0 if capped else 400.0,
                "temperature_c": 60 + self.count, "reasons": 0x4 if capped else 0x1}

    def close(self):
        self.closed = True


def test_summary_gives_medians_extremes_and_the_reasons_seen_but_idle():
    gpu = MadeUpGpu()
    with ClockLog(interval_s=0.001, open_source=lambda: gpu) as clocks:
        while gpu.count < 7:
            time.sleep(0.001)
    assert gpu.closed
    summary = clocks.summary()
    count = summary["samples"]
    assert count == gpu.count >= 7
    assert summary["sm_mhz_min"] == 1500 and summary["sm_mhz_max"] == 1980
    assert summary["sm_mhz_median"] == 1500  # all samples but the first two were capped
    assert summary["power_w_max"] == 690.0 and summary["temperature_c_max"] == 60 + count
    assert summary["reasons"] == ["sw_power_cap"]
    assert describe(summary) == "1500 sw_power_cap"


def test_summary_without_a_source_is_none_and_the_block_still_runs():
    def no_nvml():
        raise OSError("libnvidia-ml.so.1: cannot open shared object file")

    ran = False
    with ClockLog(open_source=no_nvml) as clocks:
        ran = True
    assert ran and clocks.summary() is None and describe(None) == "-"


def test_summary_of_a_source_that_reads_no_clock_is_none():
    class Silent:
        def sample(self):
            return {"sm_mhz": None, "mem_mhz": None, "power_w": None, "temperature_c": None, "reasons": None}

        def close(self):
            pass

    with ClockLog(interval_s=0.001, open_source=Silent) as clocks:
        time.sleep(0.01)
    assert clocks.summary() is None


def test_the_wrapper_passes_the_commands_output_and_status_through(tmp_path):
    summary = tmp_path / "clocks.json"
    run = subprocess.run([sys.executable, os.path.join(HERE, "gpu_clocks.py"), "--summary", str(summary), "--",
                          sys.executable, "-c", "print('timed'); raise SystemExit(3)"], capture_output=True, text=True)
    assert run.returncode == 3 and run.stdout == "timed\n"
    written = json.loads(summary.read_text())
    assert written is None or written["sm_mhz_median"] > 0  # None where there is no NVML
