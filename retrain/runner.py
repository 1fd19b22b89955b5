"""`retrain run`: the weekly loop in one call, in the order and under the headings of the guide.

1. Verifying prerequisites  2. Technical indicators  3. Determining the feature range
4. Features  5. Labels  6. Training  7. Backtest validation; then the summary and next steps.

The whole run holds the store lock, so a second run exits at once. Every write is atomic and
every step is idempotent: a run killed at any point leaves the previous state, and the next run
picks up where it stopped. ``run()`` is also the Python API for schedulers (``retrain.run``).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import time
from dataclasses import dataclass, field
from typing import Any

import polars as pl

from retrain import calendar, report
from retrain.calendar import AsOf
from retrain.config import MAX_WINDOW_DAYS, Settings, load_settings
from retrain.config import bump_version as bump
from retrain.errors import RetrainError
from retrain.files import atomic_write_text
from retrain.integrity import healing
from retrain.pipeline import PROMOTE_MODES
from retrain.status import LOW_RSI_COVERAGE
from retrain.store import Store

RECENT_DAYS = 7


@dataclass
class RunResult:
    """What a run did: the summary printed at the end, and `--json`'s payload."""

    exchange: str
    feature_version: str
    as_of: str
    bumped_from: str | None = None
    steps: dict[str, Any] = field(default_factory=dict)
    training: dict[str, Any] = field(default_factory=dict)
    backtest: dict[str, Any] | None = None  # the --backtest-days window: the guide's figures, evidence, verdict
    record: dict[str, Any] | None = None  # the whole out-of-sample record the verdict and the gate judge
    gate: dict[str, Any] | None = None  # the promotion decision with its paired test (None when not decided)
    run_id: str | None = None
    promoted: bool = False  # this run made its model the active one
    promotion_reason: str = ""
    unchanged: bool = False  # same bars and routine as run_id, which was reused: no new run
    active: bool = False  # run_id is the active model of (feature_version, exchange) after the run
    model_path: str | None = None
    report_path: str | None = None
    run_dir: str | None = None
    seconds: float = 0.0
    stranded: list = field(default_factory=list)  # after a bump: scopes with only older versions' models
    live: dict[str, Any] | None = None  # step 1: the active model's live record (`retrain monitor`), before the run
    dashboard: str | None = None  # artifacts/daytrading/index.html, rewritten after the run
    default_exchange: str = field(default="NASDAQ", repr=False)  # for the hints; not in the summary
    as_of_given: str | None = field(default=None, repr=False)  # --as-of as given, for the hints

    def to_dict(self) -> dict:
        data = {"ok": True, **dataclasses.asdict(self)}  # as `retrain run --json` prints it
        data.pop("default_exchange")
        data.pop("as_of_given")
        return json.loads(json.dumps(data, default=str))


def _header(title: str) -> None:
    report.echo(report.header(title))


