"""German display text: labels of the enumerations, dates on Berlin time, street keys.

The registry's data is language-neutral (enum values, UTC); people in the city read German,
so findings, the daily overview and public feeds use these labels.
"""

from __future__ import annotations

import re
import unicodedata
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from cityops.roadworks.model import Category, Measure, Period, Sector, Status

__all__ = [
    "BERLIN",
    "CATEGORY_DE",
    "MEASURE_DE",
    "SECTOR_DE",
    "STATUS_DE",
    "WEEKDAY_DE",
    "fmt_date",
    "fmt_datetime",
    "fmt_period",
    "street_key",
]

#: The time zone every displayed time is in.
BERLIN = ZoneInfo("Europe/Berlin")

SECTOR_DE: dict[Sector, str] = {
    Sector.ELECTRICITY: "Strom",
    Sector.GAS: "Gas",
    Sector.DISTRICT_HEATING: "Fernwärme",
    Sector.WATER: "Wasser",
    Sector.TELECOM: "Telekommunikation",
    Sector.SEWER: "Abwasser",
    Sector.ROAD: "Straßenbau",
    Sector.OTHER: "Sonstiges",
}

CATEGORY_DE: dict[Category, str] = {
    Category.MINOR: "Kleinbaustelle",
    Category.STANDARD: "Baustelle",
    Category.MAJOR: "Großbaustelle",
    Category.EMERGENCY: "Notmaßnahme",
}

STATUS_DE: dict[Status, str] = {
    Status.DRAFT: "Entwurf",
    Status.SUBMITTED: "beantragt",
    Status.IN_CONSULTATION: "in Anhörung",
    Status.MODIFICATION_REQUESTED: "Nachbesserung angefordert",
    Status.APPROVED: "genehmigt",
    Status.REFUSED: "abgelehnt",
    Status.SCHEDULED: "terminiert",
    Status.IN_PROGRESS: "in Arbeit",
    Status.COMPLETED: "abgeschlossen",
    Status.CANCELLED: "zurückgezogen",
    Status.REVOKED: "widerrufen",
}

MEASURE_DE: dict[Measure, str] = {
    Measure.ROAD_CLOSURE: "Vollsperrung",
    Measure.LANE_CLOSURE: "Fahrstreifensperrung",
    Measure.ALTERNATING_ONE_WAY: "wechselseitiger Einbahnverkehr",
    Measure.TEMPORARY_SIGNALS: "Baustellenampel",
    Measure.SIDEWALK_CLOSURE: "Gehwegsperrung",
    Measure.CYCLE_LANE_CLOSURE: "Radwegsperrung",
    Measure.PARKING_SUSPENDED: "Halteverbot",
}

WEEKDAY_DE = ("Mo", "Di", "Mi", "Do", "Fr", "Sa", "So")


def fmt_date(value: datetime | date, *, weekday: bool = False) -> str:
    """`03.03.2025` (Berlin date for datetimes), optionally `Mo, 03.03.2025`."""
    day = value.astimezone(BERLIN).date() if isinstance(value, datetime) else value
    text = f"{day.day:02d}.{day.month:02d}.{day.year}"
    return f"{WEEKDAY_DE[day.weekday()]}, {text}" if weekday else text


def fmt_datetime(value: datetime) -> str:
    """`03.03.2025, 07:00 Uhr` on Berlin time."""
    local = value.astimezone(BERLIN)
    return f"{fmt_date(local)}, {local.hour:02d}:{local.minute:02d} Uhr"


def fmt_period(period: Period) -> str:
    """`03.03.2025 bis 14.03.2025` (Berlin dates; the end is the last day worked)."""
    first = period.start.astimezone(BERLIN).date()
    end_local = period.end.astimezone(BERLIN)
    last = end_local.date()
    if end_local.time() == time(0) and last > first:
        last -= timedelta(days=1)  # ends at midnight: the day before was the last one
    start = fmt_date(first)
    end = fmt_date(last)
    return start if start == end else f"{start} bis {end}"


_STRASSE_RE = re.compile(r"(str\.|strasse|straße)(?=$|\s|-)")


def street_key(name: str) -> str:
    """A street name folded for comparison: case, spacing, hyphens, `Str.`/`Straße`.

    `Frankfurter Str.`, `frankfurter strasse` and `Frankfurter Straße` share one key.
    """
    text = unicodedata.normalize("NFC", name).strip().casefold()
    text = text.replace("ß", "ss")
    text = _STRASSE_RE.sub("strasse", text)
    text = re.sub(r"[\s\-]+", " ", text)
    return text
