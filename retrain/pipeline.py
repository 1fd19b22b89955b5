"""Steps that tie the pieces together: train and register a model, predict the next session."""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import hashlib
import json
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl

from retrain import calendar, catalog, metrics, queries, steps, training
from retrain.backtest import Z95
from retrain.calendar import AsOf
from retrain.config import Settings
from retrain.errors import CorruptFile, RetrainError
from retrain.features import CATEGORICAL, feature_columns
from retrain.files import atomic_write_parquet
from retrain.record import RecordStore
from retrain.registry import META_SCHEMA, Registry, verified
from retrain.store import Store

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
    gate: dict | None = None  # the promotion decision with its figures (None when not decided)


# ------------------------------------------------------------------ the data
def last_labelled(store: Store, version: str, scope: str, until: dt.date | None = None) -> dt.date | None:
    """The last session with a labelled feature row of ``version`` in ``scope`` (on or before
    ``until``): what sql/last_labelled.sql asks of the catalog, found from the newest month
    files back (a feature row and its session's bar share a month), so only a month or two of
    each exchange is read, however long the history."""
    horizon = store.label_horizon()
    best = None
    for exchange in (store.exchanges() if scope == "ALL" else [scope]):
        limit = horizon.get(exchange)
        if limit is None:
            continue
        limit = min(limit, until) if until is not None else limit
        for month in reversed(store.table_months("features", version, exchange)):
            if month > f"{limit:%Y-%m}":
                continue
            if best is not None and month < f"{best:%Y-%m}":
                break  # no later session here than one found already
            rows = store.read_table_partition("features", exchange, month, version, columns=["symbol", "trade_date"])
            bars = store.read_partition(exchange, month, columns=["symbol", "date"])
            last = (rows.lazy().filter(pl.col("trade_date") <= limit)
                    .join(bars.lazy().rename({"date": "trade_date"}), on=["symbol", "trade_date"], how="semi")
                    .select(pl.col("trade_date").max()).collect().item())
            if last is not None:
                best = last if best is None else max(best, last)
                break
    return best


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
    con = catalog.connect(store)
    try:
        rel = con.sql(queries.load("training_set").rstrip().rstrip(";"),
                      params={"version": version, "scope": scope, "start": start, "end": end})
        return pl.from_arrow(rel.to_arrow_table())
    finally:
        con.close()


def train(store: Store, version: str, scope: str, cfg: training.TrainConfig, end: dt.date | None = None,
          progress=None, bcfg=None) -> training.TrainResult:
    """Load the rows, cross-validate on the newest blocks of the grid and fit the final model
    (``cross_validate`` and ``training.train_frame``), keeping nothing: no record, no run folder,
    no promotion."""
    from retrain.backtest import BacktestConfig

    bcfg = bcfg or BacktestConfig(max_positions=cfg.top_n)
    columns = steps.feature_columns(store, version)
    window = training_window(store, version, scope, cfg.training_days, end)
    routine, spec = routine_spec(cfg, bcfg, version, columns)
    prep = Prepared.of(load_frame(store, version, scope, cfg, window, cv_first_day(window, cfg, bcfg)), columns)
    folds = plan_cv(prep, window, cfg, bcfg, routine)
    fold_metrics, oos, _ = cross_validate(None, prep, version, scope, folds, cfg, bcfg, routine, spec, progress)
    rows = prep.data.filter(pl.col("trade_date") >= window[0])
    return training.train_frame(rows, version, scope, cfg, window, fold_metrics, oos, columns=columns)


def cv_first_day(window: tuple[dt.date, dt.date], cfg: training.TrainConfig, bcfg) -> dt.date:
    """The first day of the oldest CV fold: ``cv_folds`` grid blocks back from the window's end."""
    from retrain import backtest as bt

    every = bcfg.retrain_every
    return dt.date.fromisoformat(bt.block_key(bt.block_id(window[1], every) - cfg.cv_folds + 1, every))


def plan_cv(prep: Prepared, window: tuple[dt.date, dt.date], tcfg: training.TrainConfig, bcfg, routine: str) -> list:
    """The CV folds: the newest ``cv_folds`` blocks of the record's grid with a session in the
    training window, each with its training window (``backtest.plan_blocks``). A fold that cannot
    be formed is an error that names the values to change."""
    from retrain import backtest as bt

    every = bcfg.retrain_every
    in_window = [d for d in prep.sessions if window[0] <= d <= window[1]]
    ids = sorted({bt.block_id(d, every) for d in in_window})[-tcfg.cv_folds:]
    if len(ids) < tcfg.cv_folds:
        raise RetrainError(
            f"cv_folds={tcfg.cv_folds} needs {tcfg.cv_folds} blocks of {every} sessions in the training window; "
            f"{window[0]}..{window[1]} (training_days={tcfg.training_days}) has {len(in_window)} labelled "
            f"session(s) in {len(ids)} block(s)",
            hint="lengthen --training-days, lower [training] cv_folds in retrain.toml, or load older bars")
    blocks, problems = bt.plan_blocks(prep.sessions, ids, tcfg, bcfg, routine, prep.hashes, prep.rows)
    if problems:
        first_bad = min(problems)
        raise RetrainError(
            f"fold {ids.index(first_bad) + 1} of cv_folds={tcfg.cv_folds} (the block starting "
            f"{bt.block_key(first_bad, every)}) cannot be formed: {problems[first_bad]}",
            hint=f"lower [training] cv_folds (now {tcfg.cv_folds}) or embargo (now {tcfg.embargo}), lengthen "
                 f"--training-days (now {tcfg.training_days}), lower --min-rows, or load older bars")
    return blocks


def cross_validate(records: RecordStore | None, prep: Prepared, version: str, scope: str, folds: list,
                   cfg: training.TrainConfig, bcfg, routine: str, spec: dict, progress=None, fits: Fits | None = None):
    """The CV folds' predictions, through the record (``build_record``: a fold whose rows and
    routine are unchanged is read back; ``records`` None: trained, kept nowhere), and their
    metrics. ``progress(i, n, metrics)`` after each fold. Returns (fold metrics, out-of-sample
    rows, the folds' Record: its ``warnings`` name the stored fold files found corrupted or torn,
    and rebuilt, for the caller to say)."""
    targets = prep.data.select("trade_date", "exchange", "symbol", "target")
    out, oos = [], []

    def on_block(block, frame, status):
        # the targets of the block's sessions only: a join that hashes the whole window per fold
        # took 0.07 s a fold
        span = targets.filter(pl.col("trade_date").is_between(frame["trade_date"].min(), frame["trade_date"].max()))
        rows = frame.select("trade_date", "exchange", "symbol", pl.col("predicted").alias("prediction")).join(
            span, on=["trade_date", "exchange", "symbol"], how="left", maintain_order="left")
        rounds = int(frame["rounds"][0]) if "rounds" in frame.columns else None
        m = training.fold_metrics(len(out) + 1, rows, list(block.train), sum(prep.rows[d] for d in block.train),
                                  rounds, cfg.top_n)
        m["status"] = status
        out.append(m)
        oos.append(rows.select("trade_date", "exchange", "symbol", "target", "prediction")
                   .with_columns(pl.lit(len(out)).alias("fold")))
        if progress:
            progress(len(out), len(folds), m)

    record = build_record(records, prep, version, scope, folds, cfg, bcfg, routine, spec, on_block=on_block,
                          fits=fits)
    return out, pl.concat(oos), record


# ------------------------------------------------------------------ promotion
GATE_MARGIN = {"net_return": 0.0001, "rank_ic": 0.002}  # non-inferiority margins, per session
GATE_TEST = ("paired one-sided tests (95%) on the daily differences challenger - champion over the same "
             "out-of-sample sessions: the challenger is kept out only when it is worse by more than the margin "
             "(1 bp of net return or 0.002 of rank IC per session) with 95% confidence; it replaces the "
             "champion otherwise, and is called better when it beats it with 95% confidence")


