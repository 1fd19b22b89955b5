"""`retrain sweep`: many routines replayed walk-forward on Dask, and an honest pick among them.

**One read, scattered once.** The driver (the process that runs `retrain sweep`) reads the store
once, under its lock: the prepared rows (``pipeline.load_frame``, ``Prepared.of``) of the
backtest window and of the widest training window in the space before it, one frame per target
in the space, and the equal-weight universe of the window. It scatters them to every Dask worker
once (``client.scatter(..., broadcast=True)``). Workers never open the store, so they need the
code but not the data.

**A trial is the record's code.** ``replay`` runs on a worker: it plans the blocks of the window
(``pipeline.plan_record``), trains and predicts each (``pipeline.build_record`` with no record
store: nothing read back, nothing kept), and evaluates them (``pipeline.assess_record``). That is
``retrain run``'s out-of-sample record, with its metrics and intervals, for the trial's routine.

**Proposals on the driver.** Optuna's study lives in the sweep's folder (SQLite; see
``retrain.sweep_store``). The driver asks it for trials and tells it their results; Dask runs
them. Trial k is proposed by a sampler seeded with (seed, k) from the results of trials 0 to
k - ``parallel`` exactly (a finished trial j is told only when trial j + ``parallel`` is asked, or
at the end), so the same seed, space and data give the same trials and, LightGBM being
deterministic, the same metrics, whatever the number of workers or the order they finish in. A
trial is proposed and sent when a worker thread is free, never queued behind another on a
worker: the next trial goes to the first worker that finishes.

**Failures.** A result is written to the study (as a user attribute of its trial) and to
trials.parquet the moment it arrives. A trial that raises is retried once (``retries=1``); a
worker that dies mid-trial has its task moved to another worker by the scheduler, up to
Dask's ``allowed-failures`` (3), and the rows are scattered again when every worker that held
them died; after that the trial is marked failed and the sweep goes on. A trial whose routine
cannot be replayed (a RetrainError) is failed at once. Killed or
interrupted, a sweep keeps every finished trial; ``--resume`` tells the study what it had not
told yet and replays, with their own settings, the trials that were running.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import logging
import math
import os
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from retrain import calendar, sweep
from retrain.calendar import AsOf
from retrain.config import SAMPLERS, Settings
from retrain.errors import RetrainError
from retrain.sweep_store import SweepStore

DEFAULT_BACKTEST_DAYS = 90
UNIVERSE = "universe"  # the key of the scattered universe (the frames' keys are the targets)
MAX_TRIES = 3  # submissions of a trial whose scattered rows were lost with the workers holding them
SCHEDULER_ENV = "RETRAIN_DASK_SCHEDULER"
CONNECT_TIMEOUT = 5  # seconds to reach a scheduler: the error comes within 10 s
WORKERS_TIMEOUT = 30  # seconds for a scheduler to have a worker, at the start
NO_WORKERS_TIMEOUT = 120  # seconds without any worker mid-sweep before giving up (finished trials kept)
# What a worker needs of a trial's predictions (its tear sheet, should it be the best).
PREDICTION_COLUMNS = ("trade_date", "symbol", "exchange", "avg_dollar_volume_20", "predicted", "actual", "model")
# What the blocks need of the prepared rows besides the matrix (backtest.block_frame).
FRAME_COLUMNS = ("trade_date", "symbol", "exchange", "avg_dollar_volume_20", "actual", "target")


class SweepInterrupted(RetrainError):
    """Ctrl-C: the finished trials are kept, and the message says how to resume."""

    exit_code = 130


@dataclass(frozen=True)
class TrialContext:
    """What every trial of a sweep shares, besides the frames."""

    version: str
    scope: str
    window: tuple[dt.date, dt.date]
    bcfg: Any  # backtest.BacktestConfig
    base: Any  # training.TrainConfig: the routine the trials start from
    columns: tuple[str, ...]
    lightgbm: str


@dataclass
class SweepProgress:
    """What the driver reports: ``kind`` "start" (``info``: what the sweep is, before the store is
    read), "ready" (``info``: the cluster, and the trials kept and replayed on a resume), "trial"
    (a trial finished: ``row``, the best so far, an ETA)."""

    kind: str
    sweep_id: str
    done: int
    total: int
    row: dict | None = None
    best: dict | None = None
    eta: float | None = None  # seconds, at the pace of this session's trials
    info: dict = field(default_factory=dict)


@dataclass
class SweepResult:
    sweep_id: str
    folder: Path
    scope: str
    window: tuple[dt.date, dt.date]
    sampler: str
    seed: int
    total: int
    rows: list[dict]  # every finished trial, by number
    best: dict | None
    selection: dict
    report: Path | None
    trials_path: Path
    cluster: str
    workers: int
    resumed_from: int  # trials finished before this session
    seconds: dict
    notes: list[str] = field(default_factory=list)

    @property
    def failed(self) -> list[dict]:
        return [r for r in self.rows if r["state"] != "complete"]

    def to_dict(self) -> dict:
        """`--json`: {"sweep_id", "trials": [...], "best": {...}} (NaN and infinities as null)."""
        best = None
        if self.best is not None:
            best = {**trial_dict(self.best), **{k: self.selection[k] for k in
                                                ("dsr", "expected_max_sharpe", "trials_compared", "sharpe_std",
                                                 "distinguishable", "words")}}
        return _json_safe({"sweep_id": self.sweep_id, "trials": [trial_dict(r) for r in self.rows], "best": best})


def trial_dict(row: dict) -> dict:
    """A trial as `--json` gives it: its settings under "params", each interval as [low, high]."""
    out: dict[str, Any] = {"trial": row["trial"], "state": row["state"],
                           "params": {k: row[k] for k in sweep.DIMENSIONS}}
    for key in ("sharpe", "sharpe_se", "psr", "rank_ic", "rank_ic_se", "rank_ic_t", "total_return",
                "excess_return", "hit_rate", "max_drawdown", "min_track_record", "sessions", "verdict"):
        out[key] = row.get(key)
        if key in sweep.INTERVALS:
            out[f"{key}_ci"] = [row.get(f"{key}_lo"), row.get(f"{key}_hi")]
    out.update({k: row.get(k) for k in ("routine", "seconds", "worker", "error")})
    return out


def _json_safe(value):
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


# ------------------------------------------------------------------ on a worker
def replay(number: int, params: dict, prep, universe: pl.DataFrame, ctx: TrialContext) -> dict:
    """One trial, on a worker: the walk-forward replay of its routine over the window, from the
    scattered rows (``prep``, of the trial's target) and universe. Returns its figures, its
    predictions, the seconds it took and the worker's address; a routine that cannot be
    replayed returns its error instead (a bug raises, and Dask retries it once)."""
    from retrain import backtest as bt
    from retrain import pipeline

    started = time.perf_counter()
    worker = _worker_address()
    tcfg = sweep.trial_config(ctx.base, params, threads=1)  # one core per worker process
    columns = sweep.kept_columns(list(ctx.columns), params["leave_out"])
    view = prep if columns == list(prep.columns) else _narrow(prep, columns)
    try:
        routine, spec = bt.routine_spec(tcfg, ctx.bcfg, ctx.version, columns, ctx.lightgbm)
        blocks, _ = pipeline.plan_record(view, ctx.window, ctx.window[0], tcfg, ctx.bcfg, routine)
        record = pipeline.build_record(None, view, ctx.version, ctx.scope, blocks, tcfg, ctx.bcfg, routine, spec)
        out = pipeline.assess_record(record, universe, ctx.window, ctx.bcfg)
    except RetrainError as exc:
        return {"trial": number, "error": exc.message, "seconds": time.perf_counter() - started, "worker": worker}
    figures = sweep.figures(out.record_info, out.verdict, out.record_daily["equity"].to_numpy(), ctx.bcfg.bankroll)
    return {"trial": number, "figures": figures, "blocks": len(blocks),
            "predictions": out.record_predictions.select(PREDICTION_COLUMNS),
            "seconds": time.perf_counter() - started, "worker": worker}


def _preload() -> None:
    """Import what a trial runs, on each worker as the cluster starts (not in the first trials)."""
    import lightgbm  # noqa: F401

    from retrain import backtest, pipeline  # noqa: F401


def _worker_address() -> str:
    try:
        from distributed import get_worker

        return get_worker().address
    except (ImportError, ValueError):  # run outside a worker (tests, debugging)
        return "local"


def _narrow(prep, columns: list[str]):
    """``prep`` with only ``columns`` in its matrix."""
    idx = [prep.columns.index(c) for c in columns]
    return dataclasses.replace(prep, x=np.ascontiguousarray(prep.x[:, idx]), columns=list(columns))


# ------------------------------------------------------------------ the driver
def run_sweep(settings: Settings, scope: str | None = None, trials: int | None = None, sampler: str | None = None,
              workers: int | None = None, scheduler: str | None = None, backtest_days: int | None = None,
              as_of: str | None = None, resume: str | None = None,
              progress: Callable[[SweepProgress], None] | None = None) -> SweepResult:
    """Run (or, with ``resume``, continue) a sweep; the options are those of `retrain sweep`.
    ``progress(SweepProgress)`` is called at the start and after each trial. Returns the
    SweepResult; raises RetrainError (SweepInterrupted on Ctrl-C) with the finished trials kept."""
    from retrain.store import Store

    if workers is not None and scheduler:
        raise RetrainError("--workers and --scheduler exclude each other",
                           hint="--workers starts a local cluster; --scheduler uses the workers of an existing one")
    scheduler = scheduler or os.environ.get(SCHEDULER_ENV) or None
    if workers is not None and workers < 1:
        raise RetrainError(f"--workers {workers}: expected at least 1")
    if scheduler:
        _reachable(scheduler)  # before the store is read: a wrong address fails in seconds
    sweeps = SweepStore(settings.artifacts_dir)
    store = Store(settings.data_dir)
    if resume:
        sweep_id = resume
        spec = sweeps.read_spec(resume)
        _check_resume(spec, scope, sampler, backtest_days, as_of)
    else:
        spec = new_spec(settings, store, scope, trials, sampler, backtest_days, as_of)
        sweep_id = spec["sweep_id"] = sweeps.new_id(spec["scope"])
    if trials is not None:
        spec["trials"] = trials
    with sweeps.lock(sweep_id, "retrain sweep"):
        try:
            return _run(settings, store, sweeps, sweep_id, spec, workers, scheduler, bool(resume), progress)
        except KeyboardInterrupt:  # before the trials started (those that finish are kept, see _run)
            raise SweepInterrupted(f"interrupted: the sweep {sweep_id} had not started its trials",
                                   hint=f"start it again with `retrain sweep --resume {sweep_id}`"
                                   if sweeps.folder(sweep_id).joinpath("sweep.json").exists() else
                                   "start a new one with `retrain sweep`") from None


def new_spec(settings: Settings, store, scope: str | None, trials: int | None, sampler: str | None,
             backtest_days: int | None, as_of: str | None) -> dict:
    """What a new sweep is: scope, window, space, sampler, seed and the routine it starts from."""
    from retrain import pipeline, steps, training
    from retrain.backtest import BacktestConfig

    exchanges = store.exchanges()
    if not exchanges:
        raise RetrainError(f"the store {store.root} holds no bars",
                           hint="load some with `retrain ingest PATH --exchange EX` or `retrain sample-data`")
    scope = (scope or settings.default_exchange).strip().upper()
    if scope != "ALL":
        scope = calendar.normalize_exchange(scope, known=exchanges, or_all=True)
        exchanges = [scope]
    version = settings.feature_version
    section = settings.section("sweep")
    sampler = (sampler or section["sampler"]).lower()
    if sampler not in SAMPLERS:
        raise RetrainError(f"--sampler {sampler}: expected one of {', '.join(SAMPLERS)}")
    columns = steps.feature_columns(store, version)
    space = sweep.parse_space(section, columns)
    if not space.searched:
        raise RetrainError("retrain.toml [sweep] searches nothing: every key of the space has one value",
                           hint="give at least one key a range [low, high] or a list to choose from")
    total = trials or section["trials"]
    if total < 1:
        raise RetrainError(f"--trials {total}: expected at least 1")
    base = training.TrainConfig.from_settings(settings)
    bcfg = BacktestConfig.from_settings(settings, max_positions=base.top_n)
    days = backtest_days or DEFAULT_BACKTEST_DAYS
    if days < bcfg.block_days:
        raise RetrainError(f"--backtest-days {days} is shorter than one block of the out-of-sample record "
                           f"({bcfg.retrain_every} sessions: {bcfg.block_days} calendar days)",
                           hint=f"use --backtest-days {bcfg.block_days} or more (the default is "
                                f"{DEFAULT_BACKTEST_DAYS})")
    clock = AsOf.parse(as_of)
    until = None
    if not clock.is_now:
        ends = [d for d in (clock.last_complete_session(e) for e in exchanges) if d is not None]
        until = max(ends) if ends else dt.date(1970, 1, 1)
    end = pipeline.last_labelled(store, version, scope, until=until)
    if end is None:
        flag = "" if scope == settings.default_exchange else f" --exchange {scope}"
        raise RetrainError(f"no labelled {version} feature rows for {scope}" +
                           (f" as of {clock.label()}" if until else ""),
                           hint=f"build them first: `retrain run{flag}` (a sweep reads the store, it does not "
                                "build it)")
    return {
        "sweep_id": None, "created_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "feature_version": version, "scope": scope, "as_of": clock.label(),
        "window": [str(end - dt.timedelta(days=days - 1)), str(end)], "backtest_days": days,
        "trials": total, "sampler": sampler, "seed": section["seed"], "parallel": section["parallel"],
        "grid_points": section["grid_points"], "space": {k: section[k] for k in sweep.DIMENSIONS},
        "base": {"training": {k: v for k, v in vars(base).items() if k != "params"}, "model": dict(base.params)},
        "backtest": dict(vars(bcfg)), "columns": list(columns), "data": None, "sessions": [],
    }


def _check_resume(spec: dict, scope, sampler, backtest_days, as_of) -> None:
    given = {"--exchange": (scope, spec["scope"]), "--sampler": (sampler, spec["sampler"]),
             "--backtest-days": (backtest_days, spec["backtest_days"]), "--as-of": (as_of, spec["as_of"])}
    for option, (mine, theirs) in given.items():
        if mine is not None and str(mine).upper() != str(theirs).upper():
            raise RetrainError(f"{option} {mine}: the sweep {spec['sweep_id']} was started with {theirs}, and --resume "
                               "continues it as it started",
                               hint=f"drop {option}, or start a new sweep (`retrain sweep {option} {mine}`)")


def _trial_context(spec: dict) -> tuple[TrialContext, sweep.Space]:
    from retrain import training
    from retrain.backtest import BacktestConfig
    from retrain.registry import library_versions

    base = training.TrainConfig(**spec["base"]["training"], params=dict(spec["base"]["model"]))
    window = tuple(dt.date.fromisoformat(d) for d in spec["window"])
    ctx = TrialContext(spec["feature_version"], spec["scope"], window, BacktestConfig(**spec["backtest"]), base,
                       tuple(spec["columns"]), library_versions()["lightgbm"])
    return ctx, sweep.parse_space(spec["space"], list(spec["columns"]))


def load_frames(store, ctx: TrialContext, space: sweep.Space) -> tuple[dict, pl.DataFrame, str]:
    """The rows every trial needs, read once under the store's lock: {target: Prepared} (the
    backtest window and the widest training window before it), the universe of the window, and
    a fingerprint of the rows. Checks first that every training_days of the space can form the
    window's blocks (an error names the value)."""
    from retrain import pipeline, training

    start, end = ctx.window
    wide = dataclasses.replace(ctx.base, training_days=space.widest_training_days)
    preps, prints = {}, []
    with store.lock("retrain sweep (reading)"):
        for target in space.targets:
            frame = pipeline.load_frame(store, ctx.version, ctx.scope, dataclasses.replace(wide, target=target),
                                        (start, end), start)
            prep = pipeline.Prepared.of(frame, list(ctx.columns))
            if not prep.sessions:
                raise RetrainError(f"no labelled rows for {ctx.scope} between {start} and {end}",
                                   hint="pick a later --as-of, or build the store (`retrain run`)")
            prints.append(f"{target}:{prep.fingerprint(prep.sessions)}")
            preps[target] = dataclasses.replace(prep, data=prep.data.select(FRAME_COLUMNS))
        universe = pipeline.record_universe(store, ctx.scope, start - dt.timedelta(days=7), end)
    any_prep = next(iter(preps.values()))
    for days in space.values("training_days"):
        tcfg = dataclasses.replace(ctx.base, training_days=days)
        try:
            pipeline.plan_record(any_prep, ctx.window, start, tcfg, ctx.bcfg, "check")
        except RetrainError as exc:
            values = space.values("training_days")
            raise RetrainError(f"[sweep] training_days = {values}: with training_days {days}, {exc.message}",
                               hint="drop that value from [sweep] training_days, choose a shorter --backtest-days "
                                    "or a later --as-of, lower [training] min_rows, or load older bars") from None
    return preps, universe, training.combine({0: "|".join(prints)}, [0])


