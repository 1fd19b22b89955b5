"""`retrain sweep` on a tiny no-signal market (4 trials): a LocalCluster of 2 processes, an
external `dask scheduler` with two `dask worker`s (one killed mid-sweep), a sweep killed and
resumed, all giving the same trials and metrics; the Deflated Sharpe Ratio against hand-computed
values; `sweep apply`; an invalid search space and an unreachable scheduler."""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import optuna
import polars as pl
import pytest
from click.testing import CliRunner

from retrain import backtest as bt
from retrain import metrics, pipeline, steps, sweep, sweeping, training
from retrain.cli import main
from retrain.config import load_settings
from retrain.store import Store
from tests.conftest import ROOT
from tests.test_training import _market

CONFIG = """
[training]
min_rows = 100
num_boost_round = 100
early_stopping_rounds = 20

[sweep]
trials = 4
training_days = [30, 60]
"""
DAYS = "21"  # backtest window: three weekly blocks per trial
TIMEOUT = 120  # seconds any one wait below may take before the test fails


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("sweep")
    _market(root / "data", signal=False, symbols=90, days=160, seed=5)
    (root / "retrain.toml").write_text(CONFIG.lstrip())
    return root


def _env(root: Path, config: Path | None = None) -> dict[str, str]:
    return {"RETRAIN_DATA_DIR": str(root / "data"), "RETRAIN_ARTIFACTS_DIR": str(root / "artifacts"),
            "RETRAIN_CONFIG": str(config or root / "retrain.toml")}


def _cli(root: Path, *args: str, config: Path | None = None, env: dict | None = None):
    return CliRunner().invoke(main, list(args), env={**_env(root, config), **(env or {})}, catch_exceptions=False)


def _last(output: str) -> dict:
    return json.loads(output.strip().splitlines()[-1])


def _same_trials(a: dict, b: dict) -> None:
    """Two sweeps proposed the same trials, and their replays gave the same figures."""
    assert [t["params"] for t in a["trials"]] == [t["params"] for t in b["trials"]]
    for key in ("sharpe", "psr", "rank_ic", "total_return", "sharpe_ci"):
        assert [t[key] for t in a["trials"]] == [t[key] for t in b["trials"]], key


@pytest.fixture(scope="module")
def reference(project) -> tuple[dict, str]:
    """The sweep on a local cluster of two worker processes: (its --json, its console output)."""
    result = _cli(project, "sweep", "--workers", "2", "--backtest-days", DAYS, "--json")
    assert result.exit_code == 0, result.output
    return _last(result.output), result.output


def test_local_cluster_of_two_processes_finds_no_skill_on_a_no_signal_market(project, reference):
    out, console = reference
    assert set(out) == {"sweep_id", "trials", "best"}
    assert [t["trial"] for t in out["trials"]] == [0, 1, 2, 3]
    for t in out["trials"]:
        assert t["state"] == "complete" and set(t["params"]) == set(sweep.DIMENSIONS)
        assert t["params"]["training_days"] in (30, 60) and t["params"]["target"] in ("excess", "raw")
        assert 0.005 <= t["params"]["learning_rate"] <= 0.1 and 4 <= t["params"]["num_leaves"] <= 64
        assert t["sharpe_ci"][0] < t["sharpe"] < t["sharpe_ci"][1] and 0 <= t["psr"] <= 1
        assert t["rank_ic_ci"][0] < t["rank_ic"] < t["rank_ic_ci"][1] and t["worker"].startswith("tcp://127.0.0.1")
    best = out["best"]
    assert best["trial"] == max(out["trials"], key=lambda t: t["sharpe"])["trial"]
    assert {"trial", "params", "sharpe", "psr", "dsr"} <= set(best)
    # no skill to find: the best of 4 is not told apart from the best of 4 lucky ones
    assert best["distinguishable"] is False and best["dsr"] < best["psr"]
    assert "cannot be told apart from the best of 4 trials with no skill" in best["words"]
    assert best["words"] in console and "[4/4]" in console and "ETA" in console and "best so far" in console
    folder = project / "artifacts" / "daytrading" / "sweeps" / out["sweep_id"]
    rows = pl.read_parquet(folder / "trials.parquet").sort("trial")
    entry = json.loads((folder / "sweep.json").read_text())["sessions"][-1]  # Dask's own time, per trial
    assert entry["dask_trials"] == 4 and 0 < entry["dask_seconds"] < entry["trial_seconds"]
    assert rows.height == 4 and {"learning_rate", "target", "sharpe_lo", "sharpe_hi", "rank_ic_lo", "seconds",
                                 "worker"} <= set(rows.columns)
    assert rows["sharpe"].to_list() == [t["sharpe"] for t in out["trials"]]
    study = optuna.load_study(study_name=out["sweep_id"], storage=f"sqlite:///{folder / 'study.db'}")
    assert [t.state.name for t in study.trials] == ["COMPLETE"] * 4
    assert [t.value for t in study.trials] == rows["sharpe"].to_list()
    # the DSR is that of the best trial's daily returns against the spread of the four Sharpes
    preds = pl.read_parquet(folder / "predictions" / f"trial-{best['trial']}.parquet")
    daily, _ = bt.simulate(preds.drop_nulls("actual"), bt.BacktestConfig())
    assert best["dsr"] == pytest.approx(metrics.deflated_sharpe(daily["daily_return"].to_numpy(), rows["sharpe"]))
    page = (folder / "report.html").read_text()
    assert "Each metric against each setting" in page and page.count("<svg") >= 4 * 7
    assert "The best trial's tear sheet" in page and "cannot be told apart" in page


