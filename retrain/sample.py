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
one bar in 2,000 is missing.

**Determinism and top-ups.** ``generate(symbols, days, seed, end)`` starts each exchange at its
*origin*, the ``days``-th session back from ``end`` on its calendar, and is deterministic for
(symbols, days, seed, end, signal). The bars of a session never depend on how many sessions
follow it: per-symbol parameters (tickers, names, sector, beta, sigma, base volume, start
price, and which symbols list late or delist early at which session index from the origin,
placed within the first ``days`` sessions) come from a stream keyed by the seed alone (and the
exchange), the shocks of session t from a stream keyed by (seed, exchange, t), and the GARCH,
volume and signal recursions run forward from the origin. So ``generate_from`` with the same
(symbols, days, seed, signal, origins) and a later end reproduces every earlier bar bit for bit
and appends the new sessions; ``retrain sample-data --top-up`` uses that, from the record
``record`` keeps in the store (``sample/_state.json``).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import polars as pl

from retrain import calendar
from retrain.calendar import AsOf
from retrain.errors import RetrainError

if TYPE_CHECKING:
    from retrain.store import Store, UpsertResult

REVERSAL = 0.06
ATTENTION = 0.05
GENERATOR = 2  # recorded with a sample; a top-up continues only a sample of the same generator
REFERENCE = "NYSE"  # the calendar --end and the default end refer to
STATE_TABLE = "sample"  # data/sample/_state.json
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


def _stream(seed: int, *key: int) -> np.random.Generator:
    """An independent random stream for ``key`` under ``seed``: (0,) tickers and names,
    (1, x) the static parameters of exchange x, (2, x, t) the shocks of its session t."""
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=key))


def _garch(z: np.ndarray, vol: np.ndarray, a: float = 0.08, b: float = 0.90) -> np.ndarray:
    """GARCH(1,1) return series, one column per factor, from unit shocks ``z`` (sessions x
    factors), with unconditional daily volatility ``vol`` per column; h starts at 1."""
    out = np.empty_like(z)
    h = np.ones(z.shape[1])
    for t in range(z.shape[0]):
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


# Factor shocks per session: market intraday, market gap, then each sector intraday, each sector gap.
_FACTOR_VOLS = np.array([0.008, 0.005] + [0.005] * len(SECTORS) + [0.003] * len(SECTORS))


