"""The steps' console output, shared by the single-step commands and `retrain run`: each
function calls one step and renders what it did (progress, counts, metrics, verdicts)."""

from __future__ import annotations

import datetime as dt
import math

from retrain import report
from retrain.calendar import AsOf
from retrain.config import Settings
from retrain.store import Store


def build_features(store: Store, version: str, exchanges, start=None, end=None, full_rebuild=False):
    """Run the feature build with a progress line; print the summary. Shared with `retrain run`."""
    import time

    from retrain import steps

    bar = {}

    def progress(exchange, day, done, total, rows):
        if exchange not in bar:
            bar.clear()
            bar[exchange] = report.Progress(total, started=started)
        bar[exchange].update(done, rows, f"{exchange} {day}")

    from retrain.integrity import healing

    started = time.perf_counter()
    result = healing(store, lambda: steps.features(store, version, exchanges, start, end, full_rebuild,
                                                   progress=progress))
    for b in bar.values():
        b.close()
    took = time.perf_counter() - started
    for ex, (lo, hi) in (result.ranges or {}).items():
        report.echo(f"   {ex}: trade dates {lo} to {hi}, {report.n(result.by_exchange[ex])} rows")
    if not result.up_to_date:
        report.echo(report.ok(f"Generated {report.n(result.rows)} feature snapshots ({result.version}, {result.mode}, "
                             f"{report.n(result.sessions)} sessions) in {took:.1f}s"))
    return result


def update_labels(store: Store, version: str, exchanges, clock: AsOf, start=None, end=None):
    """Run the label update and print counts and coverage. Shared with `retrain run`."""
    from retrain import query as q
    from retrain import steps
    from retrain.integrity import healing

    result = healing(store, lambda: steps.labels(store, exchanges, clock, start, end))
    for ex in exchanges:
        lc, horizon = result.last_complete.get(ex), result.horizon.get(ex)
        if ex in result.ranges:
            lo, hi = result.ranges[ex]
            report.echo(f"   {ex}: labelled {lo} to {hi} (last complete session: {lc})")
        if horizon and lc and horizon > lc:
            report.echo(f"   {ex}: labels already cover sessions through {horizon}; as of {clock.label()} the last "
                        f"complete session is {lc}, so this reads up to {lc} and leaves the later labels as they are")
    report.echo(report.ok(f"Updated {report.n(result.rows)} labels"))
    # Coverage of the sessions this update labelled (the whole store's is in `retrain status`):
    # a join over every feature row of a long history would cost more than the step itself.
    spans = " OR ".join(f"(f.exchange = '{e}' AND f.trade_date BETWEEN DATE '{lo}' AND DATE '{hi}')"
                        for e, (lo, hi) in sorted(result.ranges.items()))
    if not spans:
        return result
    _, rows = healing(store, lambda: q.run_query(
        store, f"SELECT count(*), count(l.trade_date) FROM features f LEFT JOIN labels l USING (exchange, symbol, "
               f"trade_date) WHERE f.feature_version = '{version}' AND ({spans})"))
    total, labelled = rows[0]
    if total:
        report.echo(report.ok(f"Label coverage ({version}) of the sessions labelled now: {report.n(labelled)}/"
                             f"{report.n(total)} feature rows ({report.pct(labelled / total)}; rows of sessions "
                             f"not yet complete have none)"))
    return result


def fmt_metric(v: float, pct_: bool = False, sign: bool = False) -> str:
    if v != v:  # NaN
        return "n/a"
    return (f"{v:+.2%}" if sign else f"{v:.2%}") if pct_ else (f"{v:+.4f}" if sign else f"{v:.4f}")


