"""retrain.toml is validated when it is read (one schema), `retrain init` writes the documented
one, and a missing file is announced by the CLI only."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import pytest

from retrain import training
from retrain.config import DEFAULTS, SCHEMA, default_config_text, load_settings, validate_config
from retrain.errors import RetrainError

ROOT = Path(__file__).resolve().parents[1]
NOTE = "note: no retrain.toml in"


def _load(tmp_path: Path, monkeypatch, text: str):
    """load_settings() from tmp_path holding ``text`` as ./retrain.toml."""
    monkeypatch.delenv("RETRAIN_CONFIG", raising=False)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "retrain.toml").write_text(text, encoding="utf-8")
    return load_settings(data_dir=tmp_path / "data", artifacts_dir=tmp_path / "artifacts")


def _refused(tmp_path: Path, monkeypatch, text: str) -> RetrainError:
    with pytest.raises(RetrainError) as info:
        _load(tmp_path, monkeypatch, text)
    return info.value


def _with(section: str, line: str) -> str:
    """The documented config with ``line`` replacing its key's line in ``section`` (or added)."""
    key = line.split("=")[0].strip()
    out, current, done = [], None, False
    for raw in default_config_text().splitlines():
        stripped = raw.strip()
        if stripped.startswith("["):
            if current == section and not done:
                out.append(line)
                done = True
            current = stripped.strip("[]")
        elif current == section and stripped.split("=")[0].strip() == key and "=" in stripped:
            out.append(line)
            done = True
            continue
        out.append(raw)
    if not done:
        out.append(line)
    return "\n".join(out) + "\n"


# ------------------------------------------------------------ unknown names
def test_unknown_key_gets_the_closest_valid_key(tmp_path, monkeypatch):
    err = _refused(tmp_path, monkeypatch, "[training]\ntraining_dayz = 90\n")
    assert err.message == 'retrain.toml [training]: unknown key "training_dayz" (did you mean "training_days"?)'
    assert err.hint.startswith("valid keys in [training]: training_days, min_rows, cv_folds")


def test_unknown_key_through_the_cli_is_one_message_and_exit_1(cli, tmp_path):
    (tmp_path / "retrain.toml").write_text(_with("training", "training_dayz = 90"))
    r = cli("status")
    assert r.exit_code == 1
    assert r.stderr.startswith('error: retrain.toml [training]: unknown key "training_dayz" '
                               '(did you mean "training_days"?)\n  -> valid keys in [training]: ')
    assert r.stdout == "" and "Traceback" not in r.output


def test_unknown_section_and_keys_outside_or_in_the_wrong_section(tmp_path, monkeypatch):
    err = _refused(tmp_path, monkeypatch, "[trainig]\ntraining_days = 90\n")
    assert err.message == "retrain.toml: unknown section [trainig] (did you mean [training]?)"
    assert "[store], [features], [run], [sample], [training], [backtest], [monitor], [sweep], [model]" in err.hint
    err = _refused(tmp_path, monkeypatch, 'exchange = "NYSE"\n')
    assert err.message == 'retrain.toml: "exchange" is outside any section (it belongs in [run])'
    err = _refused(tmp_path, monkeypatch, "[training]\nlearning_rate = 0.1\n")
    assert err.message == 'retrain.toml [training]: unknown key "learning_rate" (it belongs in [model])'


# --------------------------------------------------------- types and values
def test_wrong_type_names_key_value_and_expectation(tmp_path, monkeypatch):
    err = _refused(tmp_path, monkeypatch, '[training]\ntraining_days = "ninety"\n')
    assert err.message == 'retrain.toml [training]: training_days = "ninety": expected an integer >= 1 and <= 36500'
    assert err.hint == "training_days: calendar days of the rolling training window (default 90)"


def test_wrong_type_through_the_cli_has_no_traceback(cli, tmp_path):
    (tmp_path / "retrain.toml").write_text(_with("training", 'training_days = "ninety"'))
    r = cli("run", "--as-of", "2025-10-17")
    assert r.exit_code == 1 and "Traceback" not in r.output
    assert 'training_days = "ninety": expected an integer >= 1' in r.stderr
    assert "Verifying" not in r.output  # caught before any work


