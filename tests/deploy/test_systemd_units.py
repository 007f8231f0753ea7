"""deploy/systemd: the units of a single-host install without containers.

Parsed the way systemd reads them (a key may repeat; list settings accumulate) and compared
with the code and the other deployments: every ExecStart is a `cityops` command the real
parser accepts, the units run the same commands with the same broker accounts as compose
and Kubernetes, the timers start the daily jobs at the CronJobs' times, every service is
hardened alike. Where `systemd-analyze` is installed it verifies the files too (skipped
where it is not).
"""

from __future__ import annotations

import argparse
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from cityops.api.cli import build_parser
from cityops.ingest.mqttauth import service_accounts
from tests.deploy.support import (
    DEPLOY,
    REPO,
    SECRET_NAME,
    command_args,
    interpolate_tree,
    load_compose,
    load_k8s,
    pod_spec,
    sample_env,
    service_env,
    setting_names,
    settings_classes,
)

UNITS = DEPLOY / "systemd"
CITYOPS = "/opt/cityops/bin/cityops"
ENV_FILE = "/etc/cityops/cityops.env"
LONG_RUNNING = (
    "cityops-ingest",
    "cityops-api",
    "cityops-replanner",
    "cityops-traffic-control",
    "cityops-traffic-measures",
)
JOBS = ("cityops-plan", "cityops-roadworks-overview")
# The same in every service: no privileges, nothing writable but the state directory.
HARDENING = {
    "NoNewPrivileges": "yes",
    "CapabilityBoundingSet": "",
    "ProtectSystem": "strict",
    "ProtectHome": "yes",
    "PrivateTmp": "yes",
    "PrivateDevices": "yes",
    "ReadWritePaths": "/var/lib/cityops",
    "StateDirectory": "cityops",
    "WorkingDirectory": "/var/lib/cityops",
    "User": "cityops",
    "Group": "cityops",
}
# Options whose assignments add up to a list (an empty one resets it); others: last wins.
_LISTS = {
    "After",
    "Before",
    "Wants",
    "Requires",
    "PartOf",
    "Environment",
    "EnvironmentFile",
    "WantedBy",
    "ReadWritePaths",
    "ExecStart",
}

Unit = dict[str, list[tuple[str, str]]]


def parse_unit(path: Path) -> Unit:
    """Sections -> (key, value) in file order, repeated keys kept; comments and blank
    lines dropped, lines ending in a backslash joined (systemd.syntax(7))."""
    sections: Unit = {}
    current: str | None = None
    pending = ""
    for number, raw in enumerate(path.read_text().splitlines(), start=1):
        line = pending + raw.strip()
        if line.endswith("\\"):
            pending = line[:-1] + " "
            continue
        pending = ""
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            current = line[1:-1]
            assert current not in sections, f"{path.name}:{number}: [{current}] twice"
            sections[current] = []
            continue
        key, sep, value = line.partition("=")
        assert sep and current, f"{path.name}:{number}: not 'Key=value' in a section: {raw!r}"
        sections[current].append((key.strip(), value.strip()))
    return sections


def all_values(unit: Unit, section: str, key: str) -> list[str]:
    """A list setting: every assignment's words; an empty assignment resets the list."""
    out: list[str] = []
    for k, v in unit.get(section, []):
        if k == key:
            out = [] if v == "" else [*out, *shlex.split(v)]
    return out


def value(unit: Unit, section: str, key: str) -> str | None:
    """A single-valued setting: the last assignment wins."""
    assert key not in _LISTS
    found = [v for k, v in unit.get(section, []) if k == key]
    return found[-1] if found else None


def environment(unit: Unit) -> dict[str, str]:
    env = {}
    for item in all_values(unit, "Service", "Environment"):
        name, _, val = item.partition("=")
        env[name] = val
    return env


def exec_argv(unit: Unit) -> list[str]:
    (line,) = [v for k, v in unit["Service"] if k == "ExecStart"]
    return shlex.split(line)


def _normalised(args: list[str]) -> tuple[str, ...]:
    """A cityops command without the options that only say where it binds or writes."""
    out: list[str] = []
    skip = False
    for arg in args:
        if skip:
            skip = False
        elif arg in ("--host", "--port", "--out"):
            skip = True
        else:
            out.append(arg)
    return tuple(out)


@pytest.fixture(scope="module")
def units() -> dict[str, Unit]:
    files = sorted(p for p in UNITS.iterdir() if p.suffix in (".service", ".timer", ".target"))
    return {p.name: parse_unit(p) for p in files}