def interpretation(summary: dict) -> list[str]:
    """Plain-words reading of out-of-sample CV metrics, with thresholds for intraday returns.
    Values are shown with the precision they are judged at, so a figure never reads as
    landing on the other side of its own threshold."""
    # judged on the shown figures: 4 decimals for rank IC and R², 2 for ICIR, 0.01% for MAE
    ric, icir, r2 = (round(summary[k]["mean"], d) for k, d in (("rank_ic", 4), ("icir", 2), ("r2", 4)))
    mae_ = round(summary["mae"]["mean"], 4)
    lines = []
    if ric >= 0.03:
        lines.append(report.ok(f"Rank IC {ric:+.4f}: a usable intraday ranking signal (>= 0.03)"))
    elif ric >= 0.01:
        lines.append(report.warn(f"Rank IC {ric:+.4f}: weak signal (0.01-0.03); trade small or not at all"))
    else:
        lines.append(report.fail(f"Rank IC {ric:+.4f}: no reliable signal out of sample (< 0.01)"))
    if icir == icir:
        mark = report.ok if icir >= 0.5 else report.warn
        lines.append(mark(f"ICIR {icir:+.2f}: {'consistent' if icir >= 0.5 else 'unstable'} from fold to fold "
                          f"({'>=' if icir >= 0.5 else '<'} 0.5)"))
    mark = report.ok if r2 > 0 else report.warn
    lines.append(mark(f"R² {r2:.4f} out of sample ({'positive' if r2 > 0 else 'not positive'}; intraday R² "
                      "is tiny even for good models: rank IC matters more)"))
    mark = report.ok if mae_ < 0.015 else report.warn
    lines.append(mark(f"MAE {mae_:.2%} average error ({'<' if mae_ < 0.015 else '>='} 1.5%)"))
    return lines


def _pct(v: float, sign: bool = False) -> str:
    return "n/a" if v is None or v != v else (f"{v:+.2%}" if sign else f"{v:.2%}")


def _interval(ci, pct_: bool = True, sign: bool = False) -> str:
    if not ci or any(v is None or v != v for v in ci):
        return ""
    lo, hi = ci
    text = f"{_pct(lo, sign)} to {_pct(hi, sign)}" if pct_ else f"{lo:.2f} to {hi:.2f}"
    return f"  (90%: {text})"


def print_backtest(s_: dict, verdict: str, record: dict | None = None) -> None:
    """The results block over the --backtest-days window, in the guide's layout, each figure with
    its uncertainty; then the whole out-of-sample record and the verdict with its reason."""
    rule = "=" * 60
    ev = s_.get("evidence") or {}
    report.echo(f"\n{rule}\nBACKTEST RESULTS ({s_['start']} to {s_['end']}, {s_['sessions']} sessions, out of sample)\n{rule}")
    report.echo("\nCapital:")
    report.echo(f"   Starting:   $ {s_['starting_capital']:>12,.2f}")
    report.echo(f"   Ending:     $ {s_['ending_capital']:>12,.2f}")
    report.echo(f"   Profit:     $ {s_['profit']:>12,.2f}")
    report.echo("\nReturns:")
    report.echo(f"   Total Return:      {s_['total_return']:>10.2%}{_interval(ev.get('total_return_ci'))}")
    report.echo(f"   Annualized Return: {s_['annualized_return']:>10.2%}")
    report.echo("\nRisk:")
    report.echo(f"   Max Drawdown:      {s_['max_drawdown']:>10.2%}")
    se = ev.get("sharpe_se")
    extra = "" if se is None or se != se else f"  (± {se:.2f}; PSR {ev.get('psr', float('nan')):.2f})"
    report.echo(f"   Sharpe Ratio:      {s_['sharpe']:>10.2f}{extra}")
    report.echo("\nTrading:")
    report.echo(f"   Win Rate:          {s_['win_rate']:>10.2%}")
    report.echo(f"   Total Trades:      {s_['total_trades']:>10,}")
    report.echo("\nBenchmark (equal-weight universe, open to close, same sessions):")
    report.echo(f"   Universe Return:   {s_['universe_return']:>10.2%}")
    report.echo(f"   Excess Return:     {s_['excess_return']:>+10.2%}{_interval(ev.get('excess_return_ci'), sign=True)}")
    report.echo(rule)
    if record:
        print_record(record)
    reason = (record or {}).get("reason") or s_.get("verdict_reason")
    mark = {"EXCELLENT": report.ok, "GOOD": report.ok, "MARGINAL": report.warn,
            "INCONCLUSIVE": report.warn}.get(verdict, report.fail)
    report.echo(mark(f"{verdict} BACKTEST") + (f": {reason}" if reason else ""))
    if verdict == "INCONCLUSIVE":
        report.echo(f"   What settles it: {settle_advice(s_, record or {})}")
    report.echo("")


