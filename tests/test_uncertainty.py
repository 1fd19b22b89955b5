"""Uncertainty metrics (Sharpe SE, PSR, MinTRL, block bootstrap, t-stats, Wilson, break-even cost):
hand-computed values, edge-case tables, and scipy / empyrical as references."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from retrain import metrics as m

NAN = float("nan")
SQ = math.sqrt(m.TRADING_DAYS)


def _same(a: float, b: float, rel: float = 1e-12, abs_: float = 1e-12) -> bool:
    """Equal within tolerance, NaN == NaN, inf == inf."""
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    return a == b or math.isclose(a, b, rel_tol=rel, abs_tol=abs_)


def _ref_moments(r: np.ndarray) -> tuple[int, float, float, float]:
    """(n, daily SR with ddof=1, skew, non-excess kurtosis) from scipy, bias=True."""
    return (
        len(r),
        r.mean() / r.std(ddof=1),
        float(stats.skew(r, bias=True)),
        float(stats.kurtosis(r, fisher=False, bias=True)),
    )


def _v(sr: float, g3: float, g4: float) -> float:
    return 1.0 - g3 * sr + (g4 - 1.0) / 4.0 * sr**2


RNG = np.random.default_rng(42)
NORMAL = RNG.normal(0.001, 0.01, 2000)
SKEWED = RNG.lognormal(0.0, 0.5, 300) * 0.01 - 0.01
MIXED = np.array([0.01, -0.02, 0.03, 0.0, -0.01, 0.015, 0.02])


# ------------------------------------------------------------------ normal helpers
@pytest.mark.parametrize("x", [-37.0, -10.0, -5.0, -1.96, -1.0, -1e-3, 0.0, 0.5, 1.0, 1.6448536, 3.0, 8.0])
def test_norm_cdf_matches_scipy(x):
    ref = float(stats.norm.cdf(x))
    # x / sqrt(2) rounds by ~1 ulp, which erfc amplifies by ~x^2 in the far tail
    assert m.norm_cdf(x) == pytest.approx(ref, rel=1e-14 * max(1.0, x * x), abs=0)


@pytest.mark.parametrize(
    "p",
    [
        1e-300,
        1e-100,
        1e-20,
        1e-9,
        1e-4,
        0.02,
        0.02425,
        0.03,
        0.1,
        0.3,
        0.5,
        0.7,
        0.95,
        0.975,
        0.999,
        1 - 1e-9,
        1 - 1e-15,
    ],
)
def test_norm_ppf_matches_scipy(p):
    ref = float(stats.norm.ppf(p))
    assert abs(m.norm_ppf(p) - ref) <= 1e-12 * max(1.0, abs(ref))


def test_norm_ppf_dense_grid_and_roundtrip():
    ps = np.concatenate(
        [np.logspace(-300, -1, 300), np.linspace(1e-3, 1 - 1e-3, 999), 1 - np.logspace(-15, -1, 100)]
    )
    ours = np.array([m.norm_ppf(p) for p in ps])
    ref = stats.norm.ppf(ps)
    assert np.max(np.abs(ours - ref) / np.maximum(1.0, np.abs(ref))) < 1e-13
    for p in (0.001, 0.05, 0.5, 0.9, 0.95):
        assert m.norm_cdf(m.norm_ppf(p)) == pytest.approx(p, rel=1e-14)


@pytest.mark.parametrize(
    "p, want", [(0.0, -math.inf), (1.0, math.inf), (0.5, 0.0), (-0.1, NAN), (1.1, NAN), (NAN, NAN)]
)
def test_norm_ppf_edges(p, want):
    assert _same(m.norm_ppf(p), want)
    assert m.norm_ppf(0.975) == pytest.approx(1.959963984540054, abs=1e-12)
    assert m.norm_ppf(0.95) == pytest.approx(1.6448536269514722, abs=1e-12)


# ------------------------------------------------------------------ Sharpe SE, PSR, MinTRL
DEGENERATE = [
    ("empty", np.array([])),
    ("one", np.array([0.01])),
    ("two", np.array([0.01, 0.02])),  # n < 3
    ("flat", np.full(10, 0.001)),  # std == 0 (a few ulps after rounding)
    ("flat zero", np.zeros(5)),
]


@pytest.mark.parametrize("name, r", DEGENERATE)
def test_degenerate_inputs_give_nan(name, r):
    assert math.isnan(m.sharpe_se(r))
    assert math.isnan(m.psr(r))
    assert math.isnan(m.psr(r, benchmark=1.0))
    assert math.isnan(m.min_track_record(r))


def test_hand_computed_three_points():
    # r = (-1, 0, 1) + 1: mean 1, std(ddof=1) 1 -> SR 1; symmetric -> g3 0; m2 2/3, m4 2/3 -> g4 1.5
    r = np.array([0.0, 1.0, 2.0])
    v = 1.0 - 0.0 + 0.5 / 4.0 * 1.0  # 1.125
    assert m.sharpe_se(r) == pytest.approx(math.sqrt(v / 2.0) * SQ, rel=1e-14)
    assert m.psr(r) == pytest.approx(m.norm_cdf(1.0 * math.sqrt(2.0) / math.sqrt(v)), rel=1e-14)
    assert m.psr(r, benchmark=SQ) == pytest.approx(0.5, rel=1e-14)  # benchmark = SR annualised
    z = m.norm_ppf(0.95)
    assert m.min_track_record(r) == pytest.approx(1.0 + v * z**2, rel=1e-14)
    assert m.min_track_record(r, benchmark=SQ) == math.inf
    assert m.min_track_record(r, benchmark=2 * SQ) == math.inf


@pytest.mark.parametrize("r", [MIXED, NORMAL, SKEWED, -SKEWED, np.array([0.0, 0.0, 0.1])])
def test_against_scipy_moments(r):
    n, sr, g3, g4 = _ref_moments(r)
    v = _v(sr, g3, g4)
    assert m.sharpe_se(r) == pytest.approx(math.sqrt(v / (n - 1)) * SQ, rel=1e-10)
    for bench in (0.0, 0.5, -1.0, 2.0):
        srb = bench / SQ
        want = float(stats.norm.cdf((sr - srb) * math.sqrt(n - 1) / math.sqrt(v)))
        assert m.psr(r, benchmark=bench) == pytest.approx(want, rel=1e-10, abs=1e-14)
        for conf in (0.9, 0.95, 0.99):
            want_mtrl = math.inf if sr <= srb else 1 + v * (stats.norm.ppf(conf) / (sr - srb)) ** 2
            assert _same(m.min_track_record(r, benchmark=bench, confidence=conf), want_mtrl, rel=1e-10)


def test_point_sharpe_consistent_with_empyrical():
    empyrical = pytest.importorskip("empyrical")
    for r in (MIXED, NORMAL, SKEWED):
        ref = float(empyrical.sharpe_ratio(r))
        assert m.sharpe(r) == pytest.approx(ref, rel=1e-12)
        # the SR inside psr / sharpe_se is the same point estimate: invert PSR back to it
        n, _, g3, g4 = _ref_moments(r)
        sr_d = ref / SQ
        z = m.norm_ppf(m.psr(r))
        assert z * math.sqrt(_v(sr_d, g3, g4)) / math.sqrt(n - 1) * SQ == pytest.approx(ref, rel=1e-9)


def test_sharpe_se_normal_returns_close_to_iid_formula():
    r = np.random.default_rng(7).normal(0.0008, 0.01, 5000)
    sr = r.mean() / r.std(ddof=1)
    iid = math.sqrt((1 + sr**2 / 2) / (len(r) - 1)) * SQ
    assert m.sharpe_se(r) == pytest.approx(iid, rel=0.02)
    assert m.sharpe_se(r) == pytest.approx(1.0 * SQ / math.sqrt(len(r)), rel=0.03)  # ~ sqrt(252/n)


def test_sharpe_se_grows_with_negative_skew_and_fat_tails():
    # same mean / std, but a crash-prone series carries more Sharpe uncertainty
    rng = np.random.default_rng(3)
    calm = rng.normal(0.002, 0.01, 4000)
    crash = np.where(rng.random(4000) < 0.02, -0.06, 0.0035) + rng.normal(0, 0.002, 4000)
    assert stats.skew(crash) < -3
    ratio_calm = m.sharpe_se(calm) / math.sqrt((1 + (m.sharpe(calm) / SQ) ** 2 / 2) / 3999) / SQ
    ratio_crash = m.sharpe_se(crash) / math.sqrt((1 + (m.sharpe(crash) / SQ) ** 2 / 2) / 3999) / SQ
    assert ratio_calm == pytest.approx(1.0, abs=0.01)
    assert ratio_crash > 1.05


def test_psr_limits():
    strong = np.random.default_rng(1).normal(0.003, 0.01, 2000)  # annual SR ~ 4.8
    assert m.psr(strong) > 1 - 1e-12
    assert m.psr(strong, benchmark=100.0) < 1e-12
    zero_mean = np.random.default_rng(2).normal(0.0, 0.01, 500)
    zero_mean -= zero_mean.mean() - 1e-5  # sample mean pinned just above 0
    p = m.psr(zero_mean)
    assert 0.0 < p < 1.0 and abs(p - 0.5) < 0.05
    assert 0.0 < m.psr(-strong) < 1e-12


def test_psr_monotone_in_benchmark():
    vals = [m.psr(MIXED, benchmark=b) for b in (-5.0, -1.0, 0.0, 1.0, 5.0, 20.0)]
    assert all(a > b for a, b in zip(vals, vals[1:]))


@pytest.mark.parametrize("r", [MIXED, NORMAL, SKEWED])
@pytest.mark.parametrize("conf", [0.8, 0.95, 0.99])
def test_min_track_record_consistent_with_psr(r, conf):
    # at n = MinTRL sessions, PSR with the same moments equals the confidence (checked by formula)
    n, sr, g3, g4 = _ref_moments(r)
    bench = 0.1 * sr * SQ  # below SR, so MinTRL is finite
    mtrl = m.min_track_record(r, benchmark=bench, confidence=conf)
    assert math.isfinite(mtrl) and mtrl > 1
    srb = bench / SQ
    psr_at_mtrl = m.norm_cdf((sr - srb) * math.sqrt(mtrl - 1) / math.sqrt(_v(sr, g3, g4)))
    assert psr_at_mtrl == pytest.approx(conf, rel=1e-12)
    # and the record we have: PSR >= conf exactly when n >= MinTRL
    assert (m.psr(r, benchmark=bench) >= conf) == (n >= mtrl)


def test_min_track_record_rejects_bad_confidence():
    for c in (0.0, 1.0, 1.5):
        with pytest.raises(ValueError):
            m.min_track_record(MIXED, confidence=c)


# ------------------------------------------------------------------ block bootstrap
def test_block_bootstrap_indices_shape_range_and_determinism():
    idx = m.block_bootstrap_indices(23, block=5, n_boot=300, seed=11)
    assert idx.shape == (300, 23) and np.issubdtype(idx.dtype, np.integer)
    assert idx.min() >= 0 and idx.max() <= 22
    assert np.array_equal(idx, m.block_bootstrap_indices(23, block=5, n_boot=300, seed=11))
    assert not np.array_equal(idx, m.block_bootstrap_indices(23, block=5, n_boot=300, seed=12))
    assert len(np.unique(idx[:, 0])) > 15  # starts drawn over all of 0..n-1


@pytest.mark.parametrize("n, block", [(23, 5), (20, 5), (7, 3), (10, 1), (5, 5), (12, 4)])
def test_block_bootstrap_indices_are_consecutive_runs_mod_n(n, block):
    idx = m.block_bootstrap_indices(n, block=block, n_boot=200, seed=0)
    for b0 in range(0, n, block):
        seg = idx[:, b0 : b0 + block]
        # within a block each index follows the previous one, wrapping around
        assert np.all((seg[:, 1:] - seg[:, :-1]) % n == 1 % n)


def test_block_bootstrap_indices_clipping_and_edges():
    assert m.block_bootstrap_indices(0, n_boot=4).shape == (4, 0)
    assert np.all(m.block_bootstrap_indices(1, block=5, n_boot=4) == 0)
    whole = m.block_bootstrap_indices(6, block=100, n_boot=50, seed=3)  # block clipped to n: rotations
    assert np.all((whole - whole[:, :1]) % 6 == np.arange(6))
    iid = m.block_bootstrap_indices(6, block=0, n_boot=50, seed=3)  # block clipped to 1
    assert np.array_equal(iid, m.block_bootstrap_indices(6, block=1, n_boot=50, seed=3))
    with pytest.raises(ValueError):
        m.block_bootstrap_indices(-1)


def test_block_bootstrap_roughly_uniform_coverage():
    idx = m.block_bootstrap_indices(50, block=5, n_boot=4000, seed=0)
    counts = np.bincount(idx.ravel(), minlength=50) / idx.size
    assert np.allclose(counts, 1 / 50, rtol=0.05)  # circular blocks: no edge under-sampling


@pytest.mark.parametrize("r", [np.array([]), np.array([0.01])], ids=["empty", "one"])
def test_intervals_degenerate(r):
    assert all(math.isnan(x) for x in m.block_bootstrap_interval(m.total_return, r))
    assert all(math.isnan(x) for x in m.total_return_interval(r))
    assert all(math.isnan(x) for x in m.excess_return_interval(r, r))


def test_interval_flat_series_is_a_point():
    r = np.full(30, 0.001)
    lo, hi = m.total_return_interval(r, n_boot=200)
    assert lo == pytest.approx(m.total_return(r)) and hi == pytest.approx(m.total_return(r))
    lo, hi = m.excess_return_interval(r, r, n_boot=200)
    assert lo == hi == 0.0


def test_vectorised_intervals_match_generic_loop():
    r = np.random.default_rng(5).normal(0.001, 0.01, 120)
    b = 0.6 * r + np.random.default_rng(6).normal(0.0, 0.005, 120)
    kw = dict(block=7, n_boot=500, level=0.8, seed=9)
    fast = m.total_return_interval(r, **kw)
    slow = m.block_bootstrap_interval(m.total_return, r, **kw)
    assert fast == pytest.approx(slow, rel=1e-12)
    fast = m.excess_return_interval(r, b, **kw)
    slow = m.block_bootstrap_interval(lambda x, y: m.total_return(x) - m.total_return(y), r, b, **kw)
    assert fast == pytest.approx(slow, rel=1e-12)


def test_interval_uses_the_same_indices_for_every_series():
    r = np.random.default_rng(8).normal(0.0, 0.01, 60)
    # identical series resampled together: every excess is exactly 0
    assert m.excess_return_interval(r, r.copy(), n_boot=300) == (0.0, 0.0)
    assert m.block_bootstrap_interval(lambda x, y: float(np.max(np.abs(x - y))), r, r.copy()) == (0.0, 0.0)


def test_interval_is_the_percentile_of_the_resampled_stat():
    r = np.arange(10, dtype=float)
    kw = dict(block=3, n_boot=400, seed=4)
    idx = m.block_bootstrap_indices(10, **kw)
    want = np.quantile(r[idx].mean(axis=1), [0.05, 0.95])
    assert m.block_bootstrap_interval(np.mean, r, level=0.9, **kw) == pytest.approx(tuple(want))
    # a wider level gives a wider interval
    lo90, hi90 = m.block_bootstrap_interval(np.mean, r, level=0.9, **kw)
    lo50, hi50 = m.block_bootstrap_interval(np.mean, r, level=0.5, **kw)
    assert lo90 <= lo50 <= hi50 <= hi90


def test_interval_deterministic_and_contains_point_estimate():
    rng = np.random.default_rng(10)
    r = rng.normal(0.0005, 0.01, 1000)
    b = rng.normal(0.0002, 0.01, 1000)
    assert m.total_return_interval(r, seed=1) == m.total_return_interval(r, seed=1)
    assert m.total_return_interval(r, seed=1) != m.total_return_interval(r, seed=2)
    lo, hi = m.total_return_interval(r)
    assert lo < m.total_return(r) < hi
    lo, hi = m.excess_return_interval(r, b)
    assert lo < m.total_return(r) - m.total_return(b) < hi
    lo, hi = m.block_bootstrap_interval(m.sharpe, r, n_boot=300)
    assert lo < m.sharpe(r) < hi


def test_interval_drops_nan_stats_and_validates():
    r = np.array([0.0, 0.0, 0.0, 0.01])
    lo, hi = m.block_bootstrap_interval(m.sharpe, r, block=1, n_boot=200)  # some resamples are flat
    assert math.isfinite(lo) and math.isfinite(hi)
    assert all(math.isnan(x) for x in m.block_bootstrap_interval(lambda x: NAN, r))
    with pytest.raises(ValueError):
        m.block_bootstrap_interval(np.mean, r, r[:3])
    with pytest.raises(ValueError):
        m.block_bootstrap_interval(np.mean)
    with pytest.raises(ValueError):
        m.total_return_interval(r, level=1.0)


# ------------------------------------------------------------------ mean / t
@pytest.mark.parametrize(
    "values, want",
    [
        ([], (NAN, NAN, NAN)),
        ([1.0], (NAN, NAN, NAN)),
        ([NAN, 2.0, NAN], (NAN, NAN, NAN)),  # one value left after dropping NaNs
        ([0.0, 0.0, 0.0], (0.0, 0.0, NAN)),
        ([0.1, 0.1, 0.1], (0.1, 0.0, math.inf)),  # flat, even though the float std is a few ulps
        ([-2.0, -2.0], (-2.0, 0.0, -math.inf)),
        ([1.0, 3.0], (2.0, 1.0, 2.0)),  # std sqrt(2) / sqrt(2)
        ([1.0, 2.0, 3.0, 4.0], (2.5, math.sqrt(5 / 3) / 2, 2.5 / (math.sqrt(5 / 3) / 2))),
        ([1.0, NAN, 3.0], (2.0, 1.0, 2.0)),
        ([-1.0, 1.0], (0.0, 1.0, 0.0)),
    ],
    ids=[
        "empty",
        "one",
        "one after nan",
        "flat zero",
        "flat positive",
        "flat negative",
        "two",
        "four",
        "nan dropped",
        "zero mean",
    ],
)
def test_mean_t_table(values, want):
    got = m.mean_t(np.array(values, dtype=float))
    assert all(_same(g, w) for g, w in zip(got, want)), (got, want)


def test_mean_t_matches_scipy_ttest():
    x = np.random.default_rng(12).normal(0.02, 0.1, 80)
    mean, se, t = m.mean_t(x)
    ref = stats.ttest_1samp(x, 0.0)
    assert t == pytest.approx(ref.statistic, rel=1e-12)
    assert se == pytest.approx(stats.sem(x), rel=1e-12)
    assert mean == pytest.approx(x.mean(), rel=1e-14)


# ------------------------------------------------------------------ Wilson interval
@pytest.mark.parametrize(
    "k, n",
    [(0, 1), (1, 1), (0, 10), (3, 10), (10, 10), (50, 100), (7, 13), (1, 1000), (999, 1000), (123, 250)],
)
@pytest.mark.parametrize("level", [0.5, 0.9, 0.95, 0.99])
def test_binomial_interval_matches_scipy_wilson(k, n, level):
    ci = stats.binomtest(k, n).proportion_ci(confidence_level=level, method="wilson")
    lo, hi = m.binomial_interval(k, n, level=level)
    assert lo == pytest.approx(ci.low, rel=1e-12, abs=1e-15)
    assert hi == pytest.approx(ci.high, rel=1e-12, abs=1e-15)
    assert 0.0 <= lo <= k / n <= hi <= 1.0


def test_binomial_interval_hand_computed_and_edges():
    # k = 5, n = 10, z = 1.959964: center 0.5, half = z / (n + z^2) * sqrt(25/10 + z^2/4)
    z = 1.959963984540054
    half = z / (10 + z * z) * math.sqrt(2.5 + z * z / 4)
    assert m.binomial_interval(5, 10, level=0.95) == pytest.approx((0.5 - half, 0.5 + half), rel=1e-12)
    assert all(math.isnan(x) for x in m.binomial_interval(0, 0))
    for k, n in ((-1, 5), (6, 5), (0, -1)):
        with pytest.raises(ValueError):
            m.binomial_interval(k, n)


# ------------------------------------------------------------------ break-even cost
@pytest.mark.parametrize(
    "g",
    [
        np.array([0.01]),
        np.array([0.0]),
        np.array([-0.01]),
        MIXED,
        np.array([0.002, -0.001, 0.004, 0.0005]),
        np.random.default_rng(13).normal(0.001, 0.01, 1000),
        np.random.default_rng(14).normal(-0.001, 0.01, 500),
    ],
    ids=["one up", "one flat", "one down", "mixed", "small", "long up", "long down"],
)
def test_break_even_cost_zeroes_the_net_total(g):
    f = m.break_even_cost(g)
    assert abs(m.net_of_costs_total(g, f)) < 1e-12
    assert f == pytest.approx(1 - np.prod(1 + g) ** (-1 / (2 * len(g))), rel=1e-10, abs=1e-16)
    assert np.sign(f) == np.sign(m.total_return(g))  # negative when the strategy loses before costs
    # a higher charge loses money, a lower one makes money
    assert m.net_of_costs_total(g, f + 1e-4) < 0 < m.net_of_costs_total(g, f - 1e-4)


def test_break_even_cost_hand_computed():
    # one session +1%: (1.01)(1 - f)^2 = 1 -> f = 1 - 1/sqrt(1.01)
    assert m.break_even_cost(np.array([0.01])) == pytest.approx(1 - 1 / math.sqrt(1.01), rel=1e-12)
    # two sessions of +0.2% gross: about 10 bps a side each (0.2% / 2 per session)
    assert m.break_even_cost(np.array([0.002, 0.002])) == pytest.approx(1 - 1.002**-0.5, rel=1e-12)
    assert m.break_even_cost(np.array([0.002, 0.002])) == pytest.approx(0.001, rel=0.01)


@pytest.mark.parametrize("g", [np.array([]), np.array([-1.0, 0.5])], ids=["empty", "wiped out"])
def test_break_even_cost_nan(g):
    assert math.isnan(m.break_even_cost(g))


def test_net_of_costs_total_hand_computed():
    g = np.array([0.01, -0.005])
    f = 0.0012
    assert m.net_of_costs_total(g, f) == pytest.approx(1.01 * 0.995 * (1 - f) ** 4 - 1, rel=1e-14)
    assert m.net_of_costs_total(g, 0.0) == pytest.approx(m.total_return(g), rel=1e-14)
    assert m.net_of_costs_total(np.array([]), 0.001) == 0.0
    assert m.net_of_costs_total(np.array([0.0]), 0.001) == pytest.approx((1 - 0.001) ** 2 - 1, rel=1e-14)
