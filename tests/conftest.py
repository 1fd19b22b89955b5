from __future__ import annotations

import datetime as dt
import hashlib
import os
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest
from click.testing import CliRunner

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
    monkeypatch.setenv("RETRAIN_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("RETRAIN_ARTIFACTS_DIR", str(tmp_path / "artifacts"))
    monkeypatch.delenv("RETRAIN_CONFIG", raising=False)
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()

    def invoke(*args: str):
        return runner.invoke(main, list(args), catch_exceptions=False)

    return invoke


def run_cli(args: list[str], data_dir: Path, env_extra: dict | None = None, **kw) -> subprocess.CompletedProcess:
    """Run the CLI in a separate process (for kills and locks)."""
    env = {**os.environ, "RETRAIN_DATA_DIR": str(data_dir), **(env_extra or {})}
    return subprocess.run([sys.executable, "-m", "retrain.cli", *args], env=env, capture_output=True,
                          text=True, cwd=str(ROOT), check=False, **kw)


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
