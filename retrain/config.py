"""Settings: retrain.toml, then environment, then command-line options (each overrides the last).

The current feature version lives in retrain.toml (``[features] version = "v1"``), never in code.
"""

from __future__ import annotations

import contextlib
import difflib
import io
import json
import math
import os
import re
import sys
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from retrain.errors import RetrainError

CONFIG_ENV = "RETRAIN_CONFIG"
DATA_DIR_ENV = "RETRAIN_DATA_DIR"
ARTIFACTS_DIR_ENV = "RETRAIN_ARTIFACTS_DIR"
DEFAULT_CONFIG = "retrain.toml"
VERSION_RE = re.compile(r"^v[1-9][0-9]*$")


def check_version(version: str) -> str:
    """Return ``version`` if it is of the form ``v<N>`` (N >= 1), else raise a RetrainError."""
    if not isinstance(version, str) or not VERSION_RE.match(version):
        raise RetrainError(
            f"invalid feature version {version!r}: versions are written v<N>, e.g. v1, v2",
            hint="fix [features] version in retrain.toml (or the --version option)",
        )
    return version


# ------------------------------------------------------------------ the schema
# Every section and key of retrain.toml, in one place: type, constraint, default, one-line doc.
# The defaults are the values of the documented config that `retrain init` writes
# (retrain/default.toml, the same text as the project's retrain.toml; a test keeps them equal).
LIGHTGBM_DOCS = "https://lightgbm.readthedocs.io/en/latest/Parameters.html"
# Set by retrain itself on every model, whatever [model] says.
# Column-wise histograms: the same model from the same data, bit for bit (deterministic), and
# faster than row-wise on the few dozen features of a training window.
FIXED_MODEL_PARAMS: dict[str, Any] = {"deterministic": True, "force_col_wise": True, "verbosity": -1}
TARGETS = ("excess", "raw")  # [training] target
# LightGBM parameters that retrain drives from another setting.
MODEL_PARAMS_SET_ELSEWHERE = {"num_iterations": "[training] num_boost_round",
                              "early_stopping_round": "[training] early_stopping_rounds"}


# The model regresses a return, which may be negative: the objectives (and early-stopping
# metrics) of a real-valued target, with LightGBM's other names for them. Classification and
# ranking objectives, and those of a non-negative target (poisson, gamma, tweedie), do not fit it.
REGRESSION_OBJECTIVES = {
    "regression": ("regression_l2", "l2", "mean_squared_error", "mse", "l2_root", "root_mean_squared_error", "rmse"),
    "regression_l1": ("l1", "mean_absolute_error", "mae"),
    "huber": (), "fair": (), "quantile": (), "mape": ("mean_absolute_percentage_error",),
}
_OBJECTIVE_NAMES = {alias: main for main, aliases in REGRESSION_OBJECTIVES.items() for alias in (main, *aliases)}
# LightGBM names each objective's metric as the objective (l2, l1, huber, ...): the same names
# (and no "None": early stopping needs a metric)
REGRESSION_METRICS = frozenset(_OBJECTIVE_NAMES)


def _objective(value: str) -> str:
    value = _non_empty(value)
    if value.lower() not in _OBJECTIVE_NAMES:
        raise ValueError(f"a regression objective ({', '.join(REGRESSION_OBJECTIVES)}): the model predicts a "
                         "return, which may be negative")
    return value


MAX_WINDOW_DAYS = 36_500  # a training or backtest window of calendar days: a century at most


