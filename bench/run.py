"""`make bench`: time the pipeline on the 3,000-symbol x 504-session sample and write BENCHMARKS.md.

Every stage runs as the real CLI in a subprocess (start-up included, as a user sees it); each
is repeated and the median reported. Peak memory is the largest resident set of any stage's
process (VmHWM of each stage's own process). Everything happens in a temporary directory.
"""

from __future__ import annotations

import argparse
import compileall
import datetime as dt
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import polars as pl

from retrain import features, indicators, labels, sample

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))  # pandas_reference

END = dt.date(2025, 10, 17)


def run(args: list[str], env: dict[str, str], summary: list | None = None,
        sweep_summary: list | None = None) -> tuple[float, int]:
    """Run the CLI once; return (seconds, peak RSS in MB). ``summary``: the run's `--json` object
    and its meta.json are appended to it (the args must include --json); ``sweep_summary``: a
    sweep's `--json` object."""
    with tempfile.NamedTemporaryFile("r", suffix=".peak") as peak:
        start = time.perf_counter()
        proc = subprocess.run([sys.executable, str(ROOT / "bench" / "peak.py"), *args],
                              env={**env, "BENCH_PEAK_FILE": peak.name}, cwd=ROOT, capture_output=True)
        elapsed = time.perf_counter() - start
        if proc.returncode != 0:
            raise SystemExit(f"bench: `retrain {' '.join(args)}` failed ({proc.returncode}):\n"
                             f"{proc.stdout.decode()}\n{proc.stderr.decode()}")
        if sweep_summary is not None:
            sweep_summary.append(json.loads(proc.stdout.decode().strip().splitlines()[-1]))
        if summary is not None:
            out = json.loads(proc.stdout.decode().strip().splitlines()[-1])
            meta = json.loads((Path(env["RETRAIN_ARTIFACTS_DIR"]) / "daytrading" / "runs" / out["run_id"]
                               / "meta.json").read_text())
            summary.append((out, meta))
        return elapsed, int(peak.read() or 0) // 1024


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


def steps(data: Path, full: bool = False) -> tuple[dict[str, float], float, int]:
    """Run bench/steps.py (indicators + features + labels in one process): (step times, wall, MB)."""
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "steps.py"), str(data), END.isoformat(),
                           *(["--full"] if full else [])], capture_output=True)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"bench: steps failed:\n{proc.stderr.decode()}")
    result = json.loads(proc.stdout.decode().strip().splitlines()[-1])
    return result, wall, result.pop("peak_kb") // 1024


def compute_polars(bars: pl.DataFrame, syms: pl.DataFrame) -> float:
    """retrain's indicators, features and labels on in-memory bars (no I/O)."""
    start = time.perf_counter()
    for ex in ("NASDAQ", "NYSE", "TSE"):
        b = indicators.compute_full(bars.filter(pl.col("exchange") == ex)).join(
            syms.select("exchange", "symbol", "sector"), on=["exchange", "symbol"], how="left")
        features.snapshots(b, ex, dt.date(1970, 1, 2), dt.date(2100, 1, 1), "v1")
        labels.label_rows(b.lazy(), END).collect()
    return time.perf_counter() - start


def compute_pandas(bars: pl.DataFrame, syms: pl.DataFrame) -> float:
    import pandas_reference

    pdb, pds = bars.to_pandas(), syms.select("exchange", "symbol", "sector").to_pandas()
    start = time.perf_counter()
    pandas_reference.build(pdb, pds)
    return time.perf_counter() - start


def incremental_session(root: Path, symbols: int, days: int, repeat: int) -> tuple[float, float, int]:
    """A fully built store of ``days`` sessions; then, ``repeat`` times, ingest the next session
    and time indicators + features + labels for it in one process."""
    bars, _ = sample.generate(symbols=symbols, days=days + repeat, seed=11, end=END)
    dates = sorted(bars["date"].unique())
    data = root / "data"
    root.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "RETRAIN_DATA_DIR": str(data)}
    base = root / "base.parquet"
    bars.filter(pl.col("date") <= dates[-repeat - 1]).write_parquet(base)
    run(["ingest", str(base), "--as-of", END.isoformat()], env)
    steps(data)
    times, walls, peak = [], [], 0
    for day in dates[-repeat:]:
        one = root / f"{day}.parquet"
        bars.filter(pl.col("date") == day).write_parquet(one)
        run(["ingest", str(one), "--as-of", END.isoformat()], env)
        t_steps, wall, mb = steps(data)
        times.append(t_steps["total"])
        walls.append(wall)
        peak = max(peak, mb)
    return statistics.median(times), statistics.median(walls), peak


