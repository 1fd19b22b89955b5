"""Backtest: accounting against a hand-computed example, out-of-sample blocks, outputs, report."""

from __future__ import annotations

import dataclasses
import datetime as dt
import math

import numpy as np
import polars as pl
import pytest

from retrain import backtest as bt
from retrain import catalog, pipeline
from retrain.config import load_settings
from tests.test_training import _cfg, _market

D = dt.date


def test_accounting_matches_a_hand_computed_three_symbol_example():
    # 3 symbols, 3 sessions, 2 positions a day, 10 bps a side in all (f = 0.001).
    rows = [
        (D(2024, 1, 2), "A", 0.03, 0.02), (D(2024, 1, 2), "B", 0.02, -0.01), (D(2024, 1, 2), "C", 0.01, 0.05),
        (D(2024, 1, 3), "A", 0.01, 0.04), (D(2024, 1, 3), "B", 0.02, 0.01), (D(2024, 1, 3), "C", 0.03, -0.02),
        (D(2024, 1, 4), "A", 0.05, -0.03), (D(2024, 1, 4), "B", 0.04, -0.01), (D(2024, 1, 4), "C", 0.00, 0.10),
    ]
    preds = pl.DataFrame(rows, schema=["trade_date", "symbol", "predicted", "actual"], orient="row").with_columns(
        pl.lit("NYSE").alias("exchange"), pl.lit(1e9).alias("avg_dollar_volume_20"))
    cfg = bt.BacktestConfig(bankroll=1000.0, max_positions=2, cost_bps=6, slippage_bps=4)
    daily, trades = bt.simulate(preds, cfg)
    f = 0.001
    net = lambda r: (1 + r) * (1 - f) ** 2 - 1  # noqa: E731
    # day 1: A (+2%) and B (-1%); day 2: C (-2%) and B (+1%); day 3: A (-3%) and B (-1%)
    e1 = 1000 + 500 * (net(0.02) + net(-0.01))
    e2 = e1 + e1 / 2 * (net(-0.02) + net(0.01))
    e3 = e2 + e2 / 2 * (net(-0.03) + net(-0.01))
    assert daily["equity"].to_list() == pytest.approx([e1, e2, e3])
    r = np.array([e1 / 1000 - 1, e2 / e1 - 1, e3 / e2 - 1])
    assert daily["daily_return"].to_list() == pytest.approx(r.tolist())
    assert trades.height == 6 and trades.filter(pl.col("date") == D(2024, 1, 3))["symbol"].to_list() == ["C", "B"]
    universe = pl.DataFrame({"trade_date": [D(2024, 1, 2), D(2024, 1, 3), D(2024, 1, 4)],
                             "universe_return": [0.02, 0.01, 0.02]})
    s = bt.summarize(daily, trades, 1000.0, universe)
    assert s["ending_capital"] == pytest.approx(e3) and s["profit"] == pytest.approx(e3 - 1000)
    assert s["sharpe"] == pytest.approx(r.mean() / r.std(ddof=1) * math.sqrt(252))
    assert s["max_drawdown"] == pytest.approx(1 - e3 / max(1000, e1, e2))
    assert s["win_rate"] == pytest.approx(2 / 6)  # A day 1 and B day 2 win after costs
    assert s["universe_return"] == pytest.approx(1.02 * 1.01 * 1.02 - 1)
    ev = bt.evidence(daily, preds, universe, cfg)
    assert ev["sessions"] == 3 and ev["sharpe"] == pytest.approx(s["sharpe"])
    assert bt.verdict(ev) == "INCONCLUSIVE"  # three sessions say nothing either way
    # the liquidity filter drops what trades too little
    daily2, trades2 = bt.simulate(preds.with_columns(
        pl.when(pl.col("symbol") == "A").then(1.0).otherwise(1e9).alias("avg_dollar_volume_20")),
        dataclasses.replace(cfg, min_dollar_volume=1e6))
    assert "A" not in trades2["symbol"].to_list()