def paired_gate(challenger: pl.DataFrame, champion: pl.DataFrame) -> dict:
    """The paired comparison of two records on their common sessions. Each frame: trade_date,
    net_return (the strategy's daily net return), rank_ic (that session's rank IC)."""
    both = challenger.join(champion, on="trade_date", suffix="_champion").sort("trade_date")
    out = {"sessions": both.height, "margin": dict(GATE_MARGIN), "test": GATE_TEST}
    worse = better = False
    for key in ("net_return", "rank_ic"):
        d = (both[key] - both[f"{key}_champion"]).drop_nulls().drop_nans().to_numpy()
        mean, se, t = metrics.mean_t(d) if len(d) > 1 else (float("nan"),) * 3
        if len(d) > 1 and se == 0:  # identical records
            mean, se, t = float(np.mean(d)), 0.0, float("nan")
        lo, hi = (mean - Z95 * se, mean + Z95 * se) if se == se else (float("nan"), float("nan"))
        out[f"{key}_diff"] = {"mean": mean, "se": se, "t": t, "ci": [lo, hi], "sessions": int(len(d))}
        worse |= bool(hi == hi and hi < -GATE_MARGIN[key])
        better |= bool(lo == lo and lo > 0)
    out["outcome"] = "worse" if worse else "better" if better else "not different"
    return out


def promotion_decision(mode: str, new: dict, active: dict | None, compared: dict | None = None) -> tuple[bool, str]:
    """Whether a new run becomes active.

    ``auto``: yes when there is no active model. Never when the new run's training data ends
    before the active model's (a run with a past --as-of reads the past; it does not replace a
    fresher model). Otherwise, with a backtest, ``compared`` is ``paired_gate`` of the two
    records over the new run's record sessions (the active run's routine replayed where its own
    record does not cover them): kept out when significantly worse beyond the margin, promoted
    otherwise. Without a backtest, the out-of-sample CV rank IC is compared (and the reason says
    so)."""
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
    if compared is not None:
        r, ic = compared["net_return_diff"], compared["rank_ic_diff"]
        detail = (f"over the same {compared['sessions']} out-of-sample sessions: daily net return "
                  f"{_bp(r['mean'])} ± {_bp(r['se'], sign=False)} vs the champion, rank IC {_signed(ic['mean'])} ± {_num(ic['se'])}")
        if compared.get("same_routine"):
            detail = (f"same training routine on {'fresher' if new_end > active_end else 'the same'} data, so its "
                      f"record on the same {compared['sessions']} sessions is this one")
        outcome = compared["outcome"]
        if outcome == "worse":
            return False, (f"significantly worse than the active model {active['run_id']} ({detail}); kept as a "
                           f"candidate ({promote_hint})")
        word = "significantly better than" if outcome == "better" else "not significantly worse than"
        return True, f"{word} the active model {active['run_id']} ({detail})"
    new_ic = new["cv"]["summary"]["rank_ic"]["mean"]
    old_ic = active["cv"]["summary"]["rank_ic"]["mean"]
    worse = not np.isnan(old_ic) and new_ic < old_ic
    detail = f"no backtest to compare on, so cross-validation rank IC {new_ic:+.4f} vs {old_ic:+.4f}"
    if not worse:
        return True, f"not worse than the active model {active['run_id']} ({detail})"
    return False, f"worse than the active model {active['run_id']} ({detail}); kept as a candidate ({promote_hint})"


def _bp(v: float, sign: bool = True) -> str:
    return "n/a" if v != v else f"{v * 10_000:{'+' if sign else ''}.1f} bp"


def _signed(v: float) -> str:
    return "n/a" if v != v else f"{v:+.4f}"


def _num(v: float) -> str:
    return "n/a" if v != v else f"{v:.4f}"


def active_routine(active: dict) -> training.TrainConfig:
    """The training routine (params, target, window length) of a stored run; ``min_rows`` only
    gates a run, so it is left out (1): the routine is judged, not its window size. The
    parameters retrain sets on every model are today's (a run of older code may carry
    ``force_row_wise``, which LightGBM refuses beside today's ``force_col_wise``)."""
    stored = {**active["training_config"], "min_rows": 1}
    return training.TrainConfig(**stored, params={k: v for k, v in active["params"].items()
                                                  if k not in training.FIXED_PARAMS and k != "force_row_wise"})


# ------------------------------------------------------------------ the record
def record_first_day(records: RecordStore, version: str, scope: str, routine: str, window: tuple[dt.date, dt.date],
                     bcfg) -> dt.date:
    """The first day the record can need: the oldest stored block of the routine that may still
    be within ``record_sessions`` sessions of the window's end, or the window's start."""
    from retrain import backtest as bt

    horizon = window[1] - dt.timedelta(days=math.ceil(bcfg.record_sessions * 7 / 5) + 14)
    stored = [dt.date.fromisoformat(k) for k in records.keys(version, scope, routine)]
    stored = [d for d in stored if horizon <= d <= window[1]]
    first = min([window[0], *stored])
    return dt.date.fromisoformat(bt.block_key(bt.block_id(first, bcfg.retrain_every), bcfg.retrain_every))


def block_keys(sessions: list[dt.date], first_day: dt.date, bcfg) -> set[str]:
    """The keys of the grid's blocks that hold one of ``sessions`` from ``first_day`` on: every
    block a run that reads those sessions may plan (CV folds and record blocks), known before the
    rows are hashed."""
    from retrain import backtest as bt

    ids = {bt.block_id(d, bcfg.retrain_every) for d in sessions if d >= first_day}
    return {bt.block_key(i, bcfg.retrain_every) for i in ids}


def load_frame(store: Store, version: str, scope: str, cfg: training.TrainConfig, window: tuple[dt.date, dt.date],
               first_test_day: dt.date | None = None) -> pl.DataFrame:
    """The prepared rows (``training.prepare``) a run needs: its training window and, with a
    backtest, every block's training window from ``first_test_day`` on. Loaded once; the steps
    slice it."""
    first = window[0]
    if first_test_day:
        first = min(first, first_test_day - dt.timedelta(days=cfg.training_days + 30))
    return training.prepare(load_training_set(store, version, scope, first, window[1]), cfg)


@dataclass
class Prepared:
    """A frame with what every block needs, computed once: matrix, target, sessions, and the
    hash and row count of each session."""

    data: pl.DataFrame
    x: np.ndarray
    y: np.ndarray
    dates: np.ndarray
    sessions: list[dt.date]
    hashes: dict[dt.date, str]
    rows: dict[dt.date, int]

    columns: list[str] = field(default_factory=list)  # the feature columns of x

    @classmethod
    def of(cls, data: pl.DataFrame, columns: list[str]) -> Prepared:
        x = training.matrix(data, columns)
        counts = data.group_by("trade_date").len().sort("trade_date")
        return cls(data, x, data["target"].to_numpy().astype(np.float64), data["trade_date"].to_numpy(),
                   counts["trade_date"].to_list(), training.session_hashes(data, columns, x=x),
                   dict(zip(counts["trade_date"].to_list(), counts["len"].to_list())), list(columns))

    def fingerprint(self, sessions) -> str:
        """sha256 of the rows of ``sessions`` (keys, features, target, return), from the session hashes."""
        return training.combine(self.hashes, sessions)


@dataclass
class Record:
    """The out-of-sample record of one routine over a list of grid blocks."""

    routine: str
    blocks: list  # backtest.Block, oldest first
    predictions: pl.DataFrame  # every block's predictions, in block order
    reused: int  # blocks read back: same routine, same rows
    trained: int  # blocks whose model was trained now
    warnings: list[str]
    repredicted: int = 0  # blocks whose stored model predicted them again (only their own rows changed)
    frames: list = field(default_factory=list)  # each block's predictions, in block order
    status: dict = field(default_factory=dict)  # block key -> "reused", "trained" or "predicted again"


