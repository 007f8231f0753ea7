"""The MQTT credential tests' registry: a few devices in a test database and the
`cityops mqtt credentials` command run against it (tests/ingest/conftest.py has the fixture)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cityops.api.cli import main
from cityops.ingest.mqttauth import parse_secrets

__all__ = ["Registry", "generate"]


@dataclass
class Registry:
    prefix: str
    out: Path

    @property
    def secrets(self) -> dict[str, str]:
        return parse_secrets((self.out / "cityops-passwords.secret").read_text())


def generate(registry: Registry, *args: str) -> int:
    """`cityops mqtt credentials --out <registry.out> ARGS`: its exit status."""
    return main(["mqtt", "credentials", "--out", str(registry.out), *args])
