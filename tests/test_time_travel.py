"""`--as-of` is a time machine without side effects: a run, a labels update or a prediction as of
a past date reads the past and leaves the present (store, label horizon, registry, active model)
as it was; automatic promotion never activates a model of the past; predictions as of a past
date use the model that was active then, or refuse look-ahead."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from pathlib import Path

import polars as pl
import pytest

from retrain import pipeline, runner, sample
from retrain.calendar import AsOf
from retrain.config import load_settings
from retrain.errors import RetrainError
from retrain.registry import Registry
from retrain.store import Store
from tests.conftest import tree_hashes

END = dt.date(2025, 10, 17)
THU = dt.date(2025, 10, 16)  # "the present" of these tests: the store's last bar
PAST = dt.date(2025, 10, 9)
CONFIG = '[features]\nversion = "v1"\n\n[run]\nexchange = "NASDAQ"\n'


@pytest.fixture(scope="module")
def market():
    return sample.generate(symbols=90, days=200, seed=5, end=END)


@pytest.fixture
def project(tmp_path: Path, market) -> Path:
    (tmp_path / "retrain.toml").write_text(CONFIG)
    bars, syms = market
    store = Store(tmp_path / "data")
    with store.lock("test"):
        store.upsert_bars(bars.filter(pl.col("date") <= THU))
        store.upsert_symbols(syms)
    return tmp_path


def _summary(result) -> dict:
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_a_past_as_of_reads_the_past_and_leaves_the_present(project, cli):
    present = cli("run", "--as-of", str(THU), "--skip-backtest", "--json")
    assert present.exit_code == 0, present.output
    now = _summary(present)
    assert now["promoted"] and now["training"]["window"][1] == str(THU)

    # the same bars and the same routine again: nothing changes, no new run
    again = cli("run", "--as-of", str(THU), "--skip-backtest", "--json")
    assert again.exit_code == 0, again.output
    # step 3 names the first feature row, which is 40 bars after the first bar, not the first bar
    first_row = Store(project / "data").scan_table("features", "v1").select(pl.col("trade_date").min()).collect().item()
    assert f"Snapshots go back to {first_row}" in again.output
    s = _summary(again)
    assert s["unchanged"] and s["run_id"] == now["run_id"] and not s["promoted"] and s["active"]
    assert f"Nothing changed since run {now['run_id']}" in again.output
    reg = Registry(project / "artifacts")
    assert [r["run_id"] for r in reg.runs()] == [now["run_id"]]

    data_before, art_before = tree_hashes(project / "data"), tree_hashes(project / "artifacts")
    past = cli("run", "--as-of", str(PAST), "--skip-backtest", "--json")
    assert past.exit_code == 0, past.output
    p = _summary(past)
    assert p["training"]["window"][1] == str(PAST)  # trained on the past only
    assert not p["promoted"] and f"ends {PAST}, before that of the active model" in p["promotion_reason"]
    assert f"retrain models promote {p['run_id']}" in past.output  # the real run id, never RUN_ID
    assert "labels already cover sessions through" in past.output
    # the present is as it was: every store file, the label horizon, the registry, the active model
    assert tree_hashes(project / "data") == data_before
    art_after = tree_hashes(project / "artifacts")
    # every file is as it was; what is new is the past run's folder and, in the routine's record,
    # the blocks the present had not needed (its older CV folds) with their models
    assert {k: v for k, v in art_after.items() if k in art_before} == art_before
    assert all(p["run_id"] in k or "/records/" in k for k in set(art_after) - set(art_before))
    assert reg.active_run("v1", "NASDAQ") == now["run_id"]

    labels = cli("labels", "--exchange", "NASDAQ", "--as-of", str(PAST))
    assert labels.exit_code == 0 and tree_hashes(project / "data") == data_before
    assert Store(project / "data").label_horizon()["NASDAQ"] == THU

    import retrain  # the Python API does the same

    api = retrain.run(as_of=str(PAST), skip_backtest=True, data_dir=str(project / "data"),
                      artifacts_dir=str(project / "artifacts"), config=str(project / "retrain.toml"))
    assert api.unchanged and api.run_id == p["run_id"] and not api.active
    assert tree_hashes(project / "data") == data_before and reg.active_run("v1", "NASDAQ") == now["run_id"]
    # a plain command afterwards still sees the present
    train = cli("train", "--promote", "never")
    assert train.exit_code == 0, train.output
    assert f"Nothing changed since run {now['run_id']}" in train.output

    # predictions as of the past: the active model saw later data, so it is refused (look-ahead)
    refused = cli("predict", "--as-of", str(PAST))
    assert refused.exit_code == 1 and "look-ahead" in refused.output and p["run_id"] in refused.output
    named = cli("predict", "--as-of", str(PAST), "--model", p["run_id"], "--top", "3")
    assert named.exit_code == 0, named.output
    assert f"Predictions for {dt.date(2025, 10, 10)} (NASDAQ) by {p['run_id']}" in named.output
    official = project / "artifacts" / "daytrading" / "predictions" / "2025-10-10.parquet"
    assert not official.exists()  # another model's ranking goes beside the session's record

    # as of a day before any bar: each says where the bars start, and never suggests an earlier day
    first = Store(project / "data").date_span("NASDAQ")[0]
    early = str(first - dt.timedelta(days=30))
    ran = cli("run", "--as-of", early, "--skip-backtest")
    assert ran.exit_code == 1 and f"the store's bars start on {first}" in ran.output and "earlier" not in ran.output
    ranked = cli("predict", "--as-of", early)
    assert ranked.exit_code == 1 and "no model can be trained as of then" in ranked.output
    assert f"start on {first}" in ranked.output and "retrain run --as-of" not in ranked.output
    # the active model, trained through THU, did not exist as of PAST: the monitor says so
    watched = cli("monitor", "--as-of", str(PAST))
    assert watched.exit_code == 1 and "did not exist yet" in watched.output and f"ends {THU}" in watched.output

    # `retrain backtest` never touches the active model unless --promote is given
    bt = cli("backtest", "--start-date", "2025-10-06", "--retrain-every", "5")
    assert bt.exit_code == 0, bt.output
    assert reg.active_run("v1", "NASDAQ") == now["run_id"] and "--promote never" in bt.output

    # --promote always is still the user's choice
    forced = cli("run", "--as-of", str(PAST), "--skip-backtest", "--promote", "always", "--json")
    assert forced.exit_code == 0 and _summary(forced)["promoted"]
    assert reg.active_run("v1", "NASDAQ") == p["run_id"]


def test_future_as_of_is_refused(cli):
    later = (dt.date.today() + dt.timedelta(days=3)).isoformat()
    r = cli("labels", "--as-of", later)
    assert r.exit_code == 1 and "in the future" in r.output


def test_predict_as_of_uses_the_model_active_then(tmp_path, monkeypatch):
    """Registry history decides: the run active at the as-of moment ranks, even after others
    were promoted since."""
    reg = Registry(tmp_path / "artifacts", "NYSE")
    ids = []
    for i, end in enumerate(["2025-09-30", "2025-10-07"]):
        meta = {"feature_version": "v1", "scope": "NYSE", "training_window": {"start": "2025-06-01", "end": end},
                "feature_columns": ["a"], "run_id": f"run{i}", "created_at": f"2025-10-0{i + 1}T00:00:00+00:00"}
        ids.append(reg.create_run({"model": i}, meta)[0])
        reg.promote(ids[-1])
    state = reg.state()
    # as if run0 had been promoted on 2025-10-01 and run1 on 2025-10-08 (after the close)
    for event, at in zip(state["events"], ["2025-10-01T22:00:00+00:00", "2025-10-08T22:00:00+00:00"]):
        event["at"] = at
    reg._save(state)
    settings = dataclasses.replace(load_settings(artifacts_dir=tmp_path / "artifacts", data_dir=tmp_path / "d"),
                                   default_exchange="NYSE")
    monkeypatch.setattr(pipeline.steps, "feature_columns", lambda store, version: None)  # fake runs: no feature set

    def pick(day: dt.date, session: dt.date):
        loaded, note, warning, official = pipeline.choose_model(reg, settings, "NYSE", AsOf(day), session)
        return loaded.meta["run_id"], official

    assert pick(dt.date(2025, 10, 6), dt.date(2025, 10, 7)) == ("run0", True)
    assert pick(dt.date(2025, 10, 9), dt.date(2025, 10, 10)) == ("run1", True)
    with pytest.raises(RetrainError, match="look-ahead"):  # before any activation, and run1 saw 10-07
        pick(dt.date(2025, 9, 29), dt.date(2025, 9, 30))


def test_step_3_names_what_helps_when_history_is_short(project, capsys):
    store = Store(project / "data")
    runner._feature_range(store, "v1", ["NASDAQ"], AsOf(THU), 400, 30, True, False)
    out = capsys.readouterr().out
    assert "Not enough history for the 430-day window" in out
    assert "a later --as-of" in out and "--training-days" in out and "older bars" in out
    assert "--full-rebuild" not in out


def test_predict_of_an_older_version_without_a_model_does_not_send_you_to_train_the_current_one(
        tmp_path, monkeypatch):
    reg = Registry(tmp_path / "artifacts", "NYSE")
    settings = dataclasses.replace(load_settings(artifacts_dir=tmp_path / "artifacts", data_dir=tmp_path / "d"),
                                   default_exchange="NYSE", feature_version="v2")
    monkeypatch.setattr(pipeline.steps, "feature_columns", lambda store, version: None)
    with pytest.raises(RetrainError) as err:
        pipeline.choose_model(reg, settings, "NYSE", AsOf(None), THU, version="v1")
    assert "no active model of v1 for NYSE" in err.value.message
    assert "not the current feature version (v2" in err.value.hint and "--model RUN_ID" in err.value.hint
    with pytest.raises(RetrainError) as err:  # the current version: training it is the answer
        pipeline.choose_model(reg, settings, "NYSE", AsOf(None), THU, version="v2")
    assert err.value.hint == "train one: `retrain run`"
