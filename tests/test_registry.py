"""Registry: active file names by (version, scope) only, stores from when they followed
[run] exchange, loading refuses another version's or scope's model, annotations and the
promotion decision kept, and `models show` printing them. Stand-in models: fast."""

from __future__ import annotations

import json
import shutil

import pytest

from retrain import checksums
from retrain.errors import RetrainError
from retrain.registry import DEFAULT_SCOPE, Registry, meta_filename, model_filename


def _fake_run(reg: Registry, run_id: str, version: str = "v1", scope: str = "NYSE", day: int = 1, **extra) -> str:
    """A run folder with a stand-in model: the registry only hashes, copies and unpickles it."""
    meta = {"feature_version": version, "scope": scope, "run_id": run_id, "feature_columns": ["a"],
            "created_at": f"2025-10-{day:02d}T00:00:00+00:00",
            "training_window": {"start": "2025-06-01", "end": f"2025-09-{day:02d}"}, **extra}
    return reg.create_run({"stand-in": run_id}, meta)[0]


def test_active_file_names_are_a_function_of_version_and_scope_only(tmp_path):
    assert DEFAULT_SCOPE == "NASDAQ"
    assert model_filename("v1", "NASDAQ") == "intraday_model_v1.joblib"
    assert meta_filename("v1", "NASDAQ") == "intraday_model_v1_meta.json"
    for scope in ("NYSE", "TSE", "ALL"):
        assert model_filename("v2", scope) == f"intraday_model_v2_{scope}.joblib"
        assert meta_filename("v2", scope) == f"intraday_model_v2_{scope}_meta.json"
    # whatever [run] exchange is, the same (version, scope) has the same files
    paths = {default: [Registry(tmp_path, default).active_paths("v1", s) for s in ("NASDAQ", "NYSE", "TSE", "ALL")]
             for default in ("NASDAQ", "NYSE", "TSE", "ALL")}
    assert len({tuple(p) for p in paths.values()}) == 1
    reg = Registry(tmp_path / "artifacts", "TSE")
    reg.promote(_fake_run(reg, "tse", scope="TSE"))
    reg.promote(_fake_run(reg, "nasdaq", scope="NASDAQ"))
    names = sorted(p.name for p in reg.root.glob("intraday_model_*"))
    assert names == ["intraday_model_v1.joblib", "intraday_model_v1_TSE.joblib",
                     "intraday_model_v1_TSE_meta.json", "intraday_model_v1_meta.json"]
    assert reg.load_active("v1", "TSE").meta["run_id"] == "tse"
    assert reg.load_active("v1", "NASDAQ").meta["run_id"] == "nasdaq"


def _old_layout(reg: Registry, scope: str, old_model: str) -> None:
    """Move (version v1, ``scope``)'s active copies to the name a store whose [run] exchange
    was something else gave them."""
    model_path, meta_path = reg.active_paths("v1", scope)
    for old, new in ((model_path, reg.root / old_model), (meta_path, reg.root / old_model.replace(".joblib", "_meta.json"))):
        old.rename(new)
        for p in (old, new):  # such a store is from before checksums
            checksums.remove(p)


def test_a_store_from_when_names_followed_the_run_exchange(tmp_path):
    """[run] exchange was NYSE: NYSE's model was intraday_model_v1.joblib, NASDAQ's
    intraday_model_v1_NASDAQ.joblib. NYSE's copies are written again under their name from the
    run folder; the old files are left alone; NASDAQ's name now holds NYSE's model: refused,
    with the command that rewrites it."""
    reg = Registry(tmp_path / "artifacts", "NYSE")
    reg.promote(_fake_run(reg, "nasdaq", scope="NASDAQ"))
    _old_layout(reg, "NASDAQ", "intraday_model_v1_NASDAQ.joblib")
    reg.promote(_fake_run(reg, "nyse", scope="NYSE", day=2))
    _old_layout(reg, "NYSE", "intraday_model_v1.joblib")
    old = {p.name: p.read_bytes() for p in reg.root.glob("intraday_model_*")}
    assert sorted(old) == ["intraday_model_v1.joblib", "intraday_model_v1_NASDAQ.joblib",
                           "intraday_model_v1_NASDAQ_meta.json", "intraday_model_v1_meta.json"]

    loaded = reg.load_active("v1", "NYSE")
    assert loaded.meta["run_id"] == "nyse"
    model_path, meta_path = reg.active_paths("v1", "NYSE")
    assert model_path.read_bytes() == (reg.runs_dir / "nyse" / "model.joblib").read_bytes()
    assert json.loads(meta_path.read_text())["run_id"] == "nyse"
    assert reg.load_file(model_path, meta_path, "v1", scope="NYSE").meta["run_id"] == "nyse"
    assert not list(reg.root.glob(".tmp-*"))
    for name, data in old.items():  # left alone
        assert (reg.root / name).read_bytes() == data

    with pytest.raises(RetrainError) as err:
        reg.load_active("v1", "NASDAQ")
    assert "intraday_model_v1.joblib holds the v1 model of NYSE (run nyse)" in err.value.message
    assert "not the v1 model of NASDAQ" in err.value.message
    assert "`retrain models promote nasdaq`" in err.value.hint
    reg.promote("nasdaq")  # what the hint says: rewrites the file, registry unchanged
    assert reg.load_active("v1", "NASDAQ").meta["run_id"] == "nasdaq"
    assert reg.load_active("v1", "NYSE").meta["run_id"] == "nyse"
    assert (reg.root / "intraday_model_v1_NASDAQ.joblib").read_bytes() == old["intraday_model_v1_NASDAQ.joblib"]


