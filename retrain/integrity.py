"""A store that verifies itself: `retrain verify [--repair]`, and the steps' way through a
corrupted derived file.

Every file retrain writes has its checksum beside it (``checksums``), and every read verifies
it. ``verify`` checks every file of the data and artifacts directories at once, records the
checksums of files that have none (a store written by an earlier release: adopted, never an
error), and with ``repair`` rebuilds what can be rebuilt:

* derived files of the store (feature rows, the features' build state, the label horizon) from
  the bars, through ``rebuild_derived``, the one place that calls the steps for it;
* the active model's copies from its run folder; out-of-sample record files and the dashboard
  are deleted (the next run writes them again);
* a checksum file that is itself unreadable is recorded again from its file, when that file
  reads as what it should be (Parquet, JSON, or a model whose sha256 its run recorded).

Bars, symbols, runs, registry.json and the prediction journal cannot be rebuilt: each finding
says what to do (for bars, the input files to ingest again for that exchange and month).

``healing`` wraps a step: when it meets a corrupted derived file of the store, the file is
rebuilt from the bars with a warning, and the step runs again.

A rebuild that fails (indicators missing for the bars it reads, a full disk) leaves the
corrupted files where they were, with their checksums: they are set aside (``SetAside``) while
it runs, not deleted, and put back when it fails, or at the next verify or repair when it was
killed.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import polars as pl

from retrain import checksums, report
from retrain.config import Settings
from retrain.errors import CorruptFile, Holds, RetrainError, StorageError
from retrain.files import fsync_dir, machine_faults, unlink
from retrain.registry import Registry, describe, sha256
from retrain.store import PARTITION_FILE, STATE_FILE, Store

T = TypeVar("T")
HEALING_ROUNDS = 8  # distinct corrupted files one step may meet and rebuild before it gives up


@dataclass
class Finding:
    """One file that does not match its checksum (or cannot be checked)."""

    file: str
    kind: str
    holds: str
    problem: str
    action: str
    derived: bool = False

    def to_dict(self) -> dict:
        return {"file": self.file, "kind": self.kind, "holds": self.holds, "problem": self.problem,
                "action": self.action}


@dataclass
class VerifyResult:
    """What `retrain verify` found and did. ``status``: "clean" (nothing found), "repaired"
    (everything found was repaired) or "findings" (something is left: exit status 1)."""

    data_dir: str
    artifacts_dir: str
    checked: int = 0
    adopted: list[str] = field(default_factory=list)  # files whose checksums were recorded now
    findings: list[Finding] = field(default_factory=list)  # what is left (after --repair: what it could not repair)
    repaired: list[str] = field(default_factory=list)  # what --repair did, in words
    notes: list[str] = field(default_factory=list)

    @property
    def status(self) -> str:
        return "findings" if self.findings else "repaired" if self.repaired else "clean"

    @property
    def exit_code(self) -> int:
        return 1 if self.findings else 0

    def to_dict(self) -> dict:
        return {"status": self.status, "checked": self.checked, "adopted": len(self.adopted),
                "findings": [f.to_dict() for f in self.findings], "repaired": self.repaired, "notes": self.notes,
                "data_dir": self.data_dir, "artifacts_dir": self.artifacts_dir}


# --------------------------------------------------------------------- the walk
SET_ASIDE_SUFFIX = ".corrupt"  # what the recovery hints say to rename a corrupted file to (`mv F F.corrupt`)


def _files(root: Path, skip: set[str] = frozenset(), set_aside: list[Path] | None = None) -> list[Path]:
    """Every file retrain may have written under ``root``: not hidden files (the checksums,
    temporary files, the lock), not ``skip`` (names), not files set aside by hand as the
    recovery hints say (``*.corrupt``: appended to ``set_aside``)."""
    out = []
    if not root.is_dir():
        return out
    for folder, dirs, names in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(names):
            if name.startswith(".") or name in skip:  # checksums, temporary files, the lock: not ours to check
                continue
            if name.endswith(SET_ASIDE_SUFFIX):
                if set_aside is not None:
                    set_aside.append(Path(folder) / name)
                continue
            out.append(Path(folder) / name)
    return out


def _readable(path: Path) -> str | None:
    """Why ``path`` does not read as what its name says (None: it does). For files without a
    checksum to compare with: an adopted file is at least whole."""
    try:
        if path.suffix == ".parquet":
            pl.read_parquet(path)
        elif path.suffix == ".json":
            json.loads(path.read_text())
    except Exception as exc:  # noqa: BLE001 - any failure to read is the answer
        return f"{type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}"
    return None


def _model_matches_its_run(path: Path) -> bool:
    """A model file whose bytes have the sha256 its metadata recorded."""
    meta = path.parent / "meta.json" if path.name == "model.joblib" else \
        path.with_name(path.name.replace(".joblib", "_meta.json"))
    try:
        return sha256(path.read_bytes()) == json.loads(meta.read_text()).get("model_sha256")
    except (OSError, ValueError):
        return False


def verify(settings: Settings, repair: bool = False) -> VerifyResult:
    """Check every file of the data and artifacts directories against its checksum; record the
    checksums of files that have none; with ``repair``, rebuild what can be rebuilt. Holds the
    store's lock (writers record checksums under it) unless the store is read-only, in which
    case nothing is recorded or repaired."""
    store = Store(settings.data_dir)
    registry = Registry(settings.artifacts_dir, settings.default_exchange)
    result = VerifyResult(str(settings.data_dir), str(settings.artifacts_dir))
    if not store.root.is_dir() and not registry.root.is_dir():
        result.notes.append(f"nothing to verify: neither {store.root} nor {registry.root} exists")
        return result
    try:
        with store.lock("retrain verify" + (" --repair" if repair else "")):
            _verify(store, registry, result, repair, writable=True)
    except StorageError as exc:  # a read-only store: check, record nothing
        if repair:
            raise
        result.notes.append(f"the store is read-only ({exc.message}): checksums of files without one are not "
                            "recorded")
        _verify(store, registry, result, repair=False, writable=False)
    return result


def _verify(store: Store, registry: Registry, result: VerifyResult, repair: bool, writable: bool) -> None:
    if writable:
        back = SetAside.put_back(store)
        if back:
            result.notes.append(f"a repair killed part-way had set {back} corrupted file(s) aside: put back, to be "
                                "checked (and repaired) again")
    set_aside: list[Path] = []
    files = [(p, store.describe) for p in _files(store.root, {store.lock_path.name}, set_aside)]
    files += [(p, describe) for p in _files(registry.root, set_aside=set_aside)]
    if set_aside:
        result.notes.append(f"{len(set_aside)} file(s) set aside as {SET_ASIDE_SUFFIX} are not checked (nothing reads "
                            f"them): delete them once you no longer need them ({', '.join(map(str, set_aside[:3]))}"
                            f"{', ...' if len(set_aside) > 3 else ''})")
    checksums.forget()  # read everything from disk, not from this process's memory

    statuses = [checksums.check(path) for path, _ in files]
    found: list[tuple[Path, Holds, str, str]] = []
    for (path, describe_it), (status, detail) in zip(files, statuses):
        if status == "missing":  # deleted while we looked
            continue
        result.checked += 1
        if status == "ok":
            continue
        if status == "unrecorded":
            problem = _readable(path)
            if problem is None:
                if writable:
                    checksums.adopt(path)
                    result.adopted.append(str(path))
                continue
            found.append((path, describe_it(path), "unreadable",
                          f"it has no checksum (written before retrain recorded them) and does not read ({problem})"))
            continue
        problem = (f"its checksum file {checksums.sidecar(path).name} is unreadable ({detail})"
                   if status == "unreadable checksum" else detail)
        found.append((path, describe_it(path), status, problem))
    if result.adopted:
        result.notes.append(f"recorded the checksums of {len(result.adopted)} file(s) that had none (a store written "
                            "by an earlier release, adopted as it is)")
    findings = {path: Finding(str(path), holds.kind, holds.what, problem, holds.action, holds.derived)
                for path, holds, _, problem in found}
    if repair and findings:
        _repair(store, registry, {p: s for p, _, s, _ in found}, findings, result)
    result.findings = list(findings.values())


# ------------------------------------------------------------------ repairing
def _repair(store: Store, registry: Registry, status: dict[Path, str], findings: dict[Path, Finding],
            result: VerifyResult) -> None:
    """Repair what can be repaired; what is repaired leaves ``findings`` (what is left says why not)."""
    features: dict[str, list[tuple[str, str]] | None] = {}
    labels = False
    for path, f in list(findings.items()):
        if status[path] == "unreadable checksum" and not f.derived:
            # the file may well be fine: recorded again when it reads as what it should be
            problem = None if path.suffix != ".joblib" or _model_matches_its_run(path) else "sha256 differs"
            problem = problem or _readable(path)
            if problem is None:
                checksums.adopt(path)
                result.repaired.append(f"{path}: checksum file recorded again from the file, which reads whole "
                                       "(whether it changed since it was written cannot be told)")
                del findings[path]
            else:
                f.action = f"the file does not read either ({problem}): {f.action}"
            continue
        if not f.derived:
            continue
        if f.kind == "features":
            keys = _keys(path)
            months = features.setdefault(keys["version"], [])
            if months is not None:
                months.append((keys["exchange"], keys["month"]))
        elif f.kind == "features state":
            features[_keys(path)["version"]] = None
        elif f.kind == "labels state":
            labels = True
        elif f.kind in ("record", "dashboard"):
            unlink(path)
            result.repaired.append(f"{path}: deleted ({f.holds}); " + (
                "the next `retrain run` or `retrain train` rebuilds it" if f.kind == "record" else
                "the next `retrain run`, `predict` or `monitor` writes it again"))
            del findings[path]
    copies = [p for p, f in findings.items() if f.kind == "active model copy"]
    if copies:
        try:
            result.repaired.extend(_reactivate(registry, copies))
        except RetrainError as exc:  # registry.json or the run folder unreadable too
            for p in copies:
                findings[p].action = f"--repair could not copy it again ({exc.message}); {findings[p].action}"
        for p in copies:
            if checksums.check(p)[0] == "ok":
                del findings[p]
    if features or labels:
        try:
            done = rebuild_derived(store, features, labels)
        except RetrainError as exc:
            fix = f" ({exc.hint})" if exc.hint else ""
            for f in findings.values():
                if f.kind in ("features", "features state", "labels state"):
                    f.action = (f"--repair could not rebuild it, and left it as it was: {exc.message}. Once that is "
                                f"fixed{fix}, `retrain verify --repair` rebuilds it")
            return
        result.repaired.extend(done)
        for p in [p for p, f in findings.items() if f.kind in ("features", "features state", "labels state")]:
            if not p.exists() or checksums.check(p)[0] == "ok":
                del findings[p]


def _keys(path: Path) -> dict[str, str]:
    return dict(part.split("=", 1) for part in path.parts if "=" in part)


def _reactivate(registry: Registry, copies: list[Path]) -> list[str]:
    """Copy the active models whose copies are among ``copies`` again from their run folders."""
    done = []
    state = registry.state()
    for version, scopes in state["active"].items():
        for scope, run_id in scopes.items():
            paths = registry.active_paths(version, scope)
            if not any(p in copies for p in paths):
                continue
            loaded = registry.load_run(run_id, version=version, scope=scope)
            registry._activate(loaded)
            done.append(f"{paths[0].name} and {paths[1].name}: copied again from run {run_id}")
    return done


def rebuild_derived(store: Store, features: dict[str, list[tuple[str, str]] | None] | None = None,
                    labels: bool = False) -> list[str]:
    """Rebuild derived files of the store from the bars: per feature version, the given
    (exchange, month) files, or (None) the whole version with its state; and the label
    horizon. The bars and symbols are verified first; then the corrupted files are set aside
    (a rebuild may read what it replaces) and built again. When the rebuild fails, the files
    set aside are put back as they were, and the error is raised.
    The one place that calls the steps for a repair. Returns what was done, in words."""
    with store.lock("retrain verify --repair"):
        SetAside.put_back(store)  # a repair killed part-way: its files first
        with SetAside.around(store) as aside:
            return _rebuild(store, aside, features or {}, labels)


def _rebuild(store: Store, aside: SetAside, features: dict[str, list[tuple[str, str]] | None],
             labels: bool) -> list[str]:
    from retrain import steps
    from retrain.calendar import AsOf

    done = []
    # What the rebuild reads must be sound before anything is moved (else CorruptFile, nothing touched).
    store.verify_files(store.bar_files() + ([store.symbols_path] if store.symbols_path.exists() else []))
    for version, months in features.items():
        state = None
        if months is not None:
            try:
                state = store.read_state("features", version)
            except CorruptFile:
                months = None  # the state too: the whole version
        if months is None:
            exchanges = sorted({p.parent.parent.name.split("=", 1)[1] for p in store.table_files("features", version)}
                               & set(store.exchanges()))
            aside.move(store.table_dir("features", version) / STATE_FILE)
            for path in store.table_files("features", version):
                if checksums.check(path)[0] != "ok":
                    aside.move(path)
            steps.features(store, version, exchanges, full_rebuild=True)
            done.append(f"features {version}: rebuilt from the bars ({', '.join(exchanges) or 'no exchange'}), "
                        "with its build state")
            continue
        for exchange, month in sorted(set(months)):
            aside.move(store.table_dir("features", version) / f"exchange={exchange}" / f"month={month}" / PARTITION_FILE)
            first, last = _month_span(month)
            covered = state.get(exchange, {})
            if covered.get("first_trade_date"):
                first = max(first, dt.date.fromisoformat(covered["first_trade_date"]))
            if covered.get("last_trade_date"):
                last = min(last, dt.date.fromisoformat(covered["last_trade_date"]))
            if first <= last:
                steps.features(store, version, [exchange], start=first, end=last)
            done.append(f"features {version} of {exchange} for {month}: rebuilt from the bars")
    if labels:
        # Each exchange's horizon again as of its last bar (or its last complete session, if
        # earlier): the labels view is the same, as no session after the last bar has a label.
        aside.move(store.table_dir("labels") / STATE_FILE)
        built = {p.parent.parent.name.split("=", 1)[1] for v in store.table_versions("features")
                 for p in store.table_files("features", v)}  # the exchanges the steps have labelled
        for exchange in [e for e in store.exchanges() if e in built] or store.exchanges():
            last_bar = store.date_span(exchange)[1]
            complete = AsOf(None).last_complete_session(exchange)
            steps.labels(store, [exchange], AsOf(min(last_bar, complete) if complete else last_bar))
        done.append("label horizon: recorded again from the bars (each exchange's last complete session with bars)")
    return done


class SetAside:
    """Files a repair moves out of the readers' way, each with its checksum file, into the
    store's hidden ``.repair`` folder (same relative path): put back if the repair fails, removed
    once it succeeds. The moves are renames, made durable (fsync) before the rebuild writes."""

    FOLDER = ".repair"

    def __init__(self, store: Store):
        self.store = store
        self.root = store.root / self.FOLDER
        self.moved: list[Path] = []

    @classmethod
    @contextlib.contextmanager
    def around(cls, store: Store) -> Iterator[SetAside]:
        """A SetAside for a rebuild: put back if the block raises, else removed."""
        aside = cls(store)
        try:
            yield aside
        except BaseException:
            aside.restore()
            raise
        aside.discard()

    def move(self, path: Path) -> None:
        if not path.exists():
            return
        target = self.root / path.relative_to(self.store.root)
        with machine_faults(path, action="setting aside"):
            target.parent.mkdir(parents=True, exist_ok=True)
            with checksums.folder_locks([path.parent]):
                os.replace(path, target)
                side = checksums.sidecar(path)
                if side.exists():
                    os.replace(side, checksums.sidecar(target))
                checksums.forget(path)
                fsync_dir(target.parent)
                fsync_dir(path.parent)
        self.moved.append(path)

    def restore(self) -> None:
        """Put every file moved back where it was (unless something was written there since)."""
        for path in reversed(self.moved):
            _put_back(self.root / path.relative_to(self.store.root), path)
        self.moved.clear()
        self.discard()

    def discard(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)

    @classmethod
    def put_back(cls, store: Store) -> int:
        """Put back what a repair killed part-way left set aside (a file rebuilt since at its
        place stays: the set-aside copy goes). Returns how many files went back. Call with the
        store's lock held."""
        root = store.root / cls.FOLDER
        if not root.is_dir():
            return 0
        back = 0
        for folder, _, names in os.walk(root):
            for name in names:
                held = Path(folder) / name
                if checksums.is_sidecar(held) or name.startswith(checksums.TMP_PREFIX):
                    continue
                back += _put_back(held, store.root / held.relative_to(root))
        shutil.rmtree(root, ignore_errors=True)
        return back


