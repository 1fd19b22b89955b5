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
stores the recursion state (see ``store.STATE_COLUMNS``); an incremental update continues from
the last computed bar (the *anchor*) and gives bit-for-bit the values of a full recomputation.

Frames handed to ``compute`` are sorted by (exchange, symbol, date) and carry ``_anchor``: true
on a symbol's first row when that row is an already-computed bar whose state seeds the rest.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import polars as pl

from retrain.schema import INDICATOR_COLUMNS, STATE_COLUMNS
from retrain.store import Store, split_by_month

RSI_PERIOD = 14
ATR_PERIOD = 14
MACD_FAST, MACD_SLOW, MACD_SIGNAL = 12, 26, 9
MACD_START = MACD_SLOW - 1  # first bar (0-based) with both EMAs
SIGNAL_START = MACD_START + MACD_SIGNAL - 1  # first bar with a signal: TA-Lib's MACD lookback (33)
MIN_ANCHOR = SIGNAL_START  # an anchor must have every state defined
KEYS = ["exchange", "symbol"]
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
    return seeded.ewm_mean(alpha=alpha, adjust=False).over(KEYS)


def compute(frame: pl.DataFrame) -> pl.DataFrame:
    """Add indicator and state columns to bars sorted by (exchange, symbol, date)."""
    from retrain.features import sorted_position

    close, high, low = pl.col("close"), pl.col("high"), pl.col("low")
    prev_close = _lag(close, 1)
    change = close - prev_close
    base = pl.when(pl.col("_anchor").first().over(KEYS)).then(pl.col("_n").first().over(KEYS)).otherwise(0)
    frame = (
        frame.lazy()
        .with_columns(sorted_position().alias("_pos"))
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
    obv = pl.when(pl.col("_anchor")).then(pl.col("obv")).otherwise(signed_volume).cum_sum().over(KEYS)

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
    ).drop("_pos", "_idx", "_gain", "_loss", "_tr", "_g", "_l", "_atr", "_ef", "_es", "_macd", "_sig",
           "_seed_gain", "_seed_loss", "_seed_tr", "_seed_fast", "_seed_slow", "_seed_macd").collect(engine=ENGINE)


def compute_full(bars: pl.DataFrame) -> pl.DataFrame:
    """Indicators over complete histories (no anchors). ``bars`` needs exchange, symbol, date, OHLCV."""
    frame = bars.lazy().sort(["exchange", "symbol", "date"]).with_columns(
        pl.lit(False).alias("_anchor"),
        *[pl.lit(None, pl.Float64).alias(c) for c in INDICATOR_COLUMNS + STATE_COLUMNS[1:]],
        pl.lit(None, pl.Int64).alias("_n"),
    ).collect(engine=ENGINE)
    return compute(frame)


# ------------------------------------------------------------------ the step
class IndicatorResult:
    def __init__(self) -> None:
        self.updated = 0  # bars whose indicators were (re)computed
        self.symbols = 0
        self.months_written = 0
        self.by_exchange: dict[str, int] = {}
        self.frames: dict[str, pl.DataFrame] = {}  # with keep_frames and force: every bar, computed


def update(store: Store, exchanges: list[str], force: bool = False, progress=None,
           keep_frames: bool = False) -> IndicatorResult:
    """Compute indicators that are missing or stale (bars changed since the last computation,
    and every later bar of those symbols). ``force`` recomputes everything; with ``keep_frames``
    the computed bars are also returned, so that a full rebuild need not read them again."""
    result = IndicatorResult()
    # Each exchange's files are written on a background thread while the next one computes.
    with store.lock("retrain indicators"), ThreadPoolExecutor(max_workers=1) as writer:
        pending = None
        for exchange in exchanges:
            months = store.months(exchange)
            stale = months if force else store.stale_months(exchange)
            if not stale:
                result.by_exchange[exchange] = 0
                continue
            if force:  # everything, from each symbol's first bar: no anchors to look for
                done = compute_full(store.read_months(exchange, months)).drop("_anchor")
                if keep_frames:
                    result.frames[exchange] = done
                done = done.drop("exchange").with_columns(pl.lit(True).alias("_recomputed"))
                n_symbols = done["symbol"].n_unique()
                first_month = months[0]
            else:
                first = months.index(stale[0])
                window = months[max(0, first - 2):]  # two months before: room for each symbol's anchor
                done, n_symbols = _update_window(store, exchange, store.read_months(exchange, window),
                                                 months[:max(0, first - 2)])
                first_month = stale[0]
            # Rewrite only months from the first stale one on; earlier months are unchanged.
            todo = {m: part for m, part in split_by_month(done, "date").items() if m >= first_month}
            if pending:
                pending.result()
            pending = writer.submit(store.write_partitions, exchange, todo, force)  # force: sorted by compute_full
            result.months_written += len(todo)
            updated = int(done.filter(pl.col("_recomputed")).height)
            result.updated += updated
            result.symbols += n_symbols
            result.by_exchange[exchange] = updated
            if progress:
                progress(exchange, updated, n_symbols)
        if pending:
            pending.result()
    return result


def _update_window(store: Store, exchange: str, bars: pl.DataFrame, earlier_months: list[str]):
    """Recompute stale symbols in ``bars`` (a window of months); returns (all window bars with a
    ``_recomputed`` flag, number of symbols recomputed)."""
    bars = bars.sort(["symbol", "date"])
    # First stale row per symbol; the row before it is the anchor when it is a computed bar far
    # enough in (otherwise the symbol is recomputed from its first bar).
    flagged = bars.with_columns(
        pl.col("_n").is_null().cum_max().over("symbol").alias("_stale"),
    ).with_columns(
        pl.col("_stale").shift(-1).over("symbol").fill_null(False).alias("_before_stale"),
    )
    anchor_ok = pl.col("_before_stale") & ~pl.col("_stale") & (pl.col("_n") >= MIN_ANCHOR)
    flagged = flagged.with_columns(
        (pl.col("_before_stale") & ~pl.col("_stale")).alias("_anchor"),
        anchor_ok.any().over("symbol").alias("_has_anchor"),
        pl.col("_stale").any().over("symbol").alias("_touched"),
    )
    stale_symbols = flagged.filter(pl.col("_touched")).select("symbol").unique()
    anchored = flagged.filter(pl.col("_touched") & pl.col("_has_anchor") & (pl.col("_stale") | pl.col("_anchor")))
    no_anchor = flagged.filter(pl.col("_touched") & ~pl.col("_has_anchor")).select("symbol").unique()

    pieces = []
    if anchored.height:
        pieces.append(compute(anchored.drop("_stale", "_before_stale", "_has_anchor", "_touched"))
                      .filter(~pl.col("_anchor")))
    if no_anchor.height:  # whole history of these symbols, including months before the window
        history = store.read_months(exchange, earlier_months).join(no_anchor, on="symbol", how="semi")
        whole = pl.concat([history, bars.join(no_anchor, on="symbol", how="semi")])
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
