"""The out-of-sample record: blocks on a fixed grid reused week to week (bit for bit), retrained
when their rows or routine change, rebuilt when unreadable; and the calibration of the verdict,
on record statistics and on small sample markets end to end."""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import io
import json

import joblib
import numpy as np
import polars as pl
import pytest

from retrain import backtest as bt
from retrain import pipeline, sample, training
from retrain.config import load_settings
from retrain.record import RecordStore
from retrain.store import Store
from tests.test_training import _cfg, _market

T1 = dt.date(2025, 10, 10)  # a Friday
T2 = dt.date(2025, 10, 17)  # five sessions later
CONFIG = '[features]\nversion = "v1"\n\n[run]\nexchange = "NASDAQ"\n'


def _summary(result) -> dict:
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_weekly_cycle_reuses_last_weeks_blocks_bit_for_bit(tmp_path, cli):
    bars, syms = sample.generate(symbols=120, days=200, seed=11, end=T2)
    (tmp_path / "retrain.toml").write_text(CONFIG)
    store = Store(tmp_path / "data")
    with store.lock("test"):
        store.upsert_bars(bars.filter(pl.col("date") <= T1))
        store.upsert_symbols(syms)
    first = cli("run", "--as-of", str(T1), "--json")
    assert first.exit_code == 0, first.output
    one = _summary(first)
    with store.lock("test"):  # the week's bars arrive
        store.upsert_bars(bars.filter(pl.col("date") > T1))
    second = cli("run", "--as-of", str(T2), "--json")
    assert second.exit_code == 0, second.output
    two = _summary(second)
    r1 = json.loads((tmp_path / one["run_dir"] / "meta.json").read_text())["record"]
    r2 = json.loads((tmp_path / two["run_dir"] / "meta.json").read_text())["record"]
    assert r1["blocks_trained"] == r1["blocks"] and r1["blocks_reused"] == 0
    # the second run meets every block of the first again and trains only the new week's
    assert r2["blocks_reused"] == r1["blocks"] and r2["blocks_trained"] == 1
    assert r2["blocks"] == r1["blocks"] + 1 and r2["sessions"] == r1["sessions"] + 5
    assert "1 trained" in second.output and f"{r1['blocks']} reused" in second.output
    p1 = pl.read_parquet(tmp_path / one["run_dir"] / "record_predictions.parquet")
    p2 = pl.read_parquet(tmp_path / two["run_dir"] / "record_predictions.parquet")
    assert p2.filter(pl.col("trade_date") <= T1).equals(p1)  # identical, bit for bit
    # the verdict is judged on the whole record and comes with its uncertainty
    assert two["backtest"]["verdict"] in bt.GRADES
    assert "Sharpe Ratio:" in second.output and "PSR(0)" in second.output and "(90%:" in second.output
    assert f"{two['backtest']['verdict']} BACKTEST: " in second.output
    page = (tmp_path / two["run_dir"] / "report.html").read_text()
    assert "Promotion gate:</b> not significantly worse than the active model" in page  # decided before it is drawn
    assert two["gate"]["outcome"] == "not different" and two["gate"]["same_routine"]
    listed = cli("models", "list")
    assert "verdict" in listed.output and f"({r2['sessions']})" in listed.output
    q = cli("query", "SELECT verdict, record_sessions, gate_outcome FROM runs ORDER BY created_at", "--format", "csv")
    assert q.exit_code == 0 and f"{two['backtest']['verdict']},{r2['sessions']},not different" in q.output


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    root = tmp_path_factory.mktemp("record")
    store = _market(root / "data", symbols=90, days=140)
    (root / "retrain.toml").write_text('[run]\nexchange = "ALL"\n')
    return store, root


def _backtest(store, root, cfg=None, window=None, artifacts=None):
    settings = load_settings(data_dir=store.root, artifacts_dir=artifacts or root / "artifacts",
                             config=root / "retrain.toml")
    end = pipeline.last_labelled(store, "v1", "ALL")
    window = window or (end - dt.timedelta(days=20), end)
    with store.lock("test"):
        return pipeline.backtest(store, settings, "v1", "ALL", cfg or _cfg(min_rows=100), window, bt.BacktestConfig())


