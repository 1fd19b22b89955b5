"""Command-line interface: parse options, call one function, render its result. No logic here."""

from __future__ import annotations

import functools
import os
import sys
import traceback
from pathlib import Path

import click

from retrain import calendar, report
from retrain.calendar import AsOf
from retrain.config import DEFAULT_CONFIG, MAX_WINDOW_DAYS, Settings, load_settings
from retrain.console import build_features, fmt_metric, train_and_report, update_labels
from retrain.errors import RetrainError, storage_fault
from retrain.integrity import healing
from retrain.store import Store

DEBUG_ENV = "RETRAIN_DEBUG"


def as_retrain_error(exc: Exception) -> RetrainError | None:
    """``exc`` as a message for people: a RetrainError, or a fault of the machine (disk full,
    read-only store) however the library that met it spelled it; None for anything else (a bug:
    its traceback is shown)."""
    return exc if isinstance(exc, RetrainError) else storage_fault(exc)


class _Group(click.Group):
    """Turns RetrainError (and faults of the machine) into a message on stderr and a non-zero
    exit, never a traceback; RETRAIN_DEBUG=1 adds the traceback."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.ClickException, click.exceptions.Abort):
            raise
        except Exception as exc:  # noqa: BLE001 - classified below; anything else is re-raised
            err = as_retrain_error(exc)
            if err is None:
                raise
            if os.environ.get(DEBUG_ENV, "") not in ("", "0"):
                traceback.print_exc()
            click.echo(f"error: {err.message}", err=True)
            if err.hint:
                click.echo(f"  -> {err.hint}", err=True)
            ctx.exit(err.exit_code)


def store_options(f):
    """--data-dir / --artifacts-dir / --config, accepted after the subcommand (and before it)."""

    @click.option("--data-dir", type=click.Path(file_okay=False), default=None,
                  help="Store root [env RETRAIN_DATA_DIR; default ./data].")
    @click.option("--artifacts-dir", type=click.Path(file_okay=False), default=None,
                  help="Models and reports [env RETRAIN_ARTIFACTS_DIR; default ./artifacts].")
    @click.option("--config", type=click.Path(dir_okay=False), default=None,
                  help="Project config [env RETRAIN_CONFIG; default ./retrain.toml].")
    @click.pass_context
    @functools.wraps(f)
    def wrapper(ctx: click.Context, data_dir, artifacts_dir, config, **kwargs):
        if isinstance(ctx.command, click.Group) and ctx.invoked_subcommand:
            return None  # a group's own action (`retrain sweep`): its subcommand loads the settings
        top = ctx.find_root().params
        settings = load_settings(
            data_dir=data_dir or top.get("data_dir"),
            artifacts_dir=artifacts_dir or top.get("artifacts_dir"),
            config=config or top.get("config"),
        )
        if settings.config_path is None:
            click.echo(f"note: no {DEFAULT_CONFIG} in {Path.cwd()}; using built-in defaults "
                       "(`retrain init` writes a documented one)", err=True)
        return ctx.invoke(f, settings, **kwargs)

    return wrapper


def as_of_option(f):
    def check(ctx, param, value):  # a bad or future --as-of stops the command before any work
        if value is not None:
            AsOf.parse(value)
        return value

    return click.option(
        "--as-of", "as_of", default=None, metavar="DATE", callback=check,
        help="Run as if it were this date (end of day, YYYY-MM-DD) or local time (YYYY-MM-DDTHH:MM); "
             "never later than now.",
    )(f)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option("--data-dir", type=click.Path(file_okay=False), default=None,
              help="Store root [env RETRAIN_DATA_DIR; default ./data].")
@click.option("--artifacts-dir", type=click.Path(file_okay=False), default=None,
              help="Models and reports [env RETRAIN_ARTIFACTS_DIR; default ./artifacts].")
@click.option("--config", type=click.Path(dir_okay=False), default=None,
              help="Project config [env RETRAIN_CONFIG; default ./retrain.toml].")
@click.version_option(package_name="retrain")
def main(data_dir, artifacts_dir, config):
    """Keep a day-trading model fresh: bars -> indicators -> features -> labels -> model -> backtest."""


# ----------------------------------------------------------------------- init
@main.command()
@click.argument("directory", metavar="[DIR]", required=False, default=".", type=click.Path(file_okay=False))
@click.option("--force", is_flag=True, help="Replace an existing retrain.toml.")
def init(directory, force):
    """Write a documented retrain.toml (every setting, its default and meaning) into DIR [default: .]."""
    from retrain.config import default_config_text
    from retrain.files import atomic_write_text

    path = Path(directory) / DEFAULT_CONFIG
    if path.exists() and not force:
        raise RetrainError(f"{path} already exists; not overwritten",
                           hint="edit it, or pass --force to replace it with the documented defaults")
    atomic_write_text(default_config_text(), path, checksum=False)  # edited by hand
    click.echo(report.ok(f"Wrote {path.resolve()}: every setting with its default and what it does."))
    go = "" if Path(directory).resolve() == Path.cwd().resolve() else f"`cd {directory}`, then "
    click.echo(f"Next: {go}`retrain sample-data` (a synthetic market to try) or `retrain ingest PATH --exchange EX` "
               "(your bars), then `retrain run`.")


# ---------------------------------------------------------------- sample-data
@main.command("sample-data")
@click.option("--symbols", type=click.IntRange(min=3), default=None, help="Number of symbols [retrain.toml; 300].")
@click.option("--days", type=click.IntRange(min=2), default=None, help="Sessions per exchange [retrain.toml; 320].")
@click.option("--seed", type=click.IntRange(min=0), default=None, help="Random seed [retrain.toml; 7].")
@click.option("--end", default=None, metavar="DATE",
              help="Last session, not in the future (default: the last complete one).")
@click.option("--no-signal", is_flag=True, help="No predictable intraday component (for leak tests).")
@click.option("--signal-until", default=None, metavar="DATE",
              help="The predictable component stops after DATE: a regime break, for trying `retrain monitor`.")
@click.option("--if-empty", is_flag=True, help="Do nothing when the store already holds bars.")
@click.option("--top-up", is_flag=True,
              help="Extend the recorded sample market to --end (default: the last complete session); "
                   "write it when the store holds no bars.")
@as_of_option
@store_options
def sample_data(settings: Settings, symbols, days, seed, end, no_signal, signal_until, if_empty, top_up, as_of):
    """Write the synthetic sample market (NASDAQ, NYSE, TSE) into the store."""
    from retrain import sample

    until = calendar.parse_date(signal_until, "--signal-until") if signal_until else None
    if until and no_signal:
        raise RetrainError("--signal-until and --no-signal exclude each other",
                           hint="--signal-until plants the signal up to a day; --no-signal plants none")
    if if_empty and top_up:
        raise RetrainError("--if-empty and --top-up exclude each other",
                           hint="--top-up also writes the sample into an empty store")
    store = Store(settings.data_dir)
    if if_empty and store.has_bars():
        click.echo(f"The store {settings.data_dir} already holds bars; sample market not written.")
        return
    clock = AsOf.parse(as_of)
    end_date, note = sample.resolve_end(end, clock)
    if note:
        click.echo(note)
    if top_up and store.has_bars():
        given = {k: v for k, v in {"symbols": symbols, "days": days, "seed": seed}.items() if v is not None}
        done = sample.top_up(store, end_date, given | ({"signal": False} if no_signal else {})
                             | ({"signal_until": until.isoformat()} if until else {}))
        if done.status == "not the sample":
            click.echo(f"The store {settings.data_dir} holds bars but no sample-market record: it is not the "
                       "sample market; nothing written.")
            click.echo(f"   (a sample written before top-ups existed has no record: remove {settings.data_dir} "
                       f"and {settings.artifacts_dir} to start the demo afresh)")
        elif done.status == "up to date":
            click.echo(f"The sample market in {settings.data_dir} is up to date: it ends {done.end}"
                       + ("." if end_date == done.end else f", after {end_date}; nothing added."))
        else:
            click.echo(report.ok(
                f"Sample market topped up in {settings.data_dir}: {done.sessions} new "
                f"session{'s' if done.sessions != 1 else ''} after {done.previous_end}, "
                f"{report.n(done.bars.height)} bars, now ending {done.end}"
            ))
            for ex, count in done.bars.group_by("exchange").len().sort("exchange").iter_rows():
                click.echo(f"   {ex:<7} {report.n(count):>10} bars")
        return
    cfg = settings.section("sample")
    symbols = symbols or int(cfg.get("symbols", 300))
    days = days or int(cfg.get("days", 320))
    seed = int(cfg.get("seed", 7)) if seed is None else seed
    bars, syms, result, _ = sample.write(store, symbols=symbols, days=days, seed=seed, end=end_date,
                                         signal=not no_signal, signal_until=until)
    counts = bars.group_by("exchange").len().sort("exchange").iter_rows()
    kind = "no signal" if no_signal else f"signal until {until}" if until else "with signal"
    click.echo(report.ok(
        f"Sample market ({kind}, seed {seed}) written to {settings.data_dir}: "
        f"{report.n(bars.height)} bars, {report.n(syms.height)} symbols, {days} sessions ending {end_date}"
    ))
    for ex, count in counts:
        click.echo(f"   {ex:<7} {report.n(count):>10} bars")
    click.echo(f"   {report.n(result.new)} new, {report.n(result.updated)} updated, "
               f"{report.n(result.unchanged)} unchanged")


# --------------------------------------------------------------------- ingest
@main.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path())
@click.option("--exchange", default=None, help="Exchange of the input (NASDAQ, NYSE, TSE); long files may carry their own.")
@click.option("--format", "fmt", type=click.Choice(["auto", "yahoo", "stooq", "long"]), default="auto",
              show_default=True, help="Input format, detected per file with auto.")
@click.option("--symbols-file", type=click.Path(exists=True, dir_okay=False), default=None,
              help="CSV of symbol[,exchange],name,sector to record alongside.")
@click.option("--strict", is_flag=True, help="Write nothing, and exit 1, if any row or file is rejected.")
@as_of_option
@store_options
def ingest(settings: Settings, paths, exchange, fmt, symbols_file, strict, as_of):
    """Load daily bars from files or directories (recursively) into the store.

    Reads CSV (.csv, .txt, also gzip-compressed: .csv.gz, .txt.gz) and Parquet (.parquet, .pq);
    in a directory, other files are skipped and counted.

    Re-ingesting a bar replaces it. Rejected rows go to DATA_DIR/quarantine/<timestamp>.csv
    with their reason; bars already stored are never lost.
    """
    from retrain import ingest as ing

    store = Store(settings.data_dir)
    rep = ing.ingest(store, paths, exchange, AsOf.parse(as_of), fmt=fmt, symbols_file=symbols_file, strict=strict)
    where = ", ".join(f"{ex} {report.n(c)}" for ex, c in rep.by_exchange.items()) or "-"
    click.echo(f"Read {report.n(rep.files)} file(s), {report.n(rep.rows_read)} row(s); valid bars by exchange: {where}")
    if rep.skipped:
        click.echo(report.warn(f"Skipped {report.n(len(rep.skipped))} file(s) in the directories given that are not "
                               f"data files (.csv, .txt, .parquet, .pq; .csv.gz, .txt.gz), e.g. {rep.skipped[0]}"))
    for path, problem in rep.file_problems:
        click.echo(report.fail(f"{path}: {problem}"))
    if rep.written:
        click.echo(report.ok(f"Stored {report.n(rep.accepted)} bars: {report.n(rep.new)} new, "
                             f"{report.n(rep.updated)} updated, {report.n(rep.unchanged)} unchanged"))
        if rep.symbols_added:
            click.echo(report.ok(f"Added {report.n(rep.symbols_added)} symbol(s)"))
    if rep.rejected:
        click.echo(report.warn(f"Rejected {report.n(rep.rejected)} row(s); details in {rep.quarantine}"))
        for reason, count in rep.rejects.items():
            click.echo(f"   {report.n(count):>8}  {reason}")
    refused = not rep.written and strict and (rep.rejected or rep.file_problems)
    if refused:
        click.echo(report.fail("--strict: nothing was written, because of the problems above"))
    code = ing.exit_code(rep, strict)
    if code and refused and rep.accepted:
        click.echo(f"error: nothing was ingested: --strict, and {report.n(rep.rejected)} row(s) and "
                   f"{report.n(len(rep.file_problems))} file(s) had problems (above"
                   + (f"; the rows are in {rep.quarantine})" if rep.rejected else ")")
                   + "\n  -> fix them and ingest again, or ingest without --strict to store the "
                   f"{report.n(rep.accepted)} good bar(s)", err=True)
    elif code and not rep.accepted:
        why = ("every file above had a problem" if rep.file_problems and not rep.rows_read else
               f"every row was rejected (reasons above; the rows are in {rep.quarantine})" if rep.rejected else
               "no bar was read")
        click.echo(f"error: nothing was ingested: {why}\n  -> fix the input and ingest it again (`retrain ingest "
                   "--help` lists the formats it reads); no bar was stored", err=True)
    sys.exit(code)


# --------------------------------------------------------------------- remove
@main.command()
@click.option("--exchange", required=True, help="Exchange to remove the bars from (NASDAQ, NYSE, TSE).")
@click.option("--symbol", "symbols", multiple=True, required=True, metavar="SYM",
              help="Symbol whose bars go (repeat for several).")
@click.option("--start", default=None, metavar="DATE", help="First bar date to remove [its first bar].")
@click.option("--end", default=None, metavar="DATE", help="Last bar date to remove [its last bar].")
@click.option("--yes", is_flag=True, help="Remove them; without it, only show what would go.")
@store_options
def remove(settings: Settings, exchange, symbols, start, end, yes):
    """Remove a symbol's bars from one exchange (a wrong ingest), with what depends on them.

    The bars dated in [--start, --end] (default: all) go, with the symbol's feature rows they
    served (every feature version) and, when no bar is left, its entry in symbols.parquet. The
    change is recorded so that the next `retrain run --exchange EX` (or `retrain indicators` then
    `retrain features`) recomputes what depended on them. Without --yes nothing changes (exit 1).
    """
    from retrain import remove as rm

    store = Store(settings.data_dir)
    first, last = _date_opt(start, "--start"), _date_opt(end, "--end")
    p = rm.remove(store, exchange, list(symbols), first, last) if yes else rm.plan(store, exchange, list(symbols),
                                                                                   first, last)
    ex = p.exchange
    verb = "Removed" if p.done else "Would remove"
    for s in p.symbols:
        what = f"{report.n(s.bars)} {s.symbol} bar{'s' if s.bars != 1 else ''}"
        if s.bars:
            what += f" ({s.first} to {s.last})"
        parts = [f"{verb} {what} from {ex}"]
        if s.entry_goes:
            parts.append(f"its symbol entry ({s.symbol}, {ex}) {'went' if p.done else 'goes'}")
        elif s.bars:
            parts.append(f"{s.symbol} stays listed on {ex}")
        if s.later:
            parts.append(f"its {report.n(s.later)} later bar{'s' if s.later != 1 else ''} "
                         f"{'will' if p.done else 'would'} get new indicators")
        click.echo((report.ok if p.done else report.warn)("; ".join(parts)))
    rows = ", ".join(f"{v} {report.n(c)}" for v, c in p.feature_rows.items() if c) or "none"
    click.echo(f"   {'deleted' if p.done else 'would delete'} the feature rows those bars served: {rows}")
    if p.mark_session:
        click.echo(f"   the next `retrain features` {'rebuilds' if p.done else 'would rebuild'} {ex} feature rows "
                   f"from {p.mark_session} on (market and sector context of the sessions after the removed bars)")
    if not p.done:
        cmd = " ".join(["retrain remove --exchange", ex, *[f"--symbol {s.symbol}" for s in p.symbols],
                        *([f"--start {first}"] if first else []), *([f"--end {last}"] if last else []), "--yes"])
        click.echo(report.warn(f"Nothing removed (a dry run without --yes). To remove them: `{cmd}`"))
        sys.exit(1)
    if p.bars:
        flag = "" if ex == settings.default_exchange else f" --exchange {ex}"
        click.echo(f"Next: `retrain run{flag}` (or `retrain indicators` then `retrain features`) brings {ex}'s "
                   "indicators and features up to date.")


# ----------------------------------------------------------------- indicators
def _exchanges(store: Store, exchange: str | None) -> list[str]:
    """The exchanges a step works on: the one named (which must have bars), else all with bars."""
    from retrain.store import require_exchange_bars

    if exchange and exchange.upper() != "ALL":
        ex = calendar.normalize_exchange(exchange, or_all=True)
        require_exchange_bars(store, ex)
        return [ex]
    have = store.exchanges()
    if not have:
        raise RetrainError(f"the store {store.root} holds no bars",
                           hint="load some with `retrain ingest PATH --exchange EX` or `retrain sample-data`")
    return have


@main.command()
@click.option("--exchange", default=None, help="Only this exchange (default: all with bars).")
@click.option("--force", is_flag=True, help="Recompute every bar, not only missing or stale ones.")
@store_options
def indicators(settings: Settings, exchange, force):
    """Compute RSI(14), MACD(12,26,9), ATR(14) and OBV where missing or stale."""
    import time

    from retrain import steps
    from retrain.status import LOW_RSI_COVERAGE, exchange_status

    store = Store(settings.data_dir)
    exchanges = _exchanges(store, exchange)
    started = time.perf_counter()
    result = steps.indicators(store, exchanges, force=force)
    took = time.perf_counter() - started
    click.echo(report.ok(f"Updated {report.n(result.updated)} bars across {report.n(result.symbols)} symbols "
                         f"in {took:.1f}s ({result.months_written} month file(s) written)"))
    for st in exchange_status(store, exchange and exchanges[0]):
        mark = report.ok if st.rsi_coverage >= LOW_RSI_COVERAGE else report.warn
        click.echo(mark(f"{st.exchange}: RSI on {report.n(st.bars_with_rsi)}/{report.n(st.bars)} bars "
                        f"({report.pct(st.rsi_coverage)}; the first 14 bars of each symbol have none)"))


# ------------------------------------------------------------ features/labels
def _date_opt(value, option):
    return calendar.parse_date(value, option) if value else None


@main.command()
@click.option("--start-date", default=None, metavar="DATE", help="First trade date to (re)build.")
@click.option("--end-date", default=None, metavar="DATE", help="Last trade date to (re)build.")
@click.option("--exchange", default=None, help="Only this exchange (default: all with bars).")
@click.option("--full-rebuild", is_flag=True, help="Regenerate every row of the current feature version.")
@store_options
def features(settings: Settings, start_date, end_date, exchange, full_rebuild):
    """Build feature snapshots of the current version (retrain.toml [features] version).

    Incremental by default: the sessions after the last snapshot, plus whatever depends on bars
    re-ingested since. Each row uses only bars strictly before its trade date.
    """

    store = Store(settings.data_dir)
    exchanges = _exchanges(store, exchange)
    start, end = _date_opt(start_date, "--start-date"), _date_opt(end_date, "--end-date")
    if start and end and start > end:
        raise RetrainError(f"--start-date {start} is after --end-date {end}", hint="swap them")
    result = build_features(store, settings.feature_version, exchanges, start, end, full_rebuild)
    if result.up_to_date:
        click.echo(report.ok(f"Features {result.version} are up to date; nothing to build"))


@main.command()
@click.option("--date", "date_", default=None, metavar="DATE", help="Label this one session.")
@click.option("--start-date", default=None, metavar="DATE", help="First session to (re)label.")
@click.option("--end-date", default=None, metavar="DATE", help="Last session to (re)label.")
@click.option("--exchange", default=None, help="Only this exchange (default: all with bars).")
@as_of_option
@store_options
def labels(settings: Settings, date_, start_date, end_date, exchange, as_of):
    """Label complete sessions with their open-to-close return (and excursions).

    Incremental by default; a session gets a label only after its close.
    """
    if date_ and (start_date or end_date):
        raise RetrainError("--date cannot be combined with --start-date/--end-date", hint="use one or the other")
    start = _date_opt(date_ or start_date, "--date" if date_ else "--start-date")
    end = _date_opt(date_ or end_date, "--date" if date_ else "--end-date")
    if start and end and start > end:
        raise RetrainError(f"--start-date {start} is after --end-date {end}", hint="swap them")
    store = Store(settings.data_dir)
    update_labels(store, settings.feature_version, _exchanges(store, exchange), AsOf.parse(as_of), start, end)


# ---------------------------------------------------------------------- train
def _scope(store: Store, exchange: str | None, settings: Settings) -> str:
    """ALL or one exchange that has bars (default: retrain.toml [run] exchange)."""
    name = (exchange or settings.default_exchange).upper()
    if name == "ALL":
        _exchanges(store, None)
        return "ALL"
    return _exchanges(store, name)[0]


@main.command()
@click.option("--exchange", default=None, help="NASDAQ, NYSE, TSE or ALL [retrain.toml [run] exchange].")
@click.option("--training-days", type=click.IntRange(min=1, max=MAX_WINDOW_DAYS), default=None, help="Calendar days of training window [90].")
@click.option("--min-rows", type=click.IntRange(min=1), default=None, help="Fewest training rows accepted [500].")
@click.option("--promote", type=click.Choice(["auto", "always", "never"]), default="auto", show_default=True,
              help="auto: activate when out-of-sample rank IC is not worse than the active model's.")
@click.option("--end-date", default=None, metavar="DATE", help="End the window here instead of the last labelled session.")
@store_options
def train(settings: Settings, exchange, training_days, min_rows, promote, end_date):
    """Train LightGBM on the rolling window with walk-forward CV by session; save a run."""
    from retrain import training

    store = Store(settings.data_dir)
    scope = _scope(store, exchange, settings)
    cfg = training.TrainConfig.from_settings(settings, training_days=training_days, min_rows=min_rows)
    train_and_report(settings, scope, cfg, promote, end=_date_opt(end_date, "--end-date"))


@main.command()
@click.option("--start-date", default=None, metavar="DATE", help="First session [30 days before the end].")
@click.option("--end-date", default=None, metavar="DATE", help="Last session [the last labelled one].")
@click.option("--bankroll", type=float, default=10_000.0, show_default=True, help="Starting capital.")
@click.option("--max-positions", type=click.IntRange(min=1), default=5, show_default=True, help="Positions per session.")
@click.option("--cost-bps", type=click.FloatRange(min=0), default=5.0, show_default=True, help="Cost per side, basis points.")
@click.option("--slippage-bps", type=click.FloatRange(min=0), default=5.0, show_default=True, help="Slippage per side, bps.")
@click.option("--retrain-every", type=click.IntRange(min=1), default=5, show_default=True,
              help="Weekdays per block of the record's grid; one model per block.")
@click.option("--min-dollar-volume", type=click.FloatRange(min=0), default=None,
              help="Skip symbols whose 20-session average dollar volume is below this.")
@click.option("--exchange", default=None, help="NASDAQ, NYSE, TSE or ALL [retrain.toml [run] exchange].")
@click.option("--training-days", type=click.IntRange(min=1, max=MAX_WINDOW_DAYS), default=None, help="Calendar days of each training window [90].")
@click.option("--min-rows", type=click.IntRange(min=1), default=None, help="Fewest training rows accepted [500].")
@click.option("--promote", type=click.Choice(["auto", "always", "never"]), default="never", show_default=True,
              help="never: the run stays a candidate, the active model is untouched; auto or always to apply "
                   "the promotion rule.")
@store_options
def backtest(settings: Settings, start_date, end_date, bankroll, max_positions, cost_bps, slippage_bps,
             retrain_every, min_dollar_volume, exchange, training_days, min_rows, promote):
    """Walk-forward out-of-sample backtest of the retraining routine; saves a run with its report.

    Sessions fall into blocks of --retrain-every weekdays on a fixed grid counted from Monday
    1970-01-05 (with 5: calendar weeks). Each block is predicted by a model of the routine trained
    on the --training-days window that ends one embargo before it. Each session buys the top
    --max-positions at the open and sells at the close, paying cost and slippage on both sides.

    The blocks are the routine's out-of-sample record (artifacts/daytrading/records/): a block whose
    routine and rows are unchanged is read back, not retrained, and the record grows up to
    [backtest] record_sessions sessions (252). The --start-date..--end-date window, at least one
    block (7 days with --retrain-every 5), is the headline; the verdict judges the whole record:

    \b
      EXCELLENT/GOOD need evidence of an edge: PSR(0) >= 0.95 and rank-IC
        t >= 2; then EXCELLENT: Sharpe >= 1.5, a positive return that beats
        the universe; GOOD: Sharpe >= 1.0, a positive return; else MARGINAL.
      POOR/MARGINAL need evidence of no useful edge: PSR(0) <= 0.05 (POOR),
        or a one-sided 95% upper bound of the rank IC below 0.01 or of the
        Sharpe below 1.0; then MARGINAL when the Sharpe is >= 0.5 or the
        return is positive, else POOR.
      INCONCLUSIVE otherwise, and always below 20 sessions, with how many
        more sessions would settle it.
    """
    import datetime as dt

    from retrain import pipeline, training
    from retrain.backtest import BacktestConfig

    store = Store(settings.data_dir)
    scope = _scope(store, exchange, settings)
    cfg = training.TrainConfig.from_settings(settings, training_days=training_days, min_rows=min_rows)
    end = _date_opt(end_date, "--end-date") or healing(
        store, lambda: pipeline.last_labelled(store, settings.feature_version, scope))
    if end is None:
        raise RetrainError(f"no labelled {settings.feature_version} feature rows for {scope}",
                           hint="run `retrain indicators`, `retrain features` and `retrain labels` first")
    start = _date_opt(start_date, "--start-date") or end - dt.timedelta(days=29)
    if start > end:
        raise RetrainError(f"--start-date {start} is after --end-date {end}", hint="swap them")
    bcfg = BacktestConfig.from_settings(settings, bankroll=bankroll, max_positions=max_positions, cost_bps=cost_bps,
                                        slippage_bps=slippage_bps, retrain_every=retrain_every,
                                        min_dollar_volume=min_dollar_volume)
    if (end - start).days + 1 < bcfg.block_days:
        raise RetrainError(f"the backtest window {start}..{end} ({(end - start).days + 1} days) is shorter than one "
                           f"block of the record ({bcfg.retrain_every} sessions: {bcfg.block_days} days)",
                           hint=f"pass a --start-date at least {bcfg.block_days} days before {end} "
                                f"(e.g. --start-date {end - dt.timedelta(days=bcfg.block_days - 1)})")
    train_and_report(settings, scope, cfg, promote, end=end, backtest_window=(start, end), bcfg=bcfg)


# ------------------------------------------------------------------------ run
@main.command()
@click.option("--exchange", default=None, help="NASDAQ, NYSE, TSE or ALL [retrain.toml [run] exchange; NASDAQ].")
@click.option("--training-days", type=click.IntRange(min=1, max=MAX_WINDOW_DAYS), default=None,
              help="Calendar days of the rolling training window [retrain.toml; 90].")
@click.option("--backtest-days", type=click.IntRange(min=1, max=MAX_WINDOW_DAYS), default=30, show_default=True,
              help="Calendar days of the backtest window shown as the headline (at least one block of the "
                   "out-of-sample record: 7); the verdict and the gate judge the whole record.")
@click.option("--full-rebuild", is_flag=True, help="Recompute every indicator, feature and label, not only new ones.")
@click.option("--bump-version", is_flag=True,
              help="vN -> vN+1 in retrain.toml, build its features from scratch and train its model; vN stays usable.")
@click.option("--skip-indicators", is_flag=True, help="Do not compute technical indicators (step 2).")
@click.option("--skip-backtest", is_flag=True, help="Train only; no backtest (step 7).")
@click.option("--min-rows", type=click.IntRange(min=1), default=None, help="Fewest training rows accepted [500].")
@click.option("--promote", type=click.Choice(["auto", "always", "never"]), default="auto", show_default=True,
              help="auto: activate unless the new model is significantly worse than the active one (paired "
                   "tests on the same sessions of their out-of-sample records, beyond a margin; no backtest: by "
                   "CV rank IC), and never a model trained on older data than the active one's.")
@click.option("--json", "as_json", is_flag=True, help="Print a machine-readable summary as the last line (one JSON object).")
@as_of_option
@store_options
def run(settings: Settings, exchange, training_days, backtest_days, full_rebuild, bump_version, skip_indicators,
        skip_backtest, min_rows, promote, as_json, as_of):
    """The weekly loop in one command: prerequisites, indicators, feature range, features,
    labels, training, backtest; then a summary and next steps.

    Incremental by default: only new sessions and bars changed since the last run are built.
    One run at a time (a second one exits at once); a killed run leaves the previous state,
    and the next run picks up where it stopped.
    """
    import json

    from retrain import runner

    try:
        result = runner.run(exchange=exchange, training_days=training_days, backtest_days=backtest_days,
                            full_rebuild=full_rebuild, bump_version=bump_version, skip_indicators=skip_indicators,
                            skip_backtest=skip_backtest, min_rows=min_rows, as_of=as_of, promote=promote,
                            settings=settings)
    except Exception as exc:
        err = as_retrain_error(exc)
        if as_json and err is not None:
            click.echo(json.dumps({"ok": False, "error": err.message, "hint": err.hint, "exit_code": err.exit_code}))
        raise
    if as_json:
        click.echo(json.dumps({"ok": True, **result.to_dict()}))


# --------------------------------------------------------------------- models
@main.group(cls=_Group)
def models():
    """List, inspect, promote and roll back trained models."""


def _registry(settings: Settings):
    from retrain.registry import Registry

    return Registry(settings.artifacts_dir, settings.default_exchange)


def _unreadable_runs(registry) -> None:
    """Warn (stderr) of the run folders ``registry.runs()`` had to leave out."""
    for run_id, why in registry.unreadable:
        click.echo(report.warn(f"run {run_id} left out: {why.splitlines()[0]} (`retrain verify` says what to do)"),
                   err=True)


@models.command("list")
@click.option("--version", default=None, help="Only this feature version.")
@store_options
def models_list(settings: Settings, version):
    """Every run: id, version, scope, trained at, samples, R², rank IC, backtest, Sharpe, the
    verdict with the record's PSR and sessions, status."""
    registry = _registry(settings)
    runs = [r for r in registry.runs() if not version or r["feature_version"] == version]
    _unreadable_runs(registry)
    if not runs:
        click.echo("No runs yet - train one with `retrain train` (or `retrain run`).")
        return
    rows = []
    for r in runs:
        cv, bt, rec = r["cv"]["summary"], r.get("backtest", {}), r.get("record") or {}
        psr = rec.get("psr")
        rows.append((r["run_id"], r["feature_version"], r["scope"], r["created_at"][:19].replace("T", " "),
                     report.n(r["rows"]), fmt_metric(cv["r2"]["mean"]), fmt_metric(cv["rank_ic"]["mean"], sign=True),
                     fmt_metric(bt["total_return"], pct_=True, sign=True) if "total_return" in bt else "-",
                     f"{bt['sharpe']:.2f}" if "sharpe" in bt else "-", bt.get("verdict", "-"),
                     f"{psr:.2f} ({rec.get('sessions')})" if psr is not None and psr == psr else "-", r["status"]))
    click.echo(report.table(["run id", "version", "scope", "trained at (UTC)", "samples", "R²", "rank IC",
                             "backtest", "Sharpe", "verdict", "PSR (record sessions)", "status"], rows,
                            numeric=[False, False, False, False, True, True, True, True, True, False, True, False]))


