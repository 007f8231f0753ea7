"""Registry import and export: row-level errors, all-or-nothing, idempotent, audited,
round-trips, and retiring (against the real PostgreSQL)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
import yaml

from cityops.api.cli import main
from cityops.ingest.city import City, read_profile
from cityops.ingest.registry_files import read_registry_file
from cityops.ingest.registry_store import import_records, retire
from cityops.routing.network import load_network
from tests.support import musterstadt


@pytest.fixture
def city_files(tmp_path: Path, db_url: str, monkeypatch: pytest.MonkeyPatch
               ) -> Iterator[dict[str, Path]]:
    files = musterstadt.write_city(tmp_path / "musterstadt")
    monkeypatch.setenv("CITYOPS_DATABASE_URL", db_url)
    monkeypatch.setenv("CITYOPS_CITY_PROFILE", str(files["profile"]))
    monkeypatch.setenv("CITYOPS_ALLOW_DEMO_CITY", "0")
    assert main(["city", "apply"]) == 0
    return files


@pytest.fixture
def city(city_files: dict[str, Path]) -> City:
    return read_profile(city_files["profile"])


def _import(*paths: Path, extra: tuple[str, ...] = ()) -> int:
    return main(["registry", "import", *map(str, paths), *extra])


def _counts(db_url: str) -> tuple[int, ...]:
    with psycopg.connect(db_url) as conn:
        row = conn.execute(
            "SELECT (SELECT count(*) FROM bin_registry), (SELECT count(*) FROM truck_registry),"
            " (SELECT count(*) FROM signal_controller_registry),"
            " (SELECT count(*) FROM signal_links), (SELECT count(*) FROM registry_audit),"
            " (SELECT coalesce(sum(version), 0) FROM bin_registry)").fetchone()
    assert row is not None
    return tuple(int(v) for v in row)


def test_a_city_imports_once_and_a_second_import_changes_nothing(
    city_files: dict[str, Path], db_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    files = (city_files["trucks"], city_files["bins"], city_files["controllers"])
    assert _import(*files) == 0
    out = capsys.readouterr().out
    assert "trucks: 2 new" in out and "bins: 12 new" in out and "signal_controllers: 2 new" in out
    assert "run `cityops mqtt credentials" in out
    first = _counts(db_url)
    assert first == (12, 2, 2, 1, 2 + 2 + 12 + 2, 12)  # the profile's two sites are audited too
    with psycopg.connect(db_url) as conn:
        bins = conn.execute(
            "SELECT bin_id, street, district, collection_days, access_from::text, "
            "access_to::text, dev_eui, ST_X(geom) FROM bins ORDER BY bin_id").fetchall()
    assert bins[0] == ("MS-B001", "Schloßstraße", "Altstadt", [1], None, None,
                       "70b3d57ed0050001", 8.749)
    assert bins[3][4:6] == ("07:00:00", "18:00:00")
    assert {b[2] for b in bins} == {"Altstadt", "Bürgerviertel", "Hafenäcker"}  # real ones
    assert all(b[2] == musterstadt.district_of(b[7]) for b in bins)

    assert _import(*files) == 0
    assert "bins: 0 new, 0 changed, 0 revived, 12 unchanged" in capsys.readouterr().out
    assert _counts(db_url) == first  # no new version, no audit row


def test_a_bad_file_reports_each_row_and_changes_nothing(
    city_files: dict[str, Path], db_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _import(city_files["trucks"], city_files["bins"]) == 0
    before = _counts(db_url)
    capsys.readouterr()
    bad = city_files["bins"].parent / "neu.csv"
    bad.write_text(
        "bin_id,lon,lat,street,fraction,capacity_l,collection_days,sensor_id\n"
        "MS-B001,8.75,50.1,Schloßstraße,paper,240,Mo,\n"  # a good change
        "MS-B100,8.75,50.1,Test\x00straße,paper,-5,Mo,\n"
        "MS-B101,50.1,8.75,<b>Straße</b>,glas,240,Mx,\n"
        "MS-B102,8.76,50.1,Hauptstraße,paper,240,,MS-S002\n"  # MS-B002's sensor
        "MS-B100,8.76,50.1,Hauptstraße,paper,240,,\n"
        "MS-B103,8.76,50.1\n",
        encoding="utf-8",
    )
    assert _import(city_files["trucks"], bad) == 1
    out = capsys.readouterr().out
    lines = [line for line in out.splitlines() if line.startswith(str(bad) + ":")]
    src = str(bad)
    assert f"{src}:3: street (column 4): must not contain control characters" in "\n".join(lines)
    assert f"{src}:3: capacity_l (column 6): Input should be greater than 0" in lines
    assert any(line.startswith(f"{src}:4: fraction (column 5):") for line in lines)
    assert any(line.startswith(f"{src}:4: collection_days (column 7): unknown weekday 'Mx'")
               for line in lines)
    assert f"{src}:5: sensor_id: sensor MS-S002 is on bin MS-B002; retire that bin or move the " \
        "sensor in the same import" in lines
    # line 6 repeats MS-B100 of line 3, which was refused: a valid row, not a duplicate
    assert not [line for line in lines if line.startswith(f"{src}:6:")], lines
    assert f"{src}:7: 3 fields, the header has 8" in lines
    assert _counts(db_url) == before  # MS-B001's good change did not go in either


def test_html_in_a_street_name_is_stored_as_text(
    city_files: dict[str, Path], db_url: str
) -> None:
    path = city_files["bins"].parent / "html.geojson"
    path.write_text(
        '{"type": "FeatureCollection", "features": [{"type": "Feature", "geometry": '
        '{"type": "Point", "coordinates": [8.75, 50.1]}, "properties": {"bin_id": "MS-H1", '
        '"street": "<script>alert(1)</script>", "fraction": "paper", "capacity_l": 240}}]}',
        encoding="utf-8")
    assert _import(path) == 0
    with psycopg.connect(db_url) as conn:
        row = conn.execute("SELECT street FROM bins WHERE bin_id = 'MS-H1'").fetchone()
    assert row == ("<script>alert(1)</script>",)


def test_export_imports_back_unchanged_in_both_formats(
    city_files: dict[str, Path], db_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _import(city_files["trucks"], city_files["bins"], city_files["controllers"]) == 0
    before = _counts(db_url)
    for fmt in ("csv", "geojson"):
        out = tmp_path / fmt
        assert main(["registry", "export", "--out", str(out), "--format", fmt]) == 0
        capsys.readouterr()
        assert _import(*sorted(out.iterdir())) == 0
        assert ("sites: 0 new, 0 changed, 0 revived, 2 unchanged; trucks: 0 new, 0 changed, "
                "0 revived, 2 unchanged; bins: 0 new, 0 changed, 0 revived, 12 unchanged; "
                "signal_controllers: 0 new, 0 changed, 0 revived, 2 unchanged"
                ) in capsys.readouterr().out
    assert _counts(db_url) == before
    assert "Müllwagen 1" in (tmp_path / "csv" / "trucks.csv").read_text(encoding="utf-8")


def test_a_change_is_versioned_and_audited(
    city_files: dict[str, Path], db_url: str
) -> None:
    assert _import(city_files["trucks"], city_files["bins"]) == 0
    text = city_files["bins"].read_text(encoding="utf-8")
    changed = city_files["bins"].parent / "geändert.csv"
    changed.write_text(text.replace("MS-B001;MS-S001;8,7490", "MS-B001;MS-S101;8,7491"),
                       encoding="utf-8")
    assert _import(changed, extra=("--actor", "amt-67")) == 0
    with psycopg.connect(db_url) as conn:
        version = conn.execute("SELECT version, sensor_id FROM bins WHERE bin_id = 'MS-B001'"
                               ).fetchone()
        audit = conn.execute(
            "SELECT actor, source, action, before ->> 'sensor_id', after ->> 'sensor_id' "
            "FROM registry_audit WHERE entity_id = 'MS-B001' ORDER BY audit_id").fetchall()
    assert version == (2, "MS-S101")
    assert audit[-1] == ("amt-67", str(changed), "update", "MS-S001", "MS-S101")


def test_retired_devices_leave_the_views_and_an_import_brings_them_back(
    city_files: dict[str, Path], db_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _import(city_files["trucks"], city_files["bins"], city_files["controllers"]) == 0
    assert main(["registry", "retire", "bin", "MS-B002"]) == 0
    assert main(["registry", "retire", "bin", "MS-B002"]) == 1  # already retired
    with psycopg.connect(db_url) as conn:
        assert conn.execute("SELECT count(*) FROM bins").fetchone() == (11,)
        assert conn.execute(
            "SELECT count(*) FROM devices WHERE device_id = 'MS-S002'").fetchone() == (0,)
        # its sensor is free for the bin that replaces it
        conn.execute("INSERT INTO bins (bin_id, sensor_id, geom, street, capacity_l, fraction)"
                     " VALUES ('MS-B900', 'MS-S002', ST_SetSRID(ST_MakePoint(8.75, 50.1), "
                     "4326), 'Mühlgasse', 240, 'paper')")
        conn.execute("DELETE FROM bin_registry WHERE bin_id = 'MS-B900'")
    capsys.readouterr()
    assert _import(city_files["bins"]) == 0
    out = capsys.readouterr().out
    assert "1 revived" in out and "revived (were retired): bin MS-B002" in out
    with psycopg.connect(db_url) as conn:
        assert conn.execute("SELECT count(*) FROM bins").fetchone() == (12,)
        actions = conn.execute("SELECT action FROM registry_audit WHERE entity_id = 'MS-B002' "
                               "ORDER BY audit_id").fetchall()
    assert actions == [("create",), ("retire",), ("revive",)]


def test_controllers_need_their_link_targets_and_phases(
    city_files: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    text = city_files["controllers"].read_text(encoding="utf-8")
    bad = city_files["controllers"].parent / "lsa-falsch.yaml"
    bad.write_text(text.replace("to_channel: 1}", "to_channel: 7}").replace(
        "{channel: 2, phase: 4,", "{channel: 2, phase: 6,"), encoding="utf-8")
    assert _import(bad) == 1
    out = capsys.readouterr().out
    assert f"{bad}:2: column 5: detectors: channel 2 serves phase 6, which is not among the " \
        "phases [2, 4]" in out
    bad.write_text(text.replace("to_channel: 1}", "to_channel: 7}"), encoding="utf-8")
    assert _import(bad) == 1
    assert f"{bad}:2: links: MS-LSA-02 has no detector channel 7" in capsys.readouterr().out


def test_bins_far_from_any_street_are_listed(city: City, db_url: str, tmp_path: Path) -> None:
    path = tmp_path / "bins.csv"
    path.write_text("bin_id,lon,lat,street,fraction,capacity_l\n"
                    "MS-F1,8.748,50.112,Schloßstraße,paper,240\n"
                    "MS-F2,8.753,50.1085,Feldweg,paper,240\n", encoding="utf-8")
    network = load_network(city.osm_extract)
    with psycopg.connect(db_url) as conn:
        report = import_records(conn, [read_registry_file(path)], city, actor="test",
                                network=network, max_street_m=50)
    assert not report.problems
    assert [(f.bin_id, f.nearest_street) for f in report.far_from_street] == [
        ("MS-F2", "Mühlgasse")]
    assert 250 < report.far_from_street[0].street_distance_m < 300


def test_a_dry_run_writes_nothing(city_files: dict[str, Path], db_url: str) -> None:
    before = _counts(db_url)
    assert _import(city_files["trucks"], city_files["bins"], extra=("--dry-run",)) == 0
    assert _counts(db_url) == before


def test_retire_needs_the_expected_version(city_files: dict[str, Path], db_url: str) -> None:
    from cityops.ingest.registry_store import RegistryConflictError, RegistryNotFoundError

    assert _import(city_files["trucks"]) == 0
    with psycopg.connect(db_url) as conn:
        with pytest.raises(RegistryConflictError, match="at version 1, not 3"):
            retire(conn, "truck", "MS-EB-101", actor="t", source="t", expected_version=3)
        with pytest.raises(RegistryNotFoundError, match="no active truck 'MS-NOPE'"):
            retire(conn, "truck", "MS-NOPE", actor="t", source="t")
        assert retire(conn, "truck", "MS-EB-101", actor="t", source="t",
                      expected_version=1) == 2


def test_an_import_can_update_the_broker_accounts_at_once(
    city_files: dict[str, Path], tmp_path: Path
) -> None:
    auth = tmp_path / "mosquitto"
    assert _import(city_files["trucks"], city_files["bins"],
                   extra=("--credentials", str(auth))) == 0
    acl = (auth / "cityops.acl").read_text(encoding="utf-8")
    assert "user MS-S001" in acl and "user MS-EB-102" in acl
    assert main(["registry", "retire", "bin", "MS-B001"]) == 0
    assert main(["mqtt", "credentials", "--out", str(auth)]) == 0
    acl = (auth / "cityops.acl").read_text(encoding="utf-8")
    assert "user MS-S001" not in acl and "user MS-S002" in acl  # the retired sensor is gone


def test_changing_a_junction_keeps_the_links_of_the_others_to_it(
    city_files: dict[str, Path], db_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _import(city_files["controllers"]) == 0
    data = yaml.safe_load(city_files["controllers"].read_text(encoding="utf-8"))
    second = data["controllers"][1]
    assert second["id"] == "MS-LSA-02"
    # MS-LSA-02's detector 1, which MS-LSA-01 links to, now serves phase 4
    second["detectors"][0]["phase"] = 4
    moved = city_files["controllers"].parent / "lsa-neu.yaml"
    moved.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    assert _import(moved) == 0
    with psycopg.connect(db_url) as conn:
        assert conn.execute("SELECT controller_id, to_controller_id, to_channel "
                            "FROM signal_links").fetchall() == [("MS-LSA-01", "MS-LSA-02", 1)]
        assert conn.execute("SELECT phase FROM signal_detectors WHERE controller_id = "
                            "'MS-LSA-02' AND channel = 1").fetchone() == (4,)
    # taking that detector away is refused while MS-LSA-01 links to it
    second["detectors"] = []
    gone = city_files["controllers"].parent / "lsa-ohne.yaml"
    gone.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    capsys.readouterr()
    assert _import(gone) == 1
    assert "channel 1 goes, but MS-LSA-01 links to it" in capsys.readouterr().out
    with psycopg.connect(db_url) as conn:
        assert conn.execute("SELECT count(*) FROM signal_links").fetchone() == (1,)


def test_the_broker_accounts_let_the_ingest_read_the_network_servers_uplinks(
    city_files: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CITYOPS_INGEST_SOURCES", "cityops,chirpstack,tts")
    monkeypatch.setenv("CITYOPS_INGEST_LORAWAN_ROOT", "lorawan")
    auth = tmp_path / "mosquitto"
    assert main(["mqtt", "credentials", "--out", str(auth)]) == 0
    acl = (auth / "cityops.acl").read_text(encoding="utf-8")
    ingest = acl.split("user cityops-ingest", 1)[1].split("\nuser ", 1)[0]
    assert "topic read lorawan/application/+/device/+/event/up" in ingest
    assert "topic read lorawan/v3/+/devices/+/up" in ingest
    planner = acl.split("user cityops-planner", 1)[1].split("\nuser ", 1)[0]
    assert "topic read lorawan/application/+/device/+/event/up" in planner


@pytest.mark.slow
def test_a_large_city_imports_in_one_transaction(db_url: str) -> None:
    """13,000 bins in one import: more than PostgreSQL's shared lock table holds by default
    (64 x 100 connections, exhausted near 12,500 advisory locks here), so an import must not
    take a lock per record (one per kind it writes)."""
    from cityops.ingest.city import bundled_profile
    from cityops.ingest.registry_files import parse_rows

    path = bundled_profile("demo")
    assert path is not None
    rows = [{"bin_id": f"X{i:05d}", "sensor_id": f"SX{i:05d}", "street": "Teststraße",
             "lon": 24.93 + (i % 130) * 2e-4, "lat": 60.16 + (i // 130) * 2e-4,
             "fraction": "paper", "capacity_l": 240} for i in range(13_000)]
    with psycopg.connect(db_url) as conn:
        report = import_records(conn, [parse_rows("bin", rows, "gross.csv")],
                                read_profile(path), actor="test")
        assert not report.problems
        assert conn.execute("SELECT count(*) FROM bins").fetchone() == (13_000,)