def _prerequisites(store: Store, scope: str, exchanges: list[str], clock: AsOf, skip_indicators: bool,
                   top_n: int = 5) -> dict:
    have = store.exchanges()
    symbols = store.read_symbols().filter(pl.col("exchange").is_in(exchanges))
    if not exchanges or any(e not in have for e in exchanges) or symbols.is_empty():
        listed = ", ".join(have) or "none (the store is empty)"
        example = exchanges[0] if exchanges else "NASDAQ"
        raise RetrainError(f"No symbols found for exchange {scope} in {store.root}",
                           hint=f"exchanges with data: {listed}. Check --exchange (or [run] exchange in retrain.toml), "
                                f"or load data with `retrain ingest PATH --exchange {example}`")
    if symbols.height <= top_n:
        raise RetrainError(f"{scope} has too few symbols to rank: {symbols.height}, and the top {top_n} picks need "
                           f"more than {top_n}",
                           hint="load more symbols (`retrain ingest`), use --exchange ALL, or lower [training] top_n")
    report.echo(report.ok(f"Found {report.n(symbols.height)} symbols for {', '.join(exchanges)}"))
    today = max(clock.today(e) for e in exchanges)
    since = today - dt.timedelta(days=RECENT_DAYS)
    recent = pl.concat([store.scan_bars(e, between=(since, today)).filter(pl.col("date").is_between(since, today, closed="right")).select("date", "rsi").collect()
                        for e in exchanges])
    if recent.is_empty():
        spans = [store.date_span(e) for e in exchanges]
        first, last = min(s[0] for s in spans), max(s[1] for s in spans)
        if today < first:  # before the data: no earlier date can help
            raise RetrainError(
                f"No bars for {scope} as of {clock.label()}: the store's bars start on {first}",
                hint=f"pass an --as-of after {first} with enough history before it for the training window "
                     "(or load older bars: `retrain ingest PATH --exchange EX`)")
        raise RetrainError(
            f"No recent bars for {scope}: none between {since + dt.timedelta(days=1)} and {today} "
            f"(the last bar is from {last}; as of {clock.label()})",
            hint="collect and load the latest bars first: `retrain ingest PATH --exchange EX` "
                 "(or pass --as-of to run as of an earlier date)")
    report.echo(report.ok(f"Found {report.n(recent.height)} recent bars (last {RECENT_DAYS} days, "
                         f"latest {recent['date'].max()})"))
    with_rsi = recent["rsi"].count()
    coverage = with_rsi / recent.height
    text = f"Technical indicators: {report.n(with_rsi)}/{report.n(recent.height)} ({report.pct(coverage)}) with RSI"
    if coverage < LOW_RSI_COVERAGE:
        note = "; --skip-indicators was given, so they stay missing" if skip_indicators else "; they are computed next"
        report.echo(report.warn(f"Low RSI coverage. {text}{note}"))
    else:
        report.echo(report.ok(text))
    holes = {e: m for e in exchanges if (m := _missing_months(store, e))}
    for e, months in holes.items():
        listed = ", ".join(months[:4]) + (f" and {len(months) - 4} more" if len(months) > 4 else "")
        report.echo(report.warn(
            f"{e} has no bar file for {listed}, between months that have one: those sessions have no bars, no "
            f"labels and no new features, so a window over them trains on fewer rows. Restore the file from a "
            f"backup, or ingest that month's bars again (`retrain ingest PATH --exchange {e}`; `retrain verify` "
            f"lists a file set aside as .corrupt)"))
    return {"symbols": symbols.height, "recent_bars": recent.height, "rsi_coverage": coverage,
            "missing_months": holes}


def _missing_months(store: Store, exchange: str) -> list[str]:
    """Months (YYYY-MM) between the exchange's first and last bar file that have none: a whole
    month of sessions without a bar, which an ingest never leaves (a file deleted or moved)."""
    from retrain.remove import months_between

    have = store.months(exchange)  # sorted: the bar files are
    if len(have) < 3:
        return []
    present = set(have)
    first, last = (dt.date.fromisoformat(f"{m}-01") for m in (have[0], have[-1]))
    return [m for m in months_between(first, last) if m not in present]


def _live_line(settings, scope: str, clock: AsOf):
    """Step 1's line or two on the active model's live record since it went live (`retrain
    monitor` has the whole report). Returns (its figures, the monitor's result), or (None, None)
    when there is no active model."""
    from retrain import watch

    try:
        m = watch.run_monitor(settings, scope, clock)
    except RetrainError as exc:
        report.echo(report.warn(f"Live record of the active model: not available ({exc.message})"))
        return None, None
    if not m.model.get("run_id"):
        return None, m
    live = m.live
    if live.get("sessions"):
        vs = f" (expected {m.expected['rank_ic']:+.4f})" if m.expected else ""
        text = (f"Active model {m.model['run_id']}: {live['sessions']} live session(s) scored, rank IC "
                f"{live['rank_ic']:+.4f} (t {live['rank_ic_t']:.2f}){vs}, net {live['net_return']:+.2%}")
    else:
        text = f"Active model {m.model['run_id']}: no live session scored yet (`retrain predict` records them)"
    worst = next((r for r in m.reasons if r["level"] == m.status), None)
    status = f"monitor status {m.status}" + (f": {worst['reason']}" if worst and m.status != "ok" else "")
    report.echo((report.ok if m.status == "ok" else report.warn)(f"{text}; {status}"))
    return {"status": m.status, **{k: live.get(k) for k in ("sessions", "rank_ic", "rank_ic_t", "net_return")}}, m


