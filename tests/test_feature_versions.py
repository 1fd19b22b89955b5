"""Feature versions name their definitions: the store records each version's definition
fingerprint and columns, an incremental build never mixes two definitions in one version, and a
version keeps its own columns after a bump that adds a feature."""

from __future__ import annotations

import datetime as dt
import json

import polars as pl
import pytest

from retrain import features, sample
from retrain.store import Store
from tests.conftest import tree_hashes

END = dt.date(2025, 10, 17)
THU = dt.date(2025, 10, 16)
OLD = [f for f in features.FEATURES if f.name != "range"]  # v1 as first written: no "range"


@pytest.fixture
def project(tmp_path, monkeypatch):
    (tmp_path / "retrain.toml").write_text('[features]\nversion = "v1"\n\n[run]\nexchange = "NASDAQ"\n')
    bars, syms = sample.generate(symbols=90, days=200, seed=5, end=END)
    store = Store(tmp_path / "data")
    with store.lock("test"):
        store.upsert_bars(bars.filter(pl.col("date") < THU))
        store.upsert_symbols(syms)
    monkeypatch.setitem(features.FEATURE_SETS, "v1", OLD)
    return tmp_path, bars


def test_definitions_are_recorded_never_mixed_and_each_version_keeps_its_columns(project, cli, monkeypatch):
    root, bars = project
    first = cli("run", "--as-of", str(THU - dt.timedelta(days=1)), "--skip-backtest", "--min-rows", "200")
    assert first.exit_code == 0, first.output
    state = json.loads((root / "data/features/version=v1/_state.json").read_text())
    assert state["_definition"]["columns"] == [f.name for f in OLD] and "range" not in state["_definition"]["columns"]
    assert state["_definition"]["fingerprint"] == features.definition_fingerprint("v1")

    # v1 edited in place to add a feature: an incremental build refuses, and changes nothing
    monkeypatch.setitem(features.FEATURE_SETS, "v1", features.FEATURES)
    before = tree_hashes(root / "data")
    refused = cli("features")
    assert refused.exit_code == 1, refused.output
    assert "differ from those its stored rows were built with (added range)" in refused.output
    assert "--full-rebuild" in refused.output and "--bump-version" in refused.output
    assert tree_hashes(root / "data") == before

    # the way on: v1 stays as it was, v2 gets the new set
    monkeypatch.setitem(features.FEATURE_SETS, "v1", OLD)
    monkeypatch.setitem(features.FEATURE_SETS, "v2", features.FEATURES)
    bumped = cli("run", "--bump-version", "--as-of", str(THU - dt.timedelta(days=1)), "--skip-backtest",
                 "--min-rows", "200")
    assert bumped.exit_code == 0, bumped.output
    assert "range" in json.loads((root / "artifacts/daytrading/intraday_model_v2_meta.json").read_text())["feature_columns"]
    v1 = cli("predict", "--version", "v1", "--as-of", str(THU - dt.timedelta(days=1)), "--top", "3")
    assert v1.exit_code == 0 and f"Predictions for {THU}" in v1.output, v1.output

    # a new session: v1's rows for it are missing, and the code can no longer build v1
    monkeypatch.delitem(features.FEATURE_SETS, "v1")
    store = Store(root / "data")
    with store.lock("test"):
        store.upsert_bars(bars.filter(pl.col("date") == THU))
    gone = cli("predict", "--version", "v1", "--as-of", str(THU), "--top", "3")
    assert gone.exit_code == 1, gone.output
    assert f"no v1 feature rows for the session {END} (NASDAQ), and they cannot be built now" in gone.output
    assert "FEATURE_SETS" in gone.output
