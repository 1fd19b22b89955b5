"""The columns and types of what the store holds: one definition, used by the store, the
catalog and the pure compute modules (which never import the store)."""

from __future__ import annotations

import polars as pl

PRICE_COLUMNS = ["open", "high", "low", "close", "adj_close"]
INDICATOR_COLUMNS = ["rsi", "macd", "macd_signal", "macd_histogram", "atr", "obv"]
# Recursion state behind the indicators (not part of the day_symbol view): the bar's position in
# its symbol's history and the running Wilder/EMA averages. With them an incremental update
# continues from the last computed bar instead of re-reading all history. Null = not computed.
STATE_COLUMNS = ["_n", "_avg_gain", "_avg_loss", "_ema_fast", "_ema_slow"]
BAR_SCHEMA: dict[str, pl.DataType] = {
    "symbol": pl.String,
    "date": pl.Date,
    "open": pl.Float64,
    "high": pl.Float64,
    "low": pl.Float64,
    "close": pl.Float64,
    "adj_close": pl.Float64,
    "volume": pl.Int64,
    **{c: pl.Float64 for c in INDICATOR_COLUMNS},
    "_n": pl.Int64,
    **{c: pl.Float64 for c in STATE_COLUMNS[1:]},
    "ingest_id": pl.Int64,
}
SYMBOL_SCHEMA: dict[str, pl.DataType] = {
    "symbol": pl.String,
    "exchange": pl.String,
    "name": pl.String,
    "sector": pl.String,
}
VALUE_COLUMNS = ["open", "high", "low", "close", "adj_close", "volume"]
