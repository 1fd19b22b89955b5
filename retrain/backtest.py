"""Walk-forward backtest and the out-of-sample record: a replay of the training routine, out of
sample only, with its verdict.

**Blocks on a fixed grid.** Sessions are cut into blocks of ``retrain_every`` weekdays counted
from a fixed origin, Monday 1970-01-05, the same for every exchange (with the default 5, a block
is a calendar week, Monday to Friday; a holiday leaves its block a session shorter). Each block
is predicted by a model of the routine (``training.fit_window``) trained on the rolling window
of ``training_days`` calendar days that ends ``embargo`` sessions before the block's first
session. Nothing a model is scored on was ever in its training window. Because the grid is
fixed, next week's run meets this week's blocks again: a block whose fingerprint (the routine,
its training rows, its own rows) is unchanged is reused, not retrained. The blocks of one
routine, kept up to ``record_sessions`` sessions, are its out-of-sample *record*.

**Trading rule**, each session: rank symbols by prediction (optionally only those whose
20-session average dollar volume reaches ``min_dollar_volume``), buy the top ``max_positions``
at the open with the current equity split equally, sell at the close, and pay
``cost_bps + slippage_bps`` of the traded amount on each side: a position returns
``(1 + r) * (1 - f)^2 - 1``.

**Verdict** (``judge``), on the whole record, never on a point Sharpe alone:

* EXCELLENT / GOOD need evidence of an edge: PSR(0) >= 0.95 (the probability that the true
  Sharpe is above 0, Bailey & Lopez de Prado, with skew and kurtosis) *and* a mean daily rank IC
  with t-statistic >= 2. Then EXCELLENT when the Sharpe is >= 1.5 with a positive return that
  beats the equal-weight universe, GOOD when it is >= 1.0 with a positive return, else MARGINAL.
* POOR / MARGINAL need evidence that there is no useful edge. POOR when the strategy loses with
  confidence (PSR(0) <= 0.05). Otherwise, when the record rules out a useful model (the
  one-sided 95% upper bound of the mean daily rank IC is below 0.01, or that of the Sharpe is
  below 1.0): MARGINAL when the Sharpe is >= 0.5 or the return is positive, else POOR.
* INCONCLUSIVE otherwise, and always below 20 sessions: the record is too short to tell. The verdict says how many more
  sessions would settle it at the figures seen so far.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import math
from dataclasses import dataclass

import numpy as np
import polars as pl

from retrain import metrics, training

GRID_ORIGIN = dt.date(1970, 1, 5)  # a Monday: block 0 starts here, for every exchange
RECORD_SESSIONS = 252  # default of [backtest] record_sessions

# The verdict's thresholds (documented above, in the README and in `retrain backtest --help`).
PSR_EDGE = 0.95  # PSR(0) at or above: the Sharpe is above 0 with 95% confidence
IC_T_EDGE = 2.0  # rank-IC t-statistic at or above: the ranking carries signal
PSR_LOSS = 0.05  # PSR(0) at or below: the strategy loses with 95% confidence
USEFUL_RANK_IC = 0.01  # a mean daily rank IC below this is not a usable intraday signal
USEFUL_SHARPE = 1.0  # a Sharpe below this is not worth trading
Z95 = 1.6448536269514722  # one-sided 95%
BOOTSTRAP = {"block": 5, "n_boot": 2000, "level": 0.90, "seed": 0}
MIN_SESSIONS = 20  # below this, no grade but INCONCLUSIVE: the normal approximations do not hold
GRADES = ("EXCELLENT", "GOOD", "MARGINAL", "POOR", "INCONCLUSIVE")


@dataclass(frozen=True)
class BacktestConfig:
    bankroll: float = 10_000.0
    max_positions: int = 5
    cost_bps: float = 5.0
    slippage_bps: float = 5.0
    retrain_every: int = 5
    min_dollar_volume: float | None = None
    record_sessions: int = RECORD_SESSIONS

    @property
    def side_charge(self) -> float:
        return (self.cost_bps + self.slippage_bps) / 10_000.0

    @classmethod
    def from_settings(cls, settings, **values) -> BacktestConfig:
        """[backtest] of the settings, with ``values`` (options given; None ones are left out)."""
        return cls(record_sessions=settings.section("backtest")["record_sessions"],
                   **{k: v for k, v in values.items() if v is not None})

    @property
    def block_days(self) -> int:
        """Calendar days of one block of the grid: the shortest backtest window."""
        return math.ceil(self.retrain_every * 7 / 5)


# ------------------------------------------------------------- pure accounting
def net_return(gross: np.ndarray | float, side_charge: float):
    """A position's return after paying ``side_charge`` of the traded amount on entry and exit."""
    return (1.0 + np.asarray(gross, float)) * (1.0 - side_charge) ** 2 - 1.0


