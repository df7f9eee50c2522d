"""The calendar policies are written in: Moscow's. An OSAGO policy starts on a Russian calendar
date, so "today" and "tomorrow" are Moscow's whatever the server's time zone, and every service
that fills in a start date or judges one takes them from here.
"""

from __future__ import annotations

from datetime import date, timedelta, timezone

from osago_common.clock import Clock

# Moscow time has had no daylight saving since 2014.
MOSCOW = timezone(timedelta(hours=3), "MSK")


def moscow_today(clock: Clock) -> date:
    """The date in Moscow at the clock's present moment."""
    return clock.now().astimezone(MOSCOW).date()


def default_policy_start(today: date) -> date:
    """The start date of an application that gives none: the day after `today` (Moscow's)."""
    return today + timedelta(days=1)
