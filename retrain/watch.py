"""The monitor step (`retrain monitor`) and the dashboard (`artifacts/daytrading/index.html`).

Reads what the statistics need and nothing else: the prediction journal (``journal``), the
realized open-to-close return of every complete session from the bars themselves (no labels
step needed), the active run's metadata and out-of-sample record from its folder, and the
feature rows of its training window and of the recent sessions. ``monitor.py`` computes the
figures; this module only loads, joins and assembles. ``dashboard.py`` renders the page.
"""

from __future__ import annotations

import datetime as dt
import math
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from retrain import calendar, journal, monitor
from retrain.backtest import BacktestConfig, universe
from retrain.calendar import AsOf
from retrain.config import Settings
from retrain.errors import RetrainError, storage_fault
from retrain.features import CATEGORICAL
from retrain.files import atomic_write_text
from retrain.registry import ROOT, Registry, verified
from retrain.steps import realized
from retrain.store import Store

DRIFT_SESSIONS = 20  # the recent sessions whose features are compared with the training window's
DRIFT_MIN_SESSIONS = 5  # fewer recent sessions: drift is not measured yet
DRIFT_TRAIN_ROWS = 50_000  # the training window's rows drift compares with, at most (every k-th row)
STATUS_LEVEL = {"ok": 0, "warning": 1, "alert": 2}
FAIL_EXIT = 4  # `retrain monitor --fail-on LEVEL` exits with this when the status reaches LEVEL
DASHBOARD = "index.html"


@dataclass
class MonitorResult:
    scope: str
    version: str
    status: str
    reasons: list[dict]
    live: dict
    expected: dict | None
    decay: dict | None
    drift: pl.DataFrame | None
    model: dict
    daily: pl.DataFrame  # the active run's live sessions: trade_date, ic, rank_ic, net_return, equity, ...
    record_daily: pl.DataFrame | None  # its out-of-sample record, the same columns (the expectation)
    runs: list[dict] = field(default_factory=list)  # live figures per run that ranked the scope
    warnings: list[str] = field(default_factory=list)
    as_of: str = "now"
    since: str | None = None

    def to_dict(self) -> dict:
        """The `--json` object (NaN figures as null, dates as ISO text)."""
        return _plain({
            "status": self.status,
            "alerts": [r for r in self.reasons if r["level"] in ("alert", "warning")],
            "reasons": self.reasons,
            "live": self.live, "expected": self.expected,
            "decay": {k: v for k, v in (self.decay or {}).items() if k != "path"} or None,
            "drift": self.drift.to_dicts() if self.drift is not None else [],
            "model": self.model, "runs": self.runs, "scope": self.scope, "feature_version": self.version,
            "as_of": self.as_of, "since": self.since, "file_warnings": self.warnings,
        })


