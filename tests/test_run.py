"""`retrain run` end to end on a small sample market: the weekly cycle, the guide's options and
errors, one run at a time, and a run killed mid-way that resumes to the same result."""

from __future__ import annotations

import datetime as dt
import json
import shutil
import signal
from pathlib import Path

import polars as pl
import pytest

from retrain import sample
from retrain.registry import Registry
from retrain.store import Store
from tests.conftest import run_cli, run_cli_here

END = dt.date(2025, 10, 17)  # a Friday; the sample's last session on all three exchanges
THU = dt.date(2025, 10, 16)
NEXT = dt.date(2025, 10, 20)
CONFIG = """
[features]
# - v1: initial feature set
version = "v1"

[run]
exchange = "NASDAQ"
"""


@pytest.fixture(scope="module")
def market() -> tuple[pl.DataFrame, pl.DataFrame]:
    return sample.generate(symbols=120, days=200, seed=11, end=END)


def _seed_store(root: Path, market, until: dt.date = THU, exchanges=None) -> Store:
    bars, syms = market
    if exchanges:
        bars, syms = bars.filter(pl.col("exchange").is_in(exchanges)), syms.filter(pl.col("exchange").is_in(exchanges))
    store = Store(root)
    with store.lock("test"):
        store.upsert_bars(bars.filter(pl.col("date") <= until))
        store.upsert_symbols(syms)
    return store


@pytest.fixture
def project(tmp_path: Path, market) -> Path:
    (tmp_path / "retrain.toml").write_text(CONFIG.lstrip())
    _seed_store(tmp_path / "data", market)
    return tmp_path


def _summary(result) -> dict:
    return json.loads(result.stdout.strip().splitlines()[-1])


def _features(root: Path, version: str) -> pl.DataFrame:
    return (Store(root / "data").scan_table("features", version).collect()
            .sort("exchange", "symbol", "trade_date"))


def test_weekly_cycle_incremental_bump_predict_rollback(project, market, cli):
    first = cli("run", "--as-of", str(THU), "--json")
    assert first.exit_code == 0, first.output
    out = first.output
    steps = ["STEP 1: VERIFYING PREREQUISITES", "STEP 2: CALCULATING TECHNICAL INDICATORS",
             "STEP 3: DETERMINING FEATURE GENERATION RANGE", "STEP 4: GENERATING FEATURES", "STEP 5: UPDATING LABELS",
             "STEP 6: TRAINING MODEL", "STEP 7: RUNNING BACKTEST VALIDATION", "RETRAINING COMPLETE!", "Next steps:"]
    assert [out.index(s) for s in steps] == sorted(out.index(s) for s in steps)  # the guide's order
    assert "⚠ Low RSI coverage" in out  # a fresh store has no indicators: warned, then computed
    assert "BACKTEST RESULTS" in out and "Label coverage" in out and "\r" not in out and "\033[" not in out
    s1 = _summary(first)
    assert s1["ok"] and s1["promoted"] and s1["exchange"] == "NASDAQ" and s1["feature_version"] == "v1"
    assert s1["backtest"]["verdict"] in {"EXCELLENT", "GOOD", "MARGINAL", "POOR", "INCONCLUSIVE"}
    assert Path(s1["model_path"]).name == "intraday_model_v1.joblib"
    before = _features(project, "v1")
    assert before["trade_date"].max() == END  # snapshots for the next session, from data before it

    # one more session arrives
    bars, _ = market
    new = project / "incoming" / "2025-10-17.csv"
    new.parent.mkdir()
    bars.filter(pl.col("date") == END).drop("ingest_id", strict=False).write_csv(new)
    assert cli("ingest", str(new), "--format", "long").exit_code == 0

    second = cli("run", "--as-of", str(END), "--json")
    assert second.exit_code == 0, second.output
    s2 = _summary(second)
    # automatic promotion: the routine did not change, so its replay would be this very backtest
    assert s2["promoted"] and "same training routine on fresher data" in s2["promotion_reason"]
    # incremental: only the new session (and the one whose serving bar just arrived) is rebuilt
    assert s2["steps"]["features"]["ranges"]["NASDAQ"] == [str(END), str(NEXT)]
    assert s2["steps"]["features"]["sessions"] == 2
    after = _features(project, "v1")
    assert after.filter(pl.col("trade_date") < END).equals(before.filter(pl.col("trade_date") < END))
    assert after["trade_date"].max() == NEXT
    assert s2["training"]["window"][1] == str(END)  # trained through the newly labelled session
    # training alone on the same rows with the same routine finds that run: no duplicate
    again = cli("train", "--promote", "never")
    assert again.exit_code == 0 and f"Nothing changed since run {s2['run_id']}" in again.output

    # bump the version: v2 built from scratch, its own model; v1 stays usable
    third = cli("run", "--as-of", str(END), "--bump-version", "--skip-backtest", "--promote", "always", "--json")
    assert third.exit_code == 0, third.output
    s3 = _summary(third)
    assert s3["feature_version"] == "v2" and s3["bumped_from"] == "v1" and s3["backtest"] is None
    toml = (project / "retrain.toml").read_text()
    assert 'version = "v2"' in toml and "# - v2: bumped by `retrain run --bump-version`" in toml
    assert "# - v1: initial feature set" in toml
    assert _features(project, "v2").drop("feature_version").equals(after.drop("feature_version"))
    daytrading = project / "artifacts" / "daytrading"
    for name in ("intraday_model_v1.joblib", "intraday_model_v1_meta.json",
                 "intraday_model_v2.joblib", "intraday_model_v2_meta.json"):
        assert (daytrading / name).exists(), name
    for version in ("v1", "v2"):
        pred = cli("predict", "--version", version, "--top", "5", "--as-of", str(END))
        assert pred.exit_code == 0, pred.output
        assert f"Predictions for {NEXT} (NASDAQ)" in pred.output and f"-{version}-" in pred.output

    # roll v1 back to the first run's model
    rolled = cli("models", "rollback", "--version", "v1")
    assert rolled.exit_code == 0, rolled.output
    assert Registry(project / "artifacts").active_run("v1", "NASDAQ") == s1["run_id"]


