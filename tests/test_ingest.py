"""Ingest: every format and messy variant, every reject reason, file problems, upsert, --strict."""

from __future__ import annotations

import datetime as dt

import polars as pl
import pytest

from retrain import ingest as ing
from retrain.calendar import AsOf
from tests.conftest import bars_of, write

D = dt.date


def test_yahoo_standard(store, tmp_path, as_of):
    f = write(tmp_path / "in" / "AAPL.csv", """
Date,Open,High,Low,Close,Adj Close,Volume
2024-01-02,187.15,188.44,183.89,185.64,184.94,82488700
2024-01-03,184.22,185.88,183.43,184.25,183.55,58414500
""")
    rep = ing.ingest(store, [f], "NASDAQ", as_of)
    assert (rep.accepted, rep.new, rep.rejected) == (2, 2, 0)
    b = bars_of(store)
    assert b["symbol"].to_list() == ["AAPL", "AAPL"]
    assert b["exchange"].unique().to_list() == ["NASDAQ"]
    assert b.row(0, named=True)["adj_close"] == 184.94
    assert b["volume"].to_list() == [82488700, 58414500]
    assert store.read_symbols().select("symbol", "exchange").rows() == [("AAPL", "NASDAQ")]


def test_yahoo_messy_columns_any_order_case_extra_and_no_adj_close(store, tmp_path, as_of):
    f = write(tmp_path / "msft.csv", """
VOLUME,close,Dividends,LOW,high,OPEN,date,OpenInt
1000.0,10.5,0,9.5,11,10,2024-01-02,0
2000.0,11.5,0,10.5,12,11,2024-01-03,0
""")
    rep = ing.ingest(store, [f], "NYSE", as_of)
    assert rep.accepted == 2 and rep.rejected == 0
    b = bars_of(store)
    assert b["symbol"].unique().to_list() == ["MSFT"]
    assert b.select("open", "high", "low", "close", "adj_close", "volume").row(0) == (10.0, 11.0, 9.5, 10.5, 10.5, 1000)


def test_yahoo_unnamed_date_index_and_unnamed_integer_index(store, tmp_path, as_of):
    # pandas DataFrame.to_csv() with a DatetimeIndex writes an empty header for the date column
    a = write(tmp_path / "in" / "AAA.csv", """
,Open,High,Low,Close,Volume
2024-01-02 00:00:00,10,11,9,10.5,100
2024-01-03 00:00:00,10,11,9,10.5,100
""")
    # an unnamed integer index column first, then Date with US dates and a time
    b_ = write(tmp_path / "in" / "BBB.csv", """
,Date,Open,High,Low,Close,Adj Close,Volume
0,1/2/2024,20,21,19,20.5,20.5,1e3
1,1/3/2024 16:00:00,20,21,19,20.5,20.5,2000.0
""")
    rep = ing.ingest(store, [a, b_], "NYSE", as_of)
    assert rep.file_problems == []
    assert rep.accepted == 4 and rep.rejected == 0
    b = bars_of(store)
    assert b.filter(pl.col("symbol") == "BBB")["date"].to_list() == [D(2024, 1, 2), D(2024, 1, 3)]
    assert b.filter(pl.col("symbol") == "BBB")["volume"].to_list() == [1000, 2000]


def test_iso_dates_with_time_and_timezone(store, tmp_path, as_of):
    f = write(tmp_path / "TZ.csv", """
Date,Open,High,Low,Close,Volume
2024-01-02T00:00:00-05:00,10,11,9,10.5,100
2024-01-03 09:30,10,11,9,10.5,100
""")
    rep = ing.ingest(store, [f], "NASDAQ", as_of)
    assert rep.accepted == 2, rep.rejects


def test_stooq(store, tmp_path, as_of):
    write(tmp_path / "stooq" / "aapl.us.txt", """
<TICKER>,<PER>,<DATE>,<TIME>,<OPEN>,<HIGH>,<LOW>,<CLOSE>,<VOL>,<OPENINT>
AAPL.US,D,20240102,000000,187.15,188.44,183.89,185.64,82488700,0
AAPL.US,D,20240103,000000,184.22,185.88,183.43,184.25,58414500,0
""")
    rep = ing.ingest(store, [tmp_path / "stooq"], "NASDAQ", as_of)
    assert rep.accepted == 2 and rep.rejected == 0
    b = bars_of(store)
    assert b["symbol"].unique().to_list() == ["AAPL"]
    assert b["date"].to_list() == [D(2024, 1, 2), D(2024, 1, 3)]