def _plain(value):
    """``value`` with NaN/inf as None, numpy scalars as Python ones and dates as ISO text."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, dt.date):
        return value.isoformat()
    if hasattr(value, "item") and not isinstance(value, str):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


# the journal's columns the monitor scores (a narrower read: a year of journal is ~750k rows)
_JOURNAL_COLUMNS = ["trade_date", "exchange", "symbol", "predicted", "run_id", "avg_dollar_volume_20"]


def _realized_universe(store: Store, exchanges: list[str], start: dt.date,
                       end: dt.date) -> tuple[pl.DataFrame, pl.DataFrame]:
    """``realized`` returns of [start, end], and their universe return per session."""
    actual = realized(store, exchanges, start, end)
    return actual, universe(actual.rename({"actual": "intraday_return"}))


def _complete(frame: pl.DataFrame, last: dict[str, dt.date]) -> pl.DataFrame:
    """Rows of sessions complete as of the clock, per exchange (``last``: last complete session)."""
    if frame.is_empty() or (frame["trade_date"].null_count() == 0 and frame["exchange"].null_count() == 0
                            and frame["trade_date"].max() <= min(last.values())
                            and frame["exchange"].is_in(list(last)).all()):
        return frame  # every row's session is complete (the usual case): nothing to filter
    cut = pl.col("exchange").replace_strict(last, default=None, return_dtype=pl.Date)
    return frame.filter(pl.col("trade_date") <= cut)


def _scored(rows: pl.DataFrame, actual: pl.DataFrame) -> pl.DataFrame:
    """``rows`` (in their order) with ``actual``'s column actual, matched on (trade_date,
    exchange, symbol); null where none matches. The keys are joined as one integer (the session's
    day, the exchange's and the symbol's codes): a year of journal is ~750k rows, and a join on
    the three columns, two of them strings, takes twice the memory and a third more time."""
    if rows.is_empty():
        return rows.with_columns(pl.lit(None, pl.Float64).alias("actual"))
    # codes of the realized side's symbols and exchanges: a row with another has no match (null key)
    symbols = pl.Enum(actual["symbol"].drop_nulls().unique().sort())
    exchanges = {e: i for i, e in enumerate(sorted(actual["exchange"].drop_nulls().unique()))}
    width = max(1, len(symbols.categories))
    key = (((pl.col("trade_date").cast(pl.Int64) * max(1, len(exchanges))
             + pl.col("exchange").replace_strict(exchanges, default=None, return_dtype=pl.Int64)) * width
           + pl.col("symbol").cast(symbols, strict=False).to_physical().cast(pl.Int64)).alias("_key"))
    left, right = rows.select(key), actual.select(key, pl.col("actual").cast(pl.Float64))
    return rows.with_columns(left.join(right, on="_key", how="left", maintain_order="left")["actual"])


def _expected_frame(run_dir: Path, store: Store, exchanges: list[str]) -> tuple[pl.DataFrame | None, str]:
    """The run's own out-of-sample predictions (its backtest record, or its CV predictions when it
    was trained without a backtest) as trade_date, exchange, symbol, predicted, actual,
    avg_dollar_volume_20; and where they come from, in words."""
    record = run_dir / "record_predictions.parquet"
    if record.exists():
        frame = pl.read_parquet(verified(record)).select("trade_date", "exchange", "symbol", "predicted", "actual",
                                               pl.col("avg_dollar_volume_20").cast(pl.Float64))
        return frame, f"its out-of-sample record ({frame['trade_date'].n_unique()} sessions)"
    cv = run_dir / "cv_predictions.parquet"
    if cv.exists():
        frame = pl.read_parquet(verified(cv)).select("trade_date", "exchange", "symbol", pl.col("prediction").alias("predicted"))
        lo, hi = frame["trade_date"].min(), frame["trade_date"].max()
        frame = _scored(frame, realized(store, exchanges, lo, hi)).with_columns(
            pl.lit(None, pl.Float64).alias("avg_dollar_volume_20"))
        return frame, f"its cross-validation folds ({frame['trade_date'].n_unique()} sessions; trained without a backtest)"
    return None, "no out-of-sample predictions in its run folder"


def _features(store: Store, version: str, exchanges: list[str], start: dt.date, end: dt.date,
              columns: list[str], last: int | None = None) -> pl.DataFrame:
    """Feature rows of [start, end] (only the ``last`` sessions of it: their dates are read first)."""
    frames = [store.scan_table("features", version, e, between=(start, end)) for e in exchanges]
    frames = [f for f in frames if f is not None]
    if not frames:
        return pl.DataFrame()
    rows = pl.concat(frames, how="diagonal_relaxed")
    if last:
        days = rows.select(pl.col("trade_date").unique()).collect()["trade_date"].sort().tail(last)
        if days.is_empty():
            return pl.DataFrame()
        rows = rows.filter(pl.col("trade_date").is_between(days.min(), days.max()))
    return rows.select("trade_date", *{"exchange": None, **dict.fromkeys(columns)}).collect()


def _drift(store: Store, meta: dict, exchanges: list[str], reference: dt.date) -> pl.DataFrame | None:
    columns = meta["feature_columns"]
    start, end = (dt.date.fromisoformat(meta["training_window"][k]) for k in ("start", "end"))
    train = _features(store, meta["feature_version"], exchanges, start, end, columns)
    if train.height > DRIFT_TRAIN_ROWS:  # an even, deterministic sample: the bins need no more
        train = train.gather_every(-(-train.height // DRIFT_TRAIN_ROWS))
    recent = _features(store, meta["feature_version"], exchanges, end + dt.timedelta(days=1), reference, columns,
                       last=DRIFT_SESSIONS)
    if train.is_empty() or recent.is_empty():
        return None
    days = sorted(recent["trade_date"].unique().to_list())[-DRIFT_SESSIONS:]
    if len(days) < DRIFT_MIN_SESSIONS:  # too few sessions to tell drift from a few days' mood
        return None
    recent = recent.filter(pl.col("trade_date").is_in(days))
    # an exchange's session is the unit of a market-wide feature
    key = pl.concat_str(pl.col("trade_date").cast(pl.String), "exchange", separator="|").alias("_session")
    return monitor.feature_drift(train.with_columns(key), recent.with_columns(key), columns, set(CATEGORICAL),
                                 session="_session")


def _expected_record(run_dir: Path, store: Store, exchanges: list[str],
                     bcfg: BacktestConfig) -> tuple[pl.DataFrame | None, dict | None]:
    """(daily, expectation) of the run's own out-of-sample record (``_expected_frame``), scored
    as the live record is; (None, None) when it has none."""
    frame, source = _expected_frame(run_dir, store, exchanges)
    if frame is None or frame.is_empty():
        return None, None
    # the record's own symbols are its universe (every labelled symbol had a prediction)
    rec_uni = universe(frame.select("trade_date", pl.col("actual").alias("intraday_return")).drop_nulls())
    daily, fig = monitor.live_record(frame, rec_uni, bcfg)
    return daily, monitor.expectation_of(daily, fig, source)


def _started(fn, *args) -> Future:
    """``fn(*args)`` running on a thread of its own, beside the caller's work (read-only work:
    if the caller fails first, it finishes unheard)."""
    pool = ThreadPoolExecutor(1, thread_name_prefix="retrain-monitor")
    try:
        return pool.submit(fn, *args)
    finally:
        pool.shutdown(wait=False)


def _rollback_target(registry: Registry, version: str, scope: str) -> str | None:
    history = registry.state()["history"].get(version, {}).get(scope, [])
    return history[-1] if history else None


class NotYetTrained(RetrainError):
    """A monitor as of a day before the active model's training data ends (it did not exist then)."""