def _breakdown(runs: list) -> str:
    """Median seconds of each part of step 6 and 7 over runs, and the record's blocks. The final
    fit runs in the background during the CV, the record and the report's plots: its own time,
    and the time the run waited for it after them."""
    parts = ("load", "cv", "final_fit", "final_fit_wait", "record", "report")
    metas = [m for _, m in runs if "seconds" in m]
    if not metas:
        return ""
    med = {k: statistics.median(m["seconds"].get(k, 0.0) for m in metas) for k in parts}
    rec = metas[-1].get("record") or {}
    return (f"load {med['load']:.1f}, CV {med['cv']:.1f}, record {med['record']:.1f} "
            f"({rec.get('blocks_trained', 0)} block(s) trained, {rec.get('blocks_reused', 0)} reused), report "
            f"{med['report']:.1f}; final fit {med['final_fit']:.1f} in the background, waited for "
            f"{med['final_fit_wait']:.1f}")


def whole_run(root: Path, symbols: int, days: int, repeat: int) -> tuple[float, float, float, int, str, str]:
    """Median seconds of the whole `retrain run` (ALL exchanges, 90-day training, 30-day backtest):
    incremental with one new session each time (an active model of the same routine exists, so
    automatic promotion needs no replay), the same run again with nothing new (no new run is
    trained), then with --full-rebuild (each into its own empty artifacts folder, so that it is
    trained: with the registry of the incremental runs it would find nothing changed). Returns
    (incremental, unchanged, full, peak MB, breakdown of the incremental runs, of the full ones)."""
    bars, syms = sample.generate(symbols=symbols, days=days + repeat, seed=11, end=END)
    dates = sorted(bars["date"].unique())
    root.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "RETRAIN_DATA_DIR": str(root / "data"), "RETRAIN_ARTIFACTS_DIR": str(root / "artifacts")}
    base = root / "base.parquet"
    bars.filter(pl.col("date") <= dates[-repeat - 1]).write_parquet(base)
    syms.write_csv(root / "symbols.csv")
    run(["ingest", str(base), "--symbols-file", str(root / "symbols.csv"), "--as-of", END.isoformat()], env)
    run(["run", "--exchange", "ALL", "--as-of", dates[-repeat - 1].isoformat()], env)  # the first model
    inc, full, peak, inc_runs, full_runs = [], [], 0, [], []
    for day in dates[-repeat:]:
        one = root / f"{day}.parquet"
        bars.filter(pl.col("date") == day).write_parquet(one)
        run(["ingest", str(one), "--as-of", day.isoformat()], env)
        t, mb = run(["run", "--exchange", "ALL", "--as-of", day.isoformat(), "--json"], env, inc_runs)
        inc.append(t)
        peak = max(peak, mb)
    same = []
    for _ in range(repeat):
        t, mb = run(["run", "--exchange", "ALL", "--as-of", dates[-1].isoformat()], env)
        same.append(t)
        peak = max(peak, mb)
    for i in range(repeat):
        fresh = {**env, "RETRAIN_ARTIFACTS_DIR": str(root / f"artifacts-full{i}")}
        t, mb = run(["run", "--exchange", "ALL", "--full-rebuild", "--as-of", dates[-1].isoformat(), "--json"], fresh,
                    full_runs)
        full.append(t)
        peak = max(peak, mb)
    return (statistics.median(inc), statistics.median(same), statistics.median(full), peak, _breakdown(inc_runs),
            _breakdown(full_runs))


