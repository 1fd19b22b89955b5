"""Input files -> validated bars, with every rejected row kept alongside its reason.

Formats (``--format auto`` picks one per file):

* ``yahoo``: one CSV per symbol, the symbol taken from the file name. Date, Open, High, Low,
  Close, [Adj Close], Volume in any order and case; extra columns ignored; the date column may
  be unnamed (a pandas date index); an unnamed integer index column may come first.
* ``stooq``: ``<TICKER>,<PER>,<DATE>,<TIME>,<OPEN>,<HIGH>,<LOW>,<CLOSE>,<VOL>,<OPENINT>``
  with YYYYMMDD dates; ``AAPL.US`` becomes ``AAPL``.
* ``long``: CSV or Parquet with ``symbol,date,open,high,low,close,volume[,adj_close][,exchange]``.

CSV files may be gzip-compressed (``.csv.gz``, ``.txt.gz``). A directory is searched for these
suffixes; any other file in it is skipped and counted, with an example name.

CSV files that share a header line are read in one scan, the rest one by one; either way a
file that cannot be read is reported by name and skipped. Parsing and validation are
vectorized over all rows of all files at once.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from retrain import calendar
from retrain.calendar import AsOf
from retrain.errors import RetrainError
from retrain.store import Store

FORMATS = ("auto", "yahoo", "stooq", "long")
RAW_COLUMNS = ["source", "line", "exchange", "symbol", "date", "open", "high", "low", "close", "adj_close", "volume"]
DATA_SUFFIXES = {".csv", ".txt", ".parquet", ".pq"}
PARQUET_SUFFIXES = {".parquet", ".pq"}
COMPRESSED = ".gz"  # gzip-compressed CSV: Polars reads it as it is

# Reject reasons, in the order they are checked: a row gets the first that applies.
R_DATE = "unparseable or missing date"
R_OHLC = "non-numeric or missing OHLC"
R_PRICE = "price <= 0"
R_RANGE = "high below open/close or low above open/close"
R_VOLUME_BAD = "non-numeric or missing volume"
R_VOLUME_NEG = "negative volume"
R_VOLUME_BIG = "volume too large (over 2^62)"
R_ADJ = "adj close given but not a positive number"
R_EXCHANGE = "unknown exchange"
R_SESSION = "date is not a session of the exchange"
R_FUTURE = "date after --as-of"
R_FUTURE_NOW = "date in the future (after today at the exchange)"
R_DUPLICATE = "conflicting duplicates in input"
REASON_ORDER = [R_DATE, R_OHLC, R_PRICE, R_RANGE, R_VOLUME_BAD, R_VOLUME_NEG, R_VOLUME_BIG, R_ADJ, R_EXCHANGE,
                R_SESSION, R_FUTURE, R_FUTURE_NOW, R_DUPLICATE]
MAX_VOLUME = 2.0 ** 62  # within Int64, with room for sums

_SYMBOL_SUFFIX = re.compile(r"\.(US|TO|TSX|NQ|N)$", re.IGNORECASE)


class FileProblem(Exception):
    """A whole file cannot be used (unreadable, empty, no date or close column)."""


@dataclass
class IngestReport:
    files: int = 0
    rows_read: int = 0
    accepted: int = 0
    new: int = 0
    updated: int = 0
    unchanged: int = 0
    symbols_added: int = 0
    rejects: dict[str, int] = field(default_factory=dict)
    file_problems: list[tuple[str, str]] = field(default_factory=list)
    quarantine: Path | None = None
    written: bool = False
    by_exchange: dict[str, int] = field(default_factory=dict)
    skipped: list[Path] = field(default_factory=list)  # files in the directories given that are not data files

    @property
    def rejected(self) -> int:
        return sum(self.rejects.values())


# ------------------------------------------------------------------ reading
def data_suffix(path: Path) -> str:
    """The suffix that says what a file holds: ``.csv`` of ``x.csv`` and of ``x.csv.gz``."""
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes[-1:] == [COMPRESSED]:
        suffixes.pop()
    return suffixes[-1] if suffixes else ""


def _gzipped(path: Path) -> bool:
    """Whether the name says gzip-compressed (``.gz``)."""
    return path.name.lower().endswith(COMPRESSED)


def _stem(path: Path) -> str:
    """The file name without its data suffix (and ``.gz``): the symbol of a Yahoo file."""
    return Path(path.name[:-len(COMPRESSED)] if _gzipped(path) else path.name).stem


def _is_data_file(path: Path) -> bool:
    suffix = data_suffix(path)
    return suffix in DATA_SUFFIXES and not (_gzipped(path) and suffix in PARQUET_SUFFIXES)


def collect_files(paths: Iterable[str | Path], skipped: list[Path] | None = None) -> list[Path]:
    """Files named, plus data files (.csv .txt .parquet, .csv.gz .txt.gz) found recursively in
    directories; the other files found there (hidden ones aside) go to ``skipped``."""
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found = sorted(f for f in p.rglob("*") if f.is_file())
            out.extend(f for f in found if _is_data_file(f))
            if skipped is not None:
                skipped.extend(f for f in found if not _is_data_file(f)
                               and not any(part.startswith(".") for part in f.relative_to(p).parts))
        elif p.is_file():
            out.append(p)
        else:
            raise RetrainError(f"no such file or directory: {p}", hint="check the path given to retrain ingest")
    return out


def symbol_from_name(name: str) -> str:
    """``AAPL.US`` -> ``AAPL``; ``brk-b`` -> ``BRK-B``."""
    return _SYMBOL_SUFFIX.sub("", name.strip()).upper()


def _norm(name: str) -> str:
    return re.sub(r"[\s_<>\-]", "", name.strip().lower())


PARQUET_MAGIC = b"PAR1"
GZIP_MAGIC = b"\x1f\x8b"


def _sniff(path: Path) -> None:
    """A file that is not text is a FileProblem that says what it is (a Parquet file with
    another suffix, a compressed file, binary data) rather than a CSV read as garbage."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(1 << 16)
    except OSError as exc:
        raise FileProblem(f"cannot be read ({exc.strerror or type(exc).__name__})") from None
    if head.startswith(PARQUET_MAGIC):
        raise FileProblem("this is a Parquet file, not a CSV: rename it to .parquet (read as the long format)")
    if head.startswith(GZIP_MAGIC):
        if _gzipped(path):
            return
        raise FileProblem("this is a gzip-compressed file: name it .csv.gz, or decompress it")
    if head.startswith((b"PK\x03\x04", b"\xfd7zXZ", b"BZh", b"\x28\xb5\x2f\xfd")):
        raise FileProblem("this is a compressed archive (zip, xz, bzip2 or zstd), not a CSV: extract it first"
                          " (gzip-compressed .csv.gz files are read as they are)")
    nul = head.find(b"\x00")
    if nul >= 0:
        raise FileProblem(f"not a text file (binary data: a NUL byte at offset {nul}); a CSV or Parquet file was "
                          "expected")


