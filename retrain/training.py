"""Training set, cross-validation metrics and the LightGBM model.

Honest numbers by construction:

* cross-validation is walk-forward by session: its folds are the newest ``cv_folds`` blocks of
  the record's fixed grid (``retrain_every`` sessions each, ``retrain.backtest``), and each is
  predicted by a model the routine fitted on the ``training_days`` before it, minus an
  embargo of ``embargo`` sessions; every row of a session is on the same side of a split;
* early stopping validates on the time-ordered tail of each training window (after the same
  embargo), never on a random split;
* missing features stay NaN (LightGBM routes them), so nothing is fitted across folds.

The target is the session's open-to-close return (``intraday_return``). By default
(``target = "excess"``) it is taken relative to the average of its exchange that session: the
market's move that day is common to every symbol and unpredictable, so fitting it only adds
noise to a model whose job is to rank symbols. Daily IC, rank IC and the top-N spread are the
same either way; R2 and MAE are reported on the target the model learns. ``target = "raw"``
fits the plain return.

One routine (``fit_window``) fits every model: the CV folds, the backtest blocks (the same
blocks of the same grid: a fold is a block of the out-of-sample record, reused as the record
is) and the final model, which is the routine applied to the whole window. So CV and the
backtest measure exactly what is saved. This module takes frames, never a store: the steps
load the rows and plan the blocks.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import math
import time
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import polars as pl

from retrain import metrics
from retrain.config import DEFAULTS, FIXED_MODEL_PARAMS, SCHEMA, Settings
from retrain.errors import RetrainError
from retrain.features import CATEGORICAL, feature_columns

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
    """sha256 of the training rows (keys, features, target) in their order: ``combine`` of their
    ``session_hashes``."""
    hashes = session_hashes(df, columns)
    return combine(hashes, sorted(hashes))


def combine(hashes: dict[dt.date, str], sessions) -> str:
    """One fingerprint of the rows of ``sessions`` from their ``session_hashes``."""
    return hashlib.sha256("|".join(hashes[d] for d in sessions).encode()).hexdigest()


# ------------------------------------------------------------- the splits
def split_validation(train: list[dt.date], fraction: float, embargo: int) -> tuple[list[dt.date], list[dt.date]]:
    """Time-ordered (fit, validation) split of training sessions: the validation set is the
    last ``fraction`` of them, separated from the fit sessions by ``embargo`` sessions."""
    n_valid = max(1, int(math.ceil(len(train) * fraction)))
    valid = train[-n_valid:]
    fit = train[: max(0, len(train) - n_valid - embargo)]
    return fit, valid


def session_mask(dates: np.ndarray, sessions) -> np.ndarray:
    """Rows of ``dates`` that belong to ``sessions``."""
    return np.isin(dates, np.array(list(sessions), dtype=dates.dtype)) if len(sessions) else np.zeros(len(dates), bool)


# ------------------------------------------------------------------ training
@dataclass
class TrainResult:
    model: Any  # None until the final model is fitted (``with_fit``)
    version: str
    scope: str
    feature_columns: list[str]
    window: tuple[dt.date, dt.date]
    rows: int
    sessions: int
    fingerprint: str
    params: dict
    num_boost_round: int | None  # None until the final model is fitted (``with_fit``)
    folds: list[dict]
    summary: dict
    oos: pl.DataFrame  # out-of-sample CV predictions: trade_date, exchange, symbol, target, prediction
    seconds: dict = field(default_factory=dict)  # wall time of the final fit


class Stopped(Exception):
    """A fit given up between two boosting rounds: whoever would use it has failed already."""


def _stopper(stop):
    """A LightGBM callback that gives the fit up once ``stop`` (a threading.Event) is set. A
    ``stop`` with an ``each_round()`` method has it called after every round (the fits' share
    of the threads: ``pipeline.Fits``)."""
    each_round = getattr(stop, "each_round", None)

    def check(env) -> None:
        if stop.is_set():
            raise Stopped
        if each_round is not None:
            each_round()
    return check


MONOTONE_KEYS = ("monotone_constraints", "monotone_constraint", "mc")  # LightGBM's name and aliases


def check_params(params: dict, columns: list[str]) -> None:
    """What LightGBM would stop the process for (a fatal error inside its threads: no exception
    to catch), said first as a RetrainError: monotone constraints that do not give one value per
    feature column, or that constrain a categorical one."""
    for key in MONOTONE_KEYS:
        if key not in params:
            continue
        raw = params[key]
        try:
            values = [int(v) for v in (raw.split(",") if isinstance(raw, str) else raw)]
        except (TypeError, ValueError):
            continue  # not a list of integers: the config's own check with LightGBM speaks of it
        order = "in the feature set's order (`retrain query \"DESCRIBE features\"`, after feature_version)"
        if len(values) != len(columns):
            raise RetrainError(f"retrain.toml [model] {key} has {len(values)} value(s), and the feature set has "
                               f"{len(columns)} columns", hint=f"give one value (-1, 0 or 1) per feature column, {order}")
        bad = [c for c, v in zip(columns, values) if v and c in CATEGORICAL]
        if bad:
            raise RetrainError(f"retrain.toml [model] {key} constrains the categorical feature(s) {', '.join(bad)}, "
                               "which LightGBM cannot make monotone", hint=f"give them 0 ({order})")


def fit_model(x: np.ndarray, y: np.ndarray, cfg: TrainConfig, columns: list[str], rounds: int,
              valid: tuple[np.ndarray, np.ndarray] | None = None, stop=None):
    from retrain import lgbm

    check_params(cfg.params, columns)
    lgb = lgbm.load()
    cats = [c for c in columns if c in CATEGORICAL]
    train = lgb.Dataset(lgbm.columns(x, columns), y, feature_name=columns, categorical_feature=cats,
                        free_raw_data=False)
    callbacks = [] if stop is None else [_stopper(stop)]
    sets = []
    if valid is not None:
        sets = [lgb.Dataset(lgbm.columns(valid[0], columns), valid[1], reference=train, feature_name=columns,
                            categorical_feature=cats)]
        callbacks.append(lgb.early_stopping(cfg.early_stopping_rounds, verbose=False))
    return lgb.train(cfg.lgb_params(), train, num_boost_round=rounds, valid_sets=sets, callbacks=callbacks)


def fit_window(x: np.ndarray, y: np.ndarray, dates: np.ndarray, sessions: list[dt.date], cfg: TrainConfig,
               columns: list[str], stop=None):
    """THE routine: fit a model on the rows of ``sessions`` (one training window, oldest first).

    The window's time-ordered tail (``validation_fraction`` of its sessions, after an embargo
    of ``embargo`` sessions) is the early-stopping set: boosting stops after
    ``early_stopping_rounds`` rounds without improvement there, at ``num_boost_round`` at most.
    A window too short for a tail is fitted whole, for ``num_boost_round`` rounds. ``y`` is the
    target already transformed by ``prepare``.

    CV folds, backtest blocks, the promotion replay and the final model all call this, so every
    out-of-sample figure measures exactly the routine that produced the saved model.
    Returns (model, rounds): predict with ``num_iteration=rounds``. ``stop``: a threading.Event
    that gives the fit up between two rounds (``Stopped``) once set."""
    fit_s, valid_s = split_validation(sessions, cfg.validation_fraction, cfg.embargo)
    in_fit = session_mask(dates, fit_s)
    if in_fit.any():
        in_valid = session_mask(dates, valid_s)
        model = fit_model(x[in_fit], y[in_fit], cfg, columns, cfg.num_boost_round, (x[in_valid], y[in_valid]),
                          stop=stop)
    else:
        rows = session_mask(dates, sessions)
        model = fit_model(x[rows], y[rows], cfg, columns, cfg.num_boost_round, stop=stop)
    return model, int(model.best_iteration or cfg.num_boost_round)


HASHED_EXTRA = ("actual", "avg_dollar_volume_20")  # what a block's stored rows carry besides features


def session_hashes(df: pl.DataFrame, columns: list[str], x: np.ndarray | None = None) -> dict[dt.date, str]:
    """sha256 per session of its rows (keys, features, target, and the raw return and dollar
    volume a backtest block stores), for fingerprints of any set of sessions without hashing the
    same rows twice. ``df`` is ordered by session (as ``training_set.sql`` returns it); ``x``:
    ``matrix(df, columns)`` when the caller has it."""
    if df.is_empty():
        return {}
    keys = df.select(pl.concat_str("exchange", "symbol", separator="|")).to_series().to_list()
    extra = [c for c in HASHED_EXTRA if c in df.columns]
    base = matrix(df, columns) if x is None else x
    more = df.select([pl.col(c).cast(pl.Float64) for c in ("target", *extra)]).to_numpy()
    dates = df["trade_date"].to_numpy()
    cuts = np.flatnonzero(dates[1:] != dates[:-1]) + 1
    starts, ends = np.concatenate([[0], cuts]), np.concatenate([cuts, [len(dates)]])
    # Each session's values, row-major, in one buffer the size of the largest session (the
    # bytes hashed are the same as those of one row-major copy of everything, without
    # allocating and touching that copy).
    width = base.shape[1] + more.shape[1]
    buf = np.empty((int((ends - starts).max()), width), dtype=np.float64)
    out = {}
    for lo, hi in zip(starts.tolist(), ends.tolist()):
        h = hashlib.sha256("\n".join(keys[lo:hi]).encode())
        rows = buf[: hi - lo]
        rows[:, :base.shape[1]] = base[lo:hi]
        rows[:, base.shape[1]:] = more[lo:hi]
        h.update(rows)
        out[df["trade_date"][lo]] = h.hexdigest()
    return out


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


def fold_metrics(fold: int, frame: pl.DataFrame, train: list[dt.date], train_rows: int, rounds: int | None,
                 top_n: int) -> dict:
    """The validation metrics and description of one CV fold. ``frame``: its out-of-sample rows
    (trade_date, target, prediction), ``train``: the sessions its model was trained on."""
    dates = frame["trade_date"].to_numpy()
    m = evaluate(dates, frame["target"].to_numpy().astype(np.float64), frame["prediction"].to_numpy(), top_n)
    m.update({"fold": fold, "train_start": str(train[0]), "train_end": str(train[-1]),
              "test_start": str(frame["trade_date"].min()), "test_end": str(frame["trade_date"].max()),
              "train_rows": int(train_rows), "test_rows": frame.height, "best_iteration": rounds})
    return m


def fit_final(df: pl.DataFrame, cfg: TrainConfig, columns: list[str], stop=None) -> tuple[Any, int, float]:
    """(model, rounds, seconds of the fit): the routine (``fit_window``) on ``df``, the prepared
    rows of a training window."""
    x, y = matrix(df, columns), df["target"].to_numpy().astype(np.float64)
    sessions = df["trade_date"].unique().sort().to_list()
    dates = df["trade_date"].to_numpy()
    started = time.perf_counter()
    final, rounds = fit_window(x, y, dates, sessions, cfg, columns, stop=stop)
    if final.best_score:
        # LightGBM sums the early-stopping metric on its threads, so its last digits depend on how
        # many there were (the trees do not). The saved model carries it: computed again here,
        # the same on any number of threads, so the same rows give the same model file.
        import collections

        tail = session_mask(dates, split_validation(sessions, cfg.validation_fraction, cfg.embargo)[1])
        error = final.predict(x[tail], num_iteration=rounds) - y[tail]
        l2 = float(np.mean(np.square(error)))
        again = {"l2": l2, "rmse": float(np.sqrt(l2)), "l1": float(np.mean(np.abs(error)))}
        score = collections.defaultdict(collections.OrderedDict)
        for name, metrics in final.best_score.items():
            score[name].update({k: again.get(k, v) for k, v in metrics.items()})
        final.best_score = score
    return final, rounds, round(time.perf_counter() - started, 3)


def train_frame(df: pl.DataFrame, version: str, scope: str, cfg: TrainConfig, window: tuple[dt.date, dt.date],
                folds: list[dict], oos: pl.DataFrame, rows_fingerprint: str | None = None,
                columns: list[str] | None = None) -> TrainResult:
    """Fit the final model with the routine (``fit_final``) on ``df``, the prepared rows of the
    window ``window``, and gather it with its cross-validation: ``folds`` (``fold_metrics`` of
    each) and ``oos`` (their out-of-sample rows: trade_date, exchange, symbol, target,
    prediction, fold). ``rows_fingerprint``: ``fingerprint(df, ...)`` when the caller has it."""
    columns = columns or feature_columns(version)
    unfitted = cv_result(df, version, scope, cfg, window, folds, oos, rows_fingerprint, columns)
    return with_fit(unfitted, fit_final(df, cfg, columns))


def cv_result(df: pl.DataFrame, version: str, scope: str, cfg: TrainConfig, window: tuple[dt.date, dt.date],
              folds: list[dict], oos: pl.DataFrame, rows_fingerprint: str | None = None,
              columns: list[str] | None = None) -> TrainResult:
    """``train_frame``'s result before its final fit (``model`` and ``num_boost_round`` None):
    for a caller that fits the final model while it does other work (``with_fit`` completes it)."""
    check_rows(df.height, cfg, scope, version, window)
    columns = columns or feature_columns(version)
    return TrainResult(
        model=None, version=version, scope=scope, feature_columns=columns, window=tuple(window), rows=df.height,
        sessions=df["trade_date"].n_unique(), fingerprint=rows_fingerprint or fingerprint(df, columns),
        params=cfg.lgb_params(), num_boost_round=None, folds=folds, summary=summarize(folds), oos=oos,
    )


def with_fit(result: TrainResult, fitted: tuple[Any, int, float]) -> TrainResult:
    """``result`` with its final model: ``fitted`` is ``fit_final`` of its rows."""
    model, rounds, seconds = fitted
    return replace(result, model=model, num_boost_round=rounds, seconds={"final_fit": seconds})


def check_rows(rows: int, cfg: TrainConfig, scope: str, version: str, window: tuple[dt.date, dt.date]) -> None:
    """A training window needs ``min_rows`` rows."""
    if rows < cfg.min_rows:
        raise RetrainError(
            f"Insufficient training samples: {rows:,} < {cfg.min_rows:,} ({scope}, {version}, {window[0]} to {window[1]})",
            hint="widen the window with --training-days (e.g. 120), load older bars (`retrain ingest`), "
                 "or lower --min-rows",
        )