@pytest.fixture(scope="module")
def services(units: dict[str, Unit]) -> dict[str, Unit]:
    return {n.removesuffix(".service"): u for n, u in units.items() if n.endswith(".service")}


@pytest.fixture(scope="module")
def parser() -> argparse.ArgumentParser:
    return build_parser()


@pytest.fixture(scope="module")
def compose_commands() -> dict[tuple[str, ...], dict[str, str]]:
    """Normalised command -> environment of each cityops service of compose."""
    compose = load_compose()
    rendered: dict[str, Any] = interpolate_tree(compose, sample_env(compose))
    return {
        _normalised(command_args(svc["command"])): service_env(svc)
        for svc in rendered["services"].values()
        if "command" in svc and "cityops" in str(svc.get("image", ""))
    }


@pytest.fixture(scope="module")
def cronjobs() -> dict[tuple[str, ...], dict[str, Any]]:
    """Normalised command -> CronJob spec of the k8s manifests."""
    out = {}
    for _path, doc in load_k8s():
        if doc["kind"] == "CronJob":
            spec = pod_spec(doc)
            assert spec is not None
            (container,) = spec["containers"]
            out[_normalised([str(a) for a in container["args"]])] = doc
    return out


def test_the_expected_units_are_there(units: dict[str, Unit]) -> None:
    expected = {f"{n}.service" for n in (*LONG_RUNNING, *JOBS, "cityops-migrate")}
    expected |= {f"{n}.timer" for n in JOBS} | {"cityops.target"}
    assert set(units) == expected
    for name, unit in units.items():
        assert value(unit, "Unit", "Description"), name


def test_every_service_runs_a_cityops_command(
    services: dict[str, Unit], parser: argparse.ArgumentParser
) -> None:
    for name, unit in services.items():
        argv = exec_argv(unit)
        assert argv[0] == CITYOPS, name
        try:
            args = parser.parse_args(argv[1:])
        except SystemExit:
            pytest.fail(f"{name}: `cityops {shlex.join(argv[1:])}` is not a cityops command")
        assert callable(args.func), name


def test_the_units_run_what_compose_and_kubernetes_run(
    services: dict[str, Unit],
    compose_commands: dict[tuple[str, ...], dict[str, str]],
    cronjobs: dict[tuple[str, ...], dict[str, Any]],
) -> None:
    ours = {_normalised(exec_argv(u)[1:]) for u in services.values()}
    assert ours == set(compose_commands) | set(cronjobs)


def test_each_unit_logs_in_to_the_broker_with_its_services_account(
    services: dict[str, Unit],
    compose_commands: dict[tuple[str, ...], dict[str, str]],
) -> None:
    accounts = {a.user for a in service_accounts("cityops")}
    for name, unit in services.items():
        command = _normalised(exec_argv(unit)[1:])
        user = environment(unit).get("CITYOPS_MQTT_USERNAME")
        files = all_values(unit, "Service", "EnvironmentFile")
        assert files[0] == ENV_FILE, name  # the shared file first: the account's overrides it
        expected = compose_commands.get(command, {}).get("CITYOPS_MQTT_USERNAME")
        assert user == expected, name
        if user is None:
            assert files == [ENV_FILE], name
            continue
        assert user in accounts, name
        assert files == [ENV_FILE, f"/etc/cityops/mqtt-{user.removeprefix('cityops-')}.env"]
        assert "mosquitto.service" in all_values(unit, "Unit", "After"), name
        assert "mosquitto.service" in all_values(unit, "Unit", "Wants"), name


def test_services_are_hardened_and_ordered_after_their_dependencies(
    services: dict[str, Unit],
) -> None:
    for name, unit in services.items():
        for key, want in HARDENING.items():
            got = (
                " ".join(all_values(unit, "Service", key))
                if key in _LISTS
                else value(unit, "Service", key)
            )
            assert got == want, f"{name}: {key}={got!r}, not {want!r}"
        after = all_values(unit, "Unit", "After")
        assert "postgresql.service" in after, name
        assert "postgresql.service" in all_values(unit, "Unit", "Wants"), name
        if name != "cityops-migrate":  # nothing runs on an older schema
            assert "cityops-migrate.service" in all_values(unit, "Unit", "Requires"), name
            assert "cityops-migrate.service" in after, name


