"""The sample market: real calendars, consistent OHLC, determinism, lifecycle, and its signal."""

from __future__ import annotations

import datetime as dt

import numpy as np
import polars as pl

from retrain import calendar as cal
from retrain import sample
from retrain.calendar import AsOf
from retrain.status import exchange_status

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
