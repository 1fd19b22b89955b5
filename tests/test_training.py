"""Training: walk-forward folds on the grid with embargo, determinism, registry safety, promotion, errors,
and the leak detector: no signal in the market -> no out-of-sample rank IC."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import re

import numpy as np
import polars as pl
import pytest

from retrain import features, metrics, pipeline, sample, steps, training
from retrain.calendar import AsOf
from retrain.config import load_settings
from retrain.errors import RetrainError
from retrain.record import RecordStore
from retrain.registry import Registry
from retrain.store import Store

END = dt.date(2025, 10, 17)
D = dt.date


def _market(root, signal: bool = True, symbols: int = 150, days: int = 140, seed: int = 21) -> Store:
    store = Store(root)
    bars, syms = sample.generate(symbols=symbols, days=days, seed=seed, end=END, signal=signal)
    with store.lock("test"):
        store.upsert_bars(bars)
        store.upsert_symbols(syms)
    steps.indicators(store, store.exchanges())
    steps.features(store, "v1", store.exchanges())
    steps.labels(store, store.exchanges(), AsOf(END))
    return store


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("market")
    return _market(root / "data"), root



def test_last_labelled_reads_the_newest_months_and_agrees_with_its_sql(built):
    """pipeline.last_labelled searches month files from the newest back; sql/last_labelled.sql
    (the catalog's join of every feature row with the labels view) is the oracle."""
    from retrain import catalog, queries

    store, _ = built
    con = catalog.connect(store)
    days = sorted(store.scan_table("features", "v1").select("trade_date").unique().collect()["trade_date"].to_list())
    untils = [None, days[0] - dt.timedelta(days=1), days[0], days[len(days) // 2], days[-1],
              days[-1] + dt.timedelta(days=30), *[d + dt.timedelta(days=k) for d in days[40:46] for k in (0, 1)]]
    try:
        for scope in ("ALL", "NYSE", "NASDAQ", "TSE"):
            for until in untils:
                want = con.execute(queries.load("last_labelled"),
                                   {"version": "v1", "scope": scope, "until": until}).fetchone()[0]
                assert pipeline.last_labelled(store, "v1", scope, until=until) == want, (scope, until)
    finally:
        con.close()
    assert pipeline.last_labelled(store, "v9", "ALL") is None

def _settings(root, **toml):
    (root / "retrain.toml").write_text("[run]\nexchange = \"NYSE\"\n")
    return dataclasses.replace(load_settings(data_dir=root / "data", artifacts_dir=root / "artifacts",
                                             config=root / "retrain.toml"), **toml)


def _cfg(**kw) -> training.TrainConfig:
    base = training.TrainConfig(training_days=120, min_rows=200, cv_folds=4, num_boost_round=200)
    return dataclasses.replace(base, **kw)


def _folds(store, cfg, scope="NYSE"):
    from retrain.backtest import BacktestConfig

    bcfg = BacktestConfig()
    window = pipeline.training_window(store, "v1", scope, cfg.training_days)
    prep = pipeline.Prepared.of(pipeline.load_frame(store, "v1", scope, cfg, window,
                                                    pipeline.cv_first_day(window, cfg, bcfg)),
                                features.feature_columns("v1"))
    return prep, window, pipeline.plan_cv(prep, window, cfg, bcfg, "routine")


def test_folds_are_the_newest_grid_blocks_and_respect_the_training_days_and_the_embargo(built):
    store, _ = built
    cfg = _cfg(training_days=60, embargo=2)
    prep, window, folds = _folds(store, cfg)
    assert len(folds) == 4 and folds[-1].sessions[-1] == window[1]  # the newest blocks, up to the window's end
    tested = []
    for b in folds:
        first = prep.sessions.index(b.sessions[0])
        assert prep.sessions.index(b.train[-1]) == first - 1 - 2  # exactly the embargo before the block
        assert (b.train[-1] - b.train[0]).days < 60 <= (b.train[-1] - prep.sessions[prep.sessions.index(b.train[0]) - 1]).days
        assert len({d.isocalendar()[:2] for d in b.sessions}) == 1  # a block is one calendar week (every = 5)
        tested += b.sessions
    assert tested == sorted(tested) and len(tested) == len(set(tested))  # consecutive, disjoint blocks
    assert folds[0].train[0] < window[0]  # the oldest fold trains on sessions before the final window
    fit, valid = training.split_validation(list(folds[-1].train), 0.2, 2)
    assert max(fit) < min(valid) and prep.sessions.index(min(valid)) - prep.sessions.index(max(fit)) - 1 == 2


def test_a_fold_that_cannot_be_formed_names_the_values(built):
    store, _ = built
    with pytest.raises(RetrainError) as err:
        _folds(store, _cfg(training_days=10, cv_folds=5))
    text = f"{err.value.message} {err.value.hint}"
    assert all(w in text for w in ["cv_folds=5 needs 5 blocks", "training_days=10", "--training-days"]), text
    with pytest.raises(RetrainError) as err:  # the oldest block of the history has nothing before it to train on
        _folds(store, _cfg(training_days=400, cv_folds=21))
    text = f"{err.value.message} {err.value.hint}"
    assert all(w in text for w in ["fold 1 of cv_folds=21", "cannot be formed", "no labelled session to train on",
                                   "now 21", "embargo (now 1)"]), text


def test_cv_predictions_come_from_sessions_after_the_training_ones(built, tmp_path):
    store, root = built
    result = pipeline.train(store, "v1", "ALL", _cfg())
    for f in result.folds:
        assert f["train_end"] < f["test_start"]
    oos_dates = set(result.oos["trade_date"].to_list())
    assert min(oos_dates) > D.fromisoformat(result.folds[0]["train_end"])  # the first block is never tested
    tested = set()
    for f in result.folds:
        block = {d for d in oos_dates if f["test_start"] <= str(d) <= f["test_end"]}
        assert block and not (block & tested)
        tested |= block
    assert tested == oos_dates and result.oos.height < result.rows


def test_training_is_deterministic(built):
    store, _ = built
    a = pipeline.train(store, "v1", "NYSE", _cfg())
    b = pipeline.train(store, "v1", "NYSE", _cfg())
    assert a.model.model_to_string() == b.model.model_to_string()
    assert a.fingerprint == b.fingerprint and a.folds == b.folds


def test_insufficient_samples(built):
    store, _ = built
    with pytest.raises(RetrainError, match=r"Insufficient training samples: [\d,]+ < 1,000,000") as err:
        pipeline.train(store, "v1", "TSE", _cfg(min_rows=1_000_000))
    assert "--training-days" in str(err.value)


def test_registry_promote_rollback_auto_rule_and_tamper_refusal(built, tmp_path):
    store, root = built
    settings = _settings(tmp_path)
    settings = dataclasses.replace(settings, data_dir=store.root)
    first = pipeline.train_step(settings, "NYSE", _cfg(), "auto")
    assert first.promoted and first.reason == "no active model yet"
    reg = Registry(settings.artifacts_dir, "NYSE")
    model_path, meta_path = reg.active_paths("v1", "NYSE")
    # [run] exchange = "NYSE" here: the file names follow the scope, never that setting
    assert model_path.name == "intraday_model_v1_NYSE.joblib" and meta_path.name == "intraday_model_v1_NYSE_meta.json"
    assert model_path.exists() and meta_path.exists()
    meta = json.loads((first.run_dir / "meta.json").read_text())
    for key in ("feature_version", "scope", "feature_columns", "training_window", "fingerprint", "params", "cv",
                "libraries", "model_sha256", "created_at"):
        assert key in meta
    # an identical rerun (same bars, same routine) makes no new run and leaves the active model alone
    again = pipeline.train_step(settings, "NYSE", _cfg(min_rows=100), "auto")
    assert again.unchanged and again.run_id == first.run_id and again.active and not again.promoted
    assert len(reg.runs()) == 1
    second = pipeline.train_step(settings, "NYSE", _cfg(training_days=100), "never")
    assert not second.unchanged and not second.promoted and reg.active_run("v1", "NYSE") == first.run_id
    other_scope = pipeline.train_step(settings, "ALL", _cfg(), "auto")  # never overwrites NYSE's model
    assert reg.active_run("v1", "NYSE") == first.run_id and reg.active_run("v1", "ALL") == other_scope.run_id
    reg.promote(second.run_id)
    assert reg.active_run("v1", "NYSE") == second.run_id
    assert {r["run_id"]: r["status"] for r in reg.runs()}[first.run_id] == "retired"
    old, new = reg.rollback("v1", "NYSE")
    assert (old, new) == (second.run_id, first.run_id) and reg.active_run("v1", "NYSE") == first.run_id
    assert {r["run_id"]: r["status"] for r in reg.runs()}[second.run_id] == "retired"
    # finding the rolled-back run again (same bars, same routine) does not undo the rollback
    found = pipeline.train_step(settings, "NYSE", _cfg(training_days=100), "auto")
    assert found.unchanged and found.run_id == second.run_id and not found.promoted and not found.active
    assert reg.active_run("v1", "NYSE") == first.run_id and "stays retired" in found.reason
    with pytest.raises(RetrainError, match="roll back"):
        reg.rollback("v1", "NYSE")
    # auto without a backtest: a worse cross-validation rank IC stays a candidate
    worse = {**meta, "cv": {"summary": {"rank_ic": {"mean": meta["cv"]["summary"]["rank_ic"]["mean"] - 0.01}}}}
    ok, reason = pipeline.promotion_decision("auto", worse, meta)
    assert not ok and "worse" in reason and "cross-validation" in reason
    # auto with a backtest: paired tests on the same sessions of both records
    rng = np.random.default_rng(3)
    days = [dt.date(2025, 6, 2) + dt.timedelta(days=i) for i in range(120)]

    def figures(net, ic):
        return pl.DataFrame({"trade_date": days, "net_return": net, "rank_ic": ic})

    champ = figures(rng.normal(0.0005, 0.01, 120), rng.normal(0.02, 0.05, 120))
    new_bt = {**meta, "backtest": {"start": "2025-09-01", "end": "2025-09-30"}}
    same = pipeline.paired_gate(champ, champ)
    assert same["outcome"] == "not different" and same["sessions"] == 120
    assert pipeline.promotion_decision("auto", new_bt, meta, same)[0]
    noisy = figures(champ["net_return"] + rng.normal(0, 0.01, 120), champ["rank_ic"] + rng.normal(0, 0.05, 120))
    gate = pipeline.paired_gate(noisy, champ)  # a different model of the same skill: noise is not evidence
    assert gate["outcome"] == "not different"
    ok, reason = pipeline.promotion_decision("auto", new_bt, meta, gate)
    assert ok and "not significantly worse" in reason and "120 out-of-sample sessions" in reason
    worse = pipeline.paired_gate(figures(champ["net_return"] - 0.002 + rng.normal(0, 0.001, 120), champ["rank_ic"]),
                                 champ)
    assert worse["outcome"] == "worse" and worse["net_return_diff"]["ci"][1] < -pipeline.GATE_MARGIN["net_return"]
    ok, reason = pipeline.promotion_decision("auto", new_bt, meta, worse)
    assert not ok and "significantly worse" in reason and "retrain models promote" in reason
    better = pipeline.paired_gate(champ, figures(champ["net_return"], champ["rank_ic"] - 0.02))
    assert better["outcome"] == "better"
    assert "significantly better" in pipeline.promotion_decision("auto", new_bt, meta, better)[1]
    # tampering: one flipped byte in the active model file
    data = bytearray(model_path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    model_path.write_bytes(bytes(data))
    with pytest.raises(RetrainError, match="sha256"):
        reg.load_active("v1", "NYSE")
    model_path.write_bytes(bytes(data[: len(data) // 3]))  # truncated
    with pytest.raises(RetrainError, match="sha256"):
        reg.load_active("v1", "NYSE")
    with pytest.raises(RetrainError, match="feature columns"):
        reg.load_run(first.run_id, columns=["something", "else"])


def test_predict_ranks_the_next_session(built, tmp_path):
    store, _ = built
    settings = dataclasses.replace(_settings(tmp_path), data_dir=store.root)
    pipeline.train_step(settings, "NYSE", _cfg(), "auto")
    pred = pipeline.predict(settings, "NYSE", AsOf(END), top=5)
    assert pred.session == D(2025, 10, 20)
    assert pred.table["rank"].to_list() == [1, 2, 3, 4, 5]
    assert pred.table["predicted_return"].is_sorted(descending=True)
    assert pred.path.exists() and pl.read_parquet(pred.path).height > 5


def _pooled_rank_ic(result: training.TrainResult) -> tuple[float, float]:
    oos = result.oos
    ic = metrics.daily_ic(oos["trade_date"].to_numpy(), oos["target"].to_numpy(), oos["prediction"].to_numpy(), rank=True)
    return float(ic.mean()), float(ic.std(ddof=1) / np.sqrt(len(ic)))


def test_no_signal_means_no_out_of_sample_rank_ic(tmp_path):
    """The leak detector: on a market with nothing to predict, out-of-sample rank IC must be
    noise around zero; with the signal it must be clearly positive."""
    cfg = _cfg(training_days=200)
    with_signal = pipeline.train(_market(tmp_path / "s", signal=True, symbols=240, days=200), "v1", "ALL", cfg)
    without = pipeline.train(_market(tmp_path / "n", signal=False, symbols=240, days=200), "v1", "ALL", cfg)
    m, se = _pooled_rank_ic(with_signal)
    m0, se0 = _pooled_rank_ic(without)
    # Measured: +0.060 ± 0.006 with the signal; without it, values between -0.5 and +2.6 standard
    # errors over six seeds. A leak of label information shows up as many times that.
    assert m > 5 * se and m > 0.04, (m, se)
    assert abs(m0) < 4 * se0 and abs(m0) < 0.03, (m0, se0)


def test_a_crash_between_the_active_copies_leaves_the_active_run_loadable(built, tmp_path, monkeypatch):
    store, _ = built
    settings = dataclasses.replace(_settings(tmp_path), data_dir=store.root)
    first = pipeline.train_step(settings, "NYSE", _cfg(), "always")
    second = pipeline.train_step(settings, "NYSE", _cfg(training_days=100), "never")
    reg = Registry(settings.artifacts_dir, "NYSE")
    monkeypatch.setenv("RETRAIN_FAULT", "registry.between_active_files:raise")
    with pytest.raises(RuntimeError, match="injected fault"):
        reg.promote(second.run_id)  # registry.json and the model copy updated, the meta copy not
    monkeypatch.delenv("RETRAIN_FAULT")
    model_path, meta_path = reg.active_paths("v1", "NYSE")
    assert json.loads(meta_path.read_text())["run_id"] == first.run_id  # the pair is mismatched...
    assert reg.load_active("v1", "NYSE").meta["run_id"] == second.run_id  # ...yet the active run loads
    model_path.write_bytes(model_path.read_bytes()[:-10])  # anything else is still refused
    with pytest.raises(RetrainError, match="sha256"):
        reg.load_active("v1", "NYSE")
    reg.promote(second.run_id)  # promoting again repairs the copies
    assert reg.load_file(model_path, meta_path).meta["run_id"] == second.run_id


def _fake_run(reg: Registry, run_id: str, version: str = "v1", scope: str = "NYSE", day: int = 1,
              routine: str | None = None) -> str:
    """A run folder with a stand-in model: the registry only hashes, copies and unpickles it."""
    meta = {"feature_version": version, "scope": scope, "run_id": run_id, "feature_columns": ["a"],
            "created_at": f"2025-10-{day:02d}T00:00:00+00:00",
            "training_window": {"start": "2025-06-01", "end": f"2025-09-{day:02d}"}}
    if routine:
        meta["record"] = {"routine": routine}
    return reg.create_run({"stand-in": run_id}, meta)[0]


def test_prune_keeps_the_active_runs_and_what_rollback_needs(tmp_path, cli):
    reg = Registry(tmp_path / "artifacts", "NYSE")
    ids = [_fake_run(reg, f"r{i}", day=i + 1, routine=f"routine{min(i, 1)}") for i in range(6)]
    records = RecordStore(tmp_path / "artifacts")
    for routine in ("routine0", "routine1", "orphan"):  # r0 alone was judged on routine0; no run on orphan
        folder = records.folder("v1", "NYSE", routine)
        folder.mkdir(parents=True)
        (folder / "block-2025-09-01.parquet").write_bytes(b"stand-in")
    for run_id in ids[:4]:  # r0..r3 were active in turn; r4, r5 are candidates
        reg.promote(run_id)
    other = _fake_run(reg, "t0", scope="TSE", day=1)
    reg.promote(other)
    plan = [r["run_id"] for r in reg.prune_plan(2)]
    # kept: the 2 newest (r4, r5), the active r3, the last 2 of its rollback history (r1, r2), TSE's t0
    assert plan == ["r0"]
    listed = cli("models", "prune", "--keep", "2")
    assert listed.exit_code == 1 and "r0" in listed.output and "--yes" in listed.output
    assert "routine routine0, 1 block(s)" in listed.output and "routine orphan" in listed.output
    assert (reg.runs_dir / "r0").is_dir() and records.folder("v1", "NYSE", "orphan").is_dir()  # a dry run
    done = cli("models", "prune", "--keep", "2", "--yes")
    assert done.exit_code == 0, done.output
    assert [f[2] for f in records.folders()] == ["routine1"]  # the record the remaining runs were judged on
    assert sorted(r["run_id"] for r in reg.runs()) == ["r1", "r2", "r3", "r4", "r5", "t0"]
    assert reg.rollback("v1", "NYSE") == ("r3", "r2") and reg.rollback("v1", "NYSE") == ("r2", "r1")
    with pytest.raises(RetrainError, match="roll back"):
        reg.rollback("v1", "NYSE")
    assert [r["run_id"] for r in reg.prune_plan(1)] == ["r2", "r3", "r4"]  # r1 is active, r5 the newest


def test_after_a_bump_another_scope_says_which_run_to_do(tmp_path):
    reg = Registry(tmp_path / "artifacts", "NASDAQ")
    reg.promote(_fake_run(reg, "nyse-v1", scope="NYSE"))
    reg.promote(_fake_run(reg, "nasdaq-v2", version="v2", scope="NASDAQ"))
    with pytest.raises(RetrainError) as err:
        reg.load_active("v2", "NYSE")
    assert "no active v2 model for NYSE" in err.value.message
    assert "`retrain run --exchange NYSE`" in err.value.hint and "--version v1" in err.value.hint
    from retrain import runner

    settings = dataclasses.replace(load_settings(artifacts_dir=tmp_path / "artifacts", data_dir=tmp_path / "d"),
                                   default_exchange="NASDAQ")
    assert runner._stranded(settings, "v2", "NASDAQ") == ["NYSE"]


def test_the_final_model_file_is_the_same_on_any_number_of_threads(built):
    """The trees are the same on any number of threads; the early-stopping score the model
    carries is computed again so that it is too: the same rows give the same model.joblib."""
    import io

    import joblib

    store, _ = built
    cfg = _cfg(training_days=60)
    prep, window, _ = _folds(store, cfg)
    rows = prep.data.filter(pl.col("trade_date") >= window[0])  # prepared by load_frame
    files = []
    for threads in (1, 2):
        tcfg = dataclasses.replace(cfg, params={**cfg.params, "num_threads": threads})
        model, rounds, _ = training.fit_final(rows, tcfg, prep.columns)
        assert model.best_score["valid_0"]["l2"] > 0
        model.params["num_threads"] = 2  # as Fits writes it: the configured threads
        text = model.model_to_string(num_iteration=-1).replace("[num_threads: 1]", "[num_threads: 2]")
        buf = io.BytesIO()
        joblib.dump((text, rounds, dict(model.best_score)), buf)
        files.append(buf.getvalue())
    assert files[0] == files[1]


def test_a_fit_given_every_thread_part_way_and_arrow_input_give_the_same_trees(built, monkeypatch):
    """A fit left alone takes the threads a finished one left (``pipeline._Lanes``) from its next
    round on; its Dataset is built from Arrow columns (``lgbm.columns``). Neither changes a tree."""
    import threading

    from retrain import lgbm

    store, _ = built
    cfg = _cfg(training_days=60)
    prep, window, _ = _folds(store, cfg)
    rows = prep.data.filter(pl.col("trade_date") >= window[0])
    one = dataclasses.replace(cfg, params={**cfg.params, "num_threads": 1})

    def trees(stop=None) -> str:
        model, _, _ = training.fit_final(rows, one, prep.columns, stop=stop)
        text = model.model_to_string(num_iteration=-1)
        return text[:text.index("end of trees")]

    alone = trees()

    class Widen(threading.Event):  # as _Lanes does once the caller waits for the last fit
        rounds = 0

        def each_round(self):
            self.rounds += 1
            if self.rounds == 5:
                assert lgbm.set_threads(2)
    widen = Widen()
    assert trees(widen) == alone and widen.rounds > 5
    monkeypatch.setattr(lgbm, "columns", lambda x, names: x)  # the matrix itself, as before 4.7
    assert trees() == alone


def test_the_fits_share_of_threads(monkeypatch):
    from retrain import lgbm

    calls = []
    monkeypatch.setattr(lgbm, "set_threads", lambda n: calls.append(n) or True)
    lanes = pipeline._Lanes(half=1, total=2)
    lanes.submitted()
    lanes.submitted()
    with lanes.fitting():
        with lanes.fitting():
            with lanes.waited():
                lanes.each_round()  # two fits running: each keeps its half
        lanes.each_round()  # alone, but nobody waits for it: the caller's own work has the other core
        assert calls == []
        with lanes.waited():
            lanes.each_round()  # alone, and the caller waits: every thread
    assert calls == [2]
    lanes.set()
    assert lanes.is_set()


def test_a_held_fit_starts_after_the_blocks_or_when_its_result_is_wanted():
    """The final fit, when blocks are to be trained, is held back until they are queued
    (``Fits.release``), so that the caller's record and report are done beside the last fit."""
    fits = pipeline.Fits(_cfg())
    started = []
    final = fits._submit(lambda: started.append("final") or "model", hold=True)
    block = fits._submit(lambda: started.append("block") or "frame")
    assert block.result() == "frame" and started == ["block"] and not final.done()
    assert final.result() == "model" and started == ["block", "final"]  # wanted: released
    never = fits._submit(lambda: started.append("never"), hold=True)
    fits.close()
    assert never.cancelled() and started == ["block", "final"]


@pytest.mark.parametrize(("value", "message"), [
    ([1, -1], "has 2 value(s), and the feature set has"),
    ("categorical", "constrains the categorical feature(s) day_of_week"),
])
def test_monotone_constraints_lightgbm_would_abort_on_are_refused_first(value, message):
    columns = features.feature_columns("v1")
    if value == "categorical":
        value = [1 if c == "day_of_week" else 0 for c in columns]
    with pytest.raises(RetrainError, match=re.escape(message)):
        training.check_params({"monotone_constraints": value}, columns)
    training.check_params({"monotone_constraints": [0] * len(columns)}, columns)  # one per column: fine