def _num(value, digits: int = 4, sign: bool = False, pct_: bool = False) -> str:
    """A number for `models show`: NaN, None and non-numbers as n/a; ``pct_`` for returns."""
    import math

    if value is None or isinstance(value, float) and not math.isfinite(value):
        return "n/a"
    if isinstance(value, bool) or not isinstance(value, int | float):
        return str(value)
    plus = "+" if sign else ""
    if pct_:
        return f"{value * 100:{plus}.{max(digits - 1, 1)}f}%"
    return f"{value:{plus},d}" if isinstance(value, int) else f"{value:{plus}.{digits}f}"


def _ci(value, **fmt) -> str | None:
    if isinstance(value, list | tuple) and len(value) == 2:
        return f"[{_num(value[0], **fmt)}, {_num(value[1], **fmt)}]"
    return None


def _stat(value, pct_: bool = False) -> str:
    """A {"mean", "se", "t", "ci"} comparison as one line."""
    if not isinstance(value, dict):
        return _num(value, sign=True, pct_=pct_)
    parts = [_num(value.get("mean"), sign=True, pct_=pct_)]
    if "se" in value:
        parts.append(f"se {_num(value['se'], pct_=pct_)}")
    if "t" in value:
        parts.append(f"t {_num(value['t'], digits=2, sign=True)}")
    ci = _ci(value.get("ci"), sign=True, pct_=pct_)
    if ci:
        parts.append(f"90% CI {ci}")
    return ", ".join(parts)


