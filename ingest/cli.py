"""Commands of the data plane: `cityops db ...`, `cityops ingest`, `cityops deadletters ...`."""

from __future__ import annotations

import argparse
import sys

from cityops.ingest.config import load_settings

__all__ = ["register"]


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    db = sub.add_parser("db", help="database: create, migrate, show status")
    dbsub = db.add_subparsers(dest="db_command", metavar="ACTION", required=True)
    mig = dbsub.add_parser(
        "migrate",
        help="create the database if needed and apply pending migrations (idempotent)",
        description="Creates the database named in CITYOPS_DATABASE_URL if it is missing and "
        "applies pending migrations. The storage mode (TimescaleDB or plain PostgreSQL) is "
        "chosen on the first run and recorded; CITYOPS_DB_MODE forces it.",
    )
    mig.set_defaults(func=_cmd_migrate)
    st = dbsub.add_parser("status", help="storage mode, applied migrations and row counts")
    st.set_defaults(func=_cmd_status)

    ing = sub.add_parser(
        "ingest",
        help="run the MQTT ingest service (QoS 1, batched COPY, dead letters)",
        description="Subscribes to every device topic (shared subscription, so several "
        "instances split the load), validates each message, writes batches to the database "
        "and acknowledges messages only after their rows are committed.",
    )
    ing.add_argument(
        "--instance", help="client id of this instance (default: CITYOPS_INGEST_CLIENT_ID)"
    )
    ing.add_argument("--metrics-port", type=int, help="Prometheus port; 0 disables (default 9108)")
    ing.set_defaults(func=_cmd_ingest)

    mq = sub.add_parser("mqtt", help="the MQTT contract: payload JSON Schemas")
    mqsub = mq.add_subparsers(dest="mqtt_command", metavar="ACTION", required=True)
    sch = mqsub.add_parser(
        "schemas", help="write the JSON Schema of every payload (as in docs/schemas/)"
    )
    sch.add_argument("--out", default="docs/schemas", help="folder (default docs/schemas)")
    sch.set_defaults(func=_cmd_schemas)

    dl = sub.add_parser("deadletters", help="inspect and replay dead-lettered messages")
    dlsub = dl.add_subparsers(dest="dl_command", metavar="ACTION", required=True)
    ls = dlsub.add_parser("list", help="count dead letters by reason, show the newest")
    ls.add_argument("--limit", type=int, default=10, help="newest messages to show (default 10)")
    ls.set_defaults(func=_cmd_dl_list)
    rp = dlsub.add_parser(
        "replay",
        help="re-publish dead letters (e.g. after registering an unknown device)",
        description="Publishes the stored payloads again on their topics at QoS 1 so the ingest "
        "validates them anew; those that pass are stored, the rest return as dead letters.",
    )
    rp.add_argument("--reason", required=True, help="only dead letters with this reason")
    rp.add_argument("--limit", type=int, default=10_000, help="at most this many (default 10000)")
    rp.set_defaults(func=_cmd_dl_replay)


def _cmd_migrate(args: argparse.Namespace) -> int:
    from cityops.ingest.db import MigrationError, ensure_database, migrate

    settings = load_settings()
    try:
        created = ensure_database(settings.database_url)
        report = migrate(settings.database_url, mode=settings.db_mode)
    except MigrationError as exc:
        print(f"cityops db migrate: {exc}", file=sys.stderr)
        return 1
    where = settings.redacted_database_url()
    print(f"database {where}{' (created)' if created else ''}: storage mode {report.mode}")
    if report.applied:
        for label in report.applied:
            print(f"  applied {label}")
    print(f"  {len(report.applied)} applied, {report.already} already up to date")
    return 0


def _cmd_status(args: argparse.Namespace) -> int:
    from cityops.ingest.db import connect, storage_mode

    settings = load_settings()
    with connect(settings.database_url) as conn:
        mode = storage_mode(conn)
        if mode is None:
            print("database not migrated yet: run 'cityops db migrate'")
            return 1
        print(f"storage mode: {mode}")
        for version, name, applied_at in conn.execute(
            "SELECT version, name, applied_at FROM cityops_migrations ORDER BY version"
        ):
            print(f"  {version:04d}_{name}  applied {applied_at:%Y-%m-%d %H:%M:%S} UTC")
        for table in (
            "bins",
            "signal_controllers",
            "trucks",
            "bin_readings",
            "signal_events",
            "truck_positions",
            "truck_events",
            "dead_letters",
        ):
            row = conn.execute(f"SELECT count(*) FROM {table}").fetchone()
            print(f"  {table:<20} {row[0] if row else 0:>12,}")
    return 0


def _cmd_ingest(args: argparse.Namespace) -> int:
    from cityops.ingest.service import run_ingest

    overrides: dict[str, object] = {}
    if args.instance:
        overrides["ingest_client_id"] = args.instance
    if args.metrics_port is not None:
        overrides["ingest_metrics_port"] = args.metrics_port
    return run_ingest(load_settings(**overrides))


def _cmd_schemas(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    from cityops.ingest.contract import json_schemas

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for name, schema in json_schemas().items():
        (out / name).write_text(json.dumps(schema, indent=2, sort_keys=True) + "\n")
        print(out / name)
    return 0


def _cmd_dl_list(args: argparse.Namespace) -> int:
    from cityops.ingest.deadletters import print_summary

    return print_summary(load_settings(), limit=args.limit)


def _cmd_dl_replay(args: argparse.Namespace) -> int:
    from cityops.ingest.deadletters import replay

    return replay(load_settings(), reason=args.reason, limit=args.limit)
