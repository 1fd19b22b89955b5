"""`retrain remove`: take some symbols' bars off one exchange (undo a wrong ingest), with what
depends on them, so that the next incremental `retrain indicators` + `retrain features` end with
the store an ingest without those bars would have produced.

Removing the bars of SYM on EX dated in [start, end] changes, and records, four things:

1. SYM's *later* bars on EX (after ``end``): their indicators continue the removed ones. Their
   indicator and state columns are nulled, so the indicators step recomputes them from the
   anchor (SYM's last bar before ``start``), and they get a new ``ingest_id``.
2. Other symbols' feature rows: the market and sector context of the session after each removed
   bar. The bars of EX on the *mark session* get a new ``ingest_id``, values and indicators
   unchanged. It is the last session on or before the first removed bar that still has bars on
   EX (else the first one after it), so never after the first session whose context changed,
   even when the removed bars were alone on their first sessions. An incremental features build
   rebuilds every session from the first changed bar on, for all symbols, so every row whose
   context changed is rebuilt, in every feature version that is built again (each remembers its
   own ``built_ingest_id``).
3. SYM's feature rows on EX, in every version on disk, whose trade dates the removed bars served
   (from the session after the first one up to SYM's next bar, or the session after the last
   one): deleted, so none survives in a version that is never built again.
4. The bars themselves; then (SYM, EX) leaves symbols.parquet when no bar of SYM is left on EX.

All under the store lock, each file replaced atomically, in that order: the changes of 1 and 2 are
written while the bars are still there (recording a change early only costs a rebuild), then 3,
then the bar files from the last month back (every intermediate store is SYM's history cut short,
which any build handles), then 4. A rerun plans again from what is left and finishes the job.
"""

from __future__ import annotations

import datetime as dt
import difflib
from dataclasses import dataclass, field

import polars as pl

from retrain import calendar
from retrain.errors import RetrainError
from retrain.files import fault_point
from retrain.schema import BAR_SCHEMA, INDICATOR_COLUMNS, STATE_COLUMNS
from retrain.store import Store, new_batch_id, require_exchange_bars

FEATURES = "features"
CLOSE_MATCHES = 5  # close symbol names suggested for a symbol with no bars


@dataclass
class SymbolRemoval:
    """What a removal does to one symbol of the exchange."""

    symbol: str
    bars: int = 0  # bars removed
    first: dt.date | None = None  # their first and last date
    last: dt.date | None = None
    later: int = 0  # bars after the range, whose indicators are recomputed
    served: tuple[dt.date, dt.date] | None = None  # trade dates of its feature rows the removed bars served
    entry_goes: bool = False  # (symbol, exchange) leaves symbols.parquet


@dataclass
class RemovalPlan:
    """Everything a removal changes; ``done`` once it has been carried out."""

    exchange: str
    start: dt.date | None
    end: dt.date | None
    symbols: list[SymbolRemoval]
    feature_rows: dict[str, int] = field(default_factory=dict)  # version -> rows deleted
    mark_session: dt.date | None = None  # its bars' context changed: features rebuild from here
    done: bool = False

    @property
    def bars(self) -> int:
        return sum(s.bars for s in self.symbols)

    @property
    def later(self) -> int:
        return sum(s.later for s in self.symbols)

    @property
    def entries(self) -> list[str]:
        return [s.symbol for s in self.symbols if s.entry_goes]

    @property
    def span(self) -> tuple[dt.date, dt.date] | None:
        firsts = [s.first for s in self.symbols if s.first]
        return (min(firsts), max(s.last for s in self.symbols if s.last)) if firsts else None


# ------------------------------------------------------------------ pure rules
def in_range(symbols: list[str], start: dt.date | None, end: dt.date | None) -> pl.Expr:
    """Bars of ``symbols`` dated in [start, end] (either end open when None)."""
    expr = pl.col("symbol").is_in(symbols)
    if start:
        expr &= pl.col("date") >= start
    if end:
        expr &= pl.col("date") <= end
    return expr


def served_range(exchange: str, first: dt.date, last: dt.date, next_bar: dt.date | None) -> tuple[dt.date, dt.date]:
    """Trade dates whose feature rows a symbol's consecutive bars ``first``..``last`` serve: from
    the session after the first up to its next bar (or the session after the last, when none)."""
    return calendar.next_session(exchange, first), next_bar or calendar.next_session(exchange, last)


def mark_session(before: dt.date | None, after: dt.date | None) -> dt.date | None:
    """The session whose bars record the change of context: the last one with bars left on or
    before the first removed bar (``before``), else the first one after it (``after``)."""
    return before or after