def settle_advice(s_: dict, r: dict) -> str:
    """What would settle an INCONCLUSIVE verdict: how many more sessions at the figures seen so
    far, and what to do (let the record grow, or backtest a longer window now)."""
    more, have, cap = r.get("more_sessions"), r.get("sessions") or 0, r.get("record_sessions", 252)
    days = (dt.date.fromisoformat(s_["end"]) - dt.date.fromisoformat(s_["start"])).days + 1 if s_.get("start") else 30
    longer = max(90, 2 * days)
    now = (f"backtest a longer window now (`retrain run --backtest-days {longer}`, or an earlier --start-date "
           "with `retrain backtest`)")
    if not more:
        return f"more sessions. Let the weekly runs grow the record (up to {cap} sessions), or {now}."
    if have + more > cap:
        return (f"about {more} more session(s) at the figures seen so far, more than the record keeps ({cap}): at "
                f"these figures the edge, if any, is too small to tell from noise. Treat it as no usable edge, or "
                f"raise [backtest] record_sessions and let the record grow.")
    return (f"about {more} more session(s) at the figures seen so far. Let the weekly runs grow the record (up to "
            f"{cap} sessions), or {now}.")


def _two(v) -> str:
    return "n/a" if v is None or v != v else f"{v:.2f}"


def print_record(r: dict) -> None:
    """The whole out-of-sample record of the routine, which the verdict and the gate use."""
    report.echo(f"\nOut-of-sample record ({r.get('start')} to {r.get('end')}, {r.get('sessions')} sessions, "
                f"{r.get('blocks')} blocks: {r.get('blocks_reused')} reused, {r.get('blocks_trained')} trained):")
    sharpe, se = r.get("sharpe", float("nan")), r.get("sharpe_se", float("nan"))
    report.echo(f"   Sharpe Ratio:      {_two(sharpe)} ± {_two(se)}{_interval(r.get('sharpe_ci'), pct_=False)}"
                f"; PSR(0) {_two(r.get('psr', float('nan')))}")
    report.echo(f"   Total Return:      {_pct(r.get('total_return'))}{_interval(r.get('total_return_ci'))}")
    report.echo(f"   Excess Return:     {_pct(r.get('excess_return'), sign=True)}"
                f"{_interval(r.get('excess_return_ci'), sign=True)}")
    report.echo(f"   Rank IC:           {fmt_metric(r.get('rank_ic', float('nan')), sign=True)} per session "
                f"(± {fmt_metric(r.get('rank_ic_se', float('nan')))}, t {_two(r.get('rank_ic_t', float('nan')))})")
    report.echo(f"   Beat the universe: {_pct(r.get('hit_rate'))} of sessions{_interval(r.get('hit_rate_ci'))}")
    cost = r.get("cost") or {}
    if cost:
        be = cost.get("break_even_bps", float("nan"))
        be_text = ("n/a" if be != be else "none: it loses before costs" if be <= 0 else f"{be:.1f} bps per side")
        report.echo(f"   Net of costs:      {_pct(cost.get('0x'), sign=True)} at 0x, {_pct(cost.get('1x'), sign=True)} "
                    f"at 1x, {_pct(cost.get('2x'), sign=True)} at 2x the costs; break-even {be_text}")
    mtr = r.get("min_track_record", float("nan"))
    if mtr == mtr:
        have = r.get("sessions") or 0
        need = math.ceil(mtr) if mtr != float("inf") else mtr
        text = ("never at this Sharpe (it is not above 0)" if need == float("inf") else
                f"{need:,} sessions ({'reached' if have >= need else f'{need - have:,} more'})")
        report.echo(f"   Track record for 95% confidence that the Sharpe is above 0: {text}")
    for w in r.get("warnings") or []:
        report.echo(report.warn(w))