def _block(title: str, rows: list[tuple[str, str]], extra: dict) -> list[str]:
    """``title`` and its aligned rows; keys not known here (``extra``) follow as they are."""
    import json

    rows = rows + [(str(k), json.dumps(v, default=str) if isinstance(v, dict | list) else _num(v))
                   for k, v in extra.items()]
    width = max(len(label) for label, _ in rows)
    return ["", title, *(f"  {label:<{width}}  {text}" for label, text in rows)]


def _decision_lines(gate: dict) -> list[str]:
    """meta["gate"]: why the training step promoted the run or kept it a candidate."""
    g = dict(gate)
    rows = []
    promoted = g.pop("promoted", None)
    mode = g.pop("mode", None)
    if promoted is not None or mode is not None:
        verdict = "n/a" if promoted is None else "promoted" if promoted else "kept a candidate"
        rows.append(("decision", f"{verdict} (--promote {mode})" if mode else verdict))
    rows.append(("reason", str(g.pop("reason", "n/a"))))
    for key in ("champion", "test", "outcome"):
        if key in g:
            rows.append((key, str(g.pop(key))))
    if "sessions" in g:
        rows.append(("sessions", _num(g.pop("sessions"))))
    if "net_return_diff" in g:
        rows.append(("net return diff", _stat(g.pop("net_return_diff"), pct_=True)))
    if "rank_ic_diff" in g:
        rows.append(("rank IC diff", _stat(g.pop("rank_ic_diff"))))
    margin = g.pop("margin", None)
    if isinstance(margin, dict):
        labels = {"net_return": "net return", "rank_ic": "rank IC"}
        rows.append(("margin", ", ".join(f"{labels.get(k, k)} {_num(v, pct_=k == 'net_return')}"
                                         for k, v in margin.items())))
    elif margin is not None:
        rows.append(("margin", _num(margin)))
    return _block("Promotion decision", rows, g)


