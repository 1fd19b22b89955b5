"""The prediction journal: every ranking `retrain predict` makes, kept for `retrain monitor`.

    artifacts/daytrading/predictions/
        session=<YYYY-MM-DD>/<run_id>.parquet   one file per (session ranked, run that ranked it)
        <session>.parquet, <session>.<run_id>.parquet   the ranking as printed (unchanged)

Hive-partitioned Parquet, readable without retrain (``read_parquet('.../session=*/*.parquet')``
in DuckDB, ``pl.scan_parquet`` in Polars). Each row is one symbol ranked for one session:
``trade_date, exchange, symbol, predicted, rank, run_id, feature_version, scope, active,
predicted_at, as_of, avg_dollar_volume_20, prev_close``. ``active`` says whether the run was
the scope's own choice then (the active model, or with a past ``--as-of`` the model active
then or, when none was, the active one trained before the session), as opposed to a run named
with ``--model``. Predicting the same session again with the same run replaces its file
(atomically); another run's file stays beside it. An unreadable file, or one that does not
match its checksum, is named and skipped.
"""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

import polars as pl

from retrain.files import atomic_write_parquet
from retrain.registry import ROOT, verified

PREDICTIONS = "predictions"
PARTITION = "session"

SCHEMA: dict[str, pl.DataType] = {
    "trade_date": pl.Date, "exchange": pl.String, "symbol": pl.String, "predicted": pl.Float64,
    "rank": pl.Int64, "run_id": pl.String, "feature_version": pl.String, "scope": pl.String,
    "active": pl.Boolean, "predicted_at": pl.Datetime("us", "UTC"), "as_of": pl.String,
    "avg_dollar_volume_20": pl.Float64, "prev_close": pl.Float64,
}


def folder(artifacts_dir: str | os.PathLike) -> Path:
    return Path(artifacts_dir) / ROOT / PREDICTIONS


def path(artifacts_dir: str | os.PathLike, session: dt.date, run_id: str) -> Path:
    return folder(artifacts_dir) / f"{PARTITION}={session.isoformat()}" / f"{run_id}.parquet"


def entry(ranked: pl.DataFrame, session: dt.date, run_id: str, version: str, scope: str, active: bool,
          as_of: str, at: dt.datetime | None = None) -> pl.DataFrame:
    """The journal's rows of one ranking: ``ranked`` holds exchange, symbol, predicted, rank,
    avg_dollar_volume_20 and prev_close; the rest is the same for every row (``at``: when the
    prediction was made, default now)."""
    return ranked.with_columns(
        pl.lit(session).alias("trade_date"), pl.lit(run_id).alias("run_id"), pl.lit(version).alias("feature_version"),
        pl.lit(scope).alias("scope"), pl.lit(active).alias("active"),
        pl.lit(at or dt.datetime.now(dt.UTC)).alias("predicted_at"), pl.lit(as_of).alias("as_of"),
    ).select([pl.col(c).cast(t) for c, t in SCHEMA.items()])


def write(artifacts_dir: str | os.PathLike, rows: pl.DataFrame) -> Path:
    """Write one ranking (one session, one run) to the journal, replacing that run's earlier
    ranking of the session. ``rows`` has the journal's columns (SCHEMA)."""
    sessions, runs = rows["trade_date"].unique(), rows["run_id"].unique()
    if len(sessions) != 1 or len(runs) != 1:
        raise ValueError("a journal file holds one session ranked by one run")
    out = path(artifacts_dir, sessions[0], runs[0])
    atomic_write_parquet(rows.select([pl.col(c).cast(t) for c, t in SCHEMA.items()]), out)
    return out


def files(artifacts_dir: str | os.PathLike, since: dt.date | None = None,
          until: dt.date | None = None) -> list[Path]:
    """Journal files, oldest session first, of sessions in [since, until]."""
    root = folder(artifacts_dir)
    try:
        parts = sorted((e.name, e.path) for e in os.scandir(root) if e.name.startswith(f"{PARTITION}=") and e.is_dir())
    except (FileNotFoundError, NotADirectoryError):
        return []
    out = []
    for name, part in parts:
        try:
            day = dt.date.fromisoformat(name.split("=", 1)[1])
        except ValueError:
            continue
        if (since and day < since) or (until and day > until):
            continue
        out.extend(Path(part) / f for f in sorted(e.name for e in os.scandir(part)
                                                   if e.name.endswith(".parquet") and e.is_file()))
    return out


def span(artifacts_dir: str | os.PathLike, since: dt.date | None = None, until: dt.date | None = None,
         paths: list[Path] | None = None) -> tuple[dt.date, dt.date] | None:
    """(first, last) session of the journal files of sessions in [since, until] (from their
    folder names: nothing is read; ``paths``: those files, listed already), or None when there
    are none."""
    paths = files(artifacts_dir, since, until) if paths is None else paths
    days = [dt.date.fromisoformat(p.parent.name.split("=", 1)[1]) for p in paths]
    return (min(days), max(days)) if days else None


def read(artifacts_dir: str | os.PathLike, scope: str | None = None, since: dt.date | None = None,
         until: dt.date | None = None, columns: list[str] | None = None, version: str | None = None,
         paths: list[Path] | None = None) -> tuple[pl.DataFrame, list[str]]:
    """(the journal's rows, of ``scope``, feature ``version`` and sessions in [since, until], with
    ``columns`` only (default: every column of SCHEMA); a warning per unreadable file, which is
    skipped). ``paths``: the files of those sessions, listed already (``files``)."""
    paths = files(artifacts_dir, since, until) if paths is None else paths
    keep = [c for c in SCHEMA if columns is None or c in columns]
    empty = pl.DataFrame(schema={c: SCHEMA[c] for c in keep})
    filters = [(c, v) for c, v in (("scope", scope), ("feature_version", version)) if v is not None]
    where = [pl.col(c) == v for c, v in filters]
    needed = list(dict.fromkeys([*keep, *(c for c, _ in filters)]))  # a file without one of them is bad
    try:  # one parallel read; a file that cannot be read sends it down the careful path below
        for p in paths:
            verified(p)
        if not paths:
            return empty, []
        found = pl.scan_parquet(paths, hive_partitioning=False).select([pl.col(c).cast(SCHEMA[c]) for c in needed])
        return (found.filter(*where) if where else found).select(keep).collect(), []
    except Exception:  # noqa: BLE001 - any failure: read file by file, naming the bad ones
        pass
    frames, warnings = [], []
    for p in paths:
        try:
            frame = pl.read_parquet(verified(p))
            missing = [c for c in needed if c not in frame.columns]
            if missing:
                raise ValueError(f"no column {', '.join(missing)}")
            frame = frame.select([pl.col(c).cast(SCHEMA[c]) for c in needed])
        except Exception as exc:  # a torn copy, a bad disk, a foreign file: skip it, say so
            warnings.append(f"unreadable prediction journal file {p} ({type(exc).__name__}: {exc}); skipped")
            continue
        if where:
            frame = frame.filter(*where)
        frames.append(frame.select(keep))  # cast with the rest of needed above
    if not frames:
        return empty, warnings
    return pl.concat(frames), warnings
