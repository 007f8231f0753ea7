"""`cityops city ...` and `cityops registry ...`: a city set up from files alone.

    cityops city check FILE          validate a profile, every problem with its line
    cityops city apply               the profile's depots and disposal sites into the registry,
                                     its OpenStreetMap extract as the active road network
    cityops registry import FILE...  bins, trucks, sites (CSV/GeoJSON), controllers (YAML)
    cityops registry export --out D  the registry as files that import back unchanged
    cityops registry retire KIND ID  take a device out of service (and out of the plans)
"""

from __future__ import annotations

import argparse
import getpass
import json
import logging
import sys
from pathlib import Path
from typing import Any

from cityops.ingest.config import ConfigError, load_settings

__all__ = ["register"]

logger = logging.getLogger(__name__)
_EXPORTS = (("site", "sites"), ("truck", "trucks"), ("bin", "bins"))


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    city = sub.add_parser("city", help="the city profile: check it, apply it (docs/city.md)")
    csub = city.add_subparsers(dest="city_command", metavar="ACTION", required=True)
    chk = csub.add_parser(
        "check",
        help="validate a city profile and say what is wrong, with line and column",
        description="Reads a city profile (YAML, docs/city.md): name, time zone, bounds, "
        "metric EPSG, districts (GeoJSON or grid), OpenStreetMap extract, depots and "
        "disposal sites, feed publisher, map. Prints FILE:LINE:COLUMN: field: problem for "
        "each problem and exits 1, or a summary and exits 0. Touches no database.",
    )
    chk.add_argument("file", nargs="?", help="profile (default: CITYOPS_CITY_PROFILE)")
    chk.add_argument("--json", action="store_true", help="print the summary as JSON")
    chk.set_defaults(func=_cmd_check)
    app = csub.add_parser(
        "apply",
        help="write the profile's sites into the registry and import its street network",
        description="Upserts the profile's depots and disposal sites (audited, idempotent) "
        "and makes its OpenStreetMap extract the active road network for planning (as "
        "`cityops routing import-network`). Run it after changing the profile.",
    )
    app.add_argument("file", nargs="?", help="profile (default: CITYOPS_CITY_PROFILE)")
    app.add_argument("--dry-run", action="store_true", help="check and report, write nothing")
    app.set_defaults(func=_cmd_apply)

    reg = sub.add_parser("registry", help="import, export and retire devices of the registry")
    rsub = reg.add_subparsers(dest="registry_command", metavar="ACTION", required=True)
    imp = rsub.add_parser(
        "import",
        help="import bins, trucks, sites (CSV/GeoJSON) and signal controllers (YAML)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="""\
Imports registry files, all-or-nothing: any problem in any file (reported as
FILE:LINE: COLUMN: reason) and nothing is written. Records are upserted by the
city's own ids; importing the same files again changes nothing. Every change is
audited (registry_audit). What a file holds is told by its id column:

  sites.csv        site_id,name,kind,lon,lat                   (kind: depot|disposal)
  bins.csv         bin_id,sensor_id,lon,lat,street,house_number,district,fraction,
                   capacity_l,collection_days,access_from,access_to,dev_eui,
                   sensor_model,empty_distance_mm,full_distance_mm
  bins.geojson     Point features with the bin columns as properties
  trucks.csv       truck_id,name,capacity_l,capacity_kg,depot_id,fractions,
                   shift_start,shift_end
  controllers.yaml controllers: [{id, name, lon, lat, cycle_s, phases, detectors, links}]

fraction: residual|paper|packaging|organic|glass; collection_days: Mo,Di,...,So;
times HH:MM; an empty district is taken from the city profile's districts.
CSV may be comma or semicolon separated (then decimal commas are fine), UTF-8.
Bins farther than --max-street-m from any street are listed.""",
        epilog="example: cityops registry import sites.csv trucks.csv bins.csv "
        "controllers.yaml --dry-run",
    )
    imp.add_argument("files", nargs="+", type=Path, help="registry files")
    imp.add_argument("--dry-run", action="store_true", help="check and report, write nothing")
    imp.add_argument("--max-street-m", type=float, default=50.0,
                     help="list bins farther than this from a street (default 50)")
    imp.add_argument("--no-snap", action="store_true",
                     help="skip snapping bins to the road network")
    imp.add_argument("--credentials", metavar="DIR",
                     help="afterwards, update the Mosquitto accounts in DIR as "
                     "`cityops mqtt credentials --out DIR` does")
    imp.add_argument("--actor", help="who imports, for the audit (default: the OS user)")
    imp.set_defaults(func=_cmd_import)
    exp = rsub.add_parser(
        "export",
        help="write the registry as files that import back unchanged",
        description="Writes sites, trucks and bins (CSV, or GeoJSON for sites and bins) and "
        "controllers.yaml into --out. Retired devices are left out.",
    )
    exp.add_argument("--out", required=True, type=Path, help="folder")
    exp.add_argument("--format", choices=["csv", "geojson"], default="csv",
                     help="sites and bins as csv (default) or geojson")
    exp.set_defaults(func=_cmd_export)
    ret = rsub.add_parser(
        "retire",
        help="take a device out of service: out of the plans, its MQTT account goes",
        description="Marks a bin, truck or signal controller retired (audited). It leaves "
        "the registry views, so the next plan no longer has it and `cityops mqtt "
        "credentials` removes its account. Importing it again brings it back.",
    )
    ret.add_argument("kind", choices=["bin", "truck", "signal_controller"])
    ret.add_argument("id")
    ret.add_argument("--actor", help="who retires it, for the audit (default: the OS user)")
    ret.set_defaults(func=_cmd_retire)


def _profile_settings(file: str | None) -> Any:
    overrides: dict[str, object] = {"allow_demo_city": True}
    if file:
        overrides["city_profile"] = file
    return load_settings(**overrides)


def _cmd_check(args: argparse.Namespace) -> int:
    from cityops.ingest.city import CityProfileError, describe, load_city

    settings = _profile_settings(args.file)
    try:
        city = load_city(settings, demo_ok=True)
    except CityProfileError as exc:
        for problem in exc.problems:
            print(problem.render(exc.source))
        print(f"{len(exc.problems)} problem(s) in {exc.source}", file=sys.stderr)
        return 1
    summary = describe(city)
    if args.json:
        print(json.dumps(summary, ensure_ascii=False, indent=2))
    else:
        print(f"{city.source}: valid city profile")
        for key, value in summary.items():
            shown = ", ".join(map(str, value)) if isinstance(value, list) else value
            print(f"  {key:12} {shown}")
        if city.demo:
            print("  note: the demo city; services start with it only with "
                  "CITYOPS_ALLOW_DEMO_CITY=1")
    return 0


def _actor(args: argparse.Namespace) -> str:
    if getattr(args, "actor", None):
        return str(args.actor)
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return "cli"


def apply_profile(database_url: str, city: Any, *, actor: str, dry_run: bool = False) -> int:
    """`cityops city apply` for a loaded profile: its sites into the registry, its extract
    as the active road network. Prints what it did; returns the exit code."""
    import hashlib

    from cityops.ingest.db import connect
    from cityops.ingest.registry_files import ParsedFile
    from cityops.ingest.registry_model import SiteRecord
    from cityops.ingest.registry_store import import_records
    from cityops.routing.errors import NetworkError
    from cityops.routing.network import default_extract, load_network
    from cityops.routing.repository import record_network

    parsed = ParsedFile(city.source, "site", [
        (None, SiteRecord(s.site_id, s.name, s.kind, s.lon, s.lat)) for s in city.sites])
    extract = city.osm_extract or default_extract()
    try:
        network = load_network(extract)
    except NetworkError as exc:
        print(f"cityops city apply: {exc}", file=sys.stderr)
        return 1
    with connect(database_url) as conn:
        report = import_records(conn, [parsed], city, actor=actor, dry_run=dry_run)
        if report.problems:
            for p in report.problems:
                print(p.render(), file=sys.stderr)
            return 1
        print(f"{city.name}: {report.summary()}")
        print(f"street network {extract}: {network.n_nodes:,} nodes, {network.n_edges:,} edges")
        if not dry_run:
            with conn.transaction():
                network_id = record_network(
                    conn, source=str(extract),
                    sha256=hashlib.sha256(extract.read_bytes()).hexdigest(),
                    nodes=network.n_nodes, edges=network.n_edges,
                    km=float(network.length_m.sum()) / 1000, bbox=network.bbox)
            print(f"  recorded as network #{network_id}, active for planning")
    if dry_run:
        print("dry run: nothing written")
    return 0


def _cmd_apply(args: argparse.Namespace) -> int:
    from cityops.ingest.city import load_city

    settings = _profile_settings(args.file)
    city = load_city(settings, demo_ok=True)
    return apply_profile(settings.database_url, city, actor=_actor(args), dry_run=args.dry_run)


def _cmd_import(args: argparse.Namespace) -> int:
    from cityops.ingest.city import load_city

    settings = load_settings(allow_demo_city=True)
    city = load_city(settings, demo_ok=True)
    return import_files(settings, city, args.files, actor=_actor(args), dry_run=args.dry_run,
                        max_street_m=args.max_street_m, snap=not args.no_snap,
                        credentials=args.credentials)


def import_files(settings: Any, city: Any, paths: list[Path], *, actor: str,
                 dry_run: bool = False, max_street_m: float = 50.0, snap: bool = True,
                 credentials: str | None = None) -> int:
    """`cityops registry import`: read, check, write (or not), print; the exit code."""
    from cityops.ingest.db import connect
    from cityops.ingest.registry_files import read_registry_file
    from cityops.ingest.registry_store import import_records

    files = [read_registry_file(path) for path in paths]
    for f in files:
        print(f"{f.path}: {len(f.records)} {f.kind or '?'} record(s)"
              + (f", {len(f.problems)} problem(s)" if f.problems else ""))
    network = None
    if snap and not any(f.problems for f in files):
        network = _network(settings)
    with connect(settings.database_url) as conn:
        report = import_records(conn, files, city, actor=actor, network=network,
                                max_street_m=max_street_m, dry_run=dry_run)
    if report.problems:
        for p in report.problems:
            print(p.render())
        print(f"cityops registry import: {len(report.problems)} problem(s); nothing was "
              "imported", file=sys.stderr)
        return 1
    print(("dry run, would import: " if dry_run else "imported: ") + report.summary())
    for kind, ids in report.revived.items():
        print(f"  revived (were retired): {kind} {', '.join(ids[:20])}")
    if report.far_from_street:
        print(f"{len(report.far_from_street)} bin(s) farther than {max_street_m:g} m "
              "from any street (check their position):")
        for far in report.far_from_street[:50]:
            print(f"  {far.bin_id}: {far.street_distance_m:.0f} m from {far.nearest_street}")
    if dry_run or not report.devices_changed:
        return 0
    if credentials:
        from cityops.ingest.cli import write_credentials

        return write_credentials(Path(credentials))
    print("devices were added: run `cityops mqtt credentials --out DIR` and reload Mosquitto "
          "so that they can connect")
    return 0


def _network(settings: Any) -> Any:
    from cityops.routing.errors import NetworkError
    from cityops.routing.extract import network_for
    from cityops.routing.network import load_network

    try:
        return load_network(network_for(settings))
    except NetworkError as exc:
        raise ConfigError(f"cannot load the road network to snap bins: {exc}") from None


def _cmd_export(args: argparse.Namespace) -> int:
    from cityops.ingest.db import connect
    from cityops.ingest.registry_files import write_csv, write_geojson, write_yaml
    from cityops.ingest.registry_model import ControllerRecord
    from cityops.ingest.registry_store import load_records

    settings = load_settings()
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    with connect(settings.database_url) as conn:
        for kind, name in _EXPORTS:
            records = [rec for rec, _, _ in load_records(conn, kind).values()]
            if args.format == "geojson" and kind != "truck":
                path, text = out / f"{name}.geojson", write_geojson(kind, records)
            else:
                path, text = out / f"{name}.csv", write_csv(kind, records)
            path.write_text(text, encoding="utf-8")
            print(f"{path}: {len(records)} {kind}(s)")
        controllers = [rec for rec, _, _ in load_records(conn, "signal_controller").values()
                       if isinstance(rec, ControllerRecord)]
        path = out / "controllers.yaml"
        path.write_text(write_yaml(controllers), encoding="utf-8")
        print(f"{path}: {len(controllers)} signal controller(s)")
    return 0


def _cmd_retire(args: argparse.Namespace) -> int:
    from cityops.ingest.db import connect
    from cityops.ingest.registry_store import RegistryNotFoundError, retire

    settings = load_settings()
    with connect(settings.database_url) as conn:
        try:
            version = retire(conn, args.kind, args.id, actor=_actor(args), source="cli")
        except RegistryNotFoundError as exc:
            print(f"cityops registry retire: {exc}", file=sys.stderr)
            return 1
    print(f"{args.kind} {args.id} retired (version {version}); run `cityops mqtt credentials` "
          "to remove its MQTT account")
    return 0
