"""`retrain remove`: a wrong ingest undone (bars, labels, symbol entry, feature rows), the original
untouched, and the next incremental indicators + features equal to a store that never had it."""

from __future__ import annotations

import datetime as dt
import shutil
from pathlib import Path

import polars as pl
import pytest

from retrain import catalog, sample, steps
from retrain import remove as rm
from retrain.errors import RetrainError
from retrain.store import Store
from tests.conftest import cli_in

END = dt.date(2025, 10, 17)
KEYS = ["exchange", "symbol", "trade_date"]
VALUE = ["exchange", "symbol", "date", "open", "high", "low", "close", "adj_close", "volume"]


@pytest.fixture(scope="module")
def market():
    return sample.generate(symbols=60, days=120, seed=21, end=END)


def _seed(root: Path, market) -> Store:
    bars, syms = market
    store = Store(root)
    with store.lock("test"):
        store.upsert_bars(bars.select(VALUE))
        store.upsert_symbols(syms)
    return store


def _ok(result):
    assert result.exit_code == 0, result.output
    return result


def _features(store: Store, version: str = "v1", exchange: str | None = None) -> pl.DataFrame:
    lf = store.scan_table("features", version, exchange)
    return lf.collect().select(*KEYS, pl.exclude(KEYS)).sort(KEYS)


def _bars(store: Store, exchange: str | None = None, ids: bool = False) -> pl.DataFrame:
    df = store.scan_bars(exchange).collect().sort("exchange", "symbol", "date")
    return df if ids else df.drop("ingest_id")


def _fresh(root: Path, market, version: str = "v1") -> Store:
    """A store that never had the wrong ingest, built from scratch."""
    store = _seed(root, market)
    steps.indicators(store, store.exchanges())
    steps.features(store, version, store.exchanges())
    return store


@pytest.fixture(scope="module")
def built(tmp_path_factory, market) -> Path:
    """The store of a market that never had the wrong ingest, built once (``_fresh``): tests take
    copies of it."""
    return _fresh(tmp_path_factory.mktemp("remove") / "data", market).root


def _copy(built: Path, root: Path) -> Store:
    """A store equal to ``_fresh(root, market)``: a copy of the one built once."""
    shutil.copytree(built, root)
    return Store(root)


@pytest.fixture(scope="module")
def wrong_built(tmp_path_factory, market) -> tuple[Path, str]:
    """The sample market, plus a TSE symbol's bars ingested as NYSE by mistake (with its sector),
    indicators, features (v1 and v2) and labels built, once. Returns (project folder, symbol)."""
    root = tmp_path_factory.mktemp("wrong")
    bars, syms = market
    store = _seed(root / "data", market)
    sym = syms.filter(pl.col("exchange") == "TSE")["symbol"][0]
    mine = bars.filter((pl.col("exchange") == "TSE") & (pl.col("symbol") == sym))
    mine.drop("exchange").write_csv(root / "wrong.csv")
    syms.filter(pl.col("symbol") == sym).select("symbol", "name", "sector").write_csv(root / "wrong_symbols.csv")
    with pytest.MonkeyPatch.context() as mp:
        cli = cli_in(root, mp)
        r = _ok(cli("ingest", str(root / "wrong.csv"), "--exchange", "NYSE", "--format", "long",
                    "--symbols-file", str(root / "wrong_symbols.csv"), "--as-of", str(END)))
        assert "rejected" in r.output.lower()  # TSE-only sessions are not NYSE sessions
        _ok(cli("indicators"))
        _ok(cli("features"))
        _ok(cli("labels", "--as-of", str(END)))
    steps.features(store, "v2", store.exchanges())  # an older/other version on disk loses its rows too
    assert _bars(store, "NYSE").filter(pl.col("symbol") == sym).height > 60
    return root, sym


@pytest.fixture
def wrong(tmp_path, wrong_built, cli):
    """A copy of ``wrong_built``'s store at tmp_path / "data" (where ``cli`` works): (store, symbol)."""
    root, sym = wrong_built
    return _copy(root / "data", tmp_path / "data"), sym


def test_without_yes_nothing_changes(wrong, cli, tmp_path):
    store, sym = wrong
    files = {p: p.read_bytes() for p in sorted((tmp_path / "data").rglob("*.parquet"))}
    r = cli("remove", "--exchange", "NYSE", "--symbol", sym)
    assert r.exit_code == 1
    n = _bars(store, "NYSE").filter(pl.col("symbol") == sym).height
    rows = _features(store, "v1", "NYSE").filter(pl.col("symbol") == sym).height
    assert f"Would remove {n:,} {sym} bars" in r.output
    assert f"its symbol entry ({sym}, NYSE) goes" in r.output
    assert f"v1 {rows:,}, v2 {rows:,}" in r.output
    assert "a dry run without --yes" in r.output and f"retrain remove --exchange NYSE --symbol {sym} --yes" in r.output
    assert {p: p.read_bytes() for p in sorted((tmp_path / "data").rglob("*.parquet"))} == files


