"""Commands of the data plane: `cityops db ...`, `cityops ingest`, `cityops deadletters ...`."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from cityops.ingest.config import ConfigError, load_settings

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

    mq = sub.add_parser(
        "mqtt",
        help="the MQTT contract: payload JSON Schemas, Mosquitto password and ACL files",
    )
    mqsub = mq.add_subparsers(dest="mqtt_command", metavar="ACTION", required=True)
    sch = mqsub.add_parser(
        "schemas", help="write the JSON Schema of every payload (as in docs/schemas/)"
    )
    sch.add_argument("--out", default="docs/schemas", help="folder (default docs/schemas)")
    sch.set_defaults(func=_cmd_schemas)
    cred = mqsub.add_parser(
        "credentials",
        help="Mosquitto password and ACL files from the device registry (idempotent)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="""\
Writes, into --out, for every device in the registry (bins under their sensor id,
signal controllers, trucks) and for the service accounts (cityops-ingest, -control,
-planner, -api, -replay):

  cityops.passwd            Mosquitto password_file ($7$ PBKDF2-SHA512, as mosquitto_passwd)
  cityops.acl               Mosquitto acl_file: a device publishes only on its own
                            telemetry/events/status topics and reads only its own cmd/#
  dynamic-security.json     the same users and topics for Mosquitto's dynamic-security
                            plugin, which also refuses subscriptions: the recommended
                            set-up (deploy/mosquitto/conf.d/cityops-dynsec.conf.example)
  cityops-passwords.secret  the clear passwords, user:password, mode 0600 (or --secrets)