# A local cluster's workers run one trial each, on every core: Dask's own housekeeping (a
# statistical profiler sampling the trial every 10 ms, event-loop checks every 20 ms, memory
# checks every 100 ms) would take its time from the trials. None of it changes what runs.
QUIET_CLUSTER = {
    "distributed.worker.profile.enabled": False,
    "distributed.admin.tick.interval": "500ms",
    "distributed.worker.memory.monitor-interval": "1s",
    "distributed.admin.system-monitor.interval": "2s",
}


@contextlib.contextmanager
def dask_client(workers: int | None, scheduler: str | None) -> Iterator[tuple[Any, str, int]]:
    """(client, what it is in words, workers): a LocalCluster of ``workers`` processes with one
    thread each (default: the machine's cores), or the cluster at ``scheduler``."""
    from distributed import Client, LocalCluster

    if scheduler:
        _reachable(scheduler)
        try:
            client = Client(scheduler, timeout=f"{CONNECT_TIMEOUT}s")
        except Exception as exc:  # noqa: BLE001 - refused, timed out, not a scheduler: all the same to the user
            why = str(exc) if isinstance(exc, OSError) else f"no Dask scheduler answers there ({type(exc).__name__})"
            raise _unreachable(scheduler, why) from None
        try:
            try:
                client.wait_for_workers(1, timeout=WORKERS_TIMEOUT)
            except TimeoutError:
                raise RetrainError(f"the Dask scheduler at {scheduler} has no worker (waited {WORKERS_TIMEOUT} s)",
                                   hint=f"start one or more: `dask worker {scheduler}` on each machine") from None
            n = len(client.scheduler_info()["workers"])
            yield client, f"the Dask cluster at {scheduler}", n
        finally:
            client.close()
        return
    import dask

    n = workers or os.cpu_count() or 1
    # Ctrl-C is the driver's to handle: it stops the workers itself
    with _sigint_ignored(), dask.config.set(QUIET_CLUSTER):
        cluster = LocalCluster(n_workers=n, threads_per_worker=1, processes=True, dashboard_address=":0",
                               silence_logs=logging.CRITICAL)
    try:
        client = Client(cluster)
        try:
            yield client, f"a local Dask cluster of {n} worker process{'es' if n != 1 else ''}", n
        finally:
            client.close()
    finally:
        cluster.close()