@dataclass(frozen=True)
class Key:
    """One setting: ``kind`` is "int", "float" (ints accepted), "str", "path", or "custom" (any
    TOML value, checked and normalized by ``parse`` alone: the ranges and choices of [sweep]);
    ``low``/``high`` bound numbers (exclusive when ``low_open``/``high_open``); ``parse``
    normalizes a string (or a custom value) or raises ValueError; ``expect`` overrides the
    generated description of valid values."""

    kind: str
    default: Any
    doc: str
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    parse: Callable[[str], str] | None = None
    expect: str | None = None

    def expected(self) -> str:
        if self.expect:
            return self.expect
        what = {"int": "an integer", "float": "a number", "str": "a string", "path": "a non-empty path"}[self.kind]
        bounds = []
        if self.low is not None:
            bounds.append(f"{'>' if self.low_open else '>='} {self.low:g}")
        if self.high is not None:
            bounds.append(f"{'<' if self.high_open else '<='} {self.high:g}")
        return f"{what} {' and '.join(bounds)}" if bounds else what

    def check(self, value: Any) -> Any:
        """The value, normalized (ints become floats for a float key); ValueError if invalid."""
        if self.kind == "custom":
            return self.parse(value)
        if self.kind == "int":
            ok = isinstance(value, int) and not isinstance(value, bool)
        elif self.kind == "float":
            ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
            value = float(value) if ok else value
        else:
            ok = isinstance(value, str) and (self.kind != "path" or value.strip() != "")
        if not ok:
            raise ValueError(self.expected())
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            raise ValueError(self.expected())
        if self.high is not None and (value >= self.high if self.high_open else value > self.high):
            raise ValueError(self.expected())
        return self.parse(value) if self.parse else value


def _version(value: str) -> str:
    if not VERSION_RE.match(value):
        raise ValueError("a feature version v<N> (v1, v2, ...)")
    return value


def _exchange(value: str) -> str:
    from retrain.calendar import ALIASES, EXCHANGES

    code = value.strip().upper()
    code = ALIASES.get(code, code)
    if code != "ALL" and code not in EXCHANGES:
        raise ValueError(_EXCHANGE_EXPECT)
    return code


def _one_of(*choices: str) -> Callable[[str], str]:
    def parse(value: str) -> str:
        if value.strip().lower() not in choices:
            raise ValueError(" or ".join(f'"{c}"' for c in choices))
        return value.strip().lower()

    return parse


def _non_empty(value: str) -> str:
    if not value.strip():
        raise ValueError("a non-empty string")
    return value.strip()


_EXCHANGE_EXPECT = 'NASDAQ, NYSE, TSE or ALL (any case; aliases XNAS, XNYS, XTSE, TSX, TO)'


# [sweep]: a range is [low, high] (or one number: not searched), a choice list is [a, b, ...]
# (or one value). Each check returns the value normalized, or raises ValueError saying what
# was expected, which the config error prints after the key and the value.
SAMPLERS = ("tpe", "random", "grid")


def _number(kind: str, value: Any) -> bool:
    if isinstance(value, bool):
        return False
    if kind == "int":
        return isinstance(value, int)
    return isinstance(value, int | float) and math.isfinite(value)


def _range(kind: str, low: float, high: float | None = None, low_open: bool = False) -> Callable[[Any], Any]:
    bound = f"{'>' if low_open else '>='} {low:g}" + (f" and <= {high:g}" if high is not None else "")
    what = "an integer" if kind == "int" else "a number"
    expect = f"{what} {bound}, or a range [low, high] of them with low <= high"

    def inside(v) -> bool:
        return _number(kind, v) and (v > low if low_open else v >= low) and (high is None or v <= high)

    def norm(v):
        return int(v) if kind == "int" else float(v)

    def parse(value: Any) -> Any:
        if inside(value):
            return norm(value)
        if isinstance(value, list) and len(value) == 2 and all(inside(v) for v in value) and value[0] <= value[1]:
            return [norm(v) for v in value]
        raise ValueError(expect)

    return parse


