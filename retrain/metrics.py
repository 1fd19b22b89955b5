"""Prediction and portfolio metrics as small pure functions (numpy in, float out).

Cross-sectional metrics work per session: ``dates`` groups the rows, and a session with fewer
than two rows (or no spread) contributes nothing.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

TRADING_DAYS = 252


def r2(y: np.ndarray, p: np.ndarray) -> float:
    """Coefficient of determination, 1 - SS_res / SS_tot (may be negative out of sample)."""
    y, p = np.asarray(y, float), np.asarray(p, float)
    ss_tot = float(np.sum((y - y.mean()) ** 2))
    return float("nan") if ss_tot == 0 else 1.0 - float(np.sum((y - p) ** 2)) / ss_tot


def mae(y: np.ndarray, p: np.ndarray) -> float:
    return float(np.mean(np.abs(np.asarray(y, float) - np.asarray(p, float))))


def hit_rate(y: np.ndarray, p: np.ndarray) -> float:
    """Share of rows where the prediction has the sign of the outcome (zeros excluded)."""
    y, p = np.asarray(y, float), np.asarray(p, float)
    mask = (y != 0) & (p != 0)
    return float(np.mean(np.sign(y[mask]) == np.sign(p[mask]))) if mask.any() else float("nan")


def _groups(dates: np.ndarray):
    order = np.argsort(dates, kind="stable")
    d = np.asarray(dates)[order]
    cuts = np.flatnonzero(d[1:] != d[:-1]) + 1
    return d, np.split(order, cuts)


def session_ic(dates: np.ndarray, y: np.ndarray, p: np.ndarray, rank: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(sessions in order, correlation of predictions with outcomes in each): Pearson, or
    Spearman with ``rank`` (average ranks for ties). NaN for a session with fewer than two rows
    or no spread on a side. Vectorized over sessions."""
    days, pearson, spearman = session_ics(dates, y, p, pearson=not rank, spearman=rank)
    return days, spearman if rank else pearson


def session_ics(dates: np.ndarray, y: np.ndarray, p: np.ndarray, pearson: bool = True,
                spearman: bool = True) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    """(sessions in order, Pearson IC, Spearman IC) of each session, as ``session_ic`` computes
    them, in one grouping (None for the one not asked for)."""
    import polars as pl

    frame = pl.DataFrame({"d": np.asarray(dates), "y": np.asarray(y, float), "p": np.asarray(p, float)})
    ranked = pl.corr(pl.col("p").rank("average"), pl.col("y").rank("average"))  # ranked within each session
    corr = {**({"c": pl.corr("p", "y")} if pearson else {}), **({"rc": ranked} if spearman else {})}
    out = (frame.group_by("d").agg(*(e.alias(c) for c, e in corr.items()), pl.len().alias("n")).sort("d")
           .with_columns(pl.when(pl.col("n") >= 2).then(pl.col(c)).otherwise(None).fill_null(float("nan"))
                         for c in corr))
    return (out["d"].to_numpy(), out["c"].to_numpy() if pearson else None,
            out["rc"].to_numpy() if spearman else None)


def daily_ic(dates: np.ndarray, y: np.ndarray, p: np.ndarray, rank: bool = False) -> np.ndarray:
    """Per-session correlation of predictions with outcomes (Pearson, or Spearman with ``rank``).
    Returns one value per session that has at least two rows and some spread, in date order."""
    if len(dates) == 0:
        return np.array([])
    values = session_ic(dates, y, p, rank)[1]
    return values[np.isfinite(values)]


def icir(ics: np.ndarray) -> float:
    """Mean daily IC over its standard deviation (information ratio of the signal)."""
    ics = np.asarray(ics, float)
    if len(ics) < 2 or ics.std(ddof=1) == 0:
        return float("nan")
    return float(ics.mean() / ics.std(ddof=1))


