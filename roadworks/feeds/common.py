"""What every feed needs: who publishes, when, for which area or street, and the German
wording of a work's obstructions."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import quote, urlsplit

from cityops.roadworks.config import RoadworksSettings
from cityops.roadworks.geometry import BBox
from cityops.roadworks.labels import MEASURE_DE
from cityops.roadworks.model import Measure, Roadwork

__all__ = [
    "FeedContext",
    "FeedQuery",
    "obstructions_de",
    "public_description",
    "rfc3339",
    "work_uuid",
]


@dataclass(frozen=True, slots=True)
class FeedContext:
    """The publisher's details and the generation time of a feed."""

    generated_at: datetime
    publisher: str = "cityops"
    contact_name: str = "Baustellenkoordination"
    contact_email: str = "baustellen@example.org"
    data_source_id: str = "cityops-roadworks"
    base_url: str = "http://127.0.0.1:8000"

    @classmethod
    def from_settings(cls, settings: RoadworksSettings, generated_at: datetime) -> FeedContext:
        return cls(
            generated_at=generated_at, publisher=settings.publisher,
            contact_name=settings.contact_name, contact_email=settings.contact_email,
            data_source_id=settings.data_source_id, base_url=settings.public_base_url,
        )

    @property
    def host(self) -> str:
        return urlsplit(self.base_url).hostname or "localhost"

    def work_url(self, work: Roadwork) -> str:
        """The public page of a work (served by the public API)."""
        return f"{self.base_url}/roadworks/{quote(work.reference)}"


@dataclass(frozen=True, slots=True)
class FeedQuery:
    """A subscription: the works of an area, of a street, or of the whole city."""

    bbox: BBox | None = None
    street: str | None = None

    @property
    def title_de(self) -> str:
        if self.street:
            return f"Baustellen in der {self.street}"
        if self.bbox:
            b = self.bbox
            return (f"Baustellen im Gebiet {b.min_lat:.4f}–{b.max_lat:.4f} N, "
                    f"{b.min_lon:.4f}–{b.max_lon:.4f} O")
        return "Baustellen im Stadtgebiet"

    @property
    def query_string(self) -> str:
        if self.street:
            return f"street={quote(self.street)}"
        if self.bbox:
            b = self.bbox
            return f"bbox={b.min_lon},{b.min_lat},{b.max_lon},{b.max_lat}"
        return ""


def work_uuid(ctx: FeedContext, work: Roadwork, part: str = "") -> uuid.UUID:
    """A stable UUID for a work (and a part of it), the same in every feed run."""
    return uuid.uuid5(uuid.NAMESPACE_URL, ctx.work_url(work) + (f"#{part}" if part else ""))


def rfc3339(value: datetime) -> str:
    """UTC, seconds, `Z`: `2025-03-03T06:00:00Z`."""
    return value.astimezone(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def obstructions_de(work: Roadwork) -> list[str]:
    """The traffic impact in German, most severe first."""
    spec = work.spec
    out: list[str] = []
    for m in spec.sorted_measures:
        if m is Measure.LANE_CLOSURE and spec.lanes_affected:
            out.append(f"{MEASURE_DE[m]} ({spec.lanes_affected} Fahrstreifen)")
        else:
            out.append(MEASURE_DE[m])
    if spec.bus_lines:
        word = "Buslinie" if len(spec.bus_lines) == 1 else "Buslinien"
        out.append(f"{word} {', '.join(spec.bus_lines)} betroffen")
    if spec.waste_collection_affected:
        out.append("Müllabfuhr betroffen")
    if spec.night_works:
        out.append("Nachtarbeit")
    return out


def public_description(work: Roadwork) -> str:
    """What the public reads about a work: its public text, else its title."""
    return (work.spec.public_text or work.spec.title).strip()