def served_rows(served: dict[str, tuple[dt.date, dt.date]]) -> pl.Expr:
    """Feature rows of each symbol with trade dates in its served range."""
    expr = pl.lit(False)
    for symbol, (a, b) in served.items():
        expr |= (pl.col("symbol") == symbol) & pl.col("trade_date").is_between(a, b)
    return expr


def months_between(a: dt.date, b: dt.date) -> list[str]:
    """"YYYY-MM" of every month from ``a``'s to ``b``'s."""
    out, y, m = [], a.year, a.month
    while (y, m) <= (b.year, b.month):
        out.append(f"{y:04d}-{m:02d}")
        y, m = (y + 1, 1) if m == 12 else (y, m + 1)
    return out


# --------------------------------------------------------------------- plan
def plan(store: Store, exchange: str, symbols: list[str], start: dt.date | None = None,
         end: dt.date | None = None) -> RemovalPlan:
    """What removing the bars of ``symbols`` on ``exchange`` dated in [start, end] (default: all)
    would change. Reads only; RetrainError for an unknown exchange, a symbol with nothing to
    remove, or start after end."""
    exchange = calendar.normalize_exchange(exchange)
    symbols = list(dict.fromkeys(s.strip().upper() for s in symbols if s.strip()))
    if not symbols:
        raise RetrainError("no symbol given", hint="name one with --symbol SYM (repeat it for several)")
    if start and end and start > end:
        raise RetrainError(f"--start {start} is after --end {end}", hint="swap them")
    entries = store.read_symbols().filter(pl.col("exchange") == exchange)
    if entries.is_empty():
        require_exchange_bars(store, exchange)
    listed = set(entries["symbol"].to_list())
    mine = (store.scan_bars(exchange).filter(pl.col("symbol").is_in(symbols)).select("symbol", "date")
            .collect().sort("symbol", "date"))
    _check(store, exchange, symbols, mine, listed, start, end)

    removed = mine.filter(in_range(symbols, start, end))
    per = removed.group_by("symbol").agg(pl.len().alias("bars"), pl.col("date").min().alias("first"),
                                         pl.col("date").max().alias("last"))
    left = mine.join(removed, on=["symbol", "date"], how="anti")
    later = left.filter(pl.col("date") > end) if end else left.clear()
    nxt = later.group_by("symbol").agg(pl.len().alias("later"), pl.col("date").min().alias("next_bar"))
    per = (pl.DataFrame({"symbol": symbols}).join(per, on="symbol", how="left")
           .join(nxt, on="symbol", how="left")
           .join(left.group_by("symbol").len("left"), on="symbol", how="left"))
    out = RemovalPlan(exchange, start, end, [])
    for sym, n, first, last, n_later, next_bar, n_left in per.iter_rows():
        out.symbols.append(SymbolRemoval(
            sym, n or 0, first, last, n_later or 0,
            served_range(exchange, first, last, next_bar) if n else None,
            not n_left and sym in listed,
        ))
    if not removed.is_empty():
        d0 = removed["date"].min()
        rest = store.scan_bars(exchange).filter(~in_range(symbols, start, end)).select(
            pl.col("date").filter(pl.col("date") <= d0).max().alias("before"),
            pl.col("date").filter(pl.col("date") > d0).min().alias("after"),
        ).collect()
        out.mark_session = mark_session(rest["before"][0], rest["after"][0])
    out.feature_rows = {v: _count(store, v, out) for v in store.table_versions(FEATURES)}
    return out