def simulate(predictions: pl.DataFrame, cfg: BacktestConfig) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(daily, trades) from predictions with trade_date, symbol, exchange, predicted, actual and
    (for the liquidity filter) avg_dollar_volume_20."""
    p = predictions
    if cfg.min_dollar_volume:
        p = p.filter(pl.col("avg_dollar_volume_20") >= cfg.min_dollar_volume)
    picks = (
        p.sort(["trade_date", "predicted", "exchange", "symbol"], descending=[False, True, False, False])
        .group_by("trade_date", maintain_order=True).head(cfg.max_positions)
    )
    sessions = sorted(predictions["trade_date"].unique().to_list())
    # Compounding is sequential by nature: the loop carries the equity from day to day in plain
    # floats, over each day's slice of the picks (sorted by day); everything else is one pass.
    days = picks["trade_date"].to_numpy()
    net = net_return(picks["actual"].to_numpy(), cfg.side_charge)
    gross = picks.group_by("trade_date", maintain_order=True).agg(pl.col("actual").mean())
    gross = dict(zip(gross["trade_date"].to_list(), gross["actual"].to_list()))
    picked, starts, counts = np.unique(days, return_index=True, return_counts=True)  # days with picks, in order
    slices = {d: (int(lo), int(n)) for d, lo, n in zip(picked, starts, counts)}
    equity = cfg.bankroll
    daily_rows, allocs = [], []
    for day in sessions:
        lo, n = slices.get(np.datetime64(day, "D"), (0, 0))
        if n == 0:
            daily_rows.append((day, equity, 0.0, 0.0, 0))
            continue
        alloc = equity / n
        total = (alloc * net[lo:lo + n]).sum()
        day_ret = float(total / equity)
        equity += float(total)
        allocs.append(alloc)
        daily_rows.append((day, equity, day_ret, float(gross[day]), n))
    daily = pl.DataFrame(daily_rows, schema={"date": pl.Date, "equity": pl.Float64, "daily_return": pl.Float64,
                                             "gross_return": pl.Float64, "trades": pl.Int64}, orient="row")
    if picks.is_empty():
        return daily, pl.DataFrame(schema={"date": pl.Date, "symbol": pl.String, "exchange": pl.String,
                                           "predicted": pl.Float64, "actual": pl.Float64, "net_return": pl.Float64,
                                           "allocation": pl.Float64, "pnl": pl.Float64})
    allocation = np.repeat(np.array(allocs, dtype=np.float64), counts)
    trades = (picks.select(pl.col("trade_date").alias("date"), "symbol", "exchange", "predicted", "actual")
              .with_columns(pl.Series("net_return", net, pl.Float64), pl.Series("allocation", allocation, pl.Float64),
                            pl.Series("pnl", allocation * net, pl.Float64)))
    return daily, trades


def summarize(daily: pl.DataFrame, trades: pl.DataFrame, bankroll: float, universe: pl.DataFrame) -> dict:
    """The results block: capital, returns, risk, trading, and the universe benchmark."""
    r = daily["daily_return"].to_numpy()
    equity = np.concatenate([[bankroll], daily["equity"].to_numpy()])
    u = universe.join(daily.select(pl.col("date").alias("trade_date")), on="trade_date", how="semi")["universe_return"].to_numpy()
    total = metrics.total_return(r)
    uni = metrics.total_return(u) if len(u) else float("nan")
    return {
        "start": str(daily["date"].min()), "end": str(daily["date"].max()), "sessions": daily.height,
        "starting_capital": bankroll, "ending_capital": float(equity[-1]), "profit": float(equity[-1] - bankroll),
        "total_return": total, "annualized_return": metrics.annualized_return(r),
        "max_drawdown": metrics.max_drawdown(equity), "sharpe": metrics.sharpe(r),
        "win_rate": metrics.win_rate(trades["net_return"].to_numpy()), "total_trades": trades.height,
        "universe_return": uni, "excess_return": total - uni,
    }


def universe(labels: pl.DataFrame) -> pl.DataFrame:
    """Equal-weight open-to-close return per session of every labelled symbol in ``labels``
    (trade_date, intraday_return)."""
    # Sorted first: Polars then averages each session's contiguous rows in their order. A hash
    # grouping gathers a session's rows in an order that varies from call to call on large frames
    # (~60k rows and up), and so does the last bit of the mean.
    return (labels.sort("trade_date", maintain_order=True).group_by("trade_date", maintain_order=True)
            .agg(pl.col("intraday_return").mean().alias("universe_return")))


# ------------------------------------------------------------ the block grid
def block_id(day: dt.date, every: int) -> int:
    """The grid block of a session: weekdays since GRID_ORIGIN, integer-divided by ``every``."""
    return int(np.busday_count(GRID_ORIGIN, day)) // every


def block_key(block: int, every: int) -> str:
    """The first weekday of a grid block (ISO date): the block's name in the record."""
    return str(np.busday_offset(GRID_ORIGIN, block * every, roll="forward"))