def test_remove_wrong_ingest_then_incremental_equals_never_ingested(wrong, cli, built, tmp_path):
    store, sym = wrong
    tse_bars, tse_features = _bars(store, "TSE", ids=True), _features(store, "v1", "TSE")
    r = _ok(cli("remove", "--exchange", "NYSE", "--symbol", sym.lower(), "--yes"))
    assert f"its symbol entry ({sym}, NYSE) went" in r.output and "retrain indicators` then `retrain features" in r.output
    # gone: bars, labels, symbol entry, feature rows of every version
    assert _bars(store, "NYSE").filter(pl.col("symbol") == sym).is_empty()
    con = catalog.connect(store)
    assert con.execute(f"SELECT count(*) FROM labels WHERE symbol = '{sym}' AND exchange = 'NYSE'").fetchall()[0][0] == 0
    assert con.execute(f"SELECT count(*) FROM labels WHERE symbol = '{sym}' AND exchange = 'TSE'").fetchall()[0][0] > 0
    con.close()
    assert store.read_symbols().filter((pl.col("symbol") == sym) & (pl.col("exchange") == "NYSE")).is_empty()
    assert not store.read_symbols().filter((pl.col("symbol") == sym) & (pl.col("exchange") == "TSE")).is_empty()
    for version in ("v1", "v2"):
        assert _features(store, version, "NYSE").filter(pl.col("symbol") == sym).is_empty()
    # the original copy is untouched
    assert _bars(store, "TSE", ids=True).equals(tse_bars)
    assert _features(store, "v1", "TSE").equals(tse_features)
    # the next incremental build equals a store that never had the wrong ingest, in both versions
    _ok(cli("indicators"))
    _ok(cli("features"))
    store = Store(store.root)  # a Store remembers file footers until it writes itself: a new one sees the CLI's
    steps.features(store, "v2", store.exchanges())
    fresh = _copy(built, tmp_path / "fresh")
    steps.features(fresh, "v2", fresh.exchanges())
    assert _bars(store).equals(_bars(fresh))
    for version in ("v1", "v2"):
        assert _features(store, version, "NYSE").equals(_features(fresh, version, "NYSE"))
    assert _features(store, "v1").equals(_features(fresh, "v1"))
    # a rerun finds nothing left: an error that says so
    r = cli("remove", "--exchange", "NYSE", "--symbol", sym, "--yes")
    assert r.exit_code == 1 and f"no bars of {sym} on NYSE" in r.output and "has bars on TSE" in r.output


@pytest.mark.parametrize("start, end", [("2025-07-07", "2025-07-18"), ("2025-06-02", "2025-08-29")])
def test_partial_removal_then_incremental_equals_full_rebuild(tmp_path, market, built, cli, start, end):
    """Bars in the middle of a symbol's history: its later bars are recomputed from the anchor
    (or, after a long gap, from its first bar), and the other symbols' context rows rebuilt."""
    store = _copy(built, tmp_path / "data")
    sym = market[1].filter(pl.col("exchange") == "NYSE")["symbol"][3]
    before = _bars(store, "NYSE").filter(pl.col("symbol") == sym)
    r = _ok(cli("remove", "--exchange", "NYSE", "--symbol", sym, "--start", start, "--end", end, "--yes"))
    gone = before.filter(pl.col("date").is_between(dt.date.fromisoformat(start), dt.date.fromisoformat(end)))
    later = before.filter(pl.col("date") > dt.date.fromisoformat(end)).height
    assert f"Removed {gone.height} {sym} bars ({gone['date'].min()} to {gone['date'].max()}) from NYSE" in r.output
    assert f"{sym} stays listed on NYSE; its {later} later bars will get new indicators" in r.output
    after = _bars(store, "NYSE").filter(pl.col("symbol") == sym)
    assert after.height == before.height - gone.height
    assert after.filter(pl.col("date") > dt.date.fromisoformat(end))["_n"].is_null().all()
    assert not store.read_symbols().filter(pl.col("symbol") == sym).is_empty()
    _ok(cli("indicators"))
    _ok(cli("features"))
    incremental_bars, incremental = _bars(store), _features(store)
    copy = tmp_path / "copy"
    shutil.copytree(tmp_path / "data", copy)
    full = Store(copy)
    steps.indicators(full, full.exchanges(), force=True)
    steps.features(full, "v1", full.exchanges(), full_rebuild=True)
    assert incremental_bars.equals(_bars(full))
    assert incremental.equals(_features(full))
    # the rows the removed bars served now come from the bar before them (when it has enough history)
    served = incremental.filter((pl.col("exchange") == "NYSE") & (pl.col("symbol") == sym)
                                & pl.col("trade_date").is_between(gone["date"].min(), gone["date"].max()))
    assert served["prev_close"].n_unique() == (1 if start == "2025-07-07" else 0)


