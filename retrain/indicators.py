"""Technical indicators as Polars expressions, matching TA-Lib's definitions.

* ``rsi``: RSI(14), Wilder smoothing seeded with the simple mean of the first 14 changes;
  first value at the 15th bar. 0 when there was no change at all (as TA-Lib).
* ``macd``, ``macd_signal``, ``macd_histogram``: MACD(12, 26, 9) with TA-Lib's seeding: both
  EMAs start at bar 26, the slow one seeded with the mean of bars 1-26 and the fast one with the
  mean of bars 15-26; the signal EMA is seeded with the mean of the first 9 MACD values. All three
  are null before bar 34, as TA-Lib's output is.
* ``atr``: ATR(14), Wilder smoothing of the true range seeded with the mean of true ranges 2-15.
* ``obv``: on-balance volume starting at the first bar's volume.

Values are null exactly where TA-Lib returns NaN. Smoothing is recursive, so each bar also
stores the recursion state (see ``schema.STATE_COLUMNS``); an incremental update continues from
the last computed bar (the *anchor*) and gives bit-for-bit the values of a full recomputation.

Frames handed to ``compute`` are sorted by (exchange, symbol, date) and carry ``_anchor``: true
on a symbol's first row when that row is an already-computed bar whose state seeds the rest.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from retrain.features import by_symbol, sorted_position
from retrain.schema import INDICATOR_COLUMNS, STATE_COLUMNS

RSI_PERIOD = 14
ATR_PERIOD = 14
MACD_FAST, MACD_SLOW, MACD_SIGNAL = 12, 26, 9
MACD_START = MACD_SLOW - 1  # first bar (0-based) with both EMAs
SIGNAL_START = MACD_START + MACD_SIGNAL - 1  # first bar with a signal: TA-Lib's MACD lookback (33)
MIN_ANCHOR = SIGNAL_START  # an anchor must have every state defined
KEYS = ["exchange", "symbol"]
DERIVED = INDICATOR_COLUMNS + STATE_COLUMNS  # what ``compute`` writes (``_fresh`` clears them)
GROUP = "_symbol_run"  # a symbol's rows as one integer key (frames are sorted): grouping on it is cheap
ENGINE = "in-memory"  # evaluates arithmetic in written order: results independent of the frame


def _lag(x: pl.Expr, i: int) -> pl.Expr:
    """``x`` i bars earlier within the symbol (null when the symbol has no such bar in the frame)."""
    return pl.when(pl.col("_pos") >= i).then(x.shift(i))


def _mean_of_last(frame: pl.DataFrame, x: str, n: int, seed_at: int) -> pl.Series:
    """The seed of a smoothing: the mean of the last ``n`` values of ``x`` at each row whose bar
    index is ``seed_at`` (null elsewhere, and where the symbol has fewer than ``n`` bars in the
    frame or the row is an anchor, whose stored state wins). Only those rows are summed, in
    numpy, adding x[r], x[r-1], ... in that fixed order: the same IEEE operations, and so the
    same bits, as a running sum would give, at a fraction of the cost."""
    rows = np.flatnonzero((frame["_idx"].to_numpy() == seed_at) & (frame["_pos"].to_numpy() >= n - 1)
                          & ~frame["_anchor"].to_numpy())
    values = frame[x].cast(pl.Float64).to_numpy()  # nulls -> NaN, which propagate like nulls
    total = values[rows].copy()
    for i in range(1, n):
        total = total + values[rows - i]
    out = np.full(frame.height, np.nan)
    out[rows] = total / n
    return pl.Series(f"_seed{x}", out).fill_nan(None)


def _smooth(x: pl.Expr, state: str, alpha: float, seed_at: int, seed: str) -> pl.Expr:
    """Recursive smoothing y = (1 - alpha) * y_prev + alpha * x within each symbol, started
    at bar ``seed_at`` with the column ``seed`` (or at the anchor row with the stored ``state``)."""
    idx = pl.col("_idx")
    seeded = (
        pl.when(pl.col("_anchor")).then(pl.col(state))
        .when(idx == seed_at).then(pl.col(seed))
        .when(idx > seed_at).then(x)
    )
    return seeded.ewm_mean(alpha=alpha, adjust=False).over(GROUP)


def compute(frame: pl.DataFrame) -> pl.DataFrame:
    """Add indicator and state columns to bars sorted by (exchange, symbol, date)."""
    close, high, low = pl.col("close"), pl.col("high"), pl.col("low")
    prev_close = _lag(close, 1)
    change = close - prev_close
    base = pl.when(pl.col("_anchor").first().over(GROUP)).then(pl.col("_n").first().over(GROUP)).otherwise(0)
    frame = (
        frame.lazy()
        .with_columns(sorted_position().alias("_pos"))
        .with_columns((pl.col("_pos") == 0).cum_sum().alias(GROUP))
        .with_columns(
            (pl.col("_pos") + base).alias("_idx"),
            pl.when(change > 0).then(change).otherwise(0.0).alias("_gain"),
            pl.when(change < 0).then(-change).otherwise(0.0).alias("_loss"),
            pl.max_horizontal(high - low, (high - prev_close).abs(), (low - prev_close).abs()).alias("_tr"),
        )
        .collect(engine=ENGINE)
    )
    frame = frame.with_columns(
        _mean_of_last(frame, "_gain", RSI_PERIOD, RSI_PERIOD),
        _mean_of_last(frame, "_loss", RSI_PERIOD, RSI_PERIOD),
        _mean_of_last(frame, "_tr", ATR_PERIOD, ATR_PERIOD),
        _mean_of_last(frame, "close", MACD_FAST, MACD_START).alias("_seed_fast"),
        _mean_of_last(frame, "close", MACD_SLOW, MACD_START).alias("_seed_slow"),
    )
    wilder = 1.0 / RSI_PERIOD
    frame = frame.lazy().with_columns(
        _smooth(pl.col("_gain"), "_avg_gain", wilder, RSI_PERIOD, "_seed_gain").alias("_g"),
        _smooth(pl.col("_loss"), "_avg_loss", wilder, RSI_PERIOD, "_seed_loss").alias("_l"),
        _smooth(pl.col("_tr"), "atr", 1.0 / ATR_PERIOD, ATR_PERIOD, "_seed_tr").alias("_atr"),
        _smooth(close, "_ema_fast", 2.0 / (MACD_FAST + 1), MACD_START, "_seed_fast").alias("_ef"),
        _smooth(close, "_ema_slow", 2.0 / (MACD_SLOW + 1), MACD_START, "_seed_slow").alias("_es"),
    ).with_columns((pl.col("_ef") - pl.col("_es")).alias("_macd")).collect(engine=ENGINE)
    frame = frame.with_columns(_mean_of_last(frame, "_macd", MACD_SIGNAL, SIGNAL_START))
    frame = frame.lazy().with_columns(
        _smooth(pl.col("_macd"), "macd_signal", 2.0 / (MACD_SIGNAL + 1), SIGNAL_START, "_seed_macd").alias("_sig")
    )
    signed_volume = (
        pl.when(pl.col("_idx") == 0).then(pl.col("volume"))
        .when(change > 0).then(pl.col("volume"))
        .when(change < 0).then(-pl.col("volume"))
        .otherwise(0)
        .cast(pl.Float64)
    )
    obv = pl.when(pl.col("_anchor")).then(pl.col("obv")).otherwise(signed_volume).cum_sum().over(GROUP)

    g, l_ = pl.col("_g"), pl.col("_l")
    has_macd = pl.col("_idx") >= SIGNAL_START
    return frame.with_columns(
        pl.when(g + l_ != 0).then(100.0 * g / (g + l_)).when(g.is_not_null()).then(0.0).alias("rsi"),
        pl.when(has_macd).then(pl.col("_macd")).alias("macd"),
        pl.when(has_macd).then(pl.col("_sig")).alias("macd_signal"),
        pl.when(has_macd).then(pl.col("_macd") - pl.col("_sig")).alias("macd_histogram"),
        pl.col("_atr").alias("atr"),
        obv.alias("obv"),
        pl.col("_idx").alias("_n"),
        g.alias("_avg_gain"),
        l_.alias("_avg_loss"),
        pl.col("_ef").alias("_ema_fast"),
        pl.col("_es").alias("_ema_slow"),
    ).drop(GROUP, "_pos", "_idx", "_gain", "_loss", "_tr", "_g", "_l", "_atr", "_ef", "_es", "_macd", "_sig",
           "_seed_gain", "_seed_loss", "_seed_tr", "_seed_fast", "_seed_slow", "_seed_macd").collect(engine=ENGINE)


def compute_full(bars: pl.DataFrame) -> pl.DataFrame:
    """Indicators over complete histories (no anchors). ``bars`` needs exchange, symbol, date, OHLCV."""
    return compute(_fresh(bars.sort(["exchange", "symbol", "date"])))


# ------------------------------------------------------------ chunks of history
def _fresh(bars: pl.DataFrame) -> pl.DataFrame:
    """Bars to compute: indicators and state cleared, no anchor."""
    return bars.with_columns(
        pl.lit(False).alias("_anchor"),
        *[pl.lit(None, pl.Float64).alias(c) for c in INDICATOR_COLUMNS + STATE_COLUMNS[1:]],
        pl.lit(None, pl.Int64).alias("_n"),
    )


def compute_chunk(bars: pl.DataFrame, carry: pl.DataFrame | None = None) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Indicators of ``bars`` (whole months of one exchange, exchange, symbol, date, OHLCV), the
    history before them given by ``carry`` (from the previous chunk; None for the first). Returns
    (the bars of ``bars`` computed, sorted by exchange, symbol, date; the carry for the next chunk).

    The carry holds, per symbol seen so far, its last computed bar as an anchor (its state seeds
    the next chunk exactly as an incremental update's anchor does), or, for a symbol with fewer
    than ``MIN_ANCHOR`` bars so far, all its bars, computed again from the first. So a rebuild
    in chunks equals a rebuild in one piece bit for bit, and holds one chunk plus one row per
    symbol (at most ``MIN_ANCHOR`` for young symbols) in memory."""
    fresh = _fresh(bars).with_columns(pl.lit(False).alias("_carried"))
    frame = fresh if carry is None else pl.concat(
        [carry.with_columns(pl.lit(True).alias("_carried")).select(fresh.columns), fresh])
    out = compute(by_symbol(frame))
    done = out.filter(~pl.col("_carried")).drop("_anchor", "_carried")
    last = ((pl.col("symbol") != pl.col("symbol").shift(-1)) | (pl.col("exchange") != pl.col("exchange").shift(-1))
            ).fill_null(True)
    young = (pl.when(last).then(pl.col("_n")).otherwise(None).max().over(KEYS) < MIN_ANCHOR)
    flagged = out.with_columns(last.alias("_last"), young.alias("_young"))
    anchors = flagged.filter(pl.col("_last") & ~pl.col("_young")).with_columns(pl.lit(True).alias("_anchor"))
    again = _fresh(flagged.filter(pl.col("_young")))
    columns = [c for c in fresh.columns if c != "_carried"]
    carry = pl.concat([anchors.select(columns), again.select(columns)]).sort(["exchange", "symbol", "date"])
    return done, carry


