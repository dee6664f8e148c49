"""Budget windows by id: month ends, leap years, DST changes, and the tenant's time zone."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from apps.spend.windows import lifetime_window, window_for

BERLIN = "Europe/Berlin"


def elapsed(window) -> timedelta:
    """Real elapsed time (subtracting two datetimes of one zone gives wall-clock time in Python)."""
    return window.end.astimezone(UTC) - window.start.astimezone(UTC)


NEW_YORK = "America/New_York"


def test_calendar_month_ends_exactly_at_local_midnight():
    last_moment = datetime(2026, 1, 31, 22, 59, 59, 999999, tzinfo=UTC)  # 23:59:59.999999 in Berlin
    first_moment = last_moment + timedelta(microseconds=1)  # 00:00 on Feb 1 in Berlin
    jan, feb = window_for("1mo", last_moment, BERLIN), window_for("1mo", first_moment, BERLIN)
    assert (jan.id, feb.id) == ("1mo:2026-01", "1mo:2026-02")
    assert jan.end == feb.start == datetime(2026, 2, 1, tzinfo=ZoneInfo(BERLIN))
    assert jan.seconds_left(last_moment) == pytest.approx(1e-6)


def test_february_in_leap_and_common_years():
    leap = window_for("1mo", datetime(2028, 2, 29, 12, tzinfo=UTC))
    common = window_for("1mo", datetime(2027, 2, 28, 12, tzinfo=UTC))
    assert (elapsed(leap), elapsed(common)) == (timedelta(days=29), timedelta(days=28))


def test_december_rolls_into_the_next_year():
    window = window_for("1mo", datetime(2026, 12, 31, 23, 30, tzinfo=UTC))
    assert (window.id, window.end) == ("1mo:2026-12", datetime(2027, 1, 1, tzinfo=UTC))


def test_the_same_instant_is_in_different_months_per_time_zone():
    instant = datetime(2026, 3, 1, 3, 0, tzinfo=UTC)
    assert window_for("1mo", instant, "UTC").id == "1mo:2026-03"
    assert window_for("1mo", instant, NEW_YORK).id == "1mo:2026-02"


def test_spring_forward_day_is_23_hours_and_fall_back_day_25():
    spring = window_for("1d", datetime(2026, 3, 29, 12, tzinfo=UTC), BERLIN)
    autumn = window_for("1d", datetime(2026, 10, 25, 12, tzinfo=UTC), BERLIN)
    assert spring.id == "1d:2026-03-29" and elapsed(spring) == timedelta(hours=23)
    assert autumn.id == "1d:2026-10-25" and elapsed(autumn) == timedelta(hours=25)
    assert spring.seconds_left(spring.start.astimezone(UTC)) == 23 * 3600


def test_a_month_with_a_dst_change_still_ends_at_local_midnight():
    march = window_for("1mo", datetime(2026, 3, 15, tzinfo=UTC), BERLIN)
    assert march.end.astimezone(ZoneInfo(BERLIN)).hour == 0
    assert elapsed(march) == timedelta(days=31) - timedelta(hours=1)


def test_the_repeated_hour_at_fall_back_is_two_hourly_windows():
    # 2026-11-01 01:30 happens twice in New York: 05:30 UTC (EDT) and 06:30 UTC (EST).
    first = window_for("1h", datetime(2026, 11, 1, 5, 30, tzinfo=UTC), NEW_YORK)
    second = window_for("1h", datetime(2026, 11, 1, 6, 30, tzinfo=UTC), NEW_YORK)
    assert first.id != second.id and first.end == second.start


def test_consecutive_windows_tile_time_without_gaps_across_dst():
    for duration in ("1h", "1d", "7d", "30d", "1mo"):
        now = datetime(2026, 10, 20, tzinfo=UTC)
        window = window_for(duration, now, BERLIN)
        for _ in range(6):
            following = window_for(duration, window.end, BERLIN)
            assert following.start == window.end and following.id != window.id
            window = following


def test_week_starts_monday_and_unknown_durations_are_refused():
    assert window_for("7d", datetime(2026, 11, 25, tzinfo=UTC)).id == "7d:2026-11-23"
    with pytest.raises(ValueError):
        window_for("2w", datetime(2026, 11, 25, tzinfo=UTC))
    assert lifetime_window().id == "all"


@pytest.mark.parametrize("zone", ["Europe/Berlin", "Asia/Kolkata", "Asia/Kathmandu", "America/St_Johns", "UTC"])
def test_ingestion_slot_cache_gives_the_exact_window_around_boundaries(zone):
    """Ingestion reuses one window per 15-minute UTC slot; it must equal window_for at every minute."""
    from apps.spend.scopes import window_of

    starts = [
        datetime(2026, 3, 29, 0, 0, tzinfo=UTC),  # Berlin spring forward
        datetime(2026, 10, 24, 23, 0, tzinfo=UTC),  # Berlin fall back
        datetime(2026, 1, 31, 17, 0, tzinfo=UTC),  # month end east of UTC
        datetime(2026, 3, 8, 2, 0, tzinfo=UTC),  # America DST
    ]
    for start in starts:
        for minute in range(0, 12 * 60, 7):
            at = start + timedelta(minutes=minute, seconds=59)
            for duration in ("1h", "1d", "7d", "30d", "1mo"):
                assert window_of(duration, at, zone) == window_for(duration, at, zone), (duration, at, zone)
