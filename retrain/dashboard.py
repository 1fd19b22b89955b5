"""index.html: the dashboard of the active models, one offline page (plots drawn as inline SVG, no scripts).

Show layer: results in, HTML text out. The caller (``retrain run``, ``predict``, ``monitor``)
gathers the figures and writes the file; nothing here reads or writes a file.

One section per scope: the active model, the monitor's status with each reason and its action,
the live record against its expectation (a table, then two inline SVG charts split into backtest and live
as pyfolio does: paper equity, and the rolling rank IC inside its expected band), and the
feature drift. Then the recent runs of all scopes. A scope without a scored live session gets
no plots, so a page is cheap to rewrite after every ``predict``.
"""

from __future__ import annotations

import math

import numpy as np
import polars as pl

from retrain.html_report import STYLE, _esc, _f, _finite, _int, _table

WINDOW = 20  # sessions of the rolling rank IC (fewer when the record has fewer)
Z = 1.96  # two-sided 95% normal quantile of the expected band
TOP_DRIFT = 10
MAX_RUNS = 15
COLORS = {"backtest": "#1f77b4", "live": "#ff7f0e"}
STATUS = ("ok", "warning", "alert")

DASH_STYLE = (".badge{display:inline-block;padding:1px 9px;border-radius:9px;font-size:0.8em;font-weight:700;"
              "color:#fff;background:#888;vertical-align:middle;text-transform:uppercase}"
              ".ok{background:#2a7d2e}.warning{background:#c77700}.alert{background:#c62828}.info{background:#1565c0}"
              "tr.sig td{background:#fde2e1;font-weight:600}td.num{text-align:right;font-variant-numeric:tabular-nums}"
              "section{border-top:2px solid #ccc;margin-top:2em}h2 .badge{margin-left:0.6em}")

RUN_COLUMNS = ["created", "run", "scope", "feature version", "status", "verdict", "gate", "promoted", "reason"]


# ------------------------------------------------------------------ formatting
def _ic(x) -> str:
    return _f(x, "+.4f")


def _pct(x, sign: bool = True) -> str:
    return _f(x, "+.2%" if sign else ".2%")


def _text(x, none: str = "n/a") -> str:
    """A text field as a string, or ``none`` when it is missing (None, empty or NaN)."""
    if x is None or (isinstance(x, float) and math.isnan(x)) or str(x) == "":
        return none
    return str(x)


def _badge(level, missing: str = "not monitored yet") -> str:
    """A coloured badge for ok / warning / alert (and info); grey with ``missing`` otherwise."""
    name = str(level).lower() if level is not None else ""
    if name in (*STATUS, "info"):
        return f"<span class='badge {name}'>{_esc(name)}</span>"
    return f"<span class='badge'>{_esc(missing if level is None else level)}</span>"


def _grid(head: list[str], rows: list[list[str]], classes: list[str] | None = None,
          numeric: tuple[int, ...] = ()) -> str:
    """A table with a header row; every cell is escaped. ``classes`` gives a class per row
    ('' for none), ``numeric`` the column indexes aligned right."""
    h = "".join(f"<th>{_esc(c)}</th>" for c in head)
    body = []
    for i, row in enumerate(rows):
        cls = (classes or [""] * len(rows))[i]
        cells = "".join(f"<td class='num'>{_esc(v)}</td>" if j in numeric else f"<td>{_esc(v)}</td>"
                        for j, v in enumerate(row))
        body.append(f"<tr class='{cls}'>{cells}</tr>" if cls else f"<tr>{cells}</tr>")
    return f"<table><tr>{h}</tr>{''.join(body)}</table>"


def _note(text: str) -> str:
    return f"<p class='note'>{_esc(text)}</p>"


def _img(alt: str, svg: str) -> str:
    return f"<figure aria-label='{_esc(alt)}'>{svg}</figure>"


# ------------------------------------------------------------------ computations
def rolling_mean(values: np.ndarray, window: int) -> np.ndarray:
    """Trailing mean over ``window`` sessions, ignoring NaN; NaN until the window holds at least
    half its size in finite values, the window shrunk to the record's length
    (``rolling_mean([1, nan, 3, 5], 4)`` is ``[nan, nan, 2, 3]``)."""
    v = np.asarray(values, dtype=float)
    window = max(1, min(int(window), len(v)))
    ok = np.isfinite(v)
    s = np.concatenate([[0.0], np.cumsum(np.where(ok, v, 0.0))])
    c = np.concatenate([[0], np.cumsum(ok)])
    lo = np.maximum(np.arange(1, len(v) + 1) - window, 0)
    hi = np.arange(1, len(v) + 1)
    n = c[hi] - c[lo]
    need = max(1, math.ceil(window / 2))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n >= need, (s[hi] - s[lo]) / np.maximum(n, 1), np.nan)


