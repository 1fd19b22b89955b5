"""report.html: a self-contained page (plots embedded as PNG) that opens offline.

Plots: equity against the equal-weight universe, drawdown, daily rank IC of the out-of-sample
predictions, and feature importance (gain); then the metric tables.
"""

from __future__ import annotations

import base64
import html
import io

import numpy as np
import polars as pl

from retrain import metrics


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()


def _time_plot(fig, ax, title: str, ylabel: str, legend: bool = False) -> str:
    """Label, grid and title a plot over dates, and return it as PNG (base64)."""
    ax.set_ylabel(ylabel)
    if legend:
        ax.legend(loc="best")
    ax.grid(alpha=0.3)
    ax.set_title(title)
    fig.autofmt_xdate()
    return _png(fig)


def _plots(daily: pl.DataFrame, universe: pl.DataFrame, predictions: pl.DataFrame, importance: list[tuple[str, float]],
           bankroll: float) -> dict[str, str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = {}
    d = daily.join(universe.rename({"trade_date": "date"}), on="date", how="left").sort("date")
    dates = d["date"].to_list()
    equity = d["equity"].to_numpy()
    bench = bankroll * np.cumprod(1.0 + d["universe_return"].fill_null(0.0).to_numpy())
    fig, ax = plt.subplots(figsize=(9, 3.2))
    ax.plot(dates, equity, label="strategy (after costs)")
    ax.plot(dates, bench, label="equal-weight universe, open to close", linestyle="--")
    out["equity"] = _time_plot(fig, ax, "Equity", "equity ($)", legend=True)

    full = np.concatenate([[bankroll], equity])
    dd = 1.0 - full / np.maximum.accumulate(full)
    fig, ax = plt.subplots(figsize=(9, 2.4))
    ax.fill_between(dates, -dd[1:] * 100, 0, color="tab:red", alpha=0.4)
    out["drawdown"] = _time_plot(fig, ax, "Drawdown", "drawdown (%)")

    p = predictions.drop_nulls(["actual", "predicted"]).sort("trade_date")
    days = sorted(p["trade_date"].unique().to_list())
    ics = [metrics.daily_ic(np.zeros(g.height), g["actual"].to_numpy(), g["predicted"].to_numpy(), rank=True)
           for g in p.partition_by("trade_date", maintain_order=True)]
    values = [float(v[0]) if len(v) else np.nan for v in ics]
    fig, ax = plt.subplots(figsize=(9, 2.6))
    ax.bar(days, values, color=["tab:green" if v > 0 else "tab:red" for v in np.nan_to_num(values)])
    ax.axhline(float(np.nanmean(values)) if values else 0.0, color="black", linewidth=1, label="mean")
    out["rank_ic"] = _time_plot(fig, ax, "Daily rank IC (out of sample)", "rank IC", legend=True)

    top = importance[:20][::-1]
    fig, ax = plt.subplots(figsize=(9, max(2.5, 0.28 * len(top))))
    ax.barh([n for n, _ in top], [v for _, v in top])
    ax.set_xlabel("total gain")
    ax.set_title("Feature importance (gain), final model")
    out["importance"] = _png(fig)
    return out


def _table(rows: list[tuple[str, str]]) -> str:
    body = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>" for k, v in rows)
    return f"<table>{body}</table>"


def render(meta: dict, summary: dict, verdict: str, daily: pl.DataFrame, universe: pl.DataFrame,
           predictions: pl.DataFrame, importance: list[tuple[str, float]]) -> str:
    """The report page as one HTML string."""
    plots = _plots(daily, universe, predictions, importance, summary["starting_capital"])
    cv = meta["cv"]["summary"]

    def pm(k: str, pct: bool = False) -> str:
        m, s = cv[k]["mean"], cv[k]["std"]
        return f"{m:+.2%} ± {s:.2%}" if pct else f"{m:+.4f} ± {s:.4f}"

    cv_rows = [("R²", pm("r2")), ("MAE", pm("mae")), ("IC", pm("ic")), ("rank IC", pm("rank_ic")),
               ("ICIR", pm("icir")), ("hit rate", pm("hit_rate", True)),
               (f"top {meta['cv']['top_n']} − universe", pm("top_n_spread", True))]
    bt_rows = [("sessions", f"{summary['start']} to {summary['end']} ({summary['sessions']})"),
               ("starting capital", f"${summary['starting_capital']:,.2f}"),
               ("ending capital", f"${summary['ending_capital']:,.2f}"), ("profit", f"${summary['profit']:,.2f}"),
               ("total return", f"{summary['total_return']:.2%}"), ("annualized return", f"{summary['annualized_return']:.2%}"),
               ("max drawdown", f"{summary['max_drawdown']:.2%}"), ("Sharpe (daily × √252)", f"{summary['sharpe']:.2f}"),
               ("win rate", f"{summary['win_rate']:.2%}"), ("total trades", f"{summary['total_trades']:,}"),
               ("universe return (equal weight, open to close)", f"{summary['universe_return']:.2%}"),
               ("excess over universe", f"{summary['excess_return']:+.2%}"), ("verdict", verdict)]
    tw = meta["training_window"]
    run_rows = [("run", meta["run_id"]), ("feature version", meta["feature_version"]), ("scope", meta["scope"]),
                ("training window", f"{tw['start']} to {tw['end']} ({tw['sessions']} sessions)"),
                ("samples", f"{meta['rows']:,}"), ("features", str(len(meta["feature_columns"]))),
                ("target", meta["target"]), ("created", meta["created_at"])]
    imgs = "".join(f'<h2>{t}</h2><img alt="{t}" src="data:image/png;base64,{plots[k]}">' for k, t in
                   [("equity", "Equity vs universe"), ("drawdown", "Drawdown"), ("rank_ic", "Daily rank IC"),
                    ("importance", "Feature importance")])
    style = ("body{font-family:system-ui,sans-serif;max-width:1000px;margin:2em auto;color:#222}"
             "table{border-collapse:collapse;margin:0.5em 0 1.5em}th,td{padding:3px 12px;border-bottom:1px solid #ddd;"
             "text-align:left}th{font-weight:600}img{max-width:100%}.v{font-size:1.4em;font-weight:700}")
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>retrain report {html.escape(meta['run_id'])}"
            f"</title><style>{style}</style></head><body><h1>retrain: {html.escape(meta['run_id'])}</h1>"
            f"<p class='v'>Backtest verdict: {verdict}</p>{_table(run_rows)}<h2>Backtest (walk-forward, out of sample)</h2>"
            f"{_table(bt_rows)}<h2>Cross-validation (walk-forward by session, out of sample)</h2>{_table(cv_rows)}"
            f"{imgs}</body></html>")
