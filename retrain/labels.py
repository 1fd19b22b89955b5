"""Labels: what happened in session T, from T's own bar, for complete sessions only.

* ``intraday_return`` = close_T / open_T - 1 (what the model predicts);
* ``max_favorable_excursion`` = high_T / open_T - 1;
* ``max_adverse_excursion`` = low_T / open_T - 1;
* ``open``, ``high``, ``low``, ``close`` of T.

A session is complete after its close (see ``calendar.AsOf``): today before the close, and any
later session, get no label. Labels do not depend on the feature version.
"""

from __future__ import annotations

import datetime as dt

import polars as pl

INPUTS = ["symbol", "date", "open", "high", "low", "close"]  # the bar columns a label reads


def label_rows(bars: pl.LazyFrame, last_complete: dt.date) -> pl.LazyFrame:
    """Label rows for bars dated on or before ``last_complete``: the labels view
    (sql/view_labels.sql) in Polars, for in-memory work such as the benchmark's side-by-side."""
    return bars.filter(pl.col("date") <= last_complete).select(
        "symbol",
        "exchange",
        pl.col("date").alias("trade_date"),
        (pl.col("close") / pl.col("open") - 1).alias("intraday_return"),
        (pl.col("high") / pl.col("open") - 1).alias("max_favorable_excursion"),
        (pl.col("low") / pl.col("open") - 1).alias("max_adverse_excursion"),
        "open", "high", "low", "close",
    )
