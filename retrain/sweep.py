"""What `retrain sweep` searches, and how honestly it picks: the search space of ``[sweep]``, a
trial's routine, the figures of its replay, and the reading of the best of N trials.

Frames and settings in, results out: no store, no cluster (``retrain.sweeping`` runs the trials).

**The space.** ``[sweep]`` of retrain.toml gives, for the LightGBM settings of ``[model]``
(learning_rate, num_leaves, min_data_in_leaf, feature_fraction, lambda_l2), a range
``[low, high]``, searched on a log scale for all but feature_fraction; for ``[training]``
training_days and target, a list to choose from; and optionally feature groups that a trial may
leave out (one at most). One value instead of a range or list fixes that setting.

**A trial** is the routine of ``retrain run`` (``[training]`` and ``[model]``) with the trial's
values in place, replayed walk-forward over the backtest window by the same code as the run's
out-of-sample record. Its model uses one thread (``num_threads = 1``), so that N worker
processes use N cores. In LightGBM's deterministic mode with column-wise histograms the model
has not depended on the thread count in our checks, so the trial's figures are those ``retrain
run`` gets with its settings (tests/test_sweep.py checks one against ``pipeline.backtest`` with
``[model] num_threads = 2``; the routine fingerprint a trial records is the run's, with its
num_threads).

**Honest selection** (Bailey & López de Prado 2014). The best of N trials looks good even
when no trial has skill: its Sharpe is the maximum of N noisy estimates. The Deflated Sharpe
Ratio is the probability that the best trial's true Sharpe is above the Sharpe the best of N
skill-less trials would be expected to reach (``metrics.expected_max_sharpe``, from the
variance of the N Sharpes), with the skew and fat tails of its own daily returns
(``metrics.deflated_sharpe``). At or above 0.95 (the PSR threshold of the verdict), the best
trial can be told apart from the best of N trials with no skill; below, it cannot. N counts
every trial that produced a Sharpe: similar trials are not independent, so this N is an upper
bound of the paper's effective number of trials, and the DSR errs on the side of caution.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from retrain import metrics
from retrain.backtest import PSR_EDGE, Z95
from retrain.errors import RetrainError

MODEL_KEYS = ("learning_rate", "num_leaves", "min_data_in_leaf", "feature_fraction", "lambda_l2")  # [model]
TRAINING_KEYS = ("training_days", "target")  # [training]
DIMENSIONS = (*MODEL_KEYS, *TRAINING_KEYS, "leave_out")
LOG_SCALE = frozenset({"learning_rate", "num_leaves", "min_data_in_leaf", "lambda_l2"})
INTEGER = frozenset({"num_leaves", "min_data_in_leaf"})
NONE = "none"  # the leave_out value of a trial that keeps every feature
SAMPLERS = ("tpe", "random", "grid")

# Feature groups a trial may leave out: a column is in a group when its name starts with one of
# the group's prefixes. `prev_close` and `exchange` are in none: they are always kept.
FEATURE_GROUPS: dict[str, tuple[str, ...]] = {
    "returns": ("return_",),
    "momentum": ("momentum_", "price_rel_", "trend_", "dist_high_", "dist_low_"),
    "volatility": ("volatility_", "atr_ratio", "range"),
    "volume": ("avg_volume_", "volume_ratio_", "avg_dollar_volume_", "obv_slope_"),
    "oscillators": ("rsi_", "macd_"),
    "previous_session": ("intraday_return", "overnight_gap", "close_location"),
    "context": ("market_return", "rel_strength_", "sector_return"),
    "calendar": ("day_of_week",),
}


def group_columns(group: str, columns: list[str]) -> list[str]:
    """The columns of ``columns`` that ``group`` holds."""
    prefixes = FEATURE_GROUPS[group]
    return [c for c in columns if c.startswith(prefixes)]


def kept_columns(columns: list[str], leave_out: str | None) -> list[str]:
    """``columns`` without the group ``leave_out`` (all of them for None or "none")."""
    if not leave_out or leave_out == NONE:
        return list(columns)
    gone = set(group_columns(leave_out, columns))
    return [c for c in columns if c not in gone]


# ------------------------------------------------------------------ the space
@dataclass(frozen=True)
class Space:
    """The search space: ``ranges`` {key: (low, high)} searched, ``choices`` {key: values}
    chosen from, ``fixed`` {key: value} not searched. Every key of DIMENSIONS is in one of them."""

    ranges: dict[str, tuple[float, float]]
    choices: dict[str, tuple]
    fixed: dict[str, Any]

    @property
    def searched(self) -> list[str]:
        return [k for k in DIMENSIONS if k in self.ranges or k in self.choices]

    def values(self, key: str) -> list:
        """Every value ``key`` can take (a range: its bounds)."""
        if key in self.ranges:
            return list(self.ranges[key])
        return list(self.choices[key]) if key in self.choices else [self.fixed[key]]

    @property
    def widest_training_days(self) -> int:
        return max(self.values("training_days"))

    @property
    def targets(self) -> list[str]:
        return self.values("target")

    def distributions(self) -> dict:
        """Optuna's distribution of every searched key."""
        from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

        out = {}
        for key in self.searched:
            if key in self.ranges:
                low, high = self.ranges[key]
                cls = IntDistribution if key in INTEGER else FloatDistribution
                out[key] = cls(low, high, log=key in LOG_SCALE)
            else:
                out[key] = CategoricalDistribution(list(self.choices[key]))
        return out

    def grid(self, points: int) -> dict[str, list]:
        """The grid of ``sampler = "grid"``: ``points`` values across each range (geometric on a
        log scale, rounded and deduplicated for integers), every choice of each list."""
        out: dict[str, list] = {}
        for key in self.searched:
            if key in self.choices:
                out[key] = list(self.choices[key])
                continue
            low, high = self.ranges[key]
            values = (np.geomspace(low, high, points) if key in LOG_SCALE else np.linspace(low, high, points)).tolist()
            if key in INTEGER:
                values = sorted({int(round(v)) for v in values})
            else:
                values = [float(f"{v:.6g}") for v in values[1:-1]]
                values = [float(low), *values, float(high)]
            out[key] = values
        return out

    def grid_size(self, points: int) -> int:
        return math.prod(len(v) for v in self.grid(points).values())

    def params(self, suggested: dict) -> dict:
        """A trial's full settings, in DIMENSIONS order: the suggested values (a float rounded to
        4 significant digits, inside its range: what the trial runs with, and what `sweep apply`
        writes) and the fixed ones."""
        merged = {**self.fixed, **suggested}
        out = {k: _plain(merged.get(k)) for k in DIMENSIONS}
        for key, (low, high) in self.ranges.items():
            if isinstance(out[key], float):
                out[key] = min(max(float(f"{out[key]:.4g}"), low), high)
        return out


