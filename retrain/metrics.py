"""Prediction and portfolio metrics as small pure functions (numpy in, float out).

Cross-sectional metrics work per session: ``dates`` groups the rows, and a session with fewer
than two rows (or no spread) contributes nothing.
"""

from __future__ import annotations

import math

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


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a - a.mean(), b - b.mean()
    den = math.sqrt(float(a @ a) * float(b @ b))
    return float("nan") if den == 0 else float(a @ b) / den


def _ranks(x: np.ndarray) -> np.ndarray:
    """Average ranks (ties share their mean rank), as scipy.stats.rankdata."""
    order = np.argsort(x, kind="stable")
    ranks = np.empty(len(x))
    ranks[order] = np.arange(1, len(x) + 1)
    _, inv, counts = np.unique(x, return_inverse=True, return_counts=True)
    sums = np.bincount(inv, weights=ranks)
    return (sums / counts)[inv]


def daily_ic(dates: np.ndarray, y: np.ndarray, p: np.ndarray, rank: bool = False) -> np.ndarray:
    """Per-session correlation of predictions with outcomes (Pearson, or Spearman with ``rank``).
    Returns one value per session that has at least two rows and some spread."""
    y, p = np.asarray(y, float), np.asarray(p, float)
    out = []
    for idx in _groups(dates)[1]:
        if len(idx) < 2:
            continue
        a, b = (_ranks(p[idx]), _ranks(y[idx])) if rank else (p[idx], y[idx])
        v = _pearson(a, b)
        if not math.isnan(v):
            out.append(v)
    return np.array(out)


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