# ------------------------------------------------------------ incremental window
FLAGS = ["_stale", "_before_stale", "_anchor", "_has_anchor", "_touched"]


def flags(bars: pl.DataFrame) -> pl.DataFrame:
    """``bars`` (one exchange, a window of months) sorted by symbol, date, with: ``_stale`` (the
    bar or an earlier one in the window lacks indicators), ``_anchor`` (the computed bar just
    before a symbol's first stale one), ``_has_anchor`` (that bar can seed the rest: its state
    is complete) and ``_touched`` (the symbol has stale bars)."""
    flagged = by_symbol(bars).with_columns(
        pl.col("_n").is_null().cum_max().over("symbol").alias("_stale"),
    ).with_columns(
        pl.col("_stale").shift(-1).over("symbol").fill_null(False).alias("_before_stale"),
    )
    anchor_ok = pl.col("_before_stale") & ~pl.col("_stale") & (pl.col("_n") >= MIN_ANCHOR)
    return flagged.with_columns(
        (pl.col("_before_stale") & ~pl.col("_stale")).alias("_anchor"),
        anchor_ok.any().over("symbol").alias("_has_anchor"),
        pl.col("_stale").any().over("symbol").alias("_touched"),
    )


def without_anchor(flagged: pl.DataFrame) -> list[str]:
    """Symbols of ``flagged`` (``flags`` of a window of months) with stale bars and no anchor in
    the window: ``update_window`` needs their whole earlier history."""
    return flagged.filter(pl.col("_touched") & ~pl.col("_has_anchor"))["symbol"].unique().sort().to_list()