def test_changed_rows_routines_and_unreadable_files(small):
    store, root = small
    first = _backtest(store, root)
    assert first.record_info["blocks_reused"] == 0
    again = _backtest(store, root)
    assert again.record_info["blocks_trained"] == 0 and again.record_predictions.equals(first.record_predictions)
    # another routine has its own record: nothing of the first is mixed in
    other = _backtest(store, root, _cfg(min_rows=100, num_boost_round=150))
    assert other.record_info["blocks_reused"] == 0 and other.record_info["routine"] != first.record_info["routine"]
    # an unreadable file is named, and its block rebuilt to the same predictions
    records = RecordStore(root / "artifacts")
    folder = next(p for p in records.root.glob("v1/ALL/*") if p.name == first.record_info["routine"])
    victim = sorted(folder.glob("block-*.parquet"))[0]
    victim.write_bytes(victim.read_bytes()[: 100])
    rebuilt = _backtest(store, root)
    assert rebuilt.record_info["blocks_repredicted"] == 1 and any(str(victim) in w for w in rebuilt.warnings)
    assert rebuilt.record_info["blocks_trained"] == 0  # its stored model predicts it again
    assert rebuilt.record_predictions.equals(first.record_predictions)
    model = folder / f"model-{rebuilt.record_predictions['model_fingerprint'][0][:32]}.txt"
    model.write_text(model.read_text()[:200])  # a torn model file is trained again
    victim.unlink()
    again = _backtest(store, root)
    assert again.record_info["blocks_trained"] == 1 and again.record_predictions.equals(first.record_predictions)


def test_blocks_trained_two_at_a_time_are_those_trained_one_after_the_other(small, tmp_path, monkeypatch):
    store, root = small
    paired = _backtest(store, root, artifacts=tmp_path / "paired")  # [model] num_threads = 2: two fits at once
    assert paired.record_info["blocks_trained"] >= 3  # two pairs' worth at least, and an odd one maybe
    monkeypatch.setattr(pipeline, "_blocks_in_pairs", lambda *a: contextlib.nullcontext({}))
    alone = _backtest(store, root, artifacts=tmp_path / "alone")
    assert alone.record_predictions.equals(paired.record_predictions)
    # the stored models and blocks too, byte for byte (the models' text names the configured threads)
    one, two = (sorted((tmp_path / x).rglob("*.txt")) for x in ("paired", "alone"))
    assert len(one) == paired.record_info["blocks_trained"] and [p.name for p in one] == [p.name for p in two]
    assert all(a.read_bytes() == b.read_bytes() for a, b in zip(one, two))
    assert all("[num_threads: 2]" in a.read_text() for a in one)


def test_a_week_in_progress_is_predicted_again_by_its_stored_model(small, tmp_path):
    store, root = small
    wed, fri = dt.date(2025, 10, 15), dt.date(2025, 10, 17)
    start = wed - dt.timedelta(days=20)
    midweek = _backtest(store, root, window=(start, wed), artifacts=tmp_path / "art")
    friday = _backtest(store, root, window=(start, fri), artifacts=tmp_path / "art")
    info = friday.record_info
    assert info["blocks_trained"] == 0 and info["blocks_repredicted"] == 1 and info["blocks_reused"] == info["blocks"] - 1
    # the same model predicts the week's earlier sessions exactly as it did on Wednesday
    assert friday.record_predictions.filter(pl.col("trade_date") <= wed).equals(midweek.record_predictions)
    fresh = _backtest(store, root, window=(start, fri), artifacts=tmp_path / "fresh")  # trained from scratch
    assert fresh.record_info["blocks_trained"] == fresh.record_info["blocks"]
    assert fresh.record_predictions.equals(friday.record_predictions)