@pytest.mark.parametrize("section, line, expected", [
    ("training", "top_n = true", "top_n = true: expected an integer >= 1"),
    ("sample", "seed = false", "seed = false: expected an integer >= 0"),
    ("model", "num_threads = true", "num_threads = true: expected an integer >= 0"),
    ("model", "learning_rate = true", "learning_rate = true: expected a number > 0"),
])
def test_a_boolean_is_not_a_number(tmp_path, monkeypatch, section, line, expected):
    err = _refused(tmp_path, monkeypatch, f"[{section}]\n{line}\n")
    assert err.message == f"retrain.toml [{section}]: {expected}"


def test_num_leaves_is_checked_when_the_file_is_read(tmp_path, monkeypatch):
    err = _refused(tmp_path, monkeypatch, '[model]\nnum_leaves = "seven"\n')
    assert err.message == 'retrain.toml [model]: num_leaves = "seven": expected an integer >= 2'
    assert err.hint == "num_leaves: most leaves per tree (default 7)"


@pytest.mark.parametrize("section, line, expected", [
    ("training", "training_days = 0", "expected an integer >= 1 and <= 36500"),
    ("training", "embargo = -1", "expected an integer >= 0"),
    ("training", "validation_fraction = 1", "expected a number > 0 and < 1"),
    ("training", "validation_fraction = 0.0", "expected a number > 0 and < 1"),
    ("training", "validation_fraction = nan", "expected a number > 0 and < 1"),
    ("training", 'target = "log"', 'expected "excess" or "raw"'),
    ("training", "num_boost_round = 2.5", "expected an integer >= 1"),
    ("model", "learning_rate = 0", "expected a number > 0"),
    ("model", "num_leaves = 1", "expected an integer >= 2"),
    ("model", "feature_fraction = 1.5", "expected a number > 0 and <= 1"),
    ("model", "lambda_l2 = -0.1", "expected a number >= 0"),
    ("model", 'seed = "42"', "expected an integer"),
    ("features", 'version = "2"', "expected a feature version v<N> (v1, v2, ...)"),
    ("store", 'data_dir = ""', "expected a non-empty path"),
    ("store", "data_dir = 3", "expected a non-empty path"),
])
def test_out_of_range_values_are_refused(tmp_path, monkeypatch, section, line, expected):
    err = _refused(tmp_path, monkeypatch, f"[{section}]\n{line}\n")
    assert err.message.startswith(f"retrain.toml [{section}]: {line.split(' =')[0]} = ")
    assert err.message.endswith(expected)


def test_every_problem_is_named_at_once(tmp_path, monkeypatch):
    err = _refused(tmp_path, monkeypatch, '[training]\ntraining_days = "ninety"\n[model]\nnum_leaves = "seven"\n')
    assert err.message == ('retrain.toml has 2 problems:\n'
                           '  [training]: training_days = "ninety": expected an integer >= 1 and <= 36500\n'
                           '  [model]: num_leaves = "seven": expected an integer >= 2')


def test_ints_are_numbers_and_values_are_normalized(tmp_path, monkeypatch):
    s = _load(tmp_path, monkeypatch, '[model]\nlearning_rate = 1\n[training]\ntarget = "RAW"\n'
                                     '[run]\nexchange = "xnys"\n')
    assert s.section("model")["learning_rate"] == 1.0 and isinstance(s.section("model")["learning_rate"], float)
    assert s.section("training")["target"] == "raw" and s.default_exchange == "NYSE"
    assert s.section("model")["num_leaves"] == 7  # absent keys take the built-in default
    for name, code in [("all", "ALL"), (" tsx ", "TSE"), ("Nasdaq", "NASDAQ")]:
        assert _load(tmp_path, monkeypatch, f'[run]\nexchange = "{name}"\n').default_exchange == code


def test_an_unknown_exchange_is_refused(tmp_path, monkeypatch):
    err = _refused(tmp_path, monkeypatch, '[run]\nexchange = "LSE"\n')
    assert err.message.startswith('retrain.toml [run]: exchange = "LSE": expected NASDAQ, NYSE, TSE or ALL')