def test_long_running_services_restart_and_belong_to_the_target(
    services: dict[str, Unit],
) -> None:
    for name in LONG_RUNNING:
        unit = services[name]
        assert value(unit, "Service", "Type") == "exec", name
        assert value(unit, "Service", "Restart") == "on-failure", name
        assert value(unit, "Unit", "StartLimitIntervalSec") == "0", name  # never give up
        assert all_values(unit, "Unit", "PartOf") == ["cityops.target"], name
        assert all_values(unit, "Install", "WantedBy") == ["cityops.target"], name
    for name in (*JOBS, "cityops-migrate"):
        assert value(services[name], "Service", "Type") == "oneshot", name
        assert "Install" not in services[name], f"{name} is started by its timer or needs"
    assert value(services["cityops-migrate"], "Service", "RemainAfterExit") == "yes"


def test_timers_start_the_daily_jobs_at_the_cronjobs_times(
    units: dict[str, Unit],
    services: dict[str, Unit],
    cronjobs: dict[tuple[str, ...], dict[str, Any]],
) -> None:
    timers = {n: u for n, u in units.items() if n.endswith(".timer")}
    started = set()
    for name, timer in timers.items():
        target = value(timer, "Timer", "Unit") or name.replace(".timer", ".service")
        service = target.removesuffix(".service")
        assert service in services, f"{name} starts {target}, which is not in deploy/systemd"
        assert value(services[service], "Service", "Type") == "oneshot", name
        started.add(service)
        (calendar,) = [v for k, v in timer["Timer"] if k == "OnCalendar"]
        m = re.fullmatch(r"\*-\*-\* (\d\d):(\d\d):00 ([A-Za-z_]+/[A-Za-z_]+)", calendar)
        assert m, f"{name}: OnCalendar={calendar!r} is not a daily time with a time zone"
        hour, minute, zone = int(m.group(1)), int(m.group(2)), m.group(3)
        ZoneInfo(zone)  # a real zone
        cron = cronjobs[_normalised(exec_argv(services[service])[1:])]
        assert cron["spec"]["schedule"] == f"{minute} {hour} * * *", name
        assert cron["spec"]["timeZone"] == zone, name
        assert all_values(timer, "Install", "WantedBy") == ["timers.target"], name
    assert started == set(JOBS)


def test_env_example_sets_only_real_settings_and_no_secret() -> None:
    known = set().union(*(setting_names(cls) for cls in settings_classes()))
    values = {}
    for line in (UNITS / "cityops.env.example").read_text().splitlines():
        if line and not line.startswith("#"):
            key, sep, val = line.partition("=")
            assert sep and re.fullmatch(r"CITYOPS_[A-Z0-9_]+", key), line
            values[key] = val
    assert set(values) <= known, set(values) - known
    assert "CITYOPS_MQTT_USERNAME" not in values and "CITYOPS_MQTT_PASSWORD" not in values
    for key, val in values.items():
        if SECRET_NAME.search(key) or key == "CITYOPS_DATABASE_URL":
            assert val == "", f"{key} has a value in the example"


def test_operations_md_describes_the_install() -> None:
    text = (REPO / "docs" / "operations.md").read_text()
    section = text.split("\n## Install on one host with systemd", 1)[1].split("\n## ", 1)[0]
    for path in sorted(UNITS.iterdir()):
        if path.suffix in (".service", ".timer", ".target"):
            assert path.stem in section, f"{path.name} is not in the systemd install section"
    for needle in (
        ENV_FILE,
        "cityops.env.example",
        "/opt/cityops",
        "useradd",
        "journalctl",
        "systemctl enable",
        "list-timers",
    ):
        assert needle in section, needle


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze here")
def test_systemd_analyze_verifies_the_units(tmp_path: Path, units: dict[str, Unit]) -> None:
    """systemd's own checks (unknown keys, bad values, missing required units); ExecStart
    points at this environment's `cityops`, since /opt/cityops does not exist here."""
    here = Path(sys.executable).parent / "cityops"
    assert here.exists(), here
    for name in units:
        text = (UNITS / name).read_text().replace(CITYOPS, str(here))
        (tmp_path / name).write_text(text)
    run = subprocess.run(
        ["systemd-analyze", "verify", *sorted(units)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
    )
    assert (run.returncode, run.stdout + run.stderr) == (0, "")
    for name, unit in units.items():
        for key, spec in unit.get("Timer", []):
            if key == "OnCalendar":
                cal = subprocess.run(
                    ["systemd-analyze", "calendar", spec],
                    capture_output=True,
                    text=True,
                    check=False,
                )
                assert cal.returncode == 0, f"{name}: {cal.stderr}"
                assert f"Normalized form: {spec}" in cal.stdout, cal.stdout
