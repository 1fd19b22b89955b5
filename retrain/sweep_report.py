"""A sweep's report.html: self-contained (inline SVG plots, and the SVG images of the tear sheet), like a run's report.

The honest reading of the best trial first (its Deflated Sharpe Ratio, in words), then each
metric against each searched setting (one point per trial with its 90% interval, the best trial
in orange), the table of trials, and the best trial's tear sheet (``html_report.body``).
"""

from __future__ import annotations

import math

from retrain import sweep
from retrain.html_report import _esc, _table, page

METRICS = [("sharpe", "Sharpe (annualized)", True), ("psr", "PSR (P(Sharpe > 0))", False),
           ("rank_ic", "mean daily rank IC", True), ("total_return", "total return", True)]
STYLE = ".panels{display:flex;flex-wrap:wrap;gap:4px}"


def _f(v, spec: str = ".2f") -> str:
    return format(v, spec) if isinstance(v, int | float) and math.isfinite(v) else "n/a"


def _value(v) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


# Inline SVG panels (no matplotlib to import or rasterize): one per searched setting, with the
# trial's number and figures as a tooltip on each point.
PW, PH, PL, PR, PT, PB = 214, 150, 46, 8, 8, 34


def _scale(values: list[float], log: bool) -> tuple[float, float]:
    v = [math.log(x) if log else x for x in values]
    lo, hi = min(v), max(v)
    pad = (hi - lo) * 0.06 or max(abs(hi), 1e-3) * 0.1
    return lo - pad, hi + pad


def _panel(key: str, space: sweep.Space, done: list[dict], metric: str, interval: bool, ylim: tuple[float, float],
           best: dict | None, fmt: str) -> str:
    """One SVG panel: ``metric`` (y, with its interval) of each trial against the setting ``key`` (x)."""
    log = key in sweep.LOG_SCALE and key in space.ranges
    if key in space.choices:
        labels = [str(c) for c in space.choices[key]]
        x0, x1 = -0.5, len(labels) - 0.5
        jitter = {r["trial"]: (i % 5 - 2) * 0.06 for i, r in enumerate(done)}

        def xval(r):
            return labels.index(str(r[key])) + jitter[r["trial"]]
        ticks = [(i, lab) for i, lab in enumerate(labels)]
    else:
        low, high = space.ranges[key]
        x0, x1 = _scale([low, high], log)

        def xval(r):
            return math.log(r[key]) if log else r[key]
        mids = [low, math.sqrt(low * high) if log else (low + high) / 2, high]
        ticks = [(math.log(v) if log else v, f"{v:.3g}") for v in mids]
    y0, y1 = ylim

    def px(v: float) -> float:
        return PL + (v - x0) / (x1 - x0) * (PW - PL - PR)

    def py(v: float) -> float:
        return PT + (y1 - v) / (y1 - y0) * (PH - PT - PB)

    parts = [f"<rect x='{PL}' y='{PT}' width='{PW - PL - PR}' height='{PH - PT - PB}' fill='none' stroke='#999'/>"]
    for v in (y0 + (y1 - y0) * f for f in (0.1, 0.5, 0.9)):
        parts.append(f"<text x='{PL - 4}' y='{py(v) + 3:.1f}' font-size='9' text-anchor='end'>{format(v, fmt)}</text>")
    if y0 < 0 < y1 and metric != "psr":
        parts.append(f"<line x1='{PL}' x2='{PW - PR}' y1='{py(0):.1f}' y2='{py(0):.1f}' stroke='gray' "
                     "stroke-dasharray='3,3'/>")
    for v, lab in ticks:
        parts.append(f"<text x='{px(v):.1f}' y='{PH - PB + 12}' font-size='9' text-anchor='middle'>{_esc(lab)}</text>")
    parts.append(f"<text x='{(PL + PW - PR) / 2:.1f}' y='{PH - 6}' font-size='10' text-anchor='middle'>"
                 f"{_esc(key)}{' (log)' if log else ''}</text>")
    for r in sorted(done, key=lambda r: best is not None and r["trial"] == best["trial"]):
        y = r.get(metric)
        if not _ok(y):
            continue
        x = px(xval(r))
        tip = f"trial {r['trial']}: {metric} {format(y, fmt)}, {key} {_value(r[key])}"
        if interval and _ok(r.get(f"{metric}_lo")) and _ok(r.get(f"{metric}_hi")):
            lo, hi = r[f"{metric}_lo"], r[f"{metric}_hi"]
            tip += f" [{format(lo, fmt)}, {format(hi, fmt)}]"
            parts.append(f"<line x1='{x:.1f}' x2='{x:.1f}' y1='{py(max(lo, y0)):.1f}' y2='{py(min(hi, y1)):.1f}' "
                         "stroke='#9ab'/>")
        top = best is not None and r["trial"] == best["trial"]
        parts.append(f"<circle cx='{x:.1f}' cy='{py(y):.1f}' r='{4.5 if top else 3}' "
                     f"fill='{'#e67e00' if top else '#1f77b4'}'><title>{_esc(tip)}</title></circle>")
    return (f"<svg viewBox='0 0 {PW} {PH}' width='{PW}' height='{PH}' role='img' font-family='sans-serif'>"
            f"{''.join(parts)}</svg>")