@contextlib.contextmanager
def _sigint_ignored() -> Iterator[None]:
    """SIGINT ignored while the local workers start, so that they inherit it ignored: a Ctrl-C
    reaches the driver only, which keeps what finished and shuts the cluster down."""
    import signal

    try:
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    except ValueError:  # not the main thread: nothing to change
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _unreachable(scheduler: str, why: str) -> RetrainError:
    return RetrainError(f"cannot reach the Dask scheduler at {scheduler}: {why}",
                        hint=f"start it (`dask scheduler`) and its workers (`dask worker {scheduler}`), or check the "
                             f"address (--scheduler or ${SCHEDULER_ENV}); without either, `retrain sweep` starts a "
                             "local cluster")


def _reachable(scheduler: str) -> None:
    """A refused or unresolvable tcp:// address fails at once, not after the client's timeout."""
    import socket
    from urllib.parse import urlsplit

    parts = urlsplit(scheduler if "://" in scheduler else f"tcp://{scheduler}")
    if parts.scheme != "tcp":
        return  # tls://, inproc://, ...: the client says
    try:
        port = parts.port or 8786
    except ValueError:
        raise _unreachable(scheduler, "not an address of the form tcp://host:port") from None
    try:
        socket.create_connection((parts.hostname or "127.0.0.1", port), timeout=CONNECT_TIMEOUT).close()
    except OSError as exc:
        raise _unreachable(scheduler, exc.strerror or str(exc) or type(exc).__name__) from None