def test_a_trial_is_what_retrain_run_s_record_gives_for_its_settings(project, reference, tmp_path):
    """The best trial replayed through `retrain backtest`'s code path (the record, with its own
    num_threads from retrain.toml) gives the trial's figures exactly."""
    out, _ = reference
    best = out["best"]
    store = Store(project / "data")
    settings = load_settings(project / "data", tmp_path / "art", project / "retrain.toml")
    cfg = sweep.trial_config(training.TrainConfig.from_settings(settings), best["params"], threads=None)
    assert cfg.params["num_threads"] == 2  # the trial ran with 1
    end = pipeline.last_labelled(store, "v1", "NASDAQ")
    with store.lock("test"):
        got = pipeline.backtest(store, settings, "v1", "NASDAQ", cfg, (end - dt.timedelta(days=int(DAYS) - 1), end),
                                bt.BacktestConfig(max_positions=cfg.top_n))
    assert got.record_info["sharpe"] == best["sharpe"] and got.record_info["rank_ic"] == best["rank_ic"]
    assert got.record_info["routine"] == best["routine"]


def _reader(stream) -> queue.Queue:
    """Lines of ``stream`` as they come, on a queue (None at the end)."""
    lines: queue.Queue = queue.Queue()

    def pump():
        for line in stream:
            lines.put(line)
        lines.put(None)

    threading.Thread(target=pump, daemon=True).start()
    return lines


def _until(lines: queue.Queue, pattern: str) -> re.Match:
    """Read lines until one matches ``pattern`` (the test fails after TIMEOUT seconds or at the end)."""
    seen = []
    while True:
        line = lines.get(timeout=TIMEOUT)
        assert line is not None, f"ended before {pattern!r}:\n{''.join(seen)}"
        seen.append(line)
        found = re.search(pattern, line)
        if found:
            return found


def _spawn(args: list[str], env: dict) -> subprocess.Popen:
    return subprocess.Popen(args, env={**os.environ, **env}, cwd=str(ROOT), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)


def _stop(*procs: subprocess.Popen) -> None:
    for p in procs:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
        p.wait(timeout=TIMEOUT)
        if p.stdout:
            p.stdout.close()


@pytest.fixture(scope="module")
def cluster():
    """An external Dask cluster on 127.0.0.1: `dask scheduler` on a free port and two `dask worker`
    processes, started here and stopped at the end: (address, [workers])."""
    dask = [sys.executable, "-m", "dask"]
    scheduler = _spawn([*dask, "scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard"], {})
    workers = []
    try:
        address = _until(_reader(scheduler.stdout), r"Scheduler at:\s+(tcp://127\.0\.0\.1:\d+)").group(1)
        workers = [_spawn([*dask, "worker", address, "--nthreads", "1", "--no-nanny", "--no-dashboard", "--host",
                           "127.0.0.1"], {}) for _ in range(2)]
        for w in workers:
            _until(_reader(w.stdout), r"Registered to:")
        yield address, workers
    finally:
        _stop(*workers, scheduler)