def metric_plot(rows: list[dict], metric: str, label: str, interval: bool, space: sweep.Space,
                best: dict | None) -> str:
    """One row of SVG panels: ``metric`` of every complete trial against each searched setting,
    on one y scale."""
    done = [r for r in rows if r["state"] == "complete"]
    values = [r[metric] for r in done if _ok(r.get(metric))]
    if interval:
        values += [r[f"{metric}_{s}"] for r in done for s in ("lo", "hi") if _ok(r.get(f"{metric}_{s}"))]
    if not values:
        return "<p class='note'>No trial has this figure.</p>"
    ylim = (0.0, 1.0) if metric == "psr" else _scale(values, False)
    fmt = {"sharpe": ".2f", "psr": ".2f", "rank_ic": "+.3f", "total_return": "+.1%"}.get(metric, ".3g")
    panels = "".join(_panel(k, space, done, metric, interval, ylim, best, fmt) for k in space.searched)
    return f"<div class='panels'>{panels}</div>"


def _selection_rows(best: dict | None, chosen: dict) -> list[tuple[str, str]]:
    if best is None:
        return [("best trial", "none: no trial produced a Sharpe ratio")]
    return [("best trial", f"{best['trial']} ({sweep.describe(best)})"),
            ("its Sharpe [90% interval]", f"{_f(best['sharpe'])} [{_f(best['sharpe_lo'])}, {_f(best['sharpe_hi'])}]"),
            ("its PSR (P(true Sharpe > 0))", _f(best["psr"], ".1%")),
            ("trials compared (N)", str(chosen["trials_compared"])),
            ("spread of their Sharpes (std)", _f(chosen["sharpe_std"])),
            ("expected best Sharpe of N trials with no skill", _f(chosen["expected_max_sharpe"])),
            ("Deflated Sharpe Ratio (P(true Sharpe > that))", _f(chosen["dsr"], ".1%"))]


TABLE = [("trial", "trial"), ("Sharpe [90%]", "sharpe"), ("PSR", "psr"), ("rank IC [90%]", "rank_ic"),
         ("total return [90%]", "total_return"), ("max DD", "max_drawdown"), ("verdict", "verdict"),
         ("s", "seconds"), ("worker", "worker")]


