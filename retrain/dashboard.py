"""index.html: the dashboard of the active models, one offline page (plots embedded as PNG, no scripts).

Show layer: results in, HTML text out. The caller (``retrain run``, ``predict``, ``monitor``)
gathers the figures and writes the file; nothing here reads or writes a file.

One section per scope: the active model, the monitor's status with each reason and its action,
the live record against its expectation (a table, then two plots split into backtest and live
as pyfolio does: paper equity, and the rolling rank IC inside its expected band), and the
feature drift. Then the recent runs of all scopes. A scope without a scored live session gets
no plots, so a page is cheap to rewrite after every ``predict``.
"""

from __future__ import annotations

import datetime as dt
import math

import numpy as np
import polars as pl

from retrain.html_report import STYLE, _esc, _f, _figure, _finite, _int, _table, _time_plot

WINDOW = 20  # sessions of the rolling rank IC (fewer when the record has fewer)
Z = 1.96  # two-sided 95% normal quantile of the expected band
TOP_DRIFT = 10
MAX_RUNS = 15
HEIGHT = 2.6  # inches; figures are 9 inches wide (html_report._figure), dpi 100
COLORS = {"backtest": "tab:blue", "live": "tab:orange"}
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


def _img(alt: str, png: str) -> str:
    return f'<img alt="{_esc(alt)}" src="data:image/png;base64,{png}">'


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
def _split(ax, dates: list, values: np.ndarray, boundary: int) -> None:
    """Plot ``values`` as backtest then live in two colours (the live line starts at the last
    backtest point, so the curve is continuous), with a vertical line at the first live session."""
    marker = "o" if len(dates) < 20 else None
    if boundary > 0:
        ax.plot(dates[:boundary], values[:boundary], color=COLORS["backtest"], label="backtest", marker=marker)
    start = max(0, boundary - 1)
    ax.plot(dates[start:], values[start:], color=COLORS["live"], label="live", marker=marker)
    ax.axvline(dates[boundary], color="black", linestyle="--", linewidth=0.9,
               label=f"live since {dates[boundary]}")
    pad = (dates[-1] - dates[0]) * 0.02 or dt.timedelta(days=1)
    ax.set_xlim(dates[0] - pad, dates[-1] + pad)  # the same span on both plots, NaN ends included
    ax.legend(loc="upper left", fontsize=7, ncol=4, framealpha=0.85)


def _equity_plot(d: pl.DataFrame, dates: list, boundary: int, live: np.ndarray) -> tuple[str | None, str]:
    r = _column(d, "net_return")
    if r is None or not np.isfinite(r).any():
        return None, "No net returns in the daily record, so no equity plot."
    r = np.nan_to_num(r)
    equity = np.cumprod(1.0 + r)
    bt = float(equity[boundary - 1]) if boundary > 0 else 1.0
    live_ret = float(equity[-1] / bt - 1.0)
    fig, ax = _figure(HEIGHT)
    _split(ax, dates, equity, boundary)
    ax.axhline(1.0, color="gray", linewidth=0.8, linestyle=":")
    title = (f"Paper equity (net, start = 1): backtest {_pct(bt - 1.0)}, live {_pct(live_ret)} "
             f"over {int(live.sum())} session(s)")
    return _time_plot(fig, ax, title, "equity"), ""


def _ic_plot(d: pl.DataFrame, dates: list, boundary: int, live: np.ndarray,
             expected: dict | None) -> tuple[str | None, str]:
    ic = _column(d, "rank_ic")
    if ic is None or not np.isfinite(ic).any():
        return None, "No daily rank IC in the record, so no rank IC plot."
    window = max(1, min(WINDOW, len(ic)))
    roll = rolling_mean(ic, window)
    fig, ax = _figure(HEIGHT)
    band = expected_band(expected, window)
    if band is not None:
        mean, lo, hi = band
        ax.axhspan(lo, hi, color="tab:green", alpha=0.15, label=f"expected {mean:+.4f} ± 1.96·σ/√{window}")
        ax.axhline(mean, color="tab:green", linewidth=0.9)
    _split(ax, dates, roll, boundary)
    ax.axhline(0, color="gray", linewidth=0.8, linestyle=":")
    live_mean = float(np.nanmean(ic[boundary:])) if np.isfinite(ic[boundary:]).any() else float("nan")
    title = f"Rolling rank IC ({window} session{'s' * (window != 1)}): live mean {_ic(live_mean)}"
    title += "" if band is not None else " (no expected band: the expectation lacks its mean or std)"
    return _time_plot(fig, ax, title, "rank IC"), ""


def scope_plots(daily, expected: dict | None) -> tuple[list[tuple[str, str]], list[str]]:
    """([(title, base64 PNG)], notes): at most two figures, none without a scored live session."""
    d, why = _daily_frame(daily)
    if d is None:
        return [], [why]
    live = (d["phase"] == "live").to_numpy()
    boundary = int(np.argmax(live))  # first live session; backtest rows before it
    dates = d["trade_date"].to_list()
    out, notes = [], []
    for title, (png, note) in (("Paper equity, backtest then live", _equity_plot(d, dates, boundary, live)),
                               ("Rolling rank IC against its expected band",
                                _ic_plot(d, dates, boundary, live, expected))):
        if png is not None:
            out.append((title, png))
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
    figs = "".join(f"<h4>{_esc(t)}</h4>{_img(t, png)}" for t, png in plots)
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
