"""Steps that tie the pieces together: train and register a model, predict the next session."""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from retrain import calendar, training
from retrain.calendar import AsOf
from retrain.config import Settings
from retrain.errors import RetrainError
from retrain.features import feature_columns
from retrain.registry import Registry
from retrain.store import Store, atomic_write_parquet

PROMOTE_MODES = ("auto", "always", "never")


@dataclass
class TrainOutcome:
    run_id: str
    run_dir: Path
    meta: dict  # the run's metadata (rows, window, CV summary, backtest summary and verdict)
    promoted: bool
    reason: str
    active_path: Path
    active: bool  # the run is the active model of its (version, scope) after this step
    unchanged: bool = False  # an identical run existed already (same bars, same routine): no new run
    result: training.TrainResult | None = None  # None when unchanged
    backtest: BacktestOutcome | None = None  # None without a backtest, or when unchanged


def backtest_rank_ic(predictions: pl.DataFrame) -> float:
    """Mean daily rank IC of walk-forward backtest predictions."""
    from retrain import metrics

    p = predictions.drop_nulls(["actual", "predicted"])
    ic = metrics.daily_ic(p["trade_date"].to_numpy(), p["actual"].to_numpy(), p["predicted"].to_numpy(), rank=True)
    return float(ic.mean()) if len(ic) else float("nan")


def promotion_decision(mode: str, new: dict, active: dict | None, active_replay: dict | None = None) -> tuple[bool, str]:
    """Whether a new run becomes active.

    ``auto``: yes when there is no active model. Never when the new run's training data ends
    before the active model's (a run with a past --as-of reads the past; it does not replace a
    fresher model). Otherwise, when the new run was backtested, the active run's routine is
    replayed over the same window (``active_replay``: its rank IC and Sharpe there) and the new
    run must be not worse on both. Without a backtest, the out-of-sample CV rank IC is compared
    (and the reason says so)."""
    if mode == "always":
        return True, "--promote always"
    if mode == "never":
        return False, "--promote never: kept as a candidate"
    if active is None:
        return True, "no active model yet"
    promote_hint = f"promote it by hand with `retrain models promote {new['run_id']}`"
    new_end, active_end = new["training_window"]["end"], active["training_window"]["end"]
    if new_end < active_end:
        return False, (f"its training data ends {new_end}, before that of the active model {active['run_id']} "
                       f"({active_end}): a model of the past never replaces a fresher one automatically; "
                       f"kept as a candidate ({promote_hint})")
    nb = new.get("backtest")
    if nb and active_replay:
        window = f"{nb['start']}..{nb['end']}"
        worse = nb["rank_ic"] < active_replay["rank_ic"] or nb["sharpe"] < active_replay["sharpe"]
        detail = (f"over {window}: rank IC {nb['rank_ic']:+.4f} vs {active_replay['rank_ic']:+.4f}, "
                  f"Sharpe {nb['sharpe']:.2f} vs {active_replay['sharpe']:.2f}")
        if active_replay.get("same_routine"):
            fresher = "fresher" if new_end > active_end else "the same or changed"
            detail = f"same training routine on {fresher} data, so its replay is this backtest {detail}"
    else:
        new_ic = new["cv"]["summary"]["rank_ic"]["mean"]
        old_ic = active["cv"]["summary"]["rank_ic"]["mean"]
        worse = not np.isnan(old_ic) and new_ic < old_ic
        detail = f"no backtest to compare on, so cross-validation rank IC {new_ic:+.4f} vs {old_ic:+.4f}"
    if not worse:
        return True, f"not worse than the active model {active['run_id']} ({detail})"
    return False, f"worse than the active model {active['run_id']} ({detail}); kept as a candidate ({promote_hint})"


def active_routine(active: dict) -> training.TrainConfig:
    """The training routine (params, target, window length) of a stored run; ``min_rows`` only
    gates a run, so it is left out (1): the routine is judged, not its window size."""
    stored = {**active["training_config"], "min_rows": 1}
    return training.TrainConfig(**stored, params={k: v for k, v in active["params"].items()
                                                  if k not in training.FIXED_PARAMS})


