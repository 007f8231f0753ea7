"""`cityops routing import-network` and `cityops routing plan` as a user runs them."""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest

from cityops.api.cli import main
from cityops.ingest.config import Settings
from cityops.routing.network import default_extract
from tests.routing.test_daily import _seed
from tests.support.clock import now_utc


@pytest.fixture
def env(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Settings:
    monkeypatch.setenv("CITYOPS_DATABASE_URL", settings.database_url)
    monkeypatch.setenv("CITYOPS_MQTT_URL", settings.mqtt_url)
    monkeypatch.setenv("CITYOPS_TOPIC_PREFIX", settings.topic_prefix)
    monkeypatch.delenv("CITYOPS_OSM_FILE", raising=False)
    return settings


def test_import_network_records_the_active_network(
    env: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["routing", "import-network", str(default_extract()), "--dry-run"]) == 0
    with psycopg.connect(env.database_url) as conn:
        assert conn.execute("SELECT count(*) FROM road_networks").fetchone() == (0,)
    assert main(["routing", "import-network", str(default_extract())]) == 0
    out = capsys.readouterr().out
    assert "one-way edges" in out and "active for planning" in out
    with psycopg.connect(env.database_url) as conn:
        row = conn.execute("SELECT source, nodes > 1000 FROM road_networks WHERE active").fetchone()
    assert row == (str(default_extract()), True)


def test_import_network_refuses_a_file_that_is_not_an_extract(
    env: Settings, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "city.osm.pbf"
    bad.write_text("not a protobuf")
    assert main(["routing", "import-network", str(bad)]) == 2
    assert "cityops routing import-network:" in capsys.readouterr().err


def test_plan_prints_the_routes(
    env: Settings, db_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    _seed(db_url, now=now_utc())  # the command plans today by the real clock
    assert main(["routing", "plan", "--time-limit", "2", "--no-push"]) == 0
    out = capsys.readouterr().out
    assert "3 required" in out and "Europe/Berlin" in out
    assert main(["routing", "plan", "--time-limit", "0"]) == 2


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--mandatory-pct", "101"], "mandatory_pct <= 100"),
        (["--optional-pct", "96"], "optional_pct < mandatory_pct"),
        (["--reach-within", "0"], "reach_within_h > 0"),
        (["--ahead-reward", "-5"], "ahead_reward >= 0"),
        (["--ahead-days", "0"], "ahead_days > 0"),
    ],
)
def test_plan_refuses_bad_dispatch_settings(
    env: Settings, flags: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["routing", "plan", "--no-push", *flags]) == 2
    err = capsys.readouterr().err
    assert err.startswith("cityops routing plan:") and message in err