def _read_csv_strings(path: Path) -> pl.DataFrame:
    _sniff(path)
    try:
        df = pl.read_csv(path, infer_schema=False, truncate_ragged_lines=True, encoding="utf8-lossy")
    except pl.exceptions.NoDataError:
        raise FileProblem("empty file") from None
    except Exception as exc:  # noqa: BLE001 - any parse failure is a file-level problem
        raise FileProblem(f"unreadable as CSV ({type(exc).__name__}: {str(exc).splitlines()[0][:200]})") from None
    if df.height == 0:
        raise FileProblem("no data rows (header only)")
    # A blank header (pandas writes one for its index) gets a usable name.
    return df.rename({c: f"unnamed: {i}" for i, c in enumerate(df.columns) if not c.strip()})


def _read_long_parquet(path: Path) -> pl.DataFrame:
    try:
        df = pl.read_parquet(path)
    except Exception as exc:  # noqa: BLE001
        try:
            with open(path, "rb") as fh:
                magic = fh.read(4)
        except OSError:
            magic = b""
        what = "" if magic == PARQUET_MAGIC else "; it does not start as a Parquet file does (PAR1): is it a CSV?"
        raise FileProblem(f"unreadable as Parquet ({type(exc).__name__}){what}") from None
    if df.height == 0:
        raise FileProblem("no data rows")
    return df.with_columns(pl.all().cast(pl.String))


def _looks_like_dates(values: pl.Series) -> bool:
    sample = values.drop_nulls().head(20)
    return sample.len() > 0 and _parse_dates(sample).null_count() <= sample.len() // 4