def expected_band(expected: dict | None, window: int) -> tuple[float, float, float] | None:
    """(mean, low, high) of the rolling mean rank IC the record promised: mean ± 1.96 × daily
    std / √window; None when the expectation lacks its mean or a positive std."""
    e = expected or {}
    mean, sd = e.get("rank_ic"), e.get("rank_ic_std")
    if not (_finite(mean) and _finite(sd) and sd > 0 and window >= 1):
        return None
    half = Z * float(sd) / math.sqrt(window)
    return float(mean), float(mean) - half, float(mean) + half


def _daily_frame(daily) -> tuple[pl.DataFrame | None, str | None]:
    """(daily sorted oldest first, None), or (None, why it cannot be plotted)."""
    if not isinstance(daily, pl.DataFrame) or daily.is_empty():
        return None, "No daily record given, so no plots."
    need = {"trade_date", "phase"}
    if not need <= set(daily.columns):
        return None, "The daily record lacks " + ", ".join(sorted(need - set(daily.columns))) + ", so no plots."
    d = daily.drop_nulls("trade_date").sort("trade_date", maintain_order=True)
    if d.filter(pl.col("phase") == "live").is_empty():
        return None, "No live session scored yet, so no plots (they start with the first scored prediction)."
    return d, None


def _column(d: pl.DataFrame, name: str) -> np.ndarray | None:
    if name not in d.columns:
        return None
    return d[name].cast(pl.Float64).fill_null(float("nan")).to_numpy()


# ------------------------------------------------------------------ plots
# Inline SVG line charts: no matplotlib to import or rasterize, so the page is cheap to rewrite
# after every `retrain predict` (report.html keeps its matplotlib figures).
W, H, LEFT, RIGHT, TOP, BOTTOM = 900, 260, 64, 12, 30, 34


