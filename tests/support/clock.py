"""The test suite's one "now".

Every test that needs the current time takes it from here: module-level corpora import
`NOW`, tests ask for the `now` fixture (the same value), and data that a running service
must find fresh to the minute is stamped with `now_utc()`. It is read once, when
the suite starts, from the machine's clock, and every corpus is built relative to it, so the
suite means the same thing on any day at any hour.

To run the whole suite at another date and time, shift the machine's clock for the test run
and the database together: `make test-at AT=2027-03-28T02:30:00+01:00` (or `AT=+400d`), see
docs/testing.md. The re-planner's tests add CITYOPS_TEST_NOW to pin their own wall-clock
hour (tests/routing/replan_support.py).
"""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

__all__ = ["BERLIN", "NOW", "TODAY_BERLIN", "now_utc"]

BERLIN = ZoneInfo("Europe/Berlin")


def now_utc() -> datetime:
    """The wall clock now, whole seconds, UTC: for a test whose data must be fresh when a
    service under test judges it (last seen, token lifetimes), not just on the same day."""
    return datetime.now(UTC).replace(microsecond=0)


#: The suite's "now", taken once when the suite starts: what corpora are built from.
NOW: datetime = now_utc()

#: The calendar day in Europe/Berlin at NOW: the day plans and overviews are made for.
TODAY_BERLIN = NOW.astimezone(BERLIN).date()