def update_window(flagged: pl.DataFrame, history: pl.DataFrame | None = None) -> tuple[pl.DataFrame, int]:
    """Recompute the stale symbols of ``flagged`` (``flags`` of a window of months of one
    exchange): from the anchor before each one's first stale bar, or, for the symbols
    ``without_anchor`` names, from their first bar, with ``history`` holding their bars before
    the window. Returns (every bar of the window, without ``exchange``, with a ``_recomputed``
    flag; the number of symbols recomputed)."""
    bars = flagged.drop(FLAGS)  # sorted by symbol, date
    stale_symbols = flagged.filter(pl.col("_touched")).select("symbol").unique()
    anchored = flagged.filter(pl.col("_touched") & pl.col("_has_anchor") & (pl.col("_stale") | pl.col("_anchor")))
    no_anchor = flagged.filter(pl.col("_touched") & ~pl.col("_has_anchor")).select("symbol").unique()

    pieces = []
    if anchored.height:
        pieces.append(compute(anchored.drop("_stale", "_before_stale", "_has_anchor", "_touched"))
                      .filter(~pl.col("_anchor")))
    if no_anchor.height:  # whole history of these symbols, including months before the window
        earlier = (history.select(bars.columns).join(no_anchor, on="symbol", how="semi")
                   if history is not None else bars.clear())
        whole = pl.concat([earlier, bars.join(no_anchor, on="symbol", how="semi")])
        pieces.append(compute_full(whole).drop("_anchor"))
    recomputed = pl.concat([p.select(bars.columns) for p in pieces]) if pieces else bars.clear()
    kept = bars.join(recomputed.select("symbol", "date"), on=["symbol", "date"], how="anti")
    out = pl.concat([
        kept.with_columns(pl.lit(False).alias("_recomputed")),
        recomputed.with_columns(pl.lit(True).alias("_recomputed")),
    ])
    # Whole-history recomputation also covered months before the window: only the window is returned
    # (earlier months of such symbols were either computed already or are rewritten below).
    out = out.join(bars.select("symbol", "date"), on=["symbol", "date"], how="semi")
    return out.drop("exchange"), stale_symbols.height
