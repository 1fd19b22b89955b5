"""The offline HTML report: sections, embedded plots, uncertainty figures and edge cases."""

from __future__ import annotations

import datetime as dt
import math
import re

import numpy as np
import polars as pl
import pytest

from retrain import html_report
from retrain.backtest import BacktestConfig, simulate

NAN = float("nan")
TITLES = [t for _, t in html_report.PLOTS] + ["Run", "Uncertainty: whole record vs this window",
                                              "Backtest (walk-forward, out of sample, this window)",
                                              "Cross-validation (walk-forward by session, out of sample)"]


def _sessions(n: int) -> list[dt.date]:
    days, d = [], dt.date(2024, 1, 2)
    while len(days) < n:
        if d.weekday() < 5:
            days.append(d)
        d += dt.timedelta(days=1)
    return days


def _frames(sessions: int = 60, symbols: int = 12, seed: int = 0, max_positions: int = 3):
    """(daily, universe, predictions, trades) of a synthetic record with a weak real signal."""
    rng = np.random.default_rng(seed)
    days = _sessions(sessions)
    n = sessions * symbols
    signal = rng.normal(0, 0.01, n)
    preds = pl.DataFrame({
        "trade_date": pl.Series([d for d in days for _ in range(symbols)], dtype=pl.Date),
        "symbol": [f"S{i:03d}" for i in range(symbols)] * sessions,
        "exchange": ["NYSE"] * n,
        "avg_dollar_volume_20": np.full(n, 1e7),
        "predicted": signal + rng.normal(0, 0.01, n),
        "model": ["m"] * n,
        "actual": signal + rng.normal(0, 0.02, n),
    })
    daily, trades = simulate(preds, BacktestConfig(max_positions=max_positions))
    universe = preds.group_by("trade_date").agg(pl.col("actual").mean().alias("universe_return")).sort("trade_date")
    return daily, universe, preds, trades


def _evidence(start, end, sessions, **over) -> dict:
    e = {"sessions": sessions, "start": str(start), "end": str(end), "sharpe": 1.234, "sharpe_se": 0.456,
         "sharpe_ci": [0.321, 2.468], "psr": 0.8771, "total_return": 0.1234, "total_return_ci": [-0.0211, 0.2567],
         "excess_return": 0.0456, "excess_return_ci": [-0.0123, 0.0987], "rank_ic": 0.0312, "rank_ic_se": 0.0104,
         "rank_ic_t": 3.0, "hit_rate": 0.5432, "hit_rate_ci": [0.501, 0.587], "min_track_record": 180,
         "more_sessions": 120, "cost": {"0x": 0.15, "1x": 0.1234, "2x": 0.09, "break_even_bps": 23.4},
         "verdict": "GOOD", "reason": "the window alone looks good",
         "blocks": 12, "blocks_reused": 5, "blocks_trained": 7}
    e.update(over)
    return e


def _meta(daily: pl.DataFrame, window, **evidence_over) -> dict:
    s = {"mean": 0.01, "std": 0.002}
    return {
        "run_id": "v1-ALL-20240401-abc", "feature_version": "v1", "scope": "ALL", "target": "intraday_return",
        "created_at": "2024-04-01T00:00:00", "rows": 12345, "feature_columns": ["a", "b"],
        "training_window": {"start": "2023-01-02", "end": "2023-12-29", "sessions": 250},
        "cv": {"top_n": 3, "summary": {k: s for k in ("r2", "mae", "ic", "rank_ic", "icir", "hit_rate", "top_n_spread")}},
        "backtest": {"start": str(window[0]), "end": str(window[1]), "sessions": 20, "total_return": 0.05,
                     "sharpe": 1.1, "max_drawdown": 0.03, "win_rate": 0.52, "universe_return": 0.01,
                     "excess_return": 0.04, "rank_ic": 0.03, "verdict": "GOOD",
                     "config": {"bankroll": 10_000.0, "max_positions": 3, "cost_bps": 5.0, "slippage_bps": 5.0,
                                "retrain_every": 5},
                     "evidence": _evidence(window[0], window[1], 20, **evidence_over)},
        "record": _evidence(daily["date"].min(), daily["date"].max(), daily.height, verdict="INCONCLUSIVE",
                            reason="too little evidence & the Sharpe interval straddles <zero>",
                            warnings=["block 3 was retrained"]),
        "gate": {"reason": "rank IC beats the active model's"},
    }