def _copy(src, dst) -> None:
    """A copy by hand in a store from before checksums (with its checksum in place, the copy is
    caught as corrupted first: tests/test_integrity.py)."""
    shutil.copyfile(src, dst)
    checksums.remove(dst)


def test_an_active_file_of_another_scope_or_version_is_refused(tmp_path):
    reg = Registry(tmp_path / "artifacts")
    reg.promote(_fake_run(reg, "nyse", scope="NYSE"))
    reg.promote(_fake_run(reg, "nasdaq", scope="NASDAQ"))
    reg.promote(_fake_run(reg, "nasdaq2", version="v2", scope="NASDAQ"))
    nyse_model, nyse_meta = reg.active_paths("v1", "NYSE")
    model_path, meta_path = reg.active_paths("v1", "NASDAQ")
    _copy(nyse_model, model_path)
    _copy(nyse_meta, meta_path)
    with pytest.raises(RetrainError) as err:
        reg.load_active("v1", "NASDAQ")
    assert str(model_path) in err.value.message and "holds the v1 model of NYSE" in err.value.message
    assert "not the v1 model of NASDAQ as asked; refusing to load it" in err.value.message
    assert "`retrain models promote nasdaq`" in err.value.hint

    v2_model, v2_meta = reg.active_paths("v2", "NASDAQ")
    _copy(v2_model, model_path)
    _copy(v2_meta, meta_path)
    with pytest.raises(RetrainError, match="holds the v2 model of NASDAQ .* not the v1 model of NASDAQ"):
        reg.load_active("v1", "NASDAQ")

    # no active run of the scope asked for: the file is still refused; the hint trains one
    tse_model, tse_meta = reg.active_paths("v1", "TSE")
    _copy(nyse_model, tse_model)
    _copy(nyse_meta, tse_meta)
    with pytest.raises(RetrainError) as err:
        reg.load_active("v1", "TSE")
    assert "holds the v1 model of NYSE" in err.value.message and "`retrain run --exchange TSE`" in err.value.hint

    # a run is checked only against what its caller asks for
    assert reg.load_run("nyse").meta["scope"] == "NYSE"
    assert reg.load_run("nyse", version="v1", scope="NYSE").meta["run_id"] == "nyse"
    with pytest.raises(RetrainError) as err:
        reg.load_run("nyse", scope="NASDAQ")
    assert "model.joblib holds the v1 model of NYSE (run nyse), not a model of NASDAQ" in err.value.message
    assert "retrain models list" in err.value.hint
    with pytest.raises(RetrainError, match="not a v2 model"):
        reg.load_run("nyse", version="v2")
    reg.promote("nasdaq")
    assert reg.load_active("v1", "NASDAQ").meta["run_id"] == "nasdaq"


def test_annotate_and_the_promotion_decision_are_kept(tmp_path):
    reg = Registry(tmp_path / "artifacts")
    first = _fake_run(reg, "first", scope="NASDAQ")
    reg.promote(first)
    second = _fake_run(reg, "second", scope="NASDAQ", day=2)
    gate = {"mode": "auto", "promoted": True, "reason": "not different from the champion", "champion": first}
    meta = reg.annotate(second, gate=gate)
    assert meta["gate"] == gate
    on_disk = json.loads((reg.runs_dir / second / "meta.json").read_text())
    assert on_disk["gate"] == gate and on_disk["model_sha256"] == meta["model_sha256"]
    assert not list((reg.runs_dir / second).glob(".tmp-*"))
    with pytest.raises(RetrainError, match="identify the run"):
        reg.annotate(second, scope="NYSE")
    with pytest.raises(RetrainError, match="no run"):
        reg.annotate("nope", gate={})

    reg.promote(second, decision=gate)
    events = json.loads(reg.registry_path.read_text())["events"]
    assert events[-1]["run_id"] == second and events[-1]["decision"] == gate
    assert "decision" not in events[0]
    reg.promote(second, decision={"reason": "again"})  # already active: no new activation logged
    assert len(reg.state()["events"]) == len(events)

    # annotating the active run: its active metadata copy follows, and it still loads
    record = {"verdict": "GOOD", "reason": "r", "sessions": 40, "sharpe": 1.2, "sharpe_ci": [0.1, 2.3]}
    reg.annotate(second, record=record, gate={**gate, "sessions": 40})
    _, meta_path = reg.active_paths("v1", "NASDAQ")
    active = json.loads(meta_path.read_text())
    assert active["record"] == record and active["gate"]["sessions"] == 40
    loaded = reg.load_active("v1", "NASDAQ")
    assert loaded.meta["run_id"] == second and loaded.meta["record"] == record
    assert reg.run_meta(second)["record"] == record
    reg.annotate(first, record={"verdict": "POOR"})  # not active: the active copy is not touched
    assert json.loads(meta_path.read_text())["run_id"] == second