def _record_lines(record: dict) -> list[str]:
    """meta["record"]: the run's out-of-sample record."""
    r = dict(record)
    rows = []
    for key in ("verdict", "reason"):
        if key in r:
            rows.append((key, str(r.pop(key))))
    if "sessions" in r:
        rows.append(("sessions", _num(r.pop("sessions"))))
    if "sharpe" in r or "sharpe_ci" in r:
        text = _num(r.pop("sharpe", None), digits=2)
        ci = _ci(r.pop("sharpe_ci", None), digits=2)
        rows.append(("Sharpe", f"{text} (90% CI {ci})" if ci else text))
    if "psr" in r:
        rows.append(("PSR (Sharpe > 0)", _num(r.pop("psr"), digits=3)))
    if "rank_ic" in r or "rank_ic_t" in r:
        text = _num(r.pop("rank_ic", None), sign=True)
        if "rank_ic_t" in r:
            text += f" (t {_num(r.pop('rank_ic_t'), digits=2, sign=True)})"
        rows.append(("rank IC", text))
    return _block("Out-of-sample record", rows, r)


def _activation_lines(reg, run_id: str) -> list[str]:
    """registry.json's log entries of this run (promote / rollback), with the decision kept."""
    events = [e for e in reg.state()["events"] if e.get("run_id") == run_id]
    lines = []
    for e in events:
        decision = e.get("decision")
        why = f": {decision.get('reason')}" if isinstance(decision, dict) and decision.get("reason") else ""
        lines.append(f"  {e.get('at', '?')[:19].replace('T', ' ')} UTC  {e.get('action')}{why}")
    return ["", "Activations", *lines] if lines else []


