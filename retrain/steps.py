"""The data steps: indicators, feature snapshots and labels.

Each step holds the store's lock and does, in this order: plan (what is stale or new), read,
compute (the pure modules ``indicators``, ``features``, ``labels``: frames in, frames out),
write, and record its state. Writes go to one background ``Writer`` so the next piece computes
while the previous one is written.

A full rebuild, and any build of a long span, works through bounded chunks of months: the
indicators carry their recursion state from one chunk to the next (``indicators.compute_chunk``),
and each chunk of feature rows reads its own window of bars with the lookback margin. Peak memory
follows ``chunk_bars``, not the length of history; the result is the same, bit for bit, as one
chunk gives.
"""

from __future__ import annotations

import datetime as dt
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial

import polars as pl

from retrain import calendar
from retrain import features as feat
from retrain import indicators as ind
from retrain import labels as lab
from retrain.calendar import AsOf
from retrain.errors import RetrainError
from retrain.files import IO_THREADS, fault_point, parallel_map
from retrain.schema import BAR_SCHEMA
from retrain.store import Store, split_by_month

# Bars per chunk of a full rebuild (whole months; at least one month a chunk), at any length of
# history. A feature chunk also computes MARGIN_SESSIONS of bars before it: the larger the
# chunk, the smaller that share (at 10,000 symbols, 40 sessions are 400,000 bars). Peak memory
# at 10,000 symbols: see BENCHMARKS.md, "Long history".
CHUNK_BARS = 1_000_000
FEATURE_CHUNK_BARS = 800_000
MARGIN_SESSIONS = 40  # sessions of history read before the first session of feature rows to build (wider when needed)
PROGRESS_MONTHS = 6  # a progress line every this many feature month files written


class Writer:
    """One background writer. ``submit(fn, *args, done=callback)`` waits for the previous write
    (then runs its ``done`` on the caller's thread), and starts this one; so writes run one at a
    time, in order, while the caller computes the next piece. Leaving the block waits for the
    last write; after an error in the block, the write in flight finishes and no ``done`` runs."""

    def __enter__(self) -> Writer:
        self._pool = ThreadPoolExecutor(max_workers=1)
        self._pending = None
        return self

    def submit(self, fn, *args, done=None) -> None:
        self.wait()
        self._pending = (self._pool.submit(fn, *args), done)

    def wait(self) -> None:
        if self._pending:
            future, done = self._pending
            self._pending = None
            future.result()
            if done:
                done()

    def __exit__(self, kind, exc, tb) -> None:
        try:
            if kind is None:
                self.wait()
        finally:
            self._pool.shutdown(wait=True)


def _bars_per_month(store: Store, exchange: str) -> dict[str, int]:
    stats = store.file_stats(exchange)
    return dict(zip(stats["month"].to_list(), stats["rows"].to_list()))


# ------------------------------------------------------------------ indicators
@dataclass
class IndicatorResult:
    updated: int = 0  # bars whose indicators were (re)computed
    symbols: int = 0
    months_written: int = 0
    by_exchange: dict[str, int] = field(default_factory=dict)


def indicators(store: Store, exchanges: list[str], force: bool = False, progress=None,
               chunk_bars: int = CHUNK_BARS) -> IndicatorResult:
    """Compute indicators that are missing or stale (bars changed since the last computation,
    and every later bar of those symbols). ``force`` recomputes everything, in chunks of about
    ``chunk_bars`` bars. ``progress(exchange, bars updated, symbols)`` after each exchange."""
    result = IndicatorResult()
    with store.lock("retrain indicators"), Writer() as writer:
        for exchange in exchanges:
            months = store.months(exchange)
            stale = months if force else store.stale_months(exchange)
            if not stale:
                result.by_exchange[exchange] = 0
                continue
            if force:
                updated, n_symbols, written = _indicators_in_chunks(store, writer, exchange, months, chunk_bars)
            else:
                first = months.index(stale[0])
                window = months[max(0, first - 2):]  # two months before: room for each symbol's anchor
                flagged = ind.flags(store.read_months(exchange, window))
                missing = ind.without_anchor(flagged)
                history = (store.read_months(exchange, months[:max(0, first - 2)], symbols=missing)
                           if missing else None)
                done, n_symbols = ind.update_window(flagged, history)
                # Rewrite only months from the first stale one on; earlier months are unchanged.
                todo = {m: part for m, part in split_by_month(done, "date").items() if m >= stale[0]}
                writer.submit(store.write_partitions, exchange, todo)
                updated, written = int(done["_recomputed"].sum()), len(todo)
            result.months_written += written
            result.updated += updated
            result.symbols += n_symbols
            result.by_exchange[exchange] = updated
            if progress:
                progress(exchange, updated, n_symbols)
    return result