def test_long_csv_with_exchange_column_and_parquet(store, tmp_path, as_of):
    c = write(tmp_path / "long.csv", """
symbol,date,open,high,low,close,volume,exchange
SHOP,2024-01-02,100,101,99,100.5,10,TSE
XOM,2024-01-02,100,101,99,100.5,10,NYSE
""")
    p = tmp_path / "long.parquet"
    pl.DataFrame({
        "symbol": ["ZZ"], "date": [D(2024, 1, 3)], "open": [5.0], "high": [6.0], "low": [4.0],
        "close": [5.5], "volume": [7], "adj_close": [5.4],
    }).write_parquet(p)
    rep = ing.ingest(store, [c, p], "NASDAQ", as_of)
    assert rep.accepted == 3 and rep.rejected == 0, rep.rejects
    got = bars_of(store).select("exchange", "symbol", "adj_close").rows()
    assert got == [("NASDAQ", "ZZ", 5.4), ("NYSE", "XOM", 100.5), ("TSE", "SHOP", 100.5)]


def test_every_reject_reason_is_quarantined(store, tmp_path, as_of):
    f = write(tmp_path / "long.csv", """
symbol,date,open,high,low,close,volume
OK,2024-01-02,10,11,9,10.5,100
A,2024-01-02,abc,11,9,10.5,100
B,2024-01-02,,11,9,10.5,100
C,2024-01-02,0,11,9,10.5,100
D,2024-01-02,10,11,9,-1,100
E,2024-01-02,10,9.9,9,10.5,100
F,2024-01-02,10,11,10.2,10.5,100
G,2024-01-02,10,11,9,10.5,-5
H,2024-01-01,10,11,9,10.5,100
I,2025-01-02,10,11,9,10.5,100
J,2024-01-03,10,11,9,10.5,100
J,2024-01-03,10,11,9,10.6,100
K,2024-01-04,10,11,9,10.5,100
K,2024-01-04,10,11,9,10.5,100
L,not-a-date,10,11,9,10.5,100
M,2024-01-02,10,11,9,10.5,lots
N,2024-01-02,10,inf,9,10.5,100
O,2024-01-02,10,11,9,inf,100
P,2024-01-02,10,11,9,10.5,1e30
Q,2024-01-02,10,11,9,10.5,inf
""")
    rep = ing.ingest(store, [f], "NYSE", as_of)
    assert rep.accepted == 2  # OK and K (identical duplicates collapse)
    assert rep.rejects == {
        ing.R_OHLC: 4, ing.R_PRICE: 2, ing.R_RANGE: 2, ing.R_DUPLICATE: 2, ing.R_VOLUME_NEG: 1,
        ing.R_SESSION: 1, ing.R_FUTURE: 1, ing.R_DATE: 1, ing.R_VOLUME_BAD: 2, ing.R_VOLUME_BIG: 1,
    }
    # most frequent first, ties in the order of the checks: the same listing on every run
    assert list(rep.rejects) == [ing.R_OHLC, ing.R_PRICE, ing.R_RANGE, ing.R_VOLUME_BAD, ing.R_DUPLICATE, ing.R_DATE,
                                 ing.R_VOLUME_NEG, ing.R_VOLUME_BIG, ing.R_SESSION, ing.R_FUTURE]
    q = pl.read_csv(rep.quarantine, infer_schema=False)
    assert set(q.columns) >= {"source", "line", "symbol", "date", "reason"}
    by_symbol = dict(zip(q["symbol"], q["reason"]))
    assert by_symbol["H"] == ing.R_SESSION and by_symbol["I"] == ing.R_FUTURE
    assert q.filter(pl.col("symbol") == "A")["line"].to_list() == ["3"]
    assert sorted(bars_of(store)["symbol"].to_list()) == ["K", "OK"]


