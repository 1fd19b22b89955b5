"""Faults of the machine are messages: a full disk and a read-only store each give one clear
message (path, cause, what was kept, what to do), their own exit status (4) and no traceback
(unless RETRAIN_DEBUG=1); the store is left consistent and a rerun ends as an undisturbed run.
Read-only commands work on a read-only store."""

from __future__ import annotations

import contextlib
import datetime as dt
import errno
import json
import os
import shutil
import subprocess
from pathlib import Path

import polars as pl
import pytest

from retrain import sample, steps
from retrain.errors import StorageError, storage_fault
from retrain.store import Store
from tests.conftest import run_cli, run_cli_here, tree_hashes

END = dt.date(2025, 10, 17)
THU = dt.date(2025, 10, 16)


@pytest.fixture(scope="module")
def market():
    return sample.generate(symbols=45, days=120, seed=8, end=END)


def _seed(root: Path, market, until: dt.date = THU) -> Store:
    bars, syms = market
    store = Store(root)
    with store.lock("test"):
        store.upsert_bars(bars.filter(pl.col("date") <= until))
        store.upsert_symbols(syms)
    return store


def _mount(*args: str) -> bool:
    return subprocess.run(["mount", *args], capture_output=True, check=False).returncode == 0


@contextlib.contextmanager
def small_disk(path: Path, size: str = "16m"):
    """A real tmpfs of ``size`` at ``path`` when this machine lets us mount one (yields True);
    otherwise a plain folder (yields False), and faults are injected instead."""
    path.mkdir(parents=True, exist_ok=True)
    mounted = shutil.which("mount") is not None and _mount("-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path))
    try:
        yield mounted
    finally:
        if mounted:
            subprocess.run(["umount", "-l", str(path)], check=False)


@contextlib.contextmanager
def read_only(path: Path):
    """``path`` made read-only for real: a read-only bind mount (root), or permissions (others)."""
    if _mount("--bind", str(path), str(path)):
        try:
            if not _mount("-o", "remount,bind,ro", str(path)):
                pytest.skip("cannot remount read-only here")
            yield
        finally:
            subprocess.run(["umount", "-l", str(path)], check=False)
    elif os.geteuid() != 0:
        modes = {p: p.stat().st_mode for p in [path, *path.rglob("*")]}
        for p in modes:
            p.chmod(modes[p] & ~0o222)
        try:
            yield
        finally:
            for p, mode in modes.items():
                p.chmod(mode)
    else:  # root without mount rights: nothing here can make a folder read-only for us
        pytest.skip("no way to make a read-only folder on this machine")


def _fill(disk: Path) -> Path:
    """Fill the disk until it refuses another byte."""
    filler = disk / "filler"
    with open(filler, "wb") as fh, contextlib.suppress(OSError):
        while True:
            fh.write(b"\0" * 65536)
            fh.flush()
    return filler


def test_polars_and_duckdb_spellings_of_a_full_disk_are_recognised(tmp_path):
    with pytest.raises(Exception) as err:  # noqa: B017 - Polars raises its own type for it
        pl.DataFrame({"a": [1.0] * 100_000}).write_parquet("/dev/full")
    fault = storage_fault(err.value, "/some/store/file.parquet")
    assert isinstance(fault, StorageError) and fault.exit_code == 4
    assert "no space left on the device while writing /some/store/file.parquet" in fault.message
    assert "df -h /some/store" in fault.hint and "half-written" in fault.hint
    assert storage_fault(OSError(errno.EROFS, "Read-only file system")).message.startswith("read-only file system")
    assert storage_fault(ValueError("something else")) is None


def test_a_full_disk_during_ingest_changes_nothing_and_the_rerun_completes(tmp_path, market):
    bars, _ = market
    new = tmp_path / "incoming" / "day.csv"
    new.parent.mkdir()
    bars.filter(pl.col("date") == END).drop("ingest_id", strict=False).write_csv(new)
    undisturbed = _seed(tmp_path / "calm", market)
    assert run_cli_here(["ingest", str(new), "--format", "long"], undisturbed.root).returncode == 0

    with small_disk(tmp_path / "disk") as real:
        store = _seed(tmp_path / "disk" / "data", market)
        before = tree_hashes(store.root)
        env = {}
        if real:
            filler = _fill(tmp_path / "disk")
        else:
            env = {"RETRAIN_FAULT": "store.write:enospc"}
        failed = run_cli(["ingest", str(new), "--format", "long"], store.root, env)
        assert failed.returncode == 4, failed.stderr
        assert "no space left on the device while writing" in failed.stderr and "day_symbol" in failed.stderr
        assert "Nothing was left half-written" in failed.stderr and "df -h" in failed.stderr
        assert "Traceback" not in failed.stderr
        assert tree_hashes(store.root) == before  # the store is as it was: all months or none
        assert not list(store.root.rglob(".tmp-*"))
        if real:
            filler.unlink()
        rerun = run_cli_here(["ingest", str(new), "--format", "long"], store.root)
        assert rerun.returncode == 0, rerun.stderr
        cols = ["exchange", "symbol", "date", "open", "high", "low", "close", "volume"]
        got = store.scan_bars().collect().select(cols).sort(cols[:3])
        assert got.equals(undisturbed.scan_bars().collect().select(cols).sort(cols[:3]))


def test_a_fault_while_writing_features_is_a_message_and_the_rerun_is_undisturbed(tmp_path, market):
    a = _seed(tmp_path / "a" / "data", market, until=END)
    steps.indicators(a, a.exchanges())
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    failed = run_cli(["features"], a.root, {"RETRAIN_FAULT": "store.write@3:enospc"})
    assert failed.returncode == 4, failed.stderr
    assert "no space left on the device while writing" in failed.stderr and "features" in failed.stderr
    assert "Traceback" not in failed.stderr
    debug = run_cli(["features"], a.root, {"RETRAIN_FAULT": "store.write@1:enospc", "RETRAIN_DEBUG": "1"})
    assert debug.returncode == 4 and "Traceback" in debug.stderr  # for a bug report
    assert run_cli_here(["features"], a.root).returncode == 0
    assert run_cli_here(["features"], tmp_path / "b" / "data").returncode == 0
    key = ["exchange", "symbol", "trade_date"]
    got = a.scan_table("features", "v1").collect().sort(key)
    assert got.equals(Store(tmp_path / "b" / "data").scan_table("features", "v1").collect().sort(key))


def test_a_read_only_store_reads_and_refuses_writes_with_a_message(tmp_path, market):
    project = tmp_path / "project"
    store = _seed(project / "data", market)
    env = {"RETRAIN_ARTIFACTS_DIR": str(project / "artifacts")}
    trained = run_cli_here(["run", "--as-of", str(THU), "--skip-backtest", "--min-rows", "200"], store.root, env)
    assert trained.returncode == 0, trained.stderr
    before = tree_hashes(project)
    with read_only(project):
        for args in (["status"], ["query", "SELECT count(*) AS n FROM day_symbol"], ["models", "list"]):
            r = run_cli_here(args, store.root, env)  # reads only: no process of its own needed
            assert r.returncode == 0 and "Traceback" not in r.stderr, (args, r.stderr)
        run = run_cli(["run", "--as-of", str(THU), "--json"], store.root, env)
        assert run.returncode == 4, run.stderr
        assert "while opening the store's lock file" in run.stderr and "Traceback" not in run.stderr
        assert json.loads(run.stdout.strip().splitlines()[-1])["exit_code"] == 4
        pred = run_cli(["predict", "--as-of", str(THU), "--top", "3"], store.root, env)
        assert pred.returncode == 4 and "Predictions for" in pred.stdout  # the ranking, then the message
        assert "while writing" in pred.stderr and "predictions" in pred.stderr and "Traceback" not in pred.stderr
    assert tree_hashes(project) == before