def test_options_of_the_guide(project, cli):
    every = cli("run", "--exchange", "ALL", "--skip-backtest", "--as-of", str(THU), "--json")
    assert every.exit_code == 0, every.output
    s = _summary(every)
    assert s["exchange"] == "ALL" and s["backtest"] is None and "Skipped (--skip-backtest)" in every.output
    assert set(s["steps"]["features"]["ranges"]) == {"NASDAQ", "NYSE", "TSE"}
    assert (project / "artifacts" / "daytrading" / "intraday_model_v1_ALL.joblib").exists()
    incremental = _features(project, "v1")

    nyse = cli("run", "--exchange", "nyse", "--training-days", "120", "--backtest-days", "20", "--min-rows", "300",
               "--full-rebuild", "--skip-indicators", "--promote", "never", "--as-of", str(THU), "--json")
    assert nyse.exit_code == 0, nyse.output
    s = _summary(nyse)
    assert s["exchange"] == "NYSE" and not s["promoted"] and s["model_path"] is None
    # the next steps name this exchange and this run, never the default exchange or a placeholder
    assert f"retrain models promote {s['run_id']}`" in nyse.output
    assert f"retrain predict --exchange NYSE --as-of {THU} --model {s['run_id']} --top 20" in nyse.output
    assert s["steps"]["indicators"] == {"skipped": True} and "Skipped (--skip-indicators)" in nyse.output
    assert s["steps"]["feature_range"]["mode"] == "full rebuild" and "Mode: full rebuild" in nyse.output
    start, end = (dt.date.fromisoformat(d) for d in s["training"]["window"])
    assert (end - start).days == 119 and end == THU
    assert s["backtest"]["start"] >= str(THU - dt.timedelta(days=19)) and s["backtest"]["end"] == str(THU)
    assert "Training window: 120 days" in nyse.output and "Minimum rows: 300" in nyse.output
    assert not (project / "artifacts" / "daytrading" / "intraday_model_v1_NYSE.joblib").exists()  # --promote never
    assert _features(project, "v1").equals(incremental)  # a full rebuild reproduces the incremental build

    # automatic promotion against an active model trained with another routine: it is replayed
    first = _summary(cli("run", "--exchange", "NYSE", "--backtest-days", "20", "--as-of", str(THU), "--json"))
    assert first["promoted"] and first["promotion_reason"] == "no active model yet"
    other = _summary(cli("run", "--exchange", "NYSE", "--training-days", "120", "--backtest-days", "20",
                         "--as-of", str(THU), "--json"))
    assert "out-of-sample sessions: daily net return" in other["promotion_reason"]
    assert "same training routine" not in other["promotion_reason"]