def routine_spec(tcfg: training.TrainConfig, bcfg: BacktestConfig, version: str, columns: list[str],
                 lightgbm_version: str) -> tuple[str, dict]:
    """(fingerprint, description) of what a block's predictions are a function of, besides its
    rows: the training config (``min_rows`` only gates a run and ``cv_folds`` only evaluates it,
    so both are left out), the LightGBM parameters and version, the feature version and column
    list, and the grid (``retrain_every``). Costs and the trading rule are applied when the
    record is evaluated, so they are not part of it."""
    spec = {
        "training_config": {k: v for k, v in vars(tcfg).items() if k not in ("min_rows", "cv_folds", "params")},
        "params": tcfg.lgb_params(), "feature_version": version, "feature_columns": list(columns),
        "retrain_every": bcfg.retrain_every, "lightgbm": lightgbm_version,
    }
    return hashlib.sha256(json.dumps(spec, sort_keys=True, default=str).encode()).hexdigest(), spec


@dataclass(frozen=True)
class Block:
    """One block of the record: its grid id and name, its sessions, the sessions of its training
    window, the fingerprint of what its model is a function of (the routine and the training
    rows) and of what its predictions are (that, and the block's own rows)."""

    id: int
    key: str
    sessions: tuple[dt.date, ...]
    train: tuple[dt.date, ...]
    fingerprint: str
    model_fingerprint: str = ""