def test_an_adj_close_given_must_be_a_positive_number(store, tmp_path, as_of):
    f = write(tmp_path / "long.csv", """
symbol,date,open,high,low,close,adj_close,volume
OK,2024-01-02,10,11,9,10.5,10.4,100
BLANK,2024-01-02,10,11,9,10.5,,100
INF,2024-01-02,10,11,9,10.5,inf,100
NEG,2024-01-02,10,11,9,10.5,-1,100
NAN,2024-01-02,10,11,9,10.5,nan,100
""")
    rep = ing.ingest(store, [f], "NYSE", as_of)
    assert rep.rejects == {ing.R_ADJ: 3}
    bars = bars_of(store).sort("symbol")
    assert bars["symbol"].to_list() == ["BLANK", "OK"] and bars["adj_close"].to_list() == [10.5, 10.4]


def test_unknown_exchange_in_long_file_is_rejected(store, tmp_path, as_of):
    f = write(tmp_path / "long.csv", """
symbol,date,open,high,low,close,volume,exchange
A,2024-01-02,10,11,9,10.5,100,LSE
B,2024-01-02,10,11,9,10.5,100,TSX
""")
    rep = ing.ingest(store, [f], None, as_of)
    assert rep.rejects == {ing.R_EXCHANGE: 1}
    assert bars_of(store).select("exchange", "symbol").rows() == [("TSE", "B")]


def test_file_problems_are_reported_and_other_files_go_on(store, tmp_path, as_of):
    d = tmp_path / "in"
    write(d / "EMPTY.csv", "")
    write(d / "HEADER.csv", "Date,Open,High,Low,Close,Volume\n")
    write(d / "NODATE.csv", "Open,High,Low,Close,Volume\n1,2,0.5,1.5,10\n")
    write(d / "NOCLOSE.csv", "Date,Open,High,Low,Volume\n2024-01-02,1,2,0.5,10\n")
    (d / "BROKEN.parquet").write_bytes(b"not parquet at all")
    write(d / "GOOD.csv", "Date,Open,High,Low,Close,Volume\n2024-01-02,1,2,0.5,1.5,10\n")
    rep = ing.ingest(store, [d], "NYSE", as_of)
    problems = {p.rsplit("/", 1)[-1]: why for p, why in rep.file_problems}
    assert set(problems) == {"EMPTY.csv", "HEADER.csv", "NODATE.csv", "NOCLOSE.csv", "BROKEN.parquet"}
    assert "date" in problems["NODATE.csv"] and "close" in problems["NOCLOSE.csv"]
    assert rep.accepted == 1 and ing.exit_code(rep, strict=False) == 0
    assert ing.exit_code(rep, strict=True) == 1


def test_files_that_are_not_csv_text_say_what_they_are(store, tmp_path, as_of):
    import gzip
    import random

    d = tmp_path / "in"
    good = "Date,Open,High,Low,Close,Volume\n2024-01-02,1,2,0.5,1.5,10\n"
    (d / "sub").mkdir(parents=True)
    (d / "RANDOM.csv").write_bytes(random.Random(0).randbytes(4096))
    pl.DataFrame({"symbol": ["P"], "date": ["2024-01-02"]}).write_parquet(d / "PARQ.csv")
    (d / "ZIPPED.csv").write_bytes(gzip.compress(good.encode()))
    (d / "NOOPEN.csv").write_text("Date,High,Low,Close\n2024-01-02,2,0.5,1.5\n")
    (d / "GZ.csv.gz").write_bytes(gzip.compress(good.encode()))  # read as it is: symbol GZ
    (d / "sub" / "notes.md").write_text("not data")
    (d / "NOTPARQ.parquet").write_text(good)
    rep = ing.ingest(store, [d], "NYSE", as_of)
    problems = {p.rsplit("/", 1)[-1]: why for p, why in rep.file_problems}
    assert "binary data" in problems["RANDOM.csv"]
    assert "Parquet file" in problems["PARQ.csv"] and "rename it to .parquet" in problems["PARQ.csv"]
    assert "gzip" in problems["ZIPPED.csv"] and ".csv.gz" in problems["ZIPPED.csv"]
    assert "no open, volume columns" in problems["NOOPEN.csv"]
    assert "is it a CSV?" in problems["NOTPARQ.parquet"]
    assert set(problems) == {"RANDOM.csv", "PARQ.csv", "ZIPPED.csv", "NOOPEN.csv", "NOTPARQ.parquet"}
    assert [p.name for p in rep.skipped] == ["notes.md"]
    assert rep.rejected == 0  # a missing column is the file's problem, not each row's
    assert bars_of(store).select("symbol", "date").rows() == [("GZ", D(2024, 1, 2))]