def monitor_year(data: Path, root: Path, repeat: int) -> tuple[float, float, int, str]:
    """`retrain monitor --exchange ALL` over a year of daily journal: a model trained as of a year
    before the store's end (into its own artifacts folder), whose rankings of each of the 252
    sessions after it are journaled as `retrain predict` journals them. Returns (median seconds
    of the whole CLI call, median seconds of the monitor's computation in-process, peak MB,
    detail)."""
    from retrain import journal, watch
    from retrain.calendar import AsOf
    from retrain.config import load_settings
    from retrain.features import feature_columns
    from retrain.registry import Registry
    from retrain.store import Store
    from retrain.training import matrix

    art = root / "artifacts"
    env = {**os.environ, "RETRAIN_DATA_DIR": str(data), "RETRAIN_ARTIFACTS_DIR": str(art)}
    store = Store(data)
    days = sorted(store.scan_table("features", "v1").select("trade_date").unique().collect()["trade_date"].to_list())
    start = days[-253]
    run(["run", "--exchange", "ALL", "--as-of", start.isoformat(), "--skip-backtest"], env)
    settings = load_settings(data_dir=data, artifacts_dir=art)
    registry = Registry(art)
    model = registry.load_active("v1", "ALL", feature_columns("v1"))
    columns = model.meta["feature_columns"]
    feats = store.scan_table("features", "v1").filter(pl.col("trade_date") > start).collect()
    stamp = dt.datetime.now(dt.UTC)
    for (day,), rows in feats.partition_by("trade_date", as_dict=True).items():
        p = model.model.predict(matrix(rows, columns), num_iteration=model.meta.get("num_boost_round"))
        ranked = rows.select("exchange", "symbol", pl.col("avg_dollar_volume_20").cast(pl.Float64),
                             pl.col("prev_close").cast(pl.Float64)).with_columns(pl.Series("predicted", p))
        ranked = ranked.sort("predicted", descending=True).with_row_index("rank", offset=1)
        journal.write(art, journal.entry(ranked, day, model.meta["run_id"], "v1", "ALL", True, str(day), stamp))
    n_files = len(journal.files(art))
    cli, peak = [], 0
    for _ in range(repeat):
        t, mb = run(["monitor", "--exchange", "ALL"], env)
        cli.append(t)
        peak = max(peak, mb)
    inside = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        result = watch.run_monitor(settings, "ALL", AsOf())
        inside.append(time.perf_counter() - t0)
    detail = (f"{n_files} sessions x {feats['symbol'].n_unique():,} symbols journaled ({feats.height:,} rows), "
              f"{result.live['sessions']} scored; the monitor's computation in-process "
              f"{statistics.median(inside):.2f} s, the rest is start-up and rewriting the dashboard")
    return statistics.median(cli), statistics.median(inside), peak, detail


SWEEP_TRIALS, SWEEP_DAYS = 16, 30  # issue 13: 16 trials; each replays a 30-day window (5 weekly blocks)


