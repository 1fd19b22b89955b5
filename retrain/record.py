"""The out-of-sample record on disk: one Parquet file per grid block, per routine.

    artifacts/daytrading/records/<version>/<scope>/<routine>/
        routine.json                   what the routine is (training config, params, columns)
        block-<first weekday>.parquet  the block's predictions, with its fingerprints
        model-<fingerprint>.txt        the block's model (LightGBM text), named by what it was
                                       trained on: a block whose own sessions changed (a week
                                       still in progress) is predicted again without training

A routine's folder is named by the first 16 hex digits of its fingerprint
(``backtest.routine_spec``), so a record of another routine or feature column list is
never mixed in. Each file carries its block's fingerprint in a column, so a file is
self-describing: a reader keeps a block only when the fingerprint the current rows give is the
one stored. Files are written atomically with their checksums; an unreadable file, or one that
does not match its checksum, is reported and rebuilt.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import polars as pl

from retrain.errors import RetrainError
from retrain.files import atomic_write_parquet, atomic_write_text, machine_faults
from retrain.registry import ROOT, verified

RECORDS = "records"


class RecordStore:
    def __init__(self, artifacts_dir: str | os.PathLike):
        self.root = Path(artifacts_dir) / ROOT / RECORDS

    def folder(self, version: str, scope: str, routine: str) -> Path:
        return self.root / version / scope / routine[:16]

    def keys(self, version: str, scope: str, routine: str) -> list[str]:
        """Names (first weekday, ISO) of the blocks stored for the routine, oldest first."""
        folder = self.folder(version, scope, routine)
        if not folder.is_dir():
            return []
        return sorted(p.name[len("block-"):-len(".parquet")] for p in folder.glob("block-*.parquet"))

    def path(self, version: str, scope: str, routine: str, key: str) -> Path:
        return self.folder(version, scope, routine) / f"block-{key}.parquet"

    def read(self, version: str, scope: str, routine: str, keys: list[str]) -> tuple[dict[str, pl.DataFrame], list[str]]:
        """The stored blocks among ``keys`` ({key: frame}) and a warning per unreadable file."""
        found, warnings = {}, []
        for key in keys:
            path = self.path(version, scope, routine, key)
            if not path.exists():
                continue
            try:
                frame = pl.read_parquet(verified(path))
                if "block_fingerprint" not in frame.columns or frame.is_empty():
                    raise ValueError("no block fingerprint")
            except Exception as exc:  # a torn copy, a bad disk, a foreign file: rebuild the block
                warnings.append(f"unreadable record file {path} ({type(exc).__name__}: {exc}); its block is rebuilt")
                continue
            found[key] = frame
        return found, warnings

    def folders(self) -> list[tuple[str, str, str, Path]]:
        """(version, scope, routine, folder) of every routine's record on disk."""
        if not self.root.is_dir():
            return []
        return sorted((v.name, sc.name, r.name, r) for v in self.root.iterdir() if v.is_dir()
                      for sc in v.iterdir() if sc.is_dir() for r in sc.iterdir() if r.is_dir())

    def unused(self, runs: list[dict]) -> list[tuple[str, str, str, Path]]:
        """The records that none of ``runs`` (the runs that stay) was judged on: what
        `models prune` removes with them. A run's record is meta["record"]["routine"]."""
        used = {(r["feature_version"], r["scope"], (r.get("record") or {}).get("routine")) for r in runs}
        return [f for f in self.folders() if f[:3] not in used]

    def remove(self, folder: Path) -> None:
        """Delete one routine's record: renamed away first, so a kill leaves no half record."""
        trash = folder.with_name(f".tmp-pruned-{folder.name}")
        with machine_faults(folder, "removing"):
            os.rename(folder, trash)
            shutil.rmtree(trash, ignore_errors=True)

    def model_path(self, version: str, scope: str, routine: str, model_fingerprint: str) -> Path:
        return self.folder(version, scope, routine) / f"model-{model_fingerprint[:32]}.txt"

    def read_model(self, version: str, scope: str, routine: str, model_fingerprint: str) -> str | None:
        """The stored model of that fingerprint (LightGBM text), or None (absent or unreadable)."""
        path = self.model_path(version, scope, routine, model_fingerprint)
        try:
            text = verified(path).read_text()
        except (OSError, UnicodeDecodeError, RetrainError):  # a corrupted one is trained again
            return None
        return text if text.startswith("tree") and "end of trees" in text else None  # whole, not torn

    def write_model(self, version: str, scope: str, routine: str, model_fingerprint: str, text: str) -> None:
        path = self.model_path(version, scope, routine, model_fingerprint)
        with machine_faults(path):
            path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(text, path)

    def write(self, version: str, scope: str, routine: str, key: str, frame: pl.DataFrame, spec: dict) -> Path:
        path = self.path(version, scope, routine, key)
        with machine_faults(path):
            path.parent.mkdir(parents=True, exist_ok=True)
            describe = path.parent / "routine.json"
            if not describe.exists():
                atomic_write_text(json.dumps(spec, indent=2, sort_keys=True, default=str) + "\n", describe)
        atomic_write_parquet(frame, path)
        return path