@models.command("show")
@click.argument("run_id")
@store_options
def models_show(settings: Settings, run_id):
    """A run's metadata (JSON), then its promotion decision, out-of-sample record and
    activations when it has them."""
    import json

    reg = _registry(settings)
    meta = reg.run_meta(run_id)
    click.echo(json.dumps(meta, indent=1, default=str))
    lines = []
    if isinstance(meta.get("gate"), dict):
        lines += _decision_lines(meta["gate"])
    if isinstance(meta.get("record"), dict):
        lines += _record_lines(meta["record"])
    lines += _activation_lines(reg, run_id)
    if lines:
        click.echo("\n".join(lines))


@models.command("promote")
@click.argument("run_id")
@store_options
def models_promote(settings: Settings, run_id):
    """Make RUN_ID the active model of its feature version and scope."""
    reg = _registry(settings)
    with Store(settings.data_dir).lock(f"retrain models promote {run_id}"):  # never while a run decides
        meta = reg.promote(run_id, decision={"mode": "manual", "promoted": True,
                                             "reason": f"`retrain models promote {run_id}`"})
    path, _ = reg.active_paths(meta["feature_version"], meta["scope"])
    click.echo(report.ok(f"{run_id} is now the active {meta['feature_version']} model for {meta['scope']} ({path})"))


