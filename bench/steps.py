"""Run indicators, features and labels in one process (as `retrain run` will) and print the
time of each step as JSON. Used by bench/run.py: `python bench/steps.py DATA_DIR AS_OF [--full]`."""

from __future__ import annotations

import datetime as dt
import json
import sys
import time

import duckdb  # noqa: F401 - the steps read footers with it: imported before the clock, as every module is
from peak import vm_hwm_kb

from retrain import steps
from retrain.calendar import AsOf
from retrain.store import Store


def main() -> None:
    data, as_of, full = sys.argv[1], dt.date.fromisoformat(sys.argv[2]), "--full" in sys.argv
    store = Store(data)
    exchanges = store.exchanges()
    out = {}
    start = time.perf_counter()
    with store.lock("bench"):
        run_steps(store, exchanges, as_of, full, out)
    out["total"] = time.perf_counter() - start
    out["peak_kb"] = vm_hwm_kb()
    print(json.dumps(out))


def run_steps(store, exchanges, as_of, full, out) -> None:
    t = time.perf_counter()
    steps.indicators(store, exchanges, force=full)
    out["indicators"] = time.perf_counter() - t
    t = time.perf_counter()
    steps.features(store, "v1", exchanges, full_rebuild=full)
    out["features"] = time.perf_counter() - t
    t = time.perf_counter()
    steps.labels(store, exchanges, AsOf(as_of), start=dt.date(1970, 1, 2) if full else None)
    out["labels"] = time.perf_counter() - t


if __name__ == "__main__":
    main()
