"""Steps that tie the pieces together: train and register a model, predict the next session."""

from __future__ import annotations

import dataclasses
import datetime as dt
from dataclasses import dataclass

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
    result: training.TrainResult
    run_id: str
    run_dir: object
    promoted: bool
    reason: str
    active_path: object
    backtest: object = None


def backtest_rank_ic(predictions: pl.DataFrame) -> float:
    """Mean daily rank IC of walk-forward backtest predictions."""
    from retrain import metrics

    p = predictions.drop_nulls(["actual", "predicted"])
    ic = metrics.daily_ic(p["trade_date"].to_numpy(), p["actual"].to_numpy(), p["predicted"].to_numpy(), rank=True)
    return float(ic.mean()) if len(ic) else float("nan")


def promotion_decision(mode: str, new: dict, active: dict | None, active_replay: dict | None = None) -> tuple[bool, str]:
    """Whether a new run becomes active.

    ``auto``: yes when there is no active model. Otherwise, when the new run was backtested,
    the active run's routine is replayed over the same window (``active_replay``: its rank IC
    and Sharpe there) and the new run must be not worse on both. Without a backtest, the
    out-of-sample CV rank IC is compared (and the reason says so)."""
    if mode == "always":
        return True, "--promote always"
    if mode == "never":
        return False, "--promote never: kept as a candidate"
    if active is None:
        return True, "no active model yet"
    nb = new.get("backtest")
    if nb and active_replay:
        window = f"{nb['start']}..{nb['end']}"
        worse = nb["rank_ic"] < active_replay["rank_ic"] or nb["sharpe"] < active_replay["sharpe"]
        detail = (f"over {window}: rank IC {nb['rank_ic']:+.4f} vs {active_replay['rank_ic']:+.4f}, "
                  f"Sharpe {nb['sharpe']:.2f} vs {active_replay['sharpe']:.2f}")
        if active_replay.get("same_routine"):
            detail = f"same training routine on fresher data, so its replay is this backtest {detail}"
    else:
        new_ic = new["cv"]["summary"]["rank_ic"]["mean"]
        old_ic = active["cv"]["summary"]["rank_ic"]["mean"]
        worse = not np.isnan(old_ic) and new_ic < old_ic
        detail = f"no backtest to compare on, so cross-validation rank IC {new_ic:+.4f} vs {old_ic:+.4f}"
    if not worse:
        return True, f"not worse than the active model {active['run_id']} ({detail})"
    return False, (f"worse than the active model {active['run_id']} ({detail}); kept as a candidate "
                   "(promote it with `retrain models promote RUN_ID`)")


def active_routine(active: dict) -> training.TrainConfig:
    """The training routine (params, target, window length) of a stored run; ``min_rows`` only
    gates a run, so it is left out (1): the routine is judged, not its window size."""
    stored = {**active["training_config"], "min_rows": 1}
    return training.TrainConfig(**stored, params={k: v for k, v in active["params"].items()
                                                  if k not in training.FIXED_PARAMS})


def replay_active(store: Store, active: dict, window: tuple[dt.date, dt.date], bcfg) -> dict:
    """The active run's routine backtested over ``window``."""
    bt = run_backtest(store, active["feature_version"], active["scope"], window, active_routine(active), bcfg)
    return {"rank_ic": backtest_rank_ic(bt.predictions), "sharpe": bt.summary["sharpe"]}