def _trials_table(rows: list[dict], space: sweep.Space) -> str:
    keys = space.searched
    head = "".join(f"<th>{_esc(h)}</th>" for h in ["trial", *keys, *[h for h, _ in TABLE[1:]]])
    order = sorted(rows, key=lambda r: (r["state"] != "complete", -(r.get("sharpe") if _ok(r.get("sharpe"))
                                                                   else -math.inf), r["trial"]))
    body = []
    for r in order:
        if r["state"] != "complete":
            cells = [str(r["trial"]), *[_value(r[k]) for k in keys], f"failed: {r.get('error')}"]
            body.append("<tr>" + "".join(f"<td>{_esc(c)}</td>" for c in cells) + "</tr>")
            continue
        cells = [str(r["trial"]), *[_value(r[k]) for k in keys],
                 f"{_f(r['sharpe'])} [{_f(r['sharpe_lo'])}, {_f(r['sharpe_hi'])}]", _f(r["psr"], ".2f"),
                 f"{_f(r['rank_ic'], '+.4f')} [{_f(r['rank_ic_lo'], '+.4f')}, {_f(r['rank_ic_hi'], '+.4f')}]",
                 f"{_f(r['total_return'], '+.1%')} [{_f(r['total_return_lo'], '+.1%')}, "
                 f"{_f(r['total_return_hi'], '+.1%')}]",
                 _f(r["max_drawdown"], ".1%"), str(r.get("verdict")), _f(r["seconds"], ".1f"), str(r.get("worker"))]
        body.append("<tr>" + "".join(f"<td>{_esc(c)}</td>" for c in cells) + "</tr>")
    return f"<table class='e'><tr>{head}</tr>{''.join(body)}</table>"


def _ok(v) -> bool:
    return isinstance(v, int | float) and math.isfinite(v)


def render(spec: dict, rows: list[dict], best: dict | None, chosen: dict, space: sweep.Space,
           tear_sheet: str | None) -> str:
    """The page: what the sweep was, the honest reading, the plots, the trials, the tear sheet."""
    sweep_id = spec["sweep_id"]
    failed = sum(r["state"] != "complete" for r in rows)
    about = [("scope", spec["scope"]), ("feature version", spec["feature_version"]),
             ("backtest window", f"{spec['window'][0]} to {spec['window'][1]} ({spec['backtest_days']} days; "
                                 "each trial replays it walk-forward)"),
             ("trials", f"{len(rows)} finished of {spec['trials']}" + (f", {failed} failed" if failed else "")),
             ("sampler", f"{spec['sampler']} (seed {spec['seed']}, {spec['parallel']} at once)"),
             ("searched", "; ".join(f"{k} {space.ranges[k][0]:g} to {space.ranges[k][1]:g}"
                                   + (" (log scale)" if k in sweep.LOG_SCALE else "") if k in space.ranges else
                                   f"{k} one of {', '.join(map(str, space.choices[k]))}" for k in space.searched)),
             ("fixed", ", ".join(f"{k} = {_value(v)}" for k, v in space.fixed.items()) or "none")]
    mark = "" if chosen.get("distinguishable") else " class='w'"
    words = f"<p{mark}><b>{_esc(chosen['words'])}</b></p>"
    apply = ""
    if best is not None and best["leave_out"] == sweep.NONE:
        apply = (f"<p>To train with the best trial's settings: <code>retrain sweep apply {_esc(sweep_id)}</code>, "
                 "then the weekly <code>retrain run</code>, whose promotion gate decides whether its model replaces "
                 "the active one.</p>")
    elif best is not None:
        apply = (f"<p>The best trial leaves out the feature group {_esc(best['leave_out'])}; <code>retrain run</code> "
                 "trains on every feature of the version, so <code>retrain sweep apply</code> refuses it. Apply "
                 f"another trial with <code>retrain sweep apply {_esc(sweep_id)} --trial N</code>.</p>")
    plots = ("<p class='note'>One point per trial (hover for its figures); bars: the 90% interval; orange: "
             "the best trial.</p>" + "".join(f"<h3>{_esc(label)}</h3>{metric_plot(rows, m, label, interval, space, best)}"
                                             for m, label, interval in METRICS))
    sheet = (f"<h2>The best trial's tear sheet</h2>{tear_sheet}" if tear_sheet else "")
    content = (f"<style>{STYLE}</style><h1>retrain sweep: {_esc(sweep_id)}</h1>{_table(about)}"
               f"<h2>Can the best trial be told apart from luck?</h2>{words}{_table(_selection_rows(best, chosen))}"
               f"{apply}<h2>Each metric against each setting</h2>{plots}"
               f"<h2>Trials (best Sharpe first)</h2>{_trials_table(rows, space)}{sheet}")
    return page(f"retrain sweep {sweep_id}", content)
