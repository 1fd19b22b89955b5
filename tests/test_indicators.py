"""Indicators: TA-Lib parity, and incremental updates equal to a full recomputation, bit for bit."""

from __future__ import annotations

import datetime as dt

import numpy as np
import polars as pl
import pytest
import talib

from retrain import indicators as ind
from retrain import sample, steps
from retrain.schema import INDICATOR_COLUMNS, STATE_COLUMNS
from tests.conftest import bars_of

END = dt.date(2025, 10, 17)


@pytest.fixture(scope="module")
def market() -> pl.DataFrame:
    bars, _ = sample.generate(symbols=24, days=130, seed=5, end=END)
    first = bars["symbol"][0]
    # a short history (20 bars: MACD never defined) and one with several missing bars
    short = bars.filter(pl.col("symbol") == first).head(20).with_columns(pl.lit("SHORT").alias("symbol"))
    holey = bars.filter(pl.col("symbol") == first).with_columns(pl.lit("HOLEY").alias("symbol"))
    holey = holey.filter(pl.int_range(pl.len()) % 7 != 3)
    return pl.concat([bars, short, holey])


def _talib(g: pl.DataFrame) -> dict[str, np.ndarray]:
    h, lo, c, v = (g[x].to_numpy().astype(float) for x in ("high", "low", "close", "volume"))
    macd, signal, hist = talib.MACD(c, 12, 26, 9)
    return {"rsi": talib.RSI(c, 14), "atr": talib.ATR(h, lo, c, 14), "obv": talib.OBV(c, v),
            "macd": macd, "macd_signal": signal, "macd_histogram": hist}


def test_talib_parity(market):
    out = ind.compute_full(market)
    checked = 0
    for _, g in out.group_by(["exchange", "symbol"]):
        g = g.sort("date")
        for name, ref in _talib(g).items():
            mine = g[name].to_numpy().astype(float)
            assert np.array_equal(np.isnan(ref), np.isnan(mine)), name  # null exactly where TA-Lib is NaN
            ok = ~np.isnan(ref)
            np.testing.assert_allclose(mine[ok], ref[ok], rtol=1e-10, atol=1e-9, err_msg=name)
            checked += int(ok.sum())
    assert checked > 10_000
    short = out.filter(pl.col("symbol") == "SHORT")
    assert short["macd"].null_count() == 20 and short["rsi"].null_count() == 14


def test_rsi_is_zero_without_any_change():
    n = 20
    flat = pl.DataFrame({"exchange": "NYSE", "symbol": "F", "date": [END - dt.timedelta(days=n - i) for i in range(n)],
                         "open": 5.0, "high": 5.0, "low": 5.0, "close": 5.0, "volume": 10})
    rsi = ind.compute_full(flat)["rsi"].to_numpy()
    ref = talib.RSI(np.full(n, 5.0), 14)
    assert np.array_equal(np.isnan(rsi.astype(float)), np.isnan(ref)) and rsi[-1] == ref[-1] == 0.0


def _ingest(store, bars: pl.DataFrame) -> None:
    with store.lock("test"):
        store.upsert_bars(bars.select("exchange", "symbol", "date", "open", "high", "low", "close", "adj_close", "volume"))


def _indicator_frame(store) -> pl.DataFrame:
    return bars_of(store).select("exchange", "symbol", "date", *INDICATOR_COLUMNS, *STATE_COLUMNS)


def test_incremental_equals_full_session_by_session(store, market):
    dates = sorted(market["date"].unique())
    cut = dates[80]
    _ingest(store, market.filter(pl.col("date") <= cut))
    steps.indicators(store, store.exchanges())
    for day in dates[81:86]:  # one session at a time
        _ingest(store, market.filter(pl.col("date") == day))
        res = steps.indicators(store, store.exchanges())
        new = market.filter(pl.col("date") == day).height
        # only the new bars, plus the whole (short) history of symbols too young to have an anchor
        assert new <= res.updated <= new + 2 * ind.MIN_ANCHOR
    _ingest(store, market.filter(pl.col("date") > dates[85]))
    steps.indicators(store, store.exchanges())
    incremental = _indicator_frame(store)
    steps.indicators(store, store.exchanges(), force=True)
    full = _indicator_frame(store)
    assert incremental.equals(full)  # bit for bit, nulls included
    expected = ind.compute_full(market).sort("exchange", "symbol", "date")
    assert full.select(INDICATOR_COLUMNS).equals(expected.select(INDICATOR_COLUMNS))


def test_changed_past_bar_recomputes_that_symbol_onwards(store, market):
    _ingest(store, market)
    steps.indicators(store, store.exchanges())
    before = _indicator_frame(store)
    sym = market.filter(pl.col("exchange") == "NYSE")["symbol"][0]
    day = sorted(market["date"].unique())[60]
    changed = market.filter((pl.col("symbol") == sym) & (pl.col("date") == day) & (pl.col("exchange") == "NYSE"))
    changed = changed.with_columns((pl.col("close") * 1.03).alias("close"), (pl.col("high") * 1.03).alias("high"))
    _ingest(store, changed)
    steps.indicators(store, store.exchanges())
    incremental = _indicator_frame(store)
    steps.indicators(store, store.exchanges(), force=True)
    assert incremental.equals(_indicator_frame(store))
    diff = incremental.join(before, on=["exchange", "symbol", "date"], suffix="_b").filter(
        pl.col("rsi").ne_missing(pl.col("rsi_b")))
    assert set(diff["symbol"]) == {sym} and diff["date"].min() == day  # that symbol, from that bar on