def test_models_show_prints_the_decision_and_the_record(tmp_path, cli):
    reg = Registry(tmp_path / "artifacts")
    champion = _fake_run(reg, "20261128T000000-v1-NASDAQ-abcdef", scope="NASDAQ", cv={"summary": {}})
    assert cli("models", "promote", champion).exit_code == 0
    run_id = _fake_run(reg, "challenger", scope="NASDAQ", day=2, cv={"summary": {}})
    reg.annotate(run_id, gate={
        "mode": "auto", "promoted": False, "reason": "no better than the champion", "champion": champion,
        "sessions": 42, "outcome": "not different",
        "net_return_diff": {"mean": 0.0001, "se": 0.0004, "t": 0.25, "ci": [-0.0007, 0.0009]},
        "rank_ic_diff": {"mean": float("nan"), "se": 0.002, "t": float("nan"), "ci": [None, 0.004]},
        "margin": {"net_return": 0.0002, "rank_ic": 0.005}, "test": "paired t-test on daily differences",
        "extra_key": 3,
    }, record={"verdict": "GOOD", "reason": "Sharpe above 1", "sessions": 42, "sharpe": 1.234,
               "sharpe_ci": [0.5, 2.0], "psr": 0.91, "rank_ic": 0.0312, "rank_ic_t": 2.5})
    shown = cli("models", "show", run_id)
    assert shown.exit_code == 0, shown.output
    out = shown.output
    assert out.index('"run_id": "challenger"') < out.index("Promotion decision") < out.index("Out-of-sample record")
    for text in ("kept a candidate (--promote auto)", "no better than the champion", champion, "not different",
                 "paired t-test on daily differences", "+0.010%, se 0.040%, t +0.25, 90% CI [-0.070%, +0.090%]",
                 "n/a, se 0.0020, t n/a, 90% CI [n/a, +0.0040]", "net return 0.020%, rank IC 0.0050",
                 "extra_key", "GOOD", "Sharpe above 1", "1.23 (90% CI [0.50, 2.00])", "0.910",
                 "+0.0312 (t +2.50)"):
        assert text in out, text
    assert "nan" not in out.split("Promotion decision")[1].lower()

    # a run without them prints what it printed before, and the manual promotion is logged
    plain = cli("models", "show", champion)
    assert plain.exit_code == 0 and "Promotion decision" not in plain.output and "Out-of-sample" not in plain.output
    assert f"promote: `retrain models promote {champion}`" in plain.output
    assert reg.state()["events"][-1]["decision"]["mode"] == "manual"


def test_run_meta_is_typed_versioned_and_keeps_what_it_does_not_know(tmp_path):
    from retrain.registry import META_SCHEMA, RunMeta, meta_text, read_meta

    old = {"run_id": "r1", "feature_version": "v1", "scope": "NYSE", "rows": 10, "someone_elses_key": [1, 2]}
    meta = RunMeta.parse(old)
    assert meta.schema_version == 1 and meta.rows == 10 and meta.extra == {"someone_elses_key": [1, 2]}
    assert meta.to_dict() == {**old, "schema_version": 1, "feature_columns": [], "categorical_features": [],
                              "training_config": {}, "training_window": {}, "params": {}, "cv": {}}
    path = tmp_path / "meta.json"
    path.write_text(meta_text({**old, "schema_version": META_SCHEMA, "record": {"verdict": "INCONCLUSIVE"}}))
    back = read_meta(path)
    assert back["record"] == {"verdict": "INCONCLUSIVE"} and back["someone_elses_key"] == [1, 2]
    with pytest.raises(RetrainError, match="newer than this retrain reads"):
        RunMeta.parse({**old, "schema_version": META_SCHEMA + 1}, path)
    with pytest.raises(RetrainError, match="lacks scope"):
        RunMeta.parse({"run_id": "r1", "feature_version": "v1"}, path)
    path.write_text("{not json")
    with pytest.raises(RetrainError, match="not valid JSON"):
        read_meta(path)
