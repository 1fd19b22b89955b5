"""The steps' console output, shared by the single-step commands and `retrain run`: each
function calls one step and renders what it did (progress, counts, metrics, verdicts)."""

from __future__ import annotations

import click

from retrain import report
from retrain.calendar import AsOf
from retrain.config import Settings
from retrain.store import Store


def build_features(store: Store, version: str, exchanges, start=None, end=None, full_rebuild=False, bars=None):
    """Run the feature build with a progress line; print the summary. Shared with `retrain run`."""
    import time

    from retrain import features as feat

    bar = {}

    def progress(exchange, day, done, total, rows):
        if exchange not in bar:
            bar.clear()
            bar[exchange] = report.Progress(total, started=started)
        bar[exchange].update(done, rows, f"{exchange} {day}")

    started = time.perf_counter()
    result = feat.build(store, version, exchanges, start, end, full_rebuild, progress=progress, bars=bars)
    for b in bar.values():
        b.close()
    took = time.perf_counter() - started
    for ex, (lo, hi) in (result.ranges or {}).items():
        click.echo(f"   {ex}: trade dates {lo} to {hi}, {report.n(result.by_exchange[ex])} rows")
    if not result.up_to_date:
        click.echo(report.ok(f"Generated {report.n(result.rows)} feature snapshots ({result.version}, {result.mode}, "
                             f"{report.n(result.sessions)} sessions) in {took:.1f}s"))
    return result


def update_labels(store: Store, version: str, exchanges, clock: AsOf, start=None, end=None):
    """Run the label update and print counts and coverage. Shared with `retrain run`."""
    from retrain import labels as lab
    from retrain import query as q

    result = lab.update(store, exchanges, clock, start, end)
    for ex in exchanges:
        lc, horizon = result.last_complete.get(ex), result.horizon.get(ex)
        if ex in result.ranges:
            lo, hi = result.ranges[ex]
            click.echo(f"   {ex}: labelled {lo} to {hi} (last complete session: {lc})")
        if horizon and lc and horizon > lc:
            click.echo(f"   {ex}: labels already cover sessions through {horizon}; as of {clock.label()} the last "
                       f"complete session is {lc}, so this reads up to {lc} and leaves the later labels as they are")
    click.echo(report.ok(f"Updated {report.n(result.rows)} labels"))
    listing = ", ".join(f"'{e}'" for e in exchanges)
    _, rows = q.run_query(store, f"SELECT count(*), count(l.trade_date) FROM features f LEFT JOIN labels l "
                                 f"USING (exchange, symbol, trade_date) WHERE f.feature_version = '{version}' "
                                 f"AND f.exchange IN ({listing})")
    total, labelled = rows[0]
    if total:
        click.echo(report.ok(f"Label coverage ({version}): {report.n(labelled)}/{report.n(total)} feature rows "
                             f"({report.pct(labelled / total)}; rows of sessions not yet complete have none)"))
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


def print_backtest(s_: dict, verdict: str) -> None:
    """The results block, in the guide's layout, and the verdict."""
    rule = "=" * 60
    click.echo(f"\n{rule}\nBACKTEST RESULTS ({s_['start']} to {s_['end']}, {s_['sessions']} sessions, out of sample)\n{rule}")
    click.echo("\nCapital:")
    click.echo(f"   Starting:   $ {s_['starting_capital']:>12,.2f}")
    click.echo(f"   Ending:     $ {s_['ending_capital']:>12,.2f}")
    click.echo(f"   Profit:     $ {s_['profit']:>12,.2f}")
    click.echo("\nReturns:")
    click.echo(f"   Total Return:      {s_['total_return']:>10.2%}")
    click.echo(f"   Annualized Return: {s_['annualized_return']:>10.2%}")
    click.echo("\nRisk:")
    click.echo(f"   Max Drawdown:      {s_['max_drawdown']:>10.2%}")
    click.echo(f"   Sharpe Ratio:      {s_['sharpe']:>10.2f}")
    click.echo("\nTrading:")
    click.echo(f"   Win Rate:          {s_['win_rate']:>10.2%}")
    click.echo(f"   Total Trades:      {s_['total_trades']:>10,}")
    click.echo("\nBenchmark (equal-weight universe, open to close, same sessions):")
    click.echo(f"   Universe Return:   {s_['universe_return']:>10.2%}")
    click.echo(f"   Excess Return:     {s_['excess_return']:>+10.2%}")
    click.echo(rule)
    mark = {"EXCELLENT": report.ok, "GOOD": report.ok, "MARGINAL": report.warn}.get(verdict, report.fail)
    click.echo(mark(f"{verdict} BACKTEST") + "\n")