def top_n_spread(dates: np.ndarray, y: np.ndarray, p: np.ndarray, n: int) -> float:
    """Mean over sessions of (average outcome of the top-``n`` predictions - average outcome of
    all rows that session): what picking the top n adds over the universe."""
    y, p = np.asarray(y, float), np.asarray(p, float)
    out = []
    for idx in _groups(dates)[1]:
        if len(idx) <= n:
            continue
        top = idx[np.argsort(-p[idx], kind="stable")[:n]]
        out.append(y[top].mean() - y[idx].mean())
    return float(np.mean(out)) if out else float("nan")


# ------------------------------------------------------------------ portfolio
def total_return(daily_returns: np.ndarray) -> float:
    return float(np.prod(1.0 + np.asarray(daily_returns, float)) - 1.0)


def annualized_return(daily_returns: np.ndarray) -> float:
    r = np.asarray(daily_returns, float)
    if len(r) == 0:
        return float("nan")
    return float((1.0 + total_return(r)) ** (TRADING_DAYS / len(r)) - 1.0)


def sharpe(daily_returns: np.ndarray) -> float:
    """Daily mean over daily standard deviation (ddof=1), times sqrt(252); no risk-free rate."""
    r = np.asarray(daily_returns, float)
    if len(r) < 2 or r.std(ddof=1) == 0:
        return float("nan")
    return float(r.mean() / r.std(ddof=1) * math.sqrt(TRADING_DAYS))


def max_drawdown(equity: np.ndarray) -> float:
    """Largest peak-to-trough fall of an equity curve, as a positive fraction."""
    e = np.asarray(equity, float)
    if len(e) == 0:
        return 0.0
    peaks = np.maximum.accumulate(e)
    return float(np.max(1.0 - e / peaks))


def win_rate(trade_returns: np.ndarray) -> float:
    r = np.asarray(trade_returns, float)
    return float(np.mean(r > 0)) if len(r) else float("nan")


# ------------------------------------------------------------------ uncertainty
# Error bars for the numbers above: how much of a Sharpe ratio or a total return is luck.
_SQRT2 = math.sqrt(2.0)


def norm_cdf(x: float) -> float:
    """Standard normal CDF, Phi(x) = erfc(-x / sqrt(2)) / 2 (the erf identity, written with erfc so the
    lower tail keeps full relative precision)."""
    return 0.5 * math.erfc(-float(x) / _SQRT2)


# Acklam's rational approximation of the inverse normal CDF (relative error < 1.15e-9 before refinement).
_PPF_A = (
    -3.969683028665376e01,
    2.209460984245205e02,
    -2.759285104469687e02,
    1.383577518672690e02,
    -3.066479806614716e01,
    2.506628277459239e00,
)
_PPF_B = (
    -5.447609879822406e01,
    1.615858368580409e02,
    -1.556989798598866e02,
    6.680131188771972e01,
    -1.328068155288572e01,
)
_PPF_C = (
    -7.784894002430293e-03,
    -3.223964580411365e-01,
    -2.400758277161838e00,
    -2.549732539343734e00,
    4.374664141464968e00,
    2.938163982698783e00,
)
_PPF_D = (7.784695709041462e-03, 3.224671290700398e-01, 2.445134137142996e00, 3.754408661907416e00)


def _poly(coefs: tuple[float, ...], x: float) -> float:
    out = 0.0
    for c in coefs:
        out = out * x + c
    return out


def norm_ppf(p: float) -> float:
    """Inverse standard normal CDF, Phi^-1(p): Acklam's rational approximation refined by one Halley
    step on Phi(x) - p (accurate to ~1e-15 relative). The upper half is mirrored from the lower half,
    so the tail of interest is always the accurate one. -inf at 0, inf at 1, NaN outside [0, 1]."""
    p = float(p)
    if math.isnan(p) or p < 0.0 or p > 1.0:
        return float("nan")
    if p == 0.0:
        return -math.inf
    if p == 1.0:
        return math.inf
    if p > 0.5:
        return -norm_ppf(1.0 - p)  # exact: 1 - p is representable for p in (0.5, 1)
    if p < 0.02425:
        q = math.sqrt(-2.0 * math.log(p))
        x = _poly(_PPF_C, q) / (_poly(_PPF_D, q) * q + 1.0)
    else:
        q = p - 0.5
        r = q * q
        x = _poly(_PPF_A, r) * q / (_poly(_PPF_B, r) * r + 1.0)
    e = norm_cdf(x) - p
    u = e * math.sqrt(2.0 * math.pi) * math.exp(0.5 * x * x)
    return x - u / (1.0 + 0.5 * x * u)