def test_external_scheduler_and_two_workers_one_killed_mid_sweep(project, reference, cluster):
    address, workers = cluster
    # the address from the environment, as a cron line would give it
    run = _spawn([sys.executable, "-m", "retrain.cli", "sweep", "--backtest-days", DAYS, "--json"],
                 {**_env(project), "RETRAIN_DASK_SCHEDULER": address})
    try:
        lines = _reader(run.stdout)
        assert f"on the Dask cluster at {address}" in _until(lines, r"Running on").string
        _until(lines, r"^\[1/4\]")
        _stop(workers[0])  # a worker dies with trials on it: they run on the other one
        rest = []
        while (line := lines.get(timeout=TIMEOUT)) is not None:
            rest.append(line)
        assert run.wait(timeout=TIMEOUT) == 0, "".join(rest)
    finally:
        _stop(run)
    out = _last("".join(rest))
    assert all(t["state"] == "complete" for t in out["trials"])
    _same_trials(out, reference[0])  # the same trials and metrics as on the local cluster


def test_a_killed_sweep_resumes_with_its_finished_trials_kept(project, reference, cluster):
    address, _ = cluster
    run = _spawn([sys.executable, "-m", "retrain.cli", "sweep", "--scheduler", address, "--backtest-days", DAYS],
                 _env(project))
    try:
        lines = _reader(run.stdout)
        sweep_id = _until(lines, r"^Sweep (\S+):").group(1)
        _until(lines, r"^\[1/4\]")
        os.killpg(run.pid, signal.SIGKILL)  # kill -9 of the sweep (its driver: the workers stay)
    finally:
        _stop(run)
    folder = project / "artifacts" / "daytrading" / "sweeps" / sweep_id
    kept = pl.read_parquet(folder / "trials.parquet")
    assert kept.height >= 1
    asked = optuna.load_study(study_name=sweep_id, storage=f"sqlite:///{folder / 'study.db'}").trials
    assert len(asked) - kept.height <= 2  # a trial is proposed when one of the 2 workers is free, not before
    resumed = _cli(project, "sweep", "--resume", sweep_id, "--scheduler", address, "--json")
    assert resumed.exit_code == 0, resumed.output
    assert f"Resumed: {kept.height} finished trial(s) kept" in resumed.output
    out = _last(resumed.output)
    assert out["sweep_id"] == sweep_id and len(out["trials"]) == 4
    _same_trials(out, reference[0])  # as if it had never been killed
    after = pl.read_parquet(folder / "trials.parquet")
    assert after.join(kept, on="trial", how="semi").select("trial", "finished_at", "seconds").equals(
        kept.select("trial", "finished_at", "seconds"))  # not run again
    again = _cli(project, "sweep", "--resume", sweep_id, "--sampler", "random")
    assert again.exit_code == 1 and "continues it as it started" in again.output


def test_apply_writes_the_trial_into_retrain_toml_and_the_next_run_trains_it(project, reference, tmp_path):
    out, _ = reference
    best = out["best"]
    config = tmp_path / "retrain.toml"
    documented = (ROOT / "retrain.toml").read_text()  # the documented file, comments and all
    config.write_text(documented.replace("min_rows = 500", "min_rows = 100").replace(
        "early_stopping_rounds = 100", "early_stopping_rounds = 20").replace("num_boost_round = 600",
                                                                               "num_boost_round = 100"))

    def routine() -> tuple[training.TrainConfig, str]:
        settings = load_settings(project / "data", project / "artifacts", config)
        cfg = training.TrainConfig.from_settings(settings)  # what `retrain run` trains
        spec = pipeline.routine_spec(cfg, bt.BacktestConfig(max_positions=cfg.top_n), "v1",
                                     steps.feature_columns(Store(project / "data"), "v1"))
        return cfg, spec[0][:16]

    _, before = routine()
    done = _cli(project, "sweep", "apply", out["sweep_id"], config=config)
    assert done.exit_code == 0, done.output
    cfg, after = routine()
    assert cfg.training_days == best["params"]["training_days"] and cfg.target == best["params"]["target"]
    assert {k: cfg.params[k] for k in sweep.MODEL_KEYS} == {k: best["params"][k] for k in sweep.MODEL_KEYS}
    # the sweep's routine differs from the documented defaults only in what it searched
    assert after == best["routine"] != before
    text = config.read_text()
    assert re.search(rf"# retrain sweep apply {out['sweep_id']} --trial {best['trial']} \(\d{{4}}-\d\d-\d\d\): "
                     r"training_days 90 -> \d+", text)
    assert "# LightGBM hyperparameters (regression on intraday_return)" in text  # the file's comments are kept
    other = next(t for t in out["trials"] if t["trial"] != best["trial"])
    assert _cli(project, "sweep", "apply", out["sweep_id"], "--trial", str(other["trial"]), config=config).exit_code == 0
    assert routine()[1] == other["routine"]
    missing = _cli(project, "sweep", "apply", out["sweep_id"], "--trial", "9", config=config)
    assert missing.exit_code == 1 and "has no finished trial 9" in missing.output
    config.write_text(documented)  # another routine than the sweep's: said so
    done = _cli(project, "sweep", "apply", out["sweep_id"], config=config)
    assert done.exit_code == 0 and "the next run's routine is not exactly the trial's: [training] " \
                                   "early_stopping_rounds, [training] num_boost_round changed since" in done.output