def test_a_parquet_files_rejects_are_numbered_by_row_from_one(store, tmp_path, as_of):
    f = tmp_path / "long.parquet"
    pl.DataFrame({"symbol": ["A", "B"], "date": ["2024-01-02", "2024-01-02"], "open": [1.0, 1.0],
                  "high": [2.0, 0.5], "low": [0.5, 0.4], "close": [1.5, 1.0], "volume": [10, 10]}).write_parquet(f)
    rep = ing.ingest(store, [f], "NYSE", as_of)
    quarantined = pl.read_csv(rep.quarantine)
    assert quarantined.select("symbol", "line").rows() == [("B", 2)]


def test_upsert_replaces_changed_bars_and_tracks_changes(store, tmp_path, as_of):
    f = write(tmp_path / "X.csv", """
Date,Open,High,Low,Close,Volume
2024-01-02,10,11,9,10.5,100
2024-01-03,10,11,9,10.5,100
""")
    ing.ingest(store, [f], "NYSE", as_of)
    first = bars_of(store)
    rep = ing.ingest(store, [f], "NYSE", as_of)
    assert (rep.new, rep.updated, rep.unchanged) == (0, 0, 2)
    assert bars_of(store).equals(first)  # identical re-ingest changes nothing, ingest ids included
    write(f, """
Date,Open,High,Low,Close,Volume
2024-01-03,10,11,9,10.8,100
2024-01-04,10,11,9,10.5,100
""")
    rep = ing.ingest(store, [f], "NYSE", as_of)
    assert (rep.new, rep.updated, rep.unchanged) == (1, 1, 0)
    b = bars_of(store)
    assert b["close"].to_list() == [10.5, 10.8, 10.5]
    ids = b["ingest_id"].to_list()
    assert ids[0] == first["ingest_id"][0] and ids[1] > ids[0] and ids[1] == ids[2]


def test_strict_writes_nothing_when_anything_is_rejected(store, tmp_path, as_of):
    f = write(tmp_path / "X.csv", """
Date,Open,High,Low,Close,Volume
2024-01-02,10,11,9,10.5,100
2024-01-03,10,11,9,-10.5,100
""")
    rep = ing.ingest(store, [f], "NYSE", as_of, strict=True)
    assert rep.rejected == 1 and not rep.written
    assert not store.has_bars()
    assert ing.exit_code(rep, strict=True) == 1


def test_bad_rows_never_touch_stored_bars(store, tmp_path, as_of):
    good = write(tmp_path / "a" / "X.csv", "Date,Open,High,Low,Close,Volume\n2024-01-02,10,11,9,10.5,100\n")
    ing.ingest(store, [good], "NYSE", as_of)
    bad = write(tmp_path / "b" / "X.csv", "Date,Open,High,Low,Close,Volume\n2024-01-02,10,11,9,-3,100\n")
    rep = ing.ingest(store, [bad], "NYSE", as_of)
    assert rep.accepted == 0 and ing.exit_code(rep, strict=False) == 1
    assert bars_of(store)["close"].to_list() == [10.5]


def test_calendar_holidays_and_old_history(store, tmp_path):
    f = write(tmp_path / "long.csv", """
symbol,date,open,high,low,close,volume,exchange
RY,2024-07-01,10,11,9,10.5,100,TSE
RY,2024-07-02,10,11,9,10.5,100,TSE
IBM,2024-11-28,10,11,9,10.5,100,NYSE
IBM,2024-11-29,10,11,9,10.5,100,NYSE
IBM,1995-03-15,10,11,9,10.5,100,NYSE
IBM,1987-10-19,10,11,9,10.5,100,NYSE
""")
    rep = ing.ingest(store, [f], None, AsOf(D(2024, 12, 31)))
    assert rep.rejects == {ing.R_SESSION: 2}  # Canada Day, Thanksgiving
    got = bars_of(store).select("symbol", "date").rows()
    assert ("IBM", D(1995, 3, 15)) in got and ("IBM", D(1987, 10, 19)) in got
    assert ("RY", D(2024, 7, 1)) not in got


