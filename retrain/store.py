"""The store's partition layout: where each table's files are, and their reads and writes.
With ``files`` (atomic writes) and ``catalog`` (DuckDB views), the only code that touches the
data directory.

Layout (all Parquet is hive-partitioned and readable without our code)::

    data/
      day_symbol/exchange=NYSE/month=2025-10/data.parquet   bars + indicators, one file a month
      day_symbol/exchange=NYSE/_sources.json                the input files ingested, with their months
      symbols.parquet                                       symbol, exchange, name, sector
      quarantine/<timestamp>.csv                            rejected input rows with reasons
      .retrain.lock                                         one writer at a time

Every write goes to a temporary file in the target directory, is fsynced, then renamed over
the target: a process killed at any instant leaves the old or the new file, never a torn one.
Every file has its checksum beside it (``.data.parquet.xxh3``, see ``checksums``), and every
read verifies it first; ``describe`` says what a file holds and how to recover it.

Change tracking: each bar carries ``ingest_id``, the id of the batch that last changed the bar
*or what depends on it*: its values (an ingest), or the bars its indicators and feature rows
are computed from, or the context of its session (``retrain remove`` gives the bars after the
removed ones new ids, values unchanged). Later steps remember the highest id they have seen
and rebuild what depends on bars with a higher one.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from retrain import checksums
from retrain.catalog import sql_str
from retrain.errors import Holds, LockBusy, RetrainError
from retrain.files import (
    TMP_PREFIX,
    atomic_write,
    atomic_write_parquet,
    atomic_write_text,
    commit,
    discard,
    machine_faults,
    parallel_map,
    stage,
    unlink,
    write_parquet,
)
from retrain.schema import BAR_SCHEMA, INDICATOR_COLUMNS, STATE_COLUMNS, SYMBOL_SCHEMA, VALUE_COLUMNS

PARTITION_FILE = "data.parquet"
_STATS_SCHEMA = {"month": pl.String, "first": pl.Date, "last": pl.Date, "max_ingest_id": pl.Int64, "stale": pl.Int64,
                 "rows": pl.Int64}
SOURCES_FILE = "_sources.json"  # per exchange: the input files ingested, each with its first and last month
STATE_FILE = "_state.json"
REPAIR = "`retrain verify --repair` rebuilds it from the bars (so does the next `retrain run`)"


def _bar_file(bars: pl.DataFrame, presorted: bool = False) -> pl.DataFrame:
    """Bars as a month file holds them: BAR_SCHEMA's columns and types, sorted by symbol, date
    (``presorted``: the caller guarantees they are)."""
    bars = bars.select([pl.col(c).cast(t) for c, t in BAR_SCHEMA.items()])
    return bars if presorted else bars.sort(["symbol", "date"])


def _month_stats(month: str, bars: pl.DataFrame) -> dict:
    """A month file's row of ``Store.file_stats`` from the (non-empty) bars written to it."""
    row = bars.select(pl.col("date").min().alias("first"), pl.col("date").max().alias("last"),
                      pl.col("ingest_id").max().fill_null(0).cast(pl.Int64).alias("max_ingest_id"),
                      pl.col("_n").null_count().cast(pl.Int64).alias("stale"), pl.len().cast(pl.Int64).alias("rows"))
    return {"month": month, **row.row(0, named=True)}


def new_batch_id() -> int:
    """A fresh, increasing ingest batch id (nanoseconds since the epoch)."""
    return time.time_ns()


def bar_columns(columns: list[str] | None = None) -> list[str]:
    """The bar schema's columns (only those of ``columns`` when given), in schema order."""
    return [c for c in BAR_SCHEMA if columns is None or c in columns]


def empty_bars(columns: list[str] | None = None) -> pl.DataFrame:
    return pl.DataFrame(schema={c: BAR_SCHEMA[c] for c in bar_columns(columns)})


@dataclass
class UpsertResult:
    new: int = 0
    updated: int = 0
    unchanged: int = 0
    partitions_written: int = 0
    batch_id: int = 0

    @property
    def changed(self) -> int:
        return self.new + self.updated


