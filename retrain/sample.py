"""A synthetic market on real calendars: the default data of `make demo`, the tests and the benchmark.

Each exchange (NASDAQ, NYSE, TSE) gets its own sessions from its calendar. For symbol i on
session t, with unit-variance Student-t(4) shocks (fat tails):

* overnight gap   g = beta_i * M_gap_t + S_gap_t + sigma_i * 0.5 * sqrt(h_it) * e_gap
* intraday return r = beta_i * M_t + S_t + sigma_i * sqrt(h_it) * e + signal_it
  where M is the exchange's market factor and S the sector factor, both with GARCH(1,1)
  volatility clustering, and h_it is the symbol's own GARCH(1,1) variance multiplier;
* volume: log volume is AR(1) around the symbol's base level, rises with |g + r| and has its own
  innovation u_it (standard normal);
* open = previous close * exp(g), close = open * (1 + r), high/low extend beyond max/min(open,
  close) by half-normal amounts, so OHLC is always consistent.

**The predictable component** (``signal_it``, absent with ``--no-signal``), modest by design:

* short-term reversal: ``-REVERSAL * r_i,t-1`` (the previous session's open-to-close return);
* attention: ``+ATTENTION * sigma_i * u_i,t-1`` (after unexpectedly heavy volume the next session
  drifts up a little; ``u`` is visible in the volume ratio).

Both use only the previous session's bar, so features built from bars before T can find them;
with ``--no-signal`` intraday returns are unpredictable from the past (vol clustering makes
their size, not their sign, predictable). A few symbols list late or delist early, and about
one bar in 2,000 is missing. Deterministic for (symbols, days, seed, end).
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import polars as pl

from retrain import calendar

REVERSAL = 0.06
ATTENTION = 0.05
EXCHANGE_SHARES = {"NASDAQ": 0.45, "NYSE": 0.35, "TSE": 0.20}
SECTORS = [
    "Technology", "Health Care", "Financials", "Consumer Discretionary", "Communication Services",
    "Industrials", "Consumer Staples", "Energy", "Utilities", "Real Estate", "Materials",
]
_NAME_A = ["Apex", "Blue", "Cedar", "Delta", "Ember", "Falcon", "Granite", "Harbor", "Iron", "Juniper",
           "Kestrel", "Lumen", "Maple", "North", "Orion", "Pioneer", "Quartz", "River", "Summit", "Titan",
           "Union", "Vertex", "Willow", "Zenith"]
_NAME_B = ["Systems", "Holdings", "Energy", "Networks", "Foods", "Bancorp", "Therapeutics", "Motors",
           "Resources", "Media", "Realty", "Materials", "Labs", "Logistics", "Power", "Retail"]
_SUFFIX = ["Inc.", "Corp.", "Ltd.", "Group", "plc", "Co."]


def _t_shocks(rng: np.random.Generator, shape: tuple[int, ...], df: float = 4.0) -> np.ndarray:
    """Student-t shocks scaled to unit variance."""
    return rng.standard_t(df, size=shape) / np.sqrt(df / (df - 2.0))


def _garch_factor(rng: np.random.Generator, n: int, vol: float, a: float = 0.08, b: float = 0.90) -> np.ndarray:
    """A GARCH(1,1) return series with unconditional daily volatility ``vol``."""
    z = _t_shocks(rng, (n,))
    out = np.empty(n)
    h = 1.0
    for t in range(n):
        out[t] = vol * np.sqrt(h) * z[t]
        h = (1 - a - b) + a * z[t] ** 2 + b * h
    return out


def _tickers(rng: np.random.Generator, n: int) -> list[str]:
    letters = np.array(list("ABCDEFGHIJKLMNOPQRSTUVWXYZ"))
    seen: set[str] = set()
    out: list[str] = []
    while len(out) < n:
        length = rng.choice([2, 3, 3, 4, 4, 4])
        t = "".join(rng.choice(letters, size=length))
        if t not in seen:
            seen.add(t)
            out.append(t)
    return out


def _split(n: int) -> dict[str, int]:
    counts = {ex: max(1, int(round(n * share))) for ex, share in EXCHANGE_SHARES.items()}
    counts["NASDAQ"] += n - sum(counts.values())
    return counts


def _exchange_bars(
    rng: np.random.Generator, exchange: str, symbols: list[str], days: int, end: dt.date, signal: bool
) -> pl.DataFrame:
    sess = calendar.sessions(exchange, end - dt.timedelta(days=int(days * 1.6) + 30), end)[-days:]
    t_n, n = len(sess), len(symbols)
    beta = rng.uniform(0.5, 1.5, n)
    sigma = np.exp(rng.uniform(np.log(0.008), np.log(0.03), n))  # idiosyncratic intraday vol
    sector_idx = rng.integers(0, len(SECTORS), n)
    m_intra = _garch_factor(rng, t_n, 0.008)
    m_gap = _garch_factor(rng, t_n, 0.005)
    s_intra = np.stack([_garch_factor(rng, t_n, 0.005) for _ in SECTORS], axis=1)[:, sector_idx]
    s_gap = np.stack([_garch_factor(rng, t_n, 0.003) for _ in SECTORS], axis=1)[:, sector_idx]
    e = _t_shocks(rng, (t_n, n))
    e_gap = _t_shocks(rng, (t_n, n))
    u = rng.standard_normal((t_n, n))
    wick_hi = np.abs(rng.standard_normal((t_n, n)))
    wick_lo = np.abs(rng.standard_normal((t_n, n)))
    base_logv = rng.normal(np.log(800_000), 1.0, n)

    price0 = np.exp(rng.uniform(np.log(5), np.log(300), n))
    opens = np.empty((t_n, n))
    closes = np.empty((t_n, n))
    logv = np.empty((t_n, n))
    prev_close, prev_r, prev_u, dev = price0, np.zeros(n), np.zeros(n), np.zeros(n)
    h = np.ones(n)
    for t in range(t_n):  # recursions over sessions, vectorized over symbols
        idio = sigma * np.sqrt(h) * e[t]
        sig = (-REVERSAL * prev_r + ATTENTION * sigma * prev_u) if signal else 0.0
        r = np.clip(beta * m_intra[t] + s_intra[t] + idio + sig, -0.5, 1.0)
        g = beta * m_gap[t] + s_gap[t] + 0.5 * sigma * np.sqrt(h) * e_gap[t]
        opens[t] = prev_close * np.exp(g)
        closes[t] = opens[t] * (1.0 + r)
        dev = 0.6 * dev + 0.25 * (np.abs(g + r) / sigma - 1.0) + 0.35 * u[t]
        logv[t] = base_logv + dev
        h = 0.04 + 0.08 * e[t] ** 2 + 0.88 * h
        prev_close, prev_r, prev_u = closes[t], r, u[t]

    highs = np.maximum(opens, closes) + (0.3 * sigma * opens) * wick_hi
    lows = np.minimum(opens, closes) - (0.3 * sigma * opens) * wick_lo
    # Cents for prices of a dollar or more, four decimals below; then re-establish
    # low <= min(open, close) <= max(open, close) <= high after rounding.
    o, c, hi, lo = (np.where(closes >= 1.0, np.round(x, 2), np.round(x, 4)) for x in (opens, closes, highs, lows))
    o, c = np.maximum(o, 0.0001), np.maximum(c, 0.0001)
    hi = np.maximum(hi, np.maximum(o, c))
    lo = np.clip(lo, 0.0001, np.minimum(o, c))
    vol = np.round(np.exp(logv)).astype(np.int64)

    # Listings, delistings and rare missing bars.
    alive = np.ones((t_n, n), dtype=bool)
    k = max(1, n // 30)
    late = rng.choice(n, size=k, replace=False)
    alive[: rng.integers(t_n // 4, t_n // 2 + 1), late] = False
    early = rng.choice(np.setdiff1d(np.arange(n), late), size=k, replace=False)
    for j in early:
        alive[rng.integers(t_n // 2, t_n - 5):, j] = False
    alive &= rng.random((t_n, n)) > 0.0005

    ti, si = np.nonzero(alive)
    sess_arr = np.array(sess, dtype="datetime64[D]")
    return pl.DataFrame(
        {
            "exchange": exchange,
            "symbol": np.array(symbols)[si],
            "date": sess_arr[ti],
            "open": o[ti, si],
            "high": hi[ti, si],
            "low": lo[ti, si],
            "close": c[ti, si],
            "adj_close": c[ti, si],
            "volume": vol[ti, si],
        }
    ).with_columns(pl.col("date").cast(pl.Date)), pl.DataFrame(
        {"symbol": symbols, "exchange": exchange, "sector": np.array(SECTORS)[sector_idx]}
    )


def generate(
    symbols: int = 300, days: int = 320, seed: int = 7, end: dt.date | None = None, signal: bool = True
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Return (bars, symbols) of a sample market of ``symbols`` symbols and ``days`` sessions per
    exchange ending at ``end`` (default: the last complete NYSE session)."""
    if symbols < 3:
        raise ValueError("the sample market needs at least 3 symbols (one per exchange)")
    if days < 2:
        raise ValueError("the sample market needs at least 2 sessions")
    if end is None:
        end = calendar.AsOf().last_complete_session("NYSE")
    rng = np.random.default_rng(seed)
    tickers = _tickers(rng, symbols)
    bar_frames, sym_frames = [], []
    start = 0
    for exchange, count in _split(symbols).items():
        ex_syms = tickers[start : start + count]
        start += count
        bars, syms = _exchange_bars(rng, exchange, ex_syms, days, end, signal)
        bar_frames.append(bars)
        sym_frames.append(syms)
    syms = pl.concat(sym_frames)
    names = [
        f"{_NAME_A[i % len(_NAME_A)]} {_NAME_B[(i * 7) % len(_NAME_B)]} {_SUFFIX[(i * 3) % len(_SUFFIX)]}"
        for i in rng.permutation(syms.height)
    ]
    syms = syms.with_columns(pl.Series("name", names)).select("symbol", "exchange", "name", "sector")
    return pl.concat(bar_frames).sort(["exchange", "symbol", "date"]), syms