def print_metrics(meta: dict) -> None:
    """The trained model's size and its cross-validation block, from a run's metadata."""
    s_ = meta["cv"]["summary"]
    top_n = meta["cv"].get("top_n", 5)
    click.echo(report.ok(f"Trained on {report.n(meta['rows'])} samples with {len(meta['feature_columns'])} features "
                         f"({meta['training_window']['sessions']} sessions); final model: {meta['num_boost_round']} rounds"))
    click.echo("\nCross-validation metrics (out of sample, mean ± std over folds):")
    click.echo(f"   • R² Score:   {fmt_metric(s_['r2']['mean'])} (±{fmt_metric(s_['r2']['std'])})")
    click.echo(f"   • MAE Score:  {fmt_metric(s_['mae']['mean'])} (±{fmt_metric(s_['mae']['std'])})")
    click.echo(f"   • IC:         {fmt_metric(s_['ic']['mean'], sign=True)} (±{fmt_metric(s_['ic']['std'])})")
    click.echo(f"   • Rank IC:    {fmt_metric(s_['rank_ic']['mean'], sign=True)} (±{fmt_metric(s_['rank_ic']['std'])})")
    click.echo(f"   • ICIR:       {fmt_metric(s_['icir']['mean'], sign=True)}")
    click.echo(f"   • Hit rate:   {fmt_metric(s_['hit_rate']['mean'], pct_=True)}")
    click.echo(f"   • Top {top_n} - universe: {fmt_metric(s_['top_n_spread']['mean'], pct_=True, sign=True)} per session")
    click.echo(f"   • Samples:    {report.n(meta['rows'])}")
    click.echo(f"   • Features:   {len(meta['feature_columns'])}")
    click.echo("\nInterpretation:")
    for line in interpretation(s_):
        click.echo(f"   {line}")


def train_and_report(settings: Settings, scope: str, cfg, promote: str, end=None, backtest_window=None, bcfg=None,
                     store: Store | None = None, on_backtest=None):
    """Train, print the metrics block, interpretation and saved paths (and, with a backtest window,
    the backtest results). Shared with `retrain run` (``on_backtest`` is called once before the
    backtest starts)."""
    from retrain import pipeline, training

    store = store or Store(settings.data_dir)
    start, last = training.training_window(store, settings.feature_version, scope, cfg.training_days, end)
    click.echo(f"Loading dataset from {start} to {last} ({scope}, features {settings.feature_version})...")

    def progress(i, n, m):
        click.echo(f"   fold {i}/{n}: test {m['test_start']}..{m['test_end']} | rank IC {fmt_metric(m['rank_ic'], sign=True)} | "
                   f"IC {fmt_metric(m['ic'], sign=True)} | R² {fmt_metric(m['r2'], sign=True)} | {m['train_rows']:,} train rows")

    click.echo(f"Training LightGBM (target: {cfg.target} intraday return) with walk-forward CV by session: "
               f"{cfg.cv_folds} folds, embargo {cfg.embargo} session(s), early stopping on each fold's last "
               f"{cfg.validation_fraction:.0%} of sessions")
    def bt_progress(i, n, block, train_s):
        if i == 1:
            if on_backtest:
                on_backtest()
            click.echo(f"Backtest window {backtest_window[0]} to {backtest_window[1]}: walk-forward, retraining every "
                       f"{bcfg.retrain_every} sessions")
        click.echo(f"   block {i}/{n}: {block[0]}..{block[-1]} predicted by a model trained on {train_s[0]}..{train_s[-1]}")

    def unchanged(meta):
        click.echo(report.ok(f"Nothing changed since run {meta['run_id']}: the same bars and the same routine give "
                             "the same model, so no new run is trained; its figures:"))
        print_metrics(meta)

    out = pipeline.train_step(settings, scope, cfg, promote, end=end, progress=progress,
                              backtest_window=backtest_window, bcfg=bcfg, bt_progress=bt_progress, store=store,
                              on_trained=print_metrics, on_unchanged=unchanged)
    if out.meta.get("backtest") is not None and backtest_window:
        if out.unchanged and on_backtest:
            on_backtest()
        print_backtest(out.meta["backtest"], out.meta["backtest"]["verdict"])
        click.echo(report.ok(f"Report: {out.run_dir / 'report.html'}"))
    if out.unchanged:
        click.echo(report.ok(f"Run {out.run_id} ({out.run_dir}) stays as it is"))
    else:
        click.echo(report.ok(f"Run {out.run_id} saved to {out.run_dir}"))
    if out.promoted:
        click.echo(report.ok(f"Model saved to: {out.active_path} (active; {out.reason})"))
    elif out.active:
        click.echo(report.ok(f"Active model: {out.active_path} ({out.reason})"))
    else:
        click.echo(report.warn(f"Not promoted: {out.reason}"))
    return out