def _sampler(kind: str, seed: int, number: int, space: sweep.Space, points: int):
    """The sampler that proposes trial ``number``: seeded with (seed, number) (the grid: its order
    shuffled once by the seed), so a resumed sweep proposes what an uninterrupted one would."""
    import optuna

    if kind == "grid":
        return optuna.samplers.GridSampler(space.grid(points), seed=seed)
    own = int(np.random.SeedSequence([seed, number]).generate_state(1)[0])
    return optuna.samplers.RandomSampler(seed=own) if kind == "random" else optuna.samplers.TPESampler(seed=own)


def _run(settings, store, sweeps: SweepStore, sweep_id: str, spec: dict, workers, scheduler, resumed: bool,
         progress) -> SweepResult:
    import optuna
    from optuna.trial import TrialState

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    clock = {"started": time.perf_counter()}
    seconds: dict[str, float] = {}
    ctx, space = _trial_context(spec)
    notes = []
    total, kind, seed, lag = spec["trials"], spec["sampler"], spec["seed"], spec["parallel"]
    if kind == "grid":
        size = space.grid_size(spec["grid_points"])
        if total > size:
            notes.append(f"the grid has {size} points: {size} trials, not {total}")
            total = spec["trials"] = size
    if progress:
        progress(SweepProgress("start", sweep_id, 0, total, info={
            "window": [str(d) for d in ctx.window], "scope": ctx.scope, "sampler": kind, "seed": seed,
            "searched": space.searched, "resumed": resumed, "notes": notes}))
    preps, universe, fingerprint = load_frames(store, ctx, space)
    if spec.get("data") and spec["data"] != fingerprint:
        raise RetrainError(f"the store's rows for {ctx.scope} {ctx.window[0]}..{ctx.window[1]} changed since the sweep "
                           f"{sweep_id} started (bars re-ingested or features rebuilt), so its trials could not be "
                           "compared with the new ones",
                           hint=f"start a new sweep: `retrain sweep --exchange {ctx.scope}`")
    spec["data"] = fingerprint
    seconds["load"] = _lap(clock)
    session = len(spec.setdefault("sessions", []))  # this run of the sweep (a killed one keeps its entry)
    entry = {"started": _now(), "finished": None, "pid": os.getpid()}
    spec["sessions"].append(entry)
    sweeps.write_spec(sweep_id, spec)
    token = uuid.uuid4().hex[:8]  # task keys of this process only, whatever a dead driver left on a cluster
    study = optuna.create_study(study_name=sweep_id, direction="maximize", load_if_exists=True,
                                storage=optuna.storages.RDBStorage(sweeps.storage_url(sweep_id),
                                                                   engine_kwargs={"connect_args": {"timeout": 60}}))
    neutral = optuna.samplers.RandomSampler()  # tells go through it: a grid sampler would stop the study
    results: dict[int, dict] = {}
    told: set[int] = set()
    ids: dict[int, int] = {}
    params_of: dict[int, dict] = {}
    redo: list[int] = []
    for t in study.get_trials(deepcopy=False):
        ids[t.number] = t._trial_id  # noqa: SLF001 - the id the storage keys user attributes by
        params_of[t.number] = space.params(t.params)
        row = t.user_attrs.get("result")
        if t.state == TrialState.RUNNING and row is None and set(space.searched) - set(t.params):
            # killed while Optuna wrote its settings: it cannot be replayed as proposed
            row = _failed_row(t.number, params_of[t.number], "stopped while it was being proposed", None, None)
            study._storage.set_trial_user_attr(ids[t.number], "result", row)  # noqa: SLF001
        if t.state.is_finished():
            told.add(t.number)
            results[t.number] = row or _failed_row(t.number, params_of[t.number], "no result recorded", None, None)
        elif row is not None:
            results[t.number] = row
        else:
            redo.append(t.number)  # running when its sweep stopped: replayed with its own settings
    kept = len(results)
    if total < len(ids) and resumed:
        total = spec["trials"] = len(ids)
    done_before = kept

    def tell(number: int) -> None:
        row = results[number]
        study.sampler = neutral
        value = row.get("sharpe") if row["state"] == "complete" else None
        if value is not None and math.isfinite(value):
            study.tell(number, value)
        else:
            study.tell(number, state=TrialState.FAIL)
        told.add(number)

    def record(number: int, row: dict) -> None:
        results[number] = row
        study._storage.set_trial_user_attr(ids[number], "result", row)  # noqa: SLF001 - kept as it arrives
        sweeps.write_trials(sweep_id, _frame(results))

    with dask_client(workers, scheduler) as (client, cluster, n_workers):
        client.run(_preload)
        seconds["cluster"] = _lap(clock)
        payload = {**preps, UNIVERSE: universe}
        shared = {k: client.scatter(v, broadcast=True, hash=False) for k, v in payload.items()}
        seconds["scatter"] = _lap(clock)
        sent = [0]  # how many times the rows were sent: again when the workers holding them died

        def rescatter(generation: int) -> None:
            if generation == sent[0]:
                for k, v in payload.items():
                    shared[k] = client.scatter(v, broadcast=True, hash=False)
                sent[0] += 1

        if progress:
            progress(SweepProgress("ready", sweep_id, kept, total, info={
                "cluster": cluster, "workers": n_workers, "folder": str(sweeps.folder(sweep_id)),
                "resumed": resumed, "kept": kept, "replayed": len(redo), "parallel": lag}))
        pending: dict[Any, int] = {}
        sent_at: dict[Any, float] = {}
        dask_time = {"seconds": 0.0, "trials": 0}  # Dask's own time: from sending a trial to its result, minus its work
        tries: dict[int, int] = {}
        generation: dict[Any, int] = {}

        def submit(number: int) -> None:
            params = params_of[number]
            tries[number] = tries.get(number, 0) + 1
            future = client.submit(replay, number, params, shared[params["target"]], shared[UNIVERSE], ctx,
                                   pure=False, retries=1,
                                   key=f"sweep-{sweep_id}-{token}-trial-{number}-{tries[number]}")
            pending[future] = number
            generation[future] = sent[0]
            sent_at[future] = time.perf_counter()

        waiting = list(redo)  # trials to run, not yet on the cluster
        nxt = len(ids)
        trial_clock, finished_now = time.perf_counter(), 0
        no_workers_since = None
        try:
            while True:
                # No more trials on the cluster than it has threads: a trial starts on the next free
                # worker. Dask would give each worker a queue of its own, and a worker could be left
                # with two long trials while the other sits idle at the end.
                free = _slots(client) - len(pending)
                while waiting and free > 0:
                    submit(waiting.pop(0))
                    free -= 1
                while free > 0 and nxt < total and all(j in results for j in range(0, nxt - lag + 1)):
                    for j in range(0, nxt - lag + 1):
                        if j not in told:
                            tell(j)
                    study.sampler = _sampler(kind, seed, nxt, space, spec["grid_points"])
                    trial = study.ask(space.distributions())
                    if trial.number != nxt:  # pragma: no cover - someone else asked the study
                        raise RetrainError(f"the study of {sweep_id} was changed by another process",
                                           hint="run one `retrain sweep --resume` at a time")
                    ids[nxt], params_of[nxt] = trial._trial_id, space.params(trial.params)  # noqa: SLF001
                    submit(nxt)
                    nxt += 1
                    free -= 1
                if not pending:
                    break
                done = _wait(pending)
                if not done:
                    if client.scheduler_info()["workers"]:
                        no_workers_since = None
                    elif no_workers_since is None:
                        no_workers_since = time.perf_counter()
                    elif time.perf_counter() - no_workers_since > NO_WORKERS_TIMEOUT:
                        raise RetrainError(
                            f"no Dask worker left in {cluster} for {NO_WORKERS_TIMEOUT} s; {len(results)} finished "
                            f"trial(s) are kept", hint=f"start workers, then `retrain sweep --resume {sweep_id}`")
                    continue
                arrived = time.perf_counter()
                for future in done:
                    number = pending.pop(future)
                    waited = arrived - sent_at.pop(future, arrived)
                    if future.status in ("cancelled", "lost") and tries[number] < MAX_TRIES:
                        rescatter(generation.pop(future))  # its rows died with the workers that held them
                        submit(number)
                        continue
                    generation.pop(future, None)
                    row, predictions = _row(number, params_of[number], future, ctx, session)
                    if predictions is not None:
                        sweeps.write_predictions(sweep_id, number, predictions)
                    record(number, row)
                    finished_now += 1
                    if row["state"] == "complete":
                        dask_time["seconds"] += max(0.0, waited - row["seconds"])
                        dask_time["trials"] += 1
                    if progress:
                        elapsed = time.perf_counter() - trial_clock
                        left = total - len(results)
                        progress(SweepProgress("trial", sweep_id, len(results), total, row=row,
                                               best=sweep.best_trial(list(results.values())),
                                               eta=elapsed / finished_now * left))
                    future.release()
        except KeyboardInterrupt:
            for future in pending:
                future.cancel()
            raise SweepInterrupted(
                f"interrupted: {len(results)} of {total} trials of the sweep {sweep_id} finished, and are kept in "
                f"{sweeps.folder(sweep_id)}", hint=f"go on with `retrain sweep --resume {sweep_id}`") from None
        seconds["trials"] = _lap(clock)
    seconds["close"] = _lap(clock)
    for j in sorted(results):
        if j not in told:
            tell(j)
    rows = [results[j] for j in sorted(results)]
    trials_path = sweeps.write_trials(sweep_id, _frame(results))
    best = sweep.best_trial(rows)
    best_daily = preds = best_trades = None
    if best is not None:
        preds = sweeps.read_predictions(sweep_id, best["trial"])
        if preds is not None:
            from retrain import backtest as bt

            best_daily, best_trades = bt.simulate(preds.drop_nulls("actual"), ctx.bcfg)
    chosen = sweep.selection(rows, best_daily["daily_return"].to_numpy() if best_daily is not None else None)
    report = None
    if rows:
        from retrain import sweep_report

        page = sweep_report.render(spec, rows, best, chosen, space,
                                   _tear_sheet(spec, ctx, best, preds, best_daily, best_trades, universe)
                                   if best_daily is not None else None)
        report = sweeps.write_report(sweep_id, page)
    seconds["report"] = _lap(clock)
    this = [r for r in rows if r.get("session") == session and r["seconds"] == r["seconds"]]
    entry.update(finished=_now(), cluster=cluster, workers=n_workers, trials_run=finished_now, trials_kept=kept,
                 trials_replayed=len(redo), seconds={k: round(v, 3) for k, v in seconds.items()},
                 trial_seconds=round(sum(r["seconds"] for r in this), 3),
                 dask_seconds=round(dask_time["seconds"], 3), dask_trials=dask_time["trials"])
    sweeps.write_spec(sweep_id, spec)
    if not any(r["state"] == "complete" for r in rows):
        first = next((r["error"] for r in rows if r.get("error")), "no result")
        raise RetrainError(f"every trial of the sweep {sweep_id} failed; the first: {first}",
                           hint=f"see {trials_path} (column error)")
    return SweepResult(sweep_id, sweeps.folder(sweep_id), ctx.scope, ctx.window, kind, seed, total, rows, best,
                       chosen, report, trials_path, cluster, n_workers, done_before, seconds, notes)