class Store:
    """Files under one data directory. Cheap to create; holds no open files."""

    def __init__(self, data_dir: str | os.PathLike):
        self.root = Path(data_dir)
        self._lock_depth = 0
        self._stats: dict[str, pl.DataFrame] = {}  # file_stats per exchange (write_partitions keeps them up to date)

    # ----------------------------------------------------------------- paths
    @property
    def bars_dir(self) -> Path:
        return self.root / "day_symbol"

    @property
    def symbols_path(self) -> Path:
        return self.root / "symbols.parquet"

    @property
    def quarantine_dir(self) -> Path:
        return self.root / "quarantine"

    @property
    def lock_path(self) -> Path:
        return self.root / ".retrain.lock"

    def partition_path(self, exchange: str, month: str) -> Path:
        return self.bars_dir / f"exchange={exchange}" / f"month={month}" / PARTITION_FILE

    def bar_files(self, exchange: str | None = None) -> list[Path]:
        pattern = f"exchange={exchange}/month=*/{PARTITION_FILE}" if exchange else f"*/*/{PARTITION_FILE}"
        return sorted(self.bars_dir.glob(pattern))

    def months(self, exchange: str) -> list[str]:
        return [p.parent.name.split("=", 1)[1] for p in self.bar_files(exchange)]

    def exchanges(self) -> list[str]:
        """Exchanges that have bars."""
        return sorted({p.parent.parent.name.split("=", 1)[1] for p in self.bar_files()})

    def file_stats(self, exchange: str) -> pl.DataFrame:
        """Per month file of ``exchange``, from Parquet footers only (no data read): month,
        min/max date, max ingest_id, how many bars lack indicators (``_n`` null), and bars (rows).
        Remembered: ``write_partitions`` brings them up to date, any other bar write (an ingest,
        a single month, a removal) has them read again."""
        if exchange not in self._stats:
            self._stats[exchange] = self._read_file_stats(exchange)
        return self._stats[exchange]

    def _read_file_stats(self, exchange: str) -> pl.DataFrame:
        files = self.bar_files(exchange)
        if not files:
            return pl.DataFrame(schema=_STATS_SCHEMA)
        self.verify_files(files, footer_only=True)  # only the footers are read here
        listing = ", ".join(f"'{sql_str(p)}'" for p in files)
        import duckdb  # here: most commands never need it (about 0.1 s of start-up)

        rows = duckdb.sql(
            f"SELECT file_name, path_in_schema, stats_min_value, stats_max_value, stats_null_count, row_group_num_rows "
            f"FROM parquet_metadata([{listing}]) WHERE path_in_schema IN ('date', 'ingest_id', '_n')"
        ).fetchall()
        per: dict[str, dict] = {}
        for name, col, lo, hi, nulls, n in rows:
            d = per.setdefault(name, {"first": None, "last": None, "max_ingest_id": 0, "stale": 0, "rows": 0})
            if col == "date":
                d["rows"] += int(n or 0)
                first, last = dt.date.fromisoformat(lo), dt.date.fromisoformat(hi)
                d["first"] = first if d["first"] is None else min(d["first"], first)
                d["last"] = last if d["last"] is None else max(d["last"], last)
            elif col == "ingest_id" and hi is not None:
                d["max_ingest_id"] = max(d["max_ingest_id"], int(hi))
            elif col == "_n":
                d["stale"] += int(nulls or 0)
        out = [{"month": Path(f).parent.name.split("=", 1)[1], **per.get(str(f), per.get(f, {}))} for f in map(str, files)]
        return pl.DataFrame(out, schema=_STATS_SCHEMA)

    def stale_months(self, exchange: str) -> list[str]:
        """Months of ``exchange`` holding bars whose indicators are not computed (``_n`` null)."""
        stats = self.file_stats(exchange)
        return stats.filter(pl.col("stale") > 0)["month"].to_list()

    def read_months(self, exchange: str, months: list[str], symbols: list[str] | None = None,
                    columns: list[str] | None = None) -> pl.DataFrame:
        """Bars of the given months of one exchange, with ``exchange``, in one frame (only those
        of ``symbols`` when given: one month file at a time is held whole; only ``columns`` of
        the bar schema when given)."""
        if symbols is None:
            whole = self._read_whole(exchange, months, columns)
            if whole is not None:
                return whole.with_columns(pl.lit(exchange).alias("exchange"))
            frames = parallel_map(lambda m: self.read_partition(exchange, m, columns), months)
        else:
            frames = parallel_map(lambda m: self.read_partition(exchange, m, columns).filter(
                pl.col("symbol").is_in(symbols)), months)
        frames = [f for f in frames if f.height]
        out = pl.concat(frames) if frames else empty_bars(columns)
        return out.with_columns(pl.lit(exchange).alias("exchange"))

    def _read_whole(self, exchange: str, months: list[str], columns: list[str] | None) -> pl.DataFrame | None:
        """The month files in one Parquet read (Polars reads them in parallel), verified first;
        None when a file lacks a column or differs in type (a file from an older release), for
        ``read_partition`` one at a time, which fills such columns in."""
        paths = [p for p in (self.partition_path(exchange, m) for m in months) if p.exists()]
        if len(paths) < 2:
            return None
        self.verify_files(paths)
        wanted = bar_columns(columns)
        try:
            out = pl.read_parquet(paths, columns=wanted).select(wanted)
        except pl.exceptions.PolarsError:  # read one at a time, which says what is wrong
            return None
        return out if out.schema == {c: BAR_SCHEMA[c] for c in wanted} else None

    def has_bars(self) -> bool:
        return bool(self.bar_files())

    # ------------------------------------------------- derived tables (features, labels)
    def table_dir(self, table: str, version: str | None = None) -> Path:
        base = self.root / table
        return base / f"version={version}" if version else base

    def table_files(self, table: str, version: str | None = None, exchange: str | None = None) -> list[Path]:
        ex = f"exchange={exchange}" if exchange else "exchange=*"
        return sorted(self.table_dir(table, version).glob(f"{ex}/month=*/{PARTITION_FILE}"))

    def table_versions(self, table: str) -> list[str]:
        return sorted(p.name.split("=", 1)[1] for p in self.table_dir(table).glob("version=*") if p.is_dir())

    def scan_table(self, table: str, version: str | None = None, exchange: str | None = None,
                   between: tuple[dt.date, dt.date] | None = None) -> pl.LazyFrame | None:
        """A derived table (with ``exchange``), or None when it has no files (labels are a view
        over the bars: ``catalog.scan_labels``). ``between``: only the rows of trade dates in
        [first, last], from the files of their months alone (only those are read, so only
        those are verified)."""
        files = _in_months(self.table_files(table, version, exchange), between)
        if not files:
            return None
        self.verify_files(files)
        frame = pl.concat(
            [pl.scan_parquet(f).with_columns(pl.lit(f.parent.parent.name.split("=", 1)[1]).alias("exchange"))
             for f in files],
            how="diagonal_relaxed",
        )
        return frame if between is None else frame.filter(pl.col("trade_date").is_between(*between))

    def read_table_partition(self, table: str, exchange: str, month: str, version: str | None = None,
                             columns: list[str] | None = None) -> pl.DataFrame | None:
        path = self.table_dir(table, version) / f"exchange={exchange}" / f"month={month}" / PARTITION_FILE
        if not path.exists():
            return None
        self.verify(path)
        return pl.read_parquet(path, columns=columns)

    def table_months(self, table: str, version: str | None, exchange: str) -> list[str]:
        """The months (YYYY-MM, oldest first) that have a file of a derived table for ``exchange``."""
        return [f.parent.name.split("=", 1)[1] for f in self.table_files(table, version, exchange)]

    def write_table_partition(self, table: str, exchange: str, month: str, df: pl.DataFrame,
                              version: str | None = None) -> None:
        self._require_lock()
        path = self.table_dir(table, version) / f"exchange={exchange}" / f"month={month}" / PARTITION_FILE
        atomic_write_parquet(df.drop("exchange", strict=False), path)

    def delete_table_partition(self, table: str, exchange: str, month: str, version: str | None = None) -> None:
        """Delete one month file of a derived table (a removal left it without rows)."""
        self._require_lock()
        unlink(self.table_dir(table, version) / f"exchange={exchange}" / f"month={month}" / PARTITION_FILE)

    def read_state(self, table: str, version: str | None = None) -> dict:
        path = self.table_dir(table, version) / STATE_FILE
        if not path.exists():
            return {}
        self.verify(path)
        return json.loads(path.read_text())

    def write_state(self, table: str, state: dict, version: str | None = None) -> None:
        self._require_lock()
        atomic_write_text(json.dumps(state, indent=1, sort_keys=True, default=str),
                          self.table_dir(table, version) / STATE_FILE)

    def max_ingest_id(self, exchange: str) -> int:
        stats = self.file_stats(exchange)
        return int(stats["max_ingest_id"].max() or 0) if stats.height else 0

    def date_span(self, exchange: str) -> tuple[dt.date, dt.date]:
        """First and last bar date of ``exchange`` (from footers)."""
        stats = self.file_stats(exchange)
        return stats["first"].min(), stats["last"].max()

    def changed_bars(self, exchange: str, since_ingest_id: int) -> pl.DataFrame:
        """(symbol, date) of bars of ``exchange`` changed after ``since_ingest_id``; reads only
        the month files whose footer says they hold such bars."""
        stats = self.file_stats(exchange)
        months = stats.filter(pl.col("max_ingest_id") > since_ingest_id)["month"].to_list()
        if not months:
            return pl.DataFrame(schema={"symbol": pl.String, "date": pl.Date})
        return (self.read_months(exchange, months).filter(pl.col("ingest_id") > since_ingest_id)
                .select("symbol", "date"))

    def read_bars_since(self, exchange: str, month: str) -> pl.DataFrame:
        """Bars of ``exchange`` from ``month`` (YYYY-MM) on, with ``exchange``."""
        return self.read_months(exchange, [m for m in self.months(exchange) if m >= month])

    # ------------------------------------------------------------- integrity
    def verify(self, path: Path, footer_only: bool = False) -> None:
        """Raise CorruptFile unless ``path`` matches the checksum recorded when it was written."""
        checksums.verify(path, self.describe, footer_only)

    def verify_files(self, paths: list[Path], footer_only: bool = False) -> None:
        checksums.verify_all(paths, self.describe, footer_only)

    def describe(self, path: Path) -> Holds:
        """What a file of the data directory holds, and how to recover it when it is corrupted."""
        try:
            parts = Path(path).absolute().relative_to(self.root.absolute()).parts
        except ValueError:  # not under this store (a symlink, a copy): by its name alone
            parts = Path(path).parts[-4:]
        keys = dict(p.split("=", 1) for p in parts[:-1] if "=" in p)
        name = parts[-1]
        if parts[0] == "day_symbol" and name == PARTITION_FILE:
            ex, month = keys.get("exchange", "?"), keys.get("month", "?")
            return Holds("bars", f"the {ex} bars of {month} (prices, volumes, indicators and their recursion state)",
                         False, self._bars_action(Path(path), ex, month))
        if parts[0] == "day_symbol" and name == SOURCES_FILE:
            ex = keys.get("exchange", "?")
            return Holds("sources", f"the list of input files ingested for {ex} (for recovery hints only)", False,
                         f"nothing reads it but recovery hints: delete it (`rm {path}`); the next ingest of {ex} "
                         "starts a new list")
        if parts == ("symbols.parquet",):
            return Holds("symbols", "every symbol's exchange, name and sector", False,
                         f"restore {path} from a backup, or move it aside (`mv {path} {path}.corrupt`) and ingest "
                         "again: every ingest adds the symbols it loads, and --symbols-file FILE their names and "
                         "sectors (features use the sectors)")
        if parts[0] == "features":
            version = keys.get("version", "?")
            if name == STATE_FILE:
                return Holds("features state", f"the build state of the {version} features (per exchange: the "
                             "bars built from, the sessions covered) and its definition fingerprint", True, REPAIR)
            return Holds("features", f"the {version} feature rows of {keys.get('exchange', '?')} for "
                         f"{keys.get('month', '?')}", True, REPAIR)
        if parts == ("labels", STATE_FILE):
            return Holds("labels state", "the label horizon (per exchange, the last complete session labelled)",
                         True, REPAIR)
        if parts[0] == "sample" and name == STATE_FILE:
            return Holds("sample record", "the sample market's record (seed, origins; for `sample-data --top-up`)",
                         False, f"restore it from a backup; without it `retrain sample-data --top-up` cannot extend "
                                f"the sample (delete it, `rm {path}`, and top-ups stop)")
        if parts[0] == "quarantine":
            return Holds("quarantine", "input rows an ingest rejected, with their reasons (a report only)", False,
                         f"nothing reads it: delete it (`rm {path}`) once you no longer need it")
        return Holds("other", "a file retrain wrote", False, f"restore {path} from a backup")

    def _bars_action(self, path: Path, exchange: str, month: str) -> str:
        try:
            files = self.sources_of(exchange, month)
        except (RetrainError, OSError, ValueError):
            files = []
        fix = (f"bars cannot be rebuilt from anything else: restore {path} from a backup, or move it aside "
               f"(`mv {path} {path}.corrupt`) and ingest again the input that held {exchange}'s bars of {month}")
        if files:
            dirs = sorted({str(Path(f).parent) for f in files})
            listing = (" ".join(files) if len(files) <= 5 else " ".join(dirs) if len(dirs) <= 3 else
                       f"{' '.join(files[:5])} ... ({len(files)} files, all listed in {self.sources_path(exchange)})")
            fix += (f": `retrain ingest {listing} --exchange {exchange}`. That brings back the bars of those files "
                    "only, and with them any symbol removed since (`retrain remove` it again)")
            if (self.root / "sample" / STATE_FILE).exists():
                fix += (f"; this store also holds the sample market, whose bars of {month} come from no input file: "
                        "only a backup has them")
        elif (self.root / "sample" / STATE_FILE).exists():
            fix += (": this store holds the sample market, which has no input files: write it afresh into a new "
                    "store (`retrain sample-data`)")
        else:
            fix += " (no input files are recorded for it: it was ingested by a retrain that did not record them)"
        return fix + "; the next `retrain run` recomputes its indicators and features"

    # ------------------------------------------------------------------ lock
    @contextlib.contextmanager
    def lock(self, command: str) -> Iterator[None]:
        """Hold the store's writer lock. A second writer fails at once with LockBusy, naming the
        lock file and the process that holds it. Re-entrant within one Store object. The kernel
        drops the lock when the holder dies, so a killed run never leaves a stale lock."""
        if self._lock_depth:
            self._lock_depth += 1
            try:
                yield
            finally:
                self._lock_depth -= 1
            return
        with machine_faults(self.lock_path, action="opening the store's lock file",
                            kept=f"`{command}` needs to write to the store and changed nothing."):
            self.root.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 4096).decode("utf-8", "replace").strip()
            os.close(fd)
            try:
                info = json.loads(holder)
                who = f"pid {info.get('pid')} running `{info.get('command')}` since {info.get('started')}"
            except (ValueError, AttributeError):
                who = "another process"
            raise LockBusy(
                f"the store {self.root} is locked by {who} (lock file {self.lock_path})",
                hint="wait for that run to finish, or stop it; the lock is released when it exits",
            ) from None
        info = {"pid": os.getpid(), "command": command, "started": dt.datetime.now().isoformat(timespec="seconds")}
        with contextlib.suppress(OSError):  # who holds the lock is for messages only: a full disk may refuse it
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps(info).encode(), 0)
        self._lock_depth = 1
        self._sweep_temp_files()
        try:
            yield
        finally:
            self._lock_depth = 0
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    def _sweep_temp_files(self) -> None:
        """Remove temporary files left by a writer that was killed mid-write. Only called with
        the lock held, so no live writer can own them."""
        for tmp in self.root.rglob(f"{TMP_PREFIX}*"):
            with contextlib.suppress(OSError):
                tmp.unlink()

    def _require_lock(self) -> None:
        if not self._lock_depth:
            raise RuntimeError("store writes must happen inside Store.lock()")

    # ------------------------------------------------------------------ bars
    def scan_bars(self, exchange: str | None = None, between: tuple[dt.date, dt.date] | None = None) -> pl.LazyFrame:
        """All bars (with ``exchange``), as a LazyFrame in no particular order. ``between``: only
        the bars dated in [first, last], from the files of their months alone (only those are
        read, so only those are verified: a scan of a few days stays as cheap at ten years of
        history as at one)."""
        files = _in_months(self.bar_files(exchange), between)
        if not files:
            return empty_bars().with_columns(pl.lit(None, pl.String).alias("exchange")).lazy()
        self.verify_files(files)
        frames = [
            pl.scan_parquet(f).with_columns(pl.lit(f.parent.parent.name.split("=", 1)[1]).alias("exchange"))
            for f in files
        ]
        frame = pl.concat(frames, how="vertical_relaxed")
        return frame if between is None else frame.filter(pl.col("date").is_between(*between))

    def read_partition(self, exchange: str, month: str, columns: list[str] | None = None) -> pl.DataFrame:
        """One month file of bars, in the bar schema (only its ``columns``, in schema order, when
        given: the others are not decoded)."""
        path = self.partition_path(exchange, month)
        if not path.exists():
            return empty_bars(columns)
        self.verify(path)
        wanted = bar_columns(columns)
        present = set(pl.read_parquet_schema(path)) if columns is not None else None
        df = pl.read_parquet(path, columns=[c for c in wanted if c in present] if present is not None else None)
        missing = [c for c in wanted if c not in df.columns]  # files from before a column existed
        return df.with_columns(pl.lit(None, BAR_SCHEMA[c]).alias(c) for c in missing).select(wanted)

    def write_partition(self, exchange: str, month: str, bars: pl.DataFrame, presorted: bool = False) -> None:
        """Replace one month of one exchange atomically; the file is sorted by symbol, date
        (``presorted``: the caller guarantees ``bars`` already is)."""
        self._require_lock()
        self._stats.pop(exchange, None)
        atomic_write_parquet(_bar_file(bars, presorted), self.partition_path(exchange, month))

    def write_partitions(self, exchange: str, parts: dict[str, pl.DataFrame], presorted: bool = False) -> None:
        """Write several month files of one exchange (each atomically) on a few threads. The
        exchange's ``file_stats``, if remembered, are brought up to date from the frames written
        (what their footers will say), not read again."""
        self._require_lock()
        known = self._stats.get(exchange)
        parallel_map(lambda item: self.write_partition(exchange, *item, presorted=presorted), list(parts.items()))
        if known is not None and all(part.height for part in parts.values()):
            written = pl.DataFrame([_month_stats(month, part) for month, part in parts.items()], schema=_STATS_SCHEMA)
            self._stats[exchange] = (pl.concat([known.filter(~pl.col("month").is_in(list(parts))), written])
                                     .sort("month"))

    def delete_partition(self, exchange: str, month: str) -> None:
        """Delete one month file of one exchange (a removal left it without bars)."""
        self._require_lock()
        self._stats.pop(exchange, None)
        unlink(self.partition_path(exchange, month))

    def upsert_bars(self, bars: pl.DataFrame, batch_id: int | None = None) -> UpsertResult:
        """Insert or replace bars by key (exchange, symbol, date).

        ``bars`` has exchange, symbol, date and the value columns, and optionally ``source``
        (the input file of each row), which is recorded per exchange with the first and last
        month it held (``sources``), in the same commit. A bar whose values differ
        from the stored one (or that is new) gets ``ingest_id = batch_id`` and null indicators;
        an identical bar is left as it is, indicators included. The changed month files are
        all written to temporary files first, then renamed into place: a full disk or a
        read-only store changes nothing, and a kill during the renames leaves each file whole
        (the rerun completes the rest).
        """
        self._require_lock()
        result = UpsertResult(batch_id=batch_id or new_batch_id())
        if bars.is_empty():
            return result
        incoming = bars.select(
            pl.col("exchange").cast(pl.String),
            pl.col("symbol").cast(pl.String),
            pl.col("date").cast(pl.Date),
            *[pl.col(c).cast(BAR_SCHEMA[c]) for c in VALUE_COLUMNS],
        ).with_columns(pl.col("date").dt.strftime("%Y-%m").alias("_month"))
        # Every changed month is staged first and renamed into place only once all are written:
        # a full disk or a read-only store leaves the bars exactly as they were.
        staged: list[tuple[Path, Path]] = []
        try:
            for (exchange, month), part in incoming.group_by(["exchange", "_month"], maintain_order=True):
                old = self.read_partition(exchange, month)
                new = part.drop("exchange", "_month")
                joined = new.join(old, on=["symbol", "date"], how="left", suffix="_old")
                is_new = pl.col("open_old").is_null() & pl.col("close_old").is_null()
                differs = pl.any_horizontal([pl.col(c).ne_missing(pl.col(f"{c}_old")) for c in VALUE_COLUMNS])
                flagged = joined.with_columns(is_new.alias("_new"), differs.alias("_changed"))
                n_new = int(flagged["_new"].sum())
                n_changed = int(flagged["_changed"].sum())
                result.new += n_new
                result.updated += n_changed - n_new
                result.unchanged += flagged.height - n_changed
                if n_changed == 0:
                    continue
                changed = (
                    flagged.filter(pl.col("_changed"))
                    .select("symbol", "date", *VALUE_COLUMNS)
                    .with_columns(
                        *[pl.lit(None, BAR_SCHEMA[c]).alias(c) for c in INDICATOR_COLUMNS + STATE_COLUMNS],
                        pl.lit(result.batch_id, pl.Int64).alias("ingest_id"),
                    )
                )
                kept = old.join(changed.select("symbol", "date"), on=["symbol", "date"], how="anti")
                merged = _bar_file(pl.concat([kept, changed.select(list(BAR_SCHEMA))]))
                path = self.partition_path(exchange, month)
                staged.append((stage(path, lambda tmp, df=merged: write_parquet(df, tmp)), path))
                self._stats.pop(exchange, None)
            if "source" in bars.columns:  # recorded whenever new (a rerun after a kill records them too)
                for exchange in sorted(incoming["exchange"].unique()):
                    sources = self._stage_sources(exchange, bars.filter(pl.col("exchange") == exchange))
                    if sources:
                        staged.append(sources)
        except BaseException:
            discard(staged)
            raise
        commit(staged, between="store.between_partitions")
        result.partitions_written = len(staged)
        return result

    # --------------------------------------------------------------- sources
    def sources_path(self, exchange: str) -> Path:
        return self.bars_dir / f"exchange={exchange}" / SOURCES_FILE

    def sources(self, exchange: str) -> dict[str, list[str]]:
        """The input files ingested for ``exchange``: {path: [first month, last month]}."""
        path = self.sources_path(exchange)
        if not path.exists():
            return {}
        self.verify(path)
        return json.loads(path.read_text()).get("files", {})

    def sources_of(self, exchange: str, month: str) -> list[str]:
        """The input files that held bars of ``exchange`` in ``month`` (what to re-ingest)."""
        return sorted(f for f, (first, last) in self.sources(exchange).items() if first <= month <= last)

    def _stage_sources(self, exchange: str, rows: pl.DataFrame) -> tuple[Path, Path] | None:
        """The sources file of ``exchange`` with the input files of ``rows`` added, staged; None
        when it would not change."""
        before = self.sources(exchange)
        files = dict(before)
        spans = rows.group_by("source").agg(pl.col("date").min().dt.strftime("%Y-%m").alias("first"),
                                            pl.col("date").max().dt.strftime("%Y-%m").alias("last"))
        for source, first, last in spans.iter_rows():
            key = str(Path(source).absolute())
            old = files.get(key, [first, last])
            files[key] = [min(old[0], first), max(old[1], last)]
        if files == before:
            return None
        text = json.dumps({"files": dict(sorted(files.items()))}, indent=1) + "\n"
        path = self.sources_path(exchange)
        return stage(path, lambda tmp: tmp.write_text(text, encoding="utf-8")), path

    # --------------------------------------------------------------- symbols
    def read_symbols(self) -> pl.DataFrame:
        if not self.symbols_path.exists():
            return pl.DataFrame(schema=SYMBOL_SCHEMA)
        self.verify(self.symbols_path)
        return pl.read_parquet(self.symbols_path).select([pl.col(c).cast(t) for c, t in SYMBOL_SCHEMA.items()])

    def upsert_symbols(self, symbols: pl.DataFrame) -> int:
        """Add new (exchange, symbol) rows; a non-null name or sector replaces the stored one.
        Returns the number of symbols that were not known before."""
        self._require_lock()
        incoming = symbols.select(
            [pl.col(c).cast(t) if c in symbols.columns else pl.lit(None, t).alias(c) for c, t in SYMBOL_SCHEMA.items()]
        ).unique(subset=["exchange", "symbol"], keep="last", maintain_order=True)
        old = self.read_symbols()
        merged = incoming.join(old, on=["exchange", "symbol"], how="full", coalesce=True, suffix="_old")
        merged = merged.select(
            "symbol",
            "exchange",
            pl.coalesce("name", "name_old").alias("name"),
            pl.coalesce("sector", "sector_old").alias("sector"),
        ).sort(["exchange", "symbol"])
        added = merged.height - old.height
        if added or not merged.equals(old.sort(["exchange", "symbol"])):
            atomic_write_parquet(merged, self.symbols_path)
        return added

    def remove_symbols(self, exchange: str, symbols: list[str]) -> int:
        """Drop the (exchange, symbol) rows of ``symbols`` from symbols.parquet; returns how many went."""
        self._require_lock()
        old = self.read_symbols()
        gone = (pl.col("exchange") == exchange) & pl.col("symbol").is_in(symbols)
        kept = old.filter(~gone)
        if kept.height < old.height:
            atomic_write_parquet(kept, self.symbols_path)
        return old.height - kept.height

    # ------------------------------------------------------------- quarantine
    def write_quarantine(self, rejects: pl.DataFrame) -> Path:
        """Write rejected rows (with their reason) to quarantine/<timestamp>.csv."""
        self.root.mkdir(parents=True, exist_ok=True)
        stamp = dt.datetime.now().strftime("%Y%m%dT%H%M%S_%f")
        path = self.quarantine_dir / f"{stamp}.csv"
        atomic_write(path, lambda tmp: rejects.write_csv(tmp))
        return path

    # ---------------------------------------------------------------- DuckDB
    def label_horizon(self) -> dict[str, dt.date]:
        """Per exchange, the last session labels cover (recorded by `retrain labels`)."""
        state = self.read_state("labels")
        return {e: dt.date.fromisoformat(v["last_complete"]) for e, v in state.items()
                if isinstance(v, dict) and v.get("last_complete")}

