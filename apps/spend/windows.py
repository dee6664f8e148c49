"""Budget windows, identified by id, so correctness never depends on a reset job running on time.

A window is a half-open interval [start, end) in the tenant's time zone:
``1h`` and ``1d`` align to the hour/day, ``7d`` to Monday 00:00, ``30d`` to 30-day blocks counted
from 2000-01-01 (a fixed epoch), ``1mo`` to the calendar month. Day-based windows follow the wall
clock, so a day across a DST change is 23 or 25 hours long. Its id (``"1d:2026-11-25"``) names it in
Redis counters and in the database; a request always charges the window ``now`` falls in.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo

DURATIONS = ("1h", "1d", "7d", "30d", "1mo")
_EPOCH = date(2000, 1, 1)


@dataclass(frozen=True, slots=True)
class Window:
    id: str
    start: datetime
    end: datetime

    def seconds_left(self, now: datetime) -> float:
        return max(0.0, (self.end - now).total_seconds())


@lru_cache(maxsize=256)
def _zone(name: str) -> ZoneInfo:
    return ZoneInfo(name or "UTC")


def _local_midnight(day: date, tz: ZoneInfo) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=tz)


def window_for(duration: str, now: datetime, time_zone: str = "UTC") -> Window:
    """The window of ``duration`` that the aware datetime ``now`` falls in."""
    if duration not in DURATIONS:
        raise ValueError(f"unknown budget duration {duration!r}")
    tz = _zone(time_zone)
    local = now.astimezone(tz)
    if duration == "1h":
        # Hours are counted in UTC so the DST-repeated hour is still two distinct windows.
        utc = now.astimezone(ZoneInfo("UTC")).replace(minute=0, second=0, microsecond=0)
        return Window(f"1h:{utc:%Y-%m-%dT%H}Z", utc, utc + timedelta(hours=1))
    if duration == "1d":
        day = local.date()
        return Window(f"1d:{day}", _local_midnight(day, tz), _local_midnight(day + timedelta(days=1), tz))
    if duration == "7d":
        monday = local.date() - timedelta(days=local.weekday())
        return Window(f"7d:{monday}", _local_midnight(monday, tz), _local_midnight(monday + timedelta(days=7), tz))
    if duration == "30d":
        block = (local.date() - _EPOCH).days // 30
        first = _EPOCH + timedelta(days=block * 30)
        return Window(f"30d:{first}", _local_midnight(first, tz), _local_midnight(first + timedelta(days=30), tz))
    first = local.date().replace(day=1)
    following = (first + timedelta(days=32)).replace(day=1)
    return Window(f"1mo:{first:%Y-%m}", _local_midnight(first, tz), _local_midnight(following, tz))


@lru_cache(maxsize=1)
def lifetime_window() -> Window:
    """Budgets without a duration never reset: one window forever (immutable, so built once)."""
    start = datetime(2000, 1, 1, tzinfo=ZoneInfo("UTC"))
    return Window("all", start, datetime(9999, 12, 31, tzinfo=ZoneInfo("UTC")))
