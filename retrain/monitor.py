"""Monitor statistics: is the live model still doing what its out-of-sample record promised?
Frames in, results out (the Learn layer): the flow reads the prediction journal, the realized
returns and the record, and hands them here as frames.

**Live record.** The journal of daily predictions joined with what happened (each symbol's
open-to-close return) is scored exactly as the backtest scores its record: ``backtest.simulate``
(top ``max_positions`` at the open, sold at the close, costs on both sides) and
``backtest.evidence`` (rank IC with its t-statistic, Sharpe with its standard error, PSR, share
of sessions that beat the universe with a Wilson interval). A symbol without a bar that session
(``actual`` null) could neither be bought nor scored, so it is left out; a session with no
realized return at all is not complete yet and is left out too. Below ``MIN_LIVE_SESSIONS`` (5)
complete sessions there is too little to judge.

**Decay rule** (``decay_test``): a lower one-sided CUSUM on the standardised daily rank IC,
z_t = (ric_t - mu0) / sigma, with mu0 and sigma the mean and standard deviation of the daily
rank IC in the model's own out-of-sample record: S_t = max(0, S_{t-1} - z_t - k), S_0 = 0, and
an alarm when S_t > h. The reference value k is half the shift from the expected edge to no
edge at all, k = mu0 / sigma / 2, clamped to ``K_BOUNDS`` (0.25 to 1.0). The decision interval
h is set so that a model that still works raises a false alarm once every ``ARL0`` = 500
sessions on average (about once in two years), from Siegmund's approximation of the average
run length, ARL(D) = (exp(-2Db) + 2Db - 1) / (2D^2) with b = h + 1.166 and in-control drift
D = -k. The test only applies when the record shows an edge to lose: mu0 > 0 with a t-statistic
of at least 2 (``backtest.IC_T_EDGE``).

**Feature drift** (``psi``): the Population Stability Index of each feature between the
training rows and the recent rows, over ``PSI_BINS`` = 10 bins cut at the training deciles
(missing values are an eleventh bin; a categorical feature uses its categories as bins).
Below 0.10 the feature is stable, from 0.10 (``PSI_MODERATE``) it moved moderately (listed, no
warning), from 0.25 (``PSI_SIGNIFICANT``) it moved significantly (a warning: the model sees
inputs unlike those it learned from). A band counts only above the PSI that sampling alone
gives 1% of the time (``psi_noise``: a chi-square bound, or for fewer than 500 observations a
side the 99th percentile over 1,000 random splits of the pooled values): a market-wide feature has
one observation per session, and 20 sessions against 60 give PSIs above 1 when nothing moved.

**Status** (``judge``): "alert" when the decay test alarms; else "warning" when there are fewer
than 5 live sessions, a feature drifted significantly, the model is older than the allowed age,
or the record shows no edge to watch; else "ok".
"""

from __future__ import annotations

import datetime as dt
import math

import numpy as np
import polars as pl

from retrain import backtest, metrics
from retrain.backtest import BacktestConfig

PSI_MODERATE = 0.10  # PSI at or above: the feature moved moderately (listed, no warning)
PSI_SIGNIFICANT = 0.25  # PSI at or above: the feature moved significantly (a warning)
PSI_BINS = 10  # quantile bins of the training values, plus one for missing values
PSI_FLOOR = 1e-4  # proportions are floored here before the log: an empty bin is not infinitely surprising
ARL0 = 500  # in-control average run length of the decay test, in sessions (~1 false alarm / 2 years)
MIN_LIVE_SESSIONS = 5  # fewer complete live sessions: too few to judge yet
K_BOUNDS = (0.25, 1.0)  # clamp of the CUSUM reference value k (in sigma units)
NOISE_LEVEL = 0.99  # a PSI below the 99% quantile of its no-drift sampling distribution is noise
SMALL_SAMPLE = 500  # below this many observations a side, the noise bound comes from permutations
PERMUTATIONS = 1_000  # random splits of the pooled values for the small-sample noise bound
BAND_ORDER = {"significant": 0, "moderate": 1, "within noise": 2, "stable": 3, "unknown": 4}  # drift table order
PERMUTED_MAX = 2_000  # training values a permutation bound draws on, at most
PERMUTED_CELLS = 200_000  # values of the splits scored in one array pass (bounds its memory)
SIEGMUND_OFFSET = 1.166  # b = h + 1.166: Siegmund's correction for the overshoot of a normal walk

