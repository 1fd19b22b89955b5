"""Monitor statistics (PSI, live record, CUSUM decay test, age, status): hand-computed values,
edge-case tables, numpy / scipy references and seeded Monte Carlo checks of the CUSUM design."""

from __future__ import annotations

import datetime as dt
import math

import numpy as np
import polars as pl
import pytest
from scipy import stats

from retrain import backtest
from retrain import monitor as mo

NAN = float("nan")
LN3 = math.log(3.0)


def _floor_term(a: float, e: float) -> float:
    """(a - e) ln(a / e) with both proportions floored at 1e-4, as the PSI defines it."""
    a, e = max(a, 1e-4), max(e, 1e-4)
    return (a - e) * math.log(a / e)


def _same(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or math.isclose(a, b, rel_tol=1e-12, abs_tol=1e-15)


# ------------------------------------------------------------------ PSI
PSI_CASES = [
    # (expected, actual, bins, reference): references by hand
    ("identical", [1, 2, 3, 4], [1, 2, 3, 4], 2, 0.0),
    # median 2.5: 50/50 against 75/25 -> 0.25 ln 1.5 + 0.25 ln 2 = 0.25 ln 3
    ("two bins", [1, 2, 3, 4], [1, 1, 1, 4], 2, 0.25 * LN3),
    # quartile edges of 1..8: 2.75, 4.5, 6.25 -> 25% each against 2/8, 3/8, 1/8, 2/8
    ("four bins", list(range(1, 9)), [1, 2, 3, 3, 3, 5, 7, 8], 4, 0.125 * math.log(1.5) - 0.125 * math.log(0.5)),
    # an empty bin is floored at 1e-4 instead of giving an infinite log
    ("empty bin floored", [1, 2, 3, 4], [1, 1, 1, 1], 2, _floor_term(1.0, 0.5) + _floor_term(0.0, 0.5)),
    # a value on an edge belongs to the upper bin, [lower, upper)
    ("edge goes up", [1, 2, 3, 4], [2.5, 2.5], 2, _floor_term(0.0, 0.5) + _floor_term(1.0, 0.5)),
    # NaN is a bin of its own on both sides: the median of the finite [1, 2] is 1.5
    ("nan bin", [1, 2, NAN, NAN], [1, NAN], 2, _floor_term(0.5, 0.25) + _floor_term(0.0, 0.25) + 0.0),
    ("nan both equal", [1, 2, NAN, NAN], [1, 2, NAN, NAN], 2, 0.0),
    # a constant feature: the 9 equal deciles merge into one edge, 5 -> bins (<5, >=5)
    ("constant expected, same", [5, 5, 5, 5], [5, 5], 10, 0.0),
    ("constant expected, moved", [5, 5, 5, 5], [4, 4], 10, _floor_term(1.0, 0.0) + _floor_term(0.0, 1.0)),
    # -inf / +inf fall in the outer bins
    ("infinities", [1, 2, 3, 4], [-np.inf, np.inf], 2, 0.0),
    # infinite expected values count in the outer bins but not in the quantiles (median of 1..4)
    ("infinite expected", [-np.inf, 1, 2, 3, 4, np.inf], [1, 1, 1, 4], 2, 0.25 * LN3),
    ("no finite expected", [NAN, NAN], [1, 2], 10, NAN),
    ("empty expected", [], [1, 2], 10, NAN),
    ("empty actual", [1, 2], [], 10, NAN),
]


@pytest.mark.parametrize("name,expected,actual,bins,ref", PSI_CASES, ids=[c[0] for c in PSI_CASES])
def test_psi_hand_computed(name, expected, actual, bins, ref):
    assert _same(mo.psi(np.array(expected, float), np.array(actual, float), bins=bins), ref)


def test_psi_accepts_nulls_as_none():
    e = np.array([1.0, 2.0, None, None], dtype=object)
    assert _same(mo.psi(e, np.array([1.0, None], dtype=object), bins=2), PSI_CASES[5][4])


@pytest.mark.parametrize("n", [1, 2, 3, 10, 997])
def test_sorted_quantiles_equal_numpy(n):
    x = np.sort(np.random.default_rng(n).normal(0, 1, n))
    q = np.linspace(0, 1, 11)[1:-1]
    assert np.array_equal(mo._quantiles(x, q), np.quantile(x, q))


def test_psi_matches_histogram_reference_and_grows_with_the_shift():
    rng = np.random.default_rng(3)
    e = rng.normal(0, 1, 5000)
    edges = np.r_[-np.inf, np.quantile(e, np.linspace(0, 1, 11)[1:-1]), np.inf]

    def ref(a):
        pe = np.maximum(np.histogram(e, edges)[0] / len(e), 1e-4)
        pa = np.maximum(np.histogram(a, edges)[0] / len(a), 1e-4)
        return float(np.sum((pa - pe) * np.log(pa / pe)))

    values = []
    for shift in (0.0, 0.1, 0.3, 0.6, 1.0):
        a = rng.normal(shift, 1, 3000)
        values.append(mo.psi(e, a))
        assert values[-1] == pytest.approx(ref(a), rel=1e-12, abs=1e-15)
    assert values == sorted(values) and values[0] < mo.PSI_MODERATE and values[-1] > mo.PSI_SIGNIFICANT


CAT_CASES = [
    ("identical", ["a", "b", None], ["a", "b", None], 0.0),
    # a/b/null: 50/25/25% against 25/75/0%
    ("hand", ["a", "a", "b", None], ["a", "b", "b", "b"],
     _floor_term(0.25, 0.5) + _floor_term(0.75, 0.25) + _floor_term(0.0, 0.25)),
    # a category never seen in training
    ("new category", ["a", "a"], ["a", "c"], _floor_term(0.5, 1.0) + _floor_term(0.5, 0.0)),
    ("integers", [1, 1, 2, 2], [1, 2, 2, 2], _floor_term(0.25, 0.5) + _floor_term(0.75, 0.5)),
    ("NaN is null", [1.0, NAN], [1.0, None], 0.0),  # a float code's NaN and a null are one category
    ("empty actual", ["a"], [], NAN),
    ("empty expected", [], ["a"], NAN),
]


@pytest.mark.parametrize("name,expected,actual,ref", CAT_CASES, ids=[c[0] for c in CAT_CASES])
def test_psi_categorical_hand_computed(name, expected, actual, ref):
    assert _same(mo.psi_categorical(np.array(expected, dtype=object), np.array(actual, dtype=object)), ref)


@pytest.mark.parametrize("value,band", [(0.0, "stable"), (0.0999, "stable"), (0.10, "moderate"),
                                        (0.2499, "moderate"), (0.25, "significant"), (3.0, "significant"),
                                        (NAN, "unknown")])
def test_psi_bands(value, band):
    assert mo.psi_band(value) == band


def test_feature_drift_rows_bands_and_order():
    rng = np.random.default_rng(5)
    n, m = 4000, 2000
    train = pl.DataFrame({"same": rng.normal(0, 1, n), "far": rng.normal(0, 1, n), "near": rng.normal(0, 1, n),
                          "empty": np.full(n, NAN), "sector": rng.choice(["x", "y"], n)})
    recent = pl.DataFrame({"same": rng.normal(0, 1, m), "far": rng.normal(1.5, 1, m), "near": rng.normal(0.45, 1, m),
                           "empty": np.full(m, NAN), "sector": rng.choice(["x", "y", "z"], m, p=[0.2, 0.2, 0.6])})
    out = mo.feature_drift(train, recent, ["empty", "same", "near", "far", "sector"], categorical={"sector"})
    assert out.columns == ["feature", "psi", "noise", "band"]
    assert out["feature"].to_list() == ["sector", "far", "near", "same", "empty"]  # descending, NaN last
    assert out["band"].to_list() == ["significant", "significant", "moderate", "stable", "unknown"]
    got = dict(out.select("feature", "psi").iter_rows())
    assert got["far"] == mo.psi(train["far"].to_numpy(), recent["far"].to_numpy())
    assert got["sector"] == mo.psi_categorical(train["sector"].to_numpy(), recent["sector"].to_numpy())
    with pytest.raises(ValueError, match="missing.*nope"):
        mo.feature_drift(train, recent, ["same", "nope"])


def test_psi_noise_is_the_no_drift_99th_percentile():
    # chi-square(9) 99% quantile is 21.666; Wilson-Hilferty gives it within 0.2%
    assert mo.psi_noise(100, 100, 10) == pytest.approx(21.666 * 0.02, rel=2e-3)
    assert mo.psi_noise(0, 5, 10) == float("inf")
    rng = np.random.default_rng(11)  # no drift: 1% or so of samples exceed the bound
    over = sum(mo.psi(rng.normal(size=300), rng.normal(size=100)) > mo.psi_noise(300, 100, mo.PSI_BINS + 1)
               for _ in range(400))
    assert over <= 12


@pytest.mark.parametrize("kind", ["plain", "ties", "missing", "infinite", "no finite value"])
def test_psi_rows_is_psi_row_by_row(kind):
    """The permutation bound scores its splits with psi_rows: the same PSI as psi, split by split
    (ties give equal quantile edges, which psi merges; missing and infinite values have bins)."""
    rng = np.random.default_rng(5)
    for n, m in ((1, 1), (7, 3), (60, 20), (300, 41)):
        e, a = rng.normal(size=(6, n)), rng.normal(0.4, 1, size=(6, m))
        if kind == "ties":
            e, a = e.round(0), a.round(0)
        elif kind == "missing":
            e[rng.random(e.shape) < 0.3], a[rng.random(a.shape) < 0.3] = NAN, NAN
        elif kind == "infinite":
            e[rng.random(e.shape) < 0.1], a[rng.random(a.shape) < 0.2] = np.inf, -np.inf
        elif kind == "no finite value":
            e[::2] = NAN
        want = np.array([mo.psi(e[i], a[i]) for i in range(len(e))])
        got = mo.psi_rows(e, a)
        assert np.array_equal(np.isnan(got), np.isnan(want))
        assert got[~np.isnan(want)] == pytest.approx(want[~np.isnan(want)], rel=1e-13, abs=1e-15)


def test_categorical_permutation_bound_is_the_split_by_split_psi():
    """The categorical bound counts every split's categories in one bincount: the same PSI per
    split, bit for bit, as counting split by split (the same seeded permutations)."""
    rng = np.random.default_rng(2)
    expected = pl.Series(rng.choice(["mon", "tue", "wed", None], size=700).tolist())
    actual = pl.Series(rng.choice(["mon", "tue", "wed", "thu"], size=90).tolist())
    pooled = pl.concat([expected, actual]).fill_null("\0")
    codes = np.unique(pooled.to_numpy(), return_inverse=True)[1].ravel()
    k, n, perm = int(codes.max()) + 1, expected.len(), np.random.default_rng(0)
    step = max(1, mo.PERMUTED_CELLS // pooled.len())
    values = []
    for first in range(0, mo.PERMUTATIONS, step):
        for i in [perm.permutation(pooled.len()) for _ in range(min(step, mo.PERMUTATIONS - first))]:
            values.append(mo._psi_from_counts(np.bincount(codes[i[:n]], minlength=k).astype(float),
                                              np.bincount(codes[i[n:]], minlength=k).astype(float)))
    assert mo.psi_noise_permuted(expected, actual, categorical=True) == float(np.quantile(values, mo.NOISE_LEVEL))


def test_a_market_wide_feature_over_few_sessions_is_within_noise_not_drift():
    """One value per session: 20 recent sessions against 60 give PSIs above 0.25 with nothing
    moved; the noise bound keeps them from being called drift, while a real shift is still seen."""
    rng = np.random.default_rng(3)
    calls = []
    for shift in (0.0, 0.0, 0.0, 0.0, 0.0, 3.0):
        def frame(days, loc):
            per = pl.DataFrame({"trade_date": np.arange(days), "market": rng.normal(loc, 1, days)})
            return per.join(pl.DataFrame({"symbol": np.arange(50)}), how="cross")
        out = mo.feature_drift(frame(60, 0.0), frame(20, shift), ["market"])
        calls.append(out.row(0, named=True))
    assert all(c["noise"] > 1.0 for c in calls)  # 20 and 60 observations, not 1,000 and 3,000 rows
    assert len({c["noise"] for c in calls}) > 1  # a permutation bound of each sample
    assert all(c["band"] in ("stable", "within noise") for c in calls[:-1])
    assert calls[-1]["band"] == "significant"


# ------------------------------------------------------------------ CUSUM design
def _siegmund(delta: float, h: float) -> float:
    b = h + 1.166
    return b * b if delta == 0 else (math.exp(-2 * delta * b) + 2 * delta * b - 1) / (2 * delta * delta)


@pytest.mark.parametrize("k,arl0", [(0.25, 500), (0.5, 500), (1.0, 500), (0.5, 100), (0.5, 2000), (0.0, 500)])
def test_cusum_threshold_inverts_siegmund(k, arl0):
    h = mo.cusum_threshold(k, arl0)
    assert h > 0 and _siegmund(-k, h) == pytest.approx(arl0, rel=1e-9)
    assert mo.cusum_arl(0.0, k, h) == pytest.approx(arl0, rel=1e-9)


def test_cusum_threshold_table_and_edges():
    # one-sided, k = 0.5: h = 5 gives (e^6.166 - 6.166 - 1) / 0.5 = 938.2 by hand, so 500 needs h < 5
    assert _siegmund(-0.5, 5.0) == pytest.approx(938.2, abs=0.1)
    h = mo.cusum_threshold(0.5)
    assert 4.3 < h < 4.5
    assert mo.cusum_threshold(0.5, 1000) > h > mo.cusum_threshold(1.0)  # more patience, more room
    assert mo.cusum_threshold(0.5, 1.0) == 0.0  # an ARL the smallest threshold already exceeds
    assert mo.cusum_arl(0.5, 0.5, 3.0) == pytest.approx((3.0 + 1.166) ** 2)  # D = 0 -> b^2
    assert mo.cusum_arl(1.0, 0.5, h) == pytest.approx(_siegmund(0.5, h))
    with pytest.raises(ValueError):
        mo.cusum_threshold(-0.1)


def _run_lengths(k: float, h: float, shift: float, paths: int = 2000, steps: int = 3000, seed: int = 11):
    """Run lengths of the lower CUSUM S_t = max(0, S_{t-1} - z_t - k), z_t ~ N(-shift, 1), simulated
    path-parallel (censored at ``steps``)."""
    rng = np.random.default_rng(seed)
    s, rl, alive = np.zeros(paths), np.full(paths, float(steps)), np.ones(paths, bool)
    for t in range(steps):
        s = np.maximum(0.0, s - (rng.standard_normal(paths) - shift) - k)
        hit = alive & (s > h)
        rl[hit], alive = t + 1, alive & ~hit
        if not alive.any():
            break
    return rl


def test_siegmund_against_monte_carlo():
    h = mo.cusum_threshold(0.5, 500)
    in_control = _run_lengths(0.5, h, 0.0)
    assert in_control.mean() == pytest.approx(500, rel=0.25)  # measured 503 (0.35% of paths censored at 3,000)
    out_of_control = _run_lengths(0.5, h, 1.0, steps=300)
    assert out_of_control.mean() == pytest.approx(mo.cusum_arl(1.0, 0.5, h), rel=0.30)  # measured 9.24 vs 9.10


# ------------------------------------------------------------------ decay test
def test_decay_path_is_the_cusum_recursion():
    mu0, sigma = 0.02, 0.04
    ric = np.array([0.05, -0.03, -0.08, NAN, -0.10, 0.00, -0.12, -0.09, -0.11, 0.06])
    out = mo.decay_test(ric, mu0, sigma)
    k = 0.25  # mu0 / sigma / 2 = 0.25
    h = mo.cusum_threshold(k)
    s, path, first = 0.0, [], None
    for t, x in enumerate(ric):
        if not math.isnan(x):
            s = max(0.0, s - (x - mu0) / sigma - k)
        path.append(s)
        if first is None and s > h:
            first = t
    assert out["path"] == pytest.approx(path, abs=1e-12)
    assert out["k"] == k and out["threshold"] == h and out["sessions"] == 9 and out["applicable"]
    assert out["alarm_index"] == first == 6 and out["alarm"]
    assert out["statistic"] == pytest.approx(path[-1]) and out["max_statistic"] == pytest.approx(max(path))
    assert out["expected_detection_sessions"] == pytest.approx(mo.cusum_arl(0.5, k, h))
    assert out["false_alarm_arl"] == mo.ARL0


@pytest.mark.parametrize("mu0,sigma,k", [(0.002, 0.02, 0.25), (0.02, 0.02, 0.5), (0.03, 0.02, 0.75),
                                         (0.1, 0.02, 1.0)])
def test_decay_k_is_half_the_shift_clamped(mu0, sigma, k):
    out = mo.decay_test(np.array([mu0]), mu0, sigma)
    assert out["k"] == pytest.approx(k) and out["threshold"] == pytest.approx(mo.cusum_threshold(k))
    assert not out["alarm"] and out["statistic"] == 0.0


@pytest.mark.parametrize("mu0,sigma,mu0_t,no_edge", [
    (0.0, 0.02, None, True), (-0.01, 0.02, 5.0, True), (0.02, 0.02, 1.99, True), (0.02, 0.02, NAN, True),
    (0.02, 0.0, 3.0, False), (0.02, NAN, 3.0, False), (0.02, -1.0, None, False),
    (NAN, 0.02, None, False)])
def test_decay_not_applicable(mu0, sigma, mu0_t, no_edge):
    out = mo.decay_test(np.full(30, -0.5), mu0, sigma, mu0_t=mu0_t)
    assert not out["applicable"] and not out["alarm"] and out["no_edge"] is no_edge and out["reason"]
    assert ("no edge" in out["reason"]) is no_edge


def test_decay_applies_with_an_edge_and_no_data():
    assert mo.decay_test(np.full(30, -0.5), 0.02, 0.02, mu0_t=2.0)["alarm"]
    empty = mo.decay_test(np.array([]), 0.02, 0.02, mu0_t=3.0)
    assert empty["applicable"] and not empty["alarm"] and empty["sessions"] == 0 and empty["path"] == []


def test_decay_false_alarm_rate_of_a_working_model():
    # 400 seeded records of 60 sessions from N(mu0, sigma), mu0 / sigma = 1 (k = 0.5): measured 9.75%
    # alarm, as an in-control ARL of 500 implies (1 - e^(-60/500) = 11%, less the CUSUM's start-up delay)
    mu0, sigma = 0.02, 0.02
    rng = np.random.default_rng(7)
    rate = np.mean([mo.decay_test(rng.normal(mu0, sigma, 60), mu0, sigma)["alarm"] for _ in range(400)])
    assert rate <= 0.12


def test_decay_detects_a_lost_edge():
    # 20 sessions of N(mu0, sigma), then N(0, sigma), mu0 / sigma = 1: measured 87.75% detected within 15
    # sessions of the break (2% alarmed before it, counted as misses); Siegmund's ARL for the loss is 9.1
    mu0, sigma = 0.02, 0.02
    rng = np.random.default_rng(8)
    hits = []
    for _ in range(400):
        ric = np.r_[rng.normal(mu0, sigma, 20), rng.normal(0.0, sigma, 40)]
        i = mo.decay_test(ric, mu0, sigma, mu0_t=4.0)["alarm_index"]
        hits.append(i is not None and 20 <= i < 35)
    assert np.mean(hits) >= 0.80


# ------------------------------------------------------------------ live record
D1, D2, D3, D4 = dt.date(2024, 3, 4), dt.date(2024, 3, 5), dt.date(2024, 3, 6), dt.date(2024, 3, 7)
PRED = {
    D1: ([0.9, 0.5, 0.1, -0.2, 0.3, 0.0], [0.02, 0.01, -0.01, -0.03, 0.00, 0.01]),
    D2: ([0.1, 0.1, 0.4, -0.5, 0.2, 0.6], [-0.01, 0.02, 0.01, 0.00, 0.03, -0.02]),  # a tie in predicted
    D3: ([-0.3, 0.2, 0.8, 0.7, 0.1, -0.1], [0.01, 0.01, 0.04, 0.02, -0.02, 0.01]),  # ties in actual
}
SYMBOLS = ["A", "B", "C", "D", "E", "F"]
CFG = backtest.BacktestConfig(bankroll=1000.0, max_positions=2, cost_bps=5.0, slippage_bps=5.0)


def _frame(pred=PRED) -> pl.DataFrame:
    rows = [(d, "XNAS", s, p, a, 1e6) for d, (ps, as_) in pred.items() for s, p, a in zip(SYMBOLS, ps, as_)]
    return pl.DataFrame(rows, schema=mo._PREDICTION_SCHEMA, orient="row")


UNIVERSE = pl.DataFrame({"trade_date": [D1, D2, D3], "universe_return": [0.0, 0.005, 0.01]})


def test_live_record_matches_numpy_scipy_and_the_backtest():
    p = _frame()
    daily, fig = mo.live_record(p, UNIVERSE, CFG)
    assert daily.columns[:6] == ["trade_date", "ic", "rank_ic", "net_return", "equity", "universe_return"]
    assert daily["trade_date"].to_list() == [D1, D2, D3]
    for row, (pred, act) in zip(daily.iter_rows(named=True), PRED.values()):
        assert row["ic"] == pytest.approx(np.corrcoef(pred, act)[0, 1], abs=1e-12)
        assert row["rank_ic"] == pytest.approx(stats.spearmanr(pred, act).statistic, abs=1e-12)
    sim, _ = backtest.simulate(p, CFG)
    assert daily["net_return"].to_list() == sim["daily_return"].to_list()
    assert daily["equity"].to_list() == sim["equity"].to_list()
    # by hand, session 1: A (2%) and B (1%) at 10 bps a side
    assert daily["net_return"][0] == pytest.approx((1.02 * 0.999**2 + 1.01 * 0.999**2) / 2 - 1)
    assert daily["universe_return"].to_list() == [0.0, 0.005, 0.01]
    ev = backtest.evidence(sim, p, UNIVERSE, CFG)
    for key in ("sessions", "rank_ic", "rank_ic_t", "rank_ic_se", "hit_rate", "hit_rate_ci", "sharpe", "sharpe_se",
                "psr", "start", "end"):
        assert fig[key] == ev[key] or _same(fig[key], ev[key]), key
    r = sim["daily_return"].to_numpy()
    assert fig["net_return"] == pytest.approx(np.prod(1 + r) - 1) and fig["net_return_per_session"] == r.mean()
    assert fig["ic"] == pytest.approx(np.mean(daily["ic"].to_numpy()))
    assert fig["sessions"] == 3 and fig["start"] == str(D1) and fig["end"] == str(D3)


def test_live_record_leaves_out_unrealized_rows_and_sessions():
    pred = {**PRED, D4: ([0.5] * 6, [None] * 6)}  # D4: not traded yet
    p = _frame(pred).with_columns(  # A of D1 (top pick) had no bar: B and E are bought instead
        pl.when((pl.col("trade_date") == D1) & (pl.col("symbol") == "A")).then(None).otherwise(pl.col("actual"))
        .alias("actual"))
    daily, fig = mo.live_record(p, UNIVERSE, CFG)
    assert fig["sessions"] == 3 and daily["trade_date"].to_list() == [D1, D2, D3]
    assert daily["net_return"][0] == pytest.approx((1.01 * 0.999**2 + 1.00 * 0.999**2) / 2 - 1)
    assert daily["symbols"].to_list() == [5, 6, 6]
    assert daily["rank_ic"][0] == pytest.approx(stats.spearmanr(PRED[D1][0][1:], PRED[D1][1][1:]).statistic)


@pytest.mark.parametrize("frame", [pl.DataFrame(schema=mo._PREDICTION_SCHEMA), pl.DataFrame()])
def test_live_record_empty(frame):
    daily, fig = mo.live_record(frame, UNIVERSE, CFG)
    assert daily.height == 0 and daily.columns[:6] == ["trade_date", "ic", "rank_ic", "net_return", "equity",
                                                        "universe_return"]
    assert fig["sessions"] == 0 and fig["start"] is None
    for key in ("ic", "rank_ic", "rank_ic_t", "net_return", "net_return_per_session", "hit_rate", "sharpe", "psr"):
        assert math.isnan(fig[key]), key


def test_expectation_adds_the_spread_and_source():
    exp = mo.expectation(_frame(), UNIVERSE, CFG, "backtest record, 3 sessions")
    ric = [stats.spearmanr(p, a).statistic for p, a in PRED.values()]
    assert exp["rank_ic_std"] == pytest.approx(np.std(ric, ddof=1))
    assert exp["rank_ic"] == pytest.approx(np.mean(ric)) and exp["source"] == "backtest record, 3 sessions"
    assert exp["sharpe"] == mo.live_record(_frame(), UNIVERSE, CFG)[1]["sharpe"]


@pytest.mark.parametrize("trained,reference,age_days,age_sessions", [
    (dt.date(2024, 3, 1), dt.date(2024, 3, 8), 7, 4),  # sessions after 3/1 up to and including 3/8
    (dt.date(2024, 3, 8), dt.date(2024, 3, 8), 0, 0),
    (dt.date(2024, 2, 1), dt.date(2024, 3, 5), 33, 3)])
def test_age(trained, reference, age_days, age_sessions):
    sessions = [dt.date(2024, 3, d) for d in (1, 4, 5, 6, 8, 11)]
    assert mo.age(trained, reference, sessions) == {"age_days": age_days, "age_sessions": age_sessions}


# ------------------------------------------------------------------ status
LIVE = {"sessions": 30, "rank_ic": 0.015, "rank_ic_t": 2.1, "net_return_per_session": 0.001}
EXPECTED = {"rank_ic": 0.02, "rank_ic_t": 4.0, "net_return_per_session": 0.0012, "source": "backtest record, 252 sessions"}
WORKING = mo.decay_test(np.full(30, 0.02), 0.02, 0.02, mu0_t=4.0)
DECAYED = mo.decay_test(np.r_[np.full(10, 0.02), np.full(20, -0.01)], 0.02, 0.02, mu0_t=4.0)
NO_EDGE = mo.decay_test(np.full(30, 0.0), 0.004, 0.02, mu0_t=1.2)
NO_SPREAD = mo.decay_test(np.full(30, 0.0), 0.02, 0.0, mu0_t=4.0)
STABLE = pl.DataFrame({"feature": ["rsi", "atr"], "psi": [0.03, 0.01], "band": ["stable", "stable"]})
DRIFTED = pl.DataFrame({"feature": ["obv", "macd", "rsi", "atr", "gap"], "psi": [0.9, 0.5, 0.3, 0.26, 0.12],
                        "band": ["significant"] * 4 + ["moderate"]})
MODERATE = pl.DataFrame({"feature": ["macd", "rsi"], "psi": [0.18, 0.05], "band": ["moderate", "stable"]})
YOUNG = {"age_days": 10, "age_sessions": 7}


def _judge(live=LIVE, expected=EXPECTED, decay=WORKING, drift=STABLE, age=YOUNG, max_age=30, rollback=None):
    status, reasons = mo.judge(live, expected, decay, drift, age, max_age, rollback)
    assert all(set(r) == {"level", "reason", "action"} for r in reasons)
    assert reasons[-1]["level"] == "info" and "rank IC" in reasons[-1]["reason"]
    return status, [r for r in reasons[:-1]], reasons[-1]


def test_judge_ok_has_an_info_summary():
    assert DECAYED["alarm"] and not WORKING["alarm"]
    status, findings, info = _judge()
    assert status == "ok" and findings == []
    assert "+0.0150" in info["reason"] and "+0.0200" in info["reason"] and "backtest record" in info["reason"]


def test_judge_alert_on_decay_with_rollback():
    status, findings, _ = _judge(decay=DECAYED)
    assert status == "alert" and findings[0]["level"] == "alert" and "decayed" in findings[0]["reason"]
    assert "`retrain run`" in findings[0]["action"] and "roll back" not in findings[0]["action"]
    _, findings, _ = _judge(decay=DECAYED, rollback="20240301-abc", drift=DRIFTED)
    assert "roll back to run 20240301-abc" in findings[0]["action"]
    assert "`retrain models rollback`" in findings[0]["action"]
    assert [f["level"] for f in findings] == ["alert", "warning", "info"]  # alert first, drift still listed


@pytest.mark.parametrize("sessions,text", [(0, "nothing to judge yet"), (1, "too few sessions to judge yet"),
                                           (4, "too few sessions to judge yet")])
def test_judge_warns_with_too_few_sessions(sessions, text):
    status, findings, _ = _judge(live={**LIVE, "sessions": sessions})
    assert status == "warning" and len(findings) == 1 and text in findings[0]["reason"]
    assert "`retrain monitor`" in findings[0]["action"] and "daily" in findings[0]["action"]


def test_judge_five_sessions_are_enough():
    assert _judge(live={**LIVE, "sessions": mo.MIN_LIVE_SESSIONS})[0] == "ok"


def test_judge_warns_on_significant_drift_naming_the_top_three():
    status, findings, _ = _judge(drift=DRIFTED)
    assert status == "warning"
    warn = [f for f in findings if f["level"] == "warning"]
    assert len(warn) == 1 and "4 feature(s)" in warn[0]["reason"]
    for name in ("obv (PSI 0.90)", "macd (PSI 0.50)", "rsi (PSI 0.30)"):
        assert name in warn[0]["action"]
    assert "atr" not in warn[0]["action"] and "`retrain run`" in warn[0]["action"]
    assert any(f["level"] == "info" and "gap" in f["reason"] for f in findings)  # the moderate one, listed


def test_judge_moderate_drift_alone_is_ok():
    status, findings, _ = _judge(drift=MODERATE)
    assert status == "ok" and len(findings) == 1 and findings[0]["level"] == "info" and "macd" in findings[0]["reason"]


@pytest.mark.parametrize("days,status", [(30, "ok"), (31, "warning")])
def test_judge_staleness(days, status):
    got, findings, _ = _judge(age={"age_days": days, "age_sessions": 21}, max_age=30)
    assert got == status
    if status == "warning":
        assert "31 days old" in findings[0]["reason"] and "`retrain run`" in findings[0]["action"]


def test_judge_no_edge_to_watch_warns():
    status, findings, _ = _judge(decay=NO_EDGE)
    assert status == "warning" and "no edge" in findings[0]["reason"] and "t 1.20" in findings[0]["reason"]


def test_judge_without_expectation_or_spread_is_not_a_warning():
    status, findings, info = _judge(expected=None, decay=None)
    assert status == "ok" and findings == [] and "unknown" in info["reason"]
    status, findings, _ = _judge(decay=NO_SPREAD)
    assert status == "ok" and findings[0]["level"] == "info" and "spread" in findings[0]["reason"]
    assert _judge(age={"age_days": None, "age_sessions": None})[0] == "ok"  # age unknown: no staleness claim
