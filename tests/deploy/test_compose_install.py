"""The compose install steps of docs/operations.md work in the order they are written.

Compose interpolates the whole file on every command, so every `${VAR:?}` of compose.yaml
must be set before the first `docker compose` line, even one that starts only the
database. No container engine runs here: the test runs the documented lines *before* the
first `docker compose` (plain shell: cp, sed, python3, openssl) in a scratch copy of
deploy/compose, then checks the `.env` they leave against compose.yaml and the secrets
file against what `cityops mqtt credentials` will keep.
"""

from __future__ import annotations

import base64
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from cityops.ingest.mqttauth import parse_secrets, plan_credentials, service_accounts
from tests.deploy.support import (
    ENV_EXAMPLE,
    REPO,
    compose_variables,
    interpolate_tree,
    load_compose,
    service_env,
)

OPERATIONS = REPO / "docs" / "operations.md"


def install_lines() -> list[str]:
    """The first code block of "Install with Docker Compose", line by line."""
    text = OPERATIONS.read_text()
    section = text.split("\n## Install with Docker Compose\n", 1)[1].split("\n## ", 1)[0]
    return section.split("```\n", 2)[1].splitlines()


def commands(lines: list[str]) -> list[str]:
    """Shell commands without comments, continuation lines joined."""
    out: list[str] = []
    pending = ""
    for raw in lines:
        line = raw.split("  #", 1)[0].rstrip() if not raw.lstrip().startswith("#") else ""
        if not line.strip() and not pending:
            continue
        if line.endswith("\\"):
            pending += line[:-1].strip() + " "
            continue
        out.append((pending + line.strip()).strip())
        pending = ""
    return out


def before_compose(lines: list[str]) -> list[str]:
    """The lines before the first `docker compose` command."""
    for i, line in enumerate(lines):
        if line.startswith("docker compose"):
            return lines[:i]
    raise AssertionError("the install steps run no `docker compose`")


def read_env(path: Path) -> dict[str, str]:
    """`KEY=value` lines as Compose reads an unquoted .env (comments left out)."""
    values = {}
    for line in path.read_text().splitlines():
        m = re.match(r"^([A-Za-z_][A-Za-z0-9_]*)=(.*)$", line)
        if m:
            values[m.group(1)] = m.group(2)
    return values


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return load_compose()


@pytest.fixture(scope="module")
def required(compose: dict[str, Any]) -> set[str]:
    return {
        name for name, refs in compose_variables(compose).items() if any(r.required for r in refs)
    }


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A scratch deploy/compose after the documented lines before the first compose
    command; the city's TLS files are stand-ins."""
    root = tmp_path_factory.mktemp("install")
    folder = root / "deploy" / "compose"
    folder.mkdir(parents=True)
    shutil.copy(ENV_EXAMPLE, folder / ".env.example")
    for name in ("ca.crt", "server.crt", "server.key"):
        (folder / name).write_text(f"stand-in {name}\n")
    script = "\n".join(before_compose(install_lines()))
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    run = subprocess.run(
        ["bash", "-c", script], cwd=root, env=env, capture_output=True, text=True, check=False
    )
    assert run.returncode == 0, run.stderr
    assert run.stderr == "", run.stderr
    assert run.stdout == "", "a value of .env was left empty:\n" + run.stdout
    return folder


def test_required_variables_are_named_before_the_first_compose_command(
    required: set[str],
) -> None:
    text = "\n".join(before_compose(install_lines()))
    missing = sorted(name for name in required if not re.search(rf"\b{name}\b", text))
    assert not missing, f"set only after the first `docker compose`: {missing}"


def test_the_first_steps_set_every_required_variable(
    installed: Path, compose: dict[str, Any], required: set[str]
) -> None:
    env = read_env(installed / ".env")
    assert not sorted(n for n in required if not env.get(n)), env
    interpolate_tree(compose, env)  # raises MissingVariableError for an unset ${VAR:?}
    assert (installed / ".env").stat().st_mode & 0o777 == 0o600
    # the values are usable where compose puts them
    api = service_env(interpolate_tree(compose, env)["services"]["api"])
    assert urlsplit(api["CITYOPS_DATABASE_URL"]).password == env["DB_PASSWORD"]
    assert len(base64.b64decode(env["AUTH_JWT_SECRET"], validate=True)) == 48
    assert api["CITYOPS_ROADWORKS_PUBLIC_BASE_URL"].startswith("https://")
    secrets = {n: v for n, v in env.items() if n.endswith("_PASSWORD")}
    assert len(set(secrets.values())) == len(secrets), "two accounts share a password"
    assert all(re.fullmatch(r"[A-Za-z0-9_-]{32}", v) for v in secrets.values())
    assert (installed / "secrets/tls/server.key").exists()


def test_the_broker_accounts_keep_the_passwords_compose_gives_the_services(
    installed: Path, compose: dict[str, Any]
) -> None:
    """Step 4 (`cityops mqtt credentials`) keeps the passwords it finds in the secrets
    file, so each service logs in to the broker with the password compose gives it."""
    env = read_env(installed / ".env")
    rendered = interpolate_tree(compose, env)
    logins = {}
    for svc in rendered["services"].values():
        e = service_env(svc)
        if "CITYOPS_MQTT_USERNAME" in e:
            logins[e["CITYOPS_MQTT_USERNAME"]] = e["CITYOPS_MQTT_PASSWORD"]
    path = installed / "secrets" / "cityops-passwords.secret"
    assert path.stat().st_mode & 0o777 == 0o600
    known = parse_secrets(path.read_text())
    assert known == logins
    prefix = env.get("TOPIC_PREFIX", "cityops")
    users = [a.user for a in service_accounts(prefix)]
    plan = plan_credentials(users, known, {}, make_hash=lambda p: f"hash-of-{p}")
    assert set(plan.kept) == set(logins)
    assert all(plan.passwords[user] == password for user, password in logins.items())


def test_the_steps_run_in_dependency_order() -> None:
    """Images before containers, the database before its migration, the schema before
    the registry is read for broker accounts, the accounts before the services start."""
    cmds = commands(install_lines())

    def index(pattern: str) -> int:
        found = [i for i, c in enumerate(cmds) if re.search(pattern, c)]
        assert len(found) == 1, f"{pattern!r} in {cmds}"
        return found[0]

    order = [
        index(r"^cp \.env\.example \.env\b"),
        index(r"> secrets/cityops-passwords\.secret$"),
        index(r"^cp ca\.crt server\.crt server\.key secrets/tls/$"),
        index(r"^docker compose build$"),
        index(r"^docker compose up -d timescaledb$"),
        index(r"^docker compose run --rm migrate$"),
        index(r"^docker compose run .* migrate mqtt credentials --out /secrets/mosquitto "),
        index(r"^chown -R 1883:1883 secrets/mosquitto\b"),
        index(r"^docker compose up -d$"),
    ]
    assert order == sorted(order), cmds
    # the credentials run reads and writes the same files the broker mounts
    creds = cmds[order[6]]
    assert '-v "$PWD/secrets:/secrets"' in creds
    assert "--secrets /secrets/cityops-passwords.secret" in creds
    mosquitto = load_compose()["services"]["mosquitto"]["volumes"]
    assert "./secrets/mosquitto:/mosquitto/config/auth:ro" in mosquitto