def _sr_moments(daily_returns: np.ndarray) -> tuple[int, float, float, float] | None:
    """(n, daily SR = mean / std(ddof=1), skew g3, non-excess kurtosis g4), with population moments
    g3 = m3 / m2^1.5 and g4 = m4 / m2^2 (scipy.stats.skew / kurtosis(fisher=False), bias=True).
    None when n < 3 or the series is flat (std == 0; a constant series counts as flat even when
    rounding leaves its computed std a few ulps above zero)."""
    r = np.asarray(daily_returns, float)
    n = len(r)
    if n < 3 or np.ptp(r) == 0:
        return None
    sd = float(r.std(ddof=1))
    if sd == 0:
        return None
    d = r - r.mean()
    m2 = float(np.mean(d**2))
    g3 = float(np.mean(d**3)) / m2**1.5
    g4 = float(np.mean(d**4)) / m2**2
    return n, float(r.mean()) / sd, g3, g4


def _sr_var_term(sr: float, g3: float, g4: float) -> float:
    """1 - g3*SR + (g4 - 1)/4 * SR^2: (n - 1) times the variance of the daily Sharpe estimate.
    Never negative in exact arithmetic (Pearson's inequality g4 >= 1 + g3^2)."""
    return max(1.0 - g3 * sr + (g4 - 1.0) / 4.0 * sr * sr, 0.0)


def sharpe_se(daily_returns: np.ndarray) -> float:
    """Standard error of the annualised Sharpe ratio (``sharpe``), allowing for skew and fat tails
    (Lo 2002, "The Statistics of Sharpe Ratios"; Mertens 2002):

        var(SR_daily) = (1 - g3*SR + (g4 - 1)/4 * SR^2) / (n - 1),  SE = sqrt(var) * sqrt(252)

    with SR = mean / std(ddof=1) daily, g3 / g4 the population skew and (non-excess) kurtosis.
    For normal returns this is sqrt((1 + SR^2/2) / (n - 1)) * sqrt(252). NaN when n < 3 or std == 0."""
    mom = _sr_moments(daily_returns)
    if mom is None:
        return float("nan")
    n, sr, g3, g4 = mom
    return math.sqrt(_sr_var_term(sr, g3, g4) / (n - 1)) * math.sqrt(TRADING_DAYS)


def psr(daily_returns: np.ndarray, benchmark: float = 0.0) -> float:
    """Probabilistic Sharpe Ratio (Bailey & López de Prado 2012, "The Sharpe Ratio Efficient
    Frontier"): the probability that the true Sharpe ratio exceeds ``benchmark``,

        PSR = Phi((SR - SR*) * sqrt(n - 1) / sqrt(1 - g3*SR + (g4 - 1)/4 * SR^2))

    with SR (mean / std(ddof=1)) and SR* in daily units; ``benchmark`` is annualised, SR* =
    benchmark / sqrt(252). g3, g4 as in ``sharpe_se``. NaN when n < 3 or std == 0."""
    mom = _sr_moments(daily_returns)
    if mom is None:
        return float("nan")
    n, sr, g3, g4 = mom
    return probabilistic_sharpe(sr, n, g3, g4, benchmark / math.sqrt(TRADING_DAYS))