def run_monitor(settings: Settings, scope: str, as_of: AsOf, since: dt.date | None = None,
                version: str | None = None) -> MonitorResult:
    """The live record of the active model of (version, scope), its expectation, decay, drift,
    staleness and status, as of ``as_of``, over the journal's sessions from ``since`` on."""
    version = version or settings.feature_version
    store = Store(settings.data_dir)
    registry = Registry(settings.artifacts_dir, settings.default_exchange)
    bcfg = BacktestConfig.from_settings(settings, max_positions=settings.section("training")["top_n"])
    exchanges = [e for e in (list(calendar.EXCHANGES) if scope == "ALL" else [scope]) if store.bar_files(e)]
    if not exchanges:
        raise RetrainError(f"no bars for {scope}", hint="load data with `retrain ingest`")
    last = {e: as_of.last_complete_session(e) for e in exchanges}
    reference = min(last.values())
    limit = settings.section("monitor")["max_model_age_days"]
    active = registry.active_run(version, scope)
    run_dir = registry.runs_dir / active if active is not None else None
    removed = run_dir is not None and not (run_dir / "meta.json").exists()
    meta = registry.run_meta(active) if run_dir is not None and not removed else None
    # as of a past day, the active model may postdate it (as of now it never does: its data ends at
    # the last complete session of one of the scope's exchanges, which may be after ``reference``)
    if (meta is not None and not as_of.is_now
            and dt.date.fromisoformat(meta["training_window"]["end"]) > max(last.values())):
        end = meta["training_window"]["end"]
        raise NotYetTrained(f"as of {as_of.label()}, the active {version} model of {scope}, {active}, did not exist yet: "
                           f"its training data ends {end}, after {max(last.values())}, the last complete session then",
                           hint=f"monitor it as of a date after {end}, or without --as-of")
    # The drift and the model's own record read rows of their own (features; its out-of-sample
    # predictions): computed beside everything else, from the start.
    drifting = (_started(_drift, store, meta, exchanges, calendar.next_session(exchanges[0], reference))
                if meta is not None else None)
    expecting = _started(_expected_record, run_dir, store, exchanges, bcfg) if meta is not None else None
    # The realized returns of the journal's sessions are read beside the journal itself.
    listed = journal.files(settings.artifacts_dir, since, max(last.values()))
    days = journal.span(settings.artifacts_dir, paths=listed) if active is not None else None
    realizing = _started(_realized_universe, store, exchanges, *days) if days else None
    rows, warnings = journal.read(settings.artifacts_dir, scope, columns=_JOURNAL_COLUMNS, version=version, paths=listed)
    unreadable = len(warnings)  # journal files skipped: sessions missing from the live record
    rows = _complete(rows, last)
    flag = f" --exchange {scope}" if scope != settings.default_exchange else ""
    no_universe = pl.DataFrame(schema={"trade_date": pl.Date, "universe_return": pl.Float64})
    if active is None:
        daily, live = monitor.live_record(pl.DataFrame(), no_universe, bcfg)
        others = sorted(registry.state()["active"].get(version, {}))
        elsewhere = (f"; active {version} models exist for {', '.join(others)}: `retrain monitor --exchange "
                     f"{others[0]}`" if others else "")
        reasons = [{"level": "warning", "reason": f"no active {version} model for {scope}: nothing to judge yet",
                    "action": f"train one: `retrain run{flag}`{elsewhere}"}]
        return MonitorResult(scope, version, "warning", reasons, live, None, None, None,
                             {"run_id": None, "age_days": None}, daily, None, [], warnings,
                             as_of.label(), str(since) if since else None)
    if rows.is_empty():
        scored, uni = rows.with_columns(pl.lit(None, pl.Float64).alias("actual")), no_universe
    else:
        lo, hi = rows["trade_date"].min(), rows["trade_date"].max()
        # the journal and its realized returns come from the same listing of files: the sessions
        # read beside cover the rows (read here only if that were ever not so)
        actual, uni = (realizing.result() if realizing is not None and days[0] <= lo and hi <= days[1]
                       else _realized_universe(store, exchanges, lo, hi))
        scored = _scored(rows, actual)
    by_run = {run_id: part for (run_id,), part in scored.partition_by("run_id", as_dict=True,
                                                                        maintain_order=True).items()}
    # the active run's live sessions: after its training data, each scored once
    mine = by_run.get(active, scored.clear())
    if meta is not None:
        mine = mine.filter(pl.col("trade_date") > dt.date.fromisoformat(meta["training_window"]["end"]))
    daily, live = monitor.live_record(mine, uni, bcfg)
    runs = []
    for run_id, theirs in by_run.items():
        same = theirs.height == mine.height  # the active run's rows are all live: its figures are known
        fig = live if run_id == active and same else monitor.live_record(theirs, uni, bcfg)[1]
        runs.append({"run_id": run_id, "active": run_id == active,
                     "removed": not (registry.runs_dir / run_id / "meta.json").exists(),
                     **{k: fig.get(k) for k in ("sessions", "ic", "rank_ic", "rank_ic_t", "net_return", "hit_rate")}})
    expected = record_daily = decay = drift = None
    model = {"run_id": active, "age_days": None, "age_sessions": None, "trained_through": None, "removed": removed}
    if meta is not None:
        from retrain.pipeline import model_age

        model.update(model_age(meta, reference, exchanges))
        model["promoted_at"] = next((when.isoformat() for when, r in reversed(registry.activations(version, scope))
                                     if r == active), None)
        record_daily, expected = expecting.result()
        if expected is not None:
            decay = monitor.decay_test(daily["rank_ic"].to_numpy(), expected["rank_ic"], expected["rank_ic_std"],
                                       mu0_t=expected.get("rank_ic_t"))
            if decay.get("alarm_index") is not None:
                decay["alarm_session"] = str(daily["trade_date"][decay["alarm_index"]])
        drift = drifting.result()
    else:
        warnings.append(f"the run folder of the active model {active} was removed: its predictions are still "
                        "scored, without an expectation to compare them with")
    status, reasons = monitor.judge(live, expected, decay, drift, model if meta is not None else None, limit,
                                    rollback=_rollback_target(registry, version, scope), flags=flag)
    problems = []
    if unreadable:
        problems.append({"level": "warning", "reason": (
            f"{unreadable} prediction journal file(s) could not be read, so their sessions are missing from the live "
            f"record: {'; '.join(warnings[:unreadable])}"),
            "action": "`retrain verify` names each file with what it holds; restore it from a backup, or delete it"})
    damaged = registry.damaged_active_copies(version, scope)
    if damaged:
        problems.append({"level": "warning", "reason": (
            f"the active model's copies ({', '.join(p.name for p in damaged)}) are missing or damaged: `retrain "
            f"predict` reads run {active}'s own folder instead, but a script loading {damaged[0].name} would not"),
            "action": "`retrain verify --repair` copies them again from the run folder"})
    if problems:
        order = {"alert": 0, "warning": 1, "info": 2}
        reasons = sorted(reasons + problems, key=lambda r: order[r["level"]])
        status = "alert" if status == "alert" else "warning"
    if warnings[unreadable:]:
        reasons.append({"level": "info", "reason": "; ".join(warnings[unreadable:]), "action": "see the files named"})
    return MonitorResult(scope, version, status, reasons, live, expected, decay, drift, model, daily, record_daily,
                         runs, warnings, as_of.label(), str(since) if since else None)