def print_metrics(meta: dict) -> None:
    """The trained model's size and its cross-validation block, from a run's metadata."""
    s_ = meta["cv"]["summary"]
    top_n = meta["cv"].get("top_n", 5)
    data = (f"{report.n(meta['rows'])} samples with {len(meta['feature_columns'])} features "
            f"({meta['training_window']['sessions']} sessions)")
    if meta.get("num_boost_round") is None:  # being fitted in the background: `final_model` says when it is
        report.echo(report.ok(f"Cross-validated; the final model is being fitted on {data}"))
    else:
        report.echo(report.ok(f"Trained on {data}; final model: {meta['num_boost_round']} rounds"))
    report.echo("\nCross-validation metrics (out of sample, mean ± std over folds):")
    report.echo(f"   • R² Score:   {fmt_metric(s_['r2']['mean'])} (±{fmt_metric(s_['r2']['std'])})")
    report.echo(f"   • MAE Score:  {fmt_metric(s_['mae']['mean'])} (±{fmt_metric(s_['mae']['std'])})")
    report.echo(f"   • IC:         {fmt_metric(s_['ic']['mean'], sign=True)} (±{fmt_metric(s_['ic']['std'])})")
    report.echo(f"   • Rank IC:    {fmt_metric(s_['rank_ic']['mean'], sign=True)} (±{fmt_metric(s_['rank_ic']['std'])})")
    report.echo(f"   • ICIR:       {fmt_metric(s_['icir']['mean'], sign=True)}")
    report.echo(f"   • Hit rate:   {fmt_metric(s_['hit_rate']['mean'], pct_=True)}")
    report.echo(f"   • Top {top_n} - universe: {fmt_metric(s_['top_n_spread']['mean'], pct_=True, sign=True)} per session")
    report.echo(f"   • Samples:    {report.n(meta['rows'])}")
    report.echo(f"   • Features:   {len(meta['feature_columns'])}")
    report.echo("\nInterpretation:")
    for line in interpretation(s_):
        report.echo(f"   {line}")


def final_model(meta: dict) -> None:
    """The final model's line, once its background fit is done."""
    report.echo(report.ok(f"Final model fitted on {report.n(meta['rows'])} samples: {meta['num_boost_round']} rounds"))


