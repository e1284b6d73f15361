#!/usr/bin/env python3
"""The GPU's clocks, power and the reasons its clocks are held down, sampled while a benchmark runs.

A step that is longer untimed than the sum of its timed launches may be a GPU that lowered its
clocks under sustained load (its power cap, or heat), which a run with gaps between evaluations,
as MLFF_CUDA_TIMING makes, does not meet. So each timed run can say at what clocks it ran:

    with ClockLog() as clocks:
        ...                  # run the benchmark
    clocks.summary()         # {"sm_mhz_median": ..., "reasons": ["sw_power_cap"], ...}, or None

or around any command, its output passed through and the summary written as JSON:

    python3 benchmarks/gpu_clocks.py --summary FILE -- COMMAND [ARGS...]

A thread reads NVML (the driver's libnvidia-ml, through ctypes: no package needed) every 50 ms,
for the GPU that CUDA_VISIBLE_DEVICES names if it names one by number, else GPU 0 (NVML numbers
GPUs by PCI bus, as CUDA does with CUDA_DEVICE_ORDER=PCI_BUS_ID: the same on a machine of one GPU).
Where there is no NVML (no driver, as on the build machine) the summary is None and the benchmark
runs all the same.
"""

import argparse
import ctypes
import json
import os
import statistics
import subprocess
import sys
import threading

# nvmlClocksEventReasons bits (nvml.h): why a clock is below its maximum.
REASON_BITS = {
    0x1: "gpu_idle",
    0x2: "applications_clocks_setting",
    0x4: "sw_power_cap",
    0x8: "hw_slowdown",
    0x10: "sync_boost",
    0x20: "sw_thermal_slowdown",
    0x40: "hw_thermal_slowdown",
    0x80: "hw_power_brake_slowdown",
    0x100: "display_clock_setting",
}


def reason_names(mask):
    """The names of the bits set in a reasons mask; bits nvml.h did not name, in hex."""
    names = [name for bit, name in REASON_BITS.items() if mask & bit]
    unknown = mask & ~sum(REASON_BITS)
    return names + ([hex(unknown)] if unknown else [])


class Nvml:
    """The few NVML calls a sample needs. Raises OSError where NVML cannot be loaded or started."""

    CLOCK_SM, CLOCK_MEM, TEMPERATURE_GPU = 1, 2, 0

    def __init__(self, index):
        self.lib = ctypes.CDLL("libnvidia-ml.so.1")
        if self.lib.nvmlInit_v2() != 0:
            raise OSError("nvmlInit_v2 failed")
        self.device = ctypes.c_void_p()
        if self.lib.nvmlDeviceGetHandleByIndex_v2(ctypes.c_uint(index), ctypes.byref(self.device)) != 0:
            self.lib.nvmlShutdown()
            raise OSError(f"NVML has no GPU {index}")
        # The reasons' call was renamed (Clocks"Throttle"Reasons -> Clocks"Event"Reasons); drivers keep the old name.
        self.reasons_call = getattr(self.lib, "nvmlDeviceGetCurrentClocksEventReasons", None) or \
            self.lib.nvmlDeviceGetCurrentClocksThrottleReasons

    def _uint(self, call, *args):
        value = ctypes.c_uint()
        return value.value if call(self.device, *args, ctypes.byref(value)) == 0 else None

    def sample(self):
        """{sm_mhz, mem_mhz, power_w, temperature_c, reasons}, each None where NVML would not say."""
        reasons = ctypes.c_ulonglong()
        power_mw = self._uint(self.lib.nvmlDeviceGetPowerUsage)
        return {
            "sm_mhz": self._uint(self.lib.nvmlDeviceGetClockInfo, ctypes.c_int(self.CLOCK_SM)),
            "mem_mhz": self._uint(self.lib.nvmlDeviceGetClockInfo, ctypes.c_int(self.CLOCK_MEM)),
            "power_w": power_mw / 1000 if power_mw is not None else None,
            "temperature_c": self._uint(self.lib.nvmlDeviceGetTemperature, ctypes.c_int(self.TEMPERATURE_GPU)),
            "reasons": reasons.value if self.reasons_call(self.device, ctypes.byref(reasons)) == 0 else None,
        }

    def close(self):
        self.lib.nvmlShutdown()


def default_gpu_index():
    visible = os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",")[0].strip()
    return int(visible) if visible.isdigit() else 0


def summarize(samples):
    """Medians and extremes of the samples, and every reason any sample gave but gpu_idle (a run's
    first and last samples may fall where the GPU idles between launches of the benchmark)."""
    def values(key):
        return [s[key] for s in samples if s.get(key) is not None]

    sm = values("sm_mhz")
    if not sm:
        return None
    mem, power, temperature, masks = values("mem_mhz"), values("power_w"), values("temperature_c"), values("reasons")
    mask = 0
    for value in masks:
        mask |= value
    return {
        "samples": len(samples),
        "sm_mhz_median": statistics.median(sm), "sm_mhz_min": min(sm), "sm_mhz_max": max(sm),
        "mem_mhz_median": statistics.median(mem) if mem else None,
        "power_w_median": statistics.median(power) if power else None,
        "power_w_max": max(power) if power else None,
        "temperature_c_max": max(temperature) if temperature else None,
        "reasons": [name for name in reason_names(mask) if name != "gpu_idle"] if masks else None,
    }


class ClockLog:
    """Samples the GPU from entering the `with` block to leaving it (see the module's text).
    `open_source` makes the sampled source (Nvml by default; tests pass their own)."""

    def __init__(self, interval_s=0.05, open_source=None):
        self.interval_s = interval_s
        self.open_source = open_source or (lambda: Nvml(default_gpu_index()))
        self.samples = []
        self.source = None
        self.stop = threading.Event()
        self.thread = None

    def __enter__(self):
        try:
            self.source = self.open_source()
        except OSError:
            return self  # no NVML: summary() is None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        return self

    def _run(self):
        while True:
            self.samples.append(self.source.sample())
            if self.stop.wait(self.interval_s):
                return

    def __exit__(self, *exc):
        if self.thread:
            self.stop.set()
            self.thread.join()
            self.source.close()
        return False

    def summary(self):
        return summarize(self.samples)


def describe(summary):
    """A short cell for tables: the median SM clock, and the reasons it was held down, if any."""
    if summary is None:
        return "-"
    return f"{summary['sm_mhz_median']:.0f}" + (f" {'+'.join(summary['reasons'])}" if summary["reasons"] else "")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--summary", required=True, help="write the summary here as JSON (null where no NVML)")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- COMMAND [ARGS...]")
    args = parser.parse_args()
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("no COMMAND given")
    with ClockLog() as clocks:
        returncode = subprocess.run(command).returncode
    with open(args.summary, "w") as f:
        json.dump(clocks.summary(), f)
    return returncode


if __name__ == "__main__":
    sys.exit(main())
