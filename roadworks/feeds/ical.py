"""iCalendar (RFC 5545): one VEVENT per work, so a citizen can subscribe to the works of
their street (or an area) in any calendar app.

Written by hand (a few properties, no library needed): CRLF line ends, content lines
folded at 75 octets without splitting a UTF-8 character (section 3.1), TEXT values
escaped (section 3.3.11). Times are UTC (`...Z`), which needs no VTIMEZONE; calendar apps
show them in local time. UID is stable per work, SEQUENCE follows the work's version so
clients replace an event when it changes; cancelled or revoked works that are still listed
carry STATUS:CANCELLED.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime

from cityops.roadworks.feeds.common import (
    FeedContext,
    FeedQuery,
    obstructions_de,
    public_description,
)
from cityops.roadworks.labels import CATEGORY_DE, SECTOR_DE, fmt_datetime
from cityops.roadworks.model import Roadwork, Status

__all__ = ["calendar", "escape_text", "fold_line"]

_MAX_OCTETS = 75


def calendar(works: Iterable[Roadwork], ctx: FeedContext, query: FeedQuery) -> str:
    """A VCALENDAR with one VEVENT per work."""
    lines = [
        "BEGIN:VCALENDAR",
        "VERSION:2.0",
        f"PRODID:-//cityops//Baustellen {ctx.host}//DE",
        "CALSCALE:GREGORIAN",
        "METHOD:PUBLISH",
        f"X-WR-CALNAME:{escape_text(query.title_de)}",
        "X-WR-TIMEZONE:Europe/Berlin",
        "REFRESH-INTERVAL;VALUE=DURATION:PT6H",
    ]
    for work in works:
        lines += _event(work, ctx)
    lines.append("END:VCALENDAR")
    return "".join(fold_line(line) + "\r\n" for line in lines)


def _event(work: Roadwork, ctx: FeedContext) -> list[str]:
    spec = work.spec
    period = work.effective_period
    point = spec.footprint.representative_point()
    streets = ", ".join(spec.road_names)
    description = [public_description(work)]
    impacts = obstructions_de(work)
    if impacts:
        description.append("Verkehr: " + ", ".join(impacts))
    if spec.detour_description:
        description.append(f"Umleitung: {spec.detour_description}")
    if spec.working_hours:
        description.append(f"Arbeitszeiten: {spec.working_hours}")
    description.append(f"Zeitraum: {fmt_datetime(period.start)} bis {fmt_datetime(period.end)}")
    description.append(f"Vorhabenträger: {spec.promoter} ({SECTOR_DE[spec.sector]})")
    if spec.public_contact:
        description.append(f"Kontakt: {spec.public_contact}")
    status = "CANCELLED" if work.status in (Status.CANCELLED, Status.REVOKED) else "CONFIRMED"
    return [
        "BEGIN:VEVENT",
        f"UID:{work.reference.lower()}@{ctx.host}",
        f"DTSTAMP:{_utc(ctx.generated_at)}",
        f"DTSTART:{_utc(period.start)}",
        f"DTEND:{_utc(period.end)}",
        f"CREATED:{_utc(work.created_at)}",
        f"LAST-MODIFIED:{_utc(work.updated_at)}",
        f"SEQUENCE:{max(0, work.version - 1)}",
        f"SUMMARY:{escape_text(f'Baustelle {streets}: {spec.title}')}",
        f"DESCRIPTION:{escape_text(chr(10).join(description))}",
        f"LOCATION:{escape_text(f'{streets} (Bezirk {work.district})')}",
        f"GEO:{point.y:.6f};{point.x:.6f}",
        f"CATEGORIES:{escape_text(SECTOR_DE[spec.sector])},"
        f"{escape_text(CATEGORY_DE[spec.category])}",
        f"STATUS:{status}",
        "TRANSP:TRANSPARENT",
        f"URL:{ctx.work_url(work)}",
        "END:VEVENT",
    ]


def escape_text(value: str) -> str:
    """Escape a TEXT value: backslash, semicolon, comma and newlines."""
    return (
        value.replace("\\", "\\\\").replace(";", "\\;").replace(",", "\\,")
        .replace("\r\n", "\\n").replace("\n", "\\n").replace("\r", "\\n")
    )


def fold_line(line: str) -> str:
    """Fold a content line into pieces of at most 75 octets joined by CRLF + space."""
    pieces: list[str] = []
    current: list[str] = []
    size = 0
    limit = _MAX_OCTETS
    for ch in line:
        n = len(ch.encode("utf-8"))
        if size + n > limit:
            pieces.append("".join(current))
            current, size, limit = [], 0, _MAX_OCTETS - 1  # the leading space counts
        current.append(ch)
        size += n
    pieces.append("".join(current))
    return "\r\n ".join(pieces)


def _utc(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")
