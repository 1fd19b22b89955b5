"""Errors meant for people: what is wrong, where, and what to do next."""

from __future__ import annotations

import errno
import os
from dataclasses import dataclass
from pathlib import Path


class RetrainError(Exception):
    """A problem with input, configuration or store state that the user can fix.

    The CLI prints ``message`` and ``hint`` (what to do next) and exits with ``exit_code``;
    it never shows a traceback for these.
    """

    exit_code = 1

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message}\n  -> {self.hint}"


class LockBusy(RetrainError):
    """Another retrain process holds the store lock."""

    exit_code = 3


class StorageError(RetrainError):
    """The machine refused to store something: disk full, quota, read-only or unwritable store,
    a failing disk. Not a bug and not bad input: the message says where and what to do."""

    exit_code = 4


@dataclass(frozen=True)
class Holds:
    """What a file of the store or the registry holds, for messages: its kind ("bars",
    "features", ...), in words what is in it (exchange, month, version, run), whether retrain can
    rebuild it from the bars (``derived``), and what to do when it is corrupted."""

    kind: str
    what: str
    derived: bool
    action: str


class CorruptFile(RetrainError):
    """A file does not match the checksum recorded when it was written (a failing disk, a bad
    copy, a sync tool, an edit by hand), or its checksum file is unreadable. Never read: the
    message names the file and what it holds, the hint how to recover."""

    def __init__(self, path: str | os.PathLike, holds: Holds, detail: str, checksum_file: bool = False):
        self.path = Path(path)
        self.holds = holds
        self.detail = detail
        self.checksum_file = checksum_file
        super().__init__(f"{self.path} is corrupted: {detail}. It holds {holds.what}", hint=holds.action)

    @property
    def derived(self) -> bool:
        return self.holds.derived


_CAUSES = {
    errno.ENOSPC: "no space left on the device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EROFS: "read-only file system",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.EIO: "input/output error",
}
# How Polars (Rust) and DuckDB (C++) spell the same faults inside their own exception types.
_SPELLINGS = [
    ("No space left on device", errno.ENOSPC), ("os error 28", errno.ENOSPC),
    ("Disk quota exceeded", errno.EDQUOT), ("os error 122", errno.EDQUOT),
    ("Read-only file system", errno.EROFS), ("os error 30", errno.EROFS),
    ("Permission denied", errno.EACCES), ("os error 13", errno.EACCES),
    ("Input/output error", errno.EIO), ("os error 5", errno.EIO),
]
KEPT = ("Nothing was left half-written: every file is replaced whole or not at all, so the store holds "
        "what was complete before this point and the active model is unchanged.")


def storage_fault(exc: BaseException, path: str | os.PathLike | None = None, action: str = "writing",
                  kept: str = KEPT) -> StorageError | None:
    """A StorageError for ``exc`` when it is a fault of the machine (by errno, or by the text
    Polars and DuckDB give it), else None. ``path``: the file being written (default: the
    one the OSError names)."""
    if isinstance(exc, StorageError):
        return exc
    code = exc.errno if isinstance(exc, OSError) else None
    if code not in _CAUSES:
        text = str(exc)
        code = next((c for spelling, c in _SPELLINGS if spelling in text), None)
    if code not in _CAUSES:
        return None
    where = path or getattr(exc, "filename", None)
    folder = os.path.dirname(os.path.abspath(where)) if where else "the store"
    if code in (errno.ENOSPC, errno.EDQUOT):
        todo = (f"Free space on the disk that holds {folder} (`df -h {folder}`), then rerun the same command: "
                "it continues from there and ends as an undisturbed run would.")
    elif code == errno.EIO:
        todo = f"The disk under {folder} reported an error: check it (`dmesg`), then rerun the same command."
    else:
        todo = (f"Make {folder} writable for this user (mount options, permissions), or point --data-dir / "
                "--artifacts-dir elsewhere, then rerun. Read-only commands (status, query, models list) "
                "work on a read-only store.")
    return StorageError(f"{_CAUSES[code]} while {action} {where or 'the store'}", hint=f"{kept} {todo}")