@models.command("rollback")
@click.option("--version", default=None, help="Feature version [current].")
@click.option("--exchange", default=None, help="Scope (NASDAQ, NYSE, TSE or ALL) [retrain.toml [run] exchange].")
@store_options
def models_rollback(settings: Settings, version, exchange):
    """Re-activate the previous active model."""
    from retrain.config import check_version

    version = check_version(version or settings.feature_version)
    scope = (exchange or settings.default_exchange).upper()
    if scope != "ALL":
        scope = calendar.normalize_exchange(scope, or_all=True)
    with Store(settings.data_dir).lock("retrain models rollback"):
        old, new = _registry(settings).rollback(version, scope)
    click.echo(report.ok(f"Rolled back {version} {scope}: {old} -> {new} (active again)"))


@models.command("prune")
@click.option("--keep", type=click.IntRange(min=1), required=True,
              help="Runs to keep per feature version and scope (the newest), and rollback steps to keep.")
@click.option("--yes", is_flag=True, help="Delete them; without it, only list what would go.")
@store_options
def models_prune(settings: Settings, keep, yes):
    """Remove old runs, and the out-of-sample records that no remaining run was judged on.
    Never the active model of any version and scope, nor the last KEEP entries of its rollback
    history: KEEP rollbacks stay possible."""
    from retrain.record import RecordStore

    reg = _registry(settings)
    records = RecordStore(settings.artifacts_dir)
    with Store(settings.data_dir).lock("retrain models prune"):
        plan = reg.prune_plan(keep)
        doomed = {r["run_id"] for r in plan}
        stale = records.unused([r for r in reg.runs() if r["run_id"] not in doomed])
        if not plan and not stale:
            click.echo(report.ok(f"Nothing to prune: every run is among the {keep} newest of its version and scope, "
                                 "active, or needed for rollback, and every out-of-sample record belongs to one"))
            return
        if plan:
            click.echo(f"Runs to remove ({'deleting' if yes else 'dry run'}):")
        for r in plan:
            click.echo(f"   {r['run_id']}  ({r['feature_version']} {r['scope']}, {r['status']}, "
                       f"trained {r['created_at'][:10]})")
        if stale:
            click.echo(f"Out-of-sample records no remaining run was judged on ({'deleting' if yes else 'dry run'}):")
        for version, scope, routine, folder in stale:
            blocks = len(list(folder.glob("block-*.parquet")))
            click.echo(f"   {folder}  ({version} {scope}, routine {routine}, {blocks} block(s))")
        if not yes:
            click.echo(report.warn(f"Nothing deleted (a dry run without --yes): the {len(plan)} run(s) and "
                                   f"{len(stale)} record(s) above would go. To delete them: "
                                   f"`retrain models prune --keep {keep} --yes`"))
            sys.exit(1)
        removed = reg.prune(keep) if plan else []
        for *_, folder in stale:
            records.remove(folder)
    click.echo(report.ok(f"Removed {len(removed)} run(s) from {reg.runs_dir} and {len(stale)} out-of-sample "
                         f"record(s); kept the active models and {keep} rollback step(s) of each"))


# ---------------------------------------------------------------------- sweep
@main.group(cls=_Group, invoke_without_command=True)
@click.option("--exchange", default=None, help="NASDAQ, NYSE, TSE or ALL [retrain.toml [run] exchange].")
@click.option("--trials", type=click.IntRange(min=1), default=None,
              help="Trials to run in all (with --resume: the new total) [retrain.toml [sweep] trials; 40].")
@click.option("--sampler", type=click.Choice(["tpe", "random", "grid"]), default=None,
              help="How Optuna proposes trials [retrain.toml [sweep] sampler; tpe].")
@click.option("--workers", type=click.IntRange(min=1), default=None,
              help="Worker processes of the local Dask cluster [the machine's cores].")
@click.option("--scheduler", default=None, metavar="ADDRESS",
              help="Use the Dask cluster at ADDRESS (tcp://host:8786) instead of a local one "
                   "[env RETRAIN_DASK_SCHEDULER].")
@click.option("--backtest-days", type=click.IntRange(min=1, max=MAX_WINDOW_DAYS), default=None,
              help="Calendar days of the window each trial replays walk-forward [90].")
@click.option("--json", "as_json", is_flag=True,
              help="Print the trials and the best one as the last line (one JSON object).")
@click.option("--resume", default=None, metavar="SWEEP_ID",
              help="Go on with a sweep that was stopped, killed or interrupted, keeping its finished trials.")
@as_of_option
@store_options
@click.pass_context
def sweep(ctx: click.Context, settings: Settings, exchange, trials, sampler, workers, scheduler, backtest_days,
          as_json, resume, as_of):
    """Search LightGBM settings, window and target: many walk-forward replays on Dask, and an
    honest pick of the best.

    The search space is [sweep] of retrain.toml: ranges for learning_rate, num_leaves,
    min_data_in_leaf, feature_fraction and lambda_l2, choices of training_days and target, and
    optionally feature groups to leave out. Optuna proposes each trial (seeded: the same seed
    gives the same trials), and each is the walk-forward replay of its routine over the last
    --backtest-days, by the same code as `retrain run`'s out-of-sample record, with the same
    metrics and intervals.

    Trials run on a local Dask cluster of --workers processes, or on the cluster at --scheduler.
    This machine reads the store once and sends the rows to every worker once; workers never
    read the store. The best trial is judged with its Deflated Sharpe Ratio: whether it can be
    told apart from the best of N trials with no skill.

    Results go to artifacts/daytrading/sweeps/SWEEP_ID/: trials.parquet, the Optuna study
    (study.db) and report.html. A stopped sweep keeps its finished trials: --resume SWEEP_ID
    goes on. `retrain sweep apply SWEEP_ID` writes a trial's settings into retrain.toml.
    """
    import json

    from retrain import console, sweeping

    if ctx.invoked_subcommand is not None:
        return
    try:
        result = sweeping.run_sweep(settings, exchange, trials, sampler, workers, scheduler, backtest_days, as_of,
                                    resume, progress=console.sweep_progress)
    except Exception as exc:
        err = as_retrain_error(exc)
        if as_json and err is not None:
            click.echo(json.dumps({"ok": False, "error": err.message, "hint": err.hint, "exit_code": err.exit_code}))
        raise
    console.print_sweep(result)
    if as_json:
        click.echo(json.dumps(result.to_dict()))


