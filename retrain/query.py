"""`retrain query`: read-only DuckDB SQL over the store's views."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import math
from decimal import Decimal

import duckdb

from retrain import catalog, report
from retrain.errors import RetrainError
from retrain.store import Store

# Statement types that only read. Anything else (CREATE, INSERT, COPY, ATTACH, SET, ...) is refused.
READ_ONLY_TYPES = {"SELECT", "EXPLAIN"}
FORMATS = ("table", "csv", "json")


def runs_frame(runs: list[dict]):
    """The `runs` view: one row per trained model run (flattened from each meta.json)."""
    import polars as pl

    schema = {"run_id": pl.String, "feature_version": pl.String, "scope": pl.String, "created_at": pl.String,
              "status": pl.String, "rows": pl.Int64, "training_start": pl.String, "training_end": pl.String,
              "target": pl.String, "r2": pl.Float64, "mae": pl.Float64, "ic": pl.Float64, "rank_ic": pl.Float64,
              "icir": pl.Float64, "hit_rate": pl.Float64, "top_n_spread": pl.Float64,
              "backtest_return": pl.Float64, "backtest_sharpe": pl.Float64, "model_sha256": pl.String,
              "verdict": pl.String, "record_sessions": pl.Int64, "record_sharpe": pl.Float64,
              "record_sharpe_se": pl.Float64, "record_psr": pl.Float64, "record_rank_ic": pl.Float64,
              "record_rank_ic_t": pl.Float64, "gate_outcome": pl.String}
    rows = []
    for r in runs:
        cv = r.get("cv", {}).get("summary", {})
        bt = r.get("backtest", {})
        rec, gate = r.get("record") or {}, r.get("gate") or {}
        rows.append({
            "run_id": r["run_id"], "feature_version": r["feature_version"], "scope": r["scope"],
            "created_at": r["created_at"], "status": r.get("status"), "rows": r.get("rows"),
            "training_start": r.get("training_window", {}).get("start"), "training_end": r.get("training_window", {}).get("end"),
            "target": r.get("target"), **{k: cv.get(k, {}).get("mean") for k in ("r2", "mae", "ic", "rank_ic", "icir", "hit_rate", "top_n_spread")},
            "backtest_return": bt.get("total_return"), "backtest_sharpe": bt.get("sharpe"), "model_sha256": r.get("model_sha256"),
            "verdict": bt.get("verdict"), "record_sessions": rec.get("sessions"), "record_sharpe": rec.get("sharpe"),
            "record_sharpe_se": rec.get("sharpe_se"), "record_psr": rec.get("psr"), "record_rank_ic": rec.get("rank_ic"),
            "record_rank_ic_t": rec.get("rank_ic_t"), "gate_outcome": gate.get("outcome"),
        })
    return pl.DataFrame(rows, schema=schema)


VIEWS = (*catalog.VIEWS, "runs", "predictions")


def views_named(text: str) -> set[str]:
    """The views of `retrain query` a statement names (every one if it names none of them):
    the files of the others are not verified, and the registry and the journal are read only
    for the runs and predictions views."""
    return catalog.views_named(text, VIEWS)


def run_query(store: Store, text: str, runs: list[dict] | None = None,
              predictions=None) -> tuple[list[str], list[tuple]]:
    """Run one or more read-only statements; return the columns and rows of the last one.
    ``runs``: the registry's runs (the `runs` view); ``predictions``: the prediction journal's
    rows (``journal.read``), the `predictions` view. The store's files are verified for the views
    the statement names (``views_named``); runs and predictions are given only when it names
    them, or names no view."""
    used = views_named(text)
    con = catalog.connect(store, [v for v in catalog.VIEWS if v in used])
    if runs is not None or "runs" in used:
        runs_df = runs_frame(runs or [])  # noqa: F841 - registered below by name
        con.register("_runs", runs_df)
        con.execute("CREATE OR REPLACE VIEW runs AS SELECT * FROM _runs")
    if predictions is not None:
        con.register("_predictions", predictions)
        con.execute("CREATE OR REPLACE VIEW predictions AS SELECT * FROM _predictions")
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
                               hint="views: symbols, day_symbol (and, once built: features, labels, runs, predictions)") from None
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