def plan_blocks(sessions: list[dt.date], ids: list[int], tcfg: training.TrainConfig, bcfg: BacktestConfig,
                routine: str, hashes: dict[dt.date, str], rows: dict[dt.date, int]) -> tuple[list[Block], dict]:
    """The blocks ``ids`` of the grid over the labelled ``sessions`` (ascending), each with its
    training window and fingerprint. ``hashes``/``rows``: ``training.session_hashes`` and row
    counts per session. Returns (blocks, problems): a block that cannot be formed (no session,
    no training session before it, fewer than ``min_rows`` training rows) is left out and
    ``problems[id]`` says why."""
    ids_of = np.array([block_id(d, bcfg.retrain_every) for d in sessions]) if sessions else np.array([], int)
    out, problems = [], {}
    for b in ids:
        members = [sessions[i] for i in np.flatnonzero(ids_of == b)]
        if not members:
            problems[b] = "no labelled session"
            continue
        k = sessions.index(members[0])
        last_train = k - 1 - tcfg.embargo
        if last_train < 0:
            problems[b] = f"no labelled session to train on before {members[0]} (embargo {tcfg.embargo})"
            continue
        train_end = sessions[last_train]
        train_start = train_end - dt.timedelta(days=tcfg.training_days - 1)
        train = tuple(d for d in sessions[: last_train + 1] if d >= train_start)
        n = sum(rows[d] for d in train)
        if n < tcfg.min_rows:
            problems[b] = (f"Insufficient training samples: {n:,} < {tcfg.min_rows:,} for the block starting "
                           f"{members[0]} (window {train_start} to {train_end})")
            continue
        model_fp = hashlib.sha256((routine + "#" + "|".join(hashes[d] for d in train)).encode()).hexdigest()
        fp = hashlib.sha256((model_fp + "#" + "|".join(hashes[d] for d in members)).encode()).hexdigest()
        out.append(Block(b, block_key(b, bcfg.retrain_every), tuple(members), train, fp, model_fp))
    return out, problems


def predict_block(data: pl.DataFrame, x: np.ndarray, y: np.ndarray, dates: np.ndarray, block: Block,
                  tcfg: training.TrainConfig, columns: list[str], model_text: str | None = None,
                  stop=None) -> tuple[pl.DataFrame, str]:
    """The block's out-of-sample predictions: ``training.fit_window`` on its training window,
    applied to its sessions; or, with ``model_text`` (the stored model of the same
    ``model_fingerprint``), that model applied to them, which gives the same predictions without
    training again. ``x``/``y``/``dates``: ``data``'s matrix, target and sessions. Returns
    (predictions, the model as LightGBM text, cut at its best iteration)."""
    from retrain import lgbm

    lgb = lgbm.load()
    if model_text is None:
        model, rounds = training.fit_window(x, y, dates, list(block.train), tcfg, columns, stop=stop)
        model_text = model.model_to_string(num_iteration=rounds)
    model = lgb.Booster(model_str=model_text)
    rounds = model.current_iteration()
    in_block = training.session_mask(dates, block.sessions)
    pred = model.predict(x[in_block])
    return block_frame(data.filter(pl.Series(in_block)), pred, block, rounds), model_text


RECORD_COLUMNS = ("trade_date", "symbol", "exchange", "avg_dollar_volume_20", "predicted", "actual", "model")


def block_frame(rows: pl.DataFrame, pred: np.ndarray, block: Block, rounds: int) -> pl.DataFrame:
    return rows.select("trade_date", "symbol", "exchange", pl.col("avg_dollar_volume_20").cast(pl.Float64),
                       pl.col("actual").cast(pl.Float64)).with_columns(
        pl.Series("predicted", pred, dtype=pl.Float64),
        pl.lit(f"block {block.key}: trained {block.train[0]}..{block.train[-1]}, {rounds} rounds").alias("model"),
        pl.lit(block.fingerprint).alias("block_fingerprint"),
        pl.lit(block.model_fingerprint).alias("model_fingerprint"),
        pl.lit(rounds, dtype=pl.Int32).alias("rounds"),
    ).select(*RECORD_COLUMNS, "block_fingerprint", "model_fingerprint", "rounds")


# ------------------------------------------------------------ evidence and verdict
def daily_rank_ic(predictions: pl.DataFrame) -> np.ndarray:
    """Per-session Spearman correlation of ``predicted`` with ``actual`` (sessions in order)."""
    p = predictions.drop_nulls(["actual", "predicted"])
    return metrics.daily_ic(p["trade_date"].to_numpy(), p["actual"].to_numpy(), p["predicted"].to_numpy(), rank=True)