def _slots(client) -> int:
    """How many trials the cluster runs at once: its workers' threads (at least one, so that a
    cluster whose workers are all gone still has a trial waiting for them)."""
    workers = client.scheduler_info().get("workers", {})
    return max(1, sum(int(w.get("nthreads", 1)) for w in workers.values()))


def _lap(clock: dict) -> float:
    now = time.perf_counter()
    took = now - clock.get("last", clock["started"])
    clock["last"] = now
    return took


def _wait(pending: dict) -> list:
    """The futures that finished within a few seconds (none: the caller checks on the workers)."""
    from distributed import wait

    try:
        finished = wait(list(pending), timeout=5, return_when="FIRST_COMPLETED")
    except TimeoutError:
        return []
    except Exception:  # noqa: BLE001 - futures cancelled (their inputs lost with a worker): the caller sees to them
        return [f for f in pending if f.done()]
    return list(finished.done)


def _row(number: int, params: dict, future, ctx: TrialContext, session: int) -> tuple[dict, pl.DataFrame | None]:
    """A finished task as a row of trials.parquet (and the trial's predictions, if it has some)."""
    try:
        out = future.result()
    except Exception as exc:  # noqa: BLE001 - a worker lost, or a bug: the trial fails, the sweep goes on
        name = type(exc).__name__
        what = ("the workers running it died" if name == "KilledWorker" else f"{name}: {exc}")
        return _failed_row(number, params, what, None, None, session), None
    if "error" in out:
        return _failed_row(number, params, out["error"], out["seconds"], out["worker"], session), None
    row = {"trial": number, "state": "complete", **params, **out["figures"],
           "routine": _routine(params, ctx), "seconds": float(out["seconds"]), "worker": out["worker"],
           "error": None, "session": session, "finished_at": _now()}
    return row, out["predictions"]


