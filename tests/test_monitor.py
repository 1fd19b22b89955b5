"""Watching the active model, as the daily cron does it: `retrain ingest` of the day's bars, then
`retrain predict` (which brings indicators and features up to date itself), then
`retrain monitor`. After a regime break the monitor reaches alert within 15 sessions; on the
same market without the break it stays out of alert; its live rank IC is what the journal and
the bars give; and every status has its exit."""

from __future__ import annotations

import datetime as dt
import json
import shutil
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from retrain import calendar, pipeline, sample
from retrain.calendar import AsOf
from retrain.config import load_settings
from retrain.store import Store
from tests.conftest import cli_in

END = dt.date(2025, 10, 17)
BREAK = dt.date(2025, 9, 12)  # the planted signal stops after this Friday
TRAIN = BREAK  # the model is trained as of that day: every live session is after the break
LIVE = [d for d in calendar.sessions("NYSE", TRAIN + dt.timedelta(days=1), END)]
AFTER = [d for d in LIVE if d > BREAK]
CHECK = AFTER[14]  # the 15th session after the break


def _market(signal_until):
    return sample.generate(symbols=150, days=200, seed=3, end=END, signal=2.0, signal_until=signal_until)


def _start(tmp_path: Path, cli, bars, syms) -> None:
    store = Store(tmp_path / "data")
    with store.lock("test"):
        store.upsert_bars(bars.filter(pl.col("date") <= TRAIN))
        store.upsert_symbols(syms)
    trained = cli("run", "--exchange", "ALL", "--as-of", str(TRAIN), "--skip-backtest")
    assert trained.exit_code == 0, trained.output


@pytest.fixture(scope="module")
def started(tmp_path_factory) -> Path:
    """``_start`` once for both tests: through TRAIN the two markets are the same bars (the signal
    stops after it), so the store and the model trained on it are too. Tests take copies."""
    root = tmp_path_factory.mktemp("monitor")
    bars, syms = _market(BREAK)
    with pytest.MonkeyPatch.context() as mp:
        _start(root, cli_in(root, mp), bars, syms)
    return root


def _started(started: Path, tmp_path: Path, bars, syms) -> None:
    """A copy of ``started`` at tmp_path, after checking that it is what ``_start`` would build
    from this test's market: its bars through TRAIN and its symbols."""
    for name in ("data", "artifacts"):
        shutil.copytree(started / name, tmp_path / name)
    store = Store(tmp_path / "data")
    keys = ["exchange", "symbol", "date"]
    stored = store.scan_bars().select(bars.columns).collect().sort(keys)
    assert stored.equals(bars.filter(pl.col("date") <= TRAIN).select(stored.columns).sort(keys))
    assert store.read_symbols().select(syms.columns).sort(keys[:2]).equals(syms.sort(keys[:2]))


def _day(tmp_path: Path, cli, bars, day: dt.date, *extra: str):
    """The daily cron for ``day``: ingest its bars, then rank the next session."""
    path = tmp_path / "incoming" / f"{day}.parquet"
    path.parent.mkdir(exist_ok=True)
    bars.filter(pl.col("date") == day).write_parquet(path)
    got = cli("ingest", str(path), "--as-of", str(day))
    assert got.exit_code == 0, got.output
    return cli("predict", "--exchange", "ALL", "--as-of", str(day), "--top", "3", *extra)


def _monitor(cli, day: dt.date, *extra: str):
    got = cli("monitor", "--exchange", "ALL", "--as-of", str(day), "--json", *extra)
    return got, json.loads(got.output.strip().splitlines()[-1])


def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    ra, rb = (pl.Series(v).rank().to_numpy() for v in (a, b))
    return float(np.corrcoef(ra, rb)[0, 1])