def _indicators_in_chunks(store: Store, writer: Writer, exchange: str, months: list[str],
                          chunk_bars: int) -> tuple[int, int, int]:
    """Every bar of ``exchange`` from each symbol's first, chunk by chunk; (bars, symbols, months written)."""
    sizes = _bars_per_month(store, exchange)
    chunks: list[list[str]] = [[]]
    for m in months:
        if chunks[-1] and sum(sizes.get(x, 0) for x in chunks[-1]) + sizes.get(m, 0) > chunk_bars:
            chunks.append([])
        chunks[-1].append(m)
    carry, updated, written = None, 0, 0
    source = [c for c in BAR_SCHEMA if c not in ind.DERIVED]  # what a rebuild recomputes is not read
    for chunk in chunks:
        done, carry = ind.compute_chunk(store.read_months(exchange, chunk, columns=source), carry)
        todo = split_by_month(done.drop("exchange"), "date")  # sorted by symbol, date within each month
        writer.submit(store.write_partitions, exchange, todo, True)
        updated += done.height
        written += len(todo)
    return updated, (carry["symbol"].n_unique() if carry is not None else 0), written


# ------------------------------------------------------------------ features
@dataclass
class FeatureResult:
    version: str
    rows: int = 0
    sessions: int = 0
    by_exchange: dict | None = None
    mode: str = "incremental"
    ranges: dict | None = None  # exchange -> (first, last) trade date built
    up_to_date: bool = False


def feature_columns(store: Store, version: str) -> list[str]:
    """The feature columns of ``version``: those recorded with its rows, else its definitions'."""
    return feat.feature_columns(version, store.read_state("features", version))


def features(
    store: Store,
    version: str,
    exchanges: list[str],
    start: dt.date | None = None,
    end: dt.date | None = None,
    full_rebuild: bool = False,
    progress=None,
    chunk_bars: int = FEATURE_CHUNK_BARS,
) -> FeatureResult:
    """Build feature rows for ``version``: incremental by default (new sessions plus whatever
    depends on bars changed since the last build), everything with ``full_rebuild``, or exactly
    the trade dates in [start, end]. ``progress(exchange, last session written, sessions done,
    sessions, rows written)`` every few month files."""
    result = FeatureResult(version=version, by_exchange={}, ranges={},
                           mode="full rebuild" if full_rebuild else ("range" if start or end else "incremental"))
    with store.lock("retrain features"):
        state = store.read_state("features", version)
        definition = feat.check_definitions(state, version, full_rebuild)
        plans = [(exchange, _plan_features(store, exchange, version, state.get(exchange, {}), start, end, full_rebuild))
                 for exchange in exchanges]
        with Writer() as writer:
            for exchange, plan in plans:
                if plan is None:
                    result.by_exchange[exchange] = 0
                    continue
                first_t, last_t, bars, built_id = plan
                n_sessions = len(calendar.sessions(exchange, first_t, last_t))
                pieces = ([(first_t, last_t)] if bars is not None else
                          feat.month_chunks(exchange, first_t, last_t, _bars_per_month(store, exchange), chunk_bars))
                done_sessions = written = n_rows = 0
                for i, (lo, hi) in enumerate(pieces):
                    frame = bars if bars is not None else _feature_window(store, exchange, version, lo, hi)
                    rows = feat.snapshots(frame, exchange, lo, hi, version)
                    del frame
                    n_rows += rows.height
                    count = (done_sessions, n_sessions, written)
                    record = partial(_record_features, store, version, state, result, full_rebuild, exchange,
                                     first_t, last_t, built_id, n_rows, n_sessions)
                    writer.submit(_write_features, store, version, exchange, rows, lo, hi, progress, count,
                                  done=record if i == len(pieces) - 1 else None)
                    done_sessions += len(calendar.sessions(exchange, lo, hi))
                    written += rows.height
                    del rows
        if state.get(feat.DEFINITION) != definition:  # recorded with the rows (adopted by an older store)
            state[feat.DEFINITION] = definition
            store.write_state("features", state, version)
    result.up_to_date = not result.ranges
    return result


