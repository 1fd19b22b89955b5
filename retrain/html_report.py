"""report.html: a self-contained page (plots embedded as SVG images, no scripts) that opens offline.

The page covers the whole out-of-sample record, with this run's backtest window marked inside it:
the verdict and its reason, the uncertainty figures (record against window), then the plots:
equity with a block-bootstrap band against the equal-weight universe, drawdown, mean return and
cumulative return by prediction quantile, the distribution of daily rank IC and its monthly means,
turnover of the top-N picks, feature importance; then the run, backtest and CV tables.
"""

from __future__ import annotations

import base64
import datetime as dt
import html
import io
import math

import numpy as np
import polars as pl

from retrain import metrics

BAND = (5.0, 95.0)  # percentiles of the bootstrap band around the equity curve
N_BOOT, BLOCK, SEED = 2000, 5, 0
MAX_BUCKETS = 5

# (key, title) of every plot, in page order
PLOTS = [
    ("equity", "Equity vs universe"),
    ("drawdown", "Drawdown"),
    ("quantile_mean", "Mean return by prediction quantile"),
    ("quantile_cum", "Cumulative return by prediction quantile"),
    ("ic_hist", "Daily rank IC"),
    ("ic_month", "Rank IC by month"),
    ("turnover", "Turnover of the top picks"),
    ("importance", "Feature importance"),
]


# ------------------------------------------------------------------ formatting
def _esc(x) -> str:
    return html.escape(str(x))


def _finite(x) -> bool:
    return isinstance(x, int | float | np.floating | np.integer) and not isinstance(x, bool) and math.isfinite(x)


def _f(x, spec: str = ".2f", none: str = "n/a") -> str:
    """``x`` formatted with ``spec``, or ``none`` for a missing, non-numeric or non-finite value."""
    return format(float(x), spec) if _finite(x) else none


def _ci(v, spec: str) -> str:
    """An interval ``[lo, hi]`` formatted with ``spec``, or '' when it is missing."""
    if isinstance(v, list | tuple) and len(v) == 2 and (_finite(v[0]) or _finite(v[1])):
        return f" [{_f(v[0], spec)}, {_f(v[1], spec)}]"
    return ""


def _with_ci(e: dict, key: str, spec: str) -> str:
    return _f(e.get(key), spec) + _ci(e.get(f"{key}_ci"), spec)


def _int(x) -> str:
    return f"{int(x):,}" if _finite(x) else "n/a"


# ------------------------------------------------------------------ computations
def _equity_band(returns: np.ndarray, bankroll: float) -> tuple[np.ndarray, np.ndarray]:
    """Percentile band per session of equity paths compounded from block-resampled daily returns."""
    idx = metrics.block_bootstrap_indices(len(returns), block=BLOCK, n_boot=N_BOOT, seed=SEED)
    paths = bankroll * np.cumprod(1.0 + returns[idx], axis=1)
    lo, hi = np.percentile(paths, BAND, axis=0)
    return lo, hi


def _clean_predictions(predictions: pl.DataFrame) -> pl.DataFrame:
    need = {"trade_date", "predicted", "actual"}
    if predictions is None or not need <= set(predictions.columns):
        return pl.DataFrame(schema={"trade_date": pl.Date, "symbol": pl.String, "predicted": pl.Float64,
                                    "actual": pl.Float64})
    cols = [c for c in ("trade_date", "symbol", "exchange", "predicted", "actual") if c in predictions.columns]
    p = predictions.select(cols).drop_nulls(["trade_date", "predicted", "actual"])
    p = p.with_columns(pl.col("predicted").cast(pl.Float64), pl.col("actual").cast(pl.Float64))
    p = p.filter(pl.col("predicted").is_finite() & pl.col("actual").is_finite())
    order = ["trade_date"] + [c for c in ("exchange", "symbol") if c in cols]
    return p.sort(order)