def load_frame(store: Store, version: str, scope: str, cfg: training.TrainConfig, window: tuple[dt.date, dt.date],
               backtest_window: tuple[dt.date, dt.date] | None = None) -> pl.DataFrame:
    """The prepared rows (``training.prepare``) a run needs: its training window and, with a
    backtest, every block's training window before it. Loaded once; the steps slice it."""
    first = window[0]
    if backtest_window:
        first = min(first, backtest_window[0] - dt.timedelta(days=cfg.training_days + 30))
    return training.prepare(training.load_training_set(store, version, scope, first, window[1]), cfg)


def run_identity(rows_fingerprint: str, frame: pl.DataFrame, version: str, scope: str, cfg: training.TrainConfig,
                 window: tuple[dt.date, dt.date], backtest_window=None, bcfg=None) -> dict[str, str | None]:
    """What a run is a function of, in two parts. ``training``: the training window's rows
    (``rows_fingerprint``, ``training.fingerprint`` of them: keys, features, targets), the
    routine (min_rows aside: it only gates), the window and the library versions; two runs with
    the same one have the same model and CV, bit for bit. ``backtest``: also ``frame``, the rows
    before the window that the backtest blocks train on, the backtest window and its settings
    (None without a backtest)."""
    from retrain.registry import library_versions

    libraries = library_versions()
    columns = feature_columns(version)
    spec = {
        "version": version, "scope": scope, "window": [str(d) for d in window],
        "routine": {k: v for k, v in vars(cfg).items() if k != "min_rows"},
        "libraries": {k: libraries[k] for k in ("retrain", "lightgbm", "polars", "numpy")},
    }
    h = hashlib.sha256(rows_fingerprint.encode())
    h.update(json.dumps(spec, sort_keys=True, default=str).encode())
    out = {"training": h.hexdigest(), "backtest": None}
    if backtest_window:
        b = hashlib.sha256(out["training"].encode())
        b.update(training.fingerprint(frame, columns).encode())
        b.update(json.dumps({"window": [str(d) for d in backtest_window], "config": vars(bcfg)},
                            sort_keys=True, default=str).encode())
        out["backtest"] = b.hexdigest()
    return out


def find_same(runs: list[dict], version: str, scope: str, identity: dict) -> dict | None:
    """The newest run that gives what a run of ``identity`` would: same training identity and,
    when a backtest is asked for, the same backtest (a run without one is answered by a run that
    has one, whose model is the same)."""
    for r in reversed(runs):
        mine = r.get("identity")
        if not isinstance(mine, dict) or r["feature_version"] != version or r["scope"] != scope:
            continue
        if mine.get("training") == identity["training"] and \
                (identity["backtest"] is None or mine.get("backtest") == identity["backtest"]):
            return r
    return None


def replay_active(store: Store, active: dict, window: tuple[dt.date, dt.date], bcfg) -> dict:
    """The active run's routine backtested over ``window``."""
    routine = active_routine(active)
    frame = load_frame(store, active["feature_version"], active["scope"], routine, window, window)
    bt = run_backtest(store, frame, active["feature_version"], active["scope"], window, routine, bcfg)
    return {"rank_ic": backtest_rank_ic(bt.predictions), "sharpe": bt.summary["sharpe"]}


def _run_meta(result: training.TrainResult, cfg: training.TrainConfig, version: str, scope: str) -> dict:
    return {
        "feature_version": version,
        "scope": scope,
        "feature_columns": result.feature_columns,
        "categorical_features": [c for c in result.feature_columns if c in ("exchange", "day_of_week")],
        "target": cfg.target,
        "training_config": {k: v for k, v in vars(cfg).items() if k != "params"},
        "training_window": {"start": str(result.window[0]), "end": str(result.window[1]),
                            "days": cfg.training_days, "sessions": result.sessions},
        "rows": result.rows,
        "fingerprint": result.fingerprint,
        "params": result.params,
        "num_boost_round": result.num_boost_round,
        "cv": {"folds": result.folds, "summary": result.summary, "embargo": cfg.embargo,
               "validation_fraction": cfg.validation_fraction, "top_n": cfg.top_n},
    }


