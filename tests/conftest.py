from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import os
import subprocess
import sys
from pathlib import Path

# LightGBM's OpenMP threads (libgomp) spin while they wait for work by default. On this 2-core
# machine, while anything else wants a core (a benchmark, another suite), a spinning thread holds
# the core its partner needs and a training can take 10 to 30 times as long (one test went from
# 5 s to 94 s), with the same model. Passive waiting gives the core back: a steady cost instead
# (the suite about 10% slower on an idle machine, in interleaved runs). Set before anything
# loads libgomp (it reads the variable once); subprocesses inherit it; a value already in the
# environment wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import polars as pl
import pytest
from click.testing import CliRunner

from retrain import checksums
from retrain.calendar import AsOf
from retrain.cli import main
from retrain.store import Store

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store(tmp_path / "data")


@pytest.fixture
def as_of() -> AsOf:
    return AsOf(dt.date(2024, 12, 31))


@pytest.fixture
def cli(tmp_path: Path, monkeypatch):
    """Invoke the CLI in-process against a store under tmp_path; returns the click Result."""
    return cli_in(tmp_path, monkeypatch)


def cli_in(root: Path, monkeypatch):
    """The ``cli`` fixture's invoker for the project at ``root`` (for module-scoped fixtures, with a
    ``pytest.MonkeyPatch.context()``)."""
    monkeypatch.setenv("RETRAIN_DATA_DIR", str(root / "data"))
    monkeypatch.setenv("RETRAIN_ARTIFACTS_DIR", str(root / "artifacts"))
    monkeypatch.delenv("RETRAIN_CONFIG", raising=False)
    monkeypatch.chdir(root)
    runner = CliRunner()

    def invoke(*args: str):
        return runner.invoke(main, list(args), catch_exceptions=False)

    return invoke


def run_cli(args: list[str], data_dir: Path, env_extra: dict | None = None, **kw) -> subprocess.CompletedProcess:
    """Run the CLI in a separate process (for kills and locks)."""
    env = {**os.environ, "RETRAIN_DATA_DIR": str(data_dir), **(env_extra or {})}
    return subprocess.run([sys.executable, "-m", "retrain.cli", *args], env=env, capture_output=True,
                          text=True, cwd=str(ROOT), check=False, **kw)


def run_cli_here(args: list[str], data_dir: Path, env_extra: dict | None = None) -> subprocess.CompletedProcess:
    """``run_cli`` without a new process, for the steps that need none of their own (no kill, no
    fault, no lock to meet, no exit of the interpreter to watch): the same command, environment and
    working directory, the same returncode, stdout and stderr, and, as in a new process, nothing
    remembered of the files verified before. Saves the interpreter's start (about a second)."""
    checksums.forget()
    env = {"RETRAIN_DATA_DIR": str(data_dir), **(env_extra or {})}
    with contextlib.chdir(ROOT):
        result = CliRunner().invoke(main, list(args), env=env, catch_exceptions=False)
    return subprocess.CompletedProcess(list(args), result.exit_code, result.stdout, result.stderr)


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text.lstrip("\n"), encoding="utf-8")
    return path


def tree_hashes(root: Path) -> dict[str, str]:
    """Every file under root (lock file aside) with the sha256 of its bytes."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and p.name != ".retrain.lock"}


def bars_of(store: Store) -> pl.DataFrame:
    return store.scan_bars().collect().sort(["exchange", "symbol", "date"])