@sweep.command("apply")
@click.argument("sweep_id")
@click.option("--trial", type=click.IntRange(min=0), default=None, help="The trial to apply [the best one].")
@store_options
def sweep_apply(settings: Settings, sweep_id, trial):
    """Write a sweep trial's settings into retrain.toml (default: the best trial's).

    Its training_days and target go into [training], its LightGBM settings into [model], in
    place and atomically, with a dated comment line naming the sweep and the trial; the next
    `retrain run` trains with them, and its promotion gate decides whether the new model
    replaces the active one. A trial that leaves out a feature group cannot be applied.
    """
    from retrain import sweep as sw
    from retrain import sweeping

    done = sweeping.apply_trial(settings, sweep_id, trial)
    r = done.row
    which = "the best trial" if done.best else "trial"
    if not done.changes:
        click.echo(report.ok(f"{done.path} already has the settings of {which} {r['trial']} of {sweep_id}: "
                             "nothing changed"))
    else:
        click.echo(report.ok(f"Wrote {which} {r['trial']} of {sweep_id} into {done.path}:"))
        for section, kv in done.changes.items():
            for key, (old, new) in kv.items():
                click.echo(f"   [{section}] {key}: {old} -> {new}")
    click.echo(f"   Its replay: Sharpe {r['sharpe']:.2f} [{r['sharpe_lo']:.2f}, {r['sharpe_hi']:.2f}], PSR "
               f"{r['psr']:.2f}, rank IC {r['rank_ic']:+.4f} ({sw.describe(r)})")
    if done.note:
        click.echo(report.warn(done.note))
    click.echo(f"Next: `retrain run` trains the routine {done.routine} with them; its gate decides promotion.")


# -------------------------------------------------------------------- predict
@main.command()
@click.option("--top", type=click.IntRange(min=1), default=20, show_default=True, help="How many to print.")
@click.option("--exchange", default=None, help="NASDAQ, NYSE, TSE or ALL [retrain.toml [run] exchange].")
@click.option("--version", default=None, help="Use the active model of this feature version.")
@click.option("--model", "run_id", default=None, help="Use this run instead of the active model.")
@click.option("--no-update", is_flag=True,
              help="Do not bring indicators and features up to date first: refuse, naming what is missing.")
@click.option("--strict", is_flag=True,
              help="Refuse a model older than [monitor] max_model_age_days instead of warning.")
@as_of_option
@store_options
def predict(settings: Settings, top, exchange, version, run_id, no_update, strict, as_of):
    """Rank symbols for the next session with the active model.

    Indicators and feature rows are brought up to date for that session first (incrementally,
    under the store's lock), so a daily cron needs only `retrain ingest` then `retrain predict`.
    The ranking goes to artifacts/daytrading/predictions/ and to the prediction journal that
    `retrain monitor` scores (artifacts/daytrading/predictions/session=<DATE>/<run_id>.parquet)."""
    from retrain import pipeline
    from retrain.config import check_version

    if version and run_id:
        raise click.UsageError("--version and --model are exclusive: a run already has its version")
    store = Store(settings.data_dir)
    scope = _scope(store, exchange, settings)
    pred = healing(store, lambda: pipeline.predict(settings, scope, AsOf.parse(as_of), top,
                                                   check_version(version) if version else None, run_id,
                                                   update=not no_update, strict=strict))
    if pred.built:
        click.echo(report.warn(pred.built) if pred.update_failed else report.ok(pred.built))
    if pred.note:
        click.echo(f"Model: {pred.note}")
    if pred.warning:
        click.echo(report.warn(pred.warning))
    if pred.stale:
        flag = f" --exchange {scope}" if scope != settings.default_exchange else ""
        click.echo(report.warn(f"Stale model: {pred.stale}; retrain it with `retrain run{flag}`"))
    click.echo(f"Predictions for {pred.session} ({scope}) by {pred.run_id}:")
    click.echo(report.table(
        ["rank", "symbol", "exchange", "predicted return", "previous close"],
        [(r, s_, e, f"{p:+.3%}", f"{c:,.2f}") for r, s_, e, p, c, *_ in pred.table.iter_rows()],
        numeric=[True, False, False, True, True]))
    if pred.save_error:
        raise pred.save_error
    click.echo(report.ok(f"Written to {pred.path} (journal: {pred.journal})"))
    _dashboard(settings, AsOf.parse(as_of))


# -------------------------------------------------------------------- monitor
@main.command()
@click.option("--exchange", default=None, help="NASDAQ, NYSE, TSE or ALL [retrain.toml [run] exchange].")
@click.option("--since", default=None, metavar="DATE", help="Only journal sessions from DATE on.")
@click.option("--json", "as_json", is_flag=True, help="Print a machine-readable summary as the last line (one JSON object).")
@click.option("--fail-on", type=click.Choice(["alert", "warning"]), default=None,
              help="Exit with status 4 when the status reaches this level (for cron mail).")
@as_of_option
@store_options
def monitor(settings: Settings, exchange, since, as_json, fail_on, as_of):
    """Watch the active model: its journal of predictions against what happened.

    Joins every `retrain predict` ranking with the realized open-to-close return of each complete
    session (from the bars: no labels step needed). Reports the live IC, rank IC (with its t),
    top-N net return under the backtest's trading rule, hit rate and paper equity, against the
    model's own out-of-sample record; a one-sided CUSUM on daily rank IC for decay; PSI drift of
    each feature (0.10 moderate, 0.25 significant); and the model's age against [monitor]
    max_model_age_days. A drift band counts only beyond sampling noise (else "within noise").
    Status: ok, warning (drift, staleness, too few sessions, a record with no edge to watch) or
    alert (decay), each with what to do. Exit status 0, or 4 when the status reaches --fail-on.
    """
    from retrain import console, watch

    store = Store(settings.data_dir)
    scope = _scope(store, exchange, settings)
    clock = AsOf.parse(as_of)
    result = healing(store, lambda: watch.run_monitor(settings, scope, clock, _date_opt(since, "--since")))
    console.print_monitor(result)
    _dashboard(settings, clock, result)
    if as_json:
        import json

        click.echo(json.dumps(result.to_dict()))
    if watch.fails(result.status, fail_on):
        sys.exit(watch.FAIL_EXIT)


def _dashboard(settings: Settings, clock: AsOf | None = None, known=None) -> None:
    """Rewrite artifacts/daytrading/index.html (``watch.refresh_dashboard``); a failure is a
    warning, never the command's."""
    from retrain import watch

    path, problem = watch.refresh_dashboard(settings, clock, known)
    click.echo(report.ok(f"Dashboard: {path}") if path else report.warn(problem), err=path is None)


# ---------------------------------------------------------------------- query
@main.command()
@click.argument("sql")
@click.option("--format", "fmt", type=click.Choice(["table", "csv", "json"]), default="table", show_default=True)
@store_options
def query(settings: Settings, sql, fmt):
    """Read-only DuckDB SQL over the store's views.

    Views: symbols(symbol, exchange, name, sector); day_symbol(symbol, exchange, date, open, high,
    low, close, adj_close, volume, rsi, macd, macd_signal, macd_histogram, atr, obv);
    features(symbol, exchange, trade_date, feature_version, <features>); labels(symbol, exchange,
    trade_date, intraday_return, max_favorable_excursion, max_adverse_excursion, open, high, low, close);
    runs(run_id, feature_version, scope, created_at, rows, r2, rank_ic, ic, icir, hit_rate, status, ...);
    predictions(trade_date, exchange, symbol, predicted, rank, run_id, feature_version, scope, active,
    predicted_at, as_of, avg_dollar_volume_20, prev_close): the journal of `retrain predict`.

    A statement works in 1 GB of memory ($RETRAIN_QUERY_MEMORY sets another size, e.g. 4GB) and
    spills past it to the system's temporary folder.
    """
    from retrain import journal
    from retrain import query as q

    used = q.views_named(sql)  # the registry and the journal are read for their views only
    found, warnings = journal.read(settings.artifacts_dir) if "predictions" in used else (None, [])
    for w in warnings:
        click.echo(report.warn(w), err=True)
    registry = _registry(settings)
    runs = registry.runs() if "runs" in used else None
    _unreadable_runs(registry)
    columns, rows = q.run_query(Store(settings.data_dir), sql, runs=runs, predictions=found)
    click.echo(q.render(columns, rows, fmt))


