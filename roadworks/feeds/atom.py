"""Atom (RFC 4287) for a street or an area: feed readers show new and changed works.

Built with ElementTree, so the XML is well-formed whatever the texts contain. Entry ids
are stable URNs per work; `updated` is the work's last change, so a reader shows an entry
again when dates or obstructions change. Each entry carries a GeoRSS point.
"""

from __future__ import annotations

import uuid
import xml.etree.ElementTree as ET
from collections.abc import Iterable

from cityops.roadworks.feeds.common import (
    FeedContext,
    FeedQuery,
    obstructions_de,
    public_description,
    rfc3339,
    work_uuid,
)
from cityops.roadworks.labels import SECTOR_DE, STATUS_DE, fmt_period
from cityops.roadworks.model import Roadwork

__all__ = ["ATOM_NS", "GEORSS_NS", "feed"]

ATOM_NS = "http://www.w3.org/2005/Atom"
GEORSS_NS = "http://www.georss.org/georss"


def _q(tag: str, ns: str = ATOM_NS) -> str:
    return f"{{{ns}}}{tag}"


def feed(works: Iterable[Roadwork], ctx: FeedContext, query: FeedQuery,
         self_path: str = "/roadworks/feeds/atom") -> str:
    """The Atom document (UTF-8 text with an XML declaration)."""
    ET.register_namespace("", ATOM_NS)
    ET.register_namespace("georss", GEORSS_NS)
    items = list(works)
    self_url = ctx.base_url + self_path + (f"?{query.query_string}" if query.query_string else "")
    root = ET.Element(_q("feed"), {"{http://www.w3.org/XML/1998/namespace}lang": "de"})
    _text(root, "id", uuid.uuid5(uuid.NAMESPACE_URL, self_url).urn)
    _text(root, "title", query.title_de)
    _text(root, "subtitle", f"Baustellen und Verkehrseinschränkungen – {ctx.publisher}")
    updated = max([w.updated_at for w in items], default=ctx.generated_at)
    _text(root, "updated", rfc3339(updated))
    author = ET.SubElement(root, _q("author"))
    _text(author, "name", ctx.publisher)
    _text(author, "email", ctx.contact_email)
    ET.SubElement(root, _q("link"), {"rel": "self", "href": self_url,
                                     "type": "application/atom+xml"})
    ET.SubElement(root, _q("link"), {"rel": "alternate", "href": f"{ctx.base_url}/roadworks",
                                     "type": "text/html"})
    _text(root, "generator", "cityops")
    for work in items:
        root.append(_entry(work, ctx))
    ET.indent(root)
    body = ET.tostring(root, encoding="unicode")
    return f'<?xml version="1.0" encoding="utf-8"?>\n{body}\n'


def _entry(work: Roadwork, ctx: FeedContext) -> ET.Element:
    spec = work.spec
    entry = ET.Element(_q("entry"))
    _text(entry, "id", work_uuid(ctx, work).urn)
    streets = ", ".join(spec.road_names)
    _text(entry, "title", f"{streets}: {spec.title} ({fmt_period(work.effective_period)})")
    _text(entry, "updated", rfc3339(work.updated_at))
    _text(entry, "published", rfc3339(work.created_at))
    ET.SubElement(entry, _q("link"), {"rel": "alternate", "href": ctx.work_url(work),
                                      "type": "text/html"})
    ET.SubElement(entry, _q("category"), {"term": spec.sector.value,
                                          "label": SECTOR_DE[spec.sector]})
    lines = [public_description(work), f"Zeitraum: {fmt_period(work.effective_period)}",
             f"Stand: {STATUS_DE[work.status]}"]
    impacts = obstructions_de(work)
    if impacts:
        lines.append("Verkehr: " + ", ".join(impacts))
    if spec.detour_description:
        lines.append(f"Umleitung: {spec.detour_description}")
    lines.append(f"Vorhabenträger: {spec.promoter} ({SECTOR_DE[spec.sector]})")
    summary = ET.SubElement(entry, _q("summary"), {"type": "text"})
    summary.text = "\n".join(lines)
    point = spec.footprint.representative_point()
    geo = ET.SubElement(entry, _q("point", GEORSS_NS))
    geo.text = f"{point.y:.6f} {point.x:.6f}"
    return entry


def _text(parent: ET.Element, tag: str, text: str) -> ET.Element:
    el = ET.SubElement(parent, _q(tag))
    el.text = text
    return el
