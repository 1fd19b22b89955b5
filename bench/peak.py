"""Run the retrain CLI and write this process's own peak RSS (VmHWM, kB) to $BENCH_PEAK_FILE.

wait4's ru_maxrss carries the parent's high-water mark across exec, which would charge the
benchmark's own memory to every stage; VmHWM belongs to the new process image only."""

from __future__ import annotations

import os
import runpy


def vm_hwm_kb() -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return 0


def _report() -> None:
    path = os.environ.get("BENCH_PEAK_FILE")
    if path:
        with open(path, "w") as fh:
            fh.write(str(vm_hwm_kb()))


if __name__ == "__main__":
    try:  # the CLI ends its process from an exit handler of its own: the peak is read before
        runpy.run_module("retrain.cli", run_name="__main__", alter_sys=True)
    finally:
        _report()