def _dashboard(settings, clock: AsOf, before=None) -> str | None:
    """Rewrite the dashboard (``watch.refresh_dashboard``; ``before``: step 1's monitor result);
    a failure is a warning (the run's work is done)."""
    from retrain import watch

    path, problem = watch.refresh_dashboard(settings, clock, before)
    if problem:
        report.echo(report.warn(problem))
    return str(path) if path else None


def run(
    exchange: str | None = None,
    training_days: int | None = None,
    backtest_days: int = 30,
    full_rebuild: bool = False,
    bump_version: bool = False,
    skip_indicators: bool = False,
    skip_backtest: bool = False,
    min_rows: int | None = None,
    as_of: str | dt.date | AsOf | None = None,
    promote: str = "auto",
    data_dir: str | None = None,
    artifacts_dir: str | None = None,
    config: str | None = None,
    settings: Settings | None = None,
    quiet: bool = False,
) -> RunResult:
    """The whole weekly loop; the options are those of `retrain run`. Shows the guide-style
    report on stdout (``quiet=True``: sends it to the ``retrain`` logger at INFO instead, so a
    scheduler's task prints nothing unless logging is configured) and returns a RunResult.
    Raises RetrainError (LockBusy when another run holds the store) with the store and the
    active model left as they were."""
    options = dict(exchange=exchange, training_days=training_days, backtest_days=backtest_days,
                   full_rebuild=full_rebuild, bump_version=bump_version, skip_indicators=skip_indicators,
                   skip_backtest=skip_backtest, min_rows=min_rows, as_of=as_of, promote=promote,
                   data_dir=data_dir, artifacts_dir=artifacts_dir, config=config, settings=settings)
    if quiet:
        with report.quietly():
            return _run(**options)
    return _run(**options)


