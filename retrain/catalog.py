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
