"""The long-history stage of `make bench`: a full rebuild over about 25 M bars (10,000 symbols x
2,520 sessions) must stay within a memory bound that does not grow with history.

Each step runs as the real CLI in its own process (`retrain indicators --force`,
`retrain features --full-rebuild`, `retrain labels` over the whole span), so its peak RSS is its
own. Also measured: `retrain ingest` of one 2.5 M-row long Parquet file into an empty store.
"""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

import polars as pl

from retrain import sample
from retrain.store import Store

SYMBOL_BATCH = 1_000  # symbols generated and written at a time while building the store


def build_store(data: Path, symbols: int, days: int, end: dt.date, seed: int = 13) -> int:
    """Write a sample market of ``symbols`` x ``days`` sessions into a store at ``data``, a batch
    of symbols at a time (set-up, not timed); returns the number of bars."""
    store = Store(data)
    n = 0
    with store.lock("bench"):
        for i, start in enumerate(range(0, symbols, SYMBOL_BATCH)):
            size = min(SYMBOL_BATCH, symbols - start)
            bars, syms = sample.generate(symbols=size, days=days, seed=seed + i, end=end)
            suffix = f"{i:02d}"  # batches draw their own tickers: keep them apart
            bars = bars.with_columns(pl.col("symbol") + suffix)
            syms = syms.with_columns(pl.col("symbol") + suffix)
            store.upsert_bars(bars.select("exchange", "symbol", "date", "open", "high", "low", "close", "adj_close",
                                          "volume"))
            store.upsert_symbols(syms)
            n += bars.height
    return n


def long_parquet(path: Path, rows: int, end: dt.date, seed: int = 17) -> int:
    """One long-format Parquet file of about ``rows`` bars of one exchange (NYSE), for ingest."""
    days = 2_520
    bars, _ = sample.generate(symbols=max(3, -(-rows * 3 // days)), days=days, seed=seed, end=end)
    bars = bars.filter(pl.col("exchange") == "NYSE").head(rows)
    bars.select("symbol", "date", "open", "high", "low", "close", "adj_close", "volume").write_parquet(path)
    return bars.height


def stage(tmp: Path, symbols: int, days: int, end: dt.date, run) -> list[tuple[str, float, float, str, int]]:
    """Rows for BENCHMARKS.md: (stage, seconds, target s, detail, peak MB). ``run(args, env)``
    runs the CLI and returns (seconds, peak MB)."""
    data = tmp / "long"
    n_bars = build_store(data, symbols, days, end)
    print(f"bench: long history, {n_bars:,} bars in the store", flush=True)
    env = {**os.environ, "RETRAIN_DATA_DIR": str(data), "RETRAIN_ARTIFACTS_DIR": str(tmp / "long-artifacts")}
    first = Store(data).scan_bars().select(pl.col("date").min()).collect().item()
    steps = [
        ("indicators", ["indicators", "--force"]),
        ("features", ["features", "--full-rebuild"]),
        ("labels", ["labels", "--start-date", first.isoformat(), "--as-of", end.isoformat()]),
    ]
    rows, total = [], 0.0
    for name, args in steps:
        seconds, mb = run(args, env)
        total += seconds
        rows.append((f"long history: `retrain {' '.join(args[:2])}`", seconds, 0.0,
                     f"{n_bars:,} bars ({symbols:,} symbols x {days:,} sessions); whole CLI call; peak RSS target "
                     f"2,560 MB: {'met' if mb <= 2560 else '**not met**'}", mb))
        print(f"bench: long history {name} {seconds:.2f} s, {mb:,} MB", flush=True)
    rows.append(("long history: indicators + features + labels", total, 90.0,
                 "the three calls above, one after the other", max(r[4] for r in rows)))
    file = tmp / "long.parquet"
    n_rows = long_parquet(file, 2_500_000, end)
    seconds, mb = run(["ingest", str(file), "--exchange", "NYSE", "--as-of", end.isoformat()],
                      {**env, "RETRAIN_DATA_DIR": str(tmp / "long-ingest")})
    rows.append(("long history: `retrain ingest` of one long Parquet file", seconds, 0.0,
                 f"{n_rows:,} rows, one file; peak RSS target 2,560 MB: {'met' if mb <= 2560 else '**not met**'}", mb))
    print(f"bench: long ingest {seconds:.2f} s, {mb:,} MB", flush=True)
    return rows
