"""Model runs, active models, promote / rollback, and verified loading.

Layout under the artifacts directory::

    daytrading/
      runs/<run_id>/model.joblib, meta.json      one folder per training (the model never changes;
                                                 meta.json may gain annotations such as "gate")
      intraday_model_<version>.joblib            active model of NASDAQ, the shipped default scope
      intraday_model_<version>_meta.json         (the guide's name)
      intraday_model_<version>_<SCOPE>.joblib    active model of any other scope (NYSE, TSE, ALL),
      intraday_model_<version>_<SCOPE>_meta.json whatever ``[run] exchange`` says
      registry.json                              active run, rollback history and a dated log of
                                                 activations per (version, scope)

Active file names are a function of (version, scope) only. Stores written when they followed
``[run] exchange`` keep their files under the old names (left alone); the first load of such a
model rewrites its copies under the new name from the run folder registry.json names.

A run folder is written under a temporary name and renamed into place, so it is complete or
absent; each of its files gets its checksum inside it, and every file here is verified against
its checksum before it is read (``checksums``; ``describe`` says what a file holds and how to
recover it). Loading reads the file once, checks its sha256 against the metadata, its feature
version and scope against what was asked and its feature columns against the features, and
only then unpickles those same bytes.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import json
import os
import platform
import shutil
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from retrain import checksums
from retrain.errors import Holds, RetrainError, StorageError
from retrain.files import atomic_write, atomic_write_text, fault_point

ROOT = "daytrading"
DEFAULT_SCOPE = "NASDAQ"  # the shipped default scope: its active model keeps the guide's plain name
# What a run is: never changed by Registry.annotate.
IDENTITY_KEYS = ("run_id", "created_at", "feature_version", "scope", "feature_columns", "model_sha256")


def model_filename(version: str, scope: str) -> str:
    """Active model file of (version, scope): the guide's plain name for NASDAQ, the shipped
    default scope, and ``_<SCOPE>`` for any other, whatever ``[run] exchange`` says."""
    base = f"intraday_model_{version}"
    return f"{base}.joblib" if scope == DEFAULT_SCOPE else f"{base}_{scope}.joblib"


def meta_filename(version: str, scope: str) -> str:
    return model_filename(version, scope).replace(".joblib", "_meta.json")


META_SCHEMA = 2  # meta.json layout. 1: before the out-of-sample record (no schema_version key);
# 2: adds schema_version, record, gate, seconds and backtest.evidence.


@dataclass
class RunMeta:
    """A run's ``meta.json``, typed. It is read (``RunMeta.parse``) and written (``meta_text``)
    here only; the rest of the code gets and gives its plain dict (``to_dict``), as tools other
    than retrain read the JSON. Keys this version does not know are kept in ``extra`` and
    written back as they were; a file of a newer schema is refused rather than half-read."""

    run_id: str
    feature_version: str
    scope: str
    created_at: str | None = None
    feature_columns: list[str] = field(default_factory=list)
    categorical_features: list[str] = field(default_factory=list)
    target: str | None = None
    training_config: dict = field(default_factory=dict)
    training_window: dict = field(default_factory=dict)
    rows: int | None = None
    fingerprint: str | None = None
    params: dict = field(default_factory=dict)
    num_boost_round: int | None = None
    cv: dict = field(default_factory=dict)
    identity: dict | None = None
    backtest: dict | None = None  # the --backtest-days window: the guide's figures, evidence, verdict
    record: dict | None = None  # the out-of-sample record the verdict and the gate judge
    gate: dict | None = None  # the promotion decision
    feature_importance_gain: dict | None = None
    seconds: dict | None = None  # where the training step's time went
    model_sha256: str | None = None
    libraries: dict | None = None
    schema_version: int = META_SCHEMA
    extra: dict = field(default_factory=dict)

    @classmethod
    def parse(cls, data: Any, source: object = "meta.json") -> RunMeta:
        if not isinstance(data, dict):
            raise RetrainError(f"{source}: run metadata is not a JSON object", hint="restore it from a backup")
        missing = [k for k in ("run_id", "feature_version", "scope") if k not in data]
        if missing:
            raise RetrainError(f"{source}: run metadata lacks {', '.join(missing)}", hint="restore it from a backup")
        version = data.get("schema_version", 1)
        if not isinstance(version, int) or version > META_SCHEMA:
            raise RetrainError(f"{source}: run metadata of schema {version!r}, newer than this retrain reads "
                               f"({META_SCHEMA})", hint="upgrade retrain (`pip install -U retrain`)")
        known = {f.name for f in fields(cls)} - {"extra", "schema_version"}
        return cls(**{k: data[k] for k in known if k in data}, schema_version=version,
                   extra={k: v for k, v in data.items() if k not in known and k != "schema_version"})

    def to_dict(self) -> dict:
        """The plain dict, keys of runs without them (e.g. no backtest) left out as before."""
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "extra"}
        out = {k: v for k, v in out.items() if v is not None}
        return {**out, **self.extra}


def describe(path: Path) -> Holds:
    """What a file under artifacts/daytrading holds, and how to recover it when it is corrupted."""
    parts = Path(path).parts
    rel = parts[len(parts) - parts[::-1].index(ROOT):] if ROOT in parts else parts[-1:]
    name = rel[-1]
    if rel == ("registry.json",):
        return Holds("registry", "the active model of each version and exchange, the rollback history and the log "
                     "of activations", False,
                     f"restore {path} from a backup; or move it aside (`mv {path} {path}.corrupt`) and activate each "
                     "model again with `retrain models promote RUN_ID` (`retrain models list` shows the runs; the "
                     "rollback history is lost)")
    if len(rel) == 1 and name.startswith("intraday_model_"):
        what = "metadata" if name.endswith("_meta.json") else "model"
        return Holds("active model copy", f"the copy of an active model's {what} ({name}); its run folder holds the "
                     "original", True, "`retrain verify --repair` copies it again from the run folder that "
                     "registry.json names (so does `retrain models promote RUN_ID`)")
    if rel[0] == "runs" and len(rel) >= 3:
        run = rel[1]
        what = {"model.joblib": f"the model of run {run}", "meta.json": f"the metadata of run {run} (what it was "
                "trained on, its CV, record and gate)"}.get(name, f"{name} of run {run}")
        kind = {"model.joblib": "model", "meta.json": "run metadata"}.get(name, "run file")
        return Holds(kind, what, False,
                     f"runs never change and cannot be rebuilt: restore {path.parent} from a backup, or use another "
                     "run: `retrain models rollback` (when it is the active one) or `retrain models promote RUN_ID`, "
                     "or train a new one with `retrain run`")
    if rel[0] == "records":
        return Holds("record", f"a block of the out-of-sample record ({'/'.join(rel[1:])})", True,
                     "`retrain verify --repair` deletes it; the next `retrain run` (or `retrain train`) rebuilds "
                     "that block (a run meeting it first rebuilds it by itself)")
    if rel[0] == "predictions":
        if len(rel) == 3:
            return Holds("journal", f"the prediction journal's ranking of {rel[1].split('=', 1)[-1]} by run "
                         f"{Path(name).stem}", False,
                         f"a prediction cannot be made again as it was: restore {path} from a backup, or delete it "
                         f"(`rm {path}`) and `retrain monitor` goes on without it")
        return Holds("ranking", f"a ranking as `retrain predict` printed it ({name}; nothing reads it)", False,
                     f"delete it (`rm {path}`), or run `retrain predict` again")
    if name == "index.html":
        return Holds("dashboard", "the dashboard (index.html)", True,
                     "`retrain verify --repair` deletes it; the next `retrain run`, `predict` or `monitor` writes it")
    return Holds("other", "a file retrain wrote", False, f"restore {path} from a backup")


def verified(path: Path) -> Path:
    """``path``, once it matches its recorded checksum (else CorruptFile)."""
    checksums.verify(Path(path), describe)
    return path


def read_meta(path: Path) -> dict:
    """A meta.json, verified and checked against ``RunMeta``."""
    verified(path)
    try:
        data = json.loads(Path(path).read_text())
    except ValueError:
        raise RetrainError(f"{path}: metadata is not valid JSON", hint="restore it or promote another run") from None
    return RunMeta.parse(data, path).to_dict()


def meta_text(meta: dict) -> str:
    """The text of a meta.json (``RunMeta`` checks the dict first)."""
    return json.dumps(RunMeta.parse(meta, f"the metadata of run {meta.get('run_id')}").to_dict(), indent=1,
                      default=str)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def library_versions() -> dict[str, str]:
    from importlib import metadata

    out = {"python": platform.python_version()}
    for name in ("retrain", "lightgbm", "polars", "duckdb", "numpy", "joblib"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:  # pragma: no cover
            out[name] = "unknown"
    return out


@dataclass
class LoadedModel:
    model: Any
    meta: dict
    path: Path


class Registry:
    def __init__(self, artifacts_dir: str | os.PathLike, default_scope: str = DEFAULT_SCOPE):
        """``default_scope`` (``[run] exchange``) only shapes hints (``--exchange X`` is left out
        for it); file names never depend on it."""
        self.root = Path(artifacts_dir) / ROOT
        self.default_scope = default_scope

    @property
    def runs_dir(self) -> Path:
        return self.root / "runs"

    @property
    def registry_path(self) -> Path:
        return self.root / "registry.json"

    def active_paths(self, version: str, scope: str) -> tuple[Path, Path]:
        return self.root / model_filename(version, scope), self.root / meta_filename(version, scope)

    # ------------------------------------------------------------- state
    def state(self) -> dict:
        if not self.registry_path.exists():
            return {"active": {}, "history": {}, "events": []}
        verified(self.registry_path)
        state = json.loads(self.registry_path.read_text())
        state.setdefault("events", [])
        return state

    def _save(self, state: dict) -> None:
        atomic_write_text(json.dumps(state, indent=1, sort_keys=True, default=str), self.registry_path)

    def active_run(self, version: str, scope: str) -> str | None:
        return self.state()["active"].get(version, {}).get(scope)

    def activations(self, version: str, scope: str) -> list[tuple[dt.datetime, str]]:
        """(when, run_id) of every activation of (version, scope), oldest first. Registries
        written before activations were logged get them from the history, dated by each run's
        creation time (runs used to be promoted as they were created)."""
        state = self.state()
        logged = [(dt.datetime.fromisoformat(e["at"]), e["run_id"]) for e in state["events"]
                  if e.get("version") == version and e.get("scope") == scope]
        if logged:
            return logged
        ids = [*state["history"].get(version, {}).get(scope, []), state["active"].get(version, {}).get(scope)]
        out = []
        for run_id in ids:
            meta_path = self.runs_dir / str(run_id) / "meta.json"
            if run_id and meta_path.exists():
                out.append((dt.datetime.fromisoformat(read_meta(meta_path)["created_at"]), run_id))
        return sorted(out)

    def active_at(self, version: str, scope: str, instant: dt.datetime) -> str | None:
        """The run that was the active model of (version, scope) at ``instant`` (aware), or None."""
        before = [run_id for when, run_id in self.activations(version, scope) if when <= instant]
        return before[-1] if before else None

    def _log(self, state: dict, action: str, version: str, scope: str, run_id: str,
             decision: dict | None = None) -> None:
        events = state.setdefault("events", [])
        if not any(e.get("version") == version and e.get("scope") == scope for e in events):
            # the first logged activation of a registry from before the log: keep its past, dated
            events.extend({"at": when.isoformat(), "action": "promote (dated by the run's creation)",
                           "version": version, "scope": scope, "run_id": rid}
                          for when, rid in self.activations(version, scope))
        event = {"at": dt.datetime.now(dt.UTC).isoformat(), "action": action, "version": version, "scope": scope,
                 "run_id": run_id}
        if decision is not None:
            event["decision"] = decision
        events.append(event)

    # -------------------------------------------------------------- runs
    def new_run_id(self, version: str, scope: str, fingerprint: str) -> tuple[str, str]:
        """(run_id, created_at) for a run about to be written: time, version, scope, data hash."""
        created = dt.datetime.now(dt.UTC)
        base = f"{created:%Y%m%dT%H%M%S}-{version}-{scope}-{fingerprint[:6]}"
        run_id, n = base, 1
        while (self.runs_dir / run_id).exists():
            n += 1
            run_id = f"{base}-{n}"
        return run_id, created.isoformat()

    def create_run(self, model: Any, meta: dict, extra_files: dict[str, bytes] | None = None) -> tuple[str, Path]:
        """Write a new immutable run folder (meta carries run_id and created_at from new_run_id);
        returns (run_id, folder)."""
        import joblib  # here, not at the top: about 0.15 s of every command's start-up

        blob = io.BytesIO()
        joblib.dump(model, blob)
        data = blob.getvalue()
        self.runs_dir.mkdir(parents=True, exist_ok=True)
        if "run_id" not in meta:
            meta = {**meta, **dict(zip(("run_id", "created_at"),
                                       self.new_run_id(meta["feature_version"], meta["scope"], meta.get("fingerprint", ""))))}
        run_id = meta["run_id"]
        if (self.runs_dir / run_id).exists():
            raise RetrainError(f"run {run_id} exists already; runs are immutable")
        meta = {**meta, "model_sha256": sha256(data), "libraries": library_versions()}
        tmp = self.runs_dir / f".tmp-{run_id}-{os.getpid()}"
        tmp.mkdir()
        try:
            (tmp / "model.joblib").write_bytes(data)
            (tmp / "meta.json").write_text(meta_text(meta))
            for name, content in (extra_files or {}).items():
                (tmp / name).write_bytes(content)
            for f in list(tmp.iterdir()):
                checksums.record_new(f)
            for f in tmp.iterdir():
                with open(f, "rb") as fh:
                    os.fsync(fh.fileno())
            os.rename(tmp, self.runs_dir / run_id)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return run_id, self.runs_dir / run_id

    def annotate(self, run_id: str, **fields: Any) -> dict:
        """Add or replace top-level keys of ``runs/<run_id>/meta.json`` (e.g. ``gate``, ``record``),
        rewritten atomically; returns the new metadata. The model and what identifies the run
        (IDENTITY_KEYS) never change. When the run is the active model of its (version, scope),
        the active metadata copy is rewritten too, after the run's own file (its sha256 is
        unchanged, so a crash between the two leaves a loadable pair). Call under the store lock."""
        fixed = sorted(set(fields) & set(IDENTITY_KEYS))
        if fixed:
            raise RetrainError(f"cannot annotate run {run_id} with {', '.join(fixed)}: they identify the run",
                               hint="train a new run instead")
        meta = self.run_meta(run_id)
        meta.update(fields)
        atomic_write_text(meta_text(meta), self.runs_dir / run_id / "meta.json")
        version, scope = meta["feature_version"], meta["scope"]
        if self.active_run(version, scope) == run_id:
            model_path, meta_path = self.active_paths(version, scope)
            if model_path.exists() and sha256(model_path.read_bytes()) == meta.get("model_sha256"):
                atomic_write_text(meta_text(meta), meta_path)
        return meta

    def run_meta(self, run_id: str) -> dict:
        path = self.runs_dir / run_id / "meta.json"
        if not path.exists():
            known = ", ".join(r["run_id"] for r in self.runs()[-5:]) or "none"
            raise RetrainError(f"no run {run_id!r} in {self.runs_dir}", hint=f"`retrain models list` shows them (latest: {known})")
        return read_meta(path)

    unreadable: list[tuple[str, str]] = []  # (run id, why) of the run folders ``runs`` had to leave out

    def runs(self) -> list[dict]:
        """Every run's metadata with its status (active / candidate / retired), oldest first. A
        run whose meta.json cannot be read is left out, and listed in ``unreadable``."""
        if not self.runs_dir.exists():
            return []
        state = self.state()
        active = {r for scopes in state["active"].values() for r in scopes.values()}
        retired = {r for scopes in state["history"].values() for runs in scopes.values() for r in runs}
        retired |= set(state.get("retired_by_rollback", []))
        out = []
        self.unreadable = []
        for folder in sorted(p for p in self.runs_dir.iterdir() if p.is_dir() and not p.name.startswith(".")):
            try:
                meta = read_meta(folder / "meta.json")
            except (OSError, RetrainError) as exc:
                self.unreadable.append((folder.name, getattr(exc, "message", None) or str(exc)))
                continue
            meta["status"] = "active" if meta["run_id"] in active else "retired" if meta["run_id"] in retired else "candidate"
            out.append(meta)
        return sorted(out, key=lambda m: m["created_at"])

    # ------------------------------------------------- promote / rollback
    def promote(self, run_id: str, decision: dict | None = None) -> dict:
        """Make ``run_id`` the active model of its (version, scope); the one it replaces goes
        into the history that rollback walks back. ``decision`` (why, e.g. the promotion gate's
        verdict) is kept in registry.json's log entry of this activation. Promoting the active
        run again logs nothing and only rewrites its active copies."""
        meta = self.run_meta(run_id)
        version, scope = meta["feature_version"], meta["scope"]
        loaded = self.load_run(run_id)
        state = self.state()
        current = state["active"].get(version, {}).get(scope)
        if current != run_id:
            if current:
                state["history"].setdefault(version, {}).setdefault(scope, []).append(current)
            state["active"].setdefault(version, {})[scope] = run_id
            self._log(state, "promote", version, scope, run_id, decision)
            self._save(state)  # the commit point: registry.json names the active run
        self._activate(loaded)  # then the plain-named copies (also repairs copies a crash left behind)
        return meta

    def rollback(self, version: str, scope: str) -> tuple[str, str]:
        """Re-activate the previous active model of (version, scope); returns (old, new) run ids."""
        state = self.state()
        history = state["history"].get(version, {}).get(scope, [])
        current = state["active"].get(version, {}).get(scope)
        if not history:
            others = sorted(v for v, scopes in state["history"].items() if scopes.get(scope) and v != version)
            also = f"; {', '.join(others)} can be rolled back with `--version`" if others else ""
            raise RetrainError(f"no earlier active model of {version} for {scope} to roll back to",
                               hint=f"`retrain models list --version {version}` shows its runs; "
                                    f"`retrain models promote <run id>` activates one{also}")
        previous = history[-1]
        loaded = self.load_run(previous, version=version, scope=scope)
        state["history"][version][scope] = history[:-1]
        state["active"].setdefault(version, {})[scope] = previous
        if current:
            state.setdefault("retired_by_rollback", []).append(current)
        self._log(state, "rollback", version, scope, previous)
        self._save(state)
        self._activate(loaded)
        return current, previous

    # --------------------------------------------------------------- prune
    def prune_plan(self, keep: int) -> list[dict]:
        """The runs `models prune --keep N` removes: per (version, scope), every run that is not
        among its N newest, not the active one, and not among the last N entries of its rollback
        history (so N rollbacks stay possible). Oldest first."""
        if keep < 1:
            raise RetrainError(f"--keep must be at least 1 (got {keep})", hint="the active model is always kept")
        state = self.state()
        runs = self.runs()
        protect: set[str] = set()
        for version, scope in {(r["feature_version"], r["scope"]) for r in runs}:
            mine = [r["run_id"] for r in runs if r["feature_version"] == version and r["scope"] == scope]
            protect.update(mine[-keep:])
            protect.update(state["history"].get(version, {}).get(scope, [])[-keep:])
        protect.update(r for scopes in state["active"].values() for r in scopes.values())
        return [r for r in runs if r["run_id"] not in protect]

    def prune(self, keep: int) -> list[str]:
        """Remove the runs of ``prune_plan``; returns their ids. registry.json first drops them
        from the rollback history (the commit point), then each folder is renamed away and
        deleted, so a kill leaves no half-deleted run that looks complete."""
        doomed = [r["run_id"] for r in self.prune_plan(keep)]
        if not doomed:
            return []
        state = self.state()
        gone = set(doomed)
        for scopes in state["history"].values():
            for scope, ids in scopes.items():
                scopes[scope] = [r for r in ids if r not in gone]
        self._save(state)
        for run_id in doomed:
            trash = self.runs_dir / f".tmp-pruned-{run_id}"
            os.rename(self.runs_dir / run_id, trash)
            shutil.rmtree(trash, ignore_errors=True)
        for leftover in self.runs_dir.glob(".tmp-pruned-*"):  # from a prune that was killed
            shutil.rmtree(leftover, ignore_errors=True)
        return doomed

    def damaged_active_copies(self, version: str, scope: str) -> list[Path]:
        """The active model's plain-named copies of (version, scope), when either is missing, does
        not match its checksum, or is not the active run's (its sha256): both paths, else none
        (none too when no run is active, or its run folder has no model to copy). Reads only."""
        run_id = self.active_run(version, scope)
        if run_id is None or not (self.runs_dir / run_id / "model.joblib").exists():
            return []
        model_path, meta_path = self.active_paths(version, scope)
        checksums.forget(model_path)
        checksums.forget(meta_path)
        sound = all(p.exists() and checksums.check(p)[0] == "ok" for p in (model_path, meta_path))
        if sound:
            try:
                sound = (json.loads(meta_path.read_text()).get("run_id") == run_id and
                         sha256(model_path.read_bytes()) == self.run_meta(run_id).get("model_sha256"))
            except (OSError, ValueError):
                sound = False
        return [] if sound else [model_path, meta_path]

    def restore_active_copies(self, version: str, scope: str) -> list[str]:
        """Copy the active model's plain-named copies of (version, scope) again from the run folder
        when they are damaged (``damaged_active_copies``). Returns the names copied again (none
        when both are sound, or no run is active)."""
        damaged = self.damaged_active_copies(version, scope)
        if not damaged:
            return []
        self._activate(self.load_run(self.active_run(version, scope), version=version, scope=scope))
        return [p.name for p in damaged]

    def _activate(self, loaded: LoadedModel) -> None:
        """Copy a run's model and metadata to the plain active names. Two files cannot be
        replaced at once: a crash between them leaves a mismatched pair, which load_active
        detects (sha256) and answers from the run folder that registry.json names."""
        meta = loaded.meta
        model_path, meta_path = self.active_paths(meta["feature_version"], meta["scope"])
        data = (self.runs_dir / meta["run_id"] / "model.joblib").read_bytes()
        atomic_write(model_path, lambda tmp: tmp.write_bytes(data))
        fault_point("registry.between_active_files")
        atomic_write_text(meta_text(meta), meta_path)

    # ------------------------------------------------------------ loading
    def load_file(self, model_path: Path, meta_path: Path, version: str | None = None,
                  columns: list[str] | None = None, scope: str | None = None, fix: str | None = None) -> LoadedModel:
        """Load a model only if its bytes match the sha256 in its metadata, and its feature
        version, scope and columns match what the caller expects (None: not checked). ``fix``:
        the hint for a model of another version or scope (default: how to get the right one)."""
        if not model_path.exists() or not meta_path.exists():
            raise RetrainError(f"model file missing: {model_path if not model_path.exists() else meta_path}",
                               hint="train one with `retrain train` (or `retrain run`)")
        meta = read_meta(meta_path)
        data = model_path.read_bytes()  # verified by its sha256 (stronger than its checksum file, same answer)
        if sha256(data) != meta.get("model_sha256"):
            raise RetrainError(
                f"{model_path}: contents do not match the sha256 recorded in {meta_path.name} "
                "(tampered with, truncated or replaced); refusing to load it",
                hint="promote a verified run again with `retrain models promote RUN_ID`, or retrain",
            )
        held_version, held_scope = meta.get("feature_version"), meta.get("scope")
        if (version and held_version != version) or (scope and held_scope != scope):
            asked = (f"the {version} model of {scope}" if version and scope else
                     f"a {version} model" if version else f"a model of {scope}")
            if fix is None:
                flag = "" if not scope or scope == self.default_scope else f" --exchange {scope}"
                fix = (f"use a {version or held_version} model of {scope or held_scope} (`retrain models list`), "
                       f"or train one: `retrain run{flag}`")
            raise RetrainError(
                f"{model_path} holds the {held_version} model of {held_scope} (run {meta.get('run_id')}), "
                f"not {asked} as asked; refusing to load it", hint=fix)
        if columns is not None and meta.get("feature_columns") != columns:
            raise RetrainError(f"{model_path}: its feature columns differ from the {held_version} feature set",
                               hint="retrain it on the current features (`retrain train`)")
        import joblib

        from retrain import lgbm

        lgbm.load()  # the pickle's Booster class, imported as the process imports LightGBM
        return LoadedModel(model=joblib.load(io.BytesIO(data)), meta=meta, path=model_path)

    def load_active(self, version: str, scope: str, columns: list[str] | None = None) -> LoadedModel:
        """The active model of (version, scope). registry.json decides which run is active; the
        plain-named files are its copies. Should a crash have left them stale or mismatched, the
        run's own (immutable, verified) folder is loaded instead; should they be missing (a store
        from when names followed ``[run] exchange``, or copies deleted), they are written again
        from it. A file that holds another version's or scope's model is refused."""
        model_path, meta_path = self.active_paths(version, scope)
        active_id = self.active_run(version, scope)
        flag = "" if scope == self.default_scope else f" --exchange {scope}"
        if not model_path.exists() and active_id is None:
            older = sorted(v for v, scopes in self.state()["active"].items() if scope in scopes and v != version)
            if older:  # stranded by a version bump made on another scope
                raise RetrainError(
                    f"no active {version} model for {scope}: the feature version is now {version}, and {scope} has "
                    f"active models of {', '.join(older)} only",
                    hint=f"train {scope}'s {version} model: `retrain run{flag}` (it builds {scope}'s {version} features "
                         f"first), or rank with the older one: `retrain predict{flag} --version {older[-1]}`")
            raise RetrainError(f"no active model of {version} for {scope} ({model_path})",
                               hint=f"train one: `retrain run{flag}`")
        has_run = active_id is not None and (self.runs_dir / active_id).is_dir()
        if has_run and not (model_path.exists() and meta_path.exists()):
            loaded = self.load_run(active_id, columns, version=version, scope=scope)
            try:
                self._activate(loaded)  # the same atomic copies promote writes
            except (OSError, StorageError):
                pass  # a read-only or full store: the verified run folder answers
            return loaded
        if active_id is not None:
            fix = f"`retrain models promote {active_id}` rewrites {model_path.name} with the active {version} model of {scope}"
            if scope == DEFAULT_SCOPE:
                fix += (" (stores written when the file names followed `[run] exchange` kept that exchange's active "
                        "model under this name)")
        else:
            fix = f"train {scope}'s {version} model: `retrain run{flag}` (it writes {model_path.name})"
        try:
            loaded = self.load_file(model_path, meta_path, version, columns, scope=scope, fix=fix)
        except RetrainError:
            # A crash between the two copies leaves the active run's model next to the previous
            # metadata: recognised by its sha256. Any other mismatch is tampering: refused.
            if has_run and model_path.exists() and \
                    sha256(model_path.read_bytes()) == self.run_meta(active_id).get("model_sha256"):
                return self.load_run(active_id, columns, version=version, scope=scope)
            raise
        if has_run and loaded.meta.get("run_id") != active_id:  # copies older than registry.json
            return self.load_run(active_id, columns, version=version, scope=scope)
        return loaded

    def load_run(self, run_id: str, columns: list[str] | None = None, *, version: str | None = None,
                 scope: str | None = None) -> LoadedModel:
        """A run from its own folder; ``version`` / ``scope``: what the caller needs it to be."""
        self.run_meta(run_id)  # a clear error for an unknown run
        fix = None
        if version or scope:
            fix = (f"name a run of {' '.join(x for x in (version, scope) if x)} (`retrain models list`), "
                   f"or train one: `retrain run{'' if not scope or scope == self.default_scope else f' --exchange {scope}'}`")
        return self.load_file(self.runs_dir / run_id / "model.joblib", self.runs_dir / run_id / "meta.json",
                              version, columns, scope=scope, fix=fix)