def detect_format(path: Path, columns: list[str]) -> str:
    normed = {_norm(c) for c in columns}
    if data_suffix(path) in PARQUET_SUFFIXES:
        return "long"
    if any(c.strip().startswith("<") for c in columns) or {"ticker", "per"} <= normed:
        return "stooq"
    if "symbol" in normed or "ticker" in normed:
        return "long"
    return "yahoo"


def _pick(df: pl.DataFrame, names: dict[str, str], *wanted: str) -> str | None:
    for w in wanted:
        if w in names:
            return names[w]
    return None


def read_file(path: Path, fmt: str = "auto") -> pl.DataFrame:
    """Read one file into raw string rows with RAW_COLUMNS (exchange may be null)."""
    if data_suffix(path) in PARQUET_SUFFIXES:
        if fmt not in ("auto", "long"):
            raise FileProblem(f"Parquet input is read as the long format, not {fmt}")
        df = _read_long_parquet(path)
    else:
        df = _read_csv_strings(path)
    return df.select(_raw_columns(df, path, fmt))


class _NotInBatch(Exception):
    """A group of files that must be read one by one (what a file holds decides its columns)."""


def _raw_columns(df: pl.DataFrame, path: Path, fmt: str, batch: list[Path] | None = None) -> list[pl.Expr]:
    """The expressions that turn a file's columns into RAW_COLUMNS. ``batch``: ``df`` holds the
    rows of these files (all with ``path``'s header), each row with its file in ``_path``; the
    source, line and file-name symbol then come from that column."""
    kind = detect_format(path, df.columns) if fmt == "auto" else fmt
    names: dict[str, str] = {}
    for c in df.columns:
        names.setdefault(_norm(c), c)
    if batch is None:  # a CSV line (the header is line 1); a Parquet file's row, from 1
        first = 1 if data_suffix(path) in PARQUET_SUFFIXES else 2
        line = pl.int_range(first, df.height + first, dtype=pl.Int64)
        source = pl.lit(str(path))
    else:
        line = pl.int_range(pl.len(), dtype=pl.Int64).over("_path") + 2
        source = pl.col("_path")

    if kind == "stooq":
        if batch is not None:
            raise _NotInBatch
        sym = _pick(df, names, "ticker", "symbol")
        if sym is None:
            raise FileProblem("no <TICKER> column")
        symbol = pl.col(sym).map_elements(symbol_from_name, return_dtype=pl.String)
        date_col = _pick(df, names, "date")
        vol = _pick(df, names, "vol", "volume")
        adj = None
    elif kind == "long":
        sym = _pick(df, names, "symbol", "ticker")
        if sym is None:
            raise FileProblem("no symbol column (the long format needs symbol,date,open,high,low,close,volume)")
        symbol = pl.col(sym).str.strip_chars().str.to_uppercase()
        date_col = _pick(df, names, "date", "datetime", "timestamp")
        vol = _pick(df, names, "volume", "vol")
        adj = _pick(df, names, "adjclose")
    else:  # yahoo
        if batch is None:
            symbol = pl.lit(symbol_from_name(_stem(path)))
        else:
            symbol = pl.col("_path").replace_strict({str(p): symbol_from_name(_stem(p)) for p in batch},
                                                    return_dtype=pl.String)
        date_col = _pick(df, names, "date", "datetime", "timestamp")
        if date_col is None:  # a pandas date index is written with an empty (or "Unnamed: 0") header
            if batch is not None:
                raise _NotInBatch
            unnamed = [c for c in df.columns if c.strip() == "" or c.lower().startswith(("unnamed", "column_"))]
            date_col = next((c for c in unnamed if _looks_like_dates(df[c])), None)
        vol = _pick(df, names, "volume", "vol")
        adj = _pick(df, names, "adjclose")

    if date_col is None:
        raise FileProblem(f"no recognisable date column (columns: {', '.join(df.columns)})")
    close = _pick(df, names, "close")
    if close is None:
        raise FileProblem(f"no close column (columns: {', '.join(df.columns)})")
    exch = _pick(df, names, "exchange") if kind == "long" else None
    wanted = {"open": ("open",), "high": ("high",), "low": ("low",), "volume": ("volume", "vol")}
    missing = [what for what, keys in wanted.items() if _pick(df, names, *keys) is None]
    if missing:
        raise FileProblem(f"no {', '.join(missing)} column{'s' if len(missing) > 1 else ''} "
                          f"(columns: {', '.join(df.columns)}); every bar needs open, high, low, close and volume")

    def col(name: str | None) -> pl.Expr:
        return pl.col(name).cast(pl.String) if name else pl.lit(None, pl.String)

    return [
        source.alias("source"),
        line.alias("line"),
        col(exch).alias("exchange"),
        symbol.alias("symbol"),
        col(date_col).alias("date"),
        col(_pick(df, names, "open")).alias("open"),
        col(_pick(df, names, "high")).alias("high"),
        col(_pick(df, names, "low")).alias("low"),
        col(close).alias("close"),
        col(adj).alias("adj_close"),
        col(vol).alias("volume"),
    ]


