"""The prediction journal as the monitor reads it: a narrower read (columns, scope, version) that
gives the same rows as the whole read filtered; the journal's rows matched with their realized
returns as a plain join matches them; and a session's universe return that is the same, bit for
bit, at every call."""

from __future__ import annotations

import datetime as dt

import numpy as np
import polars as pl
import pytest

from retrain import backtest, journal, watch
from retrain.files import atomic_write_parquet

DAYS = [dt.date(2025, 3, 3), dt.date(2025, 3, 4), dt.date(2025, 3, 5)]


def _ranking(day: dt.date, run_id: str, version: str, scope: str, symbols: list[str]) -> pl.DataFrame:
    ranked = pl.DataFrame({"exchange": ["NYSE"] * len(symbols), "symbol": symbols,
                           "predicted": np.linspace(0.01, -0.01, len(symbols)),
                           "rank": np.arange(1, len(symbols) + 1), "avg_dollar_volume_20": [1e7] * len(symbols),
                           "prev_close": [10.0] * len(symbols)})
    return journal.entry(ranked, day, run_id, version, scope, True, str(day), dt.datetime(2025, 3, 1, tzinfo=dt.UTC))


def test_a_narrow_read_is_the_whole_read_filtered(tmp_path):
    for day in DAYS:
        journal.write(tmp_path, _ranking(day, "r1", "v1", "ALL", ["AA", "BB", "CC"]))
        journal.write(tmp_path, _ranking(day, "r2", "v2", "ALL", ["AA", "BB"]))
        journal.write(tmp_path, _ranking(day, "r3", "v1", "NYSE", ["DD"]))
    whole, warnings = journal.read(tmp_path)
    assert not warnings and whole.height == 3 * (3 + 2 + 1) and whole.columns == list(journal.SCHEMA)
    columns = ["trade_date", "symbol", "predicted", "run_id"]
    narrow, warnings = journal.read(tmp_path, "ALL", DAYS[1], DAYS[2], columns=columns, version="v1")
    want = whole.filter((pl.col("scope") == "ALL") & (pl.col("feature_version") == "v1")
                        & pl.col("trade_date").is_between(DAYS[1], DAYS[2])).select(columns)
    assert not warnings and narrow.columns == columns
    assert narrow.equals(want)
    listed = journal.files(tmp_path, DAYS[1], DAYS[2])
    assert journal.span(tmp_path, paths=listed) == (DAYS[1], DAYS[2]) == journal.span(tmp_path, DAYS[1], DAYS[2])
    assert journal.read(tmp_path, "ALL", columns=columns, version="v1", paths=listed)[0].equals(want)


def test_a_narrow_read_names_and_skips_a_bad_file(tmp_path):
    for day in DAYS:
        journal.write(tmp_path, _ranking(day, "r1", "v1", "ALL", ["AA", "BB"]))
    bad = journal.path(tmp_path, DAYS[1], "r1")
    bad.write_bytes(b"not parquet")
    rows, warnings = journal.read(tmp_path, "ALL", columns=["trade_date", "symbol"], version="v1")
    assert rows.columns == ["trade_date", "symbol"] and sorted(set(rows["trade_date"])) == [DAYS[0], DAYS[2]]
    assert len(warnings) == 1 and str(bad) in warnings[0]
    empty, warnings = journal.read(tmp_path / "none", columns=["symbol", "predicted"])
    assert empty.is_empty() and empty.columns == ["symbol", "predicted"] and not warnings


def test_a_narrow_read_takes_a_file_without_a_column_it_does_not_read(tmp_path):
    """A file is bad for a read when it lacks a column that read needs: the same rule whether the
    read goes through the one parallel scan or, after a bad file, file by file."""
    for day in DAYS:
        journal.write(tmp_path, _ranking(day, "r1", "v1", "ALL", ["AA", "BB"]))
    older = journal.path(tmp_path, DAYS[0], "r1")
    atomic_write_parquet(pl.read_parquet(older).drop("prev_close"), older)  # a file of another writer
    columns = ["trade_date", "symbol", "predicted"]
    rows, warnings = journal.read(tmp_path, "ALL", columns=columns, version="v1")
    assert not warnings and rows.height == 2 * len(DAYS)
    journal.path(tmp_path, DAYS[2], "r1").write_bytes(b"not parquet")  # now the careful path
    rows, warnings = journal.read(tmp_path, "ALL", columns=columns, version="v1")
    assert sorted(set(rows["trade_date"])) == DAYS[:2] and len(warnings) == 1
    whole, warnings = journal.read(tmp_path)  # every column: the older file lacks one
    assert sorted(set(whole["trade_date"])) == [DAYS[1]] and len(warnings) == 2


def test_scored_rows_are_a_plain_join_in_the_rows_order():
    """The monitor matches the journal's rows with their realized returns on one integer key: the
    same values as a left join on (trade_date, exchange, symbol), in the rows' own order, null
    where no bar (or a null return) matches, and every row kept when two runs ranked a session."""
    rng = np.random.default_rng(4)
    symbols = [f"S{i:03d}" for i in range(60)]
    actual = pl.DataFrame([{"trade_date": d, "exchange": e, "symbol": s, "actual": float(rng.normal(0, 0.02))}
                           for d in DAYS for e in ("NYSE", "TSE") for s in symbols[:50]])
    actual = actual.with_columns(pl.when(pl.col("symbol") == "S007").then(None).otherwise(pl.col("actual"))
                                 .alias("actual")).sample(fraction=1.0, shuffle=True, seed=1)
    rows = pl.DataFrame([{"trade_date": d, "exchange": e, "symbol": s, "predicted": float(rng.normal()), "run_id": r}
                         for r in ("r1", "r2") for d in DAYS + [dt.date(2025, 3, 6)] for e in ("NYSE", "NASDAQ")
                         for s in [*symbols[::-3], "S007"]])
    got = watch._scored(rows, actual)
    want = rows.join(actual, on=["trade_date", "exchange", "symbol"], how="left", maintain_order="left")
    assert got.equals(want)
    assert got["actual"].null_count() < got.height and got.height == rows.height
    assert got.filter((pl.col("symbol") == "S007") & (pl.col("exchange") == "NYSE")
                      & pl.col("trade_date").is_in(DAYS))["actual"].null_count() == 2 * len(DAYS)  # a null return
    assert watch._scored(rows.clear(), actual).columns == [*rows.columns, "actual"]
    assert watch._scored(rows, actual.clear())["actual"].null_count() == rows.height


def test_the_universe_return_is_the_same_at_every_call():
    """A large frame with few sessions (a backtest record, a year of journal): Polars' hash
    grouping gathers a session's rows in an order that varies between calls, and the last bit of
    a mean with it. The universe return is averaged over each session's rows in their order."""
    rng = np.random.default_rng(8)
    n = 200_000
    frame = pl.DataFrame({"trade_date": rng.choice(np.array(DAYS * 7, dtype="datetime64[D]"), size=n),
                          "intraday_return": rng.normal(0.0, 0.02, size=n)}).with_columns(pl.col("trade_date")
                                                                                          .cast(pl.Date))
    results = {backtest.universe(frame)["universe_return"].to_numpy().tobytes() for _ in range(40)}
    assert len(results) == 1
    first = backtest.universe(frame)
    assert first["trade_date"].to_list() == DAYS
    for day, value in first.iter_rows():
        assert value == pytest.approx(frame.filter(pl.col("trade_date") == day)["intraday_return"].mean(), abs=1e-15)
