"""File primitives of the store and the registry: atomic writes (temporary file, fsync, rename),
durable deletes, the crash-test fault points and the I/O thread pool. Every file retrain writes
goes through ``stage``/``commit`` (or ``atomic_write``), so a process killed at any instant
leaves the old or the new file, never a torn one; and each gets its checksum, recorded before
the rename so that a kill anywhere leaves a checksum that accepts the file on disk
(``checksums``)."""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import polars as pl

from retrain import checksums
from retrain.errors import KEPT, storage_fault

TMP_PREFIX = checksums.TMP_PREFIX
FAULT_ENV = "RETRAIN_FAULT"
IO_THREADS = 4


def fault_point(name: str) -> None:
    """Crash-test hook: with RETRAIN_FAULT=<name>:kill the process SIGKILLs itself here, with
    RETRAIN_FAULT=<name>:raise it raises, with RETRAIN_FAULT=<name>:enospc it fails as a full disk
    would (OSError ENOSPC). ``<name>@<n>`` fires on the n-th time the point is reached (1 = the
    first). Inert unless the variable names this point."""
    spec = os.environ.get(FAULT_ENV)
    if not spec:
        return
    point, _, action = spec.partition(":")
    point, _, nth = point.partition("@")
    if point != name:
        return
    _FAULT_HITS[name] = _FAULT_HITS.get(name, 0) + 1
    if nth and _FAULT_HITS[name] != int(nth):
        return
    if action == "raise":
        raise RuntimeError(f"injected fault at {name}")
    if action == "enospc":
        raise OSError(errno.ENOSPC, f"No space left on device (injected at {name})")
    os.kill(os.getpid(), signal.SIGKILL)


_FAULT_HITS: dict[str, int] = {}


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def machine_faults(path: Path | None, action: str = "writing", kept: str = KEPT) -> Iterator[None]:
    """Raise a fault of the machine met inside (disk full, read-only store, ...) as a
    StorageError naming ``path``; any other exception passes as it is."""
    try:
        yield
    except Exception as exc:
        fault = storage_fault(exc, path, action, kept)
        if fault is None:
            raise
        raise fault from exc


_DIGESTS: dict[Path, checksums.Digest] = {}  # staged temporary file -> its checksum, until committed


def stage(path: Path, write, checksum: bool = True) -> Path:
    """Fill a temporary file next to ``path`` with ``write(tmp_path)`` and fsync it; returns the
    temporary path (``commit`` renames it over ``path``). Its checksum is computed here, from
    the bytes written (``checksum=False``: a file outside the store, such as retrain.toml,
    that people edit by hand). A failure removes the temporary file and raises a StorageError
    for faults of the machine (disk full, read-only store)."""
    tmp = path.parent / f"{TMP_PREFIX}{path.name}.{os.getpid()}.{time.monotonic_ns()}"
    try:
        with machine_faults(path):
            path.parent.mkdir(parents=True, exist_ok=True)
            write(tmp)
            fault_point("store.write")
            fd = os.open(tmp, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
            if checksum:
                _DIGESTS[tmp] = checksums.digest(tmp)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    return tmp


def commit(staged: list[tuple[Path, Path]], between: str | None = None) -> None:
    """Rename each staged (temporary, target) pair over its target, then fsync the folders.
    Before the first rename, each target's checksum file is replaced by one that accepts both
    the staged file and the file now at the target (and the folders are fsynced), so a kill
    at any point leaves a checksum that accepts what is on disk. The folders are locked
    (``checksums.folder_locks``) from the checksums to the last rename. ``between``: a fault
    point reached after each rename."""
    fault_point("store.before_rename")
    folders = list(dict.fromkeys(path.parent for _, path in staged))
    with machine_faults(staged[0][1] if staged else None), checksums.folder_locks(folders):
        sums = [(tmp, path, _DIGESTS.pop(tmp, None)) for tmp, path in staged]
        for tmp, path, digest in sums:
            if digest is not None:
                checksums.intend(tmp, path, digest)
        if any(d is not None for *_, d in sums):
            for folder in folders:
                fsync_dir(folder)
            fault_point("store.checksums_written")
        for tmp, path, digest in sums:
            os.replace(tmp, path)
            if digest is not None:
                checksums.written(path)  # hashed from its bytes when staged: trusted as read
            if between:
                fault_point(between)
        for folder in folders:
            fsync_dir(folder)


def discard(staged: list[tuple[Path, Path]]) -> None:
    """Remove staged temporary files that will not be committed."""
    for tmp, _ in staged:
        _DIGESTS.pop(tmp, None)
        with contextlib.suppress(OSError):
            tmp.unlink()


def atomic_write(path: Path, write, checksum: bool = True) -> None:
    """Write ``path`` atomically: ``write(tmp_path)`` fills a temporary file in the same
    directory, which is fsynced and renamed over ``path`` (with its checksum, unless
    ``checksum=False``)."""
    tmp = stage(path, write, checksum)
    try:
        commit([(tmp, path)])
    except BaseException:
        discard([(tmp, path)])
        raise


# lz4: the features are high-entropy floats that zstd shrinks by ~10% only, at twice the write
# time and three times the read time.
COMPRESSION = "lz4"


def write_parquet(df: pl.DataFrame, path: Path) -> None:
    df.write_parquet(path, compression=COMPRESSION, statistics=True)


def atomic_write_parquet(df: pl.DataFrame, path: Path) -> None:
    atomic_write(path, lambda tmp: write_parquet(df, tmp))


def atomic_write_text(text: str, path: Path, checksum: bool = True) -> None:
    atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"), checksum)


def unlink(path: Path) -> None:
    """Delete a file and then its checksum (atomic; a missing file is fine) and make the
    deletion durable."""
    with machine_faults(path, action="deleting"):
        if not path.parent.is_dir():
            return
        with checksums.folder_locks([path.parent]):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
            checksums.remove(path)
            fsync_dir(path.parent)


def parallel_map(fn, items: list) -> list:
    """``[fn(x) for x in items]`` on a few threads (Parquet I/O releases the GIL), in order;
    the first exception is raised after all have finished."""
    if len(items) < 2:
        return [fn(x) for x in items]
    with ThreadPoolExecutor(max_workers=IO_THREADS) as pool:
        futures = [pool.submit(fn, x) for x in items]
        return [f.result() for f in futures]