def _header(path: Path) -> bytes | None:
    """A CSV file's first line (None for a Parquet or compressed file, an empty first line, a
    file that is not text or an unreadable file)."""
    if data_suffix(path) in PARQUET_SUFFIXES or _gzipped(path):
        return None
    try:
        with open(path, "rb") as fh:
            line = fh.readline(1 << 16)
    except OSError:
        return None
    if not line.strip() or line.startswith((PARQUET_MAGIC, GZIP_MAGIC)) or b"\x00" in line:
        return None  # read alone, which names the problem
    return line.rstrip(b"\r\n")


def _read_batch(paths: list[Path], fmt: str) -> dict[Path, pl.DataFrame]:
    """CSV files with the same header line, read in one scan (Polars parses them in parallel,
    outside Python): their raw rows per file. A file the scan gives no row for is left out
    (read alone, it gets its own message); a group that cannot be read so gives {}."""
    try:
        df = pl.scan_csv([str(p) for p in paths], infer_schema=False, truncate_ragged_lines=True,
                         encoding="utf8-lossy", include_file_paths="_path").collect()
        if any(not c.strip() for c in df.columns):  # a blank header gets its own name when read alone
            return {}
        raw = df.select(_raw_columns(df, paths[0], fmt, batch=paths))
    except Exception:  # noqa: BLE001 - any problem: the files are read one by one, which names it
        return {}
    parts = raw.partition_by("source", as_dict=True, maintain_order=True)
    by_name = {str(p): p for p in paths}
    return {by_name[key]: part for (key,), part in parts.items() if part.height}


# --------------------------------------------------------------- validation
def _date_expr(text: pl.Expr) -> pl.Expr:
    """ISO (YYYY-MM-DD), US (M/D/YYYY) or compact (YYYYMMDD), optionally followed by a time."""
    day = text.str.strip_chars().str.split(" ").list.first().str.split("T").list.first()
    return pl.coalesce(
        day.str.to_date("%Y-%m-%d", strict=False),
        day.str.to_date("%m/%d/%Y", strict=False),
        day.str.to_date("%Y%m%d", strict=False),
    )


def _parse_dates(values: pl.Series) -> pl.Series:
    """``_date_expr`` of each value. The common case, a plain ISO date, is parsed directly; only
    the values it does not parse go through the slower general form (the same dates: ISO is the
    general form's first choice too)."""
    fast = values.str.to_date("%Y-%m-%d", strict=False)
    rest = fast.is_null() & values.is_not_null()
    if rest.any():
        fast = fast.scatter(rest.arg_true(), pl.select(_date_expr(pl.lit(values.filter(rest)))).to_series())
    return fast


def _num(name: str) -> pl.Expr:
    return pl.col(name).str.strip_chars().cast(pl.Float64, strict=False)