def fails(status: str, fail_on: str | None) -> bool:
    """Whether ``status`` reaches the ``--fail-on`` level."""
    return fail_on is not None and STATUS_LEVEL[status] >= STATUS_LEVEL[fail_on]


# ------------------------------------------------------------------ the dashboard
def _scope_view(result: MonitorResult) -> dict:
    daily = None
    parts = []
    if result.record_daily is not None and not result.record_daily.is_empty():
        parts.append(result.record_daily.select("trade_date", "rank_ic", "net_return",
                                                pl.lit("backtest").alias("phase")))
    if not result.daily.is_empty():
        parts.append(result.daily.select("trade_date", "rank_ic", "net_return", pl.lit("live").alias("phase")))
    if parts:
        daily = pl.concat(parts).sort("trade_date")
    return {"scope": result.scope, "version": result.version, "model": result.model, "status": result.status,
            "reasons": result.reasons, "live": result.live, "expected": result.expected, "daily": daily,
            "drift": result.drift.to_dicts() if result.drift is not None else []}


def refresh_dashboard(settings: Settings, as_of: AsOf | None = None,
                      known: MonitorResult | None = None) -> tuple[Path | None, str | None]:
    """``write_dashboard`` for the commands that rewrite the page after their own work: (its path,
    None), or (None, why it was not rewritten) when the store or the disk refused it (the page is
    a view; the command's work is done). ``known`` is used only while its run is still the
    scope's active model."""
    try:
        if known is not None:
            active = Registry(settings.artifacts_dir).active_run(known.version, known.scope)
            known = known if active == known.model.get("run_id") else None
        return write_dashboard(settings, as_of, known), None
    except (RetrainError, OSError) as exc:
        err = exc if isinstance(exc, RetrainError) else storage_fault(exc)
        if err is None:
            raise
        return None, f"the dashboard was not rewritten: {err.message}"