def train_and_report(settings: Settings, scope: str, cfg, promote: str, end=None, backtest_window=None, bcfg=None,
                     store: Store | None = None, on_backtest=None):
    """Train, print the metrics block, interpretation and saved paths (and, with a backtest window,
    the backtest results). Shared with `retrain run` (``on_backtest`` is called once before the
    backtest starts)."""
    from retrain import pipeline
    from retrain.integrity import healing

    store = store or Store(settings.data_dir)
    start, last = healing(store, lambda: pipeline.training_window(store, settings.feature_version, scope,
                                                                  cfg.training_days, end))
    report.echo(f"Loading dataset from {start} to {last} ({scope}, features {settings.feature_version})...")

    def progress(i, n, m):
        report.echo(f"   fold {i}/{n}: test {m['test_start']}..{m['test_end']} | rank IC {fmt_metric(m['rank_ic'], sign=True)} | "
                    f"IC {fmt_metric(m['ic'], sign=True)} | R² {fmt_metric(m['r2'], sign=True)} | {m['train_rows']:,} train rows"
                    f" | {m['status']}")

    from retrain.backtest import BacktestConfig

    every = (bcfg or BacktestConfig()).retrain_every
    report.echo(f"Training LightGBM (target: {cfg.target} intraday return) with walk-forward CV by session: "
                f"{cfg.cv_folds} folds, the newest blocks of {every} sessions of the record's grid, each predicted by "
                f"the routine trained on the {cfg.training_days} days before it (embargo {cfg.embargo} session(s), "
                f"early stopping on the last {cfg.validation_fraction:.0%} of its sessions); folds already in the "
                "record are reused")

    def on_record(info):
        if on_backtest:
            on_backtest()
        report.echo(f"Backtest window {backtest_window[0]} to {backtest_window[1]}: walk-forward, retraining every "
                    f"{bcfg.retrain_every} sessions on the record's fixed grid of blocks")
        earlier = f", {info['earlier']} of them before the window" if info["earlier"] else ""
        cv = f"; {info['cv']} of them are the CV folds above" if info.get("cv") else ""
        report.echo(f"Out-of-sample record: {info['blocks']} block(s){earlier}; {info['stored']} stored already "
                    f"(reused when their rows and routine are unchanged), the rest trained now{cv}")

    def bt_progress(i, n, block, train_s):
        report.echo(f"   block {i}/{n}: {block[0]}..{block[-1]} predicted by a model trained on {train_s[0]}..{train_s[-1]}")

    def trained(meta):
        for warning in meta["cv"].get("warnings") or []:  # a corrupted or torn fold file, rebuilt: never silent
            report.echo(report.warn(warning))
        print_metrics(meta)

    def unchanged(meta):
        report.echo(report.ok(f"Nothing changed since run {meta['run_id']}: the same bars and the same routine give "
                             "the same model, so no new run is trained; its figures:"))
        print_metrics(meta)

    out = healing(store, lambda: pipeline.train_step(
        settings, scope, cfg, promote, end=end, progress=progress, backtest_window=backtest_window, bcfg=bcfg,
        bt_progress=bt_progress, store=store, on_trained=trained, on_unchanged=unchanged, on_record=on_record,
        on_final=final_model))
    if out.meta.get("backtest") is not None and backtest_window:
        if out.unchanged and on_backtest:
            on_backtest()
        record = out.meta.get("record")
        if record and not out.unchanged:
            again = record.get("blocks_repredicted", 0)
            report.echo(report.ok(f"Record: {record['blocks_reused']} block(s) reused, "
                                  + (f"{again} predicted again by its stored model (only its sessions changed), "
                                     if again else "") + f"{record['blocks_trained']} trained"))
        print_backtest(out.meta["backtest"], out.meta["backtest"]["verdict"], record)
        report.echo(report.ok(f"Report: {out.run_dir / 'report.html'}"))
    if out.unchanged:
        report.echo(report.ok(f"Run {out.run_id} ({out.run_dir}) stays as it is"))
    else:
        report.echo(report.ok(f"Run {out.run_id} saved to {out.run_dir}"))
    if out.promoted:
        report.echo(report.ok(f"Model saved to: {out.active_path} (active; {out.reason})"))
    elif out.active:
        report.echo(report.ok(f"Active model: {out.active_path} ({out.reason})"))
    else:
        report.echo(report.warn(f"Not promoted: {out.reason}"))
    return out


# ------------------------------------------------------------------ monitor
def _vs(expected: dict | None, key: str, pct_: bool = False) -> str:
    if not expected:
        return ""
    return f"   (expected {fmt_metric(expected.get(key, float('nan')), pct_=pct_, sign=True)})"


