"""A straightforward pandas groupby implementation of the same indicators, features and labels.

This is the code one writes first: ``groupby`` + ``rolling`` / ``ewm`` / ``shift`` per feature.
`make bench` times it side by side with retrain's Polars build on the same bars (computation
only, no I/O on either side). It is a speed reference: its Wilder/EMA smoothing is pandas'
``ewm`` without TA-Lib's seeding, so early values differ slightly; the work done is the same.
"""

from __future__ import annotations

import numpy as np
import pandas as pd


def build(bars: pd.DataFrame, sectors: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(features, labels) for every bar of ``bars`` (exchange, symbol, date, OHLCV)."""
    df = bars.sort_values(["exchange", "symbol", "date"]).reset_index(drop=True)
    df = df.merge(sectors, on=["exchange", "symbol"], how="left")
    g = df.groupby(["exchange", "symbol"], sort=False)
    close, volume = df["close"], df["volume"].astype(float)

    # indicators
    change = g["close"].diff()
    df["_gain"], df["_loss"] = change.clip(lower=0), (-change).clip(lower=0)
    avg_gain = df.groupby(["exchange", "symbol"], sort=False)["_gain"].transform(lambda s: s.ewm(alpha=1 / 14, adjust=False).mean())
    avg_loss = df.groupby(["exchange", "symbol"], sort=False)["_loss"].transform(lambda s: s.ewm(alpha=1 / 14, adjust=False).mean())
    df["rsi"] = 100 * avg_gain / (avg_gain + avg_loss)
    fast = g["close"].transform(lambda s: s.ewm(span=12, adjust=False).mean())
    slow = g["close"].transform(lambda s: s.ewm(span=26, adjust=False).mean())
    df["macd"] = fast - slow
    df["macd_signal"] = df.groupby(["exchange", "symbol"], sort=False)["macd"].transform(lambda s: s.ewm(span=9, adjust=False).mean())
    df["macd_histogram"] = df["macd"] - df["macd_signal"]
    prev_close = g["close"].shift(1)
    df["_tr"] = pd.concat([df["high"] - df["low"], (df["high"] - prev_close).abs(), (df["low"] - prev_close).abs()], axis=1).max(axis=1)
    df["atr"] = df.groupby(["exchange", "symbol"], sort=False)["_tr"].transform(lambda s: s.ewm(alpha=1 / 14, adjust=False).mean())
    df["_signed"] = np.sign(change.fillna(0)) * volume
    df["obv"] = df.groupby(["exchange", "symbol"], sort=False)["_signed"].cumsum()

    # features (as of each bar's close)
    f = pd.DataFrame({"exchange": df["exchange"], "symbol": df["symbol"], "date": df["date"]})
    r1 = g["close"].pct_change()
    df["_r1"] = r1
    g = df.groupby(["exchange", "symbol"], sort=False)
    roll = lambda col, k, how: g[col].transform(lambda s: getattr(s.rolling(k), how)())  # noqa: E731
    for k in (1, 3, 5, 10, 20):
        f[f"return_{k}"] = g["close"].pct_change(k)
    f["volatility_10"], f["volatility_20"] = roll("_r1", 10, "std"), roll("_r1", 20, "std")
    for k in (1, 3, 5, 10, 20):
        f[f"momentum_{k}"] = f[f"return_{k}"] / (f["volatility_20"] * np.sqrt(k))
    f["price_rel_5"] = close / roll("close", 5, "mean") - 1
    f["price_rel_20"] = close / roll("close", 20, "mean") - 1
    df["_logc"] = np.log(close)
    x = np.arange(30) - 14.5
    f["trend_30"] = df.groupby(["exchange", "symbol"], sort=False)["_logc"].transform(
        lambda s: s.rolling(30).apply(lambda y: float(np.dot(x, y) / np.dot(x, x)), raw=True))
    f["dist_high_20"] = close / roll("high", 20, "max") - 1
    f["dist_low_20"] = close / roll("low", 20, "min") - 1
    df["_dv"] = close * volume
    df["_vf"] = volume
    g = df.groupby(["exchange", "symbol"], sort=False)
    for k in (5, 10, 20):
        f[f"avg_volume_{k}"] = roll("_vf", k, "mean")
        f[f"volume_ratio_{k}"] = volume / f[f"avg_volume_{k}"]
        f[f"avg_dollar_volume_{k}"] = roll("_dv", k, "mean")
    f["atr_ratio"] = df["atr"] / close
    f["rsi_14"] = df["rsi"]
    f["macd_ratio"], f["macd_signal_ratio"], f["macd_hist_ratio"] = (df[c] / close for c in ("macd", "macd_signal", "macd_histogram"))
    f["obv_slope_10"] = (df["obv"] - g["obv"].shift(10)) / roll("_vf", 10, "sum")
    f["intraday_return"] = close / df["open"] - 1
    f["overnight_gap"] = df["open"] / prev_close - 1
    f["range"] = (df["high"] - df["low"]) / close
    f["close_location"] = ((close - df["low"]) / (df["high"] - df["low"])).where(df["high"] > df["low"])
    df["_ir"] = close / df["open"] - 1
    market = df.groupby(["exchange", "date"])["_ir"].mean().rename("market_return")
    sector = df.groupby(["exchange", "sector", "date"])["_ir"].mean().rename("sector_return")
    f["sector"] = df["sector"]
    f = f.join(market, on=["exchange", "date"]).join(sector, on=["exchange", "sector", "date"])
    f["rel_strength_market"] = f["intraday_return"] - f["market_return"]
    f["rel_strength_sector"] = f["intraday_return"] - f["sector_return"]
    f["prev_close"] = close
    # the trade date is the next bar's date (the session after for the last bar)
    f["trade_date"] = f.groupby(["exchange", "symbol"], sort=False)["date"].shift(-1)
    f["day_of_week"] = pd.to_datetime(f["trade_date"]).dt.weekday + 1

    labels = pd.DataFrame({
        "exchange": df["exchange"], "symbol": df["symbol"], "trade_date": df["date"],
        "intraday_return": close / df["open"] - 1,
        "max_favorable_excursion": df["high"] / df["open"] - 1,
        "max_adverse_excursion": df["low"] / df["open"] - 1,
        "open": df["open"], "high": df["high"], "low": df["low"], "close": close,
    })
    return f, labels
