"""Time training (walk-forward CV + final model), the 30-day walk-forward backtest and predict in
one process; print JSON. Used by bench/run.py: `python bench/model_steps.py DATA ARTIFACTS`."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import sys
import time

from peak import vm_hwm_kb

from retrain import pipeline, training
from retrain.backtest import BacktestConfig
from retrain.calendar import AsOf
from retrain.config import load_settings
from retrain.store import Store


def main() -> None:
    data, artifacts = sys.argv[1], sys.argv[2]
    settings = dataclasses.replace(load_settings(data_dir=data, artifacts_dir=artifacts), default_exchange="ALL")
    store = Store(data)
    cfg = training.TrainConfig.from_settings(settings)
    out = {}
    t = time.perf_counter()
    result = pipeline.train(store, "v1", "ALL", cfg)
    out["train"] = time.perf_counter() - t
    out["rows"] = result.rows
    end = result.window[1]
    t = time.perf_counter()
    window = (end - dt.timedelta(days=29), end)
    with store.lock("bench"):
        bt = pipeline.backtest(store, settings, "v1", "ALL", cfg, window, BacktestConfig())
    out["backtest"] = time.perf_counter() - t
    out["backtest_sessions"] = bt.summary["sessions"]
    pipeline.train_step(settings, "ALL", cfg, "always")
    t = time.perf_counter()
    pred = pipeline.predict(settings, "ALL", AsOf(end))
    out["predict"] = time.perf_counter() - t
    out["predict_rows"] = pred.table.height
    out["peak_kb"] = vm_hwm_kb()
    print(json.dumps(out))


if __name__ == "__main__":
    main()
