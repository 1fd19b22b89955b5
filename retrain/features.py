"""Feature snapshots: one row per (exchange, symbol, trade_date), built only from bars before it.

A row for session T is computed on the symbol's last bar strictly before T (its "feature bar"),
so T's own bar can never reach it. Rows exist for every session T of the exchange once the
symbol has at least ``MIN_HISTORY`` earlier bars, up to and including the session after its
last bar: that last row is the one predictions use.

Every rolling window is an explicit sum of lags counted in bars, so a value never depends on
where the loaded history starts: an incremental build equals a full rebuild bit for bit.
Market and sector context for T come from the exchange's previous session, never from T.

``FEATURES`` is the one place the feature set is defined: name, expression, meaning.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import math
from dataclasses import dataclass

import numpy as np
import polars as pl

from retrain import calendar
from retrain.errors import RetrainError

MIN_HISTORY = 40  # earlier bars a symbol needs before it gets feature rows
LONGEST_WINDOW = 30  # the longest lookback of any feature, in bars
KEYS = ["exchange", "symbol"]
# Polars' streaming engine may re-associate a chain of additions differently from one frame to
# the next (a last-bit difference); the in-memory engine evaluates it in written order, which is
# what makes an incremental build equal a full one bit for bit.
ENGINE = "in-memory"


# ------------------------------------------------------------- building blocks
def lag(x: pl.Expr, i: int) -> pl.Expr:
    """``x`` on the symbol's bar ``i`` bars back (null before its first bar in the frame)."""
    return x if i == 0 else pl.when(pl.col("_pos") >= i).then(x.shift(i))