def _run(exchange, training_days, backtest_days, full_rebuild, bump_version, skip_indicators, skip_backtest,
         min_rows, as_of, promote, data_dir, artifacts_dir, config, settings) -> RunResult:
    from retrain import pipeline, steps, training
    from retrain.backtest import BacktestConfig
    from retrain.console import build_features, train_and_report, update_labels

    started = time.perf_counter()
    settings = settings or load_settings(data_dir, artifacts_dir, config)
    if isinstance(as_of, AsOf):
        clock = as_of
    else:
        clock = AsOf.parse(as_of.isoformat() if isinstance(as_of, dt.date) else as_of)
    block_days = BacktestConfig.from_settings(settings).block_days
    if not skip_backtest and backtest_days < block_days:
        raise RetrainError(f"--backtest-days {backtest_days} is shorter than one block of the out-of-sample record "
                           f"({BacktestConfig.retrain_every} sessions: {block_days} calendar days)",
                           hint=f"use --backtest-days {block_days} or more, or --skip-backtest to run without a backtest")
    for name, days in (("--training-days", training_days), ("--backtest-days", backtest_days)):
        if days is not None and not 1 <= days <= MAX_WINDOW_DAYS:
            raise RetrainError(f"{name} {days} is out of range", hint=f"use 1 to {MAX_WINDOW_DAYS:,} calendar days")
    if promote not in PROMOTE_MODES:
        raise RetrainError(f"--promote {promote!r} is not one of {', '.join(PROMOTE_MODES)}")
    if bump_version and promote == "never":
        raise RetrainError("--bump-version with --promote never would leave the new version without an active model",
                           hint="drop --promote never (a new version's first model is always activated)")
    store = Store(settings.data_dir)
    scope = (exchange or settings.default_exchange).strip().upper()
    if scope != "ALL":
        scope = calendar.normalize_exchange(scope, known=store.exchanges() or None, or_all=True)
    cfg = training.TrainConfig.from_settings(settings, training_days=training_days, min_rows=min_rows)
    old_version = settings.feature_version
    if bump_version:  # check now that the file can be bumped; it is written only once the new model exists
        old_version, new_version, _ = bump(settings.config_path, "")
        settings = dataclasses.replace(settings, feature_version=new_version)
    rebuild_features = full_rebuild or bump_version  # a new version starts from scratch
    version = settings.feature_version

    mode = ("full rebuild" if full_rebuild else
            f"incremental; {version} features built from scratch" if bump_version else "incremental")
    flags = "".join(f" {flag}" for flag, on in (("--full-rebuild", full_rebuild), ("--bump-version", bump_version),
                                                ("--skip-indicators", skip_indicators), ("--skip-backtest", skip_backtest))
                    if on) + ("" if clock.is_now else f" --as-of {clock.label()}")
    with store.lock(f"retrain run --exchange {scope}{flags}"):
        exchanges = store.exchanges() if scope == "ALL" else [scope]
        as_of_text = clock.label() if clock.label() != "now" else \
            f"now ({', '.join(f'{clock.today(e)} at {e}' for e in exchanges) or dt.date.today()})"
        today = max((clock.today(e) for e in exchanges), default=dt.date.today())
        result = RunResult(exchange=scope, feature_version=version,
                           as_of=clock.label() if clock.label() != "now" else today.isoformat(),
                           bumped_from=old_version if bump_version else None)
        report.echo(report.RULE + "\nAUTOMATED DAY TRADING MODEL RETRAINING\n" + report.RULE)
        report.echo(f"\nExchange: {scope}\nTraining window: {cfg.training_days} days\n"
                    f"Backtest window: {'skipped' if skip_backtest else f'{backtest_days} days'}\n"
                    f"Minimum rows: {report.n(cfg.min_rows)}\n"
                    f"Feature version: {version}" + (f" (bumping from {old_version})" if bump_version else "")
                    + f"\nMode: {mode}\nAs of: {as_of_text}")

        _header("STEP 1: VERIFYING PREREQUISITES")
        result.steps["prerequisites"] = _prerequisites(store, scope, exchanges, clock, skip_indicators, cfg.top_n)
        result.live, watched = _live_line(settings, scope, clock)

        _header("STEP 2: CALCULATING TECHNICAL INDICATORS")
        if skip_indicators:
            report.echo("Skipped (--skip-indicators)")
            result.steps["indicators"] = {"skipped": True}
        else:
            t = time.perf_counter()
            res = steps.indicators(store, exchanges, force=full_rebuild)
            report.echo(report.ok(f"Updated {report.n(res.updated)} records across {report.n(res.symbols)} symbols "
                                 f"in {time.perf_counter() - t:.1f}s"))
            result.steps["indicators"] = {"updated": res.updated, "symbols": res.symbols}

        _header("STEP 3: DETERMINING FEATURE GENERATION RANGE")
        extend = healing(store, lambda: _feature_range(store, version, exchanges, clock, cfg.training_days,
                                                       backtest_days, rebuild_features, skip_backtest))
        result.steps["feature_range"] = {"mode": "full rebuild" if rebuild_features else "incremental",
                                         "extended_from": str(extend[0]) if extend else None}

        _header("STEP 4: GENERATING FEATURES")
        rows = sessions = 0
        if extend:
            ext = build_features(store, version, exchanges, *extend)
            rows, sessions = ext.rows, ext.sessions
        fres = build_features(store, version, exchanges, full_rebuild=rebuild_features)
        if fres.up_to_date and not extend:
            report.echo(report.ok(f"Features {version} are up to date: no new session and no changed bar"))
        result.steps["features"] = {"rows": rows + fres.rows, "sessions": sessions + fres.sessions,
                                    "ranges": {e: [str(a), str(b)] for e, (a, b) in (fres.ranges or {}).items()}}

        _header("STEP 5: UPDATING LABELS")
        lres = update_labels(store, version, exchanges, clock, start=FIRST_DAY if full_rebuild else None)
        result.steps["labels"] = {"rows": lres.rows}

        _header("STEP 6: TRAINING MODEL")
        # A past --as-of reads the past: the window ends at the last session complete as of then,
        # whatever later sessions the labels cover now.
        until = max((d for d in lres.last_complete.values() if d is not None), default=None)
        end = healing(store, lambda: pipeline.last_labelled(store, version, scope, until=until)) if until else None
        if end is None:
            raise RetrainError(f"no labelled {version} feature rows for {scope} as of {clock.label()}",
                               hint="no session with features was complete by then: "
                                    + ("" if clock.is_now else "pass a later --as-of, or ")
                                    + "load older bars (`retrain ingest`; step 3 above says how many a snapshot needs)")
        window = None if skip_backtest else (end - dt.timedelta(days=backtest_days - 1), end)
        bcfg = BacktestConfig.from_settings(settings, max_positions=cfg.top_n)
        out = train_and_report(settings, scope, cfg, promote, end=end, backtest_window=window, bcfg=bcfg, store=store,
                               on_backtest=lambda: _header("STEP 7: RUNNING BACKTEST VALIDATION"))
        if skip_backtest:
            _header("STEP 7: RUNNING BACKTEST VALIDATION")
            report.echo("Skipped (--skip-backtest)")
        if bump_version:
            atomic_write_text(bump(settings.config_path, dt.date.today().isoformat())[2], settings.config_path,
                              checksum=False)  # edited by hand: no checksum
            report.echo(report.ok(f"Feature version bumped: {old_version} -> {version} in {settings.config_path} "
                                 f"({old_version}'s features and models stay on disk: "
                                 f"`retrain predict --version {old_version}`)"))
        meta = out.meta
        result.training = {"samples": meta["rows"], "features": len(meta["feature_columns"]),
                           "sessions": meta["training_window"]["sessions"],
                           "window": [meta["training_window"]["start"], meta["training_window"]["end"]],
                           "cv": meta["cv"]["summary"]}
        result.run_id, result.promoted, result.promotion_reason = out.run_id, out.promoted, out.reason
        result.unchanged, result.active = out.unchanged, out.active
        result.model_path = str(out.active_path) if out.active else None
        result.run_dir = str(out.run_dir)
        if window is not None and meta.get("backtest") is not None:
            result.backtest = {k: v for k, v in meta["backtest"].items() if k != "config"}
            result.record = meta.get("record")
            result.report_path = str(out.run_dir / "report.html")
        result.gate = out.gate
        result.default_exchange = settings.default_exchange
        result.as_of_given = None if clock.is_now else clock.label()
        result.stranded = _stranded(settings, version, scope) if bump_version else []
        result.seconds = round(time.perf_counter() - started, 3)
    if clock.is_now:  # a run as of a past day leaves the present's files as they were
        result.dashboard = _dashboard(settings, clock, watched)

    _summary(result)
    return result