_PREDICTION_SCHEMA = {"trade_date": pl.Date, "exchange": pl.String, "symbol": pl.String, "predicted": pl.Float64,
                      "actual": pl.Float64, "avg_dollar_volume_20": pl.Float64}
_NAN = float("nan")


# ------------------------------------------------------------------ feature drift
def _psi_from_counts(e: np.ndarray, a: np.ndarray):
    """The PSI of expected and actual counts per bin, bins along the last axis: a float for one
    pair of count vectors, an array of one PSI per row for 2-D counts."""
    pe = np.maximum(e / e.sum(axis=-1, keepdims=True), PSI_FLOOR)
    pa = np.maximum(a / a.sum(axis=-1, keepdims=True), PSI_FLOOR)
    out = np.sum((pa - pe) * np.log(pa / pe), axis=-1)
    return float(out) if np.ndim(out) == 0 else out


def _quantiles(s: np.ndarray, q: np.ndarray) -> np.ndarray:
    """np.quantile(s, q) (method "linear", same arithmetic) of an already sorted ``s``, without
    the copy and partition np.quantile would spend on it."""
    pos = q * (len(s) - 1)
    lo = np.floor(pos).astype(np.int64)
    hi = np.minimum(lo + 1, len(s) - 1)
    return _between(s[lo], s[hi], pos - lo)


def _between(a: np.ndarray, b: np.ndarray, t: np.ndarray) -> np.ndarray:
    """np.quantile's linear interpolation from ``a`` to ``b`` at ``t`` (its arithmetic exactly)."""
    return np.where(t >= 0.5, b - (b - a) * (1 - t), a + (b - a) * t)


def psi(expected: np.ndarray, actual: np.ndarray, bins: int = PSI_BINS) -> float:
    """Population Stability Index of a numeric feature, sum((a - e) * ln(a / e)) over bins cut at
    the ``bins``-quantiles of the finite ``expected`` values (equal edges merged, outer edges -inf
    and +inf, a bin is [lower, upper)). NaN / null values are a bin of their own on both sides.
    Proportions are floored at 1e-4 before the log. NaN when ``expected`` has no finite value or
    ``actual`` is empty. E.g. psi([1, 2, 3, 4], [1, 1, 1, 4], bins=2) = 0.25 ln 3: the median
    2.5 splits 50/50 into 75/25."""
    e, a = np.asarray(expected, dtype=float).ravel(), np.asarray(actual, dtype=float).ravel()
    s = np.sort(e[~np.isnan(e)])  # one sort gives the quantiles and the expected counts
    finite = s[np.searchsorted(s, -np.inf, side="right"):np.searchsorted(s, np.inf, side="left")]
    if len(finite) == 0 or len(a) == 0:
        return _NAN
    edges = _quantiles(finite, np.linspace(0.0, 1.0, bins + 1)[1:-1])  # non-decreasing: equal ones merged
    edges = edges[np.r_[True, edges[1:] != edges[:-1]]]
    cuts = np.searchsorted(s, edges, side="left")  # values below each edge
    e_counts = np.r_[np.diff(np.r_[0, cuts, len(s)]), len(e) - len(s)]
    a_bin = np.where(np.isnan(a), len(edges) + 1, np.searchsorted(edges, a, side="right"))
    return _psi_from_counts(e_counts.astype(float), np.bincount(a_bin, minlength=len(edges) + 2).astype(float))


