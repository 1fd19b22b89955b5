"""Run indicators, features and labels in one process (as `retrain run` will) and print the
time of each step as JSON. Used by bench/run.py: `python bench/steps.py DATA_DIR AS_OF [--full]`."""

from __future__ import annotations

import datetime as dt
import json
import sys
import time

from retrain import features, indicators, labels
from retrain.calendar import AsOf
from retrain.store import Store


def main() -> None:
    data, as_of, full = sys.argv[1], dt.date.fromisoformat(sys.argv[2]), "--full" in sys.argv
    store = Store(data)
    exchanges = store.exchanges()
    out = {}
    t = time.perf_counter()
    indicators.update(store, exchanges, force=full)
    out["indicators"] = time.perf_counter() - t
    t = time.perf_counter()
    features.build(store, "v1", exchanges, full_rebuild=full)
    out["features"] = time.perf_counter() - t
    t = time.perf_counter()
    labels.update(store, exchanges, AsOf(as_of), start=dt.date(1970, 1, 2) if full else None)
    out["labels"] = time.perf_counter() - t
    print(json.dumps(out))


if __name__ == "__main__":
    main()