def _plain(v):
    """numpy scalars as Python ones (for JSON and TOML)."""
    return v.item() if isinstance(v, np.generic) else v


def parse_space(section: dict, columns: list[str]) -> Space:
    """The space of a validated ``[sweep]`` section (``Settings.section("sweep")``) for a feature
    version with ``columns``. Raises RetrainError naming the key and the value when a feature
    group is unknown or holds none of the version's columns."""
    ranges, choices, fixed = {}, {}, {}
    for key in (*MODEL_KEYS, *TRAINING_KEYS):
        value = section[key]
        if isinstance(value, list) and key in MODEL_KEYS:
            low, high = value
            if low == high:
                fixed[key] = low
            else:
                ranges[key] = (low, high)
        elif isinstance(value, list):
            if len(value) == 1:
                fixed[key] = value[0]
            else:
                choices[key] = tuple(value)
        else:
            fixed[key] = value
    groups = list(section.get("leave_out") or [])
    for g in groups:
        if g not in FEATURE_GROUPS:
            raise RetrainError(f"[sweep] leave_out = {_toml(groups)}: unknown feature group \"{g}\"",
                               hint=f"feature groups: {', '.join(FEATURE_GROUPS)}")
        if not group_columns(g, columns):
            raise RetrainError(f"[sweep] leave_out = {_toml(groups)}: the feature group \"{g}\" holds none of "
                               "this feature version's columns", hint="remove it from leave_out")
    if groups:
        choices["leave_out"] = (NONE, *groups)
    else:
        fixed["leave_out"] = NONE
    return Space(ranges, choices, fixed)


def _toml(value) -> str:
    import json

    return json.dumps(value) if not isinstance(value, list) else "[" + ", ".join(json.dumps(v) for v in value) + "]"


def trial_config(base, params: dict, threads: int | None = 1):
    """The TrainConfig of a trial: ``base`` (``TrainConfig.from_settings``) with the trial's
    [training] and [model] values; ``threads``: LightGBM's num_threads (None: base's)."""
    model = {**base.params, **{k: params[k] for k in MODEL_KEYS}}
    if threads is not None:
        model["num_threads"] = threads
    return dataclasses.replace(base, training_days=int(params["training_days"]), target=params["target"],
                               params=model)


def settings_of(params: dict) -> dict[str, dict[str, Any]]:
    """What `retrain sweep apply` writes into retrain.toml: {section: {key: value}}."""
    return {"training": {k: params[k] for k in TRAINING_KEYS}, "model": {k: params[k] for k in MODEL_KEYS}}


def describe(params: dict, keys=None) -> str:
    """``key=value`` of a trial's settings, compactly."""
    out = []
    for k in keys or DIMENSIONS:
        v = params.get(k)
        if k == "leave_out" and v == NONE and keys is None:
            continue
        out.append(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}")
    return " ".join(out)


