"""Walk-forward backtest: a replay of the retraining routine, out of sample only.

For each block of ``retrain_every`` consecutive sessions, a model is trained on the rolling
window that ends ``embargo`` sessions before the block (early stopping on the window's
time-ordered tail, as in training), and predicts that block. Nothing a model is scored on was
ever in its training window.

Trading rule, each session: rank symbols by prediction (optionally only those whose 20-session
average dollar volume reaches ``min_dollar_volume``), buy the top ``max_positions`` at the open
with the current equity split equally, sell at the close, and pay ``cost_bps + slippage_bps`` of
the traded amount on each side: a position returns ``(1 + r) * (1 - f)^2 - 1``.

Verdict (the guide names the grades but gives no numbers; these fit its example, where Sharpe
1.84 with a positive return is EXCELLENT):
EXCELLENT Sharpe >= 1.5 with a positive return that beats the equal-weight universe;
GOOD Sharpe >= 1.0 with a positive return; MARGINAL Sharpe >= 0.5 or a positive return;
POOR otherwise.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import numpy as np
import polars as pl

from retrain import metrics, training
from retrain.errors import RetrainError


@dataclass(frozen=True)
class BacktestConfig:
    bankroll: float = 10_000.0
    max_positions: int = 5
    cost_bps: float = 5.0
    slippage_bps: float = 5.0
    retrain_every: int = 5
    min_dollar_volume: float | None = None

    @property
    def side_charge(self) -> float:
        return (self.cost_bps + self.slippage_bps) / 10_000.0


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
    by_day = {d: g for (d,), g in picks.partition_by("trade_date", as_dict=True).items()}
    equity = cfg.bankroll
    daily_rows, trade_frames = [], []
    for day in sessions:  # compounding is sequential by nature; each day is vectorized
        g = by_day.get(day)
        if g is None or g.is_empty():
            daily_rows.append((day, equity, 0.0, 0.0, 0))
            continue
        alloc = equity / g.height
        net = net_return(g["actual"].to_numpy(), cfg.side_charge)
        pnl = alloc * net
        trade_frames.append(g.select("trade_date", "symbol", "exchange", "predicted", "actual").with_columns(
            pl.Series("net_return", net), pl.lit(alloc).alias("allocation"), pl.Series("pnl", pnl)))
        day_ret = float(pnl.sum() / equity)
        equity += float(pnl.sum())
        daily_rows.append((day, equity, day_ret, float(g["actual"].mean()), g.height))
    daily = pl.DataFrame(daily_rows, schema={"date": pl.Date, "equity": pl.Float64, "daily_return": pl.Float64,
                                             "gross_return": pl.Float64, "trades": pl.Int64}, orient="row")
    trades = (pl.concat(trade_frames).rename({"trade_date": "date"}) if trade_frames else
              pl.DataFrame(schema={"date": pl.Date, "symbol": pl.String, "exchange": pl.String, "predicted": pl.Float64,
                                   "actual": pl.Float64, "net_return": pl.Float64, "allocation": pl.Float64, "pnl": pl.Float64}))
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


def verdict(s: dict) -> str:
    sharpe, total, excess = s["sharpe"], s["total_return"], s["excess_return"]
    sharpe = -np.inf if sharpe != sharpe else sharpe
    if sharpe >= 1.5 and total > 0 and excess > 0:
        return "EXCELLENT"
    if sharpe >= 1.0 and total > 0:
        return "GOOD"
    if sharpe >= 0.5 or total > 0:
        return "MARGINAL"
    return "POOR"


# ------------------------------------------------------------ walk-forward
def blocks(sessions: list[dt.date], every: int) -> list[list[dt.date]]:
    return [sessions[i:i + every] for i in range(0, len(sessions), every)]


def walk_forward(data: pl.DataFrame, columns: list[str], start: dt.date, end: dt.date,
                 tcfg: training.TrainConfig, bcfg: BacktestConfig, progress=None) -> pl.DataFrame:
    """Out-of-sample predictions for every labelled session in [start, end] of ``data`` (prepared
    rows, see ``training.prepare``, reaching back a training window before ``start``), each block
    predicted by a model trained only on sessions ending ``embargo`` sessions before it."""
    data = data.filter(pl.col("trade_date") <= end)
    all_sessions = sorted(data["trade_date"].unique().to_list())
    test_sessions = [d for d in all_sessions if start <= d <= end]
    if not test_sessions:
        raise RetrainError(f"no labelled sessions between {start} and {end}",
                           hint="pick dates inside the labelled range (`retrain status` shows it)")
    dates = data["trade_date"].to_numpy()
    x = training.matrix(data, columns)
    y = data["target"].to_numpy().astype(np.float64)
    out = []
    plan = blocks(test_sessions, bcfg.retrain_every)
    for i, block in enumerate(plan, 1):
        k = all_sessions.index(block[0])
        last_train = k - 1 - tcfg.embargo
        if last_train < 0:
            raise RetrainError(f"no training sessions before the backtest block starting {block[0]}",
                               hint="start the backtest later, or build more history")
        train_end = all_sessions[last_train]
        train_start = train_end - dt.timedelta(days=tcfg.training_days - 1)
        train_s = [d for d in all_sessions[: last_train + 1] if d >= train_start]
        in_train = np.isin(dates, np.array(train_s, dtype=dates.dtype))
        if in_train.sum() < tcfg.min_rows:
            raise RetrainError(
                f"Insufficient training samples: {int(in_train.sum()):,} < {tcfg.min_rows:,} for the backtest block "
                f"starting {block[0]} (window {train_start} to {train_end})",
                hint="use a longer --training-days, a later --start-date, or lower --min-rows")
        fit_s, valid_s = training.split_validation(train_s, tcfg.validation_fraction, tcfg.embargo)
        in_fit = np.isin(dates, np.array(fit_s, dtype=dates.dtype))
        in_valid = np.isin(dates, np.array(valid_s, dtype=dates.dtype))
        valid = (x[in_valid], y[in_valid]) if in_fit.any() else None
        model = training.fit_model(x[in_fit] if in_fit.any() else x[in_train], y[in_fit] if in_fit.any() else y[in_train],
                                   tcfg, columns, tcfg.num_boost_round, valid)
        rounds = model.best_iteration or tcfg.num_boost_round
        in_block = np.isin(dates, np.array(block, dtype=dates.dtype))
        pred = model.predict(x[in_block], num_iteration=rounds)
        out.append(data.filter(pl.Series(in_block)).select(
            "trade_date", "symbol", "exchange", pl.col("avg_dollar_volume_20").cast(pl.Float64), "actual")
            .with_columns(pl.Series("predicted", pred),
                          pl.lit(f"block {i}: trained {train_s[0]}..{train_s[-1]}").alias("model")))
        if progress:
            progress(i, len(plan), block, train_s)
    return pl.concat(out).select("trade_date", "symbol", "exchange", "avg_dollar_volume_20", "predicted", "model",
                                 "actual")


def universe(labels: pl.DataFrame) -> pl.DataFrame:
    """Equal-weight open-to-close return per session of every labelled symbol in ``labels``
    (trade_date, intraday_return)."""
    return (labels.group_by("trade_date").agg(pl.col("intraday_return").mean().alias("universe_return"))
            .sort("trade_date"))