def _choices(kind: str, allowed: tuple[str, ...] | None = None, low: int | None = None,
             empty: bool = False) -> Callable[[Any], Any]:
    if kind == "int":
        expect = f"an integer >= {low}, or a list of them to choose from"
    elif allowed:
        expect = f"{' or '.join(json.dumps(a) for a in allowed)}, or a list of them to choose from"
    else:
        expect = "a list of names" + (" (empty: none)" if empty else "")

    def one(v: Any) -> Any:
        if kind == "int" and _number("int", v) and v >= (low or 0):
            return int(v)
        if kind == "str" and isinstance(v, str) and v.strip() and (not allowed or v.strip().lower() in allowed):
            return v.strip().lower() if allowed else v.strip()
        raise ValueError(expect)

    def parse(value: Any) -> Any:
        if not isinstance(value, list):
            if empty:  # a list, always
                raise ValueError(expect)
            return one(value)
        if not value and not empty:
            raise ValueError(expect)
        out = [one(v) for v in value]
        if len(set(out)) != len(out):
            raise ValueError(expect + ", each once")
        return out

    return parse

SCHEMA: dict[str, dict[str, Key]] = {
    "store": {
        "data_dir": Key("path", "data", "bars, features and labels (relative to the current directory); "
                        "$RETRAIN_DATA_DIR and --data-dir override it"),
        "artifacts_dir": Key("path", "artifacts", "models, runs and reports; $RETRAIN_ARTIFACTS_DIR and "
                             "--artifacts-dir override it"),
    },
    "features": {
        "version": Key("str", "v1", "the current feature version; others stay on disk", parse=_version,
                       expect="a feature version v<N> (v1, v2, ...)"),
    },
    "run": {
        "exchange": Key("str", "NASDAQ", "default exchange of run, train, backtest and predict", parse=_exchange,
                        expect=_EXCHANGE_EXPECT),
    },
    "sample": {
        "symbols": Key("int", 300, "symbols in the sample market of `retrain sample-data`", low=3),
        "days": Key("int", 320, "sessions per exchange in the sample market", low=2),
        "seed": Key("int", 7, "random seed of the sample market", low=0),
    },
    "training": {
        "training_days": Key("int", 90, "calendar days of the rolling training window", low=1, high=MAX_WINDOW_DAYS),
        "min_rows": Key("int", 500, "fewest training rows accepted", low=1),
        "cv_folds": Key("int", 5, "walk-forward cross-validation folds: the newest blocks of the grid", low=1),
        "embargo": Key("int", 1, "sessions left out between a fold's training sessions and its test block", low=0),
        "validation_fraction": Key("float", 0.2, "time-ordered tail of a fold's training sessions used for "
                                   "early stopping", low=0, high=1, low_open=True, high_open=True),
        "early_stopping_rounds": Key("int", 100, "rounds without improvement before early stopping", low=1),
        "num_boost_round": Key("int", 600, "most boosting rounds", low=1),
        "top_n": Key("int", 5, "symbols in the top-N metric and the backtest's positions", low=1),
        "target": Key("str", "excess", 'what the model learns: "excess" (return minus its exchange\'s '
                      'average that session) or "raw"', parse=_one_of(*TARGETS)),
    },
    "backtest": {
        "record_sessions": Key("int", 252, "out-of-sample sessions the record keeps (it grows week by week up to "
                               "this); the verdict and the promotion gate use all of them", low=1),
    },
    "monitor": {
        "max_model_age_days": Key("int", 14, "calendar days after the end of its training data beyond which the "
                                  "active model is stale (`retrain predict` warns, `--strict` refuses)", low=1),
    },
    "sweep": {
        "trials": Key("int", 40, "trials of `retrain sweep` (--trials overrides)", low=1),
        "sampler": Key("str", "tpe", 'how Optuna proposes the trials: "tpe", "random" or "grid" (--sampler '
                       "overrides)", parse=_one_of(*SAMPLERS), expect='"tpe", "random" or "grid"'),
        "seed": Key("int", 0, "seed of the sampler: the same seed, space and data give the same trials", low=0),
        "parallel": Key("int", 8, "trials running at once at most; trial k is proposed from the trials up to "
                        "k - parallel, so the same seed gives the same trials on any number of workers", low=1),
        "grid_points": Key("int", 3, "values of each range with sampler = \"grid\" (evenly spaced, on a log "
                           "scale where the range is searched on one)", low=2),
        "learning_rate": Key("custom", [0.005, 0.1], "[model] learning_rate to search (log scale)",
                             parse=_range("float", 0, low_open=True)),
        "num_leaves": Key("custom", [4, 64], "[model] num_leaves to search (log scale)", parse=_range("int", 2)),
        "min_data_in_leaf": Key("custom", [10, 400], "[model] min_data_in_leaf to search (log scale)",
                                parse=_range("int", 1)),
        "feature_fraction": Key("custom", [0.3, 1.0], "[model] feature_fraction to search",
                                parse=_range("float", 0, 1, low_open=True)),
        "lambda_l2": Key("custom", [0.01, 100.0], "[model] lambda_l2 to search (log scale)",
                         parse=_range("float", 0, low_open=True)),
        "training_days": Key("custom", [60, 90, 180], "[training] training_days to choose from",
                             parse=_choices("int", low=1)),
        "target": Key("custom", ["excess", "raw"], "[training] target to choose from",
                      parse=_choices("str", TARGETS)),
        "leave_out": Key("custom", [], "feature groups each trial may leave out (one at most, or none)",
                         parse=_choices("str", empty=True)),
    },
    "model": {
        "objective": Key("str", "regression", f"LightGBM objective, one for a real-valued target: "
                         f"{', '.join(REGRESSION_OBJECTIVES)}", parse=_objective),
        "learning_rate": Key("float", 0.02, "LightGBM shrinkage rate", low=0, low_open=True),
        "num_leaves": Key("int", 7, "most leaves per tree", low=2),
        "min_data_in_leaf": Key("int", 50, "fewest rows per leaf", low=0),
        "feature_fraction": Key("float", 0.5, "share of features tried per tree", low=0, high=1, low_open=True),
        "bagging_fraction": Key("float", 0.8, "share of rows sampled per bagging round", low=0, high=1,
                                low_open=True),
        "bagging_freq": Key("int", 1, "bag every N rounds (0: no bagging)", low=0),
        "lambda_l2": Key("float", 1.0, "L2 regularization", low=0),
        "seed": Key("int", 42, "LightGBM random seed (with deterministic, the same model from the same data)"),
        "num_threads": Key("int", 2, "cores LightGBM uses (0: its default, all cores)", low=0),
    },
}
DEFAULTS: dict[str, dict[str, Any]] = {s: {k: key.default for k, key in keys.items()} for s, keys in SCHEMA.items()}