def test_a_config_named_by_option_is_named_in_the_message(tmp_path, monkeypatch):
    path = tmp_path / "other.toml"
    path.write_text("[training]\ncv_folds = 0\n")
    with pytest.raises(RetrainError, match=r"other\.toml \[training\]: cv_folds = 0: expected an integer >= 1"):
        load_settings(config=path)


def test_the_python_api_is_checked_too(tmp_path):
    import retrain

    (tmp_path / "retrain.toml").write_text("[training]\ntraining_dayz = 90\n")
    with pytest.raises(RetrainError, match="did you mean \"training_days\""):
        retrain.run(config=tmp_path / "retrain.toml", data_dir=tmp_path / "data", artifacts_dir=tmp_path / "art")


# ------------------------------------------------------------ LightGBM keys
def test_unknown_model_key_is_suggested_from_lightgbms_parameters(tmp_path, monkeypatch):
    err = _refused(tmp_path, monkeypatch, "[model]\nnum_leavs = 5\n")
    assert err.message == 'retrain.toml [model]: unknown key "num_leavs" (did you mean "num_leaves"?)'
    assert "any other LightGBM parameter" in err.hint
    err = _refused(tmp_path, monkeypatch, "[model]\nmax_dept = 5\n")  # not one of ours: LightGBM's list
    assert err.message == 'retrain.toml [model]: unknown key "max_dept" (did you mean "max_depth"?)'


def test_other_lightgbm_parameters_are_accepted_and_reach_the_model(tmp_path, monkeypatch):
    s = _load(tmp_path, monkeypatch, _with("model", "max_depth = 5") + "extra_trees = true\n")
    assert s.section("model")["max_depth"] == 5 and s.section("model")["extra_trees"] is True
    params = training.TrainConfig.from_settings(s).lgb_params()
    assert params["max_depth"] == 5 and params["num_leaves"] == 7 and params["deterministic"] is True


@pytest.mark.parametrize("line, expected", [
    ('max_depth = "abc"', 'max_depth = "abc" is refused by LightGBM: Parameter max_depth should be of type int'),
    ("max_depth = true", "max_depth = true is refused by LightGBM"),
    ("lambda_l1 = -1", "lambda_l1 = -1 is refused by LightGBM: Check failed: (lambda_l1) >= (0.0)"),
    ('objective = "regresion"', 'objective = "regresion": expected a regression objective (regression, '
                                'regression_l1, huber, fair, quantile, mape)'),
    ('objective = "binary"', 'objective = "binary": expected a regression objective'),
    ('metric = "auc"', 'metric = "auc": auc is not a metric of a regression'),
    ('metric = ["l1", "ndcg"]', 'metric = ["l1", "ndcg"]: ndcg is not a metric of a regression'),
    ('metric = "None"', 'metric = "None": None is not a metric of a regression'),
    ("min_child_samples = 20", '"min_child_samples" is LightGBM\'s other name for "min_data_in_leaf"'),
    ("verbose = 1", "verbose is set by retrain (verbosity = -1 for every model)"),
    ("n_estimators = 50", "n_estimators is set by retrain from [training] num_boost_round"),
])
def test_lightgbm_judges_the_other_parameters(tmp_path, monkeypatch, capfd, line, expected):
    err = _refused(tmp_path, monkeypatch, f"[model]\n{line}\n")
    assert err.message.startswith("retrain.toml [model]: ") and expected in err.message
    assert " at /" not in err.message  # LightGBM's source location is dropped
    assert "[LightGBM]" not in capfd.readouterr().err


def test_regression_objectives_and_metrics_are_accepted(tmp_path, monkeypatch):
    s = _load(tmp_path, monkeypatch, _with("model", 'objective = "huber"') + 'metric = "l1"\n')
    assert s.section("model")["objective"] == "huber" and s.section("model")["metric"] == "l1"


def test_schema_model_keys_are_lightgbm_parameter_names():
    from lightgbm.basic import _ConfigAliases

    assert set(SCHEMA["model"]) <= set(_ConfigAliases._get_all_param_aliases())