def test_a_block_whose_rows_change_gets_a_new_fingerprint():
    days = [dt.date(2025, 9, 1) + dt.timedelta(days=i) for i in range(40)]
    sessions = [d for d in days if d.weekday() < 5]
    hashes = {d: f"h{d}" for d in sessions}
    rows = dict.fromkeys(sessions, 100)
    cfg, bcfg = _cfg(training_days=14, min_rows=100, embargo=1), bt.BacktestConfig()
    ids = sorted({bt.block_id(d, 5) for d in sessions})[3:]
    before, problems = bt.plan_blocks(sessions, ids, cfg, bcfg, "routine", hashes, rows)
    assert not problems and all(len(b.sessions) == 5 for b in before)  # Monday to Friday, on the grid
    assert all(b.key == str(b.sessions[0]) and b.sessions[0].weekday() == 0 for b in before)
    def changed(day):
        after, _ = bt.plan_blocks(sessions, ids, cfg, bcfg, "routine", {**hashes, day: "re-ingested"}, rows)
        return [a.fingerprint != b.fingerprint for a, b in zip(after, before)]

    assert changed(before[0].train[0]) == [True] + [False] * (len(before) - 1)  # only block 1 trains on it
    assert changed(before[-1].sessions[0]) == [False] * (len(before) - 1) + [True]  # the last block's own rows
    assert changed(before[0].sessions[-2])[:2] == [True, True]  # block 1's Thursday: in block 2's training window
    assert changed(before[0].sessions[-1])[:2] == [True, False]  # its Friday: block 2's embargo leaves it out
    other, _ = bt.plan_blocks(sessions, ids, cfg, bcfg, "another routine", hashes, rows)
    assert all(a.fingerprint != b.fingerprint for a, b in zip(other, before))
    # a block that cannot be formed says why
    _, problems = bt.plan_blocks(sessions, ids, dataclasses.replace(cfg, min_rows=10_000), bcfg, "r", hashes, rows)
    assert all("Insufficient training samples" in p for p in problems.values())


# ------------------------------------------------------------------ calibration
def _record(rng, n: int, edge: float, ic: float):
    """Daily net returns, universe returns and rank ICs of a top-N strategy: the rank IC moves
    the day's return (correlation 0.6), fat-tailed noise, ``edge`` mean daily return."""
    ric = rng.normal(ic, 0.06, n)
    noise = rng.standard_t(4, n) / np.sqrt(2)
    r = edge + 0.01 * (0.6 * (ric - ic) / 0.06 + 0.8 * noise)
    return r, rng.normal(0, 0.008, n), ric


def test_calibration_on_record_statistics():
    rng = np.random.default_rng(20261129)
    null = [bt.verdict(bt.verdict_figures(*_record(rng, n, 0.0, 0.0)))
            for n in (21, 30, 42, 63, 126, 252) for _ in range(50)]
    good = sum(v in {"GOOD", "EXCELLENT"} for v in null)
    assert good <= 0.05 * len(null), f"{good} of {len(null)} no-signal records graded GOOD or EXCELLENT"
    # with costs, no signal is a losing strategy: a long record says so
    costly = [bt.verdict(bt.verdict_figures(*_record(rng, 252, -0.002, 0.0))) for _ in range(30)]
    assert sum(v == "POOR" for v in costly) >= 27
    # a planted edge (Sharpe about 4.5, rank IC 0.03) is found on half a year, and more surely on a year
    planted = [bt.verdict(bt.verdict_figures(*_record(rng, n, 0.0028, 0.03))) for n in (126, 252) for _ in range(50)]
    found = sum(v in {"GOOD", "EXCELLENT"} for v in planted)
    assert found >= 0.9 * len(planted), f"only {found} of {len(planted)} planted-signal records found"


@pytest.mark.parametrize("signal, seed", [(False, 31), (False, 32), (3.0, 33)])
def test_calibration_end_to_end_on_sample_markets(tmp_path, signal, seed):
    store = _market(tmp_path / "data", signal=signal, symbols=150, days=150, seed=seed)
    (tmp_path / "retrain.toml").write_text('[run]\nexchange = "ALL"\n')
    end = pipeline.last_labelled(store, "v1", "ALL")
    out = _backtest(store, tmp_path, _cfg(training_days=90, min_rows=100), (end - dt.timedelta(days=59), end))
    grade = out.record_info["verdict"]
    if signal:
        assert grade in {"GOOD", "EXCELLENT"}, out.record_info["reason"]
    else:
        assert grade not in {"GOOD", "EXCELLENT"}, out.record_info["reason"]


