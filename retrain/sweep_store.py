"""The sweeps on disk: one folder per sweep.

    artifacts/daytrading/sweeps/<sweep_id>/
        sweep.json                  what the sweep is (scope, window, space, sampler, seed, the
                                    routine it starts from, the data's fingerprint) and each
                                    session that ran it (cluster, workers, timings)
        study.db                    the Optuna study (SQLite): every trial asked, its settings,
                                    and its result as soon as it is known
        trials.parquet              one row per finished trial: settings, metrics with their 90%
                                    intervals, seconds, worker
        predictions/trial-N.parquet the out-of-sample predictions of trial N (for its tear sheet)
        report.html                 each metric against each setting, the honest reading of the
                                    best trial, and its tear sheet

The study is SQLite rather than Optuna's journal file because a sweep must survive kill -9:
SQLite commits each change in a transaction that a killed process leaves whole or undone, and
the kernel drops its locks with the process. A journal file appended at the moment of the kill
can keep a torn last line that the next append runs into, and its lock file stays behind until
a grace period ends. Only the machine that runs `retrain sweep` writes here; workers never do.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import json
import os
from collections.abc import Iterator
from pathlib import Path

import polars as pl

from retrain.errors import LockBusy, RetrainError
from retrain.files import atomic_write_parquet, atomic_write_text, machine_faults
from retrain.registry import ROOT

SWEEPS = "sweeps"
SPEC = "sweep.json"
STUDY = "study.db"
TRIALS = "trials.parquet"
REPORT = "report.html"


class SweepStore:
    def __init__(self, artifacts_dir: str | os.PathLike):
        self.root = Path(artifacts_dir) / ROOT / SWEEPS

    def folder(self, sweep_id: str) -> Path:
        return self.root / sweep_id

    def ids(self) -> list[str]:
        """Every sweep with a spec, oldest first."""
        return sorted(p.parent.name for p in self.root.glob(f"*/{SPEC}")) if self.root.is_dir() else []

    def new_id(self, scope: str) -> str:
        """A new sweep's id: time (UTC) and scope, e.g. 20251017T143012-NASDAQ."""
        base = f"{dt.datetime.now(dt.UTC):%Y%m%dT%H%M%S}-{scope}"
        sweep_id, n = base, 1
        while self.folder(sweep_id).exists():
            n += 1
            sweep_id = f"{base}-{n}"
        return sweep_id

    def require(self, sweep_id: str) -> Path:
        """The folder of an existing sweep, or an error that lists the sweeps there are."""
        folder = self.folder(sweep_id)
        if not (folder / SPEC).is_file():
            known = self.ids()
            listed = ", ".join(known[-5:]) if known else "none yet"
            raise RetrainError(f"no sweep {sweep_id} in {self.root}",
                               hint=f"sweeps there: {listed} (start one with `retrain sweep`)")
        return folder

    def storage_url(self, sweep_id: str) -> str:
        """The Optuna storage of the sweep (SQLite; see the module docstring)."""
        return f"sqlite:///{(self.folder(sweep_id) / STUDY).resolve()}"

    # ------------------------------------------------------------ files
    def write_spec(self, sweep_id: str, spec: dict) -> None:
        path = self.folder(sweep_id) / SPEC
        with machine_faults(path):
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_text(json.dumps(spec, indent=1, default=str), path)

    def read_spec(self, sweep_id: str) -> dict:
        path = self.require(sweep_id) / SPEC
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except ValueError as exc:
            raise RetrainError(f"{path} is not readable JSON ({exc})",
                               hint="the sweep cannot be resumed; start a new one with `retrain sweep`") from None

    def write_trials(self, sweep_id: str, rows: pl.DataFrame) -> Path:
        path = self.folder(sweep_id) / TRIALS
        with machine_faults(path):
            atomic_write_parquet(rows, path)
        return path

    def read_trials(self, sweep_id: str) -> pl.DataFrame | None:
        path = self.require(sweep_id) / TRIALS
        return pl.read_parquet(path) if path.exists() else None

    def predictions_path(self, sweep_id: str, trial: int) -> Path:
        return self.folder(sweep_id) / "predictions" / f"trial-{trial}.parquet"

    def write_predictions(self, sweep_id: str, trial: int, frame: pl.DataFrame) -> None:
        path = self.predictions_path(sweep_id, trial)
        with machine_faults(path):
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_parquet(frame, path)

    def read_predictions(self, sweep_id: str, trial: int) -> pl.DataFrame | None:
        path = self.predictions_path(sweep_id, trial)
        return pl.read_parquet(path) if path.exists() else None

    def write_report(self, sweep_id: str, page: str) -> Path:
        path = self.folder(sweep_id) / REPORT
        with machine_faults(path):
            atomic_write_text(page, path)
        return path

    @contextlib.contextmanager
    def lock(self, sweep_id: str, command: str) -> Iterator[None]:
        """One process at a time per sweep (the kernel drops the lock when it dies)."""
        path = self.folder(sweep_id) / ".lock"
        with machine_faults(path, action="opening the sweep's lock file"):
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 4096).decode("utf-8", "replace").strip() or "another process"
            os.close(fd)
            raise LockBusy(f"the sweep {sweep_id} is being run by {holder}",
                           hint="wait for it to finish, or stop it; then resume it with "
                                f"`retrain sweep --resume {sweep_id}`") from None
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"pid {os.getpid()} (`{command}`)".encode(), 0)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)