def _ev(**kw):
    base = {"sessions": 120, "sharpe": 2.0, "sharpe_se": 1.45, "psr": 0.97, "min_track_record": 80.0,
            "total_return": 0.1, "excess_return": 0.05, "rank_ic": 0.03, "rank_ic_se": 0.01, "rank_ic_t": 3.0,
            "rank_ic_std": 0.11, "rank_ic_sessions": 120}
    return {**base, **kw}


@pytest.mark.parametrize("kw, grade", [
    ({}, "EXCELLENT"),
    ({"excess_return": -0.01}, "GOOD"),  # edge, but it does not beat the universe
    ({"sharpe": 1.2}, "GOOD"),
    ({"sharpe": 0.8, "psr": 0.96}, "MARGINAL"),  # a real but small edge
    ({"rank_ic_t": 1.5}, "INCONCLUSIVE"),  # PSR alone is not enough
    ({"psr": 0.9}, "INCONCLUSIVE"),  # nor is the rank IC alone
    ({"sharpe": 6.1, "sharpe_se": 3.5, "psr": 0.9, "sessions": 21, "rank_ic": 0.0097, "rank_ic_se": 0.031,
      "rank_ic_t": 0.31}, "INCONCLUSIVE"),  # the demo's "EXCELLENT, Sharpe 6.09" of the issue
    ({"psr": 0.03, "sharpe": -2.5, "total_return": -0.1}, "POOR"),  # loses with confidence
    ({"psr": 0.4, "sharpe": -0.2, "sharpe_se": 0.5, "total_return": -0.01, "rank_ic": 0.001, "rank_ic_se": 0.002,
      "rank_ic_t": 0.5}, "POOR"),  # rules out a useful edge, and is not positive
    ({"psr": 0.7, "sharpe": 0.6, "sharpe_se": 0.2, "rank_ic": 0.004, "rank_ic_se": 0.002, "rank_ic_t": 2.1},
     "MARGINAL"),  # significant IC, Sharpe bounded below 1.0
    ({"sessions": 2, "sharpe": float("nan"), "psr": float("nan")}, "INCONCLUSIVE"),
    ({"sessions": 19, "psr": 0.999, "rank_ic_t": 5.0}, "INCONCLUSIVE"),  # too few sessions for any grade
])
def test_verdict_needs_evidence(kw, grade):
    ev = _ev(**kw)
    got, reason, more = bt.judge(ev)
    assert got == grade, reason
    assert reason
    if grade == "INCONCLUSIVE":
        assert more is None or more >= 1
    else:
        assert more is None


def test_inconclusive_says_how_many_sessions_would_settle_it():
    # a genuine small edge seen over 21 sessions: more sessions would show it
    ev = _ev(sessions=21, sharpe=2.0, sharpe_se=3.5, psr=0.8, min_track_record=150.0, rank_ic=0.02,
             rank_ic_se=0.024, rank_ic_t=0.83, rank_ic_std=0.11, rank_ic_sessions=21)
    grade, _, more = bt.judge(ev)
    assert grade == "INCONCLUSIVE" and 100 <= more <= 400
    # it is the same rule on the figures of a longer record: at n + more sessions it settles
    n = 21 + more
    se = 0.11 / math.sqrt(n)
    settled = _ev(sessions=n, sharpe=2.0, sharpe_se=3.5 * math.sqrt(21 / n), psr=0.96, min_track_record=150.0,
                  rank_ic=0.02, rank_ic_se=se, rank_ic_t=0.02 / se, rank_ic_std=0.11, rank_ic_sessions=n)
    assert bt.judge(settled)[0] in {"GOOD", "EXCELLENT"}