def _failed_row(number: int, params: dict, error: str, seconds, worker, session: int | None = None) -> dict:
    return {"trial": number, "state": "failed", **params, "routine": None,
            "seconds": float("nan") if seconds is None else float(seconds), "worker": worker, "error": error,
            "session": session, "finished_at": _now()}


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def _routine(params: dict, ctx: TrialContext) -> str:
    """The trial's routine fingerprint as `retrain run` computes it with these settings (its own
    num_threads: the trial ran with one thread, which gives the same model)."""
    from retrain import backtest as bt

    tcfg = sweep.trial_config(ctx.base, params, threads=None)
    columns = sweep.kept_columns(list(ctx.columns), params["leave_out"])
    return bt.routine_spec(tcfg, ctx.bcfg, ctx.version, columns, ctx.lightgbm)[0][:16]


TRIAL_SCHEMA: dict[str, Any] = {
    "trial": pl.Int64, "state": pl.String,
    "learning_rate": pl.Float64, "num_leaves": pl.Int64, "min_data_in_leaf": pl.Int64, "feature_fraction": pl.Float64,
    "lambda_l2": pl.Float64, "training_days": pl.Int64, "target": pl.String, "leave_out": pl.String,
    **{k: pl.Float64 for k in sweep.FIGURES}, "sessions": pl.Int64,
    **{f"{k}_{side}": pl.Float64 for k in sweep.INTERVALS for side in ("lo", "hi")},
    "verdict": pl.String, "routine": pl.String, "seconds": pl.Float64, "worker": pl.String, "error": pl.String,
    "session": pl.Int64, "finished_at": pl.String,
}