def psi_rows(expected: np.ndarray, actual: np.ndarray, bins: int = PSI_BINS) -> np.ndarray:
    """``psi`` of each row of ``expected`` against the same row of ``actual`` (2-D float arrays),
    in one pass of array operations: the permutation bound scores a thousand splits this way.
    Equal quantile edges are kept rather than merged: the bins between them are empty on both
    sides and add nothing, so each value is ``psi``'s up to the order of a floating-point sum."""
    e, a = np.asarray(expected, dtype=float), np.asarray(actual, dtype=float)
    s = np.sort(e, axis=1)  # NaN last
    valid = (~np.isnan(e)).sum(axis=1)
    low = (e == -np.inf).sum(axis=1)
    finite = valid - low - (e == np.inf).sum(axis=1)
    rows = np.arange(len(e))[:, None]
    pos = np.linspace(0.0, 1.0, bins + 1)[1:-1][None, :] * (np.maximum(finite, 1) - 1)[:, None]
    lo = np.floor(pos).astype(np.int64)
    hi = np.minimum(lo + 1, np.maximum(finite, 1)[:, None] - 1)
    edges = _between(s[rows, low[:, None] + lo], s[rows, low[:, None] + hi], pos - lo)  # _quantiles, row by row
    below = (e[:, :, None] < edges[:, None, :]).sum(axis=1)  # NaN compares False: not counted
    e_counts = np.diff(np.concatenate([np.zeros((len(e), 1), np.int64), below, valid[:, None]], axis=1), axis=1)
    e_counts = np.concatenate([e_counts, (e.shape[1] - valid)[:, None]], axis=1)
    a_valid = (~np.isnan(a)).sum(axis=1)
    at_or_above = (a[:, :, None] >= edges[:, None, :]).sum(axis=1)
    a_counts = -np.diff(np.concatenate([a_valid[:, None], at_or_above, np.zeros((len(a), 1), np.int64)], axis=1),
                        axis=1)
    a_counts = np.concatenate([a_counts, (a.shape[1] - a_valid)[:, None]], axis=1)
    out = _psi_from_counts(e_counts.astype(float), a_counts.astype(float))
    out[(finite == 0) | (a.shape[1] == 0)] = _NAN
    return out


def _psi_series(expected: pl.Series, actual: pl.Series) -> float:
    if expected.len() == 0 or actual.len() == 0:
        return _NAN
    expected, actual = (x.fill_nan(None) if x.dtype.is_float() else x for x in (expected, actual))
    both = pl.DataFrame({"v": pl.concat([expected.cast(pl.String), actual.cast(pl.String)]),
                         "expected": np.r_[np.ones(expected.len(), bool), np.zeros(actual.len(), bool)]})
    c = (both.group_by("v").agg(pl.col("expected").sum().alias("e"), (~pl.col("expected")).sum().alias("a"))
         .sort("v", nulls_last=True))  # one order of the categories: the same sum, bit for bit, every run
    return _psi_from_counts(c["e"].to_numpy().astype(float), c["a"].to_numpy().astype(float))


def psi_categorical(expected: np.ndarray, actual: np.ndarray) -> float:
    """PSI over category frequencies: the union of the categories of both sides (compared as
    text), null (or NaN) a category of its own, proportions floored at 1e-4. NaN when a side is
    empty. E.g. psi_categorical(["a", "a", "b", None], ["a", "b", "b", "b"]) bins a/b/null as
    50/25/25% against 25/75/0%."""
    return _psi_series(*(pl.Series(list(np.asarray(x, dtype=object).ravel()), strict=False)
                         for x in (expected, actual)))


def psi_band(value: float, noise: float = 0.0) -> str:
    """"significant" (>= 0.25), "moderate" (>= 0.10), "stable", or "unknown" for NaN; "within noise"
    when the PSI reaches a band but not ``noise`` (``psi_noise``): so few observations would give
    it with no drift at all."""
    if value != value:
        return "unknown"
    band = "significant" if value >= PSI_SIGNIFICANT else "moderate" if value >= PSI_MODERATE else "stable"
    return "within noise" if band != "stable" and value <= noise else band


def psi_noise(n_expected: int, n_actual: int, bins: int, level: float = NOISE_LEVEL) -> float:
    """The PSI that ``level`` (99%) of samples of these sizes stay below when nothing drifted: under
    no drift, PSI * n*m/(n+m) is asymptotically chi-square with bins - 1 degrees of freedom (the PSI
    is the symmetric Kullback-Leibler divergence). Wilson-Hilferty's chi-square quantile."""
    if n_expected < 1 or n_actual < 1 or bins < 2:
        return math.inf
    k = bins - 1
    chi2 = k * (1 - 2 / (9 * k) + metrics.norm_ppf(level) * math.sqrt(2 / (9 * k))) ** 3
    return chi2 * (1 / n_expected + 1 / n_actual)