def test_as_of_bounds_dates(store, tmp_path):
    f = write(tmp_path / "X.csv", """
Date,Open,High,Low,Close,Volume
2024-01-02,10,11,9,10.5,100
2024-01-03,10,11,9,10.5,100
""")
    rep = ing.ingest(store, [f], "NYSE", AsOf(D(2024, 1, 2)))
    assert rep.accepted == 1 and rep.rejects == {ing.R_FUTURE: 1}


def test_symbols_file(store, tmp_path, as_of):
    f = write(tmp_path / "X.csv", "Date,Open,High,Low,Close,Volume\n2024-01-02,10,11,9,10.5,100\n")
    s = write(tmp_path / "syms.csv", "Symbol,Name,Sector\nX,Ex Corp,Energy\nY,Why Inc,Utilities\n")
    ing.ingest(store, [f], "NYSE", as_of, symbols_file=s)
    assert store.read_symbols().rows() == [("X", "NYSE", "Ex Corp", "Energy"), ("Y", "NYSE", "Why Inc", "Utilities")]
    # a later ingest without metadata keeps the names
    ing.ingest(store, [f], "NYSE", as_of)
    assert store.read_symbols()["name"].to_list() == ["Ex Corp", "Why Inc"]


@pytest.mark.parametrize(("text", "message"), [
    ("", "--symbols-file {f}: empty file"),
    ('symbol,name\n"AB,Broken\n', "--symbols-file {f}: "),
    ("Symbol,Name,Sector\n ,No Symbol,Energy\n", "{f}: 1 row(s) without a symbol (first: line 2)"),
    ("Symbol,Exchange,Name\nX,LSE,Ex Corp\n", "{f}: 1 row(s) with an unknown exchange (first: line 2, X on 'LSE')"),
    ("Symbol,Name,Sector\nX,Ex Corp,Energy\nX,Ex Corp,Utilities\n", "rows of X on NYSE disagree on its name or sector"),
    ("Symbol,Name,Sector\nX,Ex Corp\nY,Why,Energy\n", "{f}: line 2 has 2 field(s), the header 3"),
    ("Symbol,Name,Sector\nY,Why,Energy\nX,Ex, Corp,Energy\nZ,Zed,Energy,\n",
     "{f}: line 3 has 4 field(s), the header 3 (2 rows like it)"),
])
def test_a_symbols_file_that_cannot_be_used_is_one_message_and_nothing_is_ingested(store, tmp_path, as_of, text,
                                                                                  message):
    f = write(tmp_path / "X.csv", "Date,Open,High,Low,Close,Volume\n2024-01-02,10,11,9,10.5,100\n")
    s = tmp_path / "syms.csv"
    s.write_text(text)
    with pytest.raises(ing.RetrainError) as err:
        ing.ingest(store, [f], "NYSE", as_of, symbols_file=s)
    assert message.format(f=s) in err.value.message and err.value.hint
    assert not store.has_bars()


def test_missing_path_and_unknown_exchange_are_errors(store, tmp_path, as_of):
    with pytest.raises(ing.RetrainError, match="no such file"):
        ing.ingest(store, [tmp_path / "nope"], "NYSE", as_of)
    f = write(tmp_path / "X.csv", "Date,Open,High,Low,Close,Volume\n2024-01-02,10,11,9,10.5,100\n")
    with pytest.raises(ing.RetrainError, match="unknown exchange"):
        ing.ingest(store, [f], "LSE", as_of)
    assert not store.root.exists() or not store.has_bars()