def probabilistic_sharpe(sr: float, n: int, skew: float, kurtosis: float, sr_star: float = 0.0) -> float:
    """``psr`` from the moments: Phi((SR - SR*) sqrt(n - 1) / sqrt(1 - g3*SR + (g4 - 1)/4 * SR^2)),
    SR and SR* per session (not annualised), g3 the skew and g4 the (non-excess) kurtosis of the n
    returns."""
    diff = sr - sr_star
    v = _sr_var_term(sr, skew, kurtosis)
    if v == 0:  # degenerate two-point distribution: no sampling uncertainty left in the formula
        return 1.0 if diff > 0 else 0.0 if diff < 0 else 0.5
    return norm_cdf(diff * math.sqrt(n - 1) / math.sqrt(v))


EULER_GAMMA = 0.5772156649015329  # the Euler-Mascheroni constant


def expected_max_sharpe(variance: float, n_trials: int) -> float:
    """The Sharpe ratio the best of ``n_trials`` strategies with no skill is expected to reach,
    when their Sharpe estimates vary with ``variance`` around a true Sharpe of 0 (Bailey & López
    de Prado 2014, "The Deflated Sharpe Ratio", from the extreme-value limit of the maximum of N
    normals, gamma the Euler-Mascheroni constant):

        SR0 = sqrt(V) * ((1 - gamma) * Phi^-1(1 - 1/N) + gamma * Phi^-1(1 - 1/(N e)))

    In the units of ``variance`` (annualised Sharpes in, annualised out). 0 for one trial (no
    selection); NaN for none, or a variance that is NaN or negative."""
    if n_trials < 1 or not variance >= 0:
        return float("nan")
    if n_trials == 1:
        return 0.0
    z = (1 - EULER_GAMMA) * norm_ppf(1 - 1 / n_trials) + EULER_GAMMA * norm_ppf(1 - 1 / (n_trials * math.e))
    return math.sqrt(variance) * z


def deflated_sharpe(daily_returns: np.ndarray, trial_sharpes: np.ndarray) -> float:
    """Deflated Sharpe Ratio (Bailey & López de Prado 2014) of the trial selected among
    ``trial_sharpes`` (the annualised Sharpe of every trial, the selected one included; NaNs
    dropped), whose daily returns are ``daily_returns``: ``psr`` against the Sharpe the best of
    that many trials with no skill would reach, ``expected_max_sharpe`` of the sample variance
    (ddof=1) of the trials' Sharpes. It uses the skew and kurtosis of the selected trial's returns.
    The probability that its true Sharpe beats the best of N lucky ones: at or above 0.95, the
    selection is told apart from luck. NaN when ``psr`` is, or with fewer than two Sharpes."""
    s = np.asarray(trial_sharpes, float)
    s = s[np.isfinite(s)]
    if len(s) < 2:
        return float("nan")
    return psr(daily_returns, benchmark=expected_max_sharpe(float(np.var(s, ddof=1)), len(s)))


def min_track_record(daily_returns: np.ndarray, benchmark: float = 0.0, confidence: float = 0.95) -> float:
    """Minimum Track Record Length, in sessions (Bailey & López de Prado 2012): how long a record
    with these moments must be for PSR(benchmark) to reach ``confidence``,

        MinTRL = 1 + (1 - g3*SR + (g4 - 1)/4 * SR^2) * (Phi^-1(confidence) / (SR - SR*))^2

    SR, SR*, g3, g4 as in ``psr`` (daily units; ``benchmark`` annualised). math.inf when
    SR <= SR* (no record is long enough); NaN when n < 3 or std == 0."""
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    mom = _sr_moments(daily_returns)
    if mom is None:
        return float("nan")
    _, sr, g3, g4 = mom
    diff = sr - benchmark / math.sqrt(TRADING_DAYS)
    if diff <= 0:
        return math.inf
    return 1.0 + _sr_var_term(sr, g3, g4) * (norm_ppf(confidence) / diff) ** 2