def test_errors_say_what_to_do_and_change_nothing(tmp_path, market, cli):
    (tmp_path / "retrain.toml").write_text(CONFIG.lstrip())
    empty = cli("run", "--as-of", str(THU))
    assert empty.exit_code == 1 and "No symbols found for exchange NASDAQ" in empty.output
    assert "none (the store is empty)" in empty.output

    _seed_store(tmp_path / "data", market, exchanges=["NASDAQ", "NYSE"])
    unknown = cli("run", "--exchange", "LSE", "--as-of", str(THU))
    assert unknown.exit_code == 1 and "unknown exchange 'LSE'" in unknown.output
    absent = cli("run", "--exchange", "TSE", "--as-of", str(THU), "--json")
    assert absent.exit_code == 1
    assert "No symbols found for exchange TSE" in absent.output and "exchanges with data: NASDAQ, NYSE" in absent.output
    assert json.loads(absent.stdout.strip().splitlines()[-1])["ok"] is False

    stale = cli("run", "--as-of", "2025-11-20")
    assert stale.exit_code == 1
    assert f"the last bar is from {THU}" in stale.output and "retrain ingest" in stale.output

    store = Store(tmp_path / "data")
    bars_before = store.scan_bars().collect().sort("exchange", "symbol", "date")
    few = cli("run", "--as-of", str(THU), "--min-rows", "10000000")
    assert few.exit_code == 1 and "Insufficient training samples" in few.output
    assert "--training-days" in few.output and "--full-rebuild" not in few.output  # a rebuild adds no history
    assert not (tmp_path / "artifacts" / "daytrading" / "intraday_model_v1.joblib").exists()
    # bars are as they were (indicators filled in); the run resumes with a feasible setting
    assert store.scan_bars().collect().sort("exchange", "symbol", "date").select(
        "symbol", "date", "open", "close", "volume").equals(bars_before.select("symbol", "date", "open", "close", "volume"))
    again = cli("run", "--as-of", str(THU), "--skip-backtest")
    assert again.exit_code == 0, again.output
    assert "Features v1 are up to date" in again.output  # nothing rebuilt: the failed run's work is kept

    never = cli("run", "--bump-version", "--promote", "never", "--as-of", str(THU))
    assert never.exit_code == 1 and "without an active model" in never.output

    # a window shorter than one block of the record, and a window without labelled sessions
    short = cli("run", "--as-of", str(THU), "--backtest-days", "3")
    assert short.exit_code == 1 and "shorter than one block" in short.output and "--backtest-days 7" in short.output
    later = cli("backtest", "--start-date", "2026-01-05", "--end-date", "2026-01-30")
    assert later.exit_code == 1 and "no labelled sessions between 2026-01-05 and 2026-01-30" in later.output
    # a scope with too few symbols to rank
    few_syms = tmp_path / "few"
    bars, syms = market
    keep = syms.filter(pl.col("exchange") == "NYSE").head(4)
    _seed_store(few_syms / "data", (bars.join(keep.select("symbol", "exchange"), on=["symbol", "exchange"]), keep))
    tiny = cli("--data-dir", str(few_syms / "data"), "run", "--exchange", "NYSE", "--as-of", str(THU))
    assert tiny.exit_code == 1 and "too few symbols to rank: 4" in tiny.output
    assert not (few_syms / "data" / "features").exists()  # refused before any work

    bad_bump = tmp_path / "other.toml"
    bad_bump.write_text('[run]\nexchange = "NASDAQ"\n')
    refused = cli("--config", str(bad_bump), "run", "--bump-version", "--as-of", str(THU))
    assert refused.exit_code == 1 and "no `version = \"vN\"` line under [features]" in refused.output