def _window(daily: pl.DataFrame, last: int = 20):
    dates = daily["date"].to_list()
    return dates[max(0, len(dates) - last)], dates[-1]


def _images(page: str) -> int:
    return page.count('<img alt="') if page.count('<img ') == page.count('src="data:image/svg+xml;base64,') else -1


def _check_document(page: str) -> None:
    assert page.startswith("<!doctype html>") and page.endswith("</html>")
    assert page.count("<html") == 1 and page.count("</body>") == 1
    assert "http://" not in page and "https://" not in page and "<script" not in page


def test_full_report_has_every_section_plot_and_figure():
    daily, universe, preds, trades = _frames()
    window = _window(daily)
    page = html_report.render(_meta(daily, window), daily, universe, preds, trades,
                              [("rsi_14", 12.5), ("ret_1", 3.0)], window)
    _check_document(page)
    for title in TITLES:
        assert f"<h2>{title}</h2>" in page, title
    assert _images(page) == len(html_report.PLOTS) == 8
    # the verdict is the record's, with its reason (escaped) near the top; then the window's, the gate
    top = page[:page.index("<h2>")]
    assert "<p class='v'>Verdict: INCONCLUSIVE</p>" in top
    assert (f"judged on the whole out-of-sample record, {daily['date'].min()} to {daily['date'].max()} (60 sessions): "
            "too little evidence &amp; the Sharpe interval straddles &lt;zero&gt;") in top
    assert f"This run's window ({window[0]} to {window[1]}): <b>GOOD</b>: the window alone looks good" in top
    assert "about 120 more session(s)" in top and "<li>block 3 was retrained</li>" in top
    assert "rank IC beats the active model&#x27;s" in top
    # figures with their intervals
    for text in ("+1.23 [+0.32, +2.47], SE 0.46", "87.7%", "+12.34% [-2.11%, +25.67%]", "+4.56% [-1.23%, +9.87%]",
                 "+0.0312 ± 0.0104 (SE), t = 3.00", "54.3% [50.1%, 58.7%]", "180 sessions",
                 "+15.00% at 0×; +12.34% at 1×; +9.00% at 2×", "break-even 23.4 bps per side", "12 (5 reused, 7 trained)"):
        assert text in page, text
    assert f"{window[0]} to {window[1]} (20 sessions)" in page
    assert "v1-ALL-20240401-abc" in page and "R²" in page


def test_two_session_record_nan_figures_and_missing_keys():
    daily, universe, preds, trades = _frames(sessions=2)
    window = _window(daily, last=1)
    meta = _meta(daily, window, sharpe=NAN, sharpe_ci=[NAN, NAN], psr=NAN, rank_ic_t=NAN, total_return_ci=None,
                 cost={}, reason="")
    meta["record"] = {"sessions": 2, "sharpe": NAN}
    del meta["cv"], meta["training_window"], meta["gate"]
    page = html_report.render(meta, daily, universe, preds, trades, [], window)
    _check_document(page)
    for title in TITLES:
        assert f"<h2>{title}</h2>" in page, title
    assert not re.search(r"\bnan\b", page.lower())  # NaN figures show as n/a
    assert "n/a" in page
    # one IC month and the quantile plots exist; turnover has one session after the first
    assert _images(page) == 7  # no feature importance
    assert "No feature importance." in page


def test_one_session_record_and_empty_trades():
    daily, universe, preds, _ = _frames(sessions=1)
    trades = pl.DataFrame(schema={"date": pl.Date, "symbol": pl.String, "exchange": pl.String,
                                  "predicted": pl.Float64, "actual": pl.Float64, "net_return": pl.Float64,
                                  "allocation": pl.Float64, "pnl": pl.Float64})
    window = _window(daily)
    page = html_report.render(_meta(daily, window), daily, universe, preds, trades, [("a", 1.0)], window)
    _check_document(page)
    assert "Fewer than two sessions with picks." in page
    assert _images(page) == 7