def sweep_stage(data: Path, root: Path) -> list[tuple[str, float, float, str, int]]:
    """`retrain sweep --exchange ALL` of 16 trials, once on a local cluster of one worker and once
    of two (the same seed: the same trials, so the same work). Targets (issue 13): two workers
    take at most 0.6 of one worker's time, and Dask's overhead per trial is at most 5% of a
    trial's time. Overhead per trial = (trial phase wall x workers - sum of the trials' own
    seconds on the workers) / trials: with one worker this is scheduling, transfer and the
    driver's ask/tell; with two it also holds the idle tail of the last trial."""
    out, sessions, results = {}, {}, {}
    for n in (1, 2):
        env = {**os.environ, "RETRAIN_DATA_DIR": str(data), "RETRAIN_ARTIFACTS_DIR": str(root / f"sweep{n}")}
        summary: list = []
        t, mb = run(["sweep", "--exchange", "ALL", "--trials", str(SWEEP_TRIALS), "--backtest-days", str(SWEEP_DAYS),
                     "--workers", str(n), "--json"], env, sweep_summary=summary)
        result = summary[0]
        spec = json.loads((root / f"sweep{n}" / "daytrading" / "sweeps" / result["sweep_id"] / "sweep.json").read_text())
        out[n], sessions[n], results[n] = (t, mb), spec["sessions"][-1], result
        print(f"bench: sweep, {n} worker(s): {t:.1f} s ({sessions[n]['seconds']})", flush=True)
    same = [r["sharpe"] for r in results[1]["trials"]] == [r["sharpe"] for r in results[2]["trials"]]
    trial_s = sessions[1]["trial_seconds"] / SWEEP_TRIALS
    rows = []
    for n in (1, 2):
        ss = sessions[n]
        phase = ss["seconds"]["trials"]
        idle = (phase * n - ss["trial_seconds"]) / SWEEP_TRIALS  # worker time not spent on trials
        dask = ss["dask_seconds"] / max(1, ss["dask_trials"])  # sending a trial to its result, minus its work
        rows.append((f"`retrain sweep --exchange ALL`, {SWEEP_TRIALS} trials of {SWEEP_DAYS} days, {n} worker(s)",
                     out[n][0], 0.0,
                     f"trials {phase:.1f} s (mean trial {ss['trial_seconds'] / SWEEP_TRIALS:.1f} s of work; Dask's "
                     f"overhead per trial, from sending it to its result less its work, {dask:.2f} s = "
                     f"{dask / trial_s:.1%} of a trial, target <= 5%: {'met' if dask / trial_s <= 0.05 else '**not met**'}; "
                     f"worker time not spent on trials, idle tail included, {idle:.2f} s a trial); "
                     f"read {ss['seconds']['load']:.1f}, cluster {ss['seconds']['cluster']:.1f}, send rows "
                     f"{ss['seconds']['scatter']:.1f}, report {ss['seconds']['report']:.1f} s; driver's RSS only",
                     out[n][1]))
    ratio, phase_ratio = out[2][0] / out[1][0], sessions[2]["seconds"]["trials"] / sessions[1]["seconds"]["trials"]
    rows.append(("`retrain sweep`: 2 workers vs 1", ratio, 0.0,
                 f"whole CLI call {ratio:.2f}x, trial phase {phase_ratio:.2f}x (target <= 0.6: "
                 f"{'met' if ratio <= 0.6 else '**not met**'}); the same trials and metrics on both: "
                 f"{'yes' if same else '**no**'}", 0))
    return rows


def build_store(root: Path, symbols: int, days: int) -> Path:
    """A fully built store of the sample market (for a stage run alone)."""
    bars, syms = sample.generate(symbols=symbols, days=days, seed=11, end=END)
    root.mkdir(parents=True, exist_ok=True)
    bars.write_parquet(root / "bars.parquet")
    syms.write_csv(root / "symbols.csv")
    env = {**os.environ, "RETRAIN_DATA_DIR": str(root / "data")}
    run(["ingest", str(root / "bars.parquet"), "--symbols-file", str(root / "symbols.csv"), "--as-of",
         END.isoformat()], env)
    steps(root / "data", full=True)
    return root / "data"


def table(rows, title: str) -> list[str]:
    lines = [
        title,
        "",
        "| stage | median (s) | target (s) | met | detail | peak RSS (MB) |",
        "|---|---:|---:|:---:|---|---:|",
    ]
    for stage, med, target, detail, mb in rows:
        met = "-" if not target else ("yes" if med <= target else "**no**")
        lines.append(f"| {stage} | {med:.2f} | {target or '-'} | {met} | {detail} | {mb or '-'} |")
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--symbols", type=int, default=3000)
    ap.add_argument("--days", type=int, default=504)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--out", type=Path, default=ROOT / "BENCHMARKS.md")
    ap.add_argument("--long-symbols", type=int, default=10_000, help="symbols of the long-history stage")
    ap.add_argument("--long-days", type=int, default=2_520, help="sessions of the long-history stage")
    ap.add_argument("--stages", default="main,sweep,long",
                    help="comma-separated: main (the 3,000-symbol market), sweep (on that market), long")
    ap.add_argument("--only", choices=["sweep"], default=None,
                    help="run this stage alone, print its rows, and leave BENCHMARKS.md as it is")
    a = ap.parse_args()
    # Every command below imports retrain from its bytecode, as an installed package does (pip
    # compiles on install, and Python writes it on a first run): a shell with
    # PYTHONDONTWRITEBYTECODE=1 would otherwise compile retrain again in every call (0.1-0.2 s).
    compileall.compile_dir(str(ROOT / "retrain"), quiet=1)
    if a.only == "sweep":
        with tempfile.TemporaryDirectory(prefix="retrain-bench-") as tmp:
            data = build_store(Path(tmp) / "store", a.symbols, a.days)
            rows = sweep_stage(data, Path(tmp))
        print("\n".join(table(rows, f"# retrain sweep ({dt.date.today()}, {os.cpu_count()} cores, "
                                        f"{a.symbols:,} symbols x {a.days} sessions)")))
        return
    stages = set(a.stages.split(","))

    rows: list[tuple[str, float, float, str, int]] = []  # stage, median s, target s, detail, peak MB
    with tempfile.TemporaryDirectory(prefix="retrain-bench-") as tmp:
        tmp = Path(tmp)
        growth = main_stages(a, tmp, rows) if "main" in stages else None
        if "sweep" in stages:  # 16 trials on one and on two local workers
            data = tmp / "rebuild0" if "main" in stages else build_store(tmp / "store", a.symbols, a.days)
            rows += sweep_stage(data, tmp)
        if "long" in stages:
            import long_history

            rows += long_history.stage(tmp, a.long_symbols, a.long_days, END, run)
    write_report(a, rows, growth)