def verdict_figures(r: np.ndarray, u: np.ndarray, ric: np.ndarray) -> dict:
    """What the verdict reads, from daily net returns ``r``, the universe's returns ``u`` on the
    same sessions and the daily rank ICs ``ric``: Sharpe with its standard error (Mertens) and 90%
    interval, PSR(0), minimum track record length, mean rank IC with its t-statistic, total and
    excess return."""
    r, u, ric = np.asarray(r, float), np.asarray(u, float), np.asarray(ric, float)
    sharpe, se = metrics.sharpe(r), metrics.sharpe_se(r)
    ic_mean, ic_se, ic_t = metrics.mean_t(ric)
    total, uni = metrics.total_return(r), metrics.total_return(u)
    return {
        "sessions": len(r), "sharpe": sharpe, "sharpe_se": se, "sharpe_ci": [sharpe - Z95 * se, sharpe + Z95 * se],
        "psr": metrics.psr(r), "min_track_record": metrics.min_track_record(r),
        "total_return": total, "universe_return": uni, "excess_return": total - uni,
        "rank_ic": ic_mean, "rank_ic_se": ic_se, "rank_ic_t": ic_t, "rank_ic_sessions": len(ric),
        "rank_ic_std": float(np.std(ric, ddof=1)) if len(ric) > 1 else float("nan"),
    }


def evidence(daily: pl.DataFrame, predictions: pl.DataFrame, universe_: pl.DataFrame, cfg: BacktestConfig,
             rank_ic: np.ndarray | None = None) -> dict:
    """Every figure of a stretch of out-of-sample sessions with its uncertainty: those of
    ``verdict_figures``, 90% block-bootstrap intervals (by session, fixed seed) of the total
    return and of the excess over the universe, the share of sessions that beat the universe
    with a Wilson interval, and the net return at 0x, 1x and 2x the costs with the break-even
    cost per side. ``rank_ic``: ``daily_rank_ic(predictions)`` when the caller has it."""
    r = daily["daily_return"].to_numpy()
    u_frame = daily.select("date").join(universe_.rename({"trade_date": "date"}), on="date", how="left")
    u = u_frame["universe_return"].fill_null(0.0).to_numpy()
    n = len(r)
    out = verdict_figures(r, u, daily_rank_ic(predictions) if rank_ic is None else rank_ic)
    gross = daily.filter(pl.col("trades") > 0)["gross_return"].to_numpy()
    beat = int(np.sum(r > u))
    f = cfg.side_charge
    out.update({
        "start": str(daily["date"].min()) if n else None, "end": str(daily["date"].max()) if n else None,
        "total_return_ci": list(metrics.total_return_interval(r, **BOOTSTRAP)),
        "excess_return_ci": list(metrics.excess_return_interval(r, u, **BOOTSTRAP)),
        "hit_rate": beat / n if n else float("nan"), "hit_rate_ci": list(metrics.binomial_interval(beat, n)),
        "cost": {"0x": metrics.net_of_costs_total(gross, 0.0), "1x": metrics.net_of_costs_total(gross, f),
                 "2x": metrics.net_of_costs_total(gross, 2 * f),
                 "break_even_bps": metrics.break_even_cost(gross) * 10_000 if len(gross) else float("nan")},
    })
    return out


def _nan(v) -> bool:
    return v is None or v != v