def _toml_value(value: Any) -> str:
    """A value as it is written in TOML (for messages)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} = {_toml_value(v)}" for k, v in value.items()) + "}"
    return value.isoformat() if hasattr(value, "isoformat") else repr(value)


def _did_you_mean(word: str, candidates, quote: Callable[[str], str] = lambda c: f'"{c}"') -> str:
    close = difflib.get_close_matches(word, list(candidates), n=1, cutoff=0.6)
    return f" (did you mean {quote(close[0])}?)" if close else ""


_SECTIONS_HINT = "sections: " + ", ".join(f"[{s}]" for s in SCHEMA)
_MODEL_HINT = (f"[model] takes {', '.join(SCHEMA['model'])}, or any other LightGBM parameter "
               f"({LIGHTGBM_DOCS})")

# (where, what, hint): where is "[section]" or "" for the file as a whole
Problem = tuple[str, str, str]


def validate_config(toml: dict[str, Any], source: str = DEFAULT_CONFIG) -> dict[str, Any]:
    """Check a parsed retrain.toml against SCHEMA before any work starts: unknown sections and keys
    (with the closest valid name), wrong types and out-of-range values, and [model] keys that
    LightGBM does not know or refuses. Returns the tables with their values normalized (exchange
    upper-case, ints of float keys as floats); raises one RetrainError naming every problem."""
    problems: list[Problem] = []
    out: dict[str, dict[str, Any]] = {}
    for name, table in toml.items():
        if name not in SCHEMA:
            problems.append(_outside_schema(name, table))
            continue
        if not isinstance(table, dict):
            problems.append(("", f"{name} = {_toml_value(table)} is not a section",
                             f"write [{name}] on a line of its own, then its keys"))
            continue
        out[name], extras = {}, {}
        for key, value in table.items():
            spec = SCHEMA[name].get(key)
            if spec is None and name == "model":
                extras[key] = value
            elif spec is None:
                problems.append(_unknown_key(name, key))
            else:
                try:
                    out[name][key] = spec.check(value)
                except ValueError as exc:
                    problems.append((f"[{name}]", f"{key} = {_toml_value(value)}: expected {exc}",
                                     f"{key}: {spec.doc} (default {_toml_value(spec.default)})"))
        if name == "model":
            model = out["model"]
            accepted, extra_problems = _model_extras(extras)
            problems += extra_problems
            model.update(accepted)
            default_objective = SCHEMA["model"]["objective"].default
            to_try = list(accepted) + (["objective"] if model.get("objective", default_objective)
                                       != default_objective else [])
            if to_try and not extra_problems:
                problems += _lightgbm_refusals({**DEFAULTS["model"], **model}, to_try)
    if len(problems) == 1:
        where, what, hint = problems[0]
        raise RetrainError(f"{source}{' ' + where if where else ''}: {what}", hint=hint)
    if problems:
        lines = "".join(f"\n  {where + ': ' if where else ''}{what}" for where, what, _ in problems)
        raise RetrainError(f"{source} has {len(problems)} problems:{lines}",
                           hint="fix them and rerun (`retrain init DIR` writes the documented config to compare with)")
    return out


def _outside_schema(name: str, value: Any) -> Problem:
    if isinstance(value, dict):
        return "", f"unknown section [{name}]{_did_you_mean(name, SCHEMA, lambda c: f'[{c}]')}", _SECTIONS_HINT
    home = _homes(name)
    if home:
        return "", f'"{name}" is outside any section (it belongs in [{home[0]}])', f"move it under [{home[0]}]"
    return "", f'unknown key "{name}" outside any section', f"every key goes under a section; {_SECTIONS_HINT}"


def _homes(key: str) -> list[str]:
    """The sections that have ``key``; [sweep] (which searches keys of [training] and [model])
    last, so a misplaced key is sent where it is set."""
    return sorted((s for s, keys in SCHEMA.items() if key in keys), key=lambda s: s == "sweep")


def _unknown_key(section: str, key: str) -> Problem:
    home = [s for s in _homes(key) if s != section]
    hint = f"valid keys in [{section}]: {', '.join(SCHEMA[section])}"
    if home and not _did_you_mean(key, SCHEMA[section]):
        return f"[{section}]", f'unknown key "{key}" (it belongs in [{home[0]}])', hint
    return f"[{section}]", f'unknown key "{key}"{_did_you_mean(key, SCHEMA[section])}', hint


def _model_extras(extras: dict[str, Any]) -> tuple[dict[str, Any], list[Problem]]:
    """[model] keys beyond SCHEMA: accepted when LightGBM knows them as parameters that retrain
    leaves to the user."""
    if not extras:
        return {}, []
    from lightgbm.basic import _ConfigAliases  # only when such a key is present

    aliases: dict[str, list[str]] = _ConfigAliases._get_all_param_aliases()  # name -> [name, *aliases]
    canonical = {alias: main for main, names in aliases.items() for alias in names}
    accepted, problems = {}, []
    for key, value in extras.items():
        main = canonical.get(key)
        if main is None:
            guess = _did_you_mean(key, SCHEMA["model"]) or _did_you_mean(key, aliases)
            problems.append(("[model]", f'unknown key "{key}"{guess}', _MODEL_HINT))
        elif main in SCHEMA["model"]:
            problems.append(("[model]", f'"{key}" is LightGBM\'s other name for "{main}"',
                             f"write {main} = {_toml_value(value)} instead (one name per setting)"))
        elif main == "force_row_wise":  # cannot be set beside force_col_wise
            problems.append(("[model]", f"{key} is set by retrain (force_col_wise = true for every model)",
                             "remove it from [model]"))
        elif main in FIXED_MODEL_PARAMS:
            problems.append(("[model]", f"{key} is set by retrain ({main} = "
                             f"{_toml_value(FIXED_MODEL_PARAMS[main])} for every model)", "remove it from [model]"))
        elif main == "metric" and _odd_metrics(value):
            problems.append(("[model]", f"{key} = {_toml_value(value)}: {', '.join(_odd_metrics(value))} is not a "
                             "metric of a regression (the model predicts a return, which may be negative)",
                             f"use one of l2, l1, rmse, huber, fair, quantile, mape (or leave {key} out: l2 for the "
                             "default objective)"))
        elif main in MODEL_PARAMS_SET_ELSEWHERE:
            problems.append(("[model]", f"{key} is set by retrain from {MODEL_PARAMS_SET_ELSEWHERE[main]}",
                             f"remove it from [model] and set {MODEL_PARAMS_SET_ELSEWHERE[main]} instead"))
        else:
            accepted[key] = value
    return accepted, problems


def _odd_metrics(value: Any) -> list[str]:
    """The early-stopping metrics of ``value`` (a name, a comma-separated list or a TOML list)
    that do not measure a regression."""
    names = value if isinstance(value, list) else str(value).split(",")
    return [str(n).strip() for n in names if str(n).strip().lower() not in REGRESSION_METRICS]


def _lightgbm_refusals(params: dict[str, Any], keys: list[str]) -> list[Problem]:
    """Let LightGBM itself judge ``keys`` of ``params``: a Booster on a 20-row dataset parses and
    checks every parameter. Names each key it refuses (alone, or the combination)."""
    import numpy as np

    from retrain import lgbm

    lgb = lgbm.load()

    rng = np.random.default_rng(0)
    x = rng.normal(size=(20, 2))
    y = 0.5 + 0.2 * np.tanh(x[:, 0])  # in (0, 1): valid for every single-output objective

    def refusal(trial: dict[str, Any]) -> str | None:
        try:
            with contextlib.redirect_stdout(io.StringIO()), _native_stderr_silenced():
                lgb.Booster(params={**trial, **FIXED_MODEL_PARAMS, "num_threads": 1}, train_set=lgb.Dataset(x, y))
        except lgb.basic.LightGBMError as exc:
            return re.sub(r"\s+at \S+, line \d+\s*\.?\s*$", "", str(exc).strip())
        return None

    if refusal(params) is None:
        return []
    base = {k: v for k, v in params.items() if k not in keys}
    base.setdefault("objective", SCHEMA["model"]["objective"].default)
    out = []
    for key in keys:
        why = refusal({**base, key: params[key]})
        if why:
            out.append(("[model]", f"{key} = {_toml_value(params[key])} is refused by LightGBM: {why}",
                        f"see {key} in {LIGHTGBM_DOCS}"))
    if not out:
        together = ", ".join(f"{k} = {_toml_value(params[k])}" for k in keys)
        out.append(("[model]", f"LightGBM refuses {together} together: {refusal(params)}",
                    f"see {LIGHTGBM_DOCS}"))
    return out


@contextlib.contextmanager
def _native_stderr_silenced():
    """LightGBM's C++ code writes "[LightGBM] [Fatal] ..." to file descriptor 2 before it raises;
    the RetrainError says it better, so that line is dropped."""
    try:
        sys.stderr.flush()
        saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    except (OSError, ValueError):
        yield
        return
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


@dataclass(frozen=True)
class Settings:
    data_dir: Path
    artifacts_dir: Path
    config_path: Path | None
    feature_version: str = DEFAULTS["features"]["version"]
    default_exchange: str = DEFAULTS["run"]["exchange"]
    toml: dict[str, Any] = field(default_factory=dict)  # the file's tables, validated

    def section(self, name: str) -> dict[str, Any]:
        """One table of retrain.toml over the built-in defaults of its keys (SCHEMA)."""
        value = self.toml.get(name, {})
        return {**DEFAULTS.get(name, {}), **(value if isinstance(value, dict) else {})}


def find_config(explicit: str | os.PathLike | None = None) -> Path | None:
    """The config file: --config, else $RETRAIN_CONFIG, else ./retrain.toml if it exists."""
    if explicit:
        path = Path(explicit)
        if not path.is_file():
            raise RetrainError(f"config file not found: {path}", hint="pass an existing file to --config")
        return path
    env = os.environ.get(CONFIG_ENV)
    if env:
        path = Path(env)
        if not path.is_file():
            raise RetrainError(f"config file not found: {path} (from ${CONFIG_ENV})",
                               hint=f"point ${CONFIG_ENV} at an existing retrain.toml or unset it")
        return path
    path = Path(DEFAULT_CONFIG)
    return path if path.is_file() else None


def read_toml(path: Path | None) -> dict[str, Any]:
    if path is None:
        return {}
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise RetrainError(f"{path}: not valid TOML ({exc})", hint="fix the file and rerun") from None
    except UnicodeDecodeError as exc:
        raise RetrainError(f"{path}: not UTF-8 text (byte {exc.start}), so not a TOML file",
                           hint="save it as UTF-8, or write a fresh one with `retrain init --force`") from None


def load_settings(
    data_dir: str | os.PathLike | None = None,
    artifacts_dir: str | os.PathLike | None = None,
    config: str | os.PathLike | None = None,
) -> Settings:
    """Resolve settings. Store paths: option > $RETRAIN_DATA_DIR / $RETRAIN_ARTIFACTS_DIR >
    retrain.toml [store] > ``data/`` and ``artifacts/`` in the current directory. The file is
    validated against SCHEMA first (RetrainError on any unknown key or invalid value); without
    one, the built-in defaults (SCHEMA, the values of ``retrain init``'s file) apply."""
    path = find_config(config)
    toml = validate_config(read_toml(path), source=str(path) if path else DEFAULT_CONFIG)
    store, features, run = ({**DEFAULTS[name], **toml.get(name, {})} for name in ("store", "features", "run"))
    data = data_dir or os.environ.get(DATA_DIR_ENV) or store["data_dir"]
    artifacts = artifacts_dir or os.environ.get(ARTIFACTS_DIR_ENV) or store["artifacts_dir"]
    version = features["version"]
    exchange = run["exchange"]
    return Settings(
        data_dir=Path(data),
        artifacts_dir=Path(artifacts),
        config_path=path,
        feature_version=version,
        default_exchange=exchange,
        toml=toml,
    )


def bump_version(path: Path | None, today: str) -> tuple[str, str, str]:
    """vN -> vN+1 in retrain.toml's [features] version, with a dated history comment above it.
    Returns (old, new, the file's new text), comments and layout kept; the caller writes it (the
    Flow layer, through the store's atomic write), so a failed check changes nothing."""
    if path is None or not Path(path).is_file():
        raise RetrainError("--bump-version needs a retrain.toml to record the new version in",
                           hint="create one (`retrain init`) or pass --config")
    text = Path(path).read_text(encoding="utf-8")
    lines = text.splitlines(keepends=True)
    section, hit = None, None
    for i, line in enumerate(lines):
        stripped = line.strip()
        if stripped.startswith("[") and stripped.endswith("]"):
            section = stripped.strip("[]").strip()
        elif section == "features" and re.match(r"^version\s*=", stripped):
            hit = i
            break
    if hit is None:
        raise RetrainError(f"{path}: no `version = \"vN\"` line under [features]",
                           hint='add `[features]` with `version = "v1"` and rerun')
    old = check_version(read_toml(Path(path)).get("features", {}).get("version", ""))
    new = f"v{int(old[1:]) + 1}"
    indent = lines[hit][: len(lines[hit]) - len(lines[hit].lstrip())]
    lines[hit] = f'{indent}version = "{new}"\n'
    lines.insert(hit, f"{indent}# - {new}: bumped by `retrain run --bump-version` ({today}); {old} kept on disk\n")
    return old, new, "".join(lines)


def set_values(path: Path | None, values: dict[str, dict[str, Any]], note: str) -> tuple[str, dict]:
    """retrain.toml's text with ``values`` ({section: {key: value}}) written in place, comments
    and layout kept: a key's line gets its new value (its trailing comment stays), a missing key
    is added at the end of its section, a missing section at the end of the file; above the
    first changed line of each section goes the comment ``# <note>: key old -> new, ...``.
    Returns (the new text, {section: {key: (old, new)}} of what changes); the caller writes it
    (atomically), after the check here that the text reads back to ``values`` and validates."""
    if path is None or not Path(path).is_file():
        raise RetrainError("no retrain.toml to write the settings into",
                           hint="create one (`retrain init`) or pass --config")
    path = Path(path)
    text = path.read_text(encoding="utf-8")
    current = read_toml(path)
    changes = {sec: {k: (current.get(sec, {}).get(k, DEFAULTS.get(sec, {}).get(k)), v) for k, v in kv.items()
                     if current.get(sec, {}).get(k, DEFAULTS.get(sec, {}).get(k)) != v}
               for sec, kv in values.items()}
    changes = {sec: kv for sec, kv in changes.items() if kv}
    lines = text.splitlines(keepends=True)
    if lines and not lines[-1].endswith("\n"):
        lines[-1] += "\n"
    for section, kv in changes.items():
        comment = f"# {note}: " + ", ".join(f"{k} {_toml_value(a)} -> {_toml_value(b)}" for k, (a, b) in kv.items())
        header = next((i for i, line in enumerate(lines) if line.strip() == f"[{section}]"), None)
        if header is None:
            lines += ["\n", f"[{section}]\n", comment + "\n"] + [f"{k} = {_toml_value(b)}\n" for k, (_, b) in kv.items()]
            continue
        end = next((i for i in range(header + 1, len(lines)) if lines[i].strip().startswith("[")), len(lines))
        first = None
        for key, (_, new) in kv.items():
            pattern = re.compile(rf'^(\s*{re.escape(key)}\s*=\s*)("[^"]*"|\[[^\]]*\]|[^\s#]+)(.*)$', re.S)
            hit = next((i for i in range(header + 1, end) if pattern.match(lines[i])), None)
            if hit is None:
                last = max((i for i in range(header + 1, end) if lines[i].strip() and
                            not lines[i].lstrip().startswith("#")), default=header)
                lines.insert(last + 1, f"{key} = {_toml_value(new)}\n")
                hit, end = last + 1, end + 1
            else:
                lines[hit] = pattern.sub(lambda m, v=new: m.group(1) + _aligned(_toml_value(v), m), lines[hit])
            first = hit if first is None else min(first, hit)
        indent = lines[first][: len(lines[first]) - len(lines[first].lstrip())]
        lines.insert(first, f"{indent}{comment}\n")
    out = "".join(lines)
    parsed = tomllib.loads(out)
    wrong = [f"[{s}] {k}" for s, kv in values.items() for k, v in kv.items() if parsed.get(s, {}).get(k) != v]
    if wrong:  # pragma: no cover - a layout this editor does not handle
        raise RetrainError(f"{path}: could not write {', '.join(wrong)} in place",
                           hint="edit the file by hand with the values shown")
    validate_config(parsed, source=str(path))
    return out, changes


def _aligned(value: str, m: re.Match) -> str:
    """``value`` in place of a key line's old value, its trailing comment kept in its column."""
    rest = m.group(3)
    comment = rest.lstrip(" \t")
    if not comment.startswith("#"):
        return value + rest
    width = len(m.group(2)) + len(rest) - len(comment)
    return value + " " * max(1, width - len(value)) + comment


def default_config_text() -> str:
    """The documented retrain.toml that `retrain init` writes (retrain/default.toml, packaged)."""
    return resources.files("retrain").joinpath("default.toml").read_text(encoding="utf-8")
