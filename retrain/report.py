"""Console rendering: thousands separators, marks, tables. Plain when stdout is not a terminal
(cron logs): no colour codes, no carriage returns.

Everything the steps show goes through ``echo``: to stdout by default, or, inside
``quietly()``, to the ``retrain`` logger (or nowhere), so ``retrain.run(quiet=True)`` prints
nothing under Airflow, Celery or a script."""

from __future__ import annotations

import contextlib
import logging
import re
import sys
from collections.abc import Callable, Iterator, Sequence

RULE = "=" * 80
LOG = logging.getLogger("retrain")
# Process-wide, not a context variable: the steps report progress from their worker threads too.
_SINK: list[Callable[[str], None]] = []
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def echo(text: str = "") -> None:
    """Show one line (or block) of a step's output: stdout, or the sink of ``quietly``."""
    if not _SINK:
        import click

        click.echo(text)
    else:
        _SINK[-1](text)


@contextlib.contextmanager
def quietly(log: bool = True) -> Iterator[None]:
    """Inside, ``echo`` and progress lines go to the ``retrain`` logger at INFO, one record per
    non-empty line without colour codes (``log=False``: nowhere)."""

    def to_log(text: str) -> None:
        for line in _ANSI.sub("", text).splitlines():
            if line.strip():
                LOG.info(line)

    _SINK.append(to_log if log else (lambda text: None))
    try:
        yield
    finally:
        _SINK.pop()


def is_tty(stream=None) -> bool:
    stream = stream or sys.stdout
    return bool(getattr(stream, "isatty", lambda: False)())


def n(value: float) -> str:
    """Thousands separators: 22729 -> '22,729'."""
    return f"{value:,}" if isinstance(value, int) else f"{value:,.2f}"


def pct(value: float, digits: int = 1) -> str:
    return f"{100.0 * value:.{digits}f}%"


def _mark(symbol: str, colour: str, text: str) -> str:
    # Colour only on a terminal: cron logs and pipes get the plain mark.
    return f"\033[{colour}m{symbol}\033[0m {text}" if is_tty() else f"{symbol} {text}"


def ok(text: str) -> str:
    return _mark("✓", "32", text)


def warn(text: str) -> str:
    return _mark("⚠", "33", text)


def fail(text: str) -> str:
    return _mark("✗", "31", text)


def header(title: str) -> str:
    return f"\n{RULE}\n{title}\n{RULE}"


def _cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def table(columns: Sequence[str], rows: Sequence[Sequence], numeric: Sequence[bool] | None = None) -> str:
    """A plain aligned text table; numeric columns right-aligned."""
    cells = [[_cell(v) for v in row] for row in rows]
    if numeric is None:
        numeric = [
            all(isinstance(r[i], (int, float)) or r[i] is None for r in rows) and bool(rows)
            for i in range(len(columns))
        ]
    widths = [max([len(str(c))] + [len(r[i]) for r in cells]) for i, c in enumerate(columns)]

    def fmt(row: Sequence[str]) -> str:
        return "  ".join(v.rjust(w) if num else v.ljust(w) for v, w, num in zip(row, widths, numeric)).rstrip()

    lines = [fmt([str(c) for c in columns]), "  ".join("-" * w for w in widths)]
    lines.extend(fmt(r) for r in cells)
    return "\n".join(lines)


class Progress:
    """Sessions done out of the total, rows written, rate and ETA. A live line on a terminal;
    plain lines (no carriage returns, no colour) when stdout is a log file."""

    def __init__(self, total: int, stream=None, clock=None, started: float | None = None):
        import time

        self.total = max(total, 1)
        self.stream = stream or sys.stdout
        self.tty = is_tty(self.stream)
        self._clock = clock or time.perf_counter
        self.started = self._clock() if started is None else started
        self._open = False

    def update(self, done: int, rows: int, label: str) -> str:
        elapsed = max(self._clock() - self.started, 1e-9)
        rate = done / elapsed
        eta = (self.total - done) / rate if rate > 0 else 0.0
        line = (f"[{done:,}/{self.total:,}] {label} | Rows: {rows:,} | Progress: {100.0 * done / self.total:.1f}% | "
                f"Speed: {rate * 60:,.0f} sessions/min | ETA: {eta:.0f}s")
        if _SINK:
            echo(line)
            return line
        if self.tty:
            self.stream.write("\r\033[K" + line)
            self._open = True
        else:
            self.stream.write(line + "\n")
        self.stream.flush()
        return line

    def close(self) -> None:
        if self._open:
            self.stream.write("\n")
            self.stream.flush()
            self._open = False
