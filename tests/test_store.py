"""Store: atomic writes under exceptions and SIGKILL, the writer lock, DuckDB views, read-only query."""

from __future__ import annotations

import datetime as dt
import json
import signal

import polars as pl
import pytest

from retrain import query as q
from retrain.errors import LockBusy, RetrainError
from retrain.store import Store
from tests.conftest import bars_of, run_cli, run_cli_here, write

D = dt.date


def _bars(symbol: str, dates: list[dt.date], close: float = 10.5) -> pl.DataFrame:
    n = len(dates)
    return pl.DataFrame({
        "exchange": ["NYSE"] * n, "symbol": [symbol] * n, "date": dates,
        "open": [10.0] * n, "high": [11.0] * n, "low": [9.0] * n, "close": [close] * n,
        "adj_close": [close] * n, "volume": [100] * n,
    })


def test_partition_layout_one_file_per_exchange_month(store):
    with store.lock("test"):
        store.upsert_bars(_bars("A", [D(2024, 1, 2), D(2024, 1, 3), D(2024, 2, 1)]))
    files = [p.relative_to(store.root).as_posix() for p in store.bar_files()]
    assert files == ["day_symbol/exchange=NYSE/month=2024-01/data.parquet",
                     "day_symbol/exchange=NYSE/month=2024-02/data.parquet"]


def test_footer_stats_remembered_across_writes_are_what_the_footers_say(store, monkeypatch):
    from retrain import steps

    reads = []
    read = store._read_file_stats
    monkeypatch.setattr(store, "_read_file_stats", lambda exchange: reads.append(exchange) or read(exchange))
    with store.lock("test"):
        store.upsert_bars(pl.concat([_bars("A", [D(2024, 1, 2), D(2024, 1, 3), D(2024, 2, 1)]),
                                     _bars("B", [D(2024, 2, 1), D(2024, 2, 2)])]))
        assert store.file_stats("NYSE")["stale"].to_list() == [2, 3]  # remembered from here on
        steps.indicators(store, ["NYSE"])  # rewrites both months, with indicators: stale 0
        store.upsert_bars(_bars("A", [D(2024, 3, 1)]))  # an ingest forgets them: read again
        store.file_stats("NYSE")
        steps.indicators(store, ["NYSE"])  # rewrites March only
    remembered = store.file_stats("NYSE")
    assert len(reads) == 2  # the footers were read after each ingest, not after the indicators' writes
    assert remembered["stale"].to_list() == [0, 0, 0] and remembered["rows"].to_list() == [2, 3, 1]
    assert remembered.equals(Store(store.root).file_stats("NYSE"))  # what a fresh read of the footers gives


def test_exception_mid_write_leaves_previous_partition(store, monkeypatch):
    with store.lock("test"):
        store.upsert_bars(_bars("A", [D(2024, 1, 2)]))
    before = bars_of(store)
    path = store.partition_path("NYSE", "2024-01")
    original = path.read_bytes()

    def torn_write(self, file, **kwargs):
        with open(file, "wb") as fh:
            fh.write(b"PAR1 half a file")
        raise OSError("disk full")

    monkeypatch.setattr(pl.DataFrame, "write_parquet", torn_write)
    with pytest.raises(OSError, match="disk full"), store.lock("test"):
        store.upsert_bars(_bars("A", [D(2024, 1, 2)], close=99.0))
    monkeypatch.undo()
    assert path.read_bytes() == original
    assert bars_of(store).equals(before)
    assert sorted(p.name for p in path.parent.iterdir()) == [".data.parquet.xxh3", "data.parquet"]  # no temp file