def write_dashboard(settings: Settings, as_of: AsOf | None = None, known: MonitorResult | None = None) -> Path:
    """Rewrite ``artifacts/daytrading/index.html``: the active model of each scope of the current
    feature version with its live record and drift, and the recent runs. Atomic. ``known``: a
    scope's result computed already (`retrain monitor`'s), not computed again."""
    from retrain import dashboard

    registry = Registry(settings.artifacts_dir, settings.default_exchange)
    version = settings.feature_version
    scopes = sorted(registry.state()["active"].get(version, {}))
    views = []
    for scope in scopes:  # a scope whose active model came after ``as_of`` is left out of a past page
        try:
            views.append(_scope_view(known if known is not None and (known.scope, known.version) == (scope, version)
                                     else run_monitor(settings, scope, as_of or AsOf(), version=version)))
        except NotYetTrained:
            continue
    runs = []
    for r in reversed(registry.runs()[-15:]):
        gate = r.get("gate") or {}
        runs.append({"run_id": r["run_id"], "scope": r["scope"], "feature_version": r["feature_version"],
                     "created_at": r.get("created_at"), "status": r.get("status"),
                     "verdict": (r.get("backtest") or {}).get("verdict"), "gate_outcome": gate.get("outcome"),
                     "promoted": gate.get("promoted"), "reason": gate.get("reason")})
    path = Path(settings.artifacts_dir) / ROOT / DASHBOARD
    made = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    label = (as_of or AsOf()).label()
    stamp = made if label == "now" else f"{made}, as of {label}"
    atomic_write_text(dashboard.render_index(views, runs, stamp), path)
    return path
