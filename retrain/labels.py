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
from retrain.store import Store, split_by_month

LABEL_COLUMNS = ["intraday_return", "max_favorable_excursion", "max_adverse_excursion", "open", "high", "low", "close"]


def label_rows(bars: pl.LazyFrame, last_complete: dt.date) -> pl.LazyFrame:
    """Label rows for bars dated on or before ``last_complete``."""
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
    last_complete: dict = field(default_factory=dict)


def update(
    store: Store,
    exchanges: list[str],
    as_of: AsOf,
    start: dt.date | None = None,
    end: dt.date | None = None,
    bars: dict[str, pl.DataFrame] | None = None,
) -> LabelResult:
    """Label complete sessions. By default incremental: months whose bars changed since the last
    run, and sessions completed since. With start/end: exactly that range (re)labelled."""
    result = LabelResult()
    with store.lock("retrain labels"):
        state = store.read_state("labels")
        for exchange in exchanges:
            last_complete = as_of.last_complete_session(exchange)
            result.last_complete[exchange] = last_complete
            if last_complete is None:
                continue
            st = state.get(exchange, {})
            months = store.months(exchange)
            if start or end:
                lo, hi = start or dt.date.min, min(end or last_complete, last_complete)
                if not calendar.sessions(exchange, max(lo, dt.date(1970, 1, 2)), hi):
                    raise RetrainError(f"no complete sessions of {exchange} between {start or '-'} and {end or '-'}",
                                       hint=f"the last complete {exchange} session as of {as_of.label()} is {last_complete}")
                todo = [m for m in months if lo.strftime("%Y-%m") <= m <= hi.strftime("%Y-%m")]
            else:
                lo, hi = dt.date.min, last_complete
                changed = store.changed_bars(exchange, int(st.get("built_ingest_id", 0)))
                todo = set(changed["date"].dt.strftime("%Y-%m").unique().to_list())
                prev = st.get("last_complete")
                if prev and dt.date.fromisoformat(prev) != last_complete:  # sessions completed (or un-completed) since
                    a, b = sorted([dt.date.fromisoformat(prev), last_complete])
                    todo |= {m for m in months if a.strftime("%Y-%m") <= m <= b.strftime("%Y-%m")}
                todo = sorted(todo)
            given = (bars or {}).get(exchange) if len(todo) == len(months) else None  # all of it
            built_id = int(given["ingest_id"].max() or 0) if given is not None else store.max_ingest_id(exchange)
            written = 0
            if todo:
                source = given.lazy() if given is not None else store.read_months(exchange, todo).lazy()
                new = label_rows(source, last_complete).filter(pl.col("trade_date").is_between(lo, hi)).collect()
                written = new.height
                if new.height:
                    span = new["trade_date"].min(), new["trade_date"].max()
                    result.ranges[exchange] = span
                parts = {(m,): v for m, v in split_by_month(new, "trade_date").items()}
                for month in todo:
                    part = parts.get((month,), new.clear())
                    m0 = dt.date.fromisoformat(f"{month}-01")
                    m1 = (m0 + dt.timedelta(days=32)).replace(day=1) - dt.timedelta(days=1)
                    if (start or end) and not (lo <= m0 and m1 <= hi):  # keep this month's labels outside the range
                        old = store.read_table_partition("labels", exchange, month)
                        if old is not None:
                            old = old.filter(~pl.col("trade_date").is_between(lo, hi))
                            part = pl.concat([old, part.drop("exchange")], how="diagonal_relaxed")
                    parts[(month,)] = part.sort("trade_date", "symbol")
                store.write_table_partitions("labels", exchange, {m: parts[(m,)] for m in todo})
            result.by_exchange[exchange] = written
            result.rows += written
            if not (start or end):
                state[exchange] = {"built_ingest_id": built_id, "last_complete": last_complete.isoformat()}
                store.write_state("labels", state)
    return result