def judge(ev: dict) -> tuple[str, str, int | None]:
    """(grade, reason in words, more sessions that would settle an INCONCLUSIVE record) of the
    evidence ``ev`` (see ``evidence``); the rule is in the module docstring."""
    n, sharpe, se, psr = ev["sessions"], ev["sharpe"], ev["sharpe_se"], ev["psr"]
    ic, ic_se, ic_t, ic_std = ev["rank_ic"], ev["rank_ic_se"], ev["rank_ic_t"], ev.get("rank_ic_std", float("nan"))
    total, excess = ev["total_return"], ev["excess_return"]
    if n < MIN_SESSIONS or _nan(sharpe) or _nan(psr):
        return "INCONCLUSIVE", (f"{n} session(s) are too few to judge: the intervals need at least "
                                f"{MIN_SESSIONS}"), MIN_SESSIONS - n if n < MIN_SESSIONS else None
    figures = (f"Sharpe {sharpe:.2f} ± {se:.2f} (PSR {psr:.2f}), rank IC {_f(ic, '+.4f')} (t {_f(ic_t, '.2f')}) "
               f"over {n} sessions")
    ic_upper = ic + Z95 * ic_se if not _nan(ic_se) else float("nan")
    sharpe_upper = sharpe + Z95 * se
    if psr >= PSR_EDGE and not _nan(ic_t) and ic_t >= IC_T_EDGE:
        if sharpe >= 1.5 and total > 0 and excess > 0:
            return "EXCELLENT", f"evidence of an edge: {figures}; Sharpe >= 1.5 and it beats the universe", None
        if sharpe >= 1.0 and total > 0:
            return "GOOD", f"evidence of an edge: {figures}; Sharpe >= 1.0 with a positive return", None
        return "MARGINAL", f"a real but small edge: {figures}; the Sharpe is below 1.0", None
    if psr <= PSR_LOSS:
        return "POOR", f"the strategy loses with 95% confidence: {figures}", None
    no_edge = []
    if not _nan(ic_upper) and ic_upper < USEFUL_RANK_IC:
        no_edge.append(f"the rank IC is below {USEFUL_RANK_IC} with 95% confidence (upper bound {ic_upper:+.4f})")
    if sharpe_upper < USEFUL_SHARPE:
        no_edge.append(f"the Sharpe is below {USEFUL_SHARPE:.1f} with 95% confidence (upper bound {sharpe_upper:.2f})")
    if no_edge:
        grade = "MARGINAL" if sharpe >= 0.5 or total > 0 else "POOR"
        return grade, f"no useful edge: {' and '.join(no_edge)}; {figures}", None
    more = _more_sessions(n, sharpe, ev.get("min_track_record", float("nan")), ic, ic_std, ev.get("rank_ic_sessions", n))
    return "INCONCLUSIVE", (f"too little evidence either way: {figures}; neither an edge (PSR >= {PSR_EDGE} and "
                            f"rank-IC t >= {IC_T_EDGE:.0f}) nor its absence can be told apart from noise yet"), more


def _more_sessions(n: int, sharpe: float, min_trl: float, ic: float, ic_std: float, ic_n: int) -> int | None:
    """Sessions to add, at the figures seen so far, until the record settles either way: both
    edge tests pass (PSR reaches 0.95 and rank-IC t reaches 2), or one no-edge bound falls below
    its threshold. None when the figures cannot say (a flat or undefined series)."""
    edge = no_edge = math.inf
    if sharpe > 0 and ic > 0 and not _nan(ic_std) and ic_std > 0 and not _nan(min_trl):
        edge = max(min_trl, (IC_T_EDGE * ic_std / ic) ** 2 * n / max(ic_n, 1))
    if not _nan(ic_std) and ic_std > 0 and ic < USEFUL_RANK_IC:
        no_edge = (Z95 * ic_std / (USEFUL_RANK_IC - ic)) ** 2 * n / max(ic_n, 1)
    if sharpe < USEFUL_SHARPE:
        daily_gap = (USEFUL_SHARPE - sharpe) / math.sqrt(metrics.TRADING_DAYS)
        no_edge = min(no_edge, (Z95 / daily_gap) ** 2 * (1 + (sharpe / math.sqrt(metrics.TRADING_DAYS)) ** 2 / 2))
    need = min(edge, no_edge)
    if not math.isfinite(need):
        return None
    return max(1, math.ceil(need) - n)


def verdict(ev: dict) -> str:
    """The grade of ``judge``."""
    return judge(ev)[0]


def _f(v: float, spec: str) -> str:
    return "n/a" if _nan(v) else format(v, spec)
