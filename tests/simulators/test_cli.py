"""`cityops simulate` end to end: settings from the environment, registry seeded, run."""

from __future__ import annotations

import uuid

import psycopg
import pytest

from cityops.api.cli import main
from tests.conftest import MQTT_URL


@pytest.fixture
def env(db_url: str, topic_prefix: str, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("CITYOPS_DATABASE_URL", db_url)
    monkeypatch.setenv("CITYOPS_MQTT_URL", MQTT_URL)
    monkeypatch.setenv("CITYOPS_TOPIC_PREFIX", topic_prefix)
    return db_url


def test_simulate_seeds_the_registry_and_runs(env: str) -> None:
    code = main([
        "simulate", "--scenario", "test", "--duration", "1", "--start", "now - 5 minutes",
        "--client-id-prefix", f"t{uuid.uuid4().hex[:6]}-",
    ])
    assert code == 0
    with psycopg.connect(env) as conn:
        counts = conn.execute(
            "SELECT (SELECT count(*) FROM bins), (SELECT count(*) FROM signal_controllers),"
            " (SELECT count(*) FROM trucks)"
        ).fetchone()
    assert counts == (12, 2, 1)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--scenario", "nowhere"], "unknown scenario 'nowhere'"),
        (["--start", "2999-01-01T00:00Z"], "is in the future"),
        (["--start", "soon"], "start must be 'now'"),
        (["--speed", "0.5"], "--speed must be >= 1"),
    ],
)
def test_simulate_refuses_bad_input_clearly(
    args: list[str], message: str, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CITYOPS_TOPIC_PREFIX", f"test-{uuid.uuid4().hex[:8]}")
    assert main(["simulate", "--no-seed-registry", *args]) == 2
    assert message in capsys.readouterr().err