# -------------------------------------------------------------- defaults
def test_shipped_config_is_the_packaged_default_and_both_validate():
    repo = (ROOT / "retrain.toml").read_text(encoding="utf-8")
    packaged = default_config_text()
    assert repo == (ROOT / "retrain" / "default.toml").read_text(encoding="utf-8")
    assert repo == packaged, "retrain.toml and retrain/default.toml drifted apart: keep them the same text"
    values = validate_config(tomllib.loads(packaged))
    assert values == DEFAULTS, "the schema's defaults differ from the documented config's values"
    assert {s: list(v) for s, v in values.items()} == {s: list(v) for s, v in SCHEMA.items()}  # all, in order


def test_defaults_come_from_the_schema():
    cfg = training.TrainConfig()
    assert {k: getattr(cfg, k) for k in SCHEMA["training"]} == DEFAULTS["training"]
    assert cfg.params == DEFAULTS["model"]


def test_options_are_checked_against_the_schema(tmp_path, monkeypatch):
    s = _load(tmp_path, monkeypatch, "[training]\nmin_rows = 10\n")
    cfg = training.TrainConfig.from_settings(s, training_days=30, min_rows=None)
    assert (cfg.training_days, cfg.min_rows, cfg.cv_folds) == (30, 10, 5)
    with pytest.raises(RetrainError, match=r"--training-days 0: expected an integer >= 1"):
        training.TrainConfig.from_settings(s, training_days=0)


# --------------------------------------------------- no config, and init
def test_no_config_is_noted_on_stderr_by_the_cli_only(cli, tmp_path, capsys):
    r = cli("query", "SELECT 1 AS one", "--format", "json")
    assert r.exit_code == 0
    assert r.stderr.startswith(f"{NOTE} {tmp_path}; using built-in defaults (`retrain init` writes a documented one)")
    assert json.loads(r.stdout) == [{"one": 1}]  # stdout stays clean
    s = load_settings()  # the Python API is silent
    assert s.config_path is None and s.section("training") == DEFAULTS["training"]
    assert capsys.readouterr() == ("", "")


def test_no_note_when_a_config_exists(cli, tmp_path):
    (tmp_path / "retrain.toml").write_text('[run]\nexchange = "NYSE"\n')
    r = cli("query", "SELECT 1 AS one", "--format", "csv")
    assert r.exit_code == 0 and NOTE not in r.output


def test_init_writes_a_documented_config_and_refuses_to_overwrite(cli, tmp_path):
    r = cli("init")
    path = tmp_path / "retrain.toml"
    assert r.exit_code == 0 and f"Wrote {path}" in r.stdout and "retrain run" in r.stdout
    assert path.read_text(encoding="utf-8") == default_config_text()
    assert load_settings(config=path).section("model") == DEFAULTS["model"]
    assert NOTE not in cli("status").output

    path.write_text('[run]\nexchange = "TSE"\n')
    r = cli("init")
    assert r.exit_code == 1 and "Traceback" not in r.output
    assert r.stderr == ("error: retrain.toml already exists; not overwritten\n"
                        "  -> edit it, or pass --force to replace it with the documented defaults\n")
    assert path.read_text() == '[run]\nexchange = "TSE"\n'
    r = cli("init", "--force")
    assert r.exit_code == 0 and path.read_text(encoding="utf-8") == default_config_text()


def test_init_into_a_new_directory(cli, tmp_path):
    r = cli("init", "project/sub")
    target = tmp_path / "project" / "sub" / "retrain.toml"
    assert r.exit_code == 0 and target.is_file()
    assert validate_config(tomllib.loads(target.read_text(encoding="utf-8"))) == DEFAULTS
    assert not (tmp_path / "retrain.toml").exists()


def test_a_config_that_is_not_utf8_and_windows_past_a_century_are_refused(cli, tmp_path):
    (tmp_path / "retrain.toml").write_bytes(b"\xff\xfe[run]\n")
    r = cli("status")
    assert r.exit_code == 1 and "retrain.toml: not UTF-8 text (byte 0)" in r.stderr and "Traceback" not in r.output
    (tmp_path / "retrain.toml").write_text(_with("training", "training_days = 1000000"))
    r = cli("status")
    assert r.exit_code == 1 and "training_days" in r.stderr
    r = cli("run", "--training-days", "1000000")
    assert r.exit_code == 2 and "1<=x<=36500" in r.output