def test_the_record_grows_back_to_its_oldest_block_and_keeps_record_sessions():
    days = [dt.date(2025, 6, 2) + dt.timedelta(days=i) for i in range(140)]
    sessions = [d for d in days if d.weekday() < 5]
    prep = pipeline.Prepared(None, None, None, None, sessions, {d: f"h{d}" for d in sessions},
                             dict.fromkeys(sessions, 100))
    cfg = _cfg(training_days=14, min_rows=100)
    end = sessions[-1]
    window = (end - dt.timedelta(days=13), end)  # two weeks
    first_day = sessions[30]
    blocks, earlier = pipeline.plan_record(prep, window, first_day, cfg, bt.BacktestConfig(record_sessions=500), "r")
    assert [b.id for b in blocks] == list(range(blocks[0].id, blocks[-1].id + 1))  # contiguous weeks
    assert blocks[0].sessions[0] == first_day and earlier == len(blocks) - 2
    capped, earlier = pipeline.plan_record(prep, window, first_day, cfg, bt.BacktestConfig(record_sessions=22), "r")
    assert sum(len(b.sessions) for b in capped) <= 22 and earlier == 2 and capped == blocks[-4:]
    # the window's blocks stay whatever the cap
    tiny, earlier = pipeline.plan_record(prep, window, first_day, cfg, bt.BacktestConfig(record_sessions=1), "r")
    assert earlier == 0 and tiny == blocks[-2:]


def test_the_final_model_fitted_beside_blocks_is_the_one_fitted_alone(small):
    store, root = small
    cfg = _cfg(min_rows=100)
    settings = load_settings(data_dir=store.root, artifacts_dir=root / "artifacts", config=root / "retrain.toml")
    end = pipeline.last_labelled(store, "v1", "ALL")
    window = pipeline.training_window(store, "v1", "ALL", cfg.training_days, end)
    columns = pipeline.steps.feature_columns(store, settings.feature_version)
    rows = pipeline.load_frame(store, "v1", "ALL", cfg, window)
    with pipeline.fits_in_pairs(cfg) as fits:  # [model] num_threads = 2: one each when paired
        assert fits.half == 1
        paired, alone = fits.final(rows, columns, cfg, alone=False), fits.final(rows, columns, cfg, alone=True)
        (p_model, p_rounds, _), (a_model, a_rounds, _) = paired.result(), alone.result()
    text = p_model.model_to_string(num_iteration=-1)
    assert p_rounds == a_rounds and text == a_model.model_to_string(num_iteration=-1)
    assert "\n[num_threads: 2]\n" in text  # as a fit on the configured threads writes it
    assert p_model.best_iteration == a_model.best_iteration == p_rounds and p_model.params["num_threads"] == 2
    saved = []
    for model in (p_model, a_model):  # model.joblib is the same whatever the record's state
        buffer = io.BytesIO()
        joblib.dump(model, buffer)
        saved.append(buffer.getvalue())
    assert saved[0] == saved[1]


def test_an_error_beside_the_fits_gives_them_up_at_their_next_round(small):
    store, root = small
    cfg = _cfg(min_rows=100, num_boost_round=100_000, early_stopping_rounds=100_000)  # would run for minutes
    end = pipeline.last_labelled(store, "v1", "ALL")
    window = pipeline.training_window(store, "v1", "ALL", cfg.training_days, end)
    columns = pipeline.steps.feature_columns(store, "v1")
    rows = pipeline.load_frame(store, "v1", "ALL", cfg, window)
    with pytest.raises(KeyboardInterrupt), pipeline.fits_in_pairs(cfg) as fits:
        final = fits.final(rows, columns, cfg, alone=True)
        raise KeyboardInterrupt  # Ctrl-C while the final model is fitted in the background
    with pytest.raises(training.Stopped):
        final.result()