FIRST_DAY = dt.date(1970, 1, 2)


def _feature_range(store: Store, version: str, exchanges: list[str], clock: AsOf, training_days: int,
                   backtest_days: int, full_rebuild: bool, skip_backtest: bool):
    """Print what step 4 builds. Returns (start, end) of extra history to build first when the
    existing snapshots start later than the training (and backtest) window needs, else None.
    Warns, with what can help, when the bars cannot give the window enough history."""
    from retrain.features import MIN_HISTORY

    days = training_days + (0 if skip_backtest else backtest_days)
    need = max(clock.today(e) for e in exchanges) - dt.timedelta(days=days + 7)
    bar_span = {e: store.date_span(e) for e in exchanges}
    first_bar, last_bar = min(a for a, _ in bar_span.values()), max(b for _, b in bar_span.values())

    def first_possible(exchange: str) -> dt.date:  # a snapshot needs MIN_HISTORY earlier bars
        sessions = calendar.sessions(exchange, bar_span[exchange][0])
        return sessions[MIN_HISTORY] if len(sessions) > MIN_HISTORY else dt.date.max

    possible = {e: first_possible(e) for e in exchanges}
    earliest = min(possible.values())
    extend = None
    if full_rebuild:
        report.echo("Full rebuild: every session from each symbol's first bar to the next session")
    else:
        existing = store.scan_table("features", version)
        state = store.read_state("features", version)
        spans = {}
        if existing is not None:
            # covered: the first session a build covered; first_row: the first snapshot that exists
            spans = {e: (dt.date.fromisoformat(state.get(e, {}).get("first_trade_date", a.isoformat())), a, b)
                     for e, a, b in existing.group_by("exchange")
                     .agg(pl.col("trade_date").min(), pl.col("trade_date").max().alias("last")).collect().iter_rows()}
        for e in exchanges:
            if e in spans:
                nxt = calendar.next_session(e, bar_span[e][1])
                if spans[e][2] >= nxt:
                    report.echo(f"Incremental mode: {e} snapshots already reach the session after the last bar, "
                                f"{nxt}; only sessions whose bars were re-ingested since are rebuilt")
                else:
                    report.echo(f"Incremental mode: last {e} snapshot is for {spans[e][2]}; building the sessions "
                                f"after it up to {nxt}, plus any that depend on bars re-ingested since")
            else:
                report.echo(f"{e}: no {version} snapshots yet; building every session from the first bar")
        covered = [spans[e][0] for e in exchanges if e in spans]
        if covered:
            first_row = min(spans[e][1] for e in exchanges if e in spans)
            if min(covered) <= max(need, first_bar):
                report.echo(f"Snapshots go back to {first_row}; the {days}-day window needs them from {need}")
            else:
                extend = (max(need, first_bar), min(covered))
                report.echo(f"Snapshots go back to {first_row}; the {days}-day window needs them from {need}: "
                            f"extending backwards to build {extend[0]} to {extend[1]} too (never before the first "
                            f"bar, {first_bar})")
    if all(possible[e] > calendar.next_session(e, bar_span[e][1]) for e in exchanges):
        report.echo(report.warn(
            f"Too little history for any snapshot: the bars run from {first_bar} to {last_bar}, and a symbol needs "
            f"{MIN_HISTORY} earlier bars for its first snapshot. What can help: older bars (`retrain ingest`)"))
    elif earliest > need:
        report.echo(report.warn(
            f"Not enough history for the {days}-day window: it starts {need}, but the bars start {first_bar} and a "
            f"symbol needs {MIN_HISTORY} earlier bars for its first snapshot, so snapshots start {earliest} at the "
            f"earliest. What can help: " + ("" if clock.is_now else "a later --as-of, ") + "a shorter --training-days"
            + ("" if skip_backtest else " or --backtest-days")
            + ", or older bars (`retrain ingest`)"))
    return extend