def test_a_break_is_caught_within_15_sessions_and_the_figures_are_the_journal_s(tmp_path, cli, started):
    bars, syms = _market(BREAK)
    _started(started, tmp_path, bars, syms)
    nothing, out = _monitor(cli, TRAIN)
    assert nothing.exit_code == 0 and out["status"] == "warning" and out["live"]["sessions"] == 0
    assert any("nothing to judge yet" in a["reason"] for a in out["alerts"])
    assert cli("monitor", "--exchange", "ALL", "--as-of", str(TRAIN), "--fail-on", "warning").exit_code == 4

    ranked = cli("predict", "--exchange", "ALL", "--as-of", str(TRAIN), "--top", "3")  # the evening of TRAIN
    assert ranked.exit_code == 0 and f"Predictions for {LIVE[0]}" in ranked.output, ranked.output
    first = _day(tmp_path, cli, bars, LIVE[0])
    assert first.exit_code == 0, first.output
    assert "Brought up to date for" in first.output and "feature row(s)" in first.output
    for day in LIVE[1:]:
        if day > CHECK:
            break
        got = _day(tmp_path, cli, bars, day)
        assert got.exit_code == 0, got.output
    assert "Stale model" in got.output  # trained on data through TRAIN: older than 14 days by now
    strict = cli("predict", "--exchange", "ALL", "--as-of", str(CHECK), "--strict")
    assert strict.exit_code == 1 and "max_model_age_days = 14" in strict.output

    res, out = _monitor(cli, CHECK, "--fail-on", "alert")
    assert out["status"] == "alert" and res.exit_code == 4, res.output
    assert out["decay"]["alarm"] and BREAK < dt.date.fromisoformat(out["decay"]["alarm_session"]) <= CHECK
    assert "retrain run" in " ".join(a["action"] for a in out["alerts"] if a["level"] == "alert")
    assert out["model"]["age_days"] == (CHECK - dt.date.fromisoformat(out["model"]["trained_through"])).days

    # the live rank IC, from the journal's files and the bars, without retrain's code
    journal = pl.read_parquet(str(tmp_path / "artifacts/daytrading/predictions/session=*/*.parquet"),
                              hive_partitioning=False)
    trained_through = dt.date.fromisoformat(out["model"]["trained_through"])
    raw = pl.concat([pl.read_parquet(p).with_columns(pl.lit(p.parent.parent.name.split("=")[1]).alias("exchange"))
                     for p in sorted((tmp_path / "data").rglob("exchange=*/month=*/*.parquet"))], how="diagonal")
    real = raw.select(pl.col("date").alias("trade_date"), "exchange", "symbol",
                      (pl.col("close") / pl.col("open") - 1).alias("actual"))
    live = journal.filter((pl.col("run_id") == out["model"]["run_id"]) & (pl.col("trade_date") > trained_through)
                          & (pl.col("trade_date") <= CHECK)).join(real, on=["trade_date", "exchange", "symbol"])
    daily = [_spearman(g["predicted"].to_numpy(), g["actual"].to_numpy())
             for _, g in live.group_by("trade_date", maintain_order=True)]
    assert out["live"]["sessions"] == len(daily)
    assert out["live"]["rank_ic"] == pytest.approx(np.mean(daily), abs=1e-9)

    # the journal: one file per session and run, the predictions view, the dashboard
    assert journal.group_by("trade_date").agg(pl.col("run_id").n_unique())["run_id"].max() == 1
    q = cli("query", "SELECT count(DISTINCT trade_date) AS n FROM predictions", "--format", "json")
    assert json.loads(q.stdout)[0]["n"] == journal["trade_date"].n_unique()
    page = (tmp_path / "artifacts/daytrading/index.html").read_text()
    assert "ALL" in page and "alert" in page and "https://" not in page and "http://" not in page

    # an unreadable journal file is named and skipped
    victim = sorted((tmp_path / "artifacts/daytrading/predictions").glob("session=*/*.parquet"))[0]
    victim.write_bytes(b"not parquet")
    res, out2 = _monitor(cli, CHECK)
    assert res.exit_code == 0 and str(victim) in res.output and out2["live"]["sessions"] == len(daily) - 1
    # ... as a warning: its session is missing from the live record (cron's --fail-on warning sees it)
    missing = [a for a in out2["alerts"] if "journal file(s) could not be read" in a["reason"]]
    assert [a["level"] for a in missing] == ["warning"] and "retrain verify" in missing[0]["action"]
    victim.unlink()

    # a damaged copy of the active model under its plain name is named, with the repair
    copy = tmp_path / "artifacts/daytrading/intraday_model_v1_ALL.joblib"
    copy.write_bytes(copy.read_bytes()[:-10] + b"0123456789")
    _, out3 = _monitor(cli, CHECK)
    damaged = [a for a in out3["alerts"] if "intraday_model_v1_ALL.joblib" in a["reason"]]
    assert [a["level"] for a in damaged] == ["warning"] and "verify --repair" in damaged[0]["action"]
    assert cli("verify", "--repair").exit_code == 0
    _, out4 = _monitor(cli, CHECK)
    assert not [a for a in out4["alerts"] if "intraday_model" in a["reason"] or "journal file" in a["reason"]]


def test_without_the_break_it_stays_out_of_alert(tmp_path, cli, started):
    bars, syms = _market(None)
    _started(started, tmp_path, bars, syms)
    store, settings = Store(tmp_path / "data"), load_settings()
    pipeline.predict(settings, "ALL", AsOf.parse(str(TRAIN)))
    for day in LIVE:  # the same daily cycle through the library (the CLI's is tested above)
        if day > CHECK:
            break
        with store.lock("test"):
            store.upsert_bars(bars.filter(pl.col("date") == day))
        pipeline.predict(settings, "ALL", AsOf.parse(str(day)))
    res, out = _monitor(cli, CHECK, "--fail-on", "alert")
    assert res.exit_code == 0 and out["status"] != "alert", res.output
    assert out["live"]["sessions"] >= 15 and out["live"]["rank_ic"] > 0.05
    assert not out["decay"]["alarm"]

    # predictions of a run whose folder was removed are still scored, and marked
    run_dir = tmp_path / "artifacts/daytrading/runs" / out["model"]["run_id"]
    run_dir.rename(tmp_path / "removed-run")
    res, gone = _monitor(cli, CHECK)
    assert res.exit_code == 0, res.output
    assert gone["live"]["sessions"] == out["live"]["sessions"] and gone["model"]["removed"]
    assert gone["runs"][0]["removed"] and gone["expected"] is None and "was removed" in res.output
    (tmp_path / "removed-run").rename(run_dir)

    # --no-update refuses, naming what is missing, and changes nothing
    nxt = LIVE[LIVE.index(CHECK) + 1]
    path = tmp_path / f"{nxt}.parquet"
    bars.filter(pl.col("date") == nxt).write_parquet(path)
    assert cli("ingest", str(path), "--as-of", str(nxt)).exit_code == 0
    refused = cli("predict", "--exchange", "ALL", "--as-of", str(nxt), "--no-update")
    assert refused.exit_code == 1 and "indicators are missing or stale" in refused.output