@pytest.mark.parametrize("point", ["store.before_rename", "store.between_partitions"])
def test_killed_writer_leaves_old_or_new_partitions_and_rerun_completes(tmp_path, point):
    data = tmp_path / "data"
    first = write(tmp_path / "a" / "X.csv", "Date,Open,High,Low,Close,Volume\n"
                  "2024-01-02,10,11,9,10.5,100\n2024-02-01,10,11,9,10.5,100\n")
    # only the killed writer needs a process of its own
    assert run_cli_here(["ingest", str(first), "--exchange", "NYSE"], data).returncode == 0
    store = Store(data)
    before = bars_of(store)
    second = write(tmp_path / "b" / "X.csv", "Date,Open,High,Low,Close,Volume\n"
                   "2024-01-02,10,11,9,10.7,100\n2024-02-01,10,11,9,10.7,100\n")
    killed = run_cli(["ingest", str(second), "--exchange", "NYSE"], data, {"RETRAIN_FAULT": f"{point}:kill"})
    assert killed.returncode == -signal.SIGKILL
    after_kill = bars_of(store)  # every partition readable
    closes = after_kill.sort("date")["close"].to_list()
    if point == "store.before_rename":
        assert after_kill.equals(before)
    else:
        assert closes == [10.7, 10.5]  # first month new, second still old: each file whole
    rerun = run_cli_here(["ingest", str(second), "--exchange", "NYSE"], data)
    assert rerun.returncode == 0, rerun.stderr
    assert bars_of(store).sort("date")["close"].to_list() == [10.7, 10.7]
    assert not list(data.rglob(".tmp-*"))  # debris swept by the next writer


def test_lock_refuses_a_second_writer_and_names_the_holder(store, tmp_path):
    other = Store(store.root)
    with store.lock("retrain ingest something"):
        with pytest.raises(LockBusy) as err, other.lock("retrain sample-data"):
            pass
        msg = str(err.value)
        assert str(store.lock_path) in msg and "pid" in msg and "retrain ingest something" in msg
        f = write(tmp_path / "X.csv", "Date,Open,High,Low,Close,Volume\n2024-01-02,10,11,9,10.5,100\n")
        proc = run_cli(["ingest", str(f), "--exchange", "NYSE"], store.root)
        assert proc.returncode == 3
        assert "locked by pid" in proc.stderr and ".retrain.lock" in proc.stderr
        assert json.loads(store.lock_path.read_text())["command"] == "retrain ingest something"
    with other.lock("again"):  # released
        pass
    assert not store.has_bars()


def test_writes_require_the_lock(store):
    with pytest.raises(RuntimeError, match="lock"):
        store.upsert_bars(_bars("A", [D(2024, 1, 2)]))


def test_views_have_the_contract_columns_even_when_empty(store):
    cols, rows = q.run_query(store, "SELECT * FROM day_symbol")
    assert cols == ["symbol", "exchange", "date", "open", "high", "low", "close", "adj_close", "volume",
                    "rsi", "macd", "macd_signal", "macd_histogram", "atr", "obv"]
    assert rows == []
    cols, _ = q.run_query(store, "SELECT * FROM symbols")
    assert cols == ["symbol", "exchange", "name", "sector"]


def test_query_views_and_types(store):
    with store.lock("test"):
        store.upsert_bars(_bars("A", [D(2024, 1, 2), D(2024, 1, 3)]))
        store.upsert_symbols(pl.DataFrame({"symbol": ["A"], "exchange": ["NYSE"], "name": ["A Co"], "sector": [None]}))
    cols, rows = q.run_query(store, "SELECT s.name, count(*) AS n, max(d.date) AS last, typeof(max(d.volume)) AS t "
                                    "FROM day_symbol d JOIN symbols s USING (exchange, symbol) GROUP BY 1")
    assert rows == [("A Co", 2, D(2024, 1, 3), "BIGINT")]
    assert json.loads(q.render(cols, rows, "json")) == [{"name": "A Co", "n": 2, "last": "2024-01-03", "t": "BIGINT"}]
    assert q.render(cols, rows, "csv").splitlines() == ["name,n,last,t", "A Co,2,2024-01-03,BIGINT"]