# ------------------------------------------------------------------ a trial's figures
FIGURES = ("sessions", "sharpe", "sharpe_se", "psr", "rank_ic", "rank_ic_se", "rank_ic_t", "total_return",
           "excess_return", "hit_rate", "max_drawdown", "min_track_record")
INTERVALS = ("sharpe", "rank_ic", "total_return", "excess_return", "hit_rate")  # each with _lo and _hi (90%)


def figures(evidence: dict, verdict: str, daily_equity: np.ndarray, bankroll: float) -> dict:
    """A trial's row of metrics from the evidence of its replay (``backtest.evidence`` of the
    record, which the verdict judges): each figure, and its 90% interval as ``_lo``/``_hi``."""
    ev = evidence
    out: dict[str, Any] = {k: _num(ev.get(k)) for k in FIGURES if k != "max_drawdown"}
    out["sessions"] = int(ev.get("sessions") or 0)
    out["max_drawdown"] = metrics.max_drawdown(np.concatenate([[bankroll], daily_equity]))
    ic, se = out["rank_ic"], out["rank_ic_se"]
    ci = {"sharpe": ev.get("sharpe_ci"), "total_return": ev.get("total_return_ci"),
          "excess_return": ev.get("excess_return_ci"), "hit_rate": ev.get("hit_rate_ci"),
          "rank_ic": [ic - Z95 * se, ic + Z95 * se] if se == se else None}
    for key in INTERVALS:
        lo, hi = ci[key] if ci[key] else (float("nan"), float("nan"))
        out[f"{key}_lo"], out[f"{key}_hi"] = _num(lo), _num(hi)
    out["verdict"] = verdict
    return out


def _num(v) -> float:
    return float("nan") if v is None else float(v)


# ------------------------------------------------------------------ honest selection
def best_trial(rows: list[dict]) -> dict | None:
    """The complete trial with the highest Sharpe (the lowest trial number among equals)."""
    done = [r for r in rows if r.get("state") == "complete" and _finite(r.get("sharpe"))]
    return max(done, key=lambda r: (r["sharpe"], -r["trial"])) if done else None


def _finite(v) -> bool:
    return isinstance(v, int | float) and math.isfinite(v)


def selection(rows: list[dict], best_returns: np.ndarray | None) -> dict:
    """The honest reading of the best trial among ``rows``: the Sharpes compared (every complete
    trial's), their spread, the Sharpe the best of that many skill-less trials would reach, the
    best trial's DSR, whether it can be told apart from luck, and that in words."""
    sharpes = np.array([r["sharpe"] for r in rows if r.get("state") == "complete" and _finite(r.get("sharpe"))])
    best = best_trial(rows)
    n = len(sharpes)
    var = float(np.var(sharpes, ddof=1)) if n > 1 else float("nan")
    sr0 = metrics.expected_max_sharpe(var, n) if n > 1 else float("nan")
    dsr = metrics.deflated_sharpe(best_returns, sharpes) if best is not None and best_returns is not None \
        else float("nan")
    apart = bool(dsr == dsr and dsr >= PSR_EDGE)
    return {"trials_compared": n, "sharpe_std": math.sqrt(var) if var == var else float("nan"),
            "expected_max_sharpe": sr0, "dsr": dsr, "distinguishable": apart,
            "words": luck_words(best, n, dsr, sr0)}


def luck_words(best: dict | None, n: int, dsr: float, sr0: float) -> str:
    """Whether the best trial can be told apart from the best of ``n`` trials with no skill, in
    words, with the figures that say so."""
    if best is None:
        return "No trial produced a Sharpe ratio, so there is no best trial to judge."
    head = f"The best trial (trial {best['trial']}, Sharpe {best['sharpe']:.2f})"
    if dsr != dsr:
        why = ("one trial cannot be compared with others" if n < 2 else
               "its returns are too few or flat to compute its Deflated Sharpe Ratio")
        return f"{head} cannot be told apart from the best of {n} trials with no skill: {why}."
    figures_ = (f"Deflated Sharpe Ratio {dsr:.2f}: the best of {n} trials with no skill and this spread of Sharpes "
                f"would reach a Sharpe of {sr0:.2f}")
    if dsr >= PSR_EDGE:
        return (f"{head} can be told apart from the best of {n} trials with no skill ({figures_}; the best trial "
                f"beats that with {dsr:.0%} probability, at or above {PSR_EDGE:.0%}).")
    return (f"{head} cannot be told apart from the best of {n} trials with no skill ({figures_}; the best trial "
            f"beats that with {dsr:.0%} probability only, below {PSR_EDGE:.0%}). Its lead over the other trials may "
            "be luck: keep the current settings unless other evidence supports the change.")
