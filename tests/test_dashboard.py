"""index.html: scopes, badges, runs, drift, embedded plots, escaping, missing figures, the band."""

from __future__ import annotations

import datetime as dt
import math
import re
from html.parser import HTMLParser

import numpy as np
import polars as pl
import pytest

from retrain import dashboard

NAN = float("nan")
IMG = "<svg "


def _daily(backtest: int = 40, live: int = 12, seed: int = 0) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    days, d = [], dt.date(2024, 1, 2)
    while len(days) < backtest + live:
        if d.weekday() < 5:
            days.append(d)
        d += dt.timedelta(days=1)
    n = len(days)
    return pl.DataFrame({
        "trade_date": pl.Series(days, dtype=pl.Date),
        "rank_ic": pl.Series(rng.normal(0.03, 0.1, n), dtype=pl.Float64),
        "net_return": pl.Series(rng.normal(0.001, 0.01, n), dtype=pl.Float64),
        "phase": ["backtest"] * backtest + ["live"] * live,
    })


def _full_scope(**over) -> dict:
    s = {
        "scope": "NASDAQ", "version": "v1",
        "model": {"run_id": "run-nasdaq-0007", "age_days": 9, "age_sessions": 6, "trained_through": "2024-03-01",
                  "promoted_at": "2024-03-02T06:00:00Z", "removed": False},
        "status": "warning",
        "reasons": [{"level": "warning", "reason": "live rank IC below its expected band",
                     "action": "watch the next sessions; retrain if it persists"},
                    {"level": "info", "reason": "12 sessions scored", "action": ""}],
        "live": {"sessions": 12, "ic": 0.0123, "rank_ic": -0.0042, "rank_ic_t": -0.31, "net_return": -0.0151,
                 "net_return_per_session": -0.00126, "hit_rate": 0.4167},
        "expected": {"source": "backtest record", "sessions": 40, "ic": 0.0301, "rank_ic": 0.0312,
                     "rank_ic_t": 2.9, "rank_ic_std": 0.068, "net_return_per_session": 0.0009, "hit_rate": 0.53},
        "daily": _daily(),
        "drift": [{"feature": f"feat_{i:02d}", "psi": 0.02 * i, "band": "significant" if i >= 13 else
                   "moderate" if i >= 5 else "stable"} for i in range(14)],
    }
    s.update(over)
    return s


def _empty_scope() -> dict:
    return {"scope": "NYSE", "version": None, "model": None, "status": "alert",
            "reasons": [{"level": "alert", "reason": "no active model", "action": "run retrain run"}],
            "live": None, "expected": None, "daily": None, "drift": None}


RUNS = [{"run_id": f"run-{i:02d}", "scope": "NASDAQ" if i % 2 else "NYSE", "feature_version": "v1",
         "created_at": f"2024-03-{i + 1:02d}T06:00:00Z", "status": "active" if i == 6 else "retired",
         "verdict": "GOOD", "gate_outcome": "promoted" if i == 6 else "kept", "promoted": i == 6,
         "reason": "better by 0.01 rank IC"} for i in range(7)]


class _Strict(HTMLParser):
    """Counts start and end tags, so an unclosed or stray tag shows."""

    VOID = {"meta", "img", "br", "hr", "input", "link"}

    def __init__(self):
        super().__init__()
        self.stack: list[str] = []
        self.errors: list[str] = []

    def handle_starttag(self, tag, attrs):
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag):
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes {self.stack[-1:] or 'nothing'}")
        else:
            self.stack.pop()


def _parse(page: str) -> _Strict:
    p = _Strict()
    p.feed(page)
    p.close()
    return p


@pytest.fixture(scope="module")
def page() -> str:
    return dashboard.render_index([_full_scope(), _empty_scope()], RUNS, "2024-03-11 18:00 UTC")


def _section(page: str, scope: str) -> str:
    return re.search(rf"<section id='{scope}'>.*?</section>", page, re.S).group(0)


def test_two_scope_page(page):
    assert page.count(IMG) == 2  # the full scope: equity and rolling rank IC; the empty scope: none
    full, empty = _section(page, "NASDAQ"), _section(page, "NYSE")
    assert full.count(IMG) == 2 and empty.count(IMG) == 0
    assert "<span class='badge warning'>warning</span>" in full
    assert "<span class='badge alert'>alert</span>" in empty
    assert "No active model" in empty and "No prediction scored yet" in empty and "No drift measured yet" in empty
    assert "live rank IC below its expected band" in full and "retrain if it persists" in full
    for r in RUNS:
        assert r["run_id"] in page
    assert "run-nasdaq-0007" in full
    assert "2024-03-01" in full and "Generated 2024-03-11 18:00 UTC" in page
    for low in ("http://", "https://", "<script"):
        assert low not in page.lower()
    p = _parse(page)
    assert p.errors == [] and p.stack == []