def main_stages(a, tmp: Path, rows: list) -> float:
    """The stages on the 3,000-symbol x 504-session market; returns the 4-year / 1-year growth
    of the incremental session."""
    bars, syms = sample.generate(symbols=a.symbols, days=a.days, seed=11, end=END)
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

    # Full rebuild of indicators, features and labels, in one process, from a freshly ingested
    # store (a copy per repeat, so no step finds its work already done).
    times, wall, peak, split = [], [], 0, []
    for i in range(a.repeat):
        copy = tmp / f"rebuild{i}"
        shutil.copytree(tmp / "ingest0", copy)
        os.sync()  # the copy's write-back is set-up, not part of the timed rebuild
        (t_steps, t_wall, mb) = steps(copy, full=True)
        times.append(t_steps.pop("total"))
        wall.append(t_wall)
        split.append(t_steps)
        peak = max(peak, mb)
    med = statistics.median(times)
    parts = ", ".join(f"{k} {statistics.median(s[k] for s in split):.2f}" for k in split[0])
    rows.append(("full rebuild: indicators + features + labels (one process)", med, 3.0,
                 f"{parts}; process wall time incl. start-up {statistics.median(wall):.2f} s", peak))
    print(f"bench: full rebuild {med:.2f} s ({parts})", flush=True)

    # Training (5-fold walk-forward CV + final model), 30-day backtest and predict, 90-day window, ALL.
    model_times, model_peak = [], 0
    for i in range(a.repeat):
        proc = subprocess.run([sys.executable, str(ROOT / "bench" / "model_steps.py"), str(tmp / "rebuild0"),
                               str(tmp / f"artifacts{i}")], capture_output=True)
        if proc.returncode != 0:
            raise SystemExit(f"bench: model steps failed:\n{proc.stderr.decode()}")
        res = json.loads(proc.stdout.decode().strip().splitlines()[-1])
        model_times.append(res)
        model_peak = max(model_peak, res["peak_kb"] // 1024)
    med = {k: statistics.median(r[k] for r in model_times) for k in ("train", "backtest", "predict")}
    res = model_times[0]
    rows.append(("training with 5-fold walk-forward CV (90-day window, ALL)", med["train"], 30.0,
                 f"{res['rows']:,} rows", model_peak))
    rows.append(("30-day walk-forward backtest (retrain every 5 sessions)", med["backtest"], 30.0,
                 f"{res['backtest_sessions']} sessions", model_peak))
    rows.append(("predict the next session", med["predict"], 2.0, f"{res['predict_rows']:,} symbols ranked",
                 model_peak))
    print(f"bench: train {med['train']:.2f} s, backtest {med['backtest']:.2f} s, predict {med['predict']:.2f} s",
          flush=True)

    # `retrain monitor` over a year of daily journal at every symbol.
    mon_t, mon_inside, mon_mb, mon_detail = monitor_year(tmp / "rebuild0", tmp / "monitor", a.repeat)
    rows.append(("`retrain monitor --exchange ALL`, a year of daily journal", mon_t, 2.0, mon_detail, mon_mb))
    print(f"bench: monitor {mon_t:.2f} s (in-process {mon_inside:.2f} s)", flush=True)

    # The same computation in memory, retrain (Polars) next to a straightforward pandas version.
    ours = [compute_polars(bars, syms) for _ in range(a.repeat)]
    theirs = compute_pandas(bars, syms)
    ratio = theirs / statistics.median(ours)
    rows.append(("compute only: retrain (Polars) vs pandas groupby reference", statistics.median(ours), 0.0,
                 f"pandas {theirs:.2f} s (1 run): {ratio:.1f}x faster (target >= 10x: {'met' if ratio >= 10 else '**not met**'})", 0))
    print(f"bench: polars {statistics.median(ours):.2f} s vs pandas {theirs:.2f} s", flush=True)

    # One new session, incrementally, at 1 and 4 years of history.
    inc = {}
    for years in (1, 4):
        t, w, mb = incremental_session(tmp / f"inc{years}", a.symbols, 252 * years, a.repeat)
        inc[years] = t
        rows.append((f"one new session, incremental ({years} year{'s' if years > 1 else ''} of history)", t, 1.0,
                     f"indicators + features + labels, one process; wall incl. start-up {w:.2f} s", mb))
        print(f"bench: incremental at {years}y {t:.2f} s", flush=True)
    growth = inc[4] / inc[1]

    # The whole `retrain run`, as cron runs it: one new session (incremental), then full rebuilds.
    inc_t, same_t, full_t, mb, inc_parts, full_parts = whole_run(tmp / "run", a.symbols, a.days, a.repeat)
    rows.append(("whole `retrain run --exchange ALL`, one new session (incremental)", inc_t, 6.0,
                 "indicators, features, labels, training with CV, 30-day backtest through the out-of-sample "
                 "record, automatic promotion (same routine as the active model: no replay needed); whole CLI "
                 f"call. Steps 6-7 (s): {inc_parts}", mb))
    rows.append(("whole `retrain run --exchange ALL` again, nothing new", same_t, 0.0,
                 "same bars and routine as an existing run: checked, not retrained; whole CLI call", mb))
    rows.append(("whole `retrain run --exchange ALL --full-rebuild`", full_t, 15.0,
                 "every indicator, feature and label rebuilt, then as above, into an empty artifacts folder (no "
                 f"record to reuse); whole CLI call. Steps 6-7 (s): {full_parts}", mb))
    print(f"bench: retrain run incremental {inc_t:.2f} s, unchanged {same_t:.2f} s, full rebuild {full_t:.2f} s",
          flush=True)
    return growth


def write_report(a, rows: list, growth: float | None) -> None:
    main_peak = max((r[4] for r in rows if not r[0].startswith("long history")), default=None)
    long_peak = max((r[4] for r in rows if r[0].startswith("long history")), default=None)
    lines = table(rows, "# Benchmarks\n\n"
                  f"Written by `make bench` on {dt.date.today()} ({platform.machine()}, {os.cpu_count()} cores, "
                  f"Python {platform.python_version()}, polars {pl.__version__}). Sample market: {a.symbols:,} symbols x "
                  f"{a.days} sessions per exchange; ingest and query are timed as whole CLI calls (start-up included); the pipeline steps are timed inside one process each, as `retrain run` runs them (the detail column gives that process's wall time where it matters); "
                  f"median of {a.repeat} runs.")
    lines.append("")
    if main_peak is not None:
        lines.append(f"Peak memory of any stage of the {a.symbols:,}-symbol market: {main_peak:,} MB (target 2,048 MB: "
                     f"{'met' if main_peak <= 2048 else '**not met**'}).")
    if growth is not None:
        lines.append(f"Incremental session, 4 years vs 1 year of history: {growth:.2f}x (target <= 1.5x: "
                     f"{'met' if growth <= 1.5 else '**not met**'}).")
    if long_peak is not None:
        lines.append(f"Peak memory of any long-history step ({a.long_symbols:,} symbols x {a.long_days:,} sessions): "
                     f"{long_peak:,} MB (target 2,560 MB: {'met' if long_peak <= 2560 else '**not met**'}).")
    lines.append("")
    a.out.write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
