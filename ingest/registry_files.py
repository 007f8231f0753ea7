"""Registry files: read a city's CSV, GeoJSON and YAML into records, write them back.

What a file holds is told by its id column (`bin_id`, `truck_id`, `site_id`) or, for YAML,
its `controllers:` list. CSV comes as cities have it: UTF-8 with or without a BOM, comma or
semicolon separated (with a semicolon, decimal commas are read as points). Every problem is
reported with its file, line and column, and all of a file's problems at once; reading never
touches the database. `write_*` produce files that read back to the same records.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from cityops.ingest.registry_model import (
    ID_FIELD,
    MODELS,
    BinRecord,
    ControllerRecord,
    Record,
    SiteRecord,
    TruckRecord,
    as_json,
    format_days,
    record_id,
)
from cityops.ingest.yamlpos import YamlError, locate, parse_located

__all__ = [
    "COLUMNS",
    "ParsedFile",
    "RowProblem",
    "parse_rows",
    "read_registry_file",
    "write_csv",
    "write_geojson",
    "write_yaml",
]

#: The columns of each kind's CSV, in order (GeoJSON: the same minus lon/lat).
COLUMNS: dict[str, tuple[str, ...]] = {
    "site": ("site_id", "name", "kind", "lon", "lat"),
    "bin": ("bin_id", "sensor_id", "lon", "lat", "street", "house_number", "district",
            "fraction", "capacity_l", "collection_days", "access_from", "access_to",
            "dev_eui", "sensor_model", "empty_distance_mm", "full_distance_mm"),
    "truck": ("truck_id", "name", "capacity_l", "capacity_kg", "depot_id", "fractions",
              "shift_start", "shift_end"),
}
_REQUIRED = {
    "site": {"site_id", "name", "kind", "lon", "lat"},
    "bin": {"bin_id", "lon", "lat", "street", "fraction", "capacity_l"},
    "truck": {"truck_id", "name", "capacity_l", "depot_id", "fractions"},
}
_NUMERIC = {"lon", "lat", "capacity_l", "capacity_kg", "empty_distance_mm", "full_distance_mm"}
_DECIMAL_COMMA = re.compile(r"^-?\d+,\d+$")
MAX_FILE_BYTES = 50 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class RowProblem:
    """One thing wrong in a file: where (1-based line, column name or number) and why."""

    file: str
    line: int | None
    column: str
    reason: str

    def render(self) -> str:
        where = self.file if self.line is None else f"{self.file}:{self.line}"
        if self.column:
            return f"{where}: {self.column}: {self.reason}"
        return f"{where}: {self.reason}"


@dataclass
class ParsedFile:
    path: str
    kind: str | None = None
    records: list[tuple[int | None, Record]] = field(default_factory=list)  # (line, record)
    problems: list[RowProblem] = field(default_factory=list)


def read_registry_file(path: Path) -> ParsedFile:
    """Every record of a registry file, or the problems that stop it being imported."""
    parsed = ParsedFile(str(path))
    try:
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            parsed.problems.append(RowProblem(
                str(path), None, "", f"file is {size:,} bytes, more than {MAX_FILE_BYTES:,}"))
            return parsed
        raw = path.read_bytes()
    except OSError as exc:
        parsed.problems.append(RowProblem(str(path), None, "", f"cannot read: {exc.strerror}"))
        return parsed
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        parsed.problems.append(RowProblem(
            str(path), line, "", "not UTF-8 text (save the file as UTF-8)"))
        return parsed
    suffix = path.suffix.lower()
    if suffix == ".csv":
        _read_csv(text, parsed)
    elif suffix in (".geojson", ".json"):
        _read_geojson(text, parsed)
    elif suffix in (".yaml", ".yml"):
        _read_yaml(text, parsed)
    else:
        parsed.problems.append(RowProblem(
            str(path), None, "", "unknown file type: use .csv, .geojson or .yaml"))
    _check_duplicates(parsed)
    return parsed


def parse_rows(kind: str, rows: Iterable[dict[str, Any]], source: str) -> ParsedFile:
    """Records from rows already in memory (a simulated city, a request), validated exactly
    as the rows of a file; `line` counts the rows from 1."""
    parsed = ParsedFile(source, kind)
    for i, row in enumerate(rows, start=1):
        _validate(kind, row, parsed, i)
    _check_duplicates(parsed)
    return parsed


def _validate(kind: str, row: dict[str, Any], parsed: ParsedFile, line: int | None,
              columns: Sequence[str] | None = None, root: yaml.Node | None = None,
              loc_prefix: tuple[str | int, ...] = ()) -> None:
    try:
        model = MODELS[kind].model_validate(row)
    except ValidationError as exc:
        for err in exc.errors():
            loc = tuple(err["loc"])
            column = ".".join(str(p) for p in loc)
            reason = err["msg"].removeprefix("Value error, ")
            if err["type"] == "extra_forbidden":
                reason = "unknown field"
            where = line
            if root is not None:
                where, col = locate(root, (*loc_prefix, *loc))
                column = f"{column} (column {col})" if column else f"column {col}"
            elif columns is not None and loc and loc[0] in columns:
                column = f"{column} (column {columns.index(str(loc[0])) + 1})"
            parsed.problems.append(RowProblem(parsed.path, where, column, reason))
        return
    parsed.records.append((line, model.to_record()))


def _read_csv(text: str, parsed: ParsedFile) -> None:
    first = text.split("\n", 1)[0]
    delimiter = ";" if first.count(";") > first.count(",") else ","
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    try:
        header = [h.strip() for h in next(reader, [])]
    except csv.Error as exc:
        parsed.problems.append(RowProblem(parsed.path, 1, "", f"not readable as CSV: {exc}"))
        return
    kind = next((k for k, idf in ID_FIELD.items() if idf in header and k in COLUMNS), None)
    if kind is None:
        parsed.problems.append(RowProblem(
            parsed.path, 1, "", "no id column: the header needs site_id, bin_id or truck_id "
            "(signal controllers come as YAML)"))
        return
    parsed.kind = kind
    problems = parsed.problems
    unknown = [h for h in header if h not in COLUMNS[kind]]
    for name in unknown:
        problems.append(RowProblem(parsed.path, 1, name, f"unknown column (a {kind} file has "
                                   f"{', '.join(COLUMNS[kind])})"))
    for name in sorted(_REQUIRED[kind] - set(header)):
        problems.append(RowProblem(parsed.path, 1, name, "required column is missing"))
    if len(set(header)) != len(header):
        problems.append(RowProblem(parsed.path, 1, "", "a column name occurs twice"))
    if problems:
        return
    while True:
        try:
            values = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            problems.append(RowProblem(parsed.path, reader.line_num, "",
                                       f"not readable as CSV: {exc}"))
            return
        line = reader.line_num
        if not any(v.strip() for v in values):
            continue  # blank line
        if len(values) != len(header):
            problems.append(RowProblem(
                parsed.path, line, "", f"{len(values)} fields, the header has {len(header)}"))
            continue
        row: dict[str, Any] = {}
        for name, value in zip(header, values, strict=True):
            if delimiter == ";" and name in _NUMERIC and _DECIMAL_COMMA.match(value.strip()):
                value = value.strip().replace(",", ".")
            row[name] = value
        _validate(kind, row, parsed, line, header)


def _read_geojson(text: str, parsed: ParsedFile) -> None:
    try:
        data = json.loads(text)
    except (ValueError, RecursionError) as exc:
        line = getattr(exc, "lineno", None)
        parsed.problems.append(RowProblem(parsed.path, line, "", f"not valid JSON: {exc}"))
        return
    features = data.get("features") if isinstance(data, dict) else None
    if not isinstance(data, dict) or data.get("type") != "FeatureCollection" or not isinstance(
        features, list
    ):
        parsed.problems.append(RowProblem(parsed.path, None, "", "must be a GeoJSON "
                                          "FeatureCollection"))
        return
    for i, feature in enumerate(features, start=1):
        where = f"feature {i}"
        if not isinstance(feature, dict):
            parsed.problems.append(RowProblem(parsed.path, None, where, "not a Feature"))
            continue
        props = feature.get("properties")
        geometry = feature.get("geometry")
        if not isinstance(props, dict):
            parsed.problems.append(RowProblem(parsed.path, None, where, "has no properties"))
            continue
        kind = next((k for k in ("bin", "site") if ID_FIELD[k] in props), None)
        if kind is None or (parsed.kind is not None and kind != parsed.kind):
            parsed.problems.append(RowProblem(
                parsed.path, None, where, "properties need bin_id or site_id, the same kind "
                "in every feature"))
            continue
        parsed.kind = kind
        coords = geometry.get("coordinates") if isinstance(geometry, dict) else None
        if not (isinstance(geometry, dict) and geometry.get("type") == "Point"
                and isinstance(coords, list) and len(coords) in (2, 3)):
            parsed.problems.append(RowProblem(parsed.path, None, f"{where}: geometry",
                                              "must be a Point [lon, lat]"))
            continue
        row = {k: v for k, v in props.items()}
        row["lon"], row["lat"] = coords[0], coords[1]
        before = len(parsed.problems)
        _validate(kind, row, parsed, None)
        for j in range(before, len(parsed.problems)):
            p = parsed.problems[j]
            parsed.problems[j] = RowProblem(p.file, None, f"{where}: {p.column}", p.reason)


def _read_yaml(text: str, parsed: ParsedFile) -> None:
    try:
        doc = parse_located(text)
    except YamlError as exc:
        parsed.problems.append(RowProblem(parsed.path, exc.line, f"column {exc.column}",
                                          str(exc)))
        return
    controllers = doc.data.get("controllers") if isinstance(doc.data, dict) else None
    if not isinstance(controllers, list) or set(doc.data) != {"controllers"}:
        parsed.problems.append(RowProblem(parsed.path, 1, "", "must be a mapping with one "
                                          "key, controllers: a list of signal controllers"))
        return
    parsed.kind = "signal_controller"
    for i, item in enumerate(controllers):
        line, _ = locate(doc.root, ("controllers", i))
        if not isinstance(item, dict):
            parsed.problems.append(RowProblem(parsed.path, line, "", "a controller is a "
                                              "mapping"))
            continue
        row = dict(item)
        if "id" in row and "controller_id" not in row:
            row["controller_id"] = row.pop("id")
        _validate("signal_controller", row, parsed, line, root=doc.root,
                  loc_prefix=("controllers", i))


def _check_duplicates(parsed: ParsedFile) -> None:
    seen: dict[str, int | None] = {}
    for line, record in parsed.records:
        rid = record_id(record)
        if rid in seen:
            first = seen[rid]
            parsed.problems.append(RowProblem(
                parsed.path, line, ID_FIELD[parsed.kind or "bin"],
                f"{rid} occurs twice (first on line {first})" if first else f"{rid} occurs twice"))
        else:
            seen[rid] = line
    sensors: dict[str, str] = {}
    for line, record in parsed.records:
        if isinstance(record, BinRecord) and record.sensor_id:
            other = sensors.setdefault(record.sensor_id, record.bin_id)
            if other != record.bin_id:
                parsed.problems.append(RowProblem(
                    parsed.path, line, "sensor_id",
                    f"sensor {record.sensor_id} is already on bin {other}"))


# -- writing -------------------------------------------------------------------------------


def _cells(record: Record) -> dict[str, str]:
    data = as_json(record)
    if isinstance(record, BinRecord):
        data["collection_days"] = format_days(record.collection_days)
    if isinstance(record, TruckRecord):
        data["fractions"] = ",".join(record.fractions)
    return {k: "" if v is None else str(v) for k, v in data.items()}


def write_csv(kind: str, records: Iterable[Record]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=COLUMNS[kind], lineterminator="\n",
                            extrasaction="ignore")
    writer.writeheader()
    for record in records:
        writer.writerow(_cells(record))
    return out.getvalue()


def write_geojson(kind: str, records: Iterable[Record]) -> str:
    features = []
    for record in records:
        assert isinstance(record, BinRecord | SiteRecord)
        props = {k: v for k, v in _cells(record).items() if k not in ("lon", "lat") and v != ""}
        features.append({"type": "Feature", "id": record_id(record),
                         "geometry": {"type": "Point", "coordinates": [record.lon, record.lat]},
                         "properties": props})
    return json.dumps({"type": "FeatureCollection", "features": features},
                      ensure_ascii=False, indent=1) + "\n"


def write_yaml(records: Iterable[ControllerRecord]) -> str:
    items = []
    for record in records:
        data = as_json(record)
        for phase in data["phases"]:
            phase.pop("seq", None)  # the order of the list is the sequence
        items.append(data)
    return yaml.safe_dump({"controllers": items}, allow_unicode=True, sort_keys=False)