def test_drift_table_top_ten_highlighted(page):
    full = _section(page, "NASDAQ")
    drift = re.search(r"Feature drift</h3>.*?</table>", full, re.S).group(0)
    shown = re.findall(r"feat_\d\d", drift)
    assert shown == [f"feat_{i:02d}" for i in range(13, 3, -1)]  # top 10 by PSI, highest first
    assert drift.count("<tr class='sig'>") == 1  # feat_13 only
    assert re.search(r"<tr class='sig'><td>feat_13</td>", drift)


def test_drift_as_a_frame():
    frame = pl.DataFrame({"feature": ["atr_14", "obv"], "psi": [0.31, NAN], "band": ["significant", "unknown"]})
    page = dashboard.render_index([_full_scope(drift=frame, daily=None)], [], "now")
    assert re.search(r"<tr class='sig'><td>atr_14</td><td class='num'>0.310</td>", page)
    assert re.search(r"<td>obv</td><td class='num'>n/a</td><td>unknown</td>", page)


def test_runs_newest_first_and_capped():
    runs = [dict(RUNS[0], run_id=f"r{i:02d}", created_at=f"2024-01-{i + 1:02d}T00:00:00Z") for i in range(20)]
    page = dashboard.render_index([], runs[::2] + runs[1::2], "now")
    shown = re.findall(r"<td>(r\d\d)</td>", page)
    assert shown == [f"r{i:02d}" for i in range(19, 4, -1)]
    assert "No scope yet" in page


def test_live_table_figures(page):
    full = _section(page, "NASDAQ")
    assert "-0.0042 (t = -0.31)" in full and "+0.0312 (t = 2.90)" in full
    assert "41.67%" in full and "53.00%" in full and "-1.51%" in full
    band = 1.96 * 0.068 / math.sqrt(12)
    assert f"[{0.0312 - band:+.4f}, {0.0312 + band:+.4f}]" in full


def test_reason_is_escaped():
    s = _full_scope(scope="A&B", reasons=[{"level": "alert", "reason": "PSI <b>& high", "action": "<i>retrain</i>"}],
                    daily=None)
    runs = [dict(RUNS[0], reason="<script>x</script>")]
    page = dashboard.render_index([s], runs, "<now>")
    assert "PSI &lt;b&gt;&amp; high" in page and "<b>&" not in page
    assert "&lt;i&gt;retrain&lt;/i&gt;" in page and "&lt;script&gt;" in page and "<script>" not in page
    assert "A&amp;B" in page and "&lt;now&gt;" in page
    assert _parse(page).errors == []


def test_nan_figures_render_na():
    live = {"sessions": 3, "ic": NAN, "rank_ic": None, "rank_ic_t": NAN, "net_return": NAN,
            "net_return_per_session": NAN, "hit_rate": NAN}
    expected = {"source": "backtest", "sessions": NAN, "ic": NAN, "rank_ic": NAN, "rank_ic_t": None,
                "rank_ic_std": NAN, "net_return_per_session": NAN, "hit_rate": None}
    page = dashboard.render_index([_full_scope(live=live, expected=expected, daily=None,
                                               drift=[{"feature": "rsi_14", "psi": NAN, "band": "stable"}])],
                                  [], "now")
    table = re.search(r"Live against expected</h3>.*?</table>", page, re.S).group(0)
    cells = re.findall(r"<td class='num'>([^<]*)</td>", table)
    assert cells[0] == "3"
    assert [c for c in cells[1:] if c] and all(c in ("n/a", "n/a (t = n/a)") for c in cells[1:] if c)
    assert "nan" not in page.lower().replace("nasdaq", "")
    assert re.search(r"<td>rsi_14</td><td class='num'>n/a</td>", page)


def test_scope_without_live_sessions_has_no_plots():
    only_backtest = _daily(backtest=30, live=0)
    page = dashboard.render_index([_full_scope(daily=only_backtest)], [], "now")
    assert IMG not in page and "No live session scored yet" in page


def test_missing_expectation_still_plots_without_band():
    page = dashboard.render_index([_full_scope(expected=None, daily=_daily(backtest=0, live=5))], [], "now")
    assert page.count(IMG) == 2 and "No expectation recorded" in page


def test_rolling_mean_and_band():
    v = np.array([1.0, NAN, 3.0, 5.0])
    np.testing.assert_allclose(dashboard.rolling_mean(v, 2), [1.0, 1.0, 3.0, 4.0])  # NaN skipped
    np.testing.assert_allclose(dashboard.rolling_mean(v, 4), [NAN, NAN, 2.0, 3.0])  # half the window needed
    np.testing.assert_allclose(dashboard.rolling_mean(v, 20), [NAN, NAN, 2.0, 3.0])  # window shrinks to 4
    assert dashboard.rolling_mean(np.array([]), 20).size == 0
    mean, lo, hi = dashboard.expected_band({"rank_ic": 0.03, "rank_ic_std": 0.1}, 25)
    assert (mean, lo, hi) == pytest.approx((0.03, 0.03 - 0.0392, 0.03 + 0.0392))
    assert dashboard.expected_band({"rank_ic": 0.03, "rank_ic_std": 0.0}, 25) is None
    assert dashboard.expected_band(None, 25) is None