def validate(raw: pl.DataFrame, default_exchange: str | None, as_of: AsOf,
             with_source: bool = False) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Split raw rows into (bars, rejects). Bars have exchange, symbol, date, OHLC, adj_close,
    volume (and ``source``, the input file, ``with_source``); rejects keep the raw strings plus
    ``reason``."""
    typed = raw.with_columns(
        pl.col("exchange").str.strip_chars().str.to_uppercase().fill_null(pl.lit(default_exchange)).alias("_exchange"),
        _parse_dates(raw["date"]).alias("_date"),
        *[_num(c).alias(f"_{c}") for c in ("open", "high", "low", "close", "adj_close", "volume")],
    ).with_columns(pl.col("_exchange").replace(calendar.ALIASES))
    # Session membership and as-of, vectorized per exchange.
    ok_session = pl.lit(False)
    after = pl.lit(False)
    known = list(calendar.EXCHANGES)
    spans = (
        typed.filter(pl.col("_exchange").is_in(known) & pl.col("_date").is_not_null())
        .group_by("_exchange").agg(pl.col("_date").min().alias("lo"), pl.col("_date").max().alias("hi"))
    )
    for ex, lo, hi in spans.iter_rows():
        sess = pl.Series(calendar.sessions(ex, lo, hi), dtype=pl.Date)
        ok_session = pl.when(pl.col("_exchange") == ex).then(pl.col("_date").is_in(sess.implode())).otherwise(ok_session)
        after = pl.when(pl.col("_exchange") == ex).then(pl.col("_date") > as_of.today(ex)).otherwise(after)
    ohlc = ["_open", "_high", "_low", "_close"]
    reason = (
        pl.when(pl.col("_date").is_null()).then(pl.lit(R_DATE))
        .when(pl.any_horizontal([pl.col(c).is_null() | ~pl.col(c).is_finite() for c in ohlc])).then(pl.lit(R_OHLC))
        .when(pl.any_horizontal([pl.col(c) <= 0 for c in ohlc])).then(pl.lit(R_PRICE))
        .when(
            (pl.col("_high") < pl.max_horizontal("_open", "_close"))
            | (pl.col("_low") > pl.min_horizontal("_open", "_close"))
        ).then(pl.lit(R_RANGE))
        .when(pl.col("_volume").is_null() | ~pl.col("_volume").is_finite()).then(pl.lit(R_VOLUME_BAD))
        .when(pl.col("_volume") < 0).then(pl.lit(R_VOLUME_NEG))
        .when(pl.col("_volume") > MAX_VOLUME).then(pl.lit(R_VOLUME_BIG))
        # an adj close that is there must be a price (empty or text: the close stands in)
        .when(pl.col("_adj_close").is_not_null() & (~pl.col("_adj_close").is_finite() | (pl.col("_adj_close") <= 0)))
        .then(pl.lit(R_ADJ))
        .when(~pl.col("_exchange").is_in(known)).then(pl.lit(R_EXCHANGE))
        .when(~ok_session).then(pl.lit(R_SESSION))
        .when(after).then(pl.lit(R_FUTURE_NOW if as_of.is_now else R_FUTURE))
        .otherwise(pl.lit(None, pl.String))
    )
    typed = typed.with_columns(reason.alias("reason"))
    good = typed.filter(pl.col("reason").is_null()).select(
        pl.col("_exchange").alias("exchange"),
        "symbol",
        pl.col("_date").alias("date"),
        pl.col("_open").alias("open"),
        pl.col("_high").alias("high"),
        pl.col("_low").alias("low"),
        pl.col("_close").alias("close"),
        pl.coalesce("_adj_close", "_close").alias("adj_close"),
        pl.col("_volume").round(0).cast(pl.Int64).alias("volume"),
        "source",
        "line",
    )
    # Duplicates within this input: identical ones collapse, conflicting ones are all rejected.
    key = ["exchange", "symbol", "date"]
    values = ["open", "high", "low", "close", "adj_close", "volume"]
    repeated = good.filter(pl.struct(key).is_duplicated())
    conflicted = (
        repeated.group_by(key)
        .agg(pl.struct(values).n_unique().alias("_variants"))
        .filter(pl.col("_variants") > 1)
        .select(key)
    )
    dup_rows = good.join(conflicted, on=key, how="semi").select("source", "line")
    if repeated.height:  # (the usual input repeats nothing: then there is nothing to drop)
        good = good.join(conflicted, on=key, how="anti").unique(subset=key, keep="first", maintain_order=True)
    rejects = pl.concat(
        [
            typed.filter(pl.col("reason").is_not_null()).select(RAW_COLUMNS + ["reason"]),
            raw.join(dup_rows, on=["source", "line"], how="semi").with_columns(pl.lit(R_DUPLICATE).alias("reason")),
        ]
    )
    rejects = rejects.with_columns(pl.col("exchange").fill_null(pl.lit(default_exchange)))
    return good.drop(*(["line"] if with_source else ["source", "line"])).sort(key), rejects.sort(["source", "line"])


def _check_fields(path: Path, layout: str) -> None:
    """Every row of a symbols file has as many fields as its header: a short row would leave a
    name or sector out unseen, a long one (a name with an unquoted comma) would shift them."""
    import csv

    with open(path, encoding="utf-8", errors="replace", newline="") as fh:
        rows = csv.reader(fh)
        header = next(rows, [])
        bad = [(n, len(row)) for n, row in enumerate(rows, start=2) if row and len(row) != len(header)]
    if bad:
        (line, count), more = bad[0], f" ({len(bad)} rows like it)" if len(bad) > 1 else ""
        raise RetrainError(f"{path}: line {line} has {count} field(s), the header {len(header)}{more}",
                           hint=f"give every row the header's columns, and quote a value that holds a comma "
                                f"(\"Berkshire, Inc.\"); {layout}")


def read_symbols_file(path: Path, default_exchange: str | None) -> pl.DataFrame:
    """symbol[,exchange],name,sector (any case) -> symbols rows. A file that cannot be used, a
    row without a symbol or a known exchange, or two rows of one symbol that disagree, is a
    RetrainError naming the file and line (nothing is ingested)."""
    layout = "a symbols file is a CSV with columns symbol[,exchange],name,sector"
    try:
        df = _read_csv_strings(path)
    except FileProblem as problem:
        raise RetrainError(f"--symbols-file {path}: {problem}", hint=layout) from None
    _check_fields(path, layout)
    names = {_norm(c): c for c in df.columns}
    sym = _pick(df, names, "symbol", "ticker")
    if sym is None:
        raise RetrainError(f"{path}: no symbol column", hint=layout)
    ex = _pick(df, names, "exchange")
    out = df.select(
        pl.col(sym).str.strip_chars().str.to_uppercase().alias("symbol"),
        (pl.col(ex).str.strip_chars().str.to_uppercase() if ex else pl.lit(default_exchange)).alias("exchange"),
        (pl.col(names["name"]) if "name" in names else pl.lit(None, pl.String)).alias("name"),
        (pl.col(names["sector"]) if "sector" in names else pl.lit(None, pl.String)).alias("sector"),
    ).with_columns(pl.col("exchange").replace(calendar.ALIASES)).with_row_index("_line", offset=2)
    blank = out.filter(pl.col("symbol").is_null() | (pl.col("symbol") == ""))
    if blank.height:
        raise RetrainError(f"{path}: {blank.height} row(s) without a symbol (first: line {blank['_line'][0]})",
                           hint=f"give every row a symbol, or delete the row ({layout})")
    bad = out.filter(pl.col("exchange").is_null() | ~pl.col("exchange").is_in(list(calendar.EXCHANGES)))
    if bad.height:
        first = bad.row(0, named=True)
        if first["exchange"] is None:
            raise RetrainError(f"{path}: {bad.height} row(s) without an exchange (first: line {first['_line']}, "
                               f"{first['symbol']})", hint="add an exchange column (NASDAQ, NYSE, TSE) or pass --exchange")
        raise RetrainError(f"{path}: {bad.height} row(s) with an unknown exchange (first: line {first['_line']}, "
                           f"{first['symbol']} on {first['exchange']!r})",
                           hint="use NASDAQ, NYSE or TSE in the exchange column (or leave the row out)")
    clash = out.unique(["exchange", "symbol", "name", "sector"]).filter(pl.struct("exchange", "symbol").is_duplicated())
    if clash.height:
        first = clash.sort("_line").row(0, named=True)
        raise RetrainError(f"{path}: rows of {first['symbol']} on {first['exchange']} disagree on its name or sector "
                           f"(line {first['_line']} and another)", hint="keep one row per symbol and exchange")
    return out.unique(["exchange", "symbol"], keep="first", maintain_order=True).drop("_line")


# --------------------------------------------------------------------- ingest
def _read_one(path: Path, fmt: str) -> pl.DataFrame | FileProblem:
    try:
        return read_file(path, fmt)
    except FileProblem as problem:
        return problem


BATCH_MIN = 8  # CSV files sharing a header line, from this many on, are read in one scan


def _read_all(files: list[Path], fmt: str) -> list[pl.DataFrame | FileProblem]:
    """Read files; results in input order. CSV files that share their header line (a folder of
    one provider's downloads) are read in one scan per header; the rest, and any file such a
    scan cannot read or gives no row for, one by one on a few threads (Polars parses outside
    the GIL), which gives each problem its file's own message. Either way the rows are the same."""
    done: dict[Path, pl.DataFrame | FileProblem] = {}
    groups: dict[tuple[str, bytes], dict[Path, None]] = {}
    for f in files:
        header = _header(f)
        if header is not None:
            groups.setdefault((f.suffix.lower(), header), {})[f] = None  # a file named twice is read once
    for group in groups.values():
        if len(group) >= BATCH_MIN:
            done.update(_read_batch(list(group), fmt))
    rest = list(dict.fromkeys(f for f in files if f not in done))
    if len(rest) < 8:
        alone = [_read_one(f, fmt) for f in rest]
    else:
        with ThreadPoolExecutor(max_workers=min(4, (os.cpu_count() or 2) * 2)) as pool:
            alone = list(pool.map(lambda f: _read_one(f, fmt), rest))
    done.update(zip(rest, alone))
    return [done[f] for f in files]


def ingest(
    store: Store,
    paths: Iterable[str | Path],
    exchange: str | None,
    as_of: AsOf,
    fmt: str = "auto",
    symbols_file: str | Path | None = None,
    strict: bool = False,
) -> IngestReport:
    """Read, validate and upsert. Rejected rows go to quarantine/<timestamp>.csv. Under
    ``strict`` nothing is written unless every row of every file is valid."""
    if fmt not in FORMATS:
        raise RetrainError(f"unknown format {fmt!r}", hint=f"use one of: {', '.join(FORMATS)}")
    default_exchange = calendar.normalize_exchange(exchange) if exchange else None
    skipped: list[Path] = []
    files = collect_files(paths, skipped)
    if not files:
        other = (f" ({len(skipped)} other file(s) were found, e.g. {skipped[0]})" if skipped else "")
        raise RetrainError(f"no input files found{other}",
                           hint="pass CSV (.csv, .txt, optionally .gz) or Parquet files, or directories holding them")
    report = IngestReport(files=len(files), skipped=skipped)
    frames: list[pl.DataFrame] = []
    for path, frame in zip(files, _read_all(files, fmt)):
        if isinstance(frame, FileProblem):
            report.file_problems.append((str(path), str(frame)))
            continue
        if default_exchange is None and frame["exchange"].null_count():
            report.file_problems.append((str(path), "no exchange: pass --exchange (or add an exchange column)"))
            continue
        frames.append(frame)
    raw = pl.concat(frames) if frames else pl.DataFrame(schema={c: pl.String for c in RAW_COLUMNS})
    raw = raw.with_columns(pl.col("line").cast(pl.Int64))
    report.rows_read = raw.height
    bars, rejects = validate(raw, default_exchange, as_of, with_source=True)  # the store records the sources
    report.accepted = bars.height
    # most frequent first; ties in the order the checks run, so the listing is the same every run
    report.rejects = dict(sorted(rejects.group_by("reason").len().iter_rows(),
                                 key=lambda kv: (-kv[1], REASON_ORDER.index(kv[0]))))
    report.by_exchange = dict(bars.group_by("exchange").len().sort("exchange").iter_rows())
    symbols_meta = read_symbols_file(Path(symbols_file), default_exchange) if symbols_file else None

    with store.lock("retrain ingest"):
        if (bars.height or symbols_meta is not None) and store.symbols_path.exists():
            store.verify(store.symbols_path)  # before any write: a corrupted symbols file stops the ingest whole
        if rejects.height:
            report.quarantine = store.write_quarantine(rejects)
        if strict and (rejects.height or report.file_problems):
            return report
        if bars.height:
            result = store.upsert_bars(bars)
            report.new, report.updated, report.unchanged = result.new, result.updated, result.unchanged
            report.written = True
        seen = bars.select("symbol", "exchange").unique()
        if symbols_meta is not None:
            seen = pl.concat([seen.with_columns(pl.lit(None, pl.String).alias("name"),
                                                pl.lit(None, pl.String).alias("sector")), symbols_meta],
                             how="diagonal")
        if seen.height:
            report.symbols_added = store.upsert_symbols(seen)
    return report


def exit_code(report: IngestReport, strict: bool) -> int:
    """Non-zero when nothing was ingested, or when anything was rejected under --strict."""
    if strict and (report.rejected or report.file_problems):
        return 1
    return 0 if report.accepted and report.written else 1