def train_step(settings: Settings, scope: str, cfg: training.TrainConfig, promote: str = "auto",
               end: dt.date | None = None, progress=None, backtest_window: tuple[dt.date, dt.date] | None = None,
               bcfg=None, bt_progress=None, store: Store | None = None, on_trained=None,
               on_unchanged=None) -> TrainOutcome:
    """Train on the rolling window (and, with ``backtest_window``, replay the routine walk-forward
    over it), write the run folder, and apply the promotion rule. ``on_trained(meta)`` is called
    once the model and its CV metrics exist, before the backtest.

    A run whose identity (``run_identity``: same rows, same routine, same windows) matches an
    existing run of the same version and scope is not repeated: no new run is written, the
    existing one is returned with ``unchanged`` set (``on_unchanged(meta)`` is called). The
    promotion rule applies to it as to a new run if it is a candidate; a run that was active once
    and was replaced or rolled back since stays so (``always`` aside)."""
    from retrain.backtest import BacktestConfig

    if promote not in PROMOTE_MODES:
        raise RetrainError(f"--promote {promote!r} is not one of {', '.join(PROMOTE_MODES)}")
    store = store or Store(settings.data_dir)
    bcfg = bcfg or BacktestConfig(max_positions=cfg.top_n)
    version = settings.feature_version
    registry = Registry(settings.artifacts_dir, settings.default_exchange)
    with store.lock("retrain train"):
        window = training.training_window(store, version, scope, cfg.training_days, end)
        frame = load_frame(store, version, scope, cfg, window, backtest_window)
        rows = frame.filter(pl.col("trade_date") >= window[0])  # the training window's rows
        fingerprint = training.fingerprint(rows, feature_columns(version))  # hashed once: identity and meta
        identity = run_identity(fingerprint, frame, version, scope, cfg, window, backtest_window, bcfg)
        same = find_same(registry.runs(), version, scope, identity)
        result = bt = None
        if same is not None:
            meta, run_id, run_dir = same, same["run_id"], registry.runs_dir / same["run_id"]
            if on_unchanged:
                on_unchanged(meta)
        else:
            result = training.train_frame(rows, version, scope, cfg, window, progress, fingerprint)
            meta = _run_meta(result, cfg, version, scope)
            meta["identity"] = identity
            if on_trained:
                on_trained(meta)
            run_id, created = registry.new_run_id(version, scope, result.fingerprint)
            meta.update(run_id=run_id, created_at=created)
            files = {"cv_predictions.parquet": _parquet_bytes(result.oos)}
            if backtest_window:
                bt = run_backtest(store, frame, version, scope, backtest_window, cfg, bcfg, bt_progress)
                meta["backtest"] = {**bt.summary, "rank_ic": backtest_rank_ic(bt.predictions), "verdict": bt.verdict,
                                    "config": vars(bt.config)}
                importance = sorted(zip(result.feature_columns, result.model.feature_importance("gain").tolist()),
                                    key=lambda kv: -kv[1])
                meta["feature_importance_gain"] = dict(importance)
                from retrain import html_report

                files.update({
                    "backtest_daily.parquet": _parquet_bytes(bt.daily.join(
                        bt.universe.rename({"trade_date": "date"}), on="date", how="left")),
                    "trades.parquet": _parquet_bytes(bt.trades),
                    "predictions.parquet": _parquet_bytes(bt.predictions),
                    "report.html": html_report.render(meta, bt.summary, bt.verdict, bt.daily, bt.universe,
                                                      bt.predictions, importance).encode(),
                })
            run_id, run_dir = registry.create_run(result.model, meta, files)
        active_id = registry.active_run(version, scope)
        if active_id == run_id:
            ok, reason = False, "it is the active model already"
        elif same is not None and promote != "always" and same.get("status") != "candidate":
            # A run that was active once and was replaced or rolled back since: finding it again
            # must not undo that. Only --promote always (or `models promote`) changes it.
            ok, reason = False, (f"nothing changed since this run, which was active once and stays "
                                 f"{same.get('status')} (activate it with `retrain models promote {run_id}`)")
        else:
            active = registry.run_meta(active_id) if active_id else None
            replay = None
            new_bt = meta.get("backtest")
            if promote == "auto" and active is not None and new_bt is not None and backtest_window:
                if active_routine(active) == dataclasses.replace(cfg, min_rows=1):
                    # The routine is unchanged: replaying it over the same window and data would
                    # reproduce this very backtest (training is deterministic), so it is not rerun.
                    replay = {"rank_ic": new_bt["rank_ic"], "sharpe": new_bt["sharpe"], "same_routine": True}
                elif meta["training_window"]["end"] >= active["training_window"]["end"]:
                    replay = replay_active(store, active, backtest_window, bcfg)
            ok, reason = promotion_decision(promote, {**meta, "run_id": run_id}, active, replay)
            if ok:
                registry.promote(run_id)
        is_active = registry.active_run(version, scope) == run_id
    return TrainOutcome(run_id, run_dir, meta, ok, reason, registry.active_paths(version, scope)[0], is_active,
                        unchanged=same is not None, result=result, backtest=bt)