def _in_months(files: list[Path], between: tuple[dt.date, dt.date] | None) -> list[Path]:
    """The month files (``.../month=YYYY-MM/data.parquet``) that may hold dates in ``between``."""
    if between is None:
        return files
    lo, hi = (f"{d:%Y-%m}" for d in between)
    return [f for f in files if lo <= f.parent.name.split("=", 1)[1] <= hi]


def split_by_month(df: pl.DataFrame, date_col: str) -> dict[str, pl.DataFrame]:
    """Rows of ``df`` by the "YYYY-MM" month of ``date_col`` (integer keys: no string formatting
    of every row)."""
    key = (pl.col(date_col).dt.year().cast(pl.Int32) * 100 + pl.col(date_col).dt.month()).alias("_month_key")
    parts = df.with_columns(key).partition_by("_month_key", as_dict=True, include_key=False)
    return {f"{k // 100:04d}-{k % 100:02d}": v for (k,), v in parts.items()}


def require_exchange_bars(store: Store, exchange: str) -> None:
    """Raise a RetrainError naming the exchanges that do have bars when ``exchange`` has none."""
    if store.bar_files(exchange):
        return
    have = sorted({p.parent.parent.name.split("=", 1)[1] for p in store.bar_files()})
    listed = ", ".join(have) if have else "none (the store is empty)"
    raise RetrainError(
        f"no bars for exchange {exchange} in {store.bars_dir}",
        hint=f"exchanges with bars: {listed}. Load data with `retrain ingest PATH --exchange {exchange}`",
    )