@pytest.mark.parametrize("sql, views", [
    ("SELECT count(*) FROM day_symbol", {"day_symbol"}),
    ("select * from DAY_SYMBOL d join Symbols s using (symbol)", {"day_symbol", "symbols"}),
    ('SELECT * FROM "features" WHERE trade_date > (SELECT max(trade_date) FROM labels)', {"features", "labels"}),
    ("SELECT run_id FROM runs; SELECT * FROM main.predictions", {"runs", "predictions"}),
    ("SELECT * FROM day_symbols_extra, features_v2", set(q.VIEWS)),  # longer words name no view
    ("SHOW TABLES", set(q.VIEWS)),
    ("SELECT 1", set(q.VIEWS)),
])
def test_views_named(sql, views):
    assert q.views_named(sql) == views


@pytest.mark.parametrize("sql", [
    "CREATE TABLE t AS SELECT 1",
    "INSERT INTO day_symbol VALUES (1)",
    "COPY (SELECT 1) TO 'out.csv'",
    "SELECT 1; DROP VIEW day_symbol",
    "ATTACH 'x.db'",
])
def test_query_refuses_writes(store, sql):
    with pytest.raises(RetrainError, match="read-only"):
        q.run_query(store, sql)


def test_query_cli(cli):
    r = cli("query", "SELECT 1 AS one", "--format", "csv")
    assert r.exit_code == 0 and r.stdout.strip() == "one\n1"  # stderr: the no-retrain.toml note
    r = cli("query", "DELETE FROM day_symbol")
    assert r.exit_code == 1 and "read-only" in r.output
    r = cli("query", "SELECT nope FROM day_symbol")
    assert r.exit_code == 1 and "SQL error" in r.output


def test_queries_keep_to_their_memory_and_spill_into_a_folder_of_their_own(store, tmp_path, monkeypatch):
    import tempfile

    spill, here = tmp_path / "tmp", tmp_path / "cwd"
    spill.mkdir()
    here.mkdir()
    monkeypatch.chdir(here)
    monkeypatch.setattr(tempfile, "tempdir", str(spill))
    _, rows = q.run_query(store, "SELECT current_setting('memory_limit')")
    assert rows == [("953.6 MiB",)]  # QUERY_MEMORY, 1GB
    monkeypatch.setenv("RETRAIN_QUERY_MEMORY", "40MB")
    # a hash table of 4 M keys is several times 40 MB: DuckDB spills it and still answers
    _, rows = q.run_query(store, "SELECT current_setting('memory_limit'), current_setting('temp_directory'), "
                                 "(SELECT count(*) FROM range(4000000) a JOIN range(4000000) b ON a.range = b.range)")
    assert rows[0][0] == "38.1 MiB" and rows[0][2] == 4_000_000
    assert rows[0][1].startswith(str(spill / "retrain-duckdb-"))
    assert list(here.iterdir()) == [] and list(spill.iterdir()) == []  # nothing left behind
    monkeypatch.setenv("RETRAIN_QUERY_MEMORY", "lots")
    with pytest.raises(RetrainError, match="RETRAIN_QUERY_MEMORY = 'lots' is not a memory size"):
        q.run_query(store, "SELECT 1")


def test_status_of_a_data_directory_that_does_not_exist_says_so(cli, tmp_path):
    r = cli("status", "--data-dir", str(tmp_path / "nowhere"))
    assert r.exit_code == 1 and f"the data directory {tmp_path / 'nowhere'} does not exist" in r.output
    assert not (tmp_path / "nowhere").exists()


def test_an_unknown_exchange_lists_all_only_where_the_option_takes_it(cli):
    from retrain import calendar

    with pytest.raises(RetrainError) as err:
        calendar.normalize_exchange("NASDQ", or_all=True)
    assert err.value.hint == "use one of: NASDAQ, NYSE, TSE, or ALL (every exchange)"
    with pytest.raises(RetrainError) as err:
        calendar.normalize_exchange("NASDQ")
    assert err.value.hint == "use one of: NASDAQ, NYSE, TSE"
    r = cli("indicators", "--exchange", "NASDQ")
    assert r.exit_code == 1 and "or ALL (every exchange)" in r.output