def _put_back(held: Path, path: Path) -> int:
    if not held.exists() or path.exists():
        return 0
    path.parent.mkdir(parents=True, exist_ok=True)
    with checksums.folder_locks([path.parent]):
        side = checksums.sidecar(held)
        if side.exists():
            os.replace(side, checksums.sidecar(path))
        os.replace(held, path)
        checksums.forget(path)
        fsync_dir(path.parent)
    return 1


def _month_span(month: str) -> tuple[dt.date, dt.date]:
    first = dt.date.fromisoformat(f"{month}-01")
    nxt = dt.date(first.year + first.month // 12, first.month % 12 + 1, 1)
    return first, nxt - dt.timedelta(days=1)


# --------------------------------------------------------------------- healing
def healing(store: Store, call: Callable[[], T]) -> T:
    """``call()``; when it meets a corrupted derived file of the store (feature rows, the
    features' build state, the label horizon), that file is rebuilt from the bars with a
    warning, and ``call()`` runs again. Anything else (bars above all) stops it."""
    seen: set[Path] = set()
    while True:
        try:
            return call()
        except CorruptFile as exc:
            path = exc.path
            if not exc.derived or path in seen or len(seen) >= HEALING_ROUNDS or not _in(store.root, path):
                raise
            seen.add(path)
            kind = exc.holds.kind
            if kind not in ("features", "features state", "labels state"):
                raise
            report.echo(report.warn(f"{path} is corrupted ({exc.detail}); it holds {exc.holds.what}: rebuilding it "
                                    "from the bars, then going on"))
            keys = _keys(path)
            if kind == "features":
                done = rebuild_derived(store, {keys["version"]: [(keys["exchange"], keys["month"])]})
            elif kind == "features state":
                done = rebuild_derived(store, {keys["version"]: None})
            else:
                done = rebuild_derived(store, labels=True)
            for text in done:
                report.echo(report.ok(f"Repaired: {text}"))


def _in(root: Path, path: Path) -> bool:
    try:
        Path(path).absolute().relative_to(Path(root).absolute())
        return True
    except ValueError:
        return False