def _frame(results: dict[int, dict]) -> pl.DataFrame:
    """trials.parquet: one row per finished trial, in trial order, with a fixed schema."""
    rows = [{k: results[j].get(k) for k in TRIAL_SCHEMA} for j in sorted(results)]
    return pl.DataFrame(rows, schema=TRIAL_SCHEMA, strict=False)


def _tear_sheet(spec: dict, ctx: TrialContext, best: dict, predictions: pl.DataFrame, daily: pl.DataFrame,
                trades: pl.DataFrame, universe: pl.DataFrame) -> str:
    """The best trial's tear sheet (``html_report.body``), as a run's report shows its record."""
    from retrain import backtest as bt
    from retrain import html_report

    ev = bt.evidence(daily, predictions, universe, ctx.bcfg)
    grade, reason, more = bt.judge(ev)
    summary = bt.summarize(daily, trades, ctx.bcfg.bankroll, universe)
    record = {**ev, "verdict": grade, "reason": reason, "more_sessions": more, "blocks": None}
    meta = {"run_id": f"{spec['sweep_id']} trial {best['trial']}",
            "backtest": {**summary, "verdict": grade, "verdict_reason": reason, "evidence": ev,
                         "config": vars(ctx.bcfg)},
            "record": record}
    columns = sweep.kept_columns(list(ctx.columns), best["leave_out"])
    about = [("sweep", spec["sweep_id"]), ("trial", str(best["trial"])), ("settings", sweep.describe(best)),
             ("feature version", f"{ctx.version} ({len(columns)} features)"), ("scope", ctx.scope),
             ("window replayed", f"{ctx.window[0]} to {ctx.window[1]}, walk-forward: each block predicted by a "
                                 f"model trained on the {best['training_days']} days before it"),
             ("predictions", f"{predictions.height:,}"), ("finished", str(best.get("finished_at")))]
    return html_report.body(meta, daily, universe, predictions, trades, [], None, cv=False, about=about)


