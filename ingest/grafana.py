# grafana-client ships py.typed but its methods are unannotated.
# mypy: disable-error-code="no-untyped-call"
"""`cityops grafana publish`: push the folder, data source, dashboards and alert rules of
deploy/grafana to a running Grafana 11+ through its HTTP API (grafana-client).

It lives in `ingest/` because the ingest owns what the dashboards read: the database, its
migrations and the read-only role Grafana connects as (`cityops_grafana`).

Idempotent: each object is looked up by its fixed uid and created when missing, updated
otherwise, so running it twice leaves Grafana as running it once.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from grafana_client.api import GrafanaApi
from grafana_client.client import GrafanaClientError

__all__ = ["GrafanaTarget", "publish", "register"]

logger = logging.getLogger(__name__)

#: The provisioning folder: in the checkout this package's folder (ingest/) sits in, else
#: where the container image puts it (deploy/Dockerfile copies it to
#: /opt/cityops/deploy/grafana). parents[1] is the checkout: ingest/grafana.py -> ingest/ -> .
_CANDIDATE_DIRS = (
    Path(__file__).resolve().parents[1] / "deploy" / "grafana",
    Path("/opt/cityops/deploy/grafana"),
)
DEFAULT_DIR = next((d for d in _CANDIDATE_DIRS if d.is_dir()), _CANDIDATE_DIRS[0])
FOLDER_UID = "cityops"
FOLDER_TITLE = "cityops"
DATASOURCE_UID = "cityops-pg"


@dataclass(frozen=True)
class GrafanaTarget:
    """Where to publish and how Grafana reaches the database (read-only role)."""

    url: str
    token: str
    db_host: str
    db_name: str
    db_user: str
    db_password: str
    sslmode: str = "require"
    timescaledb: bool = False


def _missing(exc: GrafanaClientError) -> bool:
    return bool(exc.status_code == 404)


def datasource(target: GrafanaTarget) -> dict[str, Any]:
    return {
        "uid": DATASOURCE_UID,
        "name": "cityops",
        "type": "grafana-postgresql-datasource",
        "access": "proxy",
        "url": target.db_host,
        "user": target.db_user,
        "isDefault": True,
        "jsonData": {
            "database": target.db_name,
            "sslmode": target.sslmode,
            "postgresVersion": 1500,
            "timescaledb": target.timescaledb,
            "maxOpenConns": 10,
        },
        "secureJsonData": {"password": target.db_password},
    }


def load_dashboards(directory: Path) -> list[dict[str, Any]]:
    return [
        json.loads(p.read_text(encoding="utf-8"))
        for p in sorted((directory / "dashboards").glob("*.json"))
    ]


def load_alert_rules(directory: Path) -> list[dict[str, Any]]:
    """Alert rules of the file-provisioning YAML in the shape of the provisioning API."""
    path = directory / "provisioning" / "alerting" / "cityops-rules.yaml"
    doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    rules = []
    for group in doc["groups"]:
        for rule in group["rules"]:
            rules.append(
                {**rule, "folderUID": FOLDER_UID, "ruleGroup": group["name"],
                 "orgID": group.get("orgId", 1)}
            )
    return rules


def publish(api: GrafanaApi, target: GrafanaTarget, directory: Path = DEFAULT_DIR) -> None:
    """Create or update the folder, data source, dashboards and alert rules."""
    try:
        api.folder.get_folder(FOLDER_UID)
        api.folder.update_folder(FOLDER_UID, title=FOLDER_TITLE, overwrite=True)
        logger.info("folder %s updated", FOLDER_UID)
    except GrafanaClientError as exc:
        if not _missing(exc):
            raise
        api.folder.create_folder(FOLDER_TITLE, uid=FOLDER_UID)
        logger.info("folder %s created", FOLDER_UID)

    ds = datasource(target)
    try:
        api.datasource.get_datasource_by_uid(DATASOURCE_UID)
        api.datasource.update_datasource_by_uid(DATASOURCE_UID, ds)
        logger.info("data source %s updated", DATASOURCE_UID)
    except GrafanaClientError as exc:
        if not _missing(exc):
            raise
        api.datasource.create_datasource(ds)
        logger.info("data source %s created", DATASOURCE_UID)

    for dash in load_dashboards(directory):
        api.dashboard.update_dashboard(
            {"dashboard": {**dash, "id": None}, "folderUid": FOLDER_UID, "overwrite": True,
             "message": "cityops grafana publish"}
        )
        logger.info("dashboard %s published", dash["uid"])

    for rule in load_alert_rules(directory):
        uid = rule["uid"]
        try:
            api.alertingprovisioning.get_alertrule(uid)
            api.alertingprovisioning.update_alertrule(uid, rule)
            logger.info("alert rule %s updated", uid)
        except GrafanaClientError as exc:
            if not _missing(exc):
                raise
            api.alertingprovisioning.create_alertrule(rule)
            logger.info("alert rule %s created", uid)


def _run(args: argparse.Namespace) -> int:
    password = os.environ.get(args.db_password_env, "")
    if not password:
        print(f"cityops: set {args.db_password_env} to the Grafana role's database password")
        return 2
    target = GrafanaTarget(
        url=args.url, token=args.token, db_host=args.db_host, db_name=args.db_name,
        db_user=args.db_user, db_password=password, sslmode=args.sslmode,
        timescaledb=args.timescaledb,
    )
    api = GrafanaApi.from_url(target.url, credential=target.token)
    publish(api, target, Path(args.dir))
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    grafana = sub.add_parser("grafana", help="Grafana dashboards and alert rules")
    gsub = grafana.add_subparsers(dest="grafana_command", metavar="ACTION", required=True)
    p = gsub.add_parser(
        "publish", help="create or update the cityops folder, data source, dashboards, alerts"
    )
    p.add_argument("--url", required=True, help="Grafana base URL, e.g. https://grafana:3000")
    p.add_argument("--token", required=True, help="service account token (Editor or Admin)")
    p.add_argument("--db-host", default="localhost:5432", help="host:port as Grafana sees it")
    p.add_argument("--db-name", default="cityops")
    p.add_argument("--db-user", default="cityops_grafana", help="the read-only role")
    p.add_argument("--db-password-env", default="CITYOPS_GRAFANA_DB_PASSWORD",
                   help="environment variable holding the role's password")
    p.add_argument("--sslmode", default="require",
                   choices=["disable", "require", "verify-ca", "verify-full"])
    p.add_argument("--timescaledb", action="store_true", help="database runs TimescaleDB")
    p.add_argument("--dir", default=str(DEFAULT_DIR), help="the deploy/grafana folder")
    p.set_defaults(func=_run)