def test_three_symbols_use_three_buckets():
    daily, universe, preds, trades = _frames(sessions=30, symbols=3, max_positions=1)
    k, q = html_report.quantile_returns(html_report._clean_predictions(preds))
    assert k == 3 and sorted(q["bucket"].unique().to_list()) == [1, 2, 3]
    window = _window(daily)
    page = html_report.render(_meta(daily, window), daily, universe, preds, trades, [("a", 1.0)], window)
    _check_document(page)
    assert _images(page) == 8


def test_one_symbol_and_missing_meta_do_not_crash():
    daily, universe, preds, trades = _frames(sessions=5, symbols=1, max_positions=1)
    page = html_report.render({}, daily, universe, preds, trades, [], (daily["date"][0], daily["date"][-1]))
    _check_document(page)
    assert "Too few symbols per session to split by prediction." in page
    assert "No session with enough predictions for a rank IC." in page
    assert "<p class='v'>Verdict: n/a</p>" in page


def test_quantiles_turnover_and_ic_values():
    day1, day2 = dt.date(2024, 1, 2), dt.date(2024, 1, 3)
    p = pl.DataFrame({"trade_date": [day1] * 5 + [day2] * 5, "symbol": list("abcde") * 2,
                      "predicted": [1.0, 2, 3, 4, 5, 5, 4, 3, 2, 1], "actual": [0.01, 0.02, 0.03, 0.04, 0.05] * 2})
    k, q = html_report.quantile_returns(p)
    assert k == 5
    means = q.filter(pl.col("trade_date") == day1).sort("bucket")["mean"].to_list()
    assert means == pytest.approx([0.01, 0.02, 0.03, 0.04, 0.05])
    ic = html_report.daily_rank_ic(p)
    assert ic["ic"].to_list() == pytest.approx([1.0, -1.0])
    trades = pl.DataFrame({"date": [day1, day1, day2, day2], "symbol": ["a", "b", "b", "c"],
                           "exchange": ["X"] * 4})
    days, values = html_report.turnover(trades, [day1, day2])
    assert days == [day2] and values == [0.5]


def test_band_is_deterministic_and_brackets_the_bootstrap_paths():
    r = np.random.default_rng(1).normal(0.001, 0.01, 50)
    lo, hi = html_report._equity_band(r, 100.0)
    lo2, hi2 = html_report._equity_band(r, 100.0)
    assert np.array_equal(lo, lo2) and np.array_equal(hi, hi2)
    assert lo.shape == hi.shape == (50,) and np.all(lo <= hi)
    paths = 100.0 * np.cumprod(1.0 + r)
    assert lo[-1] < paths[-1] < hi[-1]  # the realized path sits inside its own band
    one_lo, one_hi = html_report._equity_band(np.array([0.01]), 100.0)
    assert one_lo.tolist() == pytest.approx([101.0]) and one_hi.tolist() == pytest.approx([101.0])


def test_verdict_falls_back_to_the_backtest_and_odd_figures_read_in_words():
    daily, universe, preds, trades = _frames(sessions=10)
    window = _window(daily, last=5)
    meta = _meta(daily, window, min_track_record=math.inf, cost={"0x": -0.01, "1x": -0.02, "2x": -0.03,
                                                                  "break_even_bps": -3.0})
    meta["backtest"]["verdict"], meta["backtest"]["verdict_reason"] = "POOR", "it loses"
    del meta["backtest"]["evidence"]["verdict"], meta["backtest"]["evidence"]["reason"], meta["record"]
    page = html_report.render(meta, daily, universe, preds, trades, [("a", 1.0)], window)
    _check_document(page)
    assert "<p class='v'>Verdict: POOR</p><p class='r'>judged on the backtest: it loses</p>" in page
    assert "This run&#x27;s window" not in page and "This run's window (" not in page
    assert "never at this Sharpe (it is not above 0)" in page and "break-even none (it loses before costs)" in page
