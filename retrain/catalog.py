"""The DuckDB catalog: views over the store's files (day_symbol, symbols, features, labels), the
one place SQL meets the layout. Reads only; the store's layout says where the files are."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import TYPE_CHECKING

import polars as pl

from retrain import queries
from retrain.schema import BAR_SCHEMA, SYMBOL_SCHEMA

if TYPE_CHECKING:
    import duckdb

    from retrain.store import Store


# the store's views, and the files each reads (labels is a view over day_symbol: the bars)
_VIEW_FILES = {"day_symbol": "bars", "symbols": "symbols", "features": "features", "labels": "bars"}
VIEWS = tuple(_VIEW_FILES)

# DuckDB's working memory (its buffer manager: hash tables, sorts, aggregates). Past it, a query
# spills to a temporary folder of its own, so that a join over every bar of a long history takes
# the same memory at 25 M bars as at 100 M, not 80% of the machine's RAM (DuckDB's default).
# The rows a query returns are not counted. $RETRAIN_QUERY_MEMORY sets another value (DuckDB's
# units: "512MB", "4GB").
QUERY_MEMORY = "1GB"
QUERY_MEMORY_ENV = "RETRAIN_QUERY_MEMORY"


def views_named(sql: str, views=VIEWS) -> set[str]:
    """The ``views`` a statement names (as words, any case). Every view if it names none of them
    (a look at the catalog, such as SHOW TABLES, reads them all). A view reached without its name
    in the text (a name built at run time, ``query_table('feat' || 'ures')``, beside a named one)
    has only its files' footers checked."""
    import re

    named = {v for v in views if re.search(rf"(?<![\w$]){re.escape(v)}(?![\w$])", sql, re.IGNORECASE)}
    return named or set(views)


def connect(store: Store, used=VIEWS) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB connection with the store's views (symbols, day_symbol, features,
    labels). Every file a view of ``used`` reads is verified against its checksum first (once per
    process). The other views are there, not to be read (a statement that names none of them:
    ``views_named``): DuckDB reads only their files' footers, to bind them, and those are what
    is verified of them."""
    kinds = {_VIEW_FILES[v] for v in used}
    bars = store.bar_files()
    features = [f for v in store.table_versions("features") for f in store.table_files("features", v)]
    by_kind = {"bars": bars, "features": features,
               "symbols": [store.symbols_path] if store.symbols_path.exists() else []}
    store.verify_files([f for kind, paths in by_kind.items() if kind in kinds for f in paths])
    store.verify_files([f for kind, paths in by_kind.items() if kind not in kinds for f in paths], footer_only=True)
    import duckdb  # here: most commands never need it (about 0.1 s of start-up)

    con = duckdb.connect(":memory:")
    try:
        limit(con)
    except BaseException:
        con.close()
        raise
    files = bars
    if files:
        source = parquet_source(files)
    else:
        source = empty_source({**BAR_SCHEMA, "exchange": pl.String})
    con.execute(queries.load("view_day_symbol").replace("{source}", source))
    if store.symbols_path.exists():
        source = f"read_parquet('{sql_str(store.symbols_path)}')"
    else:
        source = empty_source(SYMBOL_SCHEMA)
    con.execute(queries.load("view_symbols").replace("{source}", source))
    files = features
    if files:
        source = parquet_source(files)
    else:
        source = empty_source({"symbol": pl.String, "exchange": pl.String, "trade_date": pl.Date,
                                "feature_version": pl.String, "version": pl.String, "month": pl.String})
    con.execute(queries.load("view_features").replace("{source}", source))
    complete = store.label_horizon()
    rows = " UNION ALL ".join(f"SELECT '{sql_str(e)}' AS exchange, DATE '{d}' AS last_complete"
                              for e, d in sorted(complete.items()))
    con.execute(queries.load("view_labels").replace(
        "{complete}", rows or "SELECT NULL::VARCHAR AS exchange, NULL::DATE AS last_complete WHERE false"))
    return con


def limit(con: duckdb.DuckDBPyConnection) -> None:
    """Bound ``con``'s working memory (``QUERY_MEMORY``, or $RETRAIN_QUERY_MEMORY) and give it
    a spill folder of its own in the system's temporary folder, which DuckDB makes only when it
    spills and removes when the connection closes (by default it spills into ./.tmp). No
    progress bar."""
    import os
    import tempfile

    import duckdb

    from retrain.errors import RetrainError

    value = os.environ.get(QUERY_MEMORY_ENV, "").strip() or QUERY_MEMORY
    try:
        con.execute(f"SET memory_limit = '{sql_str(value)}'")
    except duckdb.Error as exc:
        raise RetrainError(f"${QUERY_MEMORY_ENV} = {value!r} is not a memory size DuckDB reads ({exc})".splitlines()[0],
                           hint=f"use a size such as 512MB or 4GB, or unset {QUERY_MEMORY_ENV} (default {QUERY_MEMORY})") \
            from None
    folder = Path(tempfile.gettempdir()) / f"retrain-duckdb-{os.getpid()}-{id(con):x}"
    con.execute(f"SET temp_directory = '{sql_str(folder)}'")
    con.execute("SET enable_progress_bar = false")  # a long query draws none into a cron job's log


def scan_labels(store: Store, exchange: str | None = None, start: dt.date | None = None,
                end: dt.date | None = None) -> pl.LazyFrame | None:
    """The labels view (optionally one exchange, trade dates in [start, end]) as a frame;
    None when nothing is labelled."""
    if not store.label_horizon() or not store.has_bars():
        return None
    con = connect(store)
    try:
        rel = con.sql(queries.load("labels_range"), params={"exchange": exchange, "start": start or dt.date(1, 1, 1),
                                   "end": end or dt.date(9999, 12, 31)})
        return pl.from_arrow(rel.to_arrow_table()).lazy()
    finally:
        con.close()


_DUCK_TYPES = {pl.String: "VARCHAR", pl.Date: "DATE", pl.Float64: "DOUBLE", pl.Int64: "BIGINT"}


def sql_str(text: Path | str) -> str:
    return str(text).replace("'", "''")


def parquet_source(files: list[Path]) -> str:
    listing = ", ".join(f"'{sql_str(p)}'" for p in files)
    return f"read_parquet([{listing}], hive_partitioning = true, union_by_name = true)"


def empty_source(schema: dict[str, pl.DataType]) -> str:
    cols = ", ".join(f"NULL::{_DUCK_TYPES[t]} AS {name}" for name, t in schema.items())
    return f"(SELECT {cols} WHERE false)"