def print_monitor(m) -> None:
    """`retrain monitor`'s report of a watch.MonitorResult: the model, its live record against its
    expectation, the decay test, drift, and the status with its reasons and what to do."""
    model, live, exp = m.model, m.live, m.expected
    if model.get("run_id"):
        age = (f"trained through {model['trained_through']}, {model['age_days']} days / {model['age_sessions']} "
               f"sessions old" if model.get("trained_through") else "its run folder was removed")
        report.echo(f"Active {m.version} model for {m.scope}: {model['run_id']} ({age})")
    report.echo(f"As of {m.as_of}" + (f", since {m.since}" if m.since else "") + ": "
                f"{live.get('sessions', 0)} live session(s) scored against what happened")
    if live.get("sessions"):
        report.echo(f"   • IC:         {fmt_metric(live['ic'], sign=True)}{_vs(exp, 'ic')}")
        report.echo(f"   • Rank IC:    {fmt_metric(live['rank_ic'], sign=True)} (t {live['rank_ic_t']:.2f})"
                    f"{_vs(exp, 'rank_ic')}")
        report.echo(f"   • Net return: {fmt_metric(live['net_return'], pct_=True, sign=True)} in total, "
                    f"{fmt_metric(live['net_return_per_session'], pct_=True, sign=True)} per session"
                    f"{_vs(exp, 'net_return_per_session', pct_=True)}")
        report.echo(f"   • Hit rate:   {fmt_metric(live['hit_rate'], pct_=True)} of sessions beat the universe"
                    f"{'   (expected ' + fmt_metric(exp['hit_rate'], pct_=True) + ')' if exp else ''}")
    if exp:
        report.echo(f"Expectation: {exp['source']}: rank IC {fmt_metric(exp['rank_ic'], sign=True)} "
                    f"(t {exp['rank_ic_t']:.2f}, daily std {exp['rank_ic_std']:.4f})")
    d = m.decay
    if d and d.get("applicable"):
        report.echo(f"Decay test (one-sided CUSUM on daily rank IC): {d['statistic']:.2f} against a threshold of "
                    f"{d['threshold']:.2f}; losing the whole edge is caught in about "
                    f"{d['expected_detection_sessions']:.0f} sessions on average, with a false alarm about once "
                    f"every {d['false_alarm_arl']:.0f} sessions of a model that still works")
    elif d:
        report.echo(f"Decay test: not applicable ({d.get('reason')})")
    if m.drift is None and m.model.get("trained_through"):
        report.echo("Feature drift: not measured yet (it needs 5 sessions of features after the training window)")
    if m.drift is not None and not m.drift.is_empty():
        top = m.drift.head(5)
        report.echo("Feature drift (PSI, training window against the last sessions; 0.10 moderate, 0.25 significant, "
                    "counted only beyond sampling noise, else \"within noise\"):")
        report.echo(report.table(["feature", "PSI", "band"],
                                 [(f, f"{p:.3f}", b) for f, p, b in top.select("feature", "psi", "band").iter_rows()],
                                 numeric=[False, True, False]))
    if len(m.runs) > 1:
        report.echo("Live record per run:")
        report.echo(report.table(
            ["run", "sessions", "rank IC", "t", "net return", ""],
            [(r["run_id"], r["sessions"], fmt_metric(r["rank_ic"], sign=True), f"{r['rank_ic_t']:.2f}",
              fmt_metric(r["net_return"], pct_=True, sign=True),
              "active" if r["active"] else "removed" if r["removed"] else "") for r in m.runs],
            numeric=[False, True, True, True, True, False]))
    mark = {"ok": report.ok, "warning": report.warn, "alert": report.fail}[m.status]
    report.echo(mark(f"Status: {m.status.upper()}"))
    for r in m.reasons:
        line = f"   {r['level']}: {r['reason']}" + (f"\n      -> {r['action']}" if r.get("action") else "")
        report.echo(line)


# ------------------------------------------------------------------ sweep
def _duration(seconds: float | None) -> str:
    if seconds is None or seconds != seconds:
        return "?"
    seconds = int(round(seconds))
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m" if seconds >= 3600 else \
        f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


def _interval_text(r: dict, key: str, spec: str) -> str:
    lo, hi = r.get(f"{key}_lo"), r.get(f"{key}_hi")
    if lo is None or hi is None or lo != lo or hi != hi:
        return ""
    return f" [{lo:{spec}}, {hi:{spec}}]"


def sweep_progress(p) -> None:
    """One line per event of a sweep (``sweeping.SweepProgress``): how it runs, then each trial
    as it finishes, with trials done out of the total, the best so far and an ETA."""
    from retrain import sweep

    if p.kind == "start":
        i = p.info
        report.echo(f"Sweep {p.sweep_id}: {p.total} trials ({i['sampler']}, seed {i['seed']}) of the {i['scope']} "
                    f"routine, each a walk-forward replay of {i['window'][0]} to {i['window'][1]}; searching "
                    f"{', '.join(i['searched'])}")
        for note in i["notes"]:
            report.echo(report.warn(note))
        return
    if p.kind == "ready":
        i = p.info
        if i["resumed"]:
            report.echo(report.ok(f"Resumed: {i['kept']} finished trial(s) kept"
                                  + (f", {i['replayed']} interrupted one(s) replayed" if i["replayed"] else "")))
        if i["workers"] > i["parallel"]:
            report.echo(report.warn(f"{i['workers']} workers but [sweep] parallel = {i['parallel']}: at most "
                                    f"{i['parallel']} trials run at once"))
        report.echo(f"Running on {i['cluster']}; results in {i['folder']}")
        return
    r, b = p.row, p.best
    if r["state"] == "complete":
        text = (f"trial {r['trial']}: Sharpe {fmt_num(r['sharpe'])}{_interval_text(r, 'sharpe', '.2f')}, "
                f"PSR {fmt_num(r['psr'])}, rank IC {fmt_metric(r['rank_ic'], sign=True)} "
                f"({sweep.describe(r)}) in {r['seconds']:.1f}s on {r['worker']}")
        line = report.ok(text)
    else:
        line = report.warn(f"trial {r['trial']} failed ({sweep.describe(r)}): {r['error']}")
    best = f"best so far: trial {b['trial']}, Sharpe {fmt_num(b['sharpe'])}" if b else "no best yet"
    eta = f"ETA {_duration(p.eta)}" if p.done < p.total else "done"
    report.echo(f"[{p.done}/{p.total}] {line} | {best} | {eta}")