def test_a_trial_may_leave_a_feature_group_out_but_cannot_be_applied(project, reference, tmp_path):
    settings = load_settings(project / "data", project / "artifacts", project / "retrain.toml")
    store = Store(project / "data")
    spec = {**sweeping.new_spec(settings, store, None, None, None, int(DAYS), None), "sweep_id": "x"}
    ctx, space = sweeping._trial_context(spec)
    preps, universe, _ = sweeping.load_frames(store, ctx, space)
    params = reference[0]["best"]["params"]
    full = sweeping.replay(0, params, preps[params["target"]], universe, ctx)
    less = sweeping.replay(0, {**params, "leave_out": "context"}, preps[params["target"]], universe, ctx)
    assert full["figures"]["sessions"] == less["figures"]["sessions"] > 0
    assert sweeping._routine({**params, "leave_out": "context"}, ctx) != sweeping._routine(params, ctx)
    # a sweep whose best trial left a group out: `apply` says why it cannot write it
    source = project / "artifacts" / "daytrading" / "sweeps" / reference[0]["sweep_id"]
    folder = tmp_path / "artifacts" / "daytrading" / "sweeps" / "other"
    folder.mkdir(parents=True)
    (folder / "sweep.json").write_text((source / "sweep.json").read_text())
    pl.read_parquet(source / "trials.parquet").with_columns(pl.lit("context").alias("leave_out")).write_parquet(
        folder / "trials.parquet")
    (tmp_path / "retrain.toml").write_text(CONFIG)
    refused = _cli(project, "sweep", "apply", "other", "--artifacts-dir", str(tmp_path / "artifacts"),
                   config=tmp_path / "retrain.toml")
    assert refused.exit_code == 1 and "leaves out the feature group context" in refused.output


def test_after_apply_the_gate_replays_a_champion_trained_by_older_code():
    """The run after `sweep apply` has another routine than the active model's, so the gate
    replays the champion's: one trained when retrain set force_row_wise must still train."""
    meta = {"training_config": {k: v for k, v in vars(training.TrainConfig()).items() if k != "params"},
            "params": {**training.TrainConfig().lgb_params(), "force_row_wise": True}}
    meta["params"].pop("force_col_wise")
    params = pipeline.active_routine(meta).lgb_params()
    assert params["force_col_wise"] is True and "force_row_wise" not in params


@pytest.mark.parametrize("line, message", [
    ("learning_rate = [0.1, 0.01]", "retrain.toml [sweep]: learning_rate = [0.1, 0.01]: expected a number > 0, or a "
                                    "range [low, high] of them with low <= high"),
    ('target = ["excess", "log"]', 'target = ["excess", "log"]: expected "excess" or "raw", or a list of them'),
    ("num_leaves = 1", "num_leaves = 1: expected an integer >= 2"),
    ('leave_out = ["volumes"]', '[sweep] leave_out = ["volumes"]: unknown feature group "volumes"'),
    ("training_days = [2, 30]", "[sweep] training_days = [2, 30]: with training_days 2, the backtest block"),
])
def test_an_invalid_search_space_names_the_key_and_the_value(project, tmp_path, line, message):
    config = tmp_path / "retrain.toml"
    config.write_text(CONFIG.replace("training_days = [30, 60]", line) if line.startswith("training_days")
                      else CONFIG + line + "\n")
    result = _cli(project, "sweep", "--backtest-days", DAYS, config=config)
    assert result.exit_code == 1 and message in result.output and "Traceback" not in result.output


def test_an_unreachable_scheduler_is_named(project):
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    address = f"tcp://127.0.0.1:{port}"
    for args, env in ((["--scheduler", address], {}), ([], {"RETRAIN_DASK_SCHEDULER": address})):
        result = _cli(project, "sweep", *args, env=env)
        assert result.exit_code == 1 and f"cannot reach the Dask scheduler at {address}" in result.output
        assert f"dask worker {address}" in result.output