def _record_features(store: Store, version: str, state: dict, result: FeatureResult, full_rebuild: bool,
                     exchange: str, first_t, last_t, built_id, n_rows: int, n_sessions: int) -> None:
    """After an exchange's files are written: count it and record its state."""
    result.rows += n_rows
    result.sessions += n_sessions
    result.by_exchange[exchange] = n_rows
    result.ranges[exchange] = (first_t, last_t)
    # first_trade_date: the first session any build covered (`retrain run` extends from it)
    before = state.get(exchange, {})
    first = before.get("first_trade_date")
    if full_rebuild or not before:
        first = first_t.isoformat()
    elif first:
        first = min(first, first_t.isoformat())
    if built_id is not None:
        state[exchange] = {"built_ingest_id": built_id, "last_trade_date": last_t.isoformat()}
    if first and exchange in state:
        state[exchange]["first_trade_date"] = first
    if exchange in state:
        store.write_state("features", state, version)


def _plan_features(store: Store, exchange: str, version: str, st: dict, start, end, full_rebuild: bool):
    """(first trade date, last trade date, the bars to build them from, or None when they are
    read chunk by chunk, the new built ingest id or None), or None when nothing is to be done."""
    built_id = store.max_ingest_id(exchange)
    all_first, all_last = store.date_span(exchange)
    incremental = not (start or end or full_rebuild or not st)
    changed = store.changed_bars(exchange, int(st.get("built_ingest_id", 0))) if incremental else None
    first_changed = changed["date"].min() if changed is not None and changed.height else None
    span = feat.plan_span(exchange, st, (all_first, all_last), start, end, full_rebuild, first_changed)
    if span is None:
        return None
    first_t, last_t = span
    new_id = None if (start or end) else built_id
    if not incremental:
        return first_t, last_t, None, new_id
    bars = _feature_window(store, exchange, version, first_t, last_t)
    earlier = feat.served_earlier(bars, changed, exchange)
    if earlier is not None and earlier < first_t:
        first_t = earlier
        bars = _feature_window(store, exchange, version, first_t, last_t)
    return first_t, last_t, bars, new_id


def _feature_window(store: Store, exchange: str, version: str, first_t: dt.date, last_t: dt.date) -> pl.DataFrame:
    """The bars (with sector; only the columns a build of ``version`` reads) that the rows of
    trade dates [first_t, last_t] are built from: from ``MARGIN_SESSIONS`` before first_t (wider
    while a symbol's windows would be cut short) to last_t's month. Month files are read whole,
    but only the margin's sessions of the first ones are kept: the computation, the bulk of a
    long rebuild, covers no more than it needs."""
    months = store.months(exchange)
    last_month = last_t.strftime("%Y-%m")
    margin = MARGIN_SESSIONS
    columns = feat.input_columns(version, BAR_SCHEMA)
    first_bar = store.date_span(exchange)[0]
    while True:
        start = feat.window_start(exchange, first_t, margin)
        first_month = start.strftime("%Y-%m")
        bars = store.read_months(exchange, [m for m in months if first_month <= m <= last_month], columns=columns)
        tight = bars.filter(pl.col("date") >= start)
        # From the exchange's first bar on, no window can be cut short: there is nothing before.
        if start <= first_bar or not feat.truncated(tight, first_t, exchange):
            bars = tight
            break
        if first_month <= months[0] or not feat.truncated(bars, first_t, exchange) or margin > 100_000:
            break
        margin *= 4
    stale = bars.filter(pl.col("_n").is_null())
    if stale.height:
        raise RetrainError(
            f"indicators are missing for {stale.height:,} {exchange} bars (first: {stale['symbol'][0]} {stale['date'].min()})",
            hint="run `retrain indicators` first (`retrain run` does it for you)",
        )
    syms = store.read_symbols().select("exchange", "symbol", "sector")
    return bars.join(syms, on=["exchange", "symbol"], how="left", maintain_order="left")