def block_bootstrap_indices(n: int, block: int = 5, n_boot: int = 2000, seed: int = 0) -> np.ndarray:
    """(n_boot, n) int array of circular block-bootstrap resamples of the session indices 0..n-1
    (Politis & Romano 1992): each row is ceil(n / block) blocks of ``block`` consecutive indices,
    wrapping around mod n, with starts drawn uniformly from 0..n-1, truncated to n. Blocks keep the
    short-range autocorrelation of daily returns that an i.i.d. bootstrap would destroy. ``block``
    is clipped to [1, n]; np.random.default_rng(seed), so a fixed seed gives the same resamples."""
    if n < 0 or n_boot < 0:
        raise ValueError(f"n and n_boot must be >= 0, got n={n}, n_boot={n_boot}")
    if n == 0:
        return np.empty((n_boot, 0), dtype=np.int64)
    block = int(min(max(block, 1), n))
    n_blocks = -(-n // block)
    starts = np.random.default_rng(seed).integers(0, n, size=(n_boot, n_blocks))
    idx = (starts[:, :, None] + np.arange(block)) % n
    return idx.reshape(n_boot, n_blocks * block)[:, :n]


def _percentile_interval(values: np.ndarray, level: float) -> tuple[float, float]:
    """Two-sided percentile interval: the (1 - level)/2 and (1 + level)/2 quantiles (linear
    interpolation, NaNs dropped; (nan, nan) when nothing is left)."""
    v = np.asarray(values, float)
    v = v[~np.isnan(v)]
    if len(v) == 0:
        return float("nan"), float("nan")
    lo, hi = np.quantile(v, [(1.0 - level) / 2.0, (1.0 + level) / 2.0])
    return float(lo), float(hi)


def _aligned(series: tuple) -> list[np.ndarray]:
    arrays = [np.asarray(s) for s in series]
    if not arrays:
        raise ValueError("at least one series is needed")
    if any(a.ndim != 1 or len(a) != len(arrays[0]) for a in arrays):
        raise ValueError(f"series must be 1-d and aligned, got shapes {[a.shape for a in arrays]}")
    return arrays


def _check_level(level: float) -> None:
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")


def block_bootstrap_interval(
    stat: Callable[..., float],
    *series: np.ndarray,
    block: int = 5,
    n_boot: int = 2000,
    level: float = 0.90,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile interval of ``stat(*resampled_series)`` under the circular block bootstrap
    (``block_bootstrap_indices``; Politis & Romano 1992, Efron & Tibshirani 1993 ch. 13): every
    series (aligned 1-d arrays, one value per session) is resampled with the SAME indices, so
    same-session pairs (strategy, benchmark) stay together. Quantiles (1 - level)/2 and
    (1 + level)/2 of the n_boot statistics, resamples where ``stat`` is NaN dropped. (nan, nan)
    when n < 2. See ``total_return_interval`` / ``excess_return_interval`` for vectorised cases."""
    _check_level(level)
    arrays = _aligned(series)
    n = len(arrays[0])
    if n < 2:
        return float("nan"), float("nan")
    idx = block_bootstrap_indices(n, block=block, n_boot=n_boot, seed=seed)
    values = np.array([stat(*(a[row] for a in arrays)) for row in idx], dtype=float)
    return _percentile_interval(values, level)


def total_return_interval(
    daily_returns: np.ndarray, block: int = 5, n_boot: int = 2000, level: float = 0.90, seed: int = 0
) -> tuple[float, float]:
    """``block_bootstrap_interval(total_return, daily_returns, ...)``, vectorised: the compounded
    total prod(1 + r) - 1 of every resample at once. (nan, nan) when n < 2."""
    _check_level(level)
    r = np.asarray(daily_returns, float)
    if len(r) < 2:
        return float("nan"), float("nan")
    idx = block_bootstrap_indices(len(r), block=block, n_boot=n_boot, seed=seed)
    return _percentile_interval(np.prod(1.0 + r[idx], axis=1) - 1.0, level)


def excess_return_interval(
    daily_returns: np.ndarray,
    benchmark_returns: np.ndarray,
    block: int = 5,
    n_boot: int = 2000,
    level: float = 0.90,
    seed: int = 0,
) -> tuple[float, float]:
    """Block-bootstrap percentile interval of total_return(strategy) - total_return(benchmark), both
    compounded over the SAME resampled sessions (vectorised; equals ``block_bootstrap_interval``
    with that statistic). (nan, nan) when n < 2."""
    _check_level(level)
    r, b = (a.astype(float) for a in _aligned((daily_returns, benchmark_returns)))
    if len(r) < 2:
        return float("nan"), float("nan")
    idx = block_bootstrap_indices(len(r), block=block, n_boot=n_boot, seed=seed)
    excess = np.prod(1.0 + r[idx], axis=1) - np.prod(1.0 + b[idx], axis=1)
    return _percentile_interval(excess, level)


def mean_t(values: np.ndarray) -> tuple[float, float, float]:
    """(mean, standard error, t) of a sample, NaNs dropped: se = std(ddof=1) / sqrt(n), t = mean / se
    (the one-sample t statistic against 0, e.g. for daily ICs or top-n spreads). (nan, nan, nan)
    when n < 2; when se == 0 (a flat sample), t = nan if mean == 0 else copysign(inf, mean)."""
    v = np.asarray(values, float)
    v = v[~np.isnan(v)]
    n = len(v)
    if n < 2:
        return float("nan"), float("nan"), float("nan")
    mean = float(v.mean())
    se = 0.0 if np.ptp(v) == 0 else float(v.std(ddof=1)) / math.sqrt(n)
    if se == 0:
        return mean, 0.0, float("nan") if mean == 0 else math.copysign(math.inf, mean)
    return mean, se, mean / se


def binomial_interval(successes: int, n: int, level: float = 0.90) -> tuple[float, float]:
    """Wilson score interval for a proportion (Wilson 1927; Newcombe 1998), e.g. a win or hit rate:

        center = (k + z^2/2) / (n + z^2),  half = z / (n + z^2) * sqrt(k (n - k) / n + z^2 / 4)

    with z = Phi^-1((1 + level) / 2); the bound is exactly 0 when k == 0 and 1 when k == n (as
    scipy.stats.binomtest(k, n).proportion_ci(method="wilson")). (nan, nan) when n == 0."""
    _check_level(level)
    if n < 0 or not 0 <= successes <= max(n, 0):
        raise ValueError(f"need 0 <= successes <= n, got successes={successes}, n={n}")
    if n == 0:
        return float("nan"), float("nan")
    z = norm_ppf(0.5 + 0.5 * level)
    p = successes / n
    denom = 2.0 * (n + z * z)
    center = (2.0 * n * p + z * z) / denom
    delta = z / denom * math.sqrt(4.0 * n * p * (1.0 - p) + z * z)
    lo = 0.0 if successes == 0 else max(center - delta, 0.0)
    hi = 1.0 if successes == n else min(center + delta, 1.0)
    return lo, hi


def break_even_cost(gross_daily: np.ndarray) -> float:
    """Per-side cost (a fraction: 0.0012 = 12 bps) at which a strategy that buys at the open and sells
    at the close of every traded session, with session gross returns ``gross_daily``, ends at a total
    net return of exactly 0. A session nets (1 + g)(1 - f)^2 - 1 (charged on entry and on exit), so

        prod(1 + g) (1 - f)^(2n) = 1  =>  f = 1 - prod(1 + g)^(-1 / (2n))

    (computed as -expm1(-sum(log1p(g)) / (2n)) for precision). Negative when the gross total is
    negative (the strategy loses before costs); NaN for an empty array or when the gross total is
    -100% (no cost breaks even)."""
    g = np.asarray(gross_daily, float)
    n = len(g)
    if n == 0 or np.any(g <= -1.0):
        return float("nan")
    return float(-math.expm1(-float(np.sum(np.log1p(g))) / (2 * n)))


def net_of_costs_total(gross_daily: np.ndarray, side_charge: float) -> float:
    """Total compounded net return prod((1 + g)(1 - f)^2) - 1 of the traded sessions ``gross_daily``
    at a per-side charge f = ``side_charge`` (see ``break_even_cost``); 0.0 for no sessions."""
    g = np.asarray(gross_daily, float)
    return float(np.prod((1.0 + g) * (1.0 - side_charge) ** 2) - 1.0)