# ------------------------------------------------------------------ apply
@dataclass
class Applied:
    """What `retrain sweep apply` did."""

    sweep_id: str
    row: dict  # the trial applied
    path: Path  # the retrain.toml written (or left as it was)
    changes: dict  # {section: {key: (old, new)}}; empty: the file had the trial's settings already
    routine: str  # the routine `retrain run` now trains (16 hex digits)
    best: bool  # the trial is the sweep's best
    note: str | None = None  # why the next run's routine is not exactly the trial's, if it is not


def apply_trial(settings: Settings, sweep_id: str, trial: int | None = None) -> Applied:
    """Write a trial's settings (default: the best trial's) into retrain.toml's [training] and
    [model], atomically, with a dated comment line above them (``config.set_values``); the next
    `retrain run` trains with them. Refuses a failed trial and one that leaves out a feature
    group (`retrain run` trains on every feature of its version)."""
    from retrain import config, pipeline, steps, training
    from retrain.backtest import BacktestConfig
    from retrain.files import atomic_write_text
    from retrain.store import Store

    sweeps = SweepStore(settings.artifacts_dir)
    spec = sweeps.read_spec(sweep_id)
    frame = sweeps.read_trials(sweep_id)
    rows = frame.to_dicts() if frame is not None else []
    best = sweep.best_trial(rows)
    if trial is None:
        if best is None:
            raise RetrainError(f"the sweep {sweep_id} has no complete trial to apply",
                               hint=f"finish it first: `retrain sweep --resume {sweep_id}`")
        row = best
    else:
        row = next((r for r in rows if r["trial"] == trial), None)
        if row is None:
            known = ", ".join(str(r["trial"]) for r in rows) or "none"
            raise RetrainError(f"the sweep {sweep_id} has no finished trial {trial}", hint=f"its trials: {known}")
        if row["state"] != "complete":
            raise RetrainError(f"trial {trial} of the sweep {sweep_id} failed ({row['error']}): nothing to apply",
                               hint="apply another trial (--trial N), or the best one (no --trial)")
    if row["leave_out"] != sweep.NONE:
        raise RetrainError(f"trial {row['trial']} leaves out the feature group {row['leave_out']}, and `retrain run` "
                           "trains on every feature of its version",
                           hint=f"apply another trial (`retrain sweep apply {sweep_id} --trial N`), or define a "
                                "feature version without that group (README: Feature versions)")
    note = f"retrain sweep apply {sweep_id} --trial {row['trial']} ({dt.date.today().isoformat()})"
    store = Store(settings.data_dir)
    with store.lock(f"retrain sweep apply {sweep_id}"):
        text, changes = config.set_values(settings.config_path, sweep.settings_of(row), note)
        if changes:
            atomic_write_text(text, settings.config_path, checksum=False)  # edited by hand: no checksum
    fresh = config.load_settings(settings.data_dir, settings.artifacts_dir, settings.config_path)
    tcfg = training.TrainConfig.from_settings(fresh)
    bcfg = BacktestConfig.from_settings(fresh, max_positions=tcfg.top_n)
    routine = pipeline.routine_spec(tcfg, bcfg, fresh.feature_version, steps.feature_columns(store, fresh.feature_version))
    routine = routine[0][:16]
    why = None
    if routine != row["routine"]:
        base = spec["base"]
        moved = [f"[training] {k}" for k, v in base["training"].items()
                 if k not in ("min_rows", "cv_folds", *sweep.TRAINING_KEYS) and getattr(tcfg, k) != v]
        moved += [f"[model] {k}" for k, v in base["model"].items()
                  if k not in (*sweep.MODEL_KEYS, "num_threads") and tcfg.params.get(k) != v]
        if fresh.feature_version != spec["feature_version"]:
            moved.append(f"[features] version ({spec['feature_version']} -> {fresh.feature_version})")
        why = ("the next run's routine is not exactly the trial's: "
               + (", ".join(moved) + " changed since the sweep" if moved else "the library versions changed"))
    return Applied(sweep_id, row, settings.config_path, changes, routine, row == best, why)