# ------------------------------------------------------------------ the Deflated Sharpe Ratio
def test_expected_max_sharpe_and_dsr_reproduce_the_papers_example():
    """Bailey & López de Prado (2014), the numerical example: N = 100 trials whose annualized
    Sharpes vary with V = 1/2, the best 2.5 annualized over 1,250 daily returns (250 a year) with
    skew -3 and kurtosis 10: SR0 = 0.1132 per day, DSR = 0.9004."""
    sr0 = metrics.expected_max_sharpe(0.5, 100) / math.sqrt(250)
    assert sr0 == pytest.approx(0.1132, abs=5e-5)
    assert metrics.probabilistic_sharpe(2.5 / math.sqrt(250), 1250, -3.0, 10.0, sr0) == pytest.approx(0.9004, abs=5e-5)


def test_dsr_against_hand_computed_values():
    r = np.array([0.012, -0.008, 0.015, 0.004, -0.011, 0.02, 0.007, -0.003])
    sharpes = np.array([1.0, 0.5, 2.0, 1.5, np.nan])  # a trial without a Sharpe does not count
    # V = var(1, .5, 2, 1.5; ddof=1) = 5/12; SR0 = sqrt(V) * (0.4228 * Phi^-1(3/4) + 0.5772 * Phi^-1(1 - 1/(4e)))
    assert metrics.expected_max_sharpe(5 / 12, 4) == pytest.approx(0.6791423627083125, rel=1e-12)
    # daily SR 0.40458, skew -0.08657, kurtosis 1.68945: Phi((SR - SR0/sqrt(252)) sqrt(7) / sqrt(1 - g3 SR + (g4-1)/4 SR^2))
    assert metrics.deflated_sharpe(r, sharpes) == pytest.approx(0.8233794736433517, rel=1e-12)
    assert metrics.deflated_sharpe(r, sharpes) < metrics.psr(r) == pytest.approx(0.8503868099362927, rel=1e-12)
    assert metrics.expected_max_sharpe(5 / 12, 1) == 0.0  # one trial: nothing was selected
    assert metrics.deflated_sharpe(r, [1.0, 1.0]) == metrics.psr(r)  # no spread: no deflation
    assert math.isnan(metrics.deflated_sharpe(r, [1.0])) and math.isnan(metrics.expected_max_sharpe(0.5, 0))
    wider = metrics.deflated_sharpe(r, np.array([1.0, 0.5, 2.0, 1.5] * 5))  # more trials, same spread
    assert wider < metrics.deflated_sharpe(r, sharpes)


def test_the_words_say_whether_the_best_trial_is_told_apart_from_luck():
    rows = [{"trial": i, "state": "complete", "sharpe": s} for i, s in enumerate([0.4, 3.9, 1.1])]
    rows.append({"trial": 3, "state": "failed", "sharpe": None})
    rng = np.random.default_rng(1)
    strong = rng.normal(0.004, 0.01, 500)  # daily Sharpe 0.4: far above the best of 3 lucky trials
    chosen = sweep.selection(rows, strong)
    assert chosen["trials_compared"] == 3 and chosen["distinguishable"]
    assert chosen["words"].startswith("The best trial (trial 1, Sharpe 3.90) can be told apart from the best of 3")
    weak = sweep.selection(rows, rng.normal(0.0002, 0.01, 60))
    assert not weak["distinguishable"] and "cannot be told apart from the best of 3 trials with no skill" in weak["words"]
    assert "no best trial" in sweep.selection(rows[3:], None)["words"]


def test_the_same_seed_proposes_the_same_trials_whatever_the_order_they_finish_in(project):
    """The samplers' proposals depend on (seed, trial number) and the trials told, never on time."""
    settings = load_settings(project / "data", project / "artifacts", project / "retrain.toml")
    space = sweep.parse_space(settings.section("sweep"), steps.feature_columns(Store(project / "data"), "v1"))
    for kind in ("tpe", "random", "grid"):
        runs = []
        for _ in range(2):
            study = optuna.create_study(direction="maximize")
            asked = []
            for k in range(6):
                study.sampler = sweeping._sampler(kind, 7, k, space, 3)
                asked.append(space.params(study.ask(space.distributions()).params))
            runs.append(asked)
        assert runs[0] == runs[1] and len({json.dumps(p) for p in runs[0]}) == 6, kind