def quantile_returns(p: pl.DataFrame) -> tuple[int, pl.DataFrame]:
    """(k, frame of trade_date, bucket, mean actual): per session, rows split into ``k`` equal
    buckets by rank of ``predicted`` (1 = lowest), ``k = min(5, symbols in a typical session)``.
    Sessions with fewer than ``k`` rows are left out. ``k`` < 2 means no quantile analysis."""
    empty = pl.DataFrame(schema={"trade_date": pl.Date, "bucket": pl.Int64, "mean": pl.Float64})
    if p.is_empty():
        return 0, empty
    sizes = p.group_by("trade_date").len()["len"]
    k = int(min(MAX_BUCKETS, int(sizes.median())))
    if k < 2:
        return k, empty
    q = (p.with_columns(pl.len().over("trade_date").alias("_n"),
                        pl.col("predicted").rank("ordinal").over("trade_date").alias("_r"))
         .filter(pl.col("_n") >= k)
         .with_columns((((pl.col("_r") - 1) * k) // pl.col("_n") + 1).cast(pl.Int64).alias("bucket")))
    out = q.group_by("trade_date", "bucket").agg(pl.col("actual").mean().alias("mean")).sort("trade_date", "bucket")
    return k, out


def daily_rank_ic(p: pl.DataFrame) -> pl.DataFrame:
    """trade_date, ic: Spearman correlation of predicted with actual per session (sessions with
    fewer than two rows or no spread are left out)."""
    schema = {"trade_date": pl.Date, "ic": pl.Float64}
    if p.is_empty():
        return pl.DataFrame(schema=schema)
    days, ics = metrics.session_ic(p["trade_date"].to_numpy(), p["actual"].to_numpy(), p["predicted"].to_numpy(),
                                   rank=True)
    kept = np.isfinite(ics)
    return pl.DataFrame({"trade_date": days[kept], "ic": ics[kept]}, schema=schema)


def turnover(trades: pl.DataFrame, sessions: list[dt.date]) -> tuple[list[dt.date], list[float]]:
    """Per session after the first, the share of its picks that were not picked the session before
    (sessions without picks are left out)."""
    if trades is None or trades.is_empty() or "date" not in trades.columns or "symbol" not in trades.columns:
        return [], []
    key = ["symbol", "exchange"] if "exchange" in trades.columns else ["symbol"]
    tag = pl.concat_str([pl.col(c).cast(pl.String).fill_null("") for c in key], separator="\x1f")
    per_day = trades.group_by("date").agg(tag.alias("k"))
    picks = dict(zip(per_day["date"].to_list(), map(set, per_day["k"].to_list())))
    days, values, prev = [], [], None
    for d in sessions:
        now = picks.get(d, set())
        if prev is not None and now:
            days.append(d)
            values.append(len(now - prev) / len(now))
        prev = now
    return days, values


# ------------------------------------------------------------------ plots
IMAGE_TYPE = "image/svg+xml"  # vector: sharp at any zoom, smaller, and about a third faster to draw than PNG


def _image(fig) -> str:
    """The figure as SVG (base64), the same bytes for the same figure: no date stamp, fixed ids."""
    from matplotlib import rc_context

    buf = io.BytesIO()
    # Text stays text, in the viewer's sans-serif (DejaVu Sans first, as laid out): turning every
    # glyph into a path cost a third of the drawing (0.3 s of a weekly run) and 60% of the bytes.
    with rc_context({"svg.hashsalt": "retrain", "svg.fonttype": "none"}):
        # fixed margins: a tight bbox would draw every figure twice
        fig.savefig(buf, format="svg", metadata={"Date": None})
    fig.clear()
    return base64.b64encode(buf.getvalue()).decode()


def _figure(height: float, left: float = 0.9, bottom: float = 0.6):
    """A figure 9 inches wide with fixed margins (inches) and one axes. Built outside pyplot on
    the Agg canvas, so nothing global is left open; ``_image`` clears it."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(9, height))
    fig.subplots_adjust(left=left / 9, right=1 - 0.2 / 9, top=1 - 0.4 / height, bottom=bottom / height)
    return fig, fig.subplots()


def _shade(ax, window) -> None:
    """Shade this run's window, half a day beyond its first and last session (so one session shows)."""
    if window:
        half = dt.timedelta(hours=12)
        lo, hi = (dt.datetime.combine(d, dt.time()) for d in window)
        ax.axvspan(lo - half, hi + half, color="tab:orange", alpha=0.12, label="this run's window")


def _time_plot(fig, ax, title: str, ylabel: str, legend: bool = False) -> str:
    """Label, grid and title a plot over dates, and return it as an image (base64)."""
    from matplotlib import dates as mdates

    lo, hi = ax.get_xlim()
    if hi - lo < 20:  # a short record: one tick per day, not hours
        ax.xaxis.set_major_locator(mdates.DayLocator(interval=max(1, int(hi - lo) // 8)))
    ax.xaxis.set_major_formatter(mdates.DateFormatter("%Y-%m-%d"))
    ax.set_ylabel(ylabel)
    if legend:
        ax.legend(loc="upper left", fontsize=8)
    ax.grid(alpha=0.3)
    ax.set_title(title, y=1.0)
    fig.autofmt_xdate(bottom=0.75 / fig.get_figheight())
    return _image(fig)


def _plots(daily: pl.DataFrame, universe: pl.DataFrame, p: pl.DataFrame, trades: pl.DataFrame, window,
           bankroll: float) -> tuple[dict[str, str], dict[str, str]]:
    """(plots, notes) of the record, every plot but the feature importance: base64 image per plot
    key, or a note saying why a plot is missing."""
    out: dict[str, str] = {}
    notes: dict[str, str] = {}
    d = daily.sort("date")
    if universe is not None and {"trade_date", "universe_return"} <= set(universe.columns):
        d = d.join(universe.select("trade_date", "universe_return").rename({"trade_date": "date"}),
                   on="date", how="left")
    else:
        d = d.with_columns(pl.lit(None, pl.Float64).alias("universe_return"))
    dates = d["date"].to_list()
    marker = "o" if len(dates) < 20 else None

    if d.is_empty():
        notes["equity"] = notes["drawdown"] = "The record has no sessions."
    else:
        equity = d["equity"].cast(pl.Float64).fill_null(bankroll).to_numpy()
        r = d["daily_return"].cast(pl.Float64).fill_nan(0.0).fill_null(0.0).to_numpy()
        bench = bankroll * np.cumprod(1.0 + np.nan_to_num(d["universe_return"].cast(pl.Float64).to_numpy()))
        lo, hi = _equity_band(r, bankroll)
        fig, ax = _figure(3.4)
        ax.fill_between(dates, lo, hi, color="tab:blue", alpha=0.18,
                        label=f"{BAND[1] - BAND[0]:.0f}% band, block bootstrap of sessions")
        ax.plot(dates, equity, label="strategy (after costs)", marker=marker)
        ax.plot(dates, bench, label="equal-weight universe, open to close", linestyle="--", marker=marker)
        _shade(ax, window)
        ax.yaxis.set_major_formatter(lambda v, _: f"{v:,.0f}")
        out["equity"] = _time_plot(fig, ax, "Equity over the out-of-sample record", "equity ($)", legend=True)

        full = np.concatenate([[bankroll], equity])
        dd = 1.0 - full / np.maximum.accumulate(full)
        fig, ax = _figure(2.4)
        ax.fill_between(dates, -dd[1:] * 100, 0, color="tab:red", alpha=0.4)
        _shade(ax, window)
        out["drawdown"] = _time_plot(fig, ax, "Drawdown", "drawdown (%)")

    k, q = quantile_returns(p)
    if k < 2 or q.is_empty():
        notes["quantile_mean"] = notes["quantile_cum"] = "Too few symbols per session to split by prediction."
    else:
        per = q.group_by("bucket").agg(pl.col("mean").mean()).sort("bucket")
        buckets, means = per["bucket"].to_list(), per["mean"].to_numpy() * 1e4
        fig, ax = _figure(2.8)
        ax.bar(range(len(buckets)), means, color=["tab:green" if m > 0 else "tab:red" for m in means])
        ax.set_xticks(range(len(buckets)), [str(b) for b in buckets])
        ax.axhline(0, color="black", linewidth=0.8)
        spread = means[-1] - means[0]
        ax.set_xlabel(f"prediction bucket (1 = lowest of {k}, ranked within each session)")
        ax.set_ylabel("mean return (bps)")
        ax.grid(alpha=0.3, axis="y")
        ax.set_title(f"Mean open-to-close return by prediction bucket (top − bottom: {spread:+.1f} bps)", y=1.0)
        out["quantile_mean"] = _image(fig)

        wide = q.pivot(on="bucket", index="trade_date", values="mean").sort("trade_date")
        qdates = wide["trade_date"].to_list()
        fig, ax = _figure(3.2)
        palette = ["#d62728", "#ff7f0e", "#7f7f7f", "#8fbc3f", "#2ca02c"]  # lowest red ... highest green
        colors = [palette[int(i)] for i in np.linspace(0, len(palette) - 1, k).round()]
        for b, color in zip(range(1, k + 1), colors):
            col = str(b)
            if col not in wide.columns:
                continue
            path = np.cumprod(1.0 + np.nan_to_num(wide[col].to_numpy().astype(float))) - 1.0
            ax.plot(qdates, path * 100, label=f"bucket {b}", color=color, marker="o" if len(qdates) < 20 else None)
        _shade(ax, window)
        out["quantile_cum"] = _time_plot(fig, ax, "Cumulative return by prediction bucket (equal weight, no costs)",
                                         "cumulative return (%)", legend=True)

    ic = daily_rank_ic(p)
    vals = ic["ic"].to_numpy()
    if len(vals) == 0:
        notes["ic_hist"] = notes["ic_month"] = "No session with enough predictions for a rank IC."
    else:
        mean = float(vals.mean())
        sd = float(vals.std(ddof=1)) if len(vals) > 1 else float("nan")
        t = mean / sd * math.sqrt(len(vals)) if _finite(sd) and sd > 0 else float("nan")
        fig, ax = _figure(2.8)
        ax.hist(vals, bins=int(min(40, max(5, len(vals) // 4))), color="tab:blue", alpha=0.7)
        ax.axvline(mean, color="black", linewidth=1.2, label=f"mean {mean:+.4f}, t = {_f(t)}")
        ax.axvline(0, color="gray", linewidth=0.8, linestyle=":")
        ax.set_xlabel("rank IC of the session (Spearman, predicted vs open-to-close return)")
        ax.set_ylabel("sessions")
        ax.legend(loc="upper left", fontsize=8)
        ax.grid(alpha=0.3)
        ax.set_title(f"Daily rank IC: mean {mean:+.4f}, t = {_f(t)} over {len(vals)} sessions", y=1.0)
        out["ic_hist"] = _image(fig)

        monthly = (ic.with_columns(pl.col("trade_date").dt.truncate("1mo").alias("month"))
                   .group_by("month").agg(pl.col("ic").mean()).sort("month"))
        labels, mvals = [m.strftime("%Y-%m") for m in monthly["month"].to_list()], monthly["ic"].to_numpy()
        fig, ax = _figure(2.8, bottom=0.9 if len(labels) > 8 else 0.4)
        ax.bar(range(len(labels)), mvals, color=["tab:green" if v > 0 else "tab:red" for v in mvals])
        ax.set_xticks(range(len(labels)), labels)
        ax.axhline(0, color="black", linewidth=0.8)
        ax.set_ylabel("mean rank IC")
        ax.grid(alpha=0.3, axis="y")
        ax.set_title("Rank IC by month (mean of the daily rank IC)", y=1.0)
        if len(labels) > 8:
            ax.tick_params(axis="x", labelrotation=60, labelsize=7)
        out["ic_month"] = _image(fig)

    tdays, tvals = turnover(trades, dates)
    if not tdays:
        notes["turnover"] = "Fewer than two sessions with picks."
    else:
        fig, ax = _figure(2.4)
        ax.plot(tdays, np.asarray(tvals) * 100, marker="o" if len(tdays) < 20 else None)
        ax.set_ylim(-2, 102)
        _shade(ax, window)
        out["turnover"] = _time_plot(fig, ax, f"Turnover of the top picks: mean {np.mean(tvals):.0%} of picks new "
                                     "each session", "new picks (%)")
    return out, notes


def _importance_plot(importance: list[tuple[str, float]]) -> tuple[str | None, str]:
    """(base64 image, '') of the top 20 features by gain, or (None, why not)."""
    top = [(str(n), float(v)) for n, v in (importance or [])[:20]][::-1]
    if not top:
        return None, "No feature importance."
    width = max(len(n) for n, _ in top)
    fig, ax = _figure(max(2.5, 0.28 * len(top) + 1.0), left=min(4.0, 0.35 + 0.085 * width))
    ax.barh([n for n, _ in top], [v for _, v in top])
    ax.set_xlabel("total gain")
    ax.set_title("Feature importance (gain), final model", y=1.0)
    return _image(fig), ""


# ------------------------------------------------------------------ tables
def _table(rows: list[tuple[str, str]]) -> str:
    body = "".join(f"<tr><th>{_esc(k)}</th><td>{_esc(v)}</td></tr>" for k, v in rows)
    return f"<table>{body}</table>"


def _cost(e: dict) -> str:
    """Net total return at 0x, 1x and 2x the trading costs, and the break-even cost per side."""
    c = e.get("cost")
    if not isinstance(c, dict) or not c:
        return "n/a"
    parts = [f"{_f(c[m], '+.2%')} at {m[:-1]}×" for m in ("0x", "1x", "2x") if m in c]
    be = c.get("break_even_bps")
    if be is not None:
        be_text = "n/a" if not _finite(be) else "none (it loses before costs)" if be <= 0 else f"{be:.1f} bps per side"
        parts.append(f"break-even {be_text}")
    return "; ".join(parts) or "n/a"


def _track(e: dict) -> str:
    m = e.get("min_track_record")
    if isinstance(m, int | float) and m == math.inf:
        return "never at this Sharpe (it is not above 0)"
    return f"{_int(m)} sessions" if _finite(m) else "n/a"


def _blocks(e: dict) -> str:
    if not _finite(e.get("blocks")):
        return "n/a"
    extra = [f"{_int(e[k])} {w}" for k, w in (("blocks_reused", "reused"), ("blocks_trained", "trained"))
             if _finite(e.get(k))]
    return _int(e["blocks"]) + (f" ({', '.join(extra)})" if extra else "")


def _evidence_rows(e: dict) -> list[str]:
    """One cell per uncertainty figure of an evidence dict, in the order of ``EVIDENCE``."""
    ic = _f(e.get("rank_ic"), "+.4f")
    if _finite(e.get("rank_ic_se")):
        ic += f" ± {_f(e['rank_ic_se'], '.4f')} (SE)"
    if _finite(e.get("rank_ic_t")):
        ic += f", t = {_f(e['rank_ic_t'])}"
    sharpe = _with_ci(e, "sharpe", "+.2f")
    if _finite(e.get("sharpe")) and _finite(e.get("sharpe_se")):
        sharpe += f", SE {_f(e['sharpe_se'])}"
    period = "n/a"
    if e.get("start") or e.get("end") or _finite(e.get("sessions")):
        period = f"{e.get('start', '?')} to {e.get('end', '?')} ({_int(e.get('sessions'))} sessions)"
    more = e.get("more_sessions")
    return [
        period,
        sharpe,
        _f(e.get("psr"), ".1%"),
        _with_ci(e, "total_return", "+.2%"),
        _with_ci(e, "excess_return", "+.2%"),
        ic,
        _with_ci(e, "hit_rate", ".1%"),
        _track(e),
        f"{_int(more)}" if _finite(more) else "n/a",
        _cost(e),
        _blocks(e),
        str(e.get("verdict") or "n/a"),
    ]


EVIDENCE = ["period", "Sharpe (annualized) [interval], SE", "probabilistic Sharpe ratio (P(true Sharpe > 0))",
            "total return [interval]", "excess over the universe [interval]", "mean daily rank IC ± SE, t",
            "hit rate: sessions that beat the universe [interval]",
            "track record for 95% confidence that the Sharpe is above 0", "more sessions that would settle it",
            "net of costs", "walk-forward blocks", "verdict"]


def _evidence_table(record: dict, window: dict) -> str:
    rec, win = _evidence_rows(record), _evidence_rows(window)
    head = ("<tr><th>brackets: 90% intervals</th><th>whole out-of-sample record</th>"
            "<th>this run's window</th></tr>")
    body = "".join(f"<tr><th>{_esc(k)}</th><td>{_esc(a)}</td><td>{_esc(b)}</td></tr>"
                   for k, a, b in zip(EVIDENCE, rec, win))
    return f"<table class='e'>{head}{body}</table>"


def _cv_rows(meta: dict) -> list[tuple[str, str]]:
    cv = (meta.get("cv") or {}).get("summary") or {}

    def pm(k: str, pct: bool = False) -> str:
        s = cv.get(k) or {}
        m, sd = s.get("mean"), s.get("std")
        return f"{_f(m, '+.2%')} ± {_f(sd, '.2%')}" if pct else f"{_f(m, '+.4f')} ± {_f(sd, '.4f')}"

    top = (meta.get("cv") or {}).get("top_n", "N")
    return [("R²", pm("r2")), ("MAE", pm("mae")), ("IC", pm("ic")), ("rank IC", pm("rank_ic")),
            ("ICIR", pm("icir")), ("hit rate", pm("hit_rate", True)), (f"top {top} − universe", pm("top_n_spread", True))]


def _backtest_rows(b: dict, bankroll: float) -> list[tuple[str, str]]:
    c = b.get("config") or {}
    cfg = ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in c.items() if k != "bankroll" and v is not None)
    return [("sessions", f"{b.get('start', '?')} to {b.get('end', '?')} ({_int(b.get('sessions'))})"),
            ("starting capital", f"${_f(bankroll, ',.2f')}"),
            ("total return", _f(b.get("total_return"), ".2%")), ("max drawdown", _f(b.get("max_drawdown"), ".2%")),
            ("Sharpe (daily × √252)", _f(b.get("sharpe"))), ("win rate", _f(b.get("win_rate"), ".2%")),
            ("universe return (equal weight, open to close)", _f(b.get("universe_return"), ".2%")),
            ("excess over universe", _f(b.get("excess_return"), "+.2%")), ("rank IC", _f(b.get("rank_ic"), "+.4f")),
            ("verdict (judged on the whole record)", str(b.get("verdict") or "n/a")), ("settings", cfg or "n/a")]


def _run_rows(meta: dict) -> list[tuple[str, str]]:
    tw = meta.get("training_window") or {}
    return [("run", str(meta.get("run_id", "n/a"))), ("feature version", str(meta.get("feature_version", "n/a"))),
            ("scope", str(meta.get("scope", "n/a"))),
            ("training window", f"{tw.get('start', '?')} to {tw.get('end', '?')} ({_int(tw.get('sessions'))} sessions)"),
            ("samples", _int(meta.get("rows"))), ("features", str(len(meta.get("feature_columns") or []))),
            ("target", str(meta.get("target", "n/a"))), ("created", str(meta.get("created_at", "n/a")))]


# ------------------------------------------------------------------ page
STYLE = ("body{font-family:system-ui,sans-serif;max-width:1000px;margin:2em auto;color:#222}"
         "table{border-collapse:collapse;margin:0.5em 0 1.5em}th,td{padding:3px 12px;border-bottom:1px solid #ddd;"
         "text-align:left;vertical-align:top}th{font-weight:600}img{max-width:100%}"
         ".v{font-size:1.4em;font-weight:700;margin-bottom:0.2em}.r{margin-top:0}.note{color:#777}"
         ".w{color:#a60}")


def _verdict_html(meta: dict, b: dict, evidence: dict, record: dict, window) -> str:
    """The verdict (judged on the whole record, as the backtest does) with its reason in words,
    the window's own verdict if it has one, what would settle an open case, warnings, the gate."""
    verdict = record.get("verdict") or b.get("verdict") or evidence.get("verdict") or "n/a"
    reason = record.get("reason") or b.get("verdict_reason") or evidence.get("reason")
    if record.get("start") or record.get("sessions"):
        basis = (f"judged on the whole out-of-sample record, {record.get('start', '?')} to {record.get('end', '?')}"
                 f" ({_int(record.get('sessions'))} sessions)")
    else:
        basis = "judged on the backtest"
    out = [f"<p class='v'>Verdict: {_esc(verdict)}</p><p class='r'>{_esc(basis)}"
           + (f": {_esc(reason)}" if reason else "") + "</p>"]
    if window:
        w = f"{window[0]} to {window[1]}"
        if evidence.get("verdict"):
            out.append(f"<p>This run's window ({_esc(w)}): <b>{_esc(evidence['verdict'])}</b>"
                       + (f": {_esc(evidence['reason'])}" if evidence.get("reason") else "") + "</p>")
    more = record.get("more_sessions")
    if _finite(more) and more > 0:
        out.append(f"<p>What would settle it: about {_int(more)} more session(s) at the figures seen so far.</p>")
    warnings = record.get("warnings") or []
    if isinstance(warnings, list | tuple) and warnings:
        out.append("<ul class='w'>" + "".join(f"<li>{_esc(w)}</li>" for w in warnings) + "</ul>")
    gate = meta.get("gate") or {}
    if isinstance(gate, dict) and gate.get("reason"):
        out.append(f"<p><b>Promotion gate:</b> {_esc(gate['reason'])}</p>")
    return "".join(out)


def render(meta: dict, daily: pl.DataFrame, universe: pl.DataFrame, predictions: pl.DataFrame,
           trades: pl.DataFrame, importance: list[tuple[str, float]], window: tuple[dt.date, dt.date],
           drawn: tuple[dict, dict] | None = None) -> str:
    """The report page as one HTML string. The frames cover the whole out-of-sample record;
    ``window`` is this run's backtest window inside it. ``drawn``: ``draw`` of the same meta,
    frames and window, when the caller drew the record's plots already (while the final model
    was still being fitted: they do not depend on it)."""
    run_id = str((meta or {}).get("run_id", "run"))
    return page(f"retrain report {run_id}", body(meta, daily, universe, predictions, trades, importance, window,
                                                  drawn=drawn))


def _bankroll(meta: dict) -> float:
    bankroll = (((meta or {}).get("backtest") or {}).get("config") or {}).get("bankroll")
    return float(bankroll) if _finite(bankroll) and bankroll > 0 else 10_000.0


def _daily(daily: pl.DataFrame | None) -> pl.DataFrame:
    if daily is None or not {"date", "equity", "daily_return"} <= set(daily.columns):
        return pl.DataFrame(schema={"date": pl.Date, "equity": pl.Float64, "daily_return": pl.Float64})
    return daily


def draw(meta: dict, daily: pl.DataFrame, universe: pl.DataFrame, predictions: pl.DataFrame, trades: pl.DataFrame,
         window: tuple[dt.date, dt.date] | None) -> tuple[dict[str, str], dict[str, str]]:
    """The record's plots (every plot of the page but the feature importance) as ``render``
    draws them: (base64 image per plot key, a note per missing one)."""
    return _plots(_daily(daily), universe, _clean_predictions(predictions), trades, window, _bankroll(meta))


def page(title: str, content: str) -> str:
    """A self-contained HTML page around ``content``, in the report's style."""
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{_esc(title)}</title>"
            f"<style>{STYLE}</style></head><body>{content}</body></html>")


def body(meta: dict, daily: pl.DataFrame, universe: pl.DataFrame, predictions: pl.DataFrame,
         trades: pl.DataFrame, importance: list[tuple[str, float]], window: tuple[dt.date, dt.date] | None,
         cv: bool = True, about: list[tuple[str, str]] | None = None, drawn: tuple[dict, dict] | None = None) -> str:
    """The tear sheet of ``render`` without its page: for a page that shows it among other
    things (the best trial of a sweep: ``window`` None, the record is the window; ``cv`` False,
    no cross-validation table; ``about``: the rows of the "Run" table instead of the run's)."""
    meta = meta or {}
    b = meta.get("backtest") or {}
    evidence = b.get("evidence") or {}
    record = meta.get("record") or {}
    bankroll = _bankroll(meta)
    plots, notes = drawn or draw(meta, daily, universe, predictions, trades, window)
    plots, notes = dict(plots), dict(notes)
    image, why = _importance_plot(importance)
    if image is None:
        notes["importance"] = why
    else:
        plots["importance"] = image

    run_id = str(meta.get("run_id", "run"))
    top = _verdict_html(meta, b, evidence, record, window)
    sections = []
    for key, title in PLOTS:
        body_ = (f'<img alt="{_esc(title)}" src="data:{IMAGE_TYPE};base64,{plots[key]}">' if key in plots
                 else f"<p class='note'>{_esc(notes.get(key, 'Not enough data.'))}</p>")
        sections.append(f"<h2>{_esc(title)}</h2>{body_}")
    shaded = ("<p class='note'>The shaded span is this run's backtest window; the rest is the routine's "
              "earlier out-of-sample blocks, kept from earlier runs or trained now.</p>" if window else "")
    return (f"<h1>retrain: {_esc(run_id)}</h1>{top}"
            f"<h2>Uncertainty: whole record vs this window</h2>{_evidence_table(record, evidence)}"
            f"<h2>Run</h2>{_table(about or _run_rows(meta))}{shaded}{''.join(sections)}"
            f"<h2>Backtest (walk-forward, out of sample, this window)</h2>{_table(_backtest_rows(b, bankroll))}"
            + (f"<h2>Cross-validation (walk-forward by session, out of sample)</h2>{_table(_cv_rows(meta))}"
               if cv else ""))
