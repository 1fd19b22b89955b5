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
from dataclasses import dataclass, field

import polars as pl

from retrain import calendar
from retrain.calendar import AsOf
from retrain.errors import RetrainError
from retrain.store import Store


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


@dataclass
class LabelResult:
    rows: int = 0
    by_exchange: dict = field(default_factory=dict)
    ranges: dict = field(default_factory=dict)  # exchange -> (first, last) session labelled
    last_complete: dict = field(default_factory=dict)  # exchange -> last complete session as of the clock
    horizon: dict = field(default_factory=dict)  # exchange -> last session the labels view covers now


def update(
    store: Store,
    exchanges: list[str],
    as_of: AsOf,
    start: dt.date | None = None,
    end: dt.date | None = None,
) -> LabelResult:
    """Label the sessions complete as of ``as_of``. Labels are a view over the bars (sql/view_labels.sql):
    this records, per exchange, the last complete session the view covers (its horizon), and
    reports the sessions newly labelled (or, with start/end, the range asked for, bounded by
    ``as_of``). A bar re-ingested later relabels its session by itself.

    The horizon only moves forward: a past ``as_of`` reads the past (callers bound their reads
    by ``result.last_complete``) and never unlabels sessions that have closed since."""
    result = LabelResult()
    with store.lock("retrain labels"):
        state = store.read_state("labels")
        changed = False
        for exchange in exchanges:
            last_complete = as_of.last_complete_session(exchange)
            recorded = state.get(exchange, {}).get("last_complete")
            previous = dt.date.fromisoformat(recorded) if recorded else None
            horizon = max(filter(None, (previous, last_complete)), default=None)  # never moves back
            result.last_complete[exchange] = last_complete
            if horizon is None:  # no session complete yet as of then, and none recorded
                continue
            result.horizon[exchange] = horizon
            if start or end:
                if last_complete is None:
                    raise RetrainError(f"no complete sessions of {exchange} as of {as_of.label()}",
                                       hint="pass a later --as-of")
                lo, hi = start or dt.date.min, min(end or last_complete, last_complete)
                if not calendar.sessions(exchange, max(lo, dt.date(1970, 1, 2)), hi):
                    raise RetrainError(f"no complete sessions of {exchange} between {start or '-'} and {end or '-'}",
                                       hint=f"the last complete {exchange} session as of {as_of.label()} is {last_complete}")
            elif last_complete is None or (previous is not None and previous >= last_complete):
                lo = hi = None  # nothing new: the horizon is already there (or later)
            elif previous:
                lo, hi = previous + dt.timedelta(days=1), last_complete
            else:
                lo, hi = dt.date.min, last_complete
            if lo is not None:
                span = (store.scan_bars(exchange).filter(pl.col("date").is_between(lo, hi))
                        .select(pl.len(), pl.col("date").min().alias("first"), pl.col("date").max().alias("last"))
                        .collect().row(0))
                if span[0]:
                    result.ranges[exchange] = (span[1], span[2])
                    result.by_exchange[exchange] = span[0]
                    result.rows += span[0]
            if horizon != previous:
                state[exchange] = {"last_complete": horizon.isoformat()}
                changed = True
        if changed:
            store.write_state("labels", state)
    return result