def test_ingest_cli_summary_and_exit_codes(cli, tmp_path):
    write(tmp_path / "in" / "X.csv", "Date,Open,High,Low,Close,Volume\n2024-01-02,10,11,9,10.5,100\n"
          "2024-01-03,10,11,9,0,100\n")
    r = cli("ingest", "in", "--exchange", "NYSE", "--as-of", "2024-12-31")
    assert r.exit_code == 0, r.output
    assert "Stored 1 bars: 1 new" in r.output and "price <= 0" in r.output and "quarantine" in r.output
    r = cli("ingest", "in", "--exchange", "NYSE", "--as-of", "2024-12-31", "--strict")
    assert r.exit_code == 1 and "nothing was written, because of the problems above" in r.output
    assert "error: nothing was ingested: --strict, and 1 row(s) and 0 file(s) had problems" in r.stderr
    assert "ingest without --strict to store the 1 good bar(s)" in r.stderr
    r = cli("ingest", "in", "--exchange", "LSE")
    assert r.exit_code != 0 and "unknown exchange" in r.output
    write(tmp_path / "empty.csv", "")
    r = cli("ingest", "empty.csv", "--exchange", "NYSE")
    assert r.exit_code == 1 and "error: nothing was ingested: every file above had a problem\n  -> fix the input" \
        in r.stderr
    write(tmp_path / "bad" / "Y.csv", "Date,Open,High,Low,Close,Volume\n2024-01-03,10,11,9,0,100\n")
    r = cli("ingest", "bad", "--exchange", "NYSE", "--as-of", "2024-12-31")
    assert r.exit_code == 1 and "nothing was ingested: every row was rejected" in r.stderr


def test_a_future_date_without_as_of_is_not_called_after_as_of(store, tmp_path):
    from retrain import calendar
    from retrain.calendar import AsOf

    day = calendar.next_session("NYSE", AsOf().today("NYSE") + dt.timedelta(days=7))  # a session to come
    f = write(tmp_path / "F.csv", f"Date,Open,High,Low,Close,Volume\n{day},10,11,9,10.5,100\n")
    rep = ing.ingest(store, [f], "NYSE", AsOf())
    assert rep.rejects == {ing.R_FUTURE_NOW: 1} and "as-of" not in ing.R_FUTURE_NOW


def test_a_folder_read_in_one_scan_gives_each_file_what_reading_it_alone_gives(tmp_path, monkeypatch):
    """CSV files that share a header line are read in one scan: the rows, lines and symbols of
    each file, and each file's own problem message, are those of reading it alone, whatever
    the scan meets (header-only, ragged or non-UTF-8 files, CRLF endings, a file named twice)."""
    head = "Date,Open,High,Low,Close,Adj Close,Volume\n"
    row = "2024-01-0{d},10,11,9,10.5,10.4,1000\n"
    folder = tmp_path / "in"
    folder.mkdir()
    for i in range(8):
        (folder / f"S{i}.csv").write_text(head + "".join(row.format(d=d) for d in (2, 3, 4)))
    (folder / "EMPTYROWS.csv").write_text(head)
    (folder / "RAGGED.csv").write_text(head + "2024-01-02,10,11,9,10.5,10.4,1000,extra\n2024-01-03,10,11\n")
    (folder / "LATIN.csv").write_bytes((head + "2024-01-02,10,11,9,10.5,10.4,1000\n").encode() + b"\xff\xfe,1\n")
    (folder / "CRLF.csv").write_bytes((head + row.format(d=2)).replace("\n", "\r\n").encode())
    (folder / "other.csv").write_text("Date,Close\n2024-01-02,10\n")
    files = ing.collect_files([folder]) + [folder / "S0.csv"]
    alone = [ing._read_one(f, "auto") for f in files]
    read_alone, one = [], ing._read_one
    monkeypatch.setattr(ing, "_read_one", lambda f, fmt: read_alone.append(f.name) or one(f, fmt))
    together = ing._read_all(files, "auto")
    for f, a, b in zip(files, alone, together):
        if isinstance(a, ing.FileProblem):
            assert isinstance(b, ing.FileProblem) and str(a) == str(b), f
        else:
            assert not isinstance(b, ing.FileProblem) and a.equals(b), f
    assert "S1.csv" not in read_alone and "EMPTYROWS.csv" in read_alone  # the batch read the rest
    assert isinstance(alone[[f.name for f in files].index("EMPTYROWS.csv")], ing.FileProblem)