@dataclass
class BacktestOutcome:
    predictions: pl.DataFrame
    daily: pl.DataFrame
    trades: pl.DataFrame
    universe: pl.DataFrame
    summary: dict
    verdict: str
    config: object


def run_backtest(store: Store, frame: pl.DataFrame, version: str, scope: str, window: tuple[dt.date, dt.date],
                 tcfg: training.TrainConfig, bcfg, progress=None) -> BacktestOutcome:
    """Walk-forward backtest of ``tcfg`` over ``window`` on ``frame`` (see ``load_frame``); the
    universe benchmark reads the labels of every symbol in scope."""
    from retrain import backtest as bt

    start, end = window
    preds = bt.walk_forward(frame, feature_columns(version), start, end, tcfg, bcfg, progress)
    daily, trades = bt.simulate(preds.drop_nulls("actual"), bcfg)
    labels = store.scan_labels(None if scope == "ALL" else scope, start, end)
    if labels is None:
        raise RetrainError("no labels in the store", hint="run `retrain labels`")
    uni = bt.universe(labels.select("trade_date", "intraday_return").collect())
    summary = bt.summarize(daily, trades, bcfg.bankroll, uni)
    return BacktestOutcome(preds, daily, trades, uni, summary, bt.verdict(summary), bcfg)


def _parquet_bytes(df: pl.DataFrame) -> bytes:
    import io

    buf = io.BytesIO()
    df.write_parquet(buf)
    return buf.getvalue()


# ------------------------------------------------------------------ predict
@dataclass
class Prediction:
    session: dt.date
    table: pl.DataFrame  # rank, symbol, exchange, predicted_return, prev_close
    path: Path | None  # where the ranking was written (None when it could not be)
    run_id: str
    note: str | None = None  # how the model was chosen, when --as-of or --model made it a choice
    warning: str | None = None  # look-ahead by the user's own --model choice
    save_error: RetrainError | None = None  # the ranking is valid, but writing it failed


def _trained_through(meta: dict) -> dt.date:
    return dt.date.fromisoformat(meta["training_window"]["end"])


def choose_model(registry: Registry, settings: Settings, scope: str, as_of: AsOf, session: dt.date,
                 version: str | None = None, run_id: str | None = None):
    """The model that ranks ``session``: (loaded model, note, warning, official).

    ``--model`` wins (a model trained on ``session`` or later is flagged as look-ahead). Without
    ``--as-of``, the active model of the version. With a past ``--as-of``, the model that was
    active then, from the registry's dated activations; when none was, the current active model
    only if its training data ends before ``session``, else a refusal (look-ahead). ``official``:
    the model is the one that was active at the time, so its ranking is the record of that session."""
    if run_id:
        meta = registry.run_meta(run_id)
        loaded = registry.load_run(run_id, feature_columns(meta["feature_version"]))
        end = _trained_through(loaded.meta)
        warning = None if end < session else (
            f"{run_id} was trained on data through {end}, not before the session {session} it ranks: "
            "look-ahead, so this ranking says nothing about how the model would have done")
        return loaded, f"--model {run_id}", warning, False
    version = version or settings.feature_version
    columns = feature_columns(version)
    if as_of.is_now:
        return registry.load_active(version, scope, columns), None, None, True
    instant = min(as_of.instant(e) for e in (calendar.EXCHANGES if scope == "ALL" else [scope]))
    then = registry.active_at(version, scope, instant)
    if then is not None and not (registry.runs_dir / then).is_dir():
        raise RetrainError(f"the {version} model active for {scope} at {as_of.label()}, {then}, has been removed "
                           "(`retrain models prune`)", hint="name another run with --model (`retrain models list`)")
    if then is not None:
        loaded = registry.load_run(then, columns)
        if _trained_through(loaded.meta) < session:
            return loaded, f"the {version} model active for {scope} at {as_of.label()}: {then}", None, True
    current = registry.active_run(version, scope)
    if current is not None:
        meta = registry.run_meta(current)
        end = _trained_through(meta)
        if end < session:
            note = (f"no {version} model for {scope} was active at {as_of.label()}; the active one, {current}, "
                    f"was trained on data through {end}, before {session}: no look-ahead")
            return registry.load_run(current, columns), note, None, False
    earlier = [r for r in registry.runs() if r["feature_version"] == version and r["scope"] == scope
               and _trained_through(r) < session]
    flag = f" --exchange {scope}" if scope != settings.default_exchange else ""
    if earlier:
        hint = (f"rank with a model trained before {session}: `retrain predict{flag} --as-of {as_of.label()} "
                f"--model {earlier[-1]['run_id']}` (the latest such run)")
    else:
        hint = (f"train one as of then: `retrain run{flag} --as-of {as_of.label()} --promote never`, then "
                f"`retrain predict{flag} --as-of {as_of.label()} --model RUN_ID` with the run id it prints")
    what = (f"the active one, {current}, was trained on data through {_trained_through(registry.run_meta(current))}"
            if current else "there is no active one")
    raise RetrainError(
        f"no {version} model for {scope} was active at {as_of.label()}, and {what}, not before the session "
        f"{session} it would rank: that would be look-ahead", hint=hint)