def _stranded(settings: Settings, version: str, scope: str) -> list[str]:
    """Scopes other than ``scope`` that have an active model of an older version but none of
    ``version``: after a bump, what must be retrained before `predict` works for them."""
    from retrain.registry import Registry

    active = Registry(settings.artifacts_dir, settings.default_exchange).state()["active"]
    older = {s for v, scopes in active.items() if v != version for s in scopes}
    return sorted(s for s in older - set(active.get(version, {})) if s != scope)


def scope_flags(scope: str, default_exchange: str) -> str:
    """`` --exchange X`` when ``scope`` is not what a command without --exchange would use."""
    return "" if scope == default_exchange else f" --exchange {scope}"


def _summary(result: RunResult) -> None:
    report.echo("\n" + report.RULE + "\n" + report.ok("RETRAINING COMPLETE!") + "\n" + report.RULE)
    cv = result.training["cv"]
    report.echo("\nSummary:")
    report.echo(f"   • Feature Version: {result.feature_version}"
                + (f" (bumped from {result.bumped_from})" if result.bumped_from else ""))
    report.echo(f"   • Training Samples: {report.n(result.training['samples'])}")
    report.echo(f"   • Features: {result.training['features']}")
    report.echo(f"   • R² Score: {cv['r2']['mean']:.4f} (±{cv['r2']['std']:.4f})")
    report.echo(f"   • MAE Score: {cv['mae']['mean']:.4f} (±{cv['mae']['std']:.4f})")
    report.echo(f"   • Rank IC: {cv['rank_ic']['mean']:+.4f} (±{cv['rank_ic']['std']:.4f})")
    if result.backtest:
        b = result.backtest
        r = result.record or {}
        record = (f"; record of {r['sessions']} sessions: Sharpe {r['sharpe']:.2f} ± {r['sharpe_se']:.2f}, "
                  f"PSR {r['psr']:.2f}" if r.get("sessions") and r.get("sharpe") == r.get("sharpe") else "")
        report.echo(f"   • Backtest: {b['total_return']:+.2%} over {b['sessions']} sessions, Sharpe {b['sharpe']:.2f}"
                    f"{record}: {b['verdict']}")
    if result.unchanged:
        state = (f"is now the active model: {result.model_path}" if result.promoted else
                 f"stays the active model: {result.model_path}" if result.active else
                 f"stays as it was, not active ({result.promotion_reason})")
        report.echo(f"   • Model: nothing changed since run {result.run_id} (same bars, same routine), which {state}")
    elif result.promoted:
        report.echo(f"   • Model: {result.model_path} (run {result.run_id}, active)")
    else:
        report.echo(f"   • Model: run {result.run_id} saved, not promoted ({result.promotion_reason})")
    report.echo(f"   • Took: {result.seconds:.1f}s")
    report.echo("\nNext steps:")
    flags = scope_flags(result.exchange, result.default_exchange)
    as_of = "" if result.as_of_given is None else f" --as-of {result.as_of_given}"
    steps = []
    if result.report_path:
        steps.append(f"Review the backtest report: {result.report_path}")
    if result.active:
        steps.append(f"Rank the next session: `retrain predict{flags}{as_of} --top 20`")
    else:
        steps.append(f"Compare runs with `retrain models list`; promote this one with "
                     f"`retrain models promote {result.run_id}`")
        steps.append(f"Rank the next session with it: `retrain predict{flags}{as_of} --model {result.run_id} --top 20`")
    for other in result.stranded:
        o_flags = scope_flags(other, result.default_exchange)
        steps.append(f"{other} has no {result.feature_version} model yet: `retrain run{o_flags}` trains one "
                     f"(until then `retrain predict{o_flags} --version {result.bumped_from}` ranks with the old one)")
    steps.append(f"Paper trade a new model for a few weeks before it trades real money: `retrain predict{flags}` "
                 f"daily, then `retrain monitor{flags}` (README: Paper trading and monitoring)"
                 + (f"; dashboard: {result.dashboard}" if result.dashboard else ""))
    steps.append(f"Schedule it weekly: `retrain run{flags}` after loading the week's bars "
                 "(README: Scheduling, for cron and systemd)")
    for i, text in enumerate(steps, 1):
        report.echo(f"   {i}. {text}")
