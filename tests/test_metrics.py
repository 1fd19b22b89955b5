"""Metrics against hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest

from retrain import metrics as m


def test_regression_metrics():
    y, p = np.array([1.0, 2.0, 3.0]), np.array([1.0, 2.0, 2.0])
    assert m.r2(y, p) == pytest.approx(0.5)  # SS_res 1, SS_tot 2
    assert m.mae(y, p) == pytest.approx(1 / 3)
    assert m.hit_rate(np.array([1, -1, 2, 0.0]), np.array([0.5, 0.5, -1, 1])) == pytest.approx(1 / 3)


def test_daily_ic_pearson_and_rank_with_ties():
    d = np.array([1, 1, 1, 2, 2, 2, 3])
    y = np.array([1, 2, 3, 3, 2, 1, 5.0])
    p = np.array([1, 2, 3, 1, 2, 3, 9.0])
    assert m.daily_ic(d, y, p).tolist() == pytest.approx([1.0, -1.0])  # session 3 has one row: skipped
    ic = m.daily_ic(np.array([1, 1, 1]), np.array([1, 2, 3.0]), np.array([1, 1, 2.0]), rank=True)
    assert ic.tolist() == pytest.approx([1.5 / math.sqrt(3)])  # ranks (1.5, 1.5, 3) vs (1, 2, 3)
    assert m.icir(np.array([0.1, 0.3])) == pytest.approx(0.2 / math.sqrt(0.02))


def test_top_n_spread():
    d = np.array([1, 1, 1, 1])
    y = np.array([0.01, 0.02, 0.03, 0.04])
    assert m.top_n_spread(d, y, np.array([4, 3, 2, 1.0]), 1) == pytest.approx(0.01 - 0.025)
    assert m.top_n_spread(d, y, np.array([1, 2, 3, 4.0]), 2) == pytest.approx(0.035 - 0.025)


def test_portfolio_metrics():
    assert m.total_return(np.array([0.1, -0.1])) == pytest.approx(-0.01)
    assert m.annualized_return(np.full(252, 0.01)) == pytest.approx(1.01 ** 252 - 1)
    assert m.sharpe(np.array([0.01, 0.03])) == pytest.approx(0.02 / math.sqrt(2e-4) * math.sqrt(252))
    assert m.max_drawdown(np.array([100, 120, 90, 130.0])) == pytest.approx(0.25)
    assert m.win_rate(np.array([0.1, -0.1, 0.0])) == pytest.approx(1 / 3)
    assert math.isnan(m.sharpe(np.array([0.01, 0.01])))


def test_the_reading_of_metrics_never_contradicts_the_figure_it_shows():
    from retrain.console import interpretation

    def summary(ric, icir=0.6, r2=0.001, mae=0.012):
        return {"rank_ic": {"mean": ric}, "icir": {"mean": icir}, "r2": {"mean": r2}, "mae": {"mean": mae}}

    lines = interpretation(summary(0.0097))
    assert "+0.0097" in lines[0] and "(< 0.01)" in lines[0]
    lines = interpretation(summary(0.009996))  # shows as +0.0100: judged as shown, so not "< 0.01"
    assert "+0.0100" in lines[0] and "weak signal" in lines[0]
    assert "ICIR +0.50" in interpretation(summary(0.05, icir=0.4996))[1]
    assert "(>= 0.5)" in interpretation(summary(0.05, icir=0.4996))[1]
    assert "1.50% average error (>= 1.5%)" in interpretation(summary(0.05, mae=0.014996))[3]