def labelled_in(sessions: list[dt.date], window: tuple[dt.date, dt.date]) -> list[dt.date]:
    """The labelled ``sessions`` in ``window``; an error when there are none."""
    in_window = [d for d in sessions if window[0] <= d <= window[1]]
    if not in_window:
        raise RetrainError(f"no labelled sessions between {window[0]} and {window[1]}",
                           hint="pick dates inside the labelled range (`retrain status` shows it)")
    return in_window


def plan_record(prep: Prepared, window: tuple[dt.date, dt.date], first_day: dt.date, tcfg, bcfg, routine: str):
    """The blocks of the record: every grid block with a session in ``window`` (an error when one
    cannot be formed), and before them the blocks from ``first_day`` on that can be formed,
    trimmed to the newest ``record_sessions`` sessions (whole blocks; the window's blocks stay)."""
    from retrain import backtest as bt

    in_window = labelled_in(prep.sessions, window)
    every = bcfg.retrain_every
    window_ids = sorted({bt.block_id(d, every) for d in in_window})
    blocks, problems = bt.plan_blocks(prep.sessions, window_ids, tcfg, bcfg, routine, prep.hashes, prep.rows)
    if problems:
        first_bad = min(problems)
        text = problems[first_bad]
        hint = ("use a longer --training-days, a later --start-date or --as-of, a shorter --backtest-days, "
                "or lower --min-rows" if text.startswith("Insufficient") else
                "start the backtest later (a shorter --backtest-days), or build more history")
        raise RetrainError(f"the backtest block {bt.block_key(first_bad, every)} cannot be formed: {text}", hint=hint)
    earlier_ids = list(range(bt.block_id(first_day, every), window_ids[0]))
    earlier, _ = bt.plan_blocks(prep.sessions, earlier_ids, tcfg, bcfg, routine, prep.hashes, prep.rows)
    # the earlier blocks form a contiguous run ending at the window: drop any before a gap
    kept: list = []
    for b in reversed(earlier):
        if (kept[0].id if kept else window_ids[0]) - b.id != 1:
            break
        kept.insert(0, b)
    budget = bcfg.record_sessions - sum(len(b.sessions) for b in blocks)
    while kept and sum(len(b.sessions) for b in kept) > max(0, budget):
        kept.pop(0)
    return kept + blocks, len(kept)


def build_record(records: RecordStore | None, prep: Prepared, version: str, scope: str, blocks: list, tcfg, bcfg,
                 routine: str, spec: dict, progress=None, on_block=None, done: Record | None = None,
                 fits: Fits | None = None) -> Record:
    """Predictions of every block: read back when the stored block has the same fingerprint,
    predicted again by its stored model when only the block's own rows changed, trained
    (``backtest.predict_block``) and stored otherwise; taken from ``done`` (a Record built
    earlier in the run, e.g. the CV folds) when it has the block. ``records`` None: nothing is
    read or stored. ``progress(i, n, sessions, train)`` after each block trained,
    ``on_block(block, frame, status)`` after each block."""
    from retrain import backtest as bt

    columns = prep.columns or feature_columns(version)
    earlier = ({b.key: (frame, done.status[b.key]) for b, frame in zip(done.blocks, done.frames) if b in blocks}
               if done else {})
    rest = [b.key for b in blocks if b.key not in earlier]
    stored, warnings = records.read(version, scope, routine, rest) if records else ({}, [])
    todo = [b for b in blocks if b.key not in earlier
            and not (b.key in stored and stored[b.key]["block_fingerprint"][0] == b.fingerprint)]
    models = {b.key: records.read_model(version, scope, routine, b.model_fingerprint) if records else None
              for b in todo}
    to_train = [b for b in todo if models[b.key] is None]
    frames, status, trained = [], {}, 0
    with _blocks_in_pairs(to_train, prep, tcfg, columns, fits) as ahead:
        for b in blocks:
            if b.key in earlier:
                frame, status[b.key] = earlier[b.key]
            elif b not in todo:
                frame, status[b.key] = stored[b.key], "reused"
            else:
                frame, text = (ahead[b.key].result() if b.key in ahead else
                               bt.predict_block(prep.data, prep.x, prep.y, prep.dates, b, tcfg, columns, models[b.key]))
                if models[b.key] is None:
                    if records:
                        records.write_model(version, scope, routine, b.model_fingerprint, text)
                    trained += 1
                    status[b.key] = "trained"
                    if progress:
                        progress(trained, len(to_train), list(b.sessions), list(b.train))
                else:
                    status[b.key] = "predicted again"
                if records and not _fuller(stored.get(b.key), b):
                    records.write(version, scope, routine, b.key, frame, spec)
            frames.append(frame)
            if on_block:
                on_block(b, frame, status[b.key])
    counts = {s_: sum(v == s_ for v in status.values()) for s_ in ("reused", "trained", "predicted again")}
    return Record(routine, blocks, pl.concat(frames, how="vertical_relaxed"), counts["reused"], counts["trained"],
                  warnings, counts["predicted again"], frames, status)


class _Lanes:
    """The fits' stop signal (a threading.Event: set, the fits give up between two boosting
    rounds) and their share of the threads. Each fit starts on half of them; after every round
    (``each_round``), a fit that runs alone, with no other fit to start, while the caller waits
    for a fit's result (and so leaves its core idle), takes them all; the next fit to start
    sets half again. Without it the last fit of a full rebuild ran for up to 2 s on one core
    while the other idled."""

    def __init__(self, half: int, total: int):
        import threading

        self.stop = threading.Event()
        self.half, self.total = half, total
        self._lock = threading.Lock()
        self.pending = self.running = self.waiting = 0

    def is_set(self) -> bool:
        return self.stop.is_set()

    def set(self) -> None:
        self.stop.set()

    def each_round(self) -> None:
        from retrain import lgbm

        with self._lock:
            alone = self.running == 1 and self.pending == 0 and self.waiting > 0
        if alone:
            lgbm.set_threads(self.total)

    def submitted(self) -> None:
        with self._lock:
            self.pending += 1

    @contextlib.contextmanager
    def waited(self) -> Iterator[None]:
        with self._lock:
            self.waiting += 1
        try:
            yield
        finally:
            with self._lock:
                self.waiting -= 1

    @contextlib.contextmanager
    def fitting(self) -> Iterator[None]:
        with self._lock:
            self.pending -= 1
            self.running += 1
        try:
            yield
        finally:
            with self._lock:
                self.running -= 1


class _Awaited:
    """A fit's future, whose ``result()`` counts the caller as waiting (``_Lanes``), and first
    starts the fits held back (``Fits.release``): one whose result is wanted runs now."""

    def __init__(self, future, lanes: _Lanes, release=None):
        self._future, self._lanes, self._release = future, lanes, release

    def result(self, timeout: float | None = None):
        if self._release is not None:
            self._release()
        with self._lanes.waited():
            return self._future.result(timeout)

    def __getattr__(self, name: str):
        return getattr(self._future, name)


