"""The sample market: real calendars, consistent OHLC, determinism, lifecycle, and its signal."""

from __future__ import annotations

import datetime as dt
import json
import os
from pathlib import Path

import numpy as np
import polars as pl

from retrain import calendar as cal
from retrain import sample
from retrain.calendar import AsOf
from retrain.status import exchange_status
from retrain.store import Store

END = dt.date(2025, 10, 17)


def _gen(**kw):
    args = {"symbols": 120, "days": 150, "seed": 3, "end": END} | kw
    return sample.generate(**args)


def test_shape_calendars_and_consistency():
    bars, syms = _gen()
    assert set(bars["exchange"].unique()) == {"NASDAQ", "NYSE", "TSE"}
    assert syms.height == 120 and syms["sector"].null_count() == 0 and syms["name"].null_count() == 0
    for ex in ("NASDAQ", "NYSE", "TSE"):
        dates = set(bars.filter(pl.col("exchange") == ex)["date"].unique())
        assert dates <= set(cal.sessions(ex, min(dates), max(dates))), ex
        assert max(dates) == END
    assert D_holiday_absent(bars)
    ok = bars.select(
        (pl.col("low") <= pl.min_horizontal("open", "close")).all().alias("low_ok"),
        (pl.col("high") >= pl.max_horizontal("open", "close")).all().alias("high_ok"),
        (pl.col("low") > 0).all().alias("positive"),
        (pl.col("volume") > 0).all().alias("volume"),
    ).row(0)
    assert all(ok)


def D_holiday_absent(bars: pl.DataFrame) -> bool:
    tse = bars.filter(pl.col("exchange") == "TSE")["date"]
    return dt.date(2025, 7, 1) not in tse.to_list()  # Canada Day


def test_deterministic_for_a_seed():
    a, sa = _gen()
    b, sb = _gen()
    assert a.equals(b) and sa.equals(sb)
    c, _ = _gen(seed=4)
    assert not a.equals(c)


def test_listings_delistings_and_missing_bars():
    bars, _ = _gen(symbols=300, days=200)
    per = bars.group_by("exchange", "symbol").agg(pl.len(), pl.col("date").min().alias("f"), pl.col("date").max().alias("l"))
    assert (per["f"] > per["f"].min()).sum() >= 3  # late listings
    assert (per["l"] < END).sum() >= 3  # delistings
    assert 0 < bars.height < 300 * 200


def _intraday_panel(bars: pl.DataFrame) -> pl.DataFrame:
    return bars.sort("exchange", "symbol", "date").with_columns(
        (pl.col("close") / pl.col("open") - 1).alias("r"),
    ).with_columns(pl.col("r").shift(1).over("exchange", "symbol").alias("r_prev")).drop_nulls("r_prev")


def _mean_rank_ic(panel: pl.DataFrame) -> float:
    ic = panel.group_by("exchange", "date").agg(
        pl.corr(pl.col("r_prev").rank(), pl.col("r").rank()).alias("ic")
    )
    return float(ic["ic"].mean())


def test_signal_is_there_and_no_signal_removes_it():
    with_signal = _mean_rank_ic(_intraday_panel(_gen(symbols=300, days=120)[0]))
    without = _mean_rank_ic(_intraday_panel(_gen(symbols=300, days=120, signal=False)[0]))
    assert with_signal < -0.03  # short-term reversal: yesterday's winners lag
    assert abs(without) < 0.015


def test_volume_comoves_with_absolute_returns():
    bars, _ = _gen()
    p = bars.with_columns((pl.col("close") / pl.col("open") - 1).abs().alias("a"), pl.col("volume").log().alias("lv"))
    c = p.group_by("exchange", "symbol").agg(pl.corr("a", "lv").alias("c"))["c"]
    assert float(np.nanmean(c.to_numpy())) > 0.1


def test_sample_data_cli_and_status(cli):
    r = cli("sample-data", "--symbols", "30", "--days", "60", "--end", "2025-10-17")
    assert r.exit_code == 0, r.output
    assert "Sample market" in r.output
    r = cli("sample-data", "--if-empty")
    assert "already holds bars" in r.output
    r = cli("status")
    assert r.exit_code == 0
    for ex in ("NASDAQ", "NYSE", "TSE"):
        assert ex in r.output
    import os

    from retrain.store import Store
    rows = exchange_status(Store(os.environ["RETRAIN_DATA_DIR"]))
    assert {r.exchange for r in rows} == {"NASDAQ", "NYSE", "TSE"}
    assert all(r.last_date == dt.date(2025, 10, 17) and r.sessions == 60 and r.sessions_without_bars == 0 for r in rows)
    assert AsOf().today("NYSE") >= dt.date(2025, 10, 17)


# ------------------------------------------------------------------ top-ups and --end
BAR_COLUMNS = ["exchange", "symbol", "date", "open", "high", "low", "close", "adj_close", "volume"]


def _store_bars() -> pl.DataFrame:
    return Store(os.environ["RETRAIN_DATA_DIR"]).scan_bars().collect().sort("exchange", "symbol", "date")