Existing passwords are kept: re-running after registering devices adds only those, and
a run without changes rewrites identical files. Devices gone from the registry lose
their account. --rotate USER gives one user a new password. Passwords are never printed
unless --show USER asks for them. Afterwards, with password_file and acl_file reload
Mosquitto (SIGHUP, or `systemctl reload mosquitto`): it re-reads both files; with the
dynamic-security plugin restart it (the plugin reads its file at start). Connected
clients stay connected until they reconnect.""",
        epilog="example: cityops mqtt credentials --out /etc/mosquitto/cityops --rotate S-B0042",
    )
    cred.add_argument("--out", required=True, help="folder for the generated files")
    cred.add_argument("--prefix", help="topic prefix (default: CITYOPS_TOPIC_PREFIX)")
    cred.add_argument(
        "--secrets", help="clear-password file (default: OUT/cityops-passwords.secret)"
    )
    cred.add_argument(
        "--rotate",
        action="append",
        default=[],
        metavar="USER",
        help="new password for this device id or service account (repeatable)",
    )
    cred.add_argument(
        "--show",
        action="append",
        default=[],
        metavar="USER",
        help="print this user's password, e.g. to provision one device (repeatable)",
    )
    cred.add_argument(
        "--simulator",
        action="store_true",
        help="add cityops-simulator, which may publish as every device: DEMO ONLY",
    )
    cred.set_defaults(func=_cmd_credentials)

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
    from cityops.ingest.city import announce_city

    settings = load_settings(**overrides)
    city = announce_city(settings, "ingest")
    return run_ingest(settings, city.lorawan_mappings)


def _cmd_schemas(args: argparse.Namespace) -> int:
    import json

    from cityops.ingest.contract import json_schemas

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for name, schema in json_schemas().items():
        (out / name).write_text(json.dumps(schema, indent=2, sort_keys=True) + "\n")
        print(out / name)
    return 0


def _cmd_credentials(args: argparse.Namespace) -> int:
    return write_credentials(
        Path(args.out), prefix=args.prefix, secrets=args.secrets, rotate=args.rotate,
        show=args.show, simulator=args.simulator,
    )


def write_credentials(
    out: Path,
    *,
    prefix: str | None = None,
    secrets: str | None = None,
    rotate: Sequence[str] = (),
    show: Sequence[str] = (),
    simulator: bool = False,
) -> int:
    """`cityops mqtt credentials`: write the broker's files for the registry's devices
    and the service accounts into `out`; prints what changed, returns the exit code."""
    import psycopg

    from cityops.ingest.contract import DeviceKind
    from cityops.ingest.db import connect
    from cityops.ingest.mqttauth import (
        CredentialError,
        Device,
        lorawan_filters,
        parse_password_file,
        parse_secrets,
        plan_credentials,
        render_acl,
        render_dynsec,
        render_password_file,
        render_secrets,
        service_accounts,
    )

    try:  # the prefix is checked like CITYOPS_TOPIC_PREFIX
        settings = load_settings(**({"topic_prefix": prefix} if prefix else {}))
    except ConfigError as exc:
        print(f"cityops mqtt credentials: {exc}", file=sys.stderr)
        return 2
    prefix = settings.topic_prefix
    passwd_path, acl_path = out / "cityops.passwd", out / "cityops.acl"
    dynsec_path = out / "dynamic-security.json"
    secrets_path = Path(secrets) if secrets else out / "cityops-passwords.secret"
    try:
        with connect(settings.database_url) as conn:
            rows = conn.execute("SELECT kind, device_id FROM devices ORDER BY kind, device_id")
            devices = [Device(DeviceKind(str(kind)), str(device_id)) for kind, device_id in rows]
    except psycopg.Error as exc:
        where = settings.redacted_database_url()
        print(
            f"cityops mqtt credentials: cannot read the registry at {where}: {exc}", file=sys.stderr
        )
        return 1
    try:
        # the network servers' uplinks, when the ingest takes them (CITYOPS_INGEST_SOURCES)
        lora = lorawan_filters(settings.sources, settings.ingest_lorawan_root)
        acl = render_acl(prefix, devices, simulator=simulator, lorawan=lora)
        users = [a.user for a in service_accounts(prefix, simulator=simulator)]
        users += [d.device_id for d in devices]
        plan = plan_credentials(
            users,
            parse_secrets(_read_text(secrets_path)),
            parse_password_file(_read_text(passwd_path)),
            rotate=rotate,
        )
        unknown_show = sorted(set(show) - set(plan.passwords))
        if unknown_show:
            raise CredentialError(f"cannot show unknown user(s): {', '.join(unknown_show)}")
    except CredentialError as exc:
        print(f"cityops mqtt credentials: {exc}", file=sys.stderr)
        return 1
    out.mkdir(parents=True, exist_ok=True)
    # Secrets first: if a later write fails, a re-run rebuilds the hashes from them.
    _write_file(secrets_path, render_secrets(plan.passwords), 0o600, keep_mode=False)
    _write_file(passwd_path, render_password_file(plan.hashes), 0o640)
    _write_file(acl_path, acl, 0o644)
    _write_file(
        dynsec_path,
        render_dynsec(prefix, devices, plan.hashes, simulator=simulator, lorawan=lora),
        0o640,
    )
    kinds = {k: sum(d.kind is k for d in devices) for k in DeviceKind}
    print(
        f"{len(devices)} devices ("
        + ", ".join(f"{n} {k.value}" for k, n in kinds.items())
        + f"), prefix {prefix!r}; users: {len(plan.added)} added, {len(plan.rotated)} "
        f"rotated, {len(plan.removed)} removed, {len(plan.kept)} kept"
    )
    for label, names in (("added", plan.added), ("rotated", plan.rotated)):
        if names and len(names) <= 20:
            print(f"  {label}: {', '.join(names)}")
    if plan.removed:
        print(f"  removed (no longer in the registry): {', '.join(plan.removed)}")
    if simulator:
        print("  cityops-simulator may publish as every device: use it for the demo only")
    print(f"wrote {passwd_path}, {acl_path}, {dynsec_path}, {secrets_path} (0600)")
    for user in show:
        print(f"{user}:{plan.passwords[user]}")
    if plan.added or plan.rotated or plan.removed:
        print("reload Mosquitto to apply: systemctl reload mosquitto (or kill -HUP its pid)")
    return 0


def _read_text(path: Path) -> str:
    return path.read_text() if path.exists() else ""


def _write_file(path: Path, text: str, mode: int, *, keep_mode: bool = True) -> None:
    """Replace `path` atomically, created with `mode`. With `keep_mode` an existing file
    keeps its mode and owner (an operator may have given the broker's group read access)."""
    uid = gid = -1
    if path.exists():
        st = path.stat()
        uid, gid = st.st_uid, st.st_gid
        if keep_mode:
            mode = st.st_mode & 0o777
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        os.chmod(tmp, mode)  # the umask may have narrowed it
        if uid >= 0 and (uid, gid) != (os.geteuid(), os.getegid()):
            os.chown(tmp, uid, gid)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _cmd_dl_list(args: argparse.Namespace) -> int:
    from cityops.ingest.deadletters import print_summary

    return print_summary(load_settings(), limit=args.limit)


def _cmd_dl_replay(args: argparse.Namespace) -> int:
    from cityops.ingest.deadletters import replay

    return replay(load_settings(), reason=args.reason, limit=args.limit)