@pytest.mark.parametrize("point", ["remove.recorded", "remove.features", "remove.between_months"])
def test_a_crashed_removal_finishes_on_rerun(tmp_path, market, built, monkeypatch, point):
    store = _copy(built, tmp_path / "data")
    sym = market[1].filter(pl.col("exchange") == "NYSE")["symbol"][5]
    start, end = dt.date(2025, 6, 16), dt.date(2025, 8, 8)  # three month files
    monkeypatch.setenv("RETRAIN_FAULT", f"{point}:raise")
    with pytest.raises(RuntimeError, match="injected fault"):
        rm.remove(store, "NYSE", [sym], start, end)
    monkeypatch.delenv("RETRAIN_FAULT")
    done = rm.remove(Store(tmp_path / "data"), "NYSE", [sym], start, end)
    assert done.done
    store = Store(tmp_path / "data")
    steps.indicators(store, store.exchanges())
    steps.features(store, "v1", store.exchanges())
    clean = _copy(built, tmp_path / "clean")
    rm.remove(clean, "NYSE", [sym], start, end)
    steps.indicators(clean, clean.exchanges())
    steps.features(clean, "v1", clean.exchanges())
    assert _bars(store).equals(_bars(clean))
    assert _features(store).equals(_features(clean))
    assert _bars(store, "NYSE").filter((pl.col("symbol") == sym) & pl.col("date").is_between(start, end)).is_empty()


def test_several_symbols_and_a_dangling_entry(tmp_path, market, built):
    store = _copy(built, tmp_path / "data")
    a, b = market[1].filter(pl.col("exchange") == "NASDAQ")["symbol"][:2]
    with store.lock("test"):  # an entry with no bars (a removal killed just before the symbols file)
        store.upsert_symbols(pl.DataFrame({"symbol": ["ZZZ"], "exchange": ["NASDAQ"], "name": ["Z"], "sector": [None]}))
    p = rm.plan(store, "NASDAQ", [a, b, "zzz"])
    assert [s.symbol for s in p.symbols] == [a, b, "ZZZ"] and p.symbols[2].bars == 0 and p.entries == [a, b, "ZZZ"]
    assert not p.done and p.feature_rows["v1"] > 0
    done = rm.remove(store, "NASDAQ", [a, b, "ZZZ"])
    assert done.done and done.bars == p.bars
    assert store.read_symbols().filter(pl.col("symbol").is_in([a, b, "ZZZ"])).is_empty()
    assert _features(store, "v1", "NASDAQ").filter(pl.col("symbol").is_in([a, b])).is_empty()


def test_errors_say_what_and_what_next(tmp_path, market, cli):
    store = _seed(tmp_path / "data", market)
    nyse = market[1].filter(pl.col("exchange") == "NYSE")["symbol"].sort().to_list()
    tse = market[1].filter(pl.col("exchange") == "TSE")["symbol"][0]
    r = cli("remove", "--exchange", "NYSX", "--symbol", nyse[0])
    assert r.exit_code == 1 and "unknown exchange 'NYSX'" in r.output and "NASDAQ, NYSE, TSE" in r.output
    typo = nyse[0][:-1] + ("X" if nyse[0][-1] != "X" else "Y")
    r = cli("remove", "--exchange", "NYSE", "--symbol", typo)
    assert r.exit_code == 1 and f"no bars of {typo} on NYSE" in r.output and nyse[0] in r.output
    r = cli("remove", "--exchange", "NYSE", "--symbol", tse)
    assert r.exit_code == 1 and f"{tse} has bars on TSE" in r.output
    r = cli("remove", "--exchange", "NYSE", "--symbol", nyse[0], "--start", "2025-08-01", "--end", "2025-07-01")
    assert r.exit_code == 1 and "--start 2025-08-01 is after --end 2025-07-01" in r.output
    r = cli("remove", "--exchange", "NYSE", "--symbol", nyse[0], "--end", "2025-02-30")
    assert r.exit_code == 1 and "--end: '2025-02-30' is not a date" in r.output
    r = cli("remove", "--exchange", "NYSE", "--symbol", nyse[0], "--start", "2026-01-01")
    assert r.exit_code == 1 and "between 2026-01-01 and the last bar" in r.output and "bars run from" in r.output
    with pytest.raises(RetrainError, match="no bars for exchange TSE"):
        rm.plan(Store(tmp_path / "empty"), "TSE", ["X"])
    assert _bars(store).height == market[0].height  # nothing changed


def test_served_range_and_mark_session():
    fri, mon = dt.date(2025, 10, 10), dt.date(2025, 10, 13)
    assert rm.served_range("NYSE", fri, fri, None) == (mon, mon)
    assert rm.served_range("NYSE", fri, mon, dt.date(2025, 10, 20)) == (mon, dt.date(2025, 10, 20))
    assert rm.mark_session(fri, mon) == fri and rm.mark_session(None, mon) == mon and rm.mark_session(None, None) is None
    assert rm.months_between(dt.date(2024, 11, 30), dt.date(2025, 2, 1)) == ["2024-11", "2024-12", "2025-01", "2025-02"]