def _raw_sum(x: pl.Expr, k: int) -> pl.Expr:
    """x + x[-1] + ... + x[-(k-1)] in that order, unchecked; an even window of 10 or more is the
    sum of its two halves (x's 20-bar sum reuses its 10-bar sum, which reuses the 5-bar one)."""
    if k >= 10 and k % 2 == 0:
        half = _raw_sum(x, k // 2)
        return half + half.shift(k // 2)
    total = x
    for i in range(1, k):
        total = total + x.shift(i)
    return total


def wsum(x: pl.Expr, k: int) -> pl.Expr:
    """Sum of ``x`` over the symbol's last ``k`` bars (null unless all ``k`` exist). Lags are
    added in a fixed order that depends only on the window, never on where the frame starts,
    and the window's validity is checked once, at the end."""
    return pl.when(pl.col("_pos") >= k - 1).then(_raw_sum(x, k))


def wmean(x: pl.Expr, k: int) -> pl.Expr:
    return wsum(x, k) / k


def wstd(x: pl.Expr, k: int) -> pl.Expr:
    """Sample standard deviation over the last ``k`` bars."""
    s, s2 = wsum(x, k), wsum(x * x, k)
    return ((s2 - s * s / k) / (k - 1)).clip(lower_bound=0.0).sqrt()


def _raw_extreme(x: pl.Expr, k: int, fn) -> pl.Expr:
    if k >= 10 and k % 2 == 0:
        half = _raw_extreme(x, k // 2, fn)
        return fn(half, half.shift(k // 2))
    return fn([x.shift(i) for i in range(k)])


def wmax(x: pl.Expr, k: int) -> pl.Expr:
    return pl.when(pl.col("_pos") >= k - 1).then(_raw_extreme(x, k, pl.max_horizontal))


def wmin(x: pl.Expr, k: int) -> pl.Expr:
    return pl.when(pl.col("_pos") >= k - 1).then(_raw_extreme(x, k, pl.min_horizontal))


def slope(y: pl.Expr, k: int) -> pl.Expr:
    """OLS slope of ``y`` per bar over the last ``k`` bars, as fixed weights on lags."""
    xs = [-i for i in range(k)]  # lag i sits at x = -i
    xbar = sum(xs) / k
    sxx = sum((x - xbar) ** 2 for x in xs)
    total = None
    for i, x in enumerate(xs):
        term = y.shift(i) * ((x - xbar) / sxx)
        total = term if total is None else total + term
    return pl.when(pl.col("_pos") >= k - 1).then(total)


# ------------------------------------------------------------ the feature set
C, O, H, L, V = (pl.col(c) for c in ("close", "open", "high", "low", "volume"))  # noqa: E741
R1 = pl.col("_r1")  # daily close-to-close return of the bar
DV = pl.col("_dv")  # dollar volume of the bar, materialized first: a product inside a sum of lags
VF = pl.col("_vf")  # would let the optimizer fuse multiply-adds differently from run to run
VOL20 = pl.col("volatility_20")


@dataclass(frozen=True)
class Feature:
    name: str
    expr: pl.Expr | None  # None: added by the build (market/sector context, calendar)
    meaning: str
    categorical: bool = False


FEATURES: list[Feature] = [
    *[Feature(f"return_{k}", C / lag(C, k) - 1, f"close-to-close return over the last {k} session(s)") for k in (1, 3, 5, 10, 20)],
    Feature("volatility_10", wstd(R1, 10), "standard deviation of daily returns over 10 sessions"),
    Feature("volatility_20", wstd(R1, 20), "standard deviation of daily returns over 20 sessions"),
    *[Feature(f"momentum_{k}", (C / lag(C, k) - 1) / (VOL20 * math.sqrt(k)),
              f"{k}-session return in units of its expected size (20-session volatility x sqrt({k}))") for k in (1, 3, 5, 10, 20)],
    Feature("price_rel_5", C / wmean(C, 5) - 1, "close relative to its 5-session average"),
    Feature("price_rel_20", C / wmean(C, 20) - 1, "close relative to its 20-session average"),
    Feature("trend_30", slope(C.log(), 30), "slope of log close per session over 30 sessions"),
    Feature("dist_high_20", C / wmax(H, 20) - 1, "close relative to the 20-session high"),
    Feature("dist_low_20", C / wmin(L, 20) - 1, "close relative to the 20-session low"),
    *[Feature(f"avg_volume_{k}", wmean(VF, k), f"average volume over {k} sessions") for k in (5, 10, 20)],
    *[Feature(f"volume_ratio_{k}", VF / wmean(VF, k), f"last volume / average volume over {k} sessions") for k in (5, 10, 20)],
    *[Feature(f"avg_dollar_volume_{k}", wmean(DV, k), f"average close x volume over {k} sessions") for k in (5, 10, 20)],
    Feature("atr_ratio", pl.col("atr") / C, "ATR(14) / close"),
    Feature("rsi_14", pl.col("rsi"), "RSI(14)"),
    Feature("macd_ratio", pl.col("macd") / C, "MACD(12,26) / close"),
    Feature("macd_signal_ratio", pl.col("macd_signal") / C, "MACD signal(9) / close"),
    Feature("macd_hist_ratio", pl.col("macd_histogram") / C, "MACD histogram / close"),
    Feature("obv_slope_10", (pl.col("obv") - lag(pl.col("obv"), 10)) / wsum(VF, 10),
            "OBV change over 10 sessions / volume traded in them"),
    Feature("intraday_return", C / O - 1, "previous session's open-to-close return"),
    Feature("overnight_gap", O / lag(C, 1) - 1, "previous session's open / the close before it - 1"),
    Feature("range", (H - L) / C, "previous session's (high - low) / close"),
    Feature("close_location", pl.when(H > L).then((C - L) / (H - L)), "where the previous close sits in its high-low range (0 low, 1 high)"),
    Feature("market_return", None, "equal-weighted open-to-close return of the exchange's symbols in the previous session"),
    Feature("rel_strength_market", None, "symbol's intraday return minus market_return, previous session"),
    Feature("sector_return", None, "equal-weighted open-to-close return of the symbol's sector on its exchange, previous session (null if no sector)"),
    Feature("rel_strength_sector", None, "symbol's intraday return minus sector_return, previous session"),
    Feature("day_of_week", None, "weekday of the trade date (1 = Monday)", categorical=True),
    Feature("exchange", None, "listing exchange", categorical=True),
    Feature("prev_close", C, "last close before the trade date"),
]
FEATURE_NAMES = [f.name for f in FEATURES]
CATEGORICAL = [f.name for f in FEATURES if f.categorical]

# Every feature version's definitions, by version. A version that is not listed (a bump that
# changed no feature) is built by the newest listed set. To change the features: add the new
# list under the next version (keep the old ones: their rows stay buildable), then
# `retrain run --bump-version`. See the README, "Feature versions".
FEATURE_SETS: dict[str, list[Feature]] = {"v1": FEATURES}


def _number(version: str) -> int:
    return int(version.lstrip("v")) if version.lstrip("v").isdigit() else 0


def definitions(version: str) -> tuple[str, list[Feature]]:
    """(the registered version whose set builds ``version``, that set): its own, or the newest
    one registered before it."""
    known = sorted((v for v in FEATURE_SETS if _number(v) <= _number(version)), key=_number)
    name = version if version in FEATURE_SETS else (known[-1] if known else max(FEATURE_SETS, key=_number))
    return name, FEATURE_SETS[name]


def _text(f: Feature) -> str:
    body = "built from market and sector context" if f.expr is None else str(f.expr)
    return f"{f.name} | {'categorical' if f.categorical else 'numeric'} | {body}"


def definition_fingerprint(version: str) -> str:
    """sha256 of the definitions that build ``version``: each feature's name, kind and
    expression as text (windows included), and the constants every row depends on."""
    _, features = definitions(version)
    text = "\n".join([f"MIN_HISTORY={MIN_HISTORY}", f"LONGEST_WINDOW={LONGEST_WINDOW}", *map(_text, features)])
    return hashlib.sha256(text.encode()).hexdigest()


def feature_columns(version: str, state: dict | None = None) -> list[str]:
    """Feature columns of a version: the list recorded with its rows in its ``state`` (the
    features table's state of that version) when there is one (a version keeps its columns
    whatever today's code says), else its definitions'."""
    recorded = (state or {}).get(DEFINITION, {}).get("columns")
    return list(recorded) if recorded else [f.name for f in definitions(version)[1]]


DEFINITION = "_definition"  # the key of a version's state that records its definitions


def check_definitions(state: dict, version: str, full_rebuild: bool) -> dict:
    """The definition record for ``version``'s state: refuses an incremental build whose current
    definitions differ from the ones its rows were built with (rows of two definitions would mix
    in one version); a state without a record (an older store) adopts the current one."""
    name, features = definitions(version)
    now = {"fingerprint": definition_fingerprint(version), "columns": [f.name for f in features], "set": name}
    stored = state.get(DEFINITION)
    if stored and stored.get("fingerprint") != now["fingerprint"] and not full_rebuild:
        added = [c for c in now["columns"] if c not in stored.get("columns", [])]
        gone = [c for c in stored.get("columns", []) if c not in now["columns"]]
        what = "; ".join(x for x in (f"added {', '.join(added)}" if added else "",
                                     f"removed {', '.join(gone)}" if gone else "") if x) or "changed expressions"
        raise RetrainError(
            f"the {version} feature definitions in the code differ from those its stored rows were built with "
            f"({what}): an incremental build would mix two definitions in {version}",
            hint=f"`retrain run --full-rebuild` rebuilds {version} in place with the new definitions, or "
                 f"`retrain run --bump-version` keeps {version} as it is and builds the next version (register "
                 f"the old definitions in FEATURE_SETS to keep {version} buildable)")
    return now


# Bar columns every build reads, whatever its features: the keys, the history count that gates
# MIN_HISTORY, and the prices and volume behind the return, dollar volume and market context.
BASE_INPUTS = ("symbol", "date", "open", "high", "low", "close", "volume", "_n")


def input_columns(version: str, available) -> list[str]:
    """The columns of ``available`` (bar columns, in their order) that a build of ``version``
    reads: ``BASE_INPUTS`` and every column a feature's expression names. Reading only these
    is what keeps a long rebuild's reads small."""
    _, features = definitions(version)
    named = set(BASE_INPUTS) | {n for f in features if f.expr is not None for n in f.expr.meta.root_names()}
    return [c for c in available if c in named]


# ---------------------------------------------------------------- pure build
def by_symbol(bars: pl.DataFrame) -> pl.DataFrame:
    """``bars`` sorted by exchange, symbol, date. The store's month files are each sorted by
    symbol and date, and read in month order, so for one exchange a stable sort on the symbol
    alone gives that order at a fraction of the cost of sorting every column on three keys; the
    result is checked (dates strictly increasing within each symbol), and anything else (several
    exchanges, rows out of order, duplicates) gets the full sort."""
    full = [c for c in KEYS if c in bars.columns] + ["date"]
    if bars.height == 0 or ("exchange" in bars.columns and bars["exchange"].n_unique() > 1):
        return bars.sort(full)
    out = bars.sort("symbol", maintain_order=True)
    in_order = out.select(((pl.col("date").diff() > 0) | (pl.col("symbol") != pl.col("symbol").shift(1)))
                          .fill_null(True).all()).item()
    return out if in_order else bars.sort(full)


def sorted_position() -> pl.Expr:
    """Row position within its (exchange, symbol) run of a frame sorted by exchange, symbol, date;
    found from run boundaries rather than a hash group-by."""
    row = pl.int_range(pl.len(), dtype=pl.Int64)
    starts = (pl.col("symbol") != pl.col("symbol").shift(1)) | (pl.col("exchange") != pl.col("exchange").shift(1))
    return row - pl.when(starts.fill_null(True)).then(row).forward_fill()


def bar_features(bars: pl.LazyFrame, features: list[Feature] = FEATURES) -> pl.LazyFrame:
    """Per-bar features (as of each bar's close). ``bars`` sorted by exchange, symbol, date."""
    per_bar = [f.expr.alias(f.name) for f in features if f.expr is not None and f.name != "exchange"]
    vol_first = [e for e in per_bar if e.meta.output_name() in ("volatility_10", "volatility_20")]
    rest = [e for e in per_bar if e.meta.output_name() not in ("volatility_10", "volatility_20")]
    return (
        bars.with_columns(sorted_position().alias("_pos"))
        .with_columns((C / lag(C, 1) - 1).alias("_r1"), (C * V).alias("_dv"), V.cast(pl.Float64).alias("_vf"))
        .with_columns(vol_first)
        .with_columns(rest)
    )


def context(bars: pl.LazyFrame) -> tuple[pl.LazyFrame, pl.LazyFrame]:
    """Equal-weighted intraday return per date, and per (sector, date), of one exchange's bars
    (keyed without the exchange: joining on a constant string column only costs time)."""
    intraday = (C / O - 1).alias("_ir")
    market = bars.group_by("date").agg(intraday.mean().alias("market_return"))
    sector = (
        bars.filter(pl.col("sector").is_not_null())
        .group_by("sector", "date")
        .agg(intraday.mean().alias("sector_return"))
    )
    return market, sector


def snapshots(bars: pl.DataFrame, exchange: str, start: dt.date, end: dt.date, version: str,
              presorted: bool = False) -> pl.DataFrame:
    """Feature rows of ``exchange`` for trade dates in [start, end] from ``bars`` (that exchange
    only, with ``sector``, ``_n`` and indicators, enough history before ``start``). ``presorted``:
    the caller guarantees ``bars`` is sorted by exchange, symbol, date."""
    sess = calendar.session_array(exchange)
    lo = int(np.searchsorted(sess, np.datetime64(start, "D"), "left"))
    hi = int(np.searchsorted(sess, np.datetime64(end, "D"), "right"))
    ordered = bars if presorted else by_symbol(bars)
    same_symbol_next = (pl.col("symbol") == pl.col("symbol").shift(-1)) & (pl.col("exchange") == pl.col("exchange").shift(-1))
    _, features = definitions(version)
    names = [f.name for f in features]
    categorical = {f.name for f in features if f.categorical}
    feats = bar_features(ordered.lazy(), features).with_columns(
        pl.when(same_symbol_next).then(pl.col("date").shift(-1)).alias("_next_bar")
    ).collect(engine=ENGINE)
    # Sessions each bar serves: from the session after it up to its next bar (or just the next
    # one), those in [lo, hi) kept: one row per (bar, session).
    i0 = np.searchsorted(sess, feats["date"].to_numpy().astype("datetime64[D]"), "right")
    nxt = feats["_next_bar"]
    i1 = np.searchsorted(sess, nxt.fill_null(dt.date(1970, 1, 1)).to_numpy().astype("datetime64[D]"), "right")
    count = np.where(nxt.is_null().to_numpy(), 1, i1 - i0)
    enough = feats["_n"].to_numpy() >= MIN_HISTORY - 1
    first = np.maximum(i0, lo)
    sessions_served = np.where(enough, np.clip(np.minimum(i0 + count, hi) - first, 0, None), 0)
    bars_used = np.flatnonzero(sessions_served)
    served = sessions_served[bars_used]
    si = np.repeat(first[bars_used], served) + (np.arange(served.sum()) - np.repeat(np.cumsum(served) - served, served))
    needed = list(dict.fromkeys(["symbol", "exchange", "sector", *[n for n in names if n in feats.columns]]))
    rows = feats.select(needed)[pl.Series(np.repeat(bars_used, served), dtype=pl.Int64)].with_columns(
        pl.Series("trade_date", sess[si]).cast(pl.Date),
        pl.Series("_prev_session", sess[np.maximum(si - 1, 0)]).cast(pl.Date),
    )
    del feats
    # Market and sector context of the previous session, joined on the two keys alone (a join
    # of the whole frame would copy every column), in the rows' order.
    market, sector = context(ordered.lazy())
    ctx = (rows.lazy().select("_prev_session", "sector")
           .join(market, left_on="_prev_session", right_on="date", how="left", maintain_order="left")
           .join(sector, left_on=["sector", "_prev_session"], right_on=["sector", "date"], how="left",
                 maintain_order="left")
           .select("market_return", "sector_return")
           .collect(engine=ENGINE))
    out = (
        rows.hstack(ctx.get_columns()).lazy()
        .with_columns(
            (pl.col("intraday_return") - pl.col("market_return")).alias("rel_strength_market"),
            (pl.col("intraday_return") - pl.col("sector_return")).alias("rel_strength_sector"),
            pl.col("trade_date").dt.weekday().cast(pl.Int8).alias("day_of_week"),
            pl.lit(version).alias("feature_version"),
        )
        .select("symbol", "exchange", "trade_date", "feature_version",
                *[pl.col(n).cast(pl.Float32) if n not in categorical else pl.col(n) for n in names if n != "exchange"])
        .collect(engine=ENGINE)
    )
    # In (trade_date, symbol) order, the order of the files: the rows are in symbol order (the
    # bars are), so a stable sort on the session gives it, gathered once the values are narrow.
    return out[pl.Series(np.argsort(si, kind="stable"), dtype=pl.Int64)]


# ---------------------------------------------------------------- planning (pure)
def window_start(exchange: str, first_needed: dt.date, margin: int) -> dt.date:
    """The first session of bars a build of rows from ``first_needed`` on reads: ``margin``
    sessions before it (or the calendar's first). Its month is the first month file to read."""
    sess = calendar.session_array(exchange)
    i = int(np.searchsorted(sess, np.datetime64(first_needed, "D"), "left"))
    return sess[max(i - margin, 0)].astype(dt.date)


def truncated(bars: pl.DataFrame, first_t: dt.date, exchange: str) -> bool:
    """True when a symbol that still gets rows from ``first_t`` on (its last bar is at or after the
    session before it) has its history in ``bars`` start after its real first bar (``_n`` > 0)
    with no more than LONGEST_WINDOW bars before ``first_t``: its windows would be cut short, and
    the window of bars read must widen."""
    before_first = calendar.previous_session(exchange, first_t) or first_t
    per = bars.group_by("symbol").agg(
        pl.col("_n").min().alias("n0"), (pl.col("date") < first_t).sum().alias("before"),
        pl.col("date").max().alias("last"))
    return per.filter((pl.col("last") >= before_first) & (pl.col("n0") > 0)
                      & (pl.col("before") <= LONGEST_WINDOW)).height > 0


def plan_span(exchange: str, state: dict, span: tuple[dt.date, dt.date], start: dt.date | None,
              end: dt.date | None, full_rebuild: bool, first_changed: dt.date | None) -> tuple[dt.date, dt.date] | None:
    """The trade dates to build for one exchange, (first, last), or None when nothing is to be
    done. ``span``: first and last bar date; ``state``: the exchange's build state;
    ``first_changed``: the first date of the bars changed since the last build (None: none)."""
    all_first, all_last = span
    horizon = calendar.next_session(exchange, all_last)  # the session after the last bar
    if start or end:
        first_t, last_t = start or all_first, min(end or horizon, horizon)
        if not calendar.sessions(exchange, first_t, last_t):
            raise RetrainError(f"no sessions of {exchange} with bars to build between {first_t} and {last_t}",
                               hint=f"{exchange} bars run from {all_first} to {all_last}; pick dates in that span")
        return first_t, last_t
    if full_rebuild or not state:
        return all_first, horizon
    if first_changed is None:
        return None
    return first_changed, horizon


def served_earlier(bars: pl.DataFrame, changed: pl.DataFrame, exchange: str) -> dt.date | None:
    """The first trade date served by a bar just before a changed one (its rows may change too:
    gaps, new last bars), or None."""
    prev = (by_symbol(bars.select("symbol", "date"))
            .with_columns(pl.when(pl.col("symbol") == pl.col("symbol").shift(1)).then(pl.col("date").shift(1))
                          .alias("_prev"))
            .join(changed, on=["symbol", "date"], how="semi")["_prev"].drop_nulls())
    return calendar.next_session(exchange, prev.min()) if prev.len() else None


def month_chunks(exchange: str, first_t: dt.date, last_t: dt.date, bars_per_month: dict[str, int],
                 chunk_bars: int) -> list[tuple[dt.date, dt.date]]:
    """[first_t, last_t] cut at month starts into pieces of about ``chunk_bars`` bars (at least
    one month each), by the bars each month holds."""
    span = calendar.sessions(exchange, first_t, last_t)
    pieces: list[tuple[dt.date, dt.date]] = []
    size, lo = 0, None
    for i, d in enumerate(span):
        month = d.strftime("%Y-%m")
        if lo is None:
            lo = d
        if i + 1 == len(span) or span[i + 1].strftime("%Y-%m") != month:
            size += bars_per_month.get(month, 0)
            if size >= chunk_bars or i + 1 == len(span):
                pieces.append((lo, d))
                size, lo = 0, None
    return pieces


def by_month(rows: pl.DataFrame, exchange: str, first_t: dt.date, last_t: dt.date) -> tuple[dict, dict]:
    """Rows of trade dates [first_t, last_t] cut into month files: ({month: rows sorted by
    trade_date, symbol}, {month: (sessions in it, its last session)})."""
    per_month: dict[str, list] = {}
    for d in calendar.sessions(exchange, first_t, last_t):
        entry = per_month.setdefault(d.strftime("%Y-%m"), [0, d])
        entry[0] += 1
        entry[1] = d
    months = sorted(per_month)
    # One sort of everything (none when ``snapshots`` gave them so): each month is then a
    # contiguous slice, already in file order.
    if not in_file_order(rows):
        rows = rows.sort("trade_date", "symbol")
    dates = rows["trade_date"].to_numpy().astype("datetime64[D]")
    bounds = np.searchsorted(dates, np.array([f"{m}-01" for m in months] + [_next_month(months[-1])],
                                             dtype="datetime64[D]"))
    parts = {m: rows.slice(int(a), int(b - a)) for m, a, b in zip(months, bounds[:-1], bounds[1:])}
    return parts, {m: tuple(v) for m, v in per_month.items()}


def in_file_order(rows: pl.DataFrame) -> bool:
    """Whether ``rows`` are sorted by trade_date, then symbol, with no (trade_date, symbol) twice."""
    d, sym = pl.col("trade_date"), pl.col("symbol")
    return rows.select(((d > d.shift(1)) | ((d == d.shift(1)) & (sym > sym.shift(1)))).fill_null(True).all()).item()


def _next_month(month: str) -> str:
    y, m = int(month[:4]), int(month[5:7])
    return f"{y + m // 12:04d}-{m % 12 + 1:02d}-01"
