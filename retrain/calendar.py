"""Exchange sessions from exchange_calendars, "today" at the exchange, and --as-of.

NASDAQ, NYSE and TSE use their real calendars (XNAS, XNYS, XTSE): holidays and special
closures, not only weekends, back to 1970 so that old history validates too.

``AsOf`` is the clock of a run. Without --as-of it is now. ``--as-of 2025-10-17`` means the
end of that local day at each exchange (so that day's session is complete);
``--as-of 2025-10-17T10:30`` means that local wall-clock time at each exchange.
"""

from __future__ import annotations

import datetime as dt
import os
import warnings
from dataclasses import dataclass
from functools import cache
from importlib import metadata
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np

from retrain.errors import RetrainError

EXCHANGES: dict[str, str] = {"NASDAQ": "XNAS", "NYSE": "XNYS", "TSE": "XTSE"}
ALIASES: dict[str, str] = {"XNAS": "NASDAQ", "XNYS": "NYSE", "XTSE": "TSE", "TSX": "TSE", "TO": "TSE"}
TIMEZONES: dict[str, str] = {"NASDAQ": "America/New_York", "NYSE": "America/New_York", "TSE": "America/Toronto"}
CALENDAR_START = "1970-01-01"
CALENDAR_YEARS_AHEAD = 2
CACHE_ENV = "RETRAIN_CACHE_DIR"
CACHE_MAX_AGE_DAYS = 30


def normalize_exchange(name: str, known: list[str] | None = None, or_all: bool = False) -> str:
    """Canonical exchange code (NASDAQ, NYSE, TSE) for a user-typed name; RetrainError otherwise
    (its hint lists ``known``, else every exchange, and ALL when the option takes it: ``or_all``)."""
    code = str(name).strip().upper()
    code = ALIASES.get(code, code)
    if code not in EXCHANGES:
        listed = ", ".join(known or EXCHANGES) + (", or ALL (every exchange)" if or_all else "")
        raise RetrainError(f"unknown exchange {name!r}", hint=f"use one of: {listed}")
    return code


def calendar(exchange: str):
    """The exchange_calendars calendar of an exchange, from 1970 to two years ahead."""
    import exchange_calendars as xc
    import pandas as pd

    code = EXCHANGES[normalize_exchange(exchange)]
    end = (pd.Timestamp.today().normalize() + pd.DateOffset(years=CALENDAR_YEARS_AHEAD)).strftime("%Y-%m-%d")
    with warnings.catch_warnings():  # exchange_calendars trips a pandas deprecation warning
        warnings.simplefilter("ignore")
        try:
            return xc.get_calendar(code, start=CALENDAR_START, end=end)
        except ValueError:  # a calendar whose data starts later than 1970: use its own earliest bound
            cls = type(xc.get_calendar(code))
            return xc.get_calendar(code, start=cls.bound_min().strftime("%Y-%m-%d"), end=end)


def _cache_file(exchange: str) -> Path | None:
    root = os.environ.get(CACHE_ENV) or os.path.join(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache", "retrain")
    try:
        version = metadata.version("exchange_calendars")
    except metadata.PackageNotFoundError:  # pragma: no cover
        return None
    return Path(root) / f"calendar-{EXCHANGES[exchange]}-{version}.npz"


@cache
def _arrays(exchange: str) -> tuple[np.ndarray, np.ndarray]:
    """(sessions as datetime64[D], closes as UTC datetime64[ns]) of an exchange. Cached on disk
    for a month per exchange_calendars version, so most commands never import pandas."""
    exchange = normalize_exchange(exchange)
    path = _cache_file(exchange)
    today = np.datetime64(dt.date.today(), "D")
    if path is not None and path.exists():
        try:
            with np.load(path) as z:
                if today - z["built"][0] <= np.timedelta64(CACHE_MAX_AGE_DAYS, "D"):
                    return z["sessions"], z["closes"]
        except (OSError, ValueError, KeyError):
            pass  # unreadable cache: rebuild it
    cal = calendar(exchange)
    sessions_ = cal.sessions.values.astype("datetime64[D]")
    closes = cal.closes.dt.tz_convert("UTC").dt.tz_localize(None).to_numpy().astype("datetime64[ns]")
    if path is not None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".tmp-{path.name}.{os.getpid()}")
            with open(tmp, "wb") as fh:
                np.savez(fh, sessions=sessions_, closes=closes, built=np.array([today]))
            os.replace(tmp, path)
        except OSError:
            pass  # a read-only home is fine: the calendar is simply rebuilt next time
    return sessions_, closes


def _session_array(exchange: str) -> np.ndarray:
    return _arrays(exchange)[0]


def _close_array(exchange: str) -> np.ndarray:
    return _arrays(exchange)[1]


def _d64(day: dt.date) -> np.datetime64:
    return np.datetime64(day, "D")