def test_a_second_run_is_refused_while_one_runs(project, cli):
    holder = Store(project / "data")
    with holder.lock("retrain run --exchange NASDAQ"):
        busy = cli("run", "--as-of", str(THU))
    assert busy.exit_code == 3
    assert "locked by pid" in busy.output and ".retrain.lock" in busy.output and "retrain run" in busy.output


def test_killed_run_resumes_to_the_same_features_and_model(tmp_path, market):
    """Kill a --bump-version run in the middle of writing v2's features: v1 stays active and
    loadable, retrain.toml still says v1; the rerun gives what an uninterrupted run gives."""
    a = tmp_path / "a"
    a.mkdir()
    (a / "retrain.toml").write_text(CONFIG.lstrip())
    _seed_store(a / "data", market)

    def run(root: Path, *args: str, fault: str | None = None, here: bool = False):
        """The run in a process of its own, or (``here``) in this one, remembering nothing: only the
        killed run needs its own."""
        env = {"RETRAIN_ARTIFACTS_DIR": str(root / "artifacts"), "RETRAIN_CONFIG": str(root / "retrain.toml")}
        if fault:
            env["RETRAIN_FAULT"] = fault
        return (run_cli_here if here else run_cli)(["run", "--as-of", str(THU), "--skip-backtest", *args],
                                                   root / "data", env)

    assert run(a, here=True).returncode == 0
    b = tmp_path / "b"
    shutil.copytree(a, b)

    killed = run(a, "--bump-version", fault="features.between_batches:kill")
    assert killed.returncode == -signal.SIGKILL
    assert "STEP 4: GENERATING FEATURES" in killed.stdout
    assert 'version = "v1"' in (a / "retrain.toml").read_text()
    reg = Registry(a / "artifacts")
    assert reg.load_active("v1", "NASDAQ").meta["run_id"] == reg.active_run("v1", "NASDAQ")
    Store(a / "data").scan_bars().collect()  # every partition readable

    resumed = run(a, "--bump-version", here=True)
    assert resumed.returncode == 0, resumed.stderr
    uninterrupted = run(b, "--bump-version", here=True)
    assert uninterrupted.returncode == 0, uninterrupted.stderr
    assert _features(a, "v2").equals(_features(b, "v2"))
    models = [Registry(root / "artifacts").load_active("v2", "NASDAQ") for root in (a, b)]
    assert models[0].model.model_to_string() == models[1].model.model_to_string()
    assert models[0].meta["cv"] == models[1].meta["cv"]


def test_python_api_for_schedulers(project, capsys):
    import retrain

    result = retrain.run(exchange="TSE", training_days=120, min_rows=200, skip_backtest=True, as_of=THU,
                         data_dir=str(project / "data"), artifacts_dir=str(project / "artifacts"),
                         config=str(project / "retrain.toml"))
    assert isinstance(result, retrain.RunResult)
    assert result.exchange == "TSE" and result.promoted and result.backtest is None
    assert Path(result.model_path).name == "intraday_model_v1_TSE.joblib" and Path(result.model_path).exists()
    assert result.to_dict()["training"]["window"][1] == str(THU)
    assert "RETRAINING COMPLETE!" in capsys.readouterr().out


def test_python_api_runs_silently_with_quiet(project, capsys, caplog):
    import logging

    import retrain

    with caplog.at_level(logging.INFO, logger="retrain"):
        result = retrain.run(exchange="TSE", training_days=120, min_rows=200, skip_backtest=True, as_of=THU,
                             data_dir=str(project / "data"), artifacts_dir=str(project / "artifacts"),
                             config=str(project / "retrain.toml"), quiet=True)
    out = capsys.readouterr()
    assert out.out == "" and result.promoted
    logged = [r.getMessage() for r in caplog.records if r.name == "retrain"]
    assert "STEP 6: TRAINING MODEL" in logged and any("RETRAINING COMPLETE!" in m for m in logged)
    assert not any("\x1b[" in m for m in logged)