def predict(settings: Settings, scope: str, as_of: AsOf, top: int | None = None, version: str | None = None,
            run_id: str | None = None) -> Prediction:
    """Rank the symbols of the next session with the model ``choose_model`` picks."""
    from retrain.errors import StorageError

    store = Store(settings.data_dir)
    registry = Registry(settings.artifacts_dir, settings.default_exchange)
    exchanges = list(calendar.EXCHANGES) if scope == "ALL" else [scope]
    exchanges = [e for e in exchanges if store.bar_files(e)]
    if not exchanges:
        raise RetrainError(f"no bars for {scope}", hint="load data with `retrain ingest`")
    # the next session after the last complete one, per exchange (ALL: the earliest of them)
    session = min(calendar.next_session(e, as_of.last_complete_session(e)) for e in exchanges)
    loaded, note, warning, official = choose_model(registry, settings, scope, as_of, session, version, run_id)
    version = loaded.meta["feature_version"]
    frames = [store.scan_table("features", version, e) for e in exchanges]
    frames = [f for f in frames if f is not None]
    flag = f" --exchange {scope}" if scope != settings.default_exchange else ""
    if not frames:
        raise RetrainError(f"no {version} features built for {scope}",
                           hint=f"build them: `retrain run{flag}` (or `retrain features`)")
    rows = pl.concat(frames, how="diagonal_relaxed").filter(pl.col("trade_date") == session).collect()
    if rows.is_empty():
        raise RetrainError(
            f"no {version} feature rows for the session {session} ({scope})",
            hint="ingest the bars up to the session before it, then `retrain features` (or `retrain run`)",
        )
    columns = loaded.meta["feature_columns"]
    x = training.matrix(rows, columns)
    p = loaded.model.predict(x, num_iteration=loaded.meta.get("num_boost_round"))
    table = (
        rows.select("symbol", "exchange", pl.col("prev_close").cast(pl.Float64))
        .with_columns(pl.Series("predicted_return", p))
        .sort(["predicted_return", "exchange", "symbol"], descending=[True, False, False])
        .with_row_index("rank", offset=1)
        .select("rank", "symbol", "exchange", "predicted_return", "prev_close")
        .with_columns(pl.lit(loaded.meta["run_id"]).alias("run_id"), pl.lit(session).alias("session"))
    )
    # The ranking of the model that was active, for the current version and the default scope,
    # is the session's record; any other model's (another scope, version or run) goes beside it.
    record = official and version == settings.feature_version and scope == settings.default_exchange
    name = f"{session}.parquet" if record else f"{session}.{loaded.meta['run_id']}.parquet"
    out: Path | None = settings.artifacts_dir / "daytrading" / "predictions" / name
    save_error = None
    try:
        atomic_write_parquet(table, out)
    except StorageError as exc:
        out, save_error = None, StorageError(exc.message, hint=f"The ranking above is complete; only writing it "
                                                                f"failed. {exc.hint}")
    return Prediction(session, table.head(top) if top else table, out, loaded.meta["run_id"], note, warning, save_error)
