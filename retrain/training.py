"""Training set, walk-forward cross-validation by session, and the LightGBM model.

Honest numbers by construction:

* folds are blocks of consecutive *sessions*, never rows: every row of a session is on the same
  side of a split;
* a fold trains only on sessions before its test block, minus an embargo of ``embargo``
  sessions;
* early stopping validates on the time-ordered tail of the fold's training sessions (after the
  same embargo), never on a random split;
* missing features stay NaN (LightGBM routes them), so nothing is fitted across folds.

The target is the session's open-to-close return (``intraday_return``). By default
(``target = "excess"``) it is taken relative to the average of its exchange that session: the
market's move that day is common to every symbol and unpredictable, so fitting it only adds
noise to a model whose job is to rank symbols. Daily IC, rank IC and the top-N spread are the
same either way; R2 and MAE are reported on the target the model learns. ``target = "raw"``
fits the plain return.

The final model is fitted on the whole window with the median best iteration of the folds.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import polars as pl

from retrain import metrics, queries
from retrain.config import DEFAULTS, FIXED_MODEL_PARAMS, SCHEMA, Settings
from retrain.errors import RetrainError
from retrain.features import CATEGORICAL, feature_columns
from retrain.store import Store

EXCHANGE_CODES = {"NASDAQ": 0, "NYSE": 1, "TSE": 2}  # fixed codes for the categorical feature
# Defaults, types and ranges of [training] and [model] live in one place: retrain.config.SCHEMA.
DEFAULT_PARAMS: dict[str, Any] = dict(DEFAULTS["model"])
FIXED_PARAMS = FIXED_MODEL_PARAMS
_T = DEFAULTS["training"]


@dataclass(frozen=True)
class TrainConfig:
    training_days: int = _T["training_days"]
    min_rows: int = _T["min_rows"]
    cv_folds: int = _T["cv_folds"]
    embargo: int = _T["embargo"]
    validation_fraction: float = _T["validation_fraction"]
    early_stopping_rounds: int = _T["early_stopping_rounds"]
    num_boost_round: int = _T["num_boost_round"]
    top_n: int = _T["top_n"]
    target: str = _T["target"]
    params: dict = field(default_factory=lambda: dict(DEFAULT_PARAMS))

    @classmethod
    def from_settings(cls, settings: Settings, **overrides) -> TrainConfig:
        """[training] and [model] of the settings (validated by load_settings), with ``overrides``
        (the command-line options, e.g. ``training_days``) checked against the same schema."""
        values = settings.section("training")
        for key, value in overrides.items():
            if value is None:
                continue
            spec = SCHEMA["training"][key]
            try:
                values[key] = spec.check(value)
            except ValueError as exc:
                option = "--" + key.replace("_", "-")
                raise RetrainError(f"{option} {value}: expected {exc}",
                                   hint=f"{key}: {spec.doc} (default {spec.default})") from None
        return cls(params={**DEFAULT_PARAMS, **settings.section("model")}, **values)

    def lgb_params(self) -> dict:
        return {**self.params, **FIXED_PARAMS}


# ---------------------------------------------------------------- the data
def last_labelled(store: Store, version: str, scope: str, until: dt.date | None = None) -> dt.date | None:
    """The last session with a labelled feature row of ``version`` in ``scope`` (on or before ``until``)."""
    con = store.connect()
    try:
        return con.execute(queries.load("last_labelled"),
                           {"version": version, "scope": scope, "until": until}).fetchone()[0]
    finally:
        con.close()


def training_window(store: Store, version: str, scope: str, days: int, end: dt.date | None = None) -> tuple[dt.date, dt.date]:
    """[start, end]: ``days`` calendar days ending at the last labelled session (or ``end``)."""
    last = end or last_labelled(store, version, scope)
    if last is None:
        raise RetrainError(
            f"no labelled feature rows of {version} for {scope}",
            hint=f"build them and train in one go: `retrain run --exchange {scope}` (or `retrain indicators`, "
                 "`retrain features`, `retrain labels`, then this command)",
        )
    return last - dt.timedelta(days=days - 1), last


def load_training_set(store: Store, version: str, scope: str, start: dt.date, end: dt.date) -> pl.DataFrame:
    """features JOIN labels for the scope and window (sql/training_set.sql), ordered by session."""
    con = store.connect()
    try:
        rel = con.sql(queries.load("training_set").rstrip().rstrip(";"),
                      params={"version": version, "scope": scope, "start": start, "end": end})
        return pl.from_arrow(rel.to_arrow_table())
    finally:
        con.close()


def matrix(df: pl.DataFrame, columns: list[str]) -> np.ndarray:
    """Feature matrix (float64, NaN for missing) with categoricals as fixed integer codes."""
    exprs = []
    for c in columns:
        if c == "exchange":
            exprs.append(pl.col(c).replace_strict(EXCHANGE_CODES, default=None, return_dtype=pl.Float64))
        else:
            exprs.append(pl.col(c).cast(pl.Float64))
    return df.select(exprs).to_numpy().astype(np.float64, copy=False)


def fingerprint(df: pl.DataFrame, columns: list[str]) -> str:
    """sha256 of the training rows (keys, features, target) in their order."""
    h = hashlib.sha256()
    keys = df.select(pl.concat_str("exchange", "symbol", pl.col("trade_date").cast(pl.String), separator="|"))
    h.update(keys.to_series().str.join("\n").item().encode() if df.height else b"")
    h.update(np.ascontiguousarray(matrix(df, columns)).tobytes())
    h.update(df["target"].to_numpy().astype(np.float64).tobytes())
    return h.hexdigest()


# ------------------------------------------------------------- the splits
def walk_forward_folds(sessions: list[dt.date], folds: int, embargo: int) -> list[tuple[list[dt.date], list[dt.date]]]:
    """(train sessions, test sessions) per fold. The sessions are cut into ``folds + 1`` blocks of
    consecutive sessions; fold i tests on block i + 1 and trains on every earlier session except
    the last ``embargo`` before the test block. Folds with no training session are dropped."""
    ordered = sorted(set(sessions))
    blocks = [b.tolist() for b in np.array_split(np.array(ordered, dtype=object), folds + 1) if len(b)]
    out = []
    for i in range(1, len(blocks)):
        test = blocks[i]
        first = ordered.index(test[0])
        train = ordered[: max(0, first - embargo)]
        if train:
            out.append((train, test))
    return out


def split_validation(train: list[dt.date], fraction: float, embargo: int) -> tuple[list[dt.date], list[dt.date]]:
    """Time-ordered (fit, validation) split of training sessions: the validation set is the
    last ``fraction`` of them, separated from the fit sessions by ``embargo`` sessions."""
    n_valid = max(1, int(math.ceil(len(train) * fraction)))
    valid = train[-n_valid:]
    fit = train[: max(0, len(train) - n_valid - embargo)]
    return fit, valid


# ------------------------------------------------------------------ training
@dataclass
class TrainResult:
    model: Any
    version: str
    scope: str
    feature_columns: list[str]
    window: tuple[dt.date, dt.date]
    rows: int
    sessions: int
    fingerprint: str
    params: dict
    num_boost_round: int
    folds: list[dict]
    summary: dict
    oos: pl.DataFrame  # out-of-sample CV predictions: trade_date, exchange, symbol, target, prediction


def fit_model(x: np.ndarray, y: np.ndarray, cfg: TrainConfig, columns: list[str], rounds: int,
         valid: tuple[np.ndarray, np.ndarray] | None = None):
    import lightgbm as lgb

    cats = [c for c in columns if c in CATEGORICAL]
    train = lgb.Dataset(x, y, feature_name=columns, categorical_feature=cats, free_raw_data=False)
    callbacks = []
    sets = []
    if valid is not None:
        sets = [lgb.Dataset(valid[0], valid[1], reference=train, feature_name=columns, categorical_feature=cats)]
        callbacks = [lgb.early_stopping(cfg.early_stopping_rounds, verbose=False)]
    return lgb.train(cfg.lgb_params(), train, num_boost_round=rounds, valid_sets=sets, callbacks=callbacks)


def evaluate(dates: np.ndarray, y: np.ndarray, p: np.ndarray, top_n: int) -> dict:
    """The validation metrics of one block of predictions."""
    ic = metrics.daily_ic(dates, y, p)
    ric = metrics.daily_ic(dates, y, p, rank=True)
    return {
        "r2": metrics.r2(y, p),
        "mae": metrics.mae(y, p),
        "ic": float(ic.mean()) if len(ic) else float("nan"),
        "rank_ic": float(ric.mean()) if len(ric) else float("nan"),
        "icir": metrics.icir(ric),
        "hit_rate": metrics.hit_rate(y, p),
        "top_n_spread": metrics.top_n_spread(dates, y, p, top_n),
    }


def summarize(folds: list[dict]) -> dict:
    """Mean and standard deviation of each metric over folds."""
    keys = [k for k in folds[0] if isinstance(folds[0][k], float)] if folds else []
    out = {}
    for k in keys:
        vals = np.array([f[k] for f in folds], dtype=float)
        vals = vals[~np.isnan(vals)]
        out[k] = {"mean": float(vals.mean()) if len(vals) else float("nan"),
                  "std": float(vals.std(ddof=1)) if len(vals) > 1 else 0.0}
    return out


def prepare(df: pl.DataFrame, cfg: TrainConfig) -> pl.DataFrame:
    """A loaded training set (``target`` = the raw intraday return) made ready for the routine:
    ``actual`` keeps the raw return (what a trade earns), ``target`` becomes what the model learns
    (the excess over its exchange's average that session, or the raw return)."""
    df = df.with_columns(pl.col("target").alias("actual"))
    if cfg.target == "excess":
        df = df.with_columns((pl.col("target") - pl.col("target").mean().over("trade_date", "exchange")).alias("target"))
    return df


def train(store: Store, version: str, scope: str, cfg: TrainConfig, end: dt.date | None = None,
          progress=None) -> TrainResult:
    """Load the window, cross-validate walk-forward by session, fit the final model."""
    start, last = training_window(store, version, scope, cfg.training_days, end)
    df = prepare(load_training_set(store, version, scope, start, last), cfg)
    return train_frame(df, version, scope, cfg, (start, last), progress)


def train_frame(df: pl.DataFrame, version: str, scope: str, cfg: TrainConfig, window: tuple[dt.date, dt.date],
                progress=None, rows_fingerprint: str | None = None) -> TrainResult:
    """Cross-validate walk-forward by session and fit the final model on ``df`` (prepared rows
    of the window ``window``). ``rows_fingerprint``: ``fingerprint(df, ...)`` when the caller
    has it already."""
    start, last = window
    if df.height < cfg.min_rows:
        raise RetrainError(
            f"Insufficient training samples: {df.height:,} < {cfg.min_rows:,} ({scope}, {version}, {start} to {last})",
            hint="widen the window with --training-days (e.g. 120), load older bars (`retrain ingest`), "
                 "or lower --min-rows",
        )
    columns = feature_columns(version)
    x, y = matrix(df, columns), df["target"].to_numpy().astype(np.float64)
    dates = df["trade_date"].to_numpy()
    sessions = sorted(set(df["trade_date"].to_list()))
    fold_specs = walk_forward_folds(sessions, cfg.cv_folds, cfg.embargo)
    if not fold_specs:
        raise RetrainError(f"the window {start} to {last} has too few sessions ({len(sessions)}) for "
                           f"{cfg.cv_folds}-fold walk-forward validation", hint="use a longer --training-days")
    folds, best, oos = [], [], []
    for i, (train_s, test_s) in enumerate(fold_specs, 1):
        fit_s, valid_s = split_validation(train_s, cfg.validation_fraction, cfg.embargo)
        in_fit = np.isin(dates, np.array(fit_s, dtype=dates.dtype)) if fit_s else np.zeros(len(dates), bool)
        in_valid = np.isin(dates, np.array(valid_s, dtype=dates.dtype))
        in_test = np.isin(dates, np.array(test_s, dtype=dates.dtype))
        if not in_fit.any():  # too little history for a validation tail: fit on all training sessions
            in_fit, valid = np.isin(dates, np.array(train_s, dtype=dates.dtype)), None
        else:
            valid = (x[in_valid], y[in_valid])
        model = fit_model(x[in_fit], y[in_fit], cfg, columns, cfg.num_boost_round, valid)
        rounds = model.best_iteration or cfg.num_boost_round
        best.append(rounds)
        p = model.predict(x[in_test], num_iteration=rounds)
        m = evaluate(dates[in_test], y[in_test], p, cfg.top_n)
        m.update({"fold": i, "train_start": str(train_s[0]), "train_end": str(train_s[-1]),
                  "test_start": str(test_s[0]), "test_end": str(test_s[-1]),
                  "train_rows": int(in_fit.sum()), "test_rows": int(in_test.sum()), "best_iteration": int(rounds)})
        folds.append(m)
        oos.append(df.filter(pl.Series(in_test)).select("trade_date", "exchange", "symbol", "target")
                   .with_columns(pl.Series("prediction", p), pl.lit(i).alias("fold")))
        if progress:
            progress(i, len(fold_specs), m)
    rounds = max(10, int(np.median(best)))
    final = fit_model(x, y, cfg, columns, rounds)
    return TrainResult(
        model=final, version=version, scope=scope, feature_columns=columns, window=(start, last),
        rows=df.height, sessions=len(sessions), fingerprint=rows_fingerprint or fingerprint(df, columns),
        params=cfg.lgb_params(),
        num_boost_round=rounds, folds=folds, summary=summarize(folds), oos=pl.concat(oos),
    )