class Fits:
    """LightGBM fits of the routine, run two at a time on threads of their own, each on half the
    configured threads: LightGBM gains less from a second thread than a second fit does (two
    one-thread fits at once take 0.85 to 0.9 of two two-thread fits in turn), and a fit waited
    for later runs beside the caller's own work. A fit left running alone takes every thread
    from its next round on (``_Lanes``). A model is the same, tree for tree, on any number of
    threads (deterministic, column-wise histograms); its text names the configured threads, as
    a fit on them would. With one thread configured, fits run one at a time."""

    def __init__(self, tcfg: training.TrainConfig):
        import os
        from concurrent.futures import ThreadPoolExecutor

        self.configured = int(tcfg.lgb_params().get("num_threads") or 0)
        threads = self.configured if self.configured > 0 else (os.cpu_count() or 1)
        self.half = max(1, threads // 2)
        self.cfg = dataclasses.replace(tcfg, params={**tcfg.params, "num_threads": self.half})
        self.paired = threads >= 2
        self.stop = _Lanes(self.half, threads)  # set: the fits give up between two boosting rounds
        self._pool = ThreadPoolExecutor(2 if self.paired else 1, thread_name_prefix="retrain-fit")
        self._wait = True  # close() waits for the fits running (not once they are given up)
        self._held: list = []  # (job, its future): fits to start after the blocks (``release``)

    def _submit(self, fit, hold: bool = False):
        """``fit`` on the pool, counted as waiting, then running, for the threads' share;
        ``hold``: queued only at ``release()``, behind the fits submitted until then."""
        from concurrent.futures import Future

        self.stop.submitted()

        def counted():
            with self.stop.fitting():
                return fit()
        if not hold:
            return _Awaited(self._pool.submit(counted), self.stop)
        future = Future()
        self._held.append((counted, future))
        return _Awaited(future, self.stop, release=self.release)

    def release(self) -> None:
        """Queue the fits held back, in order: from the caller's thread, once the blocks to train
        are submitted (``_blocks_in_pairs``), or when a held fit's result is wanted."""
        held, self._held = self._held, []
        for job, future in held:
            def settle(done, future=future) -> None:
                if done.cancelled():
                    future.cancel()
                elif done.exception() is not None:
                    future.set_exception(done.exception())
                else:
                    future.set_result(done.result())
            self._pool.submit(job).add_done_callback(settle)

    def text(self, text: str, threads: int | None = None) -> str:
        """A model's text (fitted on ``threads``, half the configured by default) as a fit on the
        configured threads writes it."""
        threads = self.half if threads is None else threads
        return text.replace(f"\n[num_threads: {threads}]\n", f"\n[num_threads: {self.configured}]\n", 1)

    def block(self, prep: Prepared, block, columns: list[str]):
        """The future of ``backtest.predict_block`` of a block to train."""
        from retrain import backtest as bt

        def fit():
            frame, text = bt.predict_block(prep.data, prep.x, prep.y, prep.dates, block, self.cfg, columns,
                                           stop=self.stop)
            return frame, self.text(text)
        return self._submit(fit)

    def final(self, rows: pl.DataFrame, columns: list[str], tcfg: training.TrainConfig, alone: bool):
        """The future of ``training.fit_final`` of a training window's rows: on every configured
        thread when it is to run ``alone`` (no block is to be trained beside it: the caller's
        own work, mostly single-threaded, takes less from it than half the threads would), else
        on half of them, paired with the blocks, and after them: the caller then works on the
        record and the report beside the last fit rather than after it. Either way the model
        comes back loaded from its text as the configured threads write it, with its best
        iteration, scores and parameters: the same object, and the same model.joblib, whatever
        the record's state."""
        def fit():
            import copy

            from retrain import lgbm

            lgb = lgbm.load()
            cfg = tcfg if alone else self.cfg
            model, rounds, seconds = training.fit_final(rows, cfg, columns, stop=self.stop)
            threads = cfg.lgb_params().get("num_threads")
            text = self.text(model.model_to_string(num_iteration=-1), threads)
            loaded = lgb.Booster(model_str=text)
            loaded.best_iteration, loaded.best_score = model.best_iteration, copy.deepcopy(model.best_score)
            loaded.params = {**model.params, "num_threads": self.configured}
            return loaded, rounds, seconds
        return self._submit(fit, hold=not alone)

    def warm(self) -> None:
        """Import LightGBM on a fit thread now, so that the first fit does not wait for it."""
        from retrain import lgbm

        self._pool.submit(lgbm.load)

    def give_up(self) -> None:
        """Stop the fits at their next boosting round and leave without waiting for them."""
        self.stop.set()
        self._wait = False

    def close(self) -> None:
        import sys

        for _, future in self._held:  # never released: never run
            future.cancel()
        self._held = []
        self._pool.shutdown(wait=self._wait, cancel_futures=True)
        if self._wait and "lightgbm" in sys.modules:  # LightGBM's threads as configured again
            from retrain import lgbm

            lgbm.set_threads(self.configured)


@contextlib.contextmanager
def fits_in_pairs(tcfg: training.TrainConfig) -> Iterator[Fits]:
    """A ``Fits`` for the block; leaving it waits for the fits running and cancels the rest,
    and an error (or Ctrl-C) in the block gives the running fits up at their next round."""
    fits = Fits(tcfg)
    try:
        yield fits
    except BaseException:
        fits.stop.set()
        raise
    finally:
        fits.close()


@contextlib.contextmanager
def _blocks_in_pairs(to_train: list, prep: Prepared, tcfg, columns: list[str], fits: Fits | None = None
                     ) -> Iterator[dict]:
    """{block key: future of ``backtest.predict_block``} for the blocks to train two at a time
    (``Fits``): all of them on ``fits`` when the caller has one running; else on a pool of their
    own, where an odd last block, and a single one, are left to the caller, to train on every
    thread (empty with fewer than two blocks or threads)."""
    if fits is not None:
        ahead = {b.key: fits.block(prep, b, columns) for b in to_train}
        fits.release()  # a final fit held back starts after these
        yield ahead
        return
    with fits_in_pairs(tcfg) as own:
        paired = to_train[: len(to_train) - len(to_train) % 2] if own.paired else []
        yield {b.key: own.block(prep, b, columns) for b in paired}


def _fuller(stored: pl.DataFrame | None, block) -> bool:
    """Whether the stored version of a block holds more of its sessions than ``block``: a run as
    of a past day sees part of a week that the record has whole, and leaves it so."""
    return stored is not None and set(block.sessions) < set(stored["trade_date"].unique().to_list())


def routine_spec(tcfg, bcfg, version: str, columns: list[str] | None = None) -> tuple[str, dict]:
    """(fingerprint, description) of a routine's record (``backtest.routine_spec``); ``columns``:
    the version's feature columns (default: its definitions')."""
    from retrain import backtest as bt
    from retrain.registry import library_versions

    return bt.routine_spec(tcfg, bcfg, version, columns or feature_columns(version), library_versions()["lightgbm"])


def session_figures(predictions: pl.DataFrame, bcfg) -> pl.DataFrame:
    """trade_date, net_return (the strategy's daily net return), rank_ic: what the gate pairs."""
    from retrain import backtest as bt

    daily, _ = bt.simulate(predictions.drop_nulls("actual"), bcfg)
    p = predictions.drop_nulls(["actual", "predicted"])
    days, values = metrics.session_ic(p["trade_date"].to_numpy(), p["actual"].to_numpy(), p["predicted"].to_numpy(),
                                      rank=True)
    ric = pl.DataFrame({"trade_date": days, "rank_ic": values}, schema={"trade_date": pl.Date, "rank_ic": pl.Float64})
    return daily.select(pl.col("date").alias("trade_date"), pl.col("daily_return").alias("net_return")).join(
        ric, on="trade_date", how="left")


def run_identity(rows_fingerprint: str, version: str, scope: str, cfg: training.TrainConfig,
                 window: tuple[dt.date, dt.date], backtest_window=None, bcfg=None, blocks=None,
                 folds=None) -> dict[str, str | None]:
    """What a run is a function of, in two parts. ``training``: the training window's rows
    (``rows_fingerprint``: keys, features, targets), the routine (min_rows aside: it only
    gates), the window, the library versions and the CV folds (``folds``: their blocks, whose
    fingerprints cover the rows before the window they train on); two runs with the same one
    have the same model and CV, bit for bit. ``backtest``: also the backtest window and settings and the
    fingerprints of the record's blocks (None without a backtest)."""
    from retrain.registry import library_versions

    libraries = library_versions()
    spec = {
        "version": version, "scope": scope, "window": [str(d) for d in window],
        "routine": {k: v for k, v in vars(cfg).items() if k != "min_rows"},
        "libraries": {k: libraries[k] for k in ("retrain", "lightgbm", "polars", "numpy")},
    }
    h = hashlib.sha256(rows_fingerprint.encode())
    h.update(json.dumps(spec, sort_keys=True, default=str).encode())
    h.update("|".join(b.fingerprint for b in folds or []).encode())
    out = {"training": h.hexdigest(), "backtest": None}
    if backtest_window:
        b = hashlib.sha256(out["training"].encode())
        b.update(json.dumps({"window": [str(d) for d in backtest_window], "config": vars(bcfg),
                             "blocks": [blk.fingerprint for blk in blocks or []]},
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


def _run_meta(result: training.TrainResult, cfg: training.TrainConfig, version: str, scope: str) -> dict:
    return {
        "schema_version": META_SCHEMA,
        "feature_version": version,
        "scope": scope,
        "feature_columns": result.feature_columns,
        "categorical_features": [c for c in result.feature_columns if c in CATEGORICAL],
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


def _check_scope_size(frame: pl.DataFrame, scope: str, window, top_n: int) -> None:
    """A scope must have more symbols per session than the picks, or there is nothing to rank."""
    if frame.is_empty():
        return
    per = frame.filter(pl.col("trade_date") >= window[0]).group_by("trade_date").len()["len"]
    if per.is_empty():  # no rows at all: the window's own checks say so
        return
    typical = int(per.median())
    if typical <= max(top_n, 1):
        raise RetrainError(
            f"{scope} has too few symbols to rank: {typical} per session in {window[0]}..{window[1]}, and the "
            f"top {top_n} picks need more than {top_n}",
            hint="load more symbols (`retrain ingest`), use --exchange ALL, or lower [training] top_n")


def train_step(settings: Settings, scope: str, cfg: training.TrainConfig, promote: str = "auto",
               end: dt.date | None = None, progress=None, backtest_window: tuple[dt.date, dt.date] | None = None,
               bcfg=None, bt_progress=None, store: Store | None = None, on_trained=None,
               on_unchanged=None, on_record=None, on_final=None) -> TrainOutcome:
    """Train on the rolling window (and, with ``backtest_window``, bring the out-of-sample record
    up to date over it), write the run folder, and apply the promotion gate. ``on_trained(meta)``
    is called once the CV metrics exist, before the backtest (the final model is fitted in the
    background meanwhile: ``meta["num_boost_round"]`` is None); ``on_record(info)`` once the
    record's blocks are planned (how many are reused and trained); ``on_final(meta)`` once the
    final model is fitted.

    A run whose identity (``run_identity``: same rows, same routine, same windows, same record
    blocks) matches an existing run of the same version and scope is not repeated: no new run is
    written, the existing one is returned with ``unchanged`` set (``on_unchanged(meta)`` is
    called). The promotion rule applies to it as to a new run if it is a candidate; a run that
    was active once and was replaced or rolled back since stays so (``always`` aside)."""
    from retrain.backtest import BacktestConfig

    if promote not in PROMOTE_MODES:
        raise RetrainError(f"--promote {promote!r} is not one of {', '.join(PROMOTE_MODES)}")
    store = store or Store(settings.data_dir)
    bcfg = bcfg or BacktestConfig.from_settings(settings, max_positions=cfg.top_n)
    version = settings.feature_version
    columns = steps.feature_columns(store, version)
    registry = Registry(settings.artifacts_dir, settings.default_exchange)
    records = RecordStore(settings.artifacts_dir)
    if backtest_window and (backtest_window[1] - backtest_window[0]).days + 1 < bcfg.block_days:
        days = (backtest_window[1] - backtest_window[0]).days + 1
        raise RetrainError(f"the backtest window {backtest_window[0]}..{backtest_window[1]} ({days} days) is shorter "
                           f"than one block of the record ({bcfg.retrain_every} sessions: {bcfg.block_days} days)",
                           hint=f"use --backtest-days {bcfg.block_days} or more (or an earlier --start-date)")
    with store.lock("retrain train"):
        clock = time.perf_counter()
        training.check_params(cfg.params, columns)  # before any work: what LightGBM would abort on
        window = training_window(store, version, scope, cfg.training_days, end)
        routine, spec = routine_spec(cfg, bcfg, version, columns)
        first_day = cv_first_day(window, cfg, bcfg)
        if backtest_window:
            first_day = min(first_day, record_first_day(records, version, scope, routine, backtest_window, bcfg))
        stored = set(records.keys(version, scope, routine))
        result = bt = None
        # The final model depends on neither the CV nor the record: it is fitted in the
        # background from the moment its rows are loaded, while the rows are hashed, the CV and
        # the record are done and the report's plots drawn; it is waited for before the gate,
        # which may train blocks of its own. It runs alone on every thread unless blocks may
        # have to be trained: any block from the first day the run reads whose key the record
        # lacks (a block stored under its key is reused or predicted again, unless its training
        # rows changed: rare, and then only slower). Then it is queued after the blocks to train,
        # two fits at a time, so that the record and the report's plots are done beside it.
        # When an earlier run of the version and scope had the same training window, this one
        # may be that run again (nothing new: it is not repeated), and the fit waits until the
        # rows are hashed and the run is known to be new.
        runs = registry.runs()
        may_repeat = any(r.get("feature_version") == version and r.get("scope") == scope
                         and (r.get("training_window") or {}).get("start") == str(window[0])
                         and (r.get("training_window") or {}).get("end") == str(window[1]) for r in runs)
        with fits_in_pairs(cfg) as fits:
            if not may_repeat:  # LightGBM's import, on a fit thread, while the rows load (DuckDB lets go of the GIL)
                fits.warm()
            frame = load_frame(store, version, scope, cfg, window, first_day)
            _check_scope_size(frame, scope, window, bcfg.max_positions)
            rows = frame.filter(pl.col("trade_date") >= window[0])  # the training window's rows
            sessions = frame["trade_date"].unique().sort().to_list()
            if backtest_window:  # the errors in the order planning gives them
                labelled_in(sessions, backtest_window)
            training.check_rows(rows.height, cfg, scope, version, window)
            alone = block_keys(sessions, first_day, bcfg) <= stored
            final = None if may_repeat else fits.final(rows, columns, cfg, alone)
            prep = Prepared.of(frame, columns)
            fingerprint = prep.fingerprint([d for d in prep.sessions if d >= window[0]])
            blocks, n_earlier = (plan_record(prep, backtest_window, first_day, cfg, bcfg, routine)
                                 if backtest_window else ([], 0))
            folds = plan_cv(prep, window, cfg, bcfg, routine)
            identity = run_identity(fingerprint, version, scope, cfg, window, backtest_window, bcfg, blocks, folds)
            seconds = {"load": round(time.perf_counter() - clock, 3)}
            same = find_same(runs, version, scope, identity)
            if same is not None:
                fits.give_up()
                meta, run_id, run_dir = same, same["run_id"], registry.runs_dir / same["run_id"]
                if on_unchanged:
                    on_unchanged(meta)
            else:
                final = final or fits.final(rows, columns, cfg, alone)
                clock = time.perf_counter()
                fold_metrics, oos, cv = cross_validate(records, prep, version, scope, folds, cfg, bcfg, routine, spec,
                                                       progress, fits)
                seconds["cv"] = round(time.perf_counter() - clock, 3)
                result = training.cv_result(rows, version, scope, cfg, window, fold_metrics, oos, fingerprint, columns)
                meta = _run_meta(result, cfg, version, scope)
                meta["cv"].update(blocks_reused=cv.reused + cv.repredicted, blocks_trained=cv.trained,
                                  retrain_every=bcfg.retrain_every, warnings=cv.warnings)
                meta["identity"] = identity
                if on_trained:
                    on_trained(meta)
                run_id, created = registry.new_run_id(version, scope, result.fingerprint)
                meta.update(run_id=run_id, created_at=created)
                files = {"cv_predictions.parquet": _parquet_bytes(result.oos)}
                if backtest_window:
                    if on_record:
                        on_record({"blocks": len(blocks), "earlier": n_earlier,
                                   "stored": sum(b.key in stored for b in blocks),
                                   "cv": sum(b in folds for b in blocks)})
                    clock = time.perf_counter()
                    record = build_record(records, prep, version, scope, blocks, cfg, bcfg, routine, spec,
                                          bt_progress, done=cv, fits=fits)
                    bt = evaluate_record(store, record, scope, backtest_window, bcfg)
                    seconds["record"] = round(time.perf_counter() - clock, 3)
                    meta["backtest"] = {**bt.summary, "rank_ic": bt.window_evidence["rank_ic"], "verdict": bt.verdict,
                                        "verdict_reason": bt.reason, "config": vars(bcfg),
                                        "evidence": bt.window_evidence}
                    meta["record"] = bt.record_info
                    files.update({
                        "backtest_daily.parquet": _parquet_bytes(bt.daily.join(
                            bt.universe.rename({"trade_date": "date"}), on="date", how="left")),
                        "trades.parquet": _parquet_bytes(bt.trades),
                        "predictions.parquet": _parquet_bytes(bt.predictions),
                        "record_daily.parquet": _parquet_bytes(bt.record_daily.join(
                            bt.universe.rename({"trade_date": "date"}), on="date", how="left")),
                        "record_predictions.parquet": _parquet_bytes(bt.record_predictions),
                    })
                    from retrain import html_report

                    clock = time.perf_counter()
                    drawn = html_report.draw(meta, bt.record_daily, bt.universe, bt.record_predictions,
                                             bt.record_trades, backtest_window)
                    seconds["report"] = round(time.perf_counter() - clock, 3)
                clock = time.perf_counter()
                result = training.with_fit(result, final.result())
                seconds["final_fit_wait"] = round(time.perf_counter() - clock, 3)
        if same is None:
            seconds.update(result.seconds)
            meta["num_boost_round"] = result.num_boost_round
            if on_final:
                on_final(meta)
            if backtest_window:
                importance = sorted(zip(result.feature_columns, result.model.feature_importance("gain").tolist()),
                                    key=lambda kv: -kv[1])
                meta["feature_importance_gain"] = dict(importance)
        # The gate decides before a new run is written, so its folder (report.html included)
        # holds the decision; a run found again gets it as an annotation.
        gate_args = (store, records, prep, blocks, cfg, bcfg, routine, backtest_window, first_day)
        record = bt.record_predictions if bt is not None else (_stored_record(run_dir) if same else None)
        ok, reason, gate = _decide(registry, promote, {**meta, "run_id": run_id}, same, record, gate_args)
        if same is None:
            if gate:
                meta["gate"] = gate
            if bt is not None:
                from retrain import html_report

                clock = time.perf_counter()
                files["report.html"] = html_report.render(meta, bt.record_daily, bt.universe, bt.record_predictions,
                                                          bt.record_trades, importance, backtest_window,
                                                          drawn=drawn).encode()
                seconds["report"] = round(seconds["report"] + time.perf_counter() - clock, 3)
            # Where the step's time went: load, cv, record, report, and final_fit_wait, the time
            # spent waiting for the final fit (final_fit: the fit's own time, in the background).
            meta["seconds"] = seconds
            run_id, run_dir = registry.create_run(result.model, meta, files)
        elif gate:
            meta = registry.annotate(run_id, gate=gate)
        if ok:
            registry.promote(run_id, decision=gate)
        is_active = registry.active_run(version, scope) == run_id
    return TrainOutcome(run_id, run_dir, meta, ok, reason, registry.active_paths(version, scope)[0], is_active,
                        unchanged=same is not None, result=result, backtest=bt, gate=gate)


def _decide(registry: Registry, promote: str, meta: dict, same: dict | None, record: pl.DataFrame | None,
            gate_args: tuple) -> tuple[bool, str, dict | None]:
    """(promote?, reason, the gate's decision with its figures) for the run of ``meta``:
    ``promotion_decision`` after ``compare_with_active`` (``gate_args``: its arguments but the
    champion and the record), or a fixed answer for the active run and a run found again that
    was active once."""
    run_id, version, scope = meta["run_id"], meta["feature_version"], meta["scope"]
    active_id = registry.active_run(version, scope)
    if active_id == run_id:
        copied = registry.restore_active_copies(version, scope)  # a damaged copy is made whole again
        return False, "it is the active model already" + (
            f" ({' and '.join(copied)} did not match it: copied again from its run folder)" if copied else ""), None
    if same is not None and promote != "always" and same.get("status") != "candidate":
        # A run that was active once and was replaced or rolled back since: finding it again
        # must not undo that. Only --promote always (or `models promote`) changes it.
        return False, (f"nothing changed since this run, which was active once and stays {same.get('status')} "
                       f"(activate it with `retrain models promote {run_id}`)"), None
    try:
        active = registry.run_meta(active_id) if active_id else None
    except CorruptFile as exc:  # the champion cannot be judged: only the user can replace it
        ok = promote == "always"
        reason = (f"the active model's run {active_id} cannot be read ({exc.path.name} is corrupted), so this run "
                  "cannot be compared with it" + ("; --promote always: activated" if ok else
                                                  f"; kept as a candidate: `retrain models promote {run_id}` "
                                                  "activates it (`retrain verify` says what else to do)"))
        return ok, reason, {"mode": promote, "promoted": ok, "reason": reason, "champion": active_id,
                            "outcome": "champion unreadable",
                            "decided_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds")}
    compared = None
    store, records, prep, blocks, cfg, bcfg, routine, window, first_day = gate_args
    if (promote == "auto" and active is not None and record is not None and window
            and meta["training_window"]["end"] >= active["training_window"]["end"]):
        compared = compare_with_active(store, records, active, prep, blocks, cfg, bcfg, routine, window, first_day,
                                       record)
    ok, reason = promotion_decision(promote, meta, active, compared)
    gate = {"mode": promote, "promoted": ok, "reason": reason, "champion": active_id,
            "decided_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"), **(compared or {})}
    gate.setdefault("outcome", "no champion" if active is None else mode_outcome(promote, ok))
    return ok, reason, gate


def _stored_record(run_dir: Path) -> pl.DataFrame | None:
    """The record predictions a run found again keeps in its folder (None without a backtest)."""
    path = run_dir / "record_predictions.parquet"
    return pl.read_parquet(verified(path)) if path.exists() else None


def mode_outcome(promote: str, ok: bool) -> str:
    if promote != "auto":
        return f"--promote {promote}"
    return "promoted" if ok else "kept out"


def compare_with_active(store: Store, records: RecordStore, active: dict, prep: Prepared, blocks: list,
                        cfg, bcfg, routine: str, window, first_day, record: pl.DataFrame) -> dict:
    """``paired_gate`` of this run's record and the active run's routine over the same sessions.
    The same routine gives the same record on the same data, so nothing is replayed then;
    another routine's record is read back where it has the blocks, and replayed where not."""
    mine = session_figures(record, bcfg)
    champ_cfg = active_routine(active)
    version, scope = active["feature_version"], active["scope"]
    champ_routine, champ_spec = routine_spec(champ_cfg, bcfg, version, prep.columns)
    if champ_routine == routine:  # the record's own notion of "same routine"
        out = paired_gate(mine, mine)
        out["same_routine"] = True
        out["champion_routine"] = routine[:16]
        return out
    champ_prep = prep
    if champ_cfg.target != cfg.target or champ_cfg.training_days > cfg.training_days:  # its own rows
        frame = load_frame(store, version, scope, champ_cfg, (window[0], window[1]), first_day)
        champ_prep = Prepared.of(frame, prep.columns)
    from retrain import backtest as bts

    champ_blocks, _ = bts.plan_blocks(champ_prep.sessions, [b.id for b in blocks], champ_cfg, bcfg, champ_routine,
                                      champ_prep.hashes, champ_prep.rows)
    champ = build_record(records, champ_prep, version, scope, champ_blocks, champ_cfg, bcfg, champ_routine, champ_spec)
    out = paired_gate(mine, session_figures(champ.predictions, bcfg))
    out.update(champion_routine=champ_routine[:16], champion_blocks_reused=champ.reused,
               champion_blocks_replayed=champ.trained)
    return out


@dataclass
class BacktestOutcome:
    predictions: pl.DataFrame  # the --backtest-days window's predictions (the headline block)
    daily: pl.DataFrame
    trades: pl.DataFrame
    universe: pl.DataFrame  # the record's sessions
    summary: dict  # the guide's results block, over the window
    verdict: str  # judged on the whole record
    config: object
    reason: str = ""
    window_evidence: dict | None = None
    record_info: dict | None = None  # the record's evidence, verdict, reason, blocks reused and trained
    record_predictions: pl.DataFrame | None = None
    record_daily: pl.DataFrame | None = None
    record_trades: pl.DataFrame | None = None
    warnings: list | None = None


def evaluate_record(store: Store, record: Record, scope: str, window: tuple[dt.date, dt.date], bcfg) -> BacktestOutcome:
    """The guide's results block over ``window`` and the evidence and verdict of the whole record
    (``assess_record``); the universe benchmark reads the labels of every symbol in scope."""
    first = record.predictions["trade_date"].min()
    return assess_record(record, record_universe(store, scope, first, window[1]), window, bcfg)


def record_universe(store: Store, scope: str, first: dt.date, end: dt.date) -> pl.DataFrame:
    """The equal-weight universe (``backtest.universe``) of ``scope`` over ``first``..``end``,
    from the labels of every symbol in scope (``steps.realized``, up to each exchange's label
    horizon). Each session's mean adds its rows in (exchange, symbol) order, so its last bit
    does not depend on the order the files are read in."""
    from retrain import backtest as bt

    labelled = store.label_horizon()
    if not labelled or not store.has_bars():
        raise RetrainError("no labels in the store", hint="run `retrain labels`")
    horizon = {e: d for e, d in labelled.items() if scope in ("ALL", e)}
    actual = steps.realized(store, sorted(horizon), first, end, last=horizon)
    return bt.universe(actual.sort("trade_date", "exchange", "symbol")
                       .select("trade_date", pl.col("actual").alias("intraday_return")))


def assess_record(record: Record, uni: pl.DataFrame, window: tuple[dt.date, dt.date], bcfg) -> BacktestOutcome:
    """``evaluate_record`` given the universe (``record_universe``), without the store: what a
    sweep trial computes on a worker."""
    from retrain import backtest as bt

    preds = record.predictions.drop("block_fingerprint")
    start, end = window
    rdaily, rtrades = bt.simulate(preds.drop_nulls("actual"), bcfg)
    rev = bt.evidence(rdaily, preds, uni, bcfg)
    grade, reason, more = bt.judge(rev)
    wpreds = preds.filter(pl.col("trade_date").is_between(start, end))
    daily, trades = bt.simulate(wpreds.drop_nulls("actual"), bcfg)
    summary = bt.summarize(daily, trades, bcfg.bankroll, uni)
    wev = bt.evidence(daily, wpreds, uni, bcfg)
    info = {**rev, "verdict": grade, "reason": reason, "more_sessions": more, "routine": record.routine[:16],
            "blocks": len(record.blocks), "blocks_reused": record.reused, "blocks_trained": record.trained,
            "blocks_repredicted": record.repredicted,
            "record_sessions": bcfg.record_sessions, "warnings": record.warnings}
    return BacktestOutcome(wpreds, daily, trades, uni, summary, grade, bcfg, reason, wev, info, preds, rdaily, rtrades,
                           record.warnings)


def backtest(store: Store, settings: Settings, version: str, scope: str, tcfg: training.TrainConfig,
             window: tuple[dt.date, dt.date], bcfg, progress=None) -> BacktestOutcome:
    """The routine ``tcfg`` over ``window`` through its record (blocks reused where stored,
    trained and stored where not), evaluated; no run folder, no promotion. Call under the lock."""
    records = RecordStore(settings.artifacts_dir)
    columns = steps.feature_columns(store, version)
    routine, spec = routine_spec(tcfg, bcfg, version, columns)
    first_day = record_first_day(records, version, scope, routine, window, bcfg)
    train_window = training_window(store, version, scope, tcfg.training_days, window[1])
    frame = load_frame(store, version, scope, tcfg, train_window, first_day)
    prep = Prepared.of(frame, columns)
    blocks, _ = plan_record(prep, window, first_day, tcfg, bcfg, routine)
    record = build_record(records, prep, version, scope, blocks, tcfg, bcfg, routine, spec, progress)
    return evaluate_record(store, record, scope, window, bcfg)


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
    built: str | None = None  # what bringing indicators and features up to date did, in words
    update_failed: bool = False  # it could not: ``built`` says why, and what to do
    stale: str | None = None  # why the model is stale (older than [monitor] max_model_age_days)
    age: dict | None = None  # model_age: age_days, age_sessions, trained_through
    journal: Path | None = None  # the journal file of this ranking


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
    store = Store(settings.data_dir)
    if run_id:
        meta = registry.run_meta(run_id)
        loaded = registry.load_run(run_id, steps.feature_columns(store, meta["feature_version"]))
        end = _trained_through(loaded.meta)
        warning = None if end < session else (
            f"{run_id} was trained on data through {end}, not before the session {session} it ranks: "
            "look-ahead, so this ranking says nothing about how the model would have done")
        return loaded, f"--model {run_id}", warning, False
    version = version or settings.feature_version
    columns = steps.feature_columns(store, version)
    if as_of.is_now:
        try:
            return registry.load_active(version, scope, columns), None, None, True
        except RetrainError as exc:
            if version == settings.feature_version or registry.active_run(version, scope) is not None:
                raise
            # `retrain run` trains the current version, not the one asked for
            raise RetrainError(exc.message, hint=(
                f"{version} is not the current feature version ({settings.feature_version}, in retrain.toml), and "
                f"no {version} model of {scope} was ever activated: rank with a {version} run by its id "
                f"(`retrain models list --version {version}`, then `retrain predict --model RUN_ID`), or with the "
                f"current version's model (`retrain predict` without --version)")) from None
    instant = min(as_of.instant(e) for e in (calendar.EXCHANGES if scope == "ALL" else [scope]))
    then = registry.active_at(version, scope, instant)
    if then is not None and not (registry.runs_dir / then).is_dir():
        raise RetrainError(f"the {version} model active for {scope} at {as_of.label()}, {then}, has been removed "
                           "(`retrain models prune`)", hint="name another run with --model (`retrain models list`)")
    if then is not None:
        loaded = registry.load_run(then, columns, version=version, scope=scope)
        if _trained_through(loaded.meta) < session:
            return loaded, f"the {version} model active for {scope} at {as_of.label()}: {then}", None, True
    current = registry.active_run(version, scope)
    if current is not None:
        meta = registry.run_meta(current)
        end = _trained_through(meta)
        if end < session:
            note = (f"no {version} model for {scope} was active at {as_of.label()}; the active one, {current}, "
                    f"was trained on data through {end}, before {session}: no look-ahead")
            return registry.load_run(current, columns, version=version, scope=scope), note, None, False
    earlier = [r for r in registry.runs() if r["feature_version"] == version and r["scope"] == scope
               and _trained_through(r) < session]
    flag = f" --exchange {scope}" if scope != settings.default_exchange else ""
    if earlier:
        hint = (f"rank with a model trained before {session}: `retrain predict{flag} --as-of {as_of.label()} "
                f"--model {earlier[-1]['run_id']}` (the latest such run)")
    else:
        held = [e for e in (store.exchanges() if scope == "ALL" else [scope]) if store.bar_files(e)]
        first = min((store.date_span(e)[0] for e in held), default=None)
        if first is None or first >= session:
            hint = (f"no model can be trained as of then: the store's bars of {scope} start "
                    f"{f'on {first}' if first else 'nowhere'}; pass a later --as-of, with enough sessions after "
                    f"{first or 'the first bar'} for the training window, or load older bars (`retrain ingest`)")
        else:
            hint = (f"train one as of then: `retrain run{flag} --as-of {as_of.label()} --promote never`, then "
                    f"`retrain predict{flag} --as-of {as_of.label()} --model RUN_ID` with the run id it prints")
    what = (f"the active one, {current}, was trained on data through {_trained_through(registry.run_meta(current))}"
            if current else "there is no active one")
    raise RetrainError(
        f"no {version} model for {scope} was active at {as_of.label()}, and {what}, not before the session "
        f"{session} it would rank: that would be look-ahead", hint=hint)


def model_age(meta: dict, reference: dt.date, exchanges: list[str]) -> dict:
    """How old a model is at ``reference`` (a session): calendar days and sessions since the end
    of its training data."""
    from retrain import monitor

    end = _trained_through(meta)
    sessions = sorted({d for e in exchanges for d in calendar.sessions(e, end + dt.timedelta(days=1), reference)}
                      if reference > end else set())
    return {**monitor.age(end, reference, sessions), "trained_through": str(end)}


def stale_message(meta: dict, age: dict, limit: int) -> str:
    return (f"the model {meta['run_id']} is {age['age_days']} days old (its training data ends "
            f"{age['trained_through']}, {age['age_sessions']} sessions ago), more than [monitor] "
            f"max_model_age_days = {limit}")


def bring_up_to_date(store: Store, version: str, exchanges: list[str], session: dt.date) -> str:
    """Indicators and the feature rows of ``version`` up to ``session``, incrementally, under the
    store's lock (what `retrain indicators` and `retrain features` would do). Returns what was
    built, in words."""
    from retrain import steps

    with store.lock("retrain predict"):
        res = steps.indicators(store, exchanges)
        fres = steps.features(store, version, exchanges)
    if not res.updated and fres.up_to_date:
        return f"Indicators and {version} features are up to date for {session}"
    return (f"Brought up to date for {session}: indicators of {res.updated:,} bar(s), {fres.rows:,} {version} "
            f"feature row(s) over {fres.sessions:,} exchange session(s)")


def predict(settings: Settings, scope: str, as_of: AsOf, top: int | None = None, version: str | None = None,
            run_id: str | None = None, update: bool = True, strict: bool = False) -> Prediction:
    """Rank the symbols of the next session with the model ``choose_model`` picks, after bringing
    indicators and features up to date for it (``update``), and record the ranking in the
    prediction journal. A model older than ``[monitor] max_model_age_days`` is flagged, or
    refused with ``strict``."""
    from retrain import journal
    from retrain.errors import StorageError

    store = Store(settings.data_dir)
    registry = Registry(settings.artifacts_dir, settings.default_exchange)
    exchanges = list(calendar.EXCHANGES) if scope == "ALL" else [scope]
    exchanges = [e for e in exchanges if store.bar_files(e)]
    if not exchanges:
        raise RetrainError(f"no bars for {scope}", hint="load data with `retrain ingest`")
    # the next session after the last complete one, per exchange (ALL: the earliest of them)
    last = {e: as_of.last_complete_session(e) for e in exchanges}
    session = min(calendar.next_session(e, last[e]) for e in exchanges)
    loaded, note, warning, official = choose_model(registry, settings, scope, as_of, session, version, run_id)
    version = loaded.meta["feature_version"]
    limit = settings.section("monitor")["max_model_age_days"]
    age = model_age(loaded.meta, min(last.values()), exchanges)
    stale = stale_message(loaded.meta, age, limit) if age["age_days"] > limit else None
    flag = f" --exchange {scope}" if scope != settings.default_exchange else ""
    if stale and strict:
        raise RetrainError(f"--strict: {stale}", hint=f"retrain it: `retrain run{flag}` (or drop --strict to rank "
                                                        "with it anyway, with a warning)")
    built = failed = None
    if update:
        try:
            built = bring_up_to_date(store, version, exchanges, session)
        except RetrainError as exc:  # a read-only store, or code that can no longer build this version
            if isinstance(exc, CorruptFile) and exc.derived:
                raise  # rebuilt from the bars by the caller (``integrity.healing``), then ranked again
            failed = exc  # ranked with the rows the store holds, if it holds the session's
    if not any(store.table_files("features", version, e) for e in exchanges):
        raise RetrainError(f"no {version} features built for {scope}",
                           hint=f"build them: `retrain run{flag}` (or `retrain features`)"
                                + ("" if update else ", or drop --no-update"))
    frames = [store.scan_table("features", version, e, between=(session, session)) for e in exchanges]
    frames = [f for f in frames if f is not None]  # only the session's month is read (and verified)
    rows = (pl.concat(frames, how="diagonal_relaxed").collect() if frames else pl.DataFrame(schema={"trade_date": pl.Date}))
    if failed is not None and rows.is_empty():
        if isinstance(failed, StorageError):
            raise failed
        raise RetrainError(f"no {version} feature rows for the session {session} ({scope}), and they cannot be "
                           f"built now: {failed.message}", hint=failed.hint)
    if isinstance(failed, StorageError):
        built = (f"Could not bring indicators and features up to date ({failed.message}); ranked with the "
                 f"{version} feature rows the store holds for {session}")
    elif failed is not None:
        built = (f"{version} features were not brought up to date ({failed.message}); ranked with the {version} "
                 f"rows the store holds for {session}" + (f". To bring them up to date: {failed.hint}"
                                                          if failed.hint else ""))
    if rows.is_empty():
        missing = _missing_for(store, version, exchanges, session)
        raise RetrainError(
            f"no {version} feature rows for the session {session} ({scope}){': ' + missing if missing else ''}",
            hint=("drop --no-update to build them now, or `retrain indicators` then `retrain features`"
                  if not update else
                  f"ingest the bars up to the session before {session} (`retrain ingest`), then predict again"),
        )
    columns = loaded.meta["feature_columns"]
    x = training.matrix(rows, columns)
    p = loaded.model.predict(x, num_iteration=loaded.meta.get("num_boost_round"))
    ranked = (
        rows.select("symbol", "exchange", pl.col("prev_close").cast(pl.Float64),
                    pl.col("avg_dollar_volume_20").cast(pl.Float64))
        .with_columns(pl.Series("predicted_return", p))
        .sort(["predicted_return", "exchange", "symbol"], descending=[True, False, False])
        .with_row_index("rank", offset=1)
    )
    table = ranked.select("rank", "symbol", "exchange", "predicted_return", "prev_close").with_columns(
        pl.lit(loaded.meta["run_id"]).alias("run_id"), pl.lit(session).alias("session"))
    # The ranking of the model that was active, for the current version and the default scope,
    # is the session's record; any other model's (another scope, version or run) goes beside it.
    record = official and version == settings.feature_version and scope == settings.default_exchange
    name = f"{session}.parquet" if record else f"{session}.{loaded.meta['run_id']}.parquet"
    out: Path | None = journal.folder(settings.artifacts_dir) / name
    entry = journal.entry(ranked.rename({"predicted_return": "predicted"}), session, loaded.meta["run_id"], version,
                          scope, run_id is None, as_of.label())
    save_error = journal_path = None
    try:
        atomic_write_parquet(table, out)
        journal_path = journal.write(settings.artifacts_dir, entry)
    except StorageError as exc:
        out, save_error = None, StorageError(exc.message, hint=f"The ranking above is complete; only writing it "
                                                                f"failed. {exc.hint}")
    if isinstance(failed, StorageError):
        save_error = save_error or StorageError(failed.message, hint=f"The ranking above is complete, from "
                                                f"the feature rows already stored. {failed.hint}")
    return Prediction(session, table.head(top) if top else table, out, loaded.meta["run_id"], note, warning, save_error,
                      built=built, update_failed=failed is not None, stale=stale, age=age, journal=journal_path)


def _missing_for(store: Store, version: str, exchanges: list[str], session: dt.date) -> str:
    """What stands between the store and feature rows for ``session``, in words."""
    missing = []
    for e in exchanges:
        stale = store.stale_months(e)
        if stale:
            missing.append(f"{e}: indicators are missing or stale in {', '.join(stale)}")
        last, before = store.file_stats(e)["last"].max(), calendar.previous_session(e, session)
        if before is not None and (last is None or last < before):
            missing.append(f"{e}: no bars for {before}, the session before it")
    return "; ".join(missing) or "its feature rows are not built yet"
