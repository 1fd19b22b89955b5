"""`make bench`: time the pipeline on the 3,000-symbol x 504-session sample and write BENCHMARKS.md.

Every stage runs as the real CLI in a subprocess (start-up included, as a user sees it); each
is repeated and the median reported. Peak memory is the largest resident set of any stage's
process (from wait4). Everything happens in a temporary directory.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import polars as pl

from retrain import sample

ROOT = Path(__file__).resolve().parents[1]

END = dt.date(2025, 10, 17)


def run(args: list[str], env: dict[str, str]) -> tuple[float, int]:
    """Run the CLI once; return (seconds, peak RSS in MB)."""
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "retrain.cli", *args], env=env, cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - start
    out, err = proc.communicate()
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        raise SystemExit(f"bench: `retrain {' '.join(args)}` failed ({code}):\n{out.decode()}\n{err.decode()}")
    return elapsed, usage.ru_maxrss // 1024


def write_yahoo_csvs(bars: pl.DataFrame, root: Path) -> dict[str, Path]:
    dirs = {}
    for (ex, sym), g in bars.group_by(["exchange", "symbol"]):
        d = root / ex
        d.mkdir(parents=True, exist_ok=True)
        dirs[ex] = d
        g.select(
            pl.col("date").alias("Date"), pl.col("open").alias("Open"), pl.col("high").alias("High"),
            pl.col("low").alias("Low"), pl.col("close").alias("Close"), pl.col("adj_close").alias("Adj Close"),
            pl.col("volume").alias("Volume"),
        ).write_csv(d / f"{sym}.csv")
    return dict(sorted(dirs.items()))


def incremental_session(root: Path, symbols: int, days: int, repeat: int) -> tuple[float, int]:
    """Store with ``days`` sessions, fully built; then time ingesting nothing new but building one
    new session: indicators, features, labels (each repeat adds the next session)."""
    bars, syms = sample.generate(symbols=symbols, days=days + repeat, seed=11, end=END)
    dates = sorted(bars["date"].unique())
    data = root / "data"
    root.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "RETRAIN_DATA_DIR": str(data)}
    base = root / "base.parquet"
    bars.filter(pl.col("date") <= dates[-repeat - 1]).write_parquet(base)
    run(["ingest", str(base), "--as-of", END.isoformat()], env)
    for args in (["indicators"], ["features"], ["labels", "--as-of", END.isoformat()]):
        run(args, env)
    times, peak = [], 0
    for day in dates[-repeat:]:
        one = root / f"{day}.parquet"
        bars.filter(pl.col("date") == day).write_parquet(one)
        run(["ingest", str(one), "--as-of", END.isoformat()], env)
        total = 0.0
        for args in (["indicators"], ["features"], ["labels", "--as-of", END.isoformat()]):
            t, mb = run(args, env)
            total += t
            peak = max(peak, mb)
        times.append(total)
    return statistics.median(times), peak


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--symbols", type=int, default=3000)
    ap.add_argument("--days", type=int, default=504)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--out", type=Path, default=ROOT / "BENCHMARKS.md")
    a = ap.parse_args()

    rows: list[tuple[str, float, float, str, int]] = []  # stage, median s, target s, detail, peak MB
    with tempfile.TemporaryDirectory(prefix="retrain-bench-") as tmp:
        tmp = Path(tmp)
        bars, _ = sample.generate(symbols=a.symbols, days=a.days, seed=11, end=END)
        csv_dirs = write_yahoo_csvs(bars, tmp / "csv")
        n_files = sum(len(list(d.iterdir())) for d in csv_dirs.values())
        print(f"bench: {n_files:,} Yahoo CSVs, {bars.height:,} bars", flush=True)

        # Ingest: all CSVs into a fresh store, one `retrain ingest` per exchange.
        times, peak = [], 0
        for i in range(a.repeat):
            env = {**os.environ, "RETRAIN_DATA_DIR": str(tmp / f"ingest{i}")}
            total = 0.0
            for ex, d in csv_dirs.items():
                t, mb = run(["ingest", str(d), "--exchange", ex, "--as-of", END.isoformat()], env)
                total += t
                peak = max(peak, mb)
            times.append(total)
        rows.append(("ingest (3 x `retrain ingest`, Yahoo CSVs)", statistics.median(times), 10.0,
                     f"{n_files:,} files, {bars.height:,} bars", peak))
        print(f"bench: ingest {statistics.median(times):.2f} s", flush=True)

        env = {**os.environ, "RETRAIN_DATA_DIR": str(tmp / "ingest0")}
        qt = [run(["query", "SELECT count(*) FROM day_symbol"], env) for _ in range(max(5, a.repeat))]
        rows.append(("`retrain query` count over the store", statistics.median(t for t, _ in qt), 1.0,
                     "whole CLI call", max(mb for _, mb in qt)))

        # Full rebuild of indicators, features and labels on the ingested store.
        times, peak = [], 0
        for _ in range(a.repeat):
            total = 0.0
            for args in (["indicators", "--force"], ["features", "--full-rebuild"], ["labels", "--as-of", END.isoformat()]):
                t, mb = run(args, env)
                total += t
                peak = max(peak, mb)
            times.append(total)
        rows.append(("full rebuild: indicators + features + labels (3 CLI calls)", statistics.median(times), 3.0,
                     f"{bars.height:,} bars", peak))
        print(f"bench: full rebuild {statistics.median(times):.2f} s", flush=True)

        # One new session, incrementally, at 1 and 4 years of history.
        for years in (1, 4):
            t, mb = incremental_session(tmp / f"inc{years}", a.symbols, 252 * years, a.repeat)
            rows.append((f"one new session, incremental ({years} year{'s' if years > 1 else ''} of history)", t, 1.0,
                         "indicators + features + labels", mb))
            print(f"bench: incremental at {years}y {t:.2f} s", flush=True)

    peak_all = max(r[4] for r in rows)
    lines = [
        "# Benchmarks",
        "",
        f"Written by `make bench` on {dt.date.today()} ({platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}, polars {pl.__version__}). Sample market: {a.symbols:,} symbols x "
        f"{a.days} sessions per exchange; each stage is the real CLI in a subprocess (start-up included), "
        f"median of {a.repeat} runs.",
        "",
        "| stage | median (s) | target (s) | met | detail | peak RSS (MB) |",
        "|---|---:|---:|:---:|---|---:|",
    ]
    for stage, med, target, detail, mb in rows:
        lines.append(f"| {stage} | {med:.2f} | {target:.0f} | {'yes' if med <= target else '**no**'} | {detail} | {mb:,} |")
    lines += ["", f"Peak memory of any stage: {peak_all:,} MB (target 2,048 MB: "
              f"{'met' if peak_all <= 2048 else '**not met**'}).", ""]
    a.out.write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
