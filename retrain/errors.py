"""Errors meant for people: what is wrong, where, and what to do next."""

from __future__ import annotations


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
