"""Real exchange calendars, old history, local "today", session completeness and --as-of."""

from __future__ import annotations

import datetime as dt

import pytest

from retrain import calendar as cal
from retrain.calendar import AsOf
from retrain.errors import RetrainError

D = dt.date


def test_holidays_not_only_weekends():
    assert not cal.is_session("TSE", D(2024, 7, 1))  # Canada Day (Monday)
    assert cal.is_session("NYSE", D(2024, 7, 1))
    assert not cal.is_session("NYSE", D(2024, 11, 28))  # Thanksgiving
    assert cal.is_session("TSE", D(2024, 11, 28))
    assert not cal.is_session("NASDAQ", D(2012, 10, 29))  # Hurricane Sandy closure
    assert not cal.is_session("NYSE", D(2024, 1, 6))  # Saturday


def test_calendars_cover_old_history():
    for ex in cal.EXCHANGES:
        first, last = cal.coverage(ex)
        assert first <= D(1985, 1, 2) and last > D.today()
    assert cal.is_session("NYSE", D(1987, 10, 19)) and cal.is_session("NYSE", D(1995, 3, 15))


def test_next_and_previous_session():
    assert cal.next_session("NYSE", D(2024, 11, 27)) == D(2024, 11, 29)
    assert cal.previous_session("TSE", D(2024, 7, 2)) == D(2024, 6, 28)
    assert cal.sessions("NYSE", D(2024, 12, 23), D(2024, 12, 27)) == [D(2024, 12, 23), D(2024, 12, 24), D(2024, 12, 26), D(2024, 12, 27)]


def test_as_of_date_is_end_of_that_day():
    a = AsOf.parse("2024-11-27")
    assert a.today("NYSE") == D(2024, 11, 27)
    assert a.last_complete_session("NYSE") == D(2024, 11, 27)


def test_as_of_time_is_exchange_local_and_session_complete_only_after_close():
    before_close = AsOf.parse("2024-11-27T15:59")
    after_close = AsOf.parse("2024-11-27T16:01")
    assert before_close.last_complete_session("NYSE") == D(2024, 11, 26)
    assert after_close.last_complete_session("NYSE") == D(2024, 11, 27)
    # the half day after Thanksgiving closes at 13:00
    assert AsOf.parse("2024-11-29T13:30").last_complete_session("NYSE") == D(2024, 11, 29)
    # 15:00 in Toronto local time is before the TSE close
    assert AsOf.parse("2024-11-27T15:00").last_complete_session("TSE") == D(2024, 11, 26)


def test_today_is_the_exchange_local_date():
    # 02:00 UTC on Nov 28 is still Nov 27 in New York
    a = AsOf(dt.datetime(2024, 11, 28, 2, 0, tzinfo=dt.UTC))
    assert a.today("NYSE") == D(2024, 11, 27)
    assert a.last_complete_session("NYSE") == D(2024, 11, 27)


def test_bad_inputs():
    with pytest.raises(RetrainError, match="unknown exchange"):
        cal.normalize_exchange("LSE")
    assert cal.normalize_exchange("tsx") == "TSE" and cal.normalize_exchange("xnas") == "NASDAQ"
    with pytest.raises(RetrainError, match="--as-of"):
        AsOf.parse("next tuesday")


def test_cached_calendar_matches_exchange_calendars(tmp_path, monkeypatch):
    import numpy as np

    monkeypatch.setenv("RETRAIN_CACHE_DIR", str(tmp_path))
    cal._arrays.cache_clear()
    try:
        built = cal._arrays("TSE")  # built from exchange_calendars, then written to the cache
        assert list(tmp_path.glob("calendar-XTSE-*.npz"))
        cal._arrays.cache_clear()
        cached = cal._arrays("TSE")
        assert np.array_equal(built[0], cached[0]) and np.array_equal(built[1], cached[1])
        fresh = cal.calendar("TSE")
        assert np.array_equal(cached[0], fresh.sessions.values.astype("datetime64[D]"))
        (next(tmp_path.glob("calendar-XTSE-*.npz"))).write_bytes(b"garbage")  # a broken cache is rebuilt
        cal._arrays.cache_clear()
        assert np.array_equal(cal._arrays("TSE")[0], built[0])
    finally:
        cal._arrays.cache_clear()