def test_walk_forward_blocks_are_out_of_sample_and_the_run_holds_its_outputs(tmp_path):
    store = _market(tmp_path / "data", symbols=90, days=140)
    (tmp_path / "retrain.toml").write_text('[run]\nexchange = "NYSE"\n')
    settings = dataclasses.replace(load_settings(data_dir=store.root, artifacts_dir=tmp_path / "art",
                                                 config=tmp_path / "retrain.toml"))
    blocks, folds = [], []
    end = pipeline.last_labelled(store, "v1", "ALL")
    start = end - dt.timedelta(days=20)
    out = pipeline.train_step(settings, "ALL", _cfg(min_rows=100), "auto", end=end, backtest_window=(start, end),
                              bcfg=bt.BacktestConfig(retrain_every=4),
                              bt_progress=lambda i, n, block, train_s: blocks.append((block, train_s)),
                              progress=lambda i, n, m: folds.append(m))
    labelled = sorted(set(catalog.scan_labels(store).select("trade_date").collect()["trade_date"].to_list()))
    # the CV folds are the record's newest blocks, trained once, in the CV step
    tested = {d for b, _ in blocks for d in b}
    for m in folds:
        block = [d for d in labelled if m["test_start"] <= str(d) <= m["test_end"]]
        if not tested & set(block) and m["status"] == "trained":
            blocks.append((block, [dt.date.fromisoformat(m["train_start"]), dt.date.fromisoformat(m["train_end"])]))
    assert out.meta["record"]["blocks_trained"] == len(blocks) and out.meta["record"]["blocks_reused"] == 0
    for block, train_s in blocks:
        assert max(train_s) < min(block)
        gap = labelled.index(min(block)) - labelled.index(max(train_s)) - 1
        assert gap == 1  # the embargo: one session between training and the block it predicts
    sessions = sorted({d for block, _ in blocks for d in block})
    all_days = sorted(set(out.backtest.record_predictions["trade_date"].to_list()))
    assert sessions == all_days
    window_days = sorted(set(out.backtest.predictions["trade_date"].to_list()))
    assert window_days == [d for d in all_days if start <= d <= end]
    for name in ("model.joblib", "meta.json", "backtest_daily.parquet", "trades.parquet", "predictions.parquet",
                 "report.html"):
        assert (out.run_dir / name).exists(), name
    assert set(pl.read_parquet(out.run_dir / "backtest_daily.parquet").columns) >= {
        "date", "equity", "daily_return", "gross_return", "trades"}
    assert set(pl.read_parquet(out.run_dir / "trades.parquet").columns) >= {
        "date", "symbol", "predicted", "actual", "net_return", "allocation", "pnl"}
    assert "model" in pl.read_parquet(out.run_dir / "predictions.parquet").columns
    page = (out.run_dir / "report.html").read_text()
    assert page.count("data:image/svg+xml;base64,") >= 8 and "http://" not in page and "https://" not in page


def test_the_record_universe_is_the_labels_view_averaged_in_a_fixed_order(tmp_path):
    store = _market(tmp_path / "data", symbols=60, days=70)
    horizon = store.label_horizon()
    cut_exchange = sorted(horizon)[0]  # one exchange labelled less far: its later sessions are left out
    state = store.read_state("labels")
    state[cut_exchange]["last_complete"] = (horizon[cut_exchange] - dt.timedelta(days=10)).isoformat()
    with store.lock("test"):
        store.write_state("labels", state)
    first, end = min(horizon.values()) - dt.timedelta(days=45), max(horizon.values())
    for scope in ["ALL", cut_exchange, sorted(horizon)[-1]]:
        got = pipeline.record_universe(store, scope, first, end)
        view = catalog.scan_labels(store, None if scope == "ALL" else scope, first, end).collect()
        want = bt.universe(view.sort("trade_date", "exchange", "symbol").select("trade_date", "intraday_return"))
        assert got.height > 20 and got.equals(want)
    assert pipeline.record_universe(store, "ALL", end + dt.timedelta(days=1), end + dt.timedelta(days=9)).is_empty()