def psi_noise_permuted(expected: pl.Series, actual: pl.Series, categorical: bool = False,
                       level: float = NOISE_LEVEL, rounds: int = PERMUTATIONS, seed: int = 0) -> float:
    """``psi_noise`` for small samples, where the chi-square approximation fails (a few values per
    bin, empty bins): the ``level`` quantile of the PSI over ``rounds`` random splits of the pooled
    values into samples of the two sizes (no drift by construction). Fixed seed."""
    if expected.len() == 0 or actual.len() == 0:
        return math.inf
    if expected.len() > PERMUTED_MAX:  # the larger side's shape needs no more values (even sample)
        expected = expected.gather_every(-(-expected.len() // PERMUTED_MAX))
    pooled = pl.concat([expected, actual])
    if categorical:  # category codes, null (and NaN) one of them, counted with bincount
        text = (pooled.fill_nan(None) if pooled.dtype.is_float() else pooled).cast(pl.String).fill_null("\0")
        codes = np.unique(text.to_numpy(), return_inverse=True)[1].ravel()
        k = int(codes.max()) + 1
    else:
        values_ = pooled.cast(pl.Float64).to_numpy()
    rng = np.random.default_rng(seed)
    n = expected.len()
    values = []
    step = max(1, PERMUTED_CELLS // pooled.len())  # splits drawn and scored together
    for first in range(0, rounds, step):
        idx = np.stack([rng.permutation(pooled.len()) for _ in range(min(step, rounds - first))])
        if categorical:  # every split's counts at once: split r's codes are offset into counts r*k..r*k+k-1
            split = codes[idx] + (np.arange(len(idx)) * k)[:, None]
            values += list(_psi_from_counts(*(np.bincount(part.ravel(), minlength=len(idx) * k).reshape(len(idx), k)
                                              .astype(float) for part in (split[:, :n], split[:, n:]))))
        else:
            values += list(psi_rows(values_[idx[:, :n]], values_[idx[:, n:]]))
    values = np.asarray(values, dtype=float)
    values = values[~np.isnan(values)]
    return float(np.quantile(values, level)) if len(values) else math.inf


def _session_wide(train: pl.DataFrame, columns: list[str], session: str | None) -> set[str]:
    """The ``columns`` that take one value per session in ``train`` (a market-wide feature, the
    day of the week): their observations are the sessions, not the rows."""
    if session is None or session not in train.columns or train.is_empty():
        return set()
    most = train.group_by(session).agg(pl.col(columns).n_unique()).select(pl.col(columns).max()).row(0, named=True)
    return {c for c, n in most.items() if n is not None and n <= 1}


def feature_drift(train: pl.DataFrame, recent: pl.DataFrame, columns: list[str],
                  categorical: set[str] | frozenset = frozenset(), session: str | None = "trade_date") -> pl.DataFrame:
    """One row per feature of ``columns``: feature, psi (training rows expected, recent rows
    actual), noise (``psi_noise``: the PSI no drift would stay below, at 99% for the whole table:
    a Bonferroni share per feature) and band (``psi_band``), by band (significant, moderate,
    within noise, stable, unknown), then the most drifted first. A feature with one value per session
    (``session`` column) is compared over its values per session: it has as many observations as
    sessions, and its noise bound says so."""
    missing = [c for c in columns if c not in train.columns or c not in recent.columns]
    if missing:
        raise ValueError(f"feature column(s) missing from the training or recent rows: {', '.join(missing)}")
    values, noise = [], []
    level = 1 - (1 - NOISE_LEVEL) / max(1, len(columns))  # 1% for the whole table, not for each feature
    wide = _session_wide(train, columns, session)
    for c in columns:
        e, a = train, recent
        if c in wide:
            e, a = (x.unique(session, keep="first", maintain_order=True) for x in (train, recent))
        if c in categorical:
            values.append(_psi_series(e[c], a[c]))
            bins = max(2, pl.concat([e[c].cast(pl.String), a[c].cast(pl.String)]).n_unique())
        else:
            values.append(psi(e[c].cast(pl.Float64).to_numpy(), a[c].cast(pl.Float64).to_numpy()))
            bins = PSI_BINS + 1
        noise.append(psi_noise(e.height, a.height, bins, level) if min(e.height, a.height) >= SMALL_SAMPLE else
                     psi_noise_permuted(e[c], a[c], c in categorical, level))
    out = pl.DataFrame({"feature": list(columns), "psi": values, "noise": noise,
                        "band": [psi_band(v, z) for v, z in zip(values, noise)]},
                       schema={"feature": pl.String, "psi": pl.Float64, "noise": pl.Float64, "band": pl.String})
    rank = pl.col("band").replace_strict(BAND_ORDER, default=len(BAND_ORDER), return_dtype=pl.Int8)
    return out.sort([rank, pl.col("psi").is_nan(), "psi", "feature"], descending=[False, False, True, False])


# ------------------------------------------------------------------ live record
def _session_ic(p: pl.DataFrame) -> pl.DataFrame:
    """trade_date, ic (Pearson), rank_ic (Spearman) per session, with metrics.daily_ic's rules
    (NaN for a session with fewer than two rows or no spread)."""
    days, ic, ric = metrics.session_ics(p["trade_date"].to_numpy(), p["actual"].to_numpy(), p["predicted"].to_numpy())
    return pl.DataFrame({"trade_date": days, "ic": ic, "rank_ic": ric},
                        schema={"trade_date": pl.Date, "ic": pl.Float64, "rank_ic": pl.Float64})


def live_record(predictions: pl.DataFrame, universe: pl.DataFrame, cfg: BacktestConfig) -> tuple[pl.DataFrame, dict]:
    """(daily, figures) of predictions joined with their realized returns (trade_date, exchange,
    symbol, predicted, actual, avg_dollar_volume_20), scored by the backtest's trading rule and
    evidence. daily: trade_date, ic, rank_ic, net_return, equity (after the close, from
    ``cfg.bankroll``), universe_return, symbols, trades; oldest first. figures: those of
    ``backtest.evidence`` plus ic (mean daily Pearson IC) with ic_se / ic_t, net_return (compounded
    total) and net_return_per_session. Rows without a realized return or prediction are left out."""
    if predictions.height == 0:
        predictions = pl.DataFrame(schema=_PREDICTION_SCHEMA)
    p = (predictions.with_columns(pl.col("actual", "predicted").cast(pl.Float64).fill_nan(None))
         .drop_nulls(["actual", "predicted"]).sort("trade_date", maintain_order=True))
    sim, _ = backtest.simulate(p, cfg)
    ics = _session_ic(p)
    ric = ics["rank_ic"].to_numpy()
    ev = backtest.evidence(sim, p, universe, cfg, rank_ic=ric[np.isfinite(ric)])  # the rank ICs computed once
    daily = (sim.rename({"date": "trade_date", "daily_return": "net_return"})
             .join(ics, on="trade_date", how="left")
             .join(universe.select("trade_date", pl.col("universe_return").cast(pl.Float64)), on="trade_date", how="left")
             .join(p.group_by("trade_date").len("symbols"), on="trade_date", how="left")
             .select("trade_date", "ic", "rank_ic", "net_return", "equity", "universe_return",
                     pl.col("symbols").cast(pl.Int64), "trades").sort("trade_date"))
    r = daily["net_return"].to_numpy()
    ic, ic_se, ic_t = metrics.mean_t(daily["ic"].to_numpy())
    figures = {**ev, "ic": ic, "ic_se": ic_se, "ic_t": ic_t, "net_return": ev["total_return"],
               "net_return_per_session": float(r.mean()) if len(r) else _NAN}
    if daily.height == 0:  # no session: no figure, not a flat 0% record
        figures.update({k: _NAN for k in ("total_return", "universe_return", "excess_return", "net_return")})
    return daily, figures


def expectation(predictions: pl.DataFrame, universe: pl.DataFrame, cfg: BacktestConfig, source: str) -> dict:
    """The figures of ``live_record`` over the model's own out-of-sample record (same columns),
    with rank_ic_std (the daily rank IC's standard deviation, ddof=1) and ``source`` (where the
    expectation comes from, e.g. "backtest record, 252 sessions")."""
    return expectation_of(*live_record(predictions, universe, cfg), source)


def expectation_of(daily: pl.DataFrame, figures: dict, source: str) -> dict:
    """``expectation`` from a record's ``live_record`` (daily, figures) already computed."""
    ric = daily["rank_ic"].to_numpy()
    ric = ric[~np.isnan(ric)]
    return {**figures, "rank_ic_std": float(np.std(ric, ddof=1)) if len(ric) > 1 else _NAN, "source": source}


# ------------------------------------------------------------------ decay (CUSUM)
def _siegmund(delta: float, h: float) -> float:
    """Siegmund's ARL of a one-sided CUSUM with drift ``delta`` per step and threshold ``h``."""
    b = h + SIEGMUND_OFFSET
    x = 2.0 * delta * b
    if abs(x) < 1e-6:  # the limit b^2, with its first-order term
        return b * b * (1.0 - x / 3.0)
    try:
        return (math.expm1(-x) + x) / (2.0 * delta * delta)
    except OverflowError:
        return math.inf


def cusum_arl(delta_shift: float, k: float, h: float) -> float:
    """Average run length (sessions) of the CUSUM with reference ``k`` and threshold ``h`` when the
    standardised increments have shifted by ``delta_shift`` sigma towards the alarm (Siegmund's
    approximation, D = delta_shift - k; 0 shift is the in-control ARL)."""
    return _siegmund(delta_shift - k, h)


def cusum_threshold(k: float, arl0: float = ARL0) -> float:
    """The threshold h >= 0 whose in-control ARL (Siegmund, D = -k) is ``arl0``, by bisection."""
    if not arl0 > 0 or not k >= 0:
        raise ValueError(f"need arl0 > 0 and k >= 0, got arl0={arl0}, k={k}")
    if _siegmund(-k, 0.0) >= arl0:
        return 0.0
    lo, hi = 0.0, 1.0
    while _siegmund(-k, hi) < arl0:
        lo, hi = hi, 2.0 * hi
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if _siegmund(-k, mid) < arl0:
            lo = mid
        else:
            hi = mid
        if hi - lo < 1e-12:
            break
    return 0.5 * (lo + hi)


def decay_test(daily_rank_ic: np.ndarray, mu0: float, sigma: float, arl0: float = ARL0,
               mu0_t: float | None = None) -> dict:
    """The decay rule of the module docstring on the live daily rank ICs (oldest first) against the
    record's mean ``mu0``, standard deviation ``sigma`` and t-statistic ``mu0_t``. A NaN session
    is skipped (S carries over, so ``path`` stays aligned with the input; ``sessions`` counts the
    others). ``no_edge`` says the record shows no edge to lose."""
    ric = np.asarray(daily_rank_ic, dtype=float).ravel()
    ok = ~np.isnan(ric)
    out = {"applicable": False, "alarm": False, "no_edge": False, "statistic": _NAN, "max_statistic": _NAN,
           "threshold": _NAN, "k": _NAN, "alarm_index": None, "sessions": int(ok.sum()),
           "expected_detection_sessions": _NAN, "false_alarm_arl": arl0, "path": []}
    if not sigma > 0 or not math.isfinite(sigma) or not math.isfinite(mu0):
        return {**out, "reason": f"the record's daily rank IC has no usable mean and spread (mean {mu0:+.4f}, "
                                 f"standard deviation {sigma:.4f}): nothing to standardise the live rank IC with"}
    if mu0 <= 0 or (mu0_t is not None and not mu0_t >= backtest.IC_T_EDGE):
        t = "" if mu0_t is None else f", t {mu0_t:.2f}"
        return {**out, "no_edge": True,
                "reason": f"the record shows no edge to lose (mean rank IC {mu0:+.4f}{t}; an edge needs a mean "
                          f"above 0 with t >= {backtest.IC_T_EDGE:.0f}), so the decay test does not apply"}
    k = min(max(mu0 / sigma / 2.0, K_BOUNDS[0]), K_BOUNDS[1])
    h = cusum_threshold(k, arl0)
    step = np.where(ok, -(ric - mu0) / sigma - k, 0.0)
    walk = np.cumsum(step)
    s = walk - np.minimum(np.minimum.accumulate(walk), 0.0)  # Lindley: S_t = max(0, S_{t-1} + step_t)
    over = np.flatnonzero(s > h)
    return {**out, "applicable": True, "alarm": bool(len(over)), "statistic": float(s[-1]) if len(s) else 0.0,
            "max_statistic": float(s.max()) if len(s) else 0.0, "threshold": h, "k": k,
            "alarm_index": int(over[0]) if len(over) else None,
            "expected_detection_sessions": cusum_arl(mu0 / sigma, k, h), "path": s.tolist()}


def age(trained_through: dt.date, reference: dt.date, sessions: list[dt.date]) -> dict:
    """Calendar days and sessions (of ``sessions``) after ``trained_through``, up to ``reference``."""
    return {"age_days": (reference - trained_through).days,
            "age_sessions": sum(1 for d in sessions if trained_through < d <= reference)}


# ------------------------------------------------------------------ status
def _f(v, spec: str) -> str:
    return "n/a" if v is None or v != v else format(v, spec)


def judge(live: dict, expected: dict | None, decay: dict | None, drift: pl.DataFrame | None, age: dict | None,
          max_age_days: int, rollback: str | None = None, flags: str = "") -> tuple[str, list[dict]]:
    """(status, reasons): "alert", "warning" or "ok" by the rule of the module docstring, and one
    {"level", "reason", "action"} per finding (alerts first), ending with an "info" summary of the
    live rank IC against the expected one."""
    reasons: list[dict] = []
    retrain_ = f"retrain the model (`retrain run{flags}`)"
    n = live.get("sessions", 0) or 0
    if decay and decay.get("alarm"):
        back = f", or roll back to run {rollback}: `retrain models rollback{flags}`" if rollback else ""
        reasons.append({"level": "alert", "reason": (
            f"the live rank IC has decayed: the CUSUM statistic crossed its threshold {decay['threshold']:.2f} at "
            f"live session {decay['alarm_index'] + 1} and stands at {decay['statistic']:.2f} (live rank IC "
            f"{_f(live.get('rank_ic'), '+.4f')} against {_f((expected or {}).get('rank_ic'), '+.4f')} expected); a model "
            f"that still works crosses it about once in {decay['false_alarm_arl']:.0f} sessions"),
            "action": retrain_ + back})
    if n < MIN_LIVE_SESSIONS:
        text = ("nothing to judge yet: no complete live session" if n == 0 else
                f"too few sessions to judge yet: {n} complete live session(s), at least {MIN_LIVE_SESSIONS} needed")
        reasons.append({"level": "warning", "reason": text,
                        "action": f"keep predicting daily (`retrain predict{flags}`) and run `retrain monitor{flags}` again"})
    if drift is not None and drift.height:
        for band, level in (("significant", "warning"), ("moderate", "info")):
            rows = drift.filter(pl.col("band") == band)
            if rows.height == 0:
                continue
            top = ", ".join(f"{f} (PSI {v:.2f})" for f, v in rows.head(3).select("feature", "psi").iter_rows())
            top += ", ..." if rows.height > 3 else ""
            bound = f">= {PSI_SIGNIFICANT}" if band == "significant" else f"{PSI_MODERATE} to {PSI_SIGNIFICANT}"
            reasons.append({"level": level, "reason": (
                f"{rows.height} feature(s) drifted {'significantly' if level == 'warning' else 'moderately'} "
                f"since training (PSI {bound}): {top}"),
                "action": (f"look at the drifted features ({top}) and " + retrain_) if level == "warning" else
                          f"watch {top}; no action needed yet"})
    if age is not None and age.get("age_days") is not None and age["age_days"] > max_age_days:
        reasons.append({"level": "warning", "reason": (
            f"the model is {age['age_days']} days old ({age['age_sessions']} session(s) since its training data "
            f"ends), more than the {max_age_days} days allowed"), "action": retrain_})
    if decay and not decay.get("applicable"):
        reasons.append({"level": "warning" if decay.get("no_edge") else "info", "reason": decay["reason"],
                        "action": (retrain_ + " and check its verdict before trading on it") if decay.get("no_edge")
                        else "the decay test needs a record with a daily rank IC that varies"})
    exp = expected or {}
    summary = (f"live rank IC {_f(live.get('rank_ic'), '+.4f')} (t {_f(live.get('rank_ic_t'), '.2f')}, {n} sessions), "
               f"net {_f(live.get('net_return_per_session'), '+.4%')} per session; expected "
               + (f"{_f(exp.get('rank_ic'), '+.4f')} (t {_f(exp.get('rank_ic_t'), '.2f')}), net "
                  f"{_f(exp.get('net_return_per_session'), '+.4%')} per session ({exp.get('source', 'record')})"
                  if expected else "unknown (no out-of-sample record to compare with)"))
    if decay and decay.get("applicable"):
        summary += (f"; decay CUSUM {decay['statistic']:.2f} of threshold {decay['threshold']:.2f} "
                    f"(a lost edge takes ~{decay['expected_detection_sessions']:.0f} sessions to detect)")
    reasons.append({"level": "info", "reason": summary,
                    "action": ("see above" if len(reasons) else "nothing to do") if expected else
                              f"retrain (`retrain run{flags}`) so the model has a record to compare with"})
    levels = {r["level"] for r in reasons}
    status = "alert" if "alert" in levels else "warning" if "warning" in levels else "ok"
    order = {"alert": 0, "warning": 1, "info": 2}
    return status, sorted(reasons, key=lambda r: order[r["level"]])