def train_step(settings: Settings, scope: str, cfg: training.TrainConfig, promote: str = "auto",
               end: dt.date | None = None, progress=None, backtest_window: tuple[dt.date, dt.date] | None = None,
               bcfg=None, bt_progress=None, store: Store | None = None, on_trained=None) -> TrainOutcome:
    """Train on the rolling window (and, with ``backtest_window``, replay the routine walk-forward
    over it), write the run folder, and apply the promotion rule. ``on_trained(result)`` is called
    once the model and its CV metrics exist, before the backtest."""
    if promote not in PROMOTE_MODES:
        raise RetrainError(f"--promote {promote!r} is not one of {', '.join(PROMOTE_MODES)}")
    store = store or Store(settings.data_dir)
    version = settings.feature_version
    registry = Registry(settings.artifacts_dir, settings.default_exchange)
    with store.lock("retrain train"):
        result = training.train(store, version, scope, cfg, end=end, progress=progress)
        if on_trained:
            on_trained(result)
        meta = {
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
        run_id, created = registry.new_run_id(version, scope, result.fingerprint)
        meta.update(run_id=run_id, created_at=created)
        files = {"cv_predictions.parquet": _parquet_bytes(result.oos)}
        bt = None
        if backtest_window:
            bt = run_backtest(store, version, scope, backtest_window, cfg, bcfg, bt_progress)
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
        active = registry.run_meta(active_id) if active_id else None
        replay = None
        if promote == "auto" and active is not None and bt is not None:
            if active_routine(active) == dataclasses.replace(cfg, min_rows=1):
                # The routine is unchanged: replaying it over the same window and data would
                # reproduce this very backtest (training is deterministic), so it is not rerun.
                replay = {"rank_ic": meta["backtest"]["rank_ic"], "sharpe": bt.summary["sharpe"], "same_routine": True}
            else:
                replay = replay_active(store, active, backtest_window, bcfg)
        ok, reason = promotion_decision(promote, {**meta, "run_id": run_id}, active, replay)
        if ok:
            registry.promote(run_id)
    return TrainOutcome(result, run_id, run_dir, ok, reason, registry.active_paths(version, scope)[0], bt)


@dataclass
class BacktestOutcome:
    predictions: pl.DataFrame
    daily: pl.DataFrame
    trades: pl.DataFrame
    universe: pl.DataFrame
    summary: dict
    verdict: str
    config: object


def run_backtest(store: Store, version: str, scope: str, window: tuple[dt.date, dt.date],
                 tcfg: training.TrainConfig, bcfg, progress=None) -> BacktestOutcome:
    from retrain import backtest as bt

    start, end = window
    preds = bt.walk_forward(store, version, scope, start, end, tcfg, bcfg, progress)
    daily, trades = bt.simulate(preds.drop_nulls("actual"), bcfg)
    uni = bt.universe(store, scope, start, end)
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
    path: object
    run_id: str


def predict(settings: Settings, scope: str, as_of: AsOf, top: int | None = None, version: str | None = None,
            run_id: str | None = None) -> Prediction:
    """Rank the symbols of the next session with the active model (or a named run)."""
    store = Store(settings.data_dir)
    registry = Registry(settings.artifacts_dir, settings.default_exchange)
    if run_id:
        loaded = registry.load_run(run_id)
        version = loaded.meta["feature_version"]
        loaded = registry.load_run(run_id, feature_columns(version))
    else:
        version = version or settings.feature_version
        loaded = registry.load_active(version, scope, feature_columns(version))
    exchanges = list(calendar.EXCHANGES) if scope == "ALL" else [scope]
    exchanges = [e for e in exchanges if store.bar_files(e)]
    if not exchanges:
        raise RetrainError(f"no bars for {scope}", hint="load data with `retrain ingest`")
    # the next session after the last complete one, per exchange (ALL: the earliest of them)
    session = min(calendar.next_session(e, as_of.last_complete_session(e)) for e in exchanges)
    frames = [store.scan_table("features", version, e) for e in exchanges]
    frames = [f for f in frames if f is not None]
    if not frames:
        raise RetrainError(f"no {version} features built", hint="run `retrain features` (or `retrain run`)")
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
    out = settings.artifacts_dir / "daytrading" / "predictions" / f"{session}.parquet"
    atomic_write_parquet(table, out)
    return Prediction(session, table.head(top) if top else table, out, loaded.meta["run_id"])
