"""`retrain query`: read-only DuckDB SQL over the store's views."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import math
from decimal import Decimal

import duckdb

from retrain import report
from retrain.errors import RetrainError
from retrain.store import Store

# Statement types that only read. Anything else (CREATE, INSERT, COPY, ATTACH, SET, ...) is refused.
READ_ONLY_TYPES = {"SELECT", "EXPLAIN"}
FORMATS = ("table", "csv", "json")


def run_query(store: Store, text: str) -> tuple[list[str], list[tuple]]:
    """Run one or more read-only statements; return the columns and rows of the last one."""
    con = store.connect()
    try:
        try:
            statements = con.extract_statements(text)
        except duckdb.Error as exc:
            raise RetrainError(f"SQL error: {exc}", hint="check the statement; `retrain query --help` lists the views") from None
        if not statements:
            raise RetrainError("no SQL statement given", hint='e.g. retrain query "SELECT count(*) FROM day_symbol"')
        for st in statements:
            kind = str(st.type).rsplit(".", 1)[-1]
            if kind not in READ_ONLY_TYPES:
                raise RetrainError(
                    f"retrain query is read-only: a {kind} statement is refused",
                    hint="use SELECT over the views; the store changes only through retrain commands",
                )
        try:
            for st in statements[:-1]:
                con.execute(st)
            cur = con.execute(statements[-1])
            columns = [d[0] for d in cur.description or []]
            rows = cur.fetchall()
        except duckdb.Error as exc:
            raise RetrainError(f"SQL error: {exc}".splitlines()[0],
                               hint="views: symbols, day_symbol (and, once built: features, labels, runs)") from None
        return columns, rows
    finally:
        con.close()


def _jsonable(v):
    if isinstance(v, (dt.date, dt.datetime, dt.time)):
        return v.isoformat()
    if isinstance(v, Decimal):
        return float(v)
    if isinstance(v, float) and math.isnan(v):
        return None
    return v


def render(columns: list[str], rows: list[tuple], fmt: str) -> str:
    if fmt == "csv":
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(columns)
        w.writerows(["" if v is None else v for v in r] for r in rows)
        return buf.getvalue().rstrip("\n")
    if fmt == "json":
        return json.dumps([{c: _jsonable(v) for c, v in zip(columns, r)} for r in rows], indent=1)
    return report.table(columns, rows) + f"\n({len(rows):,} row{'s' if len(rows) != 1 else ''})"