def _exchange_bars(
    seed: int, x: int, exchange: str, symbols: list[str], days: int, sess: list[dt.date], signal: bool | float,
    signal_until: dt.date | None = None,
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Bars of exchange number ``x`` on sessions ``sess`` (from its origin on), and its symbols.
    ``signal_until``: the predictable component stops after that day (a regime break)."""
    t_n, n, n_sec = len(sess), len(symbols), len(SECTORS)
    # Static parameters: one stream per exchange, independent of how many sessions follow.
    rng = _stream(seed, 1, x)
    beta = rng.uniform(0.5, 1.5, n)
    sigma = np.exp(rng.uniform(np.log(0.008), np.log(0.03), n))  # idiosyncratic intraday vol
    sector_idx = rng.integers(0, n_sec, n)
    base_logv = rng.normal(np.log(800_000), 1.0, n)
    price0 = np.exp(rng.uniform(np.log(5), np.log(300), n))
    # Listings and delistings, by session index from the origin, within the first `days` sessions.
    k = min(max(1, n // 30), n // 2)
    first = np.zeros(n, dtype=np.int64)  # first session index with a bar
    stop = np.full(n, np.iinfo(np.int64).max)  # first session index without one (delisted)
    late = rng.choice(n, size=k, replace=False)
    first[late] = rng.integers(days // 4, days // 2 + 1, size=k)
    early = rng.choice(np.setdiff1d(np.arange(n), late), size=k, replace=False)
    stop[early] = rng.integers(days // 2, max(days // 2 + 1, days - 5), size=k)

    # Shocks: one stream per session.
    fz = np.empty((t_n, len(_FACTOR_VOLS)))
    e, e_gap, u, wick_hi, wick_lo, draw = (np.empty((t_n, n)) for _ in range(6))
    for t in range(t_n):
        r = _stream(seed, 2, x, t)
        fz[t] = _t_shocks(r, (len(_FACTOR_VOLS),))
        e[t] = _t_shocks(r, (n,))
        e_gap[t] = _t_shocks(r, (n,))
        u[t] = r.standard_normal(n)
        wick_hi[t] = np.abs(r.standard_normal(n))
        wick_lo[t] = np.abs(r.standard_normal(n))
        draw[t] = r.random(n)
    f = _garch(fz, _FACTOR_VOLS)
    m_intra, m_gap = f[:, 0], f[:, 1]
    s_intra = f[:, 2 : 2 + n_sec][:, sector_idx]
    s_gap = f[:, 2 + n_sec :][:, sector_idx]

    opens = np.empty((t_n, n))
    closes = np.empty((t_n, n))
    logv = np.empty((t_n, n))
    prev_close, prev_r, prev_u, dev = price0, np.zeros(n), np.zeros(n), np.zeros(n)
    h = np.ones(n)
    for t in range(t_n):  # recursions over sessions, vectorized over symbols
        idio = sigma * np.sqrt(h) * e[t]
        on = signal and (signal_until is None or sess[t] <= signal_until)
        sig = float(signal) * (-REVERSAL * prev_r + ATTENTION * sigma * prev_u) if on else 0.0
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
    t_idx = np.arange(t_n)[:, None]
    alive = (t_idx >= first) & (t_idx < stop) & (draw > 0.0005)

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
        },
        schema_overrides={"exchange": pl.String, "symbol": pl.String},
    ).with_columns(pl.col("date").cast(pl.Date)), pl.DataFrame(
        {"symbol": symbols, "exchange": exchange, "sector": np.array(SECTORS)[sector_idx]}
    )


def origins(days: int, end: dt.date) -> dict[str, dt.date]:
    """Per exchange, the first session of ``days`` sessions ending at ``end`` (or the calendar's
    first session when it holds fewer)."""
    out = {}
    for exchange in EXCHANGE_SHARES:
        arr = calendar.session_array(exchange)
        i = int(np.searchsorted(arr, np.datetime64(end, "D"), "right"))
        if i == 0:
            raise ValueError(f"{exchange}: no session on or before {end}")
        out[exchange] = arr[max(0, i - days)].astype(dt.date)
    return out


def generate(
    symbols: int = 300, days: int = 320, seed: int = 7, end: dt.date | None = None, signal: bool | float = True,
    signal_until: dt.date | None = None,
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Return (bars, symbols) of a sample market of ``symbols`` symbols and ``days`` sessions per
    exchange ending at ``end`` (default: the last complete NYSE session). ``signal``: True plants
    the predictable component, False leaves none, and a number scales it (the calibration tests
    plant a stronger one). ``signal_until``: the component stops after that day, a regime break
    that a model trained before it cannot know about (the monitoring tests use it)."""
    if days < 2:
        raise ValueError("the sample market needs at least 2 sessions")
    if end is None:
        end = AsOf().last_complete_session(REFERENCE)
    return generate_from(symbols=symbols, days=days, seed=seed, origins=origins(days, end), end=end, signal=signal,
                         signal_until=signal_until)


def generate_from(
    symbols: int, days: int, seed: int, origins: dict[str, dt.date], end: dt.date, signal: bool | float = True,
    signal_until: dt.date | None = None,
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(bars, symbols) of the sample market that starts at ``origins`` (per exchange) and runs to
    ``end``. ``days`` is the length it was first generated with: it places the late listings
    and delistings. For every session up to an earlier end, the bars are those of that end."""
    if symbols < 3:
        raise ValueError("the sample market needs at least 3 symbols (one per exchange)")
    if days < 2:
        raise ValueError("the sample market needs at least 2 sessions")
    if seed < 0:
        raise ValueError("the sample market's seed must be 0 or more")
    rng = _stream(seed, 0)
    tickers = _tickers(rng, symbols)
    bar_frames, sym_frames = [], []
    start = 0
    for x, (exchange, count) in enumerate(_split(symbols).items()):
        ex_syms = tickers[start : start + count]
        start += count
        sess = calendar.sessions(exchange, origins[exchange], end)
        if not sess:
            raise ValueError(f"{exchange}: no session from the origin {origins[exchange]} to {end}")
        bars, syms = _exchange_bars(seed, x, exchange, ex_syms, days, sess, signal, signal_until)
        bar_frames.append(bars)
        sym_frames.append(syms)
    syms = pl.concat(sym_frames)
    names = [
        f"{_NAME_A[i % len(_NAME_A)]} {_NAME_B[(i * 7) % len(_NAME_B)]} {_SUFFIX[(i * 3) % len(_SUFFIX)]}"
        for i in rng.permutation(syms.height)
    ]
    syms = syms.with_columns(pl.Series("name", names)).select("symbol", "exchange", "name", "sector")
    return pl.concat(bar_frames).sort(["exchange", "symbol", "date"]), syms


# ------------------------------------------------------------- the sample in the store
def resolve_end(end: str | dt.date | None, clock: AsOf) -> tuple[dt.date, str | None]:
    """The last session of the sample for ``--end`` (default: the last complete NYSE session at
    ``clock``), and a note when ``--end`` had to move back to a complete session. A date after
    today (or after --as-of) is refused."""
    last = clock.last_complete_session(REFERENCE)
    if last is None:
        raise RetrainError(f"no complete {REFERENCE} session as of {clock.label()}",
                           hint="use a later --as-of")
    if end is None:
        return last, None
    day = calendar.parse_date(end, "--end")
    today = clock.today(REFERENCE)
    if day > today:
        when = f"today ({today})" if clock.is_now else f"--as-of {clock.label()}"
        raise RetrainError(
            f"--end {day} is after {when}: the sample market cannot hold sessions that have not happened yet",
            hint=f"give a date up to {today}, or leave --end out to end at the last complete session ({last})",
        )
    if not calendar.is_session(REFERENCE, day):
        prev = calendar.previous_session(REFERENCE, day)
        if prev is None:
            raise RetrainError(f"--end {day} is before the {REFERENCE} calendar starts", hint="give a later date")
        return prev, f"--end {day} is not a session; the sample ends at the previous session, {prev}"
    if day > last:
        return last, (f"--end {day}: that session is not complete yet; "
                      f"the sample ends at the last complete session, {last}")
    return day, None


def record(symbols: int, days: int, seed: int, signal: bool, origins: dict[str, dt.date], end: dt.date,
           signal_until: dt.date | None = None) -> dict:
    """What ``sample/_state.json`` holds about the sample market in a store."""
    return {
        "generator": GENERATOR, "symbols": symbols, "days": days, "seed": seed, "signal": signal,
        "signal_until": signal_until.isoformat() if signal_until else None,
        "origins": {ex: d.isoformat() for ex, d in origins.items()}, "end": end.isoformat(),
    }


def _until(state: dict) -> dt.date | None:
    value = state.get("signal_until")
    return dt.date.fromisoformat(value) if value else None


def write(
    store: Store, symbols: int, days: int, seed: int, end: dt.date, signal: bool, signal_until: dt.date | None = None
) -> tuple[pl.DataFrame, pl.DataFrame, UpsertResult, bool]:
    """Generate the sample market and upsert it into ``store``: (bars, symbols, upsert result,
    recorded). It is recorded for later top-ups when the store held no bars before, or held
    the recorded sample (whose record it replaces); added to other bars, it is not the sample."""
    starts = origins(days, end)
    bars, syms = generate_from(symbols=symbols, days=days, seed=seed, origins=starts, end=end, signal=signal,
                               signal_until=signal_until)
    with store.lock("retrain sample-data"):
        recorded = not store.has_bars() or bool(store.read_state(STATE_TABLE))
        result = store.upsert_bars(bars)
        store.upsert_symbols(syms)
        if recorded:
            store.write_state(STATE_TABLE, record(symbols, days, seed, signal, starts, end, signal_until))
    return bars, syms, result, recorded


@dataclass(frozen=True)
class TopUp:
    """What ``top_up`` did: ``status`` is "added", "up to date" or "not the sample"."""

    status: str
    state: dict
    previous_end: dt.date | None = None
    end: dt.date | None = None
    sessions: int = 0  # NYSE sessions added
    bars: pl.DataFrame | None = None  # the bars added
    result: UpsertResult | None = None


def top_up(store: Store, end: dt.date, given: dict | None = None) -> TopUp:
    """Extend the recorded sample market in ``store`` to ``end``: generate it again from its
    recorded origins and upsert the sessions after its recorded end (the earlier ones come out
    identical). ``given`` holds the sample options given explicitly (symbols, days, seed,
    signal); one that differs from the record is refused. A store with bars but no record
    holds someone's own data: nothing is written."""
    with store.lock("retrain sample-data --top-up"):
        state = store.read_state(STATE_TABLE)
        if not state:
            return TopUp("not the sample", state)
        if state.get("generator") != GENERATOR:
            raise RetrainError(
                "the sample market in the store was written by another version of the generator; it cannot be continued",
                hint="remove the data and artifacts directories and run `retrain sample-data` again",
            )
        for key, value in (given or {}).items():
            if value != state.get(key):
                option = ("--no-signal" if key == "signal" else
                          f"--signal-until {value}" if key == "signal_until" else f"--{key} {value}")
                recorded = (f"{state['symbols']} symbols, {state['days']} days, seed {state['seed']}, "
                            f"{'with' if state['signal'] else 'no'} signal")
                raise RetrainError(
                    f"--top-up continues the recorded sample market ({recorded}); {option} does not match it",
                    hint=f"leave out {option.split()[0]}, or write a different sample into an empty store",
                )
        previous = dt.date.fromisoformat(state["end"])
        if end <= previous:
            return TopUp("up to date", state, previous, previous)
        starts = {ex: dt.date.fromisoformat(d) for ex, d in state["origins"].items()}
        bars, _ = generate_from(symbols=state["symbols"], days=state["days"], seed=state["seed"],
                                origins=starts, end=end, signal=state["signal"], signal_until=_until(state))
        new = bars.filter(pl.col("date") > previous)
        result = store.upsert_bars(new)
        state = {**state, "end": end.isoformat()}
        store.write_state(STATE_TABLE, state)
    sessions = len(calendar.sessions(REFERENCE, previous + dt.timedelta(days=1), end))
    return TopUp("added", state, previous, end, sessions, new, result)