def _check(store: Store, exchange: str, symbols: list[str], mine: pl.DataFrame, listed: set[str],
           start: dt.date | None, end: dt.date | None) -> None:
    """RetrainError naming every symbol with no bar (nor entry) on ``exchange``, or, with a date
    range, when none of the symbols has a bar in it."""
    have = set(mine["symbol"].unique().to_list())
    unknown = [s for s in symbols if s not in have and s not in listed]
    if unknown:
        known = sorted(listed | set(store.scan_bars(exchange).select(pl.col("symbol").unique()).collect()["symbol"]))
        hints = []
        for s in unknown:
            close = difflib.get_close_matches(s, known, n=CLOSE_MATCHES, cutoff=0.5)
            elsewhere = [e for e in store.exchanges() if e != exchange and
                         not store.scan_bars(e).filter(pl.col("symbol") == s).head(1).collect().is_empty()]
            note = f"close names on {exchange}: {', '.join(close)}" if close else f"no close name on {exchange}"
            if elsewhere:
                note += f"; {s} has bars on {', '.join(elsewhere)}"
            hints.append(f"{s}: {note}" if len(unknown) > 1 else note)
        raise RetrainError(f"no bars of {', '.join(unknown)} on {exchange}", hint="; ".join(hints))
    # With a range, an error only when there is nothing to do at all: among several symbols, one with
    # no bar in the range is shown with 0 bars (a rerun after a crash may find it done, another not).
    if (start or end) and have == set(symbols) and mine.filter(in_range(symbols, start, end)).is_empty():
        spans = "; ".join(f"{s}'s {exchange} bars run from {m['date'].min()} to {m['date'].max()}"
                          for s in symbols for m in [mine.filter(pl.col("symbol") == s)])
        raise RetrainError(f"no bars of {', '.join(symbols)} on {exchange} between "
                           f"{start or 'the first bar'} and {end or 'the last bar'}", hint=spans)


def _served(p: RemovalPlan) -> dict[str, tuple[dt.date, dt.date]]:
    return {s.symbol: s.served for s in p.symbols if s.served}


def _feature_months(store: Store, version: str, p: RemovalPlan) -> list[str]:
    """Month files of ``version`` on the exchange that may hold rows the removed bars served."""
    wanted = {m for a, b in _served(p).values() for m in months_between(a, b)}
    have = [f.parent.name.split("=", 1)[1] for f in store.table_files(FEATURES, version, p.exchange)]
    return [m for m in have if m in wanted]


def _count(store: Store, version: str, p: RemovalPlan) -> int:
    served = _served(p)
    rows = store.scan_table(FEATURES, version, p.exchange) if served else None
    return int(rows.filter(served_rows(served)).select(pl.len()).collect().item()) if rows is not None else 0


# -------------------------------------------------------------------- apply
def remove(store: Store, exchange: str, symbols: list[str], start: dt.date | None = None,
           end: dt.date | None = None) -> RemovalPlan:
    """Remove the bars of ``symbols`` on ``exchange`` dated in [start, end] (default: all of them)
    and what depends on them (see the module docstring). Returns the plan carried out."""
    with store.lock("retrain remove"):
        p = plan(store, exchange, symbols, start, end)
        ex, names = p.exchange, [s.symbol for s in p.symbols]
        gone = in_range(names, start, end)
        # 1 + 2: record the change while the bars are still there
        later = pl.col("symbol").is_in(names) & (pl.col("date") > end) if end and p.later else pl.lit(False)
        mark = pl.col("date") == p.mark_session if p.mark_session else pl.lit(False)
        touched = store.scan_bars(ex).filter((later | mark) & ~gone).select(
            pl.col("date").dt.strftime("%Y-%m").unique()).collect().to_series().sort().to_list()
        batch = new_batch_id()
        for month in touched:
            bars = store.read_partition(ex, month)
            bars = bars.with_columns(
                *[pl.when(later).then(pl.lit(None, BAR_SCHEMA[c])).otherwise(pl.col(c)).alias(c)
                  for c in INDICATOR_COLUMNS + STATE_COLUMNS],
                pl.when((later | mark) & ~gone).then(pl.lit(batch, pl.Int64)).otherwise(pl.col("ingest_id"))
                .alias("ingest_id"),
            )
            store.write_partition(ex, month, bars, presorted=True)
        fault_point("remove.recorded")
        # 3: the feature rows the removed bars served, in every version on disk
        served = _served(p)
        for version in store.table_versions(FEATURES) if served else []:
            for month in _feature_months(store, version, p):
                rows = store.read_table_partition(FEATURES, ex, month, version)
                kept = rows.filter(~served_rows(served))
                if kept.is_empty():
                    store.delete_table_partition(FEATURES, ex, month, version)
                elif kept.height < rows.height:
                    store.write_table_partition(FEATURES, ex, month, kept, version)
        fault_point("remove.features")
        # 4: the bars, last month first; then the symbol entries with no bar left
        months = sorted({m for s in p.symbols if s.first for m in months_between(s.first, s.last)}, reverse=True)
        for month in months:
            bars = store.read_partition(ex, month)
            kept = bars.filter(~gone)
            if kept.is_empty():
                store.delete_partition(ex, month)
            elif kept.height < bars.height:
                store.write_partition(ex, month, kept, presorted=True)
            fault_point("remove.between_months")
        if p.entries:
            store.remove_symbols(ex, p.entries)
        p.done = True
    return p