def _write_features(store: Store, version: str, exchange: str, rows: pl.DataFrame, first_t, last_t, progress,
                    count: tuple[int, int, int]) -> None:
    """Replace the rows with trade dates in [first_t, last_t], one month file at a time.
    ``count``: (sessions done before, sessions in the whole build, rows written before)."""
    parts, per_month = feat.by_month(rows, exchange, first_t, last_t)
    months = sorted(parts)
    new_rows = {m: parts[m].height for m in months}
    # Only months the range covers partly hold rows to keep: the first and the last.
    edges = [m for m in months if m in (first_t.strftime("%Y-%m"), last_t.strftime("%Y-%m"))]
    olds = parallel_map(lambda m: store.read_table_partition("features", exchange, m, version), edges)
    for month, old in zip(edges, olds):
        if old is not None:
            old = old.filter((pl.col("trade_date") < first_t) | (pl.col("trade_date") > last_t))
            parts[month] = pl.concat([old, parts[month].drop("exchange")],
                                     how="diagonal_relaxed").sort("trade_date", "symbol")
    # All months go to the I/O threads at once; progress follows them in month order.
    done_sessions, n_sessions, written = count
    with ThreadPoolExecutor(max_workers=IO_THREADS) as pool:
        futures = [pool.submit(store.write_table_partition, "features", exchange, m, parts[m], version)
                   for m in months]
        for i, (month, future) in enumerate(zip(months, futures), 1):
            future.result()
            sessions_in_month, last_session = per_month[month]
            done_sessions += sessions_in_month
            written += new_rows[month]
            if progress and (i % PROGRESS_MONTHS == 0 or i == len(months)):
                progress(exchange, last_session, done_sessions, n_sessions, written)
            if i % PROGRESS_MONTHS == 0:
                fault_point("features.between_batches")


# ------------------------------------------------------------------ labels
@dataclass
class LabelResult:
    rows: int = 0
    by_exchange: dict = field(default_factory=dict)
    ranges: dict = field(default_factory=dict)  # exchange -> (first, last) session labelled
    last_complete: dict = field(default_factory=dict)  # exchange -> last complete session as of the clock
    horizon: dict = field(default_factory=dict)  # exchange -> last session the labels view covers now


def labels(
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
                span = (store.scan_bars(exchange, between=(lo, hi))  # only those months are read and verified
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


def realized(store: Store, exchanges: list[str], start: dt.date, end: dt.date,
             last: dict[str, dt.date] | None = None) -> pl.DataFrame:
    """trade_date, exchange, symbol, actual: the open-to-close return (the labels view's
    ``intraday_return``, ``labels.label_rows``) of every bar of ``exchanges`` from ``start`` to
    ``end``, read from the bars of those months alone: exchange by exchange in the order given,
    each in its files' order (by session, then symbol). ``last``: per exchange, the last complete
    session (labels stop there; an exchange without one is left out); without it, the caller
    knows every session up to ``end`` is complete."""
    frames = []
    for e in exchanges:
        if last is not None and e not in last:
            continue
        hi = end if last is None else min(end, last[e])
        months = [m for m in store.months(e) if f"{start:%Y-%m}" <= m <= f"{hi:%Y-%m}"]
        if not months:
            continue
        bars = store.read_months(e, months, columns=lab.INPUTS).lazy().filter(pl.col("date") >= start).with_columns(
            pl.lit(e).alias("exchange"))
        frames.append(lab.label_rows(bars, hi).select("trade_date", "exchange", "symbol",
                                                      pl.col("intraday_return").alias("actual")).collect())
    if not frames:
        return pl.DataFrame(schema={"trade_date": pl.Date, "exchange": pl.String, "symbol": pl.String,
                                    "actual": pl.Float64})
    return pl.concat(frames)