def test_prefix_stable_extension():
    e1, e2 = dt.date(2025, 10, 17), dt.date(2026, 1, 9)
    starts = sample.origins(120, e1)
    a, sa = sample.generate_from(symbols=60, days=120, seed=5, origins=starts, end=e1)
    b, sb = sample.generate_from(symbols=60, days=120, seed=5, origins=starts, end=e2)
    assert a.equals(sample.generate(symbols=60, days=120, seed=5, end=e1)[0])  # same as anchored at e1
    assert b.filter(pl.col("date") <= e1).equals(a) and sa.equals(sb)  # bit for bit up to e1
    new = b.filter(pl.col("date") > e1)
    for ex in ("NASDAQ", "NYSE", "TSE"):
        sess = cal.sessions(ex, starts[ex], e2)
        assert a.filter(pl.col("exchange") == ex)["date"].min() == starts[ex] and len(cal.sessions(ex, starts[ex], e1)) == 120
        assert sorted(new.filter(pl.col("exchange") == ex)["date"].unique()) == [d for d in sess if d > e1], ex
    # symbols delisted before e1 stay delisted; the others trade on
    last = a.group_by("exchange", "symbol").agg(pl.col("date").max())
    gone = last.filter(pl.col("date") < dt.date(2025, 10, 1))
    assert gone.height >= 3
    assert new.join(gone, on=["exchange", "symbol"], how="semi").is_empty()
    assert new.select("exchange", "symbol").unique().height == last.height - gone.height


def test_top_up_adds_the_sessions_in_between(cli):
    old, new = dt.date(2025, 10, 10), dt.date(2025, 10, 24)
    r = cli("sample-data", "--symbols", "60", "--days", "120", "--seed", "5", "--end", str(old))
    assert r.exit_code == 0, r.output
    before = _store_bars()
    r = cli("sample-data", "--top-up", "--as-of", str(new))
    assert r.exit_code == 0, r.output
    assert "topped up" in r.output and "10 new sessions after 2025-10-10" in r.output and "now ending 2025-10-24" in r.output
    after = _store_bars()
    added = after.filter(pl.col("date") > old)
    for ex in ("NASDAQ", "NYSE", "TSE"):
        expected = cal.sessions(ex, old + dt.timedelta(days=1), new)
        assert sorted(added.filter(pl.col("exchange") == ex)["date"].unique()) == expected, ex
    # the old bars were left as they were (same ingest batch), the new ones came in one batch
    assert after.filter(pl.col("date") <= old).equals(before)
    assert added["ingest_id"].n_unique() == 1 and not set(added["ingest_id"]) & set(before["ingest_id"])
    # ... and the whole equals a fresh sample to the later end from the same origins
    fresh, _ = sample.generate_from(symbols=60, days=120, seed=5, origins=sample.origins(120, old), end=new)
    assert after.select(BAR_COLUMNS).equals(fresh.select(BAR_COLUMNS))
    state = json.loads((Path(os.environ["RETRAIN_DATA_DIR"]) / "sample" / "_state.json").read_text())
    assert state["end"] == "2025-10-24" and state["seed"] == 5 and state["days"] == 120
    r = cli("sample-data", "--top-up", "--as-of", str(new))
    assert r.exit_code == 0 and "is up to date: it ends 2025-10-24" in r.output
    assert _store_bars().equals(after)
    r = cli("sample-data", "--top-up", "--seed", "6", "--as-of", str(new))
    assert r.exit_code == 1 and "--seed 6 does not match" in r.output


def test_top_up_writes_into_an_empty_store_and_leaves_own_bars_alone(cli, tmp_path, monkeypatch):
    r = cli("sample-data", "--top-up", "--symbols", "30", "--days", "60", "--as-of", "2025-10-18")
    assert r.exit_code == 0 and "written to" in r.output and "60 sessions ending 2025-10-17" in r.output

    monkeypatch.setenv("RETRAIN_DATA_DIR", str(tmp_path / "own"))  # a store with someone's own bars
    store = Store(tmp_path / "own")
    own = pl.DataFrame({"exchange": "NYSE", "symbol": "ABC", "date": [dt.date(2025, 10, 16), dt.date(2025, 10, 17)],
                        "open": 10.0, "high": 11.0, "low": 9.0, "close": 10.5, "adj_close": 10.5, "volume": 1000})
    with store.lock("test"):
        store.upsert_bars(own)
    before = _store_bars()
    r = cli("sample-data", "--top-up", "--as-of", "2025-10-24")
    assert r.exit_code == 0, r.output
    assert "not the sample market; nothing written" in r.output
    assert _store_bars().equals(before) and not (tmp_path / "own" / "sample").exists()


def test_end_in_the_future_is_refused(cli):
    r = cli("sample-data", "--symbols", "30", "--days", "60", "--end", "2025-10-17")
    before = _store_bars()
    r = cli("sample-data", "--symbols", "30", "--days", "60", "--end", "2025-10-24", "--as-of", "2025-10-20")
    assert r.exit_code == 1
    assert "error: --end 2025-10-24 is after --as-of 2025-10-20" in r.output
    future = AsOf().today("NYSE") + dt.timedelta(days=30)
    r = cli("sample-data", "--top-up", "--end", str(future))
    assert r.exit_code == 1 and f"--end {future} is after today" in r.output
    assert _store_bars().equals(before)


def test_end_on_a_non_session_snaps_back(cli):
    r = cli("sample-data", "--symbols", "30", "--days", "60", "--end", "2025-10-18")  # a Saturday
    assert r.exit_code == 0, r.output
    assert "--end 2025-10-18 is not a session; the sample ends at the previous session, 2025-10-17" in r.output
    assert _store_bars()["date"].max() == dt.date(2025, 10, 17)


def test_resolve_end():
    clock = AsOf.parse("2025-10-17T10:30")  # Friday morning: that session is not complete
    assert sample.resolve_end(None, clock) == (dt.date(2025, 10, 16), None)
    day, note = sample.resolve_end("2025-10-17", clock)
    assert day == dt.date(2025, 10, 16) and "not complete yet" in note and "2025-10-16" in note
    assert sample.resolve_end("2025-10-15", clock) == (dt.date(2025, 10, 15), None)
    day, note = sample.resolve_end("2025-07-04", clock)  # Independence Day
    assert day == dt.date(2025, 7, 3) and "is not a session" in note