# --------------------------------------------------------------------- verify
@main.command()
@click.option("--repair", is_flag=True,
              help="Rebuild what can be rebuilt: feature rows, their build state and the label horizon from the "
                   "bars; the active model's copies from its run folder; record files and the dashboard are "
                   "deleted (the next run writes them); an unreadable checksum file is recorded again from its "
                   "file when that reads whole. Says what it could not repair, and leaves that as it was.")
@click.option("--json", "as_json", is_flag=True,
              help="Print a machine-readable summary as the last line (one JSON object).")
@store_options
def verify(settings: Settings, repair, as_json):
    """Check every file of the store and the artifacts against the checksum recorded when it was written.

    Exit status 0 when every file matches (or --repair repaired everything found), 1 when
    something is left, each finding with the file, what it holds and what to do. Files without
    a checksum (a store written by an earlier release) get one recorded, as they are: not a
    finding. Bars cannot be rebuilt: the finding names the input files to ingest again. Files
    set aside as *.corrupt are not checked (a note lists them).
    """
    from retrain import integrity

    result = integrity.verify(settings, repair=repair)
    for note in result.notes:
        click.echo(f"note: {note}")
    for text in result.repaired:
        click.echo(report.ok(f"Repaired: {text}"))
    for f in result.findings:
        click.echo(report.warn(f"{f.kind}: {f.file}"))
        click.echo(f"   holds: {f.holds}")
        click.echo(f"   problem: {f.problem}")
        click.echo(f"   -> {f.action}")
    where = f"{settings.data_dir} and {settings.artifacts_dir}"
    if result.findings:
        click.echo(report.warn(f"{len(result.findings)} of {report.n(result.checked)} file(s) in {where} "
                               f"{'could not be repaired' if repair else 'failed verification'}"
                               + ("" if repair else "; `retrain verify --repair` rebuilds the derived ones")))
    else:
        click.echo(report.ok(f"{report.n(result.checked)} file(s) in {where} match their checksums"
                             + (" after the repairs above" if result.repaired else "")))
    if as_json:
        import json

        click.echo(json.dumps(result.to_dict()))
    if result.exit_code:
        sys.exit(result.exit_code)


# --------------------------------------------------------------------- status
@main.command()
@click.option("--exchange", default=None, help="Only this exchange.")
@store_options
def status(settings: Settings, exchange):
    """What the store holds, per exchange."""
    from retrain.status import exchange_status

    store = Store(settings.data_dir)
    ex = calendar.normalize_exchange(exchange) if exchange else None
    if not store.root.is_dir():
        raise RetrainError(f"the data directory {store.root} does not exist",
                           hint="check --data-dir (or $RETRAIN_DATA_DIR, or [store] data_dir in retrain.toml); "
                                "`retrain ingest` or `retrain sample-data` creates it")
    rows = exchange_status(store, ex)
    click.echo(f"Store: {settings.data_dir}   Artifacts: {settings.artifacts_dir}   "
               f"Feature version: {settings.feature_version}")
    if not rows:
        click.echo(report.warn("no bars in the store" + (f" for {ex}" if ex else "")
                               + " - load some with `retrain ingest` or `retrain sample-data`"))
        return
    click.echo(report.table(
        ["exchange", "symbols", "bars", "first", "last", "sessions", "no-bar sessions", "symbol gaps", "RSI coverage"],
        [(r.exchange, report.n(r.symbols), report.n(r.bars), r.first_date, r.last_date, report.n(r.sessions),
          report.n(r.sessions_without_bars), report.n(r.missing_symbol_bars), report.pct(r.rsi_coverage))
         for r in rows],
        numeric=[False, True, True, False, False, True, True, True, True],
    ))
    from retrain import queries
    from retrain import query as q

    _, cov = q.run_query(store, queries.load("coverage_features"))
    if ex:
        cov = [r for r in cov if r[1] == ex]
    click.echo("\nFeatures (label coverage = feature rows with a label):")
    if cov:
        click.echo(report.table(
            ["version", "exchange", "rows", "first", "last", "labelled", "coverage"],
            [(v + (" (current)" if v == settings.feature_version else ""), e, report.n(n_), f, la, report.n(lab),
              report.pct(lab / n_ if n_ else 0)) for v, e, n_, f, la, lab in cov],
            numeric=[False, False, True, False, False, True, True],
        ))
    else:
        click.echo("   none built yet - run `retrain features`")
    _, lab_rows = q.run_query(store, queries.load("coverage_labels"))
    if ex:
        lab_rows = [r for r in lab_rows if r[0] == ex]
    click.echo("\nLabels:")
    if lab_rows:
        click.echo(report.table(["exchange", "rows", "first", "last"],
                                [(e, report.n(n_), f, la) for e, n_, f, la in lab_rows],
                                numeric=[False, True, False, False]))
    else:
        click.echo("   none yet - run `retrain labels`")


def entry() -> None:
    """The `retrain` command (its console script, and ``python -m retrain.cli``): ``main``; then,
    once every exit handler has run, the process ends without tearing the interpreter down.

    That teardown (freeing every module of Polars, NumPy, LightGBM one object at a time) costs
    0.15-0.3 s on a 2-core machine: a tenth of `retrain monitor` or `retrain predict`. Nothing of
    the store needs it: every file is written, fsynced and closed by the step that writes it.
    Threads still running are joined first (Python does that before its exit handlers); the
    handlers registered after this one (Dask's, temporary folders') run before it, and logging is
    shut down (its handlers flushed and closed) by it. The exit status is main's: 0, the status it
    exits with, or 1 for an exception that escaped it; 120 when the last of stdout or stderr could
    not be written (as Python's own exit says), except to a pipe closed by its reader."""
    import atexit

    from retrain import lgbm

    lgbm.HIDE_PANDAS = True  # this process hands LightGBM NumPy arrays only: lgbm.load
    status = [1]
    atexit.register(_end_process, status)  # registered first: run last
    try:
        main()
    except SystemExit as exc:
        status[0] = exc.code if isinstance(exc.code, int) else int(exc.code is not None)
        raise
    except KeyboardInterrupt:
        status[0] = 130
        raise


def _end_process(status: list[int]) -> None:
    import logging

    logging.shutdown()  # registered with atexit before this handler: it would never run
    code = status[0]
    for stream in (sys.stdout, sys.stderr):
        try:
            if stream is not None:
                stream.flush()
        except BrokenPipeError:  # `retrain ... | head`: the reader has all it wanted
            pass
        except (OSError, ValueError):  # a full disk, a closed stream: the output is not whole
            code = code or 120
    os._exit(code)


if __name__ == "__main__":  # pragma: no cover
    entry()