def coverage(exchange: str) -> tuple[dt.date, dt.date]:
    """First and last session the loaded calendar knows."""
    arr = _session_array(exchange)
    return arr[0].astype(dt.date), arr[-1].astype(dt.date)


def sessions(exchange: str, start: dt.date | None = None, end: dt.date | None = None) -> list[dt.date]:
    """Sessions of ``exchange`` in [start, end] (inclusive), oldest first."""
    arr = _session_array(exchange)
    lo = 0 if start is None else int(np.searchsorted(arr, _d64(start), "left"))
    hi = len(arr) if end is None else int(np.searchsorted(arr, _d64(end), "right"))
    return arr[lo:hi].astype(dt.date).tolist()


def session_array(exchange: str) -> np.ndarray:
    """All sessions as datetime64[D] (read-only view; for vectorized lookups)."""
    return _session_array(exchange)


def is_session(exchange: str, day: dt.date) -> bool:
    arr = _session_array(exchange)
    i = int(np.searchsorted(arr, _d64(day)))
    return i < len(arr) and arr[i] == _d64(day)


def next_session(exchange: str, day: dt.date) -> dt.date:
    """First session strictly after ``day``."""
    arr = _session_array(exchange)
    i = int(np.searchsorted(arr, _d64(day), "right"))
    if i >= len(arr):
        raise RetrainError(f"{exchange}: no session after {day} in the calendar (it ends {arr[-1]})")
    return arr[i].astype(dt.date)


def previous_session(exchange: str, day: dt.date) -> dt.date | None:
    """Last session strictly before ``day`` (None before the calendar starts)."""
    arr = _session_array(exchange)
    i = int(np.searchsorted(arr, _d64(day), "left"))
    return None if i == 0 else arr[i - 1].astype(dt.date)


def parse_date(value: str | dt.date, option: str = "date") -> dt.date:
    """Parse a YYYY-MM-DD option value, with an error that names the option."""
    if isinstance(value, dt.date):
        return value
    try:
        return dt.date.fromisoformat(str(value).strip())
    except ValueError:
        raise RetrainError(f"{option}: {value!r} is not a date", hint="write dates as YYYY-MM-DD") from None


@dataclass(frozen=True)
class AsOf:
    """The moment a command runs "at". ``value`` None means now."""

    value: dt.date | dt.datetime | None = None

    @classmethod
    def parse(cls, text: str | None) -> AsOf:
        if text is None or str(text).strip() == "":
            return cls(None)
        raw = str(text).strip()
        try:
            clock = cls(dt.date.fromisoformat(raw)) if len(raw) <= 10 else cls(dt.datetime.fromisoformat(raw))
        except ValueError:
            raise RetrainError(
                f"--as-of: {raw!r} is neither a date nor a date-time",
                hint="use YYYY-MM-DD (end of that day) or YYYY-MM-DDTHH:MM (exchange local time)",
            ) from None
        # The future is refused: sessions that have not closed must never count as complete
        # (the label horizon only moves forward).
        today = max(AsOf().today(e) for e in EXCHANGES)
        late = clock.value > today if not isinstance(clock.value, dt.datetime) else \
            clock.instant("NYSE") > dt.datetime.now(dt.UTC)
        if late:
            now = dt.datetime.now(ZoneInfo(TIMEZONES["NYSE"]))
            raise RetrainError(f"--as-of {raw} is in the future (it is now {now:%Y-%m-%d %H:%M} in New York; "
                               "--as-of times are local to each exchange)",
                               hint="leave --as-of out to run as of now, or give a past date or time")
        return clock

    @property
    def is_now(self) -> bool:
        return self.value is None

    def instant(self, exchange: str) -> dt.datetime:
        """The as-of moment as an aware UTC datetime, seen from ``exchange``'s time zone."""
        tz = ZoneInfo(TIMEZONES[normalize_exchange(exchange)])
        v = self.value
        if v is None:
            return dt.datetime.now(dt.UTC)
        if isinstance(v, dt.datetime):
            ts = v.replace(tzinfo=tz) if v.tzinfo is None else v
        else:
            ts = dt.datetime.combine(v, dt.time(23, 59, 59), tzinfo=tz)
        return ts.astimezone(dt.UTC)

    def today(self, exchange: str) -> dt.date:
        """The exchange's local date at the as-of moment."""
        if isinstance(self.value, dt.date) and not isinstance(self.value, dt.datetime):
            return self.value
        return self.instant(exchange).astimezone(ZoneInfo(TIMEZONES[normalize_exchange(exchange)])).date()

    def last_complete_session(self, exchange: str) -> dt.date | None:
        """The last session whose close is at or before the as-of moment."""
        closes = _close_array(exchange)
        instant = np.datetime64(self.instant(exchange).replace(tzinfo=None), "ns")
        i = int(np.searchsorted(closes, instant, "right"))
        return None if i == 0 else _session_array(exchange)[i - 1].astype(dt.date)

    def label(self) -> str:
        return "now" if self.value is None else self.value.isoformat()