def fmt_num(v, digits: int = 2) -> str:
    return "n/a" if v is None or v != v else f"{v:.{digits}f}"


def print_sweep(result) -> None:
    """The end of a sweep: the best trials with their intervals, the honest reading of the best
    one, where the results are, and what to do next."""
    from retrain import sweep

    rows = sorted([r for r in result.rows if r["state"] == "complete"],
                  key=lambda r: (-(r["sharpe"] if r["sharpe"] == r["sharpe"] else -math.inf), r["trial"]))
    keys = [k for k in sweep.DIMENSIONS if len({str(r[k]) for r in result.rows}) > 1] or ["learning_rate"]
    report.echo(f"\nTrials by Sharpe ({len(rows)} complete"
                + (f", {len(result.failed)} failed" if result.failed else "") + f" of {result.total}; "
                "90% intervals in brackets):")
    table = [(r["trial"], *[f"{r[k]:.4g}" if isinstance(r[k], float) else str(r[k]) for k in keys],
              f"{fmt_num(r['sharpe'])}{_interval_text(r, 'sharpe', '.2f')}", fmt_num(r["psr"]),
              f"{fmt_metric(r['rank_ic'], sign=True)}{_interval_text(r, 'rank_ic', '+.4f')}",
              f"{_pct(r['total_return'], sign=True)}", r["verdict"]) for r in rows[:10]]
    report.echo(report.table(["trial", *keys, "Sharpe", "PSR", "rank IC", "return", "verdict"], table,
                             numeric=[True, *[False] * len(keys), True, True, True, True, False]))
    if len(rows) > 10:
        report.echo(f"   ... and {len(rows) - 10} more in {result.trials_path}")
    for r in result.failed:
        report.echo(report.warn(f"trial {r['trial']} failed: {r['error']}"))
    s = result.selection
    mark = report.ok if s["distinguishable"] else report.warn
    report.echo("\n" + mark(s["words"]))
    if result.best is not None:
        report.echo(f"   Best trial {result.best['trial']}: {sweep.describe(result.best)}")
    report.echo(report.ok(f"Trials: {result.trials_path}"))
    if result.report:
        report.echo(report.ok(f"Report: {result.report}"))
    took = result.seconds
    report.echo(f"Took {_duration(sum(took.values()))} (reading the store {took.get('load', 0):.1f}s, starting the "
                f"cluster {took.get('cluster', 0):.1f}s, sending the rows to the workers {took.get('scatter', 0):.1f}s, "
                f"trials {took.get('trials', 0):.1f}s)")
    if result.best is not None:
        report.echo("\nNext:")
        if result.best["leave_out"] != sweep.NONE:
            report.echo(f"   The best trial leaves out the feature group {result.best['leave_out']}, which `retrain run` "
                        "cannot (it trains on every feature of the version); apply another trial with "
                        f"`retrain sweep apply {result.sweep_id} --trial N`, or define a feature version without it.")
        else:
            report.echo(f"   `retrain sweep apply {result.sweep_id}` writes the best trial's settings into "
                        "retrain.toml; the next `retrain run` trains with them, and its gate decides promotion"
                        + ("" if s["distinguishable"] else " (the reading above says it may be luck)"))
