"""MQTT credentials and ACLs for Mosquitto, generated from the device registry.

`cityops mqtt credentials` turns the registry's devices (and a fixed set of service
accounts) into three files:

* a Mosquitto `password_file` with one user per device, hashed exactly as `mosquitto_passwd`
  of Mosquitto 2.x writes it (`$7$`: PBKDF2-HMAC-SHA512, 101 iterations, 12-byte salt);
* an `acl_file` in which each device may publish only on its own
  `{prefix}/v1/{kind}/{id}/{telemetry|events|status}` and read only its own
  `{prefix}/v1/{kind}/{id}/cmd/#`, and each service reads and writes what it needs;
* the clear passwords for provisioning (kept so re-runs are idempotent and rotation
  touches one user only).

Everything here is pure (strings in, strings out); the command line reads the registry and
writes the files. User names are the device ids as they appear in topics: a bin publishes
under its **sensor id**, so the sensor's credentials follow the sensor, not the bin.

Mosquitto 2.0's `acl_file` does not check SUBSCRIBE packets (every subscription is granted);
it checks `read` on each message it would deliver and `write` on each PUBLISH (refused at
QoS 1 with PUBACK reason 0x87 for MQTT 5 clients, dropped silently for 3.1.1). That is
enough: a device that subscribes to another device's command topic never receives anything.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import secrets
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from cityops.ingest.contract import CONTRACT_VERSION, DEVICE_ID_PATTERN, Channel, DeviceKind

__all__ = [
    "PBKDF2_ITERATIONS",
    "RESERVED_PREFIX",
    "SIMULATOR_ACCOUNT",
    "AccountAcl",
    "CredentialError",
    "CredentialPlan",
    "Device",
    "acl_for_device",
    "hash_password",
    "new_password",
    "parse_password_file",
    "parse_secrets",
    "plan_credentials",
    "render_acl",
    "render_dynsec",
    "render_password_file",
    "render_secrets",
    "service_accounts",
    "verify_password",
]

# What mosquitto_passwd 2.0 writes (`$7$101$<salt>$<hash>`); Mosquitto reads the count back
# from the line, so existing files stay valid if a later version raises it.
PBKDF2_ITERATIONS = 101
_SALT_BYTES = 12
_HASH_BYTES = 64
_DEVICE_ID_RE = re.compile(DEVICE_ID_PATTERN)
_USER_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_\-]{0,63}$")

SIMULATOR_ACCOUNT = "cityops-simulator"
# Service accounts and the services' client ids start with this; no device id may, so that
# a device (client id = user name on the device listener) can never take over their sessions.
RESERVED_PREFIX = "cityops-"

# Commands each kind of device receives (see docs/mqtt.md, "Commands").
_DEVICE_CHANNELS = tuple(c.value for c in Channel)


class CredentialError(ValueError):
    """The registry or the existing files do not allow consistent credentials."""


@dataclass(frozen=True, slots=True)
class Device:
    """A device as it appears in topics: its kind and the id it publishes under."""

    kind: DeviceKind
    device_id: str

    def __post_init__(self) -> None:
        if not _DEVICE_ID_RE.match(self.device_id):
            raise CredentialError(f"device id {self.device_id!r} is not a valid topic level")


@dataclass(frozen=True, slots=True)
class AccountAcl:
    """One MQTT user and the topic filters it may read and write."""

    user: str
    read: tuple[str, ...] = ()
    write: tuple[str, ...] = ()
    comment: str = ""


def _head(prefix: str) -> str:
    return f"{prefix}/{CONTRACT_VERSION}"


def acl_for_device(prefix: str, device: Device) -> AccountAcl:
    """A device publishes only on its own channels and reads only its own commands."""
    base = f"{_head(prefix)}/{device.kind.value}/{device.device_id}"
    return AccountAcl(
        user=device.device_id,
        write=tuple(f"{base}/{channel}" for channel in _DEVICE_CHANNELS),
        read=(f"{base}/cmd/#",),
        comment=f"{device.kind.value} {device.device_id}",
    )


def service_accounts(
    prefix: str, *, simulator: bool = False, lorawan: tuple[str, ...] = ()
) -> list[AccountAcl]:
    """The platform's own MQTT users, each limited to what its service does.

    `simulator` adds `cityops-simulator`, which may publish as *every* device: for the demo
    only, never on a broker that real devices use. `lorawan`: the LoRaWAN network servers'
    uplink filters (`lorawan_filters`), which the ingest and the re-planner read.
    """
    h = _head(prefix)
    accounts = [
        AccountAcl(
            "cityops-ingest",
            read=(f"{h}/+/+/+", *lorawan),
            comment="ingest: everything devices publish, never commands",
        ),
        AccountAcl(
            "cityops-control",
            read=(f"{h}/signal/+/events", f"{h}/signal/+/status", f"{h}/sim/clock"),
            write=(f"{h}/signal/+/cmd/#",),
            comment="adaptive signal control: controller events in, timing commands out",
        ),
        AccountAcl(
            "cityops-planner",
            read=(f"{h}/bin/+/telemetry", f"{h}/truck/+/+", *lorawan),
            write=(f"{h}/truck/+/cmd/#",),
            comment="routing plan and re-planner: fill levels and trucks in, routes out",
        ),
        AccountAcl(
            "cityops-api",
            write=(f"{h}/truck/+/events",),
            comment="API: stop events reported from the truck tablet",
        ),
        AccountAcl(
            "cityops-replay",
            write=(f"{h}/+/+/+", *lorawan),
            comment="operators: cityops deadletters replay re-publishes device messages",
        ),
    ]
    if simulator:
        accounts.append(
            AccountAcl(
                SIMULATOR_ACCOUNT,
                read=(f"{h}/+/+/cmd/#",),
                write=(f"{h}/+/+/+", f"{h}/sim/clock", *lorawan),
                comment="DEMO ONLY: the simulators publish as every device",
            )
        )
    return accounts


def lorawan_filters(sources: Iterable[str], root: str) -> tuple[str, ...]:
    """The uplink topic filters of the LoRaWAN sources among `sources`, under `root`."""
    from cityops.ingest.lorawan import SUBSCRIPTIONS

    head = f"{root}/" if root else ""
    return tuple(f"{head}{SUBSCRIPTIONS[s]}" for s in sources if s in SUBSCRIPTIONS)


def render_acl(
    prefix: str, devices: Iterable[Device], *, simulator: bool = False,
    lorawan: tuple[str, ...] = (),
) -> str:
    """The Mosquitto `acl_file`: service accounts first, then one block per device.

    No line applies to anonymous clients; the shipped configuration refuses them anyway.
    """
    accounts = service_accounts(prefix, simulator=simulator, lorawan=lorawan)
    service_names = {a.user for a in accounts}
    device_list = sorted(devices, key=lambda d: (d.kind.value, d.device_id))
    _check_unique(device_list, service_names)
    lines = [
        "# Generated by `cityops mqtt credentials` from the device registry; do not edit.",
        f"# Topic prefix {prefix!r}; {len(device_list)} devices, {len(accounts)} service accounts.",
        "",
    ]
    for account in accounts + [acl_for_device(prefix, d) for d in device_list]:
        if account.comment:
            lines.append(f"# {account.comment}")
        lines.append(f"user {account.user}")
        lines.extend(f"topic read {t}" for t in account.read)
        lines.extend(f"topic write {t}" for t in account.write)
        lines.append("")
    return "\n".join(lines)


def _check_unique(devices: list[Device], service_names: set[str]) -> None:
    seen: dict[str, Device] = {}
    for d in devices:
        if d.device_id in service_names or d.device_id.lower().startswith(RESERVED_PREFIX):
            raise CredentialError(
                f"device id {d.device_id!r} clashes with the service accounts "
                f"({RESERVED_PREFIX}*, also the services' MQTT client ids)"
            )
        other = seen.get(d.device_id)
        if other is not None:
            raise CredentialError(
                f"device id {d.device_id!r} is used by a {other.kind.value} and a "
                f"{d.kind.value}: MQTT user names must be unique"
            )
        seen[d.device_id] = d


# --- password hashing --------------------------------------------------------------------


def hash_password(
    password: str, *, salt: bytes | None = None, iterations: int = PBKDF2_ITERATIONS
) -> str:
    """The `$7$` hash Mosquitto 2.x checks: `$7$<iterations>$<b64 salt>$<b64 PBKDF2-SHA512>`."""
    salt = secrets.token_bytes(_SALT_BYTES) if salt is None else salt
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, iterations, _HASH_BYTES)
    salt_b64 = base64.b64encode(salt).decode()
    return f"$7${iterations}${salt_b64}${base64.b64encode(digest).decode()}"


def verify_password(password: str, encoded: str) -> bool:
    """Whether `password` matches a Mosquitto hash (`$7$` PBKDF2 or the old `$6$` SHA-512)."""
    parts = encoded.split("$")
    try:
        if len(parts) == 5 and parts[1] == "7":
            iterations, salt = int(parts[2]), base64.b64decode(parts[3], validate=True)
            expected = base64.b64decode(parts[4], validate=True)
            digest = hashlib.pbkdf2_hmac(
                "sha512", password.encode(), salt, iterations, len(expected)
            )
        elif len(parts) == 4 and parts[1] == "6":
            salt = base64.b64decode(parts[2], validate=True)
            expected = base64.b64decode(parts[3], validate=True)
            digest = hashlib.sha512(password.encode() + salt).digest()
        else:
            return False
    except ValueError:
        return False
    return hmac.compare_digest(digest, expected)


def new_password() -> str:
    """A random password: 32 URL-safe characters (192 bits), no ':' or whitespace."""
    return secrets.token_urlsafe(24)


# --- files -------------------------------------------------------------------------------


def _parse_user_lines(text: str, what: str) -> dict[str, str]:
    entries: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        user, sep, value = line.partition(":")
        if not sep or not _USER_RE.match(user) or not value:
            raise CredentialError(f"{what} line {number}: expected 'user:value'")
        if user in entries:
            raise CredentialError(f"{what} line {number}: user {user!r} appears twice")
        entries[user] = value
    return entries


def parse_password_file(text: str) -> dict[str, str]:
    """User -> hash from a Mosquitto password file."""
    return _parse_user_lines(text, "password file")


def parse_secrets(text: str) -> dict[str, str]:
    """User -> clear password from the provisioning file this module writes."""
    return _parse_user_lines(text, "secrets file")


def render_dynsec(
    prefix: str,
    devices: Iterable[Device],
    hashes: Mapping[str, str],
    *,
    simulator: bool = False,
    lorawan: tuple[str, ...] = (),
) -> str:
    """The configuration file of Mosquitto's dynamic-security plugin: the same users,
    passwords and topics as `render_acl`, plus what `acl_file` cannot say: which SUBSCRIBE
    packets are allowed. Everything not granted is refused, subscriptions included: a
    device may subscribe only to its own commands, never to another device's topics nor to
    a shared subscription (`$share/<group>/...`), so it cannot take a share of the
    ingest's messages. The services that read device topics may also subscribe to them
    shared (`$share/+/...`), so several instances split the load.

    Passwords are the `$7$` hashes of the password file (the plugin uses the same
    PBKDF2-SHA512), so both files accept the same passwords.
    """
    accounts = service_accounts(prefix, simulator=simulator, lorawan=lorawan)
    service_names = {a.user for a in accounts}
    device_list = sorted(devices, key=lambda d: (d.kind.value, d.device_id))
    _check_unique(device_list, service_names)
    clients: list[dict[str, object]] = []
    roles: list[dict[str, object]] = []
    for account in accounts + [acl_for_device(prefix, d) for d in device_list]:
        encoded = hashes.get(account.user)
        if encoded is None:
            raise CredentialError(f"no password hash for user {account.user!r}")
        parts = encoded.split("$")
        if len(parts) != 5 or parts[1] != "7":
            raise CredentialError(f"the hash of {account.user!r} is not a $7$ (PBKDF2) hash")
        _, _, iterations, salt_b64, digest_b64 = parts
        clients.append({
            "username": account.user,
            "textName": account.comment or account.user,
            "password": digest_b64,
            "salt": salt_b64,
            "iterations": int(iterations),
            "roles": [{"rolename": account.user}],
        })
        acls: list[dict[str, object]] = []
        for topic in account.write:
            acls.append({"acltype": "publishClientSend", "topic": topic, "allow": True})
        for topic in account.read:
            acls.append({"acltype": "publishClientReceive", "topic": topic, "allow": True})
            acls.append({"acltype": "subscribePattern", "topic": topic, "allow": True})
            if account.user in service_names:
                acls.append(
                    {"acltype": "subscribePattern", "topic": f"$share/+/{topic}", "allow": True}
                )
            acls.append({"acltype": "unsubscribePattern", "topic": topic, "allow": True})
        roles.append({"rolename": account.user, "textdescription": account.comment,
                      "acls": acls})
    config = {
        "defaultACLAccess": {
            "publishClientSend": False,
            "publishClientReceive": False,
            "subscribe": False,
            "unsubscribe": True,
        },
        "clients": clients,
        "groups": [],
        "roles": roles,
    }
    return json.dumps(config, indent=1, ensure_ascii=False) + "\n"


def render_password_file(hashes: Mapping[str, str]) -> str:
    """A Mosquitto `password_file` (`user:hash` lines, sorted)."""
    return "".join(f"{user}:{hashes[user]}\n" for user in sorted(hashes))


def render_secrets(passwords: Mapping[str, str]) -> str:
    """The provisioning file: `user:password` lines, the same form `mosquitto_passwd -U` reads."""
    head = (
        "# MQTT passwords in clear for provisioning devices and services. Keep this file\n"
        "# secret (mode 0600); `cityops mqtt credentials` keeps these passwords across runs.\n"
    )
    return head + "".join(f"{user}:{passwords[user]}\n" for user in sorted(passwords))


# --- planning a run ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CredentialPlan:
    """What one run of `cityops mqtt credentials` writes and what changed."""

    passwords: dict[str, str]
    hashes: dict[str, str]
    added: list[str] = field(default_factory=list)
    rotated: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)


def plan_credentials(
    users: Iterable[str],
    existing_passwords: Mapping[str, str],
    existing_hashes: Mapping[str, str],
    *,
    rotate: Iterable[str] = (),
    make_password: Callable[[], str] = new_password,
    make_hash: Callable[[str], str] = hash_password,
) -> CredentialPlan:
    """Keep known passwords, create them for new users, replace those to rotate.

    An existing hash is reused when it still matches the kept password, so a re-run without
    changes rewrites byte-identical files; users no longer wanted are dropped (and listed).
    """
    wanted = sorted(set(users))
    rotate_set = set(rotate)
    unknown = sorted(rotate_set - set(wanted))
    if unknown:
        raise CredentialError(f"cannot rotate unknown user(s): {', '.join(unknown)}")
    passwords: dict[str, str] = {}
    hashes: dict[str, str] = {}
    added: list[str] = []
    rotated: list[str] = []
    kept: list[str] = []
    for user in wanted:
        old = existing_passwords.get(user)
        if user in rotate_set or old is None:
            passwords[user] = make_password()
            (rotated if old is not None else added).append(user)
        else:
            passwords[user] = old
            kept.append(user)
        old_hash = existing_hashes.get(user)
        if user not in rotate_set and old_hash and verify_password(passwords[user], old_hash):
            hashes[user] = old_hash
        else:
            hashes[user] = make_hash(passwords[user])
    removed = sorted(set(existing_passwords) - set(wanted))
    return CredentialPlan(passwords, hashes, added, rotated, removed, kept)