class _Chart:
    """One SVG chart over dates (x) and values (y), drawn in the order of the calls."""

    def __init__(self, dates: list, values: list[np.ndarray], title: str):
        self.x0, self.x1 = dates[0].toordinal(), dates[-1].toordinal()
        finite = np.concatenate([v[np.isfinite(v)] for v in values]) if values else np.array([])
        lo, hi = (float(finite.min()), float(finite.max())) if len(finite) else (0.0, 1.0)
        pad = (hi - lo) * 0.08 or max(abs(hi), 1e-3) * 0.1
        self.y0, self.y1 = lo - pad, hi + pad
        self.parts = [f"<text x='{LEFT}' y='18' font-size='13' font-weight='bold'>{_esc(title)}</text>"]

    def x(self, d) -> float:
        span = max(1, self.x1 - self.x0)
        return LEFT + (d.toordinal() - self.x0) / span * (W - LEFT - RIGHT)

    def y(self, v: float) -> float:
        return TOP + (self.y1 - v) / (self.y1 - self.y0) * (H - TOP - BOTTOM)

    def band(self, lo: float, hi: float, label: str) -> None:
        self.y0, self.y1 = min(self.y0, lo), max(self.y1, hi)
        top, bottom = self.y(hi), self.y(lo)
        self.parts.append(f"<rect x='{LEFT}' y='{top:.1f}' width='{W - LEFT - RIGHT}' height='{bottom - top:.1f}' "
                          f"fill='green' fill-opacity='0.15'><title>{_esc(label)}</title></rect>")

    def hline(self, v: float, colour: str = "gray", dash: str = "3,3") -> None:
        if self.y0 <= v <= self.y1:
            self.parts.append(f"<line x1='{LEFT}' x2='{W - RIGHT}' y1='{self.y(v):.1f}' y2='{self.y(v):.1f}' "
                              f"stroke='{colour}' stroke-dasharray='{dash}'/>")

    def line(self, dates: list, values: np.ndarray, colour: str, label: str) -> None:
        points, runs = [], []
        for d, v in zip(dates, values):
            if np.isfinite(v):
                points.append(f"{self.x(d):.1f},{self.y(float(v)):.1f}")
            elif points:
                runs.append(points)
                points = []
        runs.append(points)
        for run in (r for r in runs if r):
            self.parts.append(f"<polyline fill='none' stroke='{colour}' stroke-width='1.6' points='{' '.join(run)}'>"
                              f"<title>{_esc(label)}</title></polyline>")

    def vline(self, d, label: str) -> None:
        x = self.x(d)
        self.parts.append(f"<line x1='{x:.1f}' x2='{x:.1f}' y1='{TOP}' y2='{H - BOTTOM}' stroke='black' "
                          f"stroke-dasharray='5,3'/><text x='{x + 4:.1f}' y='{TOP + 12}' font-size='11'>{_esc(label)}</text>")

    def svg(self, dates: list, fmt: str, legend: list[tuple[str, str]]) -> str:
        axes = [f"<line x1='{LEFT}' x2='{LEFT}' y1='{TOP}' y2='{H - BOTTOM}' stroke='#444'/>",
                f"<line x1='{LEFT}' x2='{W - RIGHT}' y1='{H - BOTTOM}' y2='{H - BOTTOM}' stroke='#444'/>"]
        for v in np.linspace(self.y0, self.y1, 5):
            axes.append(f"<text x='{LEFT - 6}' y='{self.y(v) + 4:.1f}' font-size='10' text-anchor='end'>"
                        f"{format(v, fmt)}</text>")
        for d in (dates[0], dates[len(dates) // 2], dates[-1]):
            axes.append(f"<text x='{self.x(d):.1f}' y='{H - BOTTOM + 16}' font-size='10' text-anchor='middle'>{d}</text>")
        x = LEFT + 10
        for colour, label in legend:
            axes.append(f"<rect x='{x}' y='{H - 12}' width='14' height='4' fill='{colour}'/>"
                        f"<text x='{x + 18}' y='{H - 7}' font-size='10'>{_esc(label)}</text>")
            x += 26 + 6 * len(label)
        return (f"<svg viewBox='0 0 {W} {H}' width='{W}' height='{H}' "
                f"role='img' font-family='sans-serif'>{''.join(self.parts + axes)}</svg>")


def _split(chart: _Chart, dates: list, values: np.ndarray, boundary: int) -> None:
    """``values`` as backtest then live in two colours (the live line starts at the last backtest
    point, so the curve is continuous), with a dashed line at the first live session."""
    if boundary > 0:
        chart.line(dates[:boundary], values[:boundary], COLORS["backtest"], "backtest")
    start = max(0, boundary - 1)
    chart.line(dates[start:], values[start:], COLORS["live"], "live")
    chart.vline(dates[boundary], f"live since {dates[boundary]}")


def _equity_plot(d: pl.DataFrame, dates: list, boundary: int, live: np.ndarray) -> tuple[str | None, str]:
    r = _column(d, "net_return")
    if r is None or not np.isfinite(r).any():
        return None, "No net returns in the daily record, so no equity plot."
    r = np.nan_to_num(r)
    equity = np.cumprod(1.0 + r)
    bt = float(equity[boundary - 1]) if boundary > 0 else 1.0
    live_ret = float(equity[-1] / bt - 1.0)
    title = (f"Paper equity (net, start = 1): backtest {_pct(bt - 1.0)}, live {_pct(live_ret)} "
             f"over {int(live.sum())} session(s)")
    chart = _Chart(dates, [equity, np.array([1.0])], title)
    chart.hline(1.0)
    _split(chart, dates, equity, boundary)
    return chart.svg(dates, ".3f", [(COLORS["backtest"], "backtest"), (COLORS["live"], "live")]), ""


def _ic_plot(d: pl.DataFrame, dates: list, boundary: int, live: np.ndarray,
             expected: dict | None) -> tuple[str | None, str]:
    ic = _column(d, "rank_ic")
    if ic is None or not np.isfinite(ic).any():
        return None, "No daily rank IC in the record, so no rank IC plot."
    window = max(1, min(WINDOW, len(ic)))
    roll = rolling_mean(ic, window)
    band = expected_band(expected, window)
    live_mean = float(np.nanmean(ic[boundary:])) if np.isfinite(ic[boundary:]).any() else float("nan")
    title = f"Rolling rank IC ({window} session{'s' * (window != 1)}): live mean {_ic(live_mean)}"
    title += "" if band is not None else " (no expected band: the expectation lacks its mean or std)"
    chart = _Chart(dates, [roll, np.array([0.0])], title)
    legend = [(COLORS["backtest"], "backtest"), (COLORS["live"], "live")]
    if band is not None:
        mean, lo, hi = band
        label = f"expected {mean:+.4f} ± 1.96·σ/√{window}"
        chart.band(lo, hi, label)
        chart.hline(mean, "green", "1,0")
        legend.append(("green", label))
    chart.hline(0.0)
    _split(chart, dates, roll, boundary)
    return chart.svg(dates, "+.3f", legend), ""


def scope_plots(daily, expected: dict | None) -> tuple[list[tuple[str, str]], list[str]]:
    """([(title, inline SVG)], notes): at most two charts, none without a scored live session."""
    d, why = _daily_frame(daily)
    if d is None:
        return [], [why]
    live = (d["phase"] == "live").to_numpy()
    boundary = int(np.argmax(live))  # first live session; backtest rows before it
    dates = d["trade_date"].to_list()
    out, notes = [], []
    for title, (svg, note) in (("Paper equity, backtest then live", _equity_plot(d, dates, boundary, live)),
                               ("Rolling rank IC against its expected band",
                                _ic_plot(d, dates, boundary, live, expected))):
        if svg is not None:
            out.append((title, svg))
        else:
            notes.append(note)
    return out, notes


# ------------------------------------------------------------------ sections
def _model_html(model) -> str:
    if not isinstance(model, dict) or not model:
        return "<p><b>No active model.</b> <span class='note'>Run <code>retrain run</code> to train one.</span></p>"
    age = "n/a"
    if _finite(model.get("age_days")) or _finite(model.get("age_sessions")):
        age = f"{_int(model.get('age_days'))} days ({_int(model.get('age_sessions'))} sessions)"
    rows = [("run", _text(model.get("run_id"))), ("trained through", _text(model.get("trained_through"))),
            ("age", age), ("promoted", _text(model.get("promoted_at"), "not recorded"))]
    out = _table(rows)
    if model.get("removed"):
        out = ("<p class='w'><b>This model's files were removed</b>: predictions cannot use it until a new "
               "model is promoted.</p>") + out
    return out


def _reasons_html(status, reasons) -> str:
    head = f"<p><b>Monitor:</b> {_badge(status)}</p>"
    if not isinstance(reasons, list | tuple) or not reasons:
        return head + _note("No reason given." if status is not None else "The monitor has not run yet.")
    items = []
    for r in reasons:
        r = r if isinstance(r, dict) else {"reason": r}
        action = _text(r.get("action"), "")
        items.append(f"<li>{_badge(r.get('level'), 'note')} {_esc(_text(r.get('reason'), 'no reason given'))}"
                     + (f"<br><i>Action:</i> {_esc(action)}" if action else "") + "</li>")
    return head + f"<ul>{''.join(items)}</ul>"


def _live_table(live, expected) -> str:
    """Live against expected: sessions, IC, rank IC (t), net return, hit rate."""
    lv = live if isinstance(live, dict) else {}
    ex = expected if isinstance(expected, dict) else {}
    notes = []
    if not lv or not _finite(lv.get("sessions")) or lv.get("sessions") <= 0:
        notes.append("No prediction scored yet: the live column fills in once a predicted session has closed.")
    if not ex:
        notes.append("No expectation recorded for this model.")

    def ic_t(e: dict) -> str:
        s = _ic(e.get("rank_ic"))
        return s + (f" (t = {_f(e['rank_ic_t'])})" if _finite(e.get("rank_ic_t")) else " (t = n/a)")

    n = lv.get("sessions")
    exp_total = (ex["net_return_per_session"] * n if _finite(ex.get("net_return_per_session")) and _finite(n)
                 else None)
    band = "n/a"
    if _finite(n) and n > 0:
        b = expected_band(ex, int(n))
        band = f"[{_ic(b[1])}, {_ic(b[2])}]" if b else "n/a"
    source = _text(ex.get("source"), "expected")
    rows = [
        ["sessions", _int(lv.get("sessions")), _int(ex.get("sessions"))],
        ["IC (mean daily)", _ic(lv.get("ic")), _ic(ex.get("ic"))],
        ["rank IC (mean daily, t)", ic_t(lv), ic_t(ex)],
        ["95% range of the live mean rank IC at this many sessions", "", band],
        ["rank IC daily std", "", _f(ex.get("rank_ic_std"), ".4f")],
        ["net return per session", _pct(lv.get("net_return_per_session")), _pct(ex.get("net_return_per_session"))],
        ["net return, total (expected: ≈ per session × live sessions)", _pct(lv.get("net_return")), _pct(exp_total)],
        ["hit rate", _pct(lv.get("hit_rate"), sign=False), _pct(ex.get("hit_rate"), sign=False)],
    ]
    return "".join(_note(t) for t in notes) + _grid(["", "live", f"expected ({source})"], rows, numeric=(1, 2))


def _drift_html(drift) -> str:
    if isinstance(drift, pl.DataFrame):  # monitor.feature_drift's frame, as it comes
        drift = drift.to_dicts()
    if not isinstance(drift, list | tuple) or not drift:
        return _note("No drift measured yet.")
    rows = [r for r in drift if isinstance(r, dict)]
    rows.sort(key=lambda r: -float(r["psi"]) if _finite(r.get("psi")) else math.inf)
    top = rows[:TOP_DRIFT]
    sig = sum(1 for r in rows if r.get("band") == "significant")
    caption = (f"Population stability index (PSI) of each feature, live against training; top {len(top)} of "
               f"{len(rows)}, {sig} significant (PSI ≥ 0.25 is usually called significant).")
    body = _grid(["feature", "PSI", "band"],
                 [[_text(r.get("feature")), _f(r.get("psi"), ".3f"), _text(r.get("band"))] for r in top],
                 classes=["sig" if r.get("band") == "significant" else "" for r in top], numeric=(1,))
    return _note(caption) + body


def _scope_html(s: dict) -> str:
    name = _text(s.get("scope"), "unnamed scope")
    version = s.get("version")
    title = f"{_esc(name)}" + (f" <span class='note'>features {_esc(version)}</span>" if version else "")
    plots, notes = scope_plots(s.get("daily"), s.get("expected"))
    figs = "".join(f"<h4>{_esc(t)}</h4>{_img(t, svg)}" for t, svg in plots)
    figs += "".join(_note(n) for n in notes)
    return (f"<section id='{_esc(name)}'><h2>{title}{_badge(s.get('status'))}</h2>"
            f"<h3>Active model</h3>{_model_html(s.get('model'))}"
            f"<h3>Status</h3>{_reasons_html(s.get('status'), s.get('reasons'))}"
            f"<h3>Live against expected</h3>{_live_table(s.get('live'), s.get('expected'))}{figs}"
            f"<h3>Feature drift</h3>{_drift_html(s.get('drift'))}</section>")


def _promoted(p) -> str:
    return "yes" if p is True else "no" if p is False else "n/a"


def _runs_html(runs) -> str:
    rows = [r for r in (runs or []) if isinstance(r, dict)]
    if not rows:
        return _note("No run recorded yet.")
    rows.sort(key=lambda r: str(r.get("created_at") or ""), reverse=True)  # ISO timestamps: text order is time
    top = rows[:MAX_RUNS]
    cells = [[_text(r.get("created_at")), _text(r.get("run_id")), _text(r.get("scope")),
              _text(r.get("feature_version")), _text(r.get("status")), _text(r.get("verdict")),
              _text(r.get("gate_outcome")), _promoted(r.get("promoted")), _text(r.get("reason"), "")]
             for r in top]
    more = f"Newest first, {len(top)} of {len(rows)}." if len(rows) > len(top) else "Newest first."
    return _note(more) + _grid(RUN_COLUMNS, cells)


def _summary_html(scopes: list[dict]) -> str:
    rows = []
    for s in scopes:
        m = s.get("model") if isinstance(s.get("model"), dict) else None
        model = "no active model" if not m else _text(m.get("run_id"))
        rows.append(f"<tr><td><a href='#{_esc(_text(s.get('scope'), 'unnamed scope'))}'>"
                    f"{_esc(_text(s.get('scope'), 'unnamed scope'))}</a></td><td>{_badge(s.get('status'))}</td>"
                    f"<td>{_esc(model)}</td></tr>")
    return f"<table><tr><th>scope</th><th>status</th><th>active model</th></tr>{''.join(rows)}</table>"


# ------------------------------------------------------------------ page
def render_index(scopes: list[dict], runs: list[dict], generated_at: str) -> str:
    """The dashboard page as one HTML string: a summary, one section per scope, the recent runs.

    Every key of a scope dict may be missing or None; what is missing is said in words. A scope
    with at least one live session in its ``daily`` frame gets two figures (equity, rolling rank
    IC); any other gets none."""
    scopes = [s for s in (scopes or []) if isinstance(s, dict)]
    body = (_summary_html(scopes) + "".join(_scope_html(s) for s in scopes) if scopes
            else _note("No scope yet: run retrain run to train a first model."))
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>retrain: active models</title>"
            f"<style>{STYLE}{DASH_STYLE}</style></head><body><h1>retrain: active models</h1>"
            f"<p class='note'>Generated {_esc(_text(generated_at, 'at an unknown time'))}. Paper figures are net of "
            f"costs; the expectation is the model's own out-of-sample record.</p>{body}"
            f"<section><h2>Recent runs</h2>{_runs_html(runs)}</section></body></html>")
