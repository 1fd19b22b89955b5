"""What the store holds, per exchange: symbols, bars, first/last session, gaps, indicator coverage."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import numpy as np
import polars as pl

from retrain import calendar
from retrain.store import Store

LOW_RSI_COVERAGE = 0.9  # below this share of recent bars with RSI, the run and `retrain indicators` warn


@dataclass
class ExchangeStatus:
    exchange: str
    symbols: int
    bars: int
    first_date: dt.date
    last_date: dt.date
    sessions: int  # calendar sessions from first to last date
    sessions_without_bars: int  # sessions in that span with no bar at all on the exchange
    missing_symbol_bars: int  # (symbol, session) gaps inside each symbol's own first..last span
    bars_with_rsi: int

    @property
    def rsi_coverage(self) -> float:
        return self.bars_with_rsi / self.bars if self.bars else 0.0


def exchange_status(store: Store, exchange: str | None = None) -> list[ExchangeStatus]:
    """One ExchangeStatus per exchange with bars (or only ``exchange``)."""
    bars = store.scan_bars(exchange).select("exchange", "symbol", "date", "rsi")
    per_symbol = (
        bars.group_by("exchange", "symbol")
        .agg(pl.len().alias("bars"), pl.col("date").min().alias("first"), pl.col("date").max().alias("last"),
             pl.col("rsi").count().alias("rsi"))
        .collect()
    )
    dates = bars.select("exchange", "date").unique().collect()
    out = []
    for ex in sorted(per_symbol["exchange"].unique().to_list()):
        ps = per_symbol.filter(pl.col("exchange") == ex)
        sess = calendar.session_array(ex)
        first = np.searchsorted(sess, ps["first"].to_numpy().astype("datetime64[D]"), "left")
        last = np.searchsorted(sess, ps["last"].to_numpy().astype("datetime64[D]"), "right")
        expected = int((last - first).sum())
        lo, hi = ps["first"].min(), ps["last"].max()
        span = calendar.sessions(ex, lo, hi)
        have = dates.filter(pl.col("exchange") == ex).height
        out.append(
            ExchangeStatus(
                exchange=ex,
                symbols=ps.height,
                bars=int(ps["bars"].sum()),
                first_date=lo,
                last_date=hi,
                sessions=len(span),
                sessions_without_bars=len(span) - have,
                missing_symbol_bars=expected - int(ps["bars"].sum()),
                bars_with_rsi=int(ps["rsi"].sum()),
            )
        )
    return out
