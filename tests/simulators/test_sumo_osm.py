"""The SUMO network converted from the bundled OSM extract: real netconvert and libsumo,
real broker and database (`cityops traffic sumo --network osm --seed-registry`)."""

from __future__ import annotations

import json
import threading
import time
import uuid
from pathlib import Path

import paho.mqtt.client as mqtt
import psycopg
import pytest

from cityops.api.cli import main
from cityops.ingest.config import Settings
from cityops.ingest.contract import SignalEvents
from cityops.ingest.mqttclient import make_client
from cityops.routing.network import default_extract
from cityops.simulators.sumo.network import ADVANCE_M
from cityops.simulators.sumo.osm import (
    ADVANCE_MARGIN_M,
    OsmNetwork,
    OsmSpec,
    build_osm_network,
    osm_node_of,
    two_axes,
)
from cityops.traffic.events import Event, clean
from cityops.traffic.repository import load_config


@pytest.fixture(scope="module")
def osm(tmp_path_factory: pytest.TempPathFactory) -> OsmNetwork:
    return build_osm_network(default_extract(), tmp_path_factory.mktemp("osm"))


def test_two_axes_cross_t_and_misfits() -> None:
    cross = {"s": 2.0, "n": 181.0, "w": 88.0, "e": 272.0}
    assert two_axes(cross, 30.0, 45.0) == ({"s": 2, "n": 2, "w": 4, "e": 4}, "")
    # a T on a street running south-west to north-east: that axis is nearer north-south
    tee = {"a": 30.0, "b": 210.0, "c": 300.0}
    assert two_axes(tee, 30.0, 45.0) == ({"a": 2, "b": 2, "c": 4}, "")
    assert two_axes({"x": 10.0, "y": 190.0}, 30.0, 45.0)[1] == "one approach axis only"
    five = {"a": 0.0, "b": 180.0, "c": 90.0, "d": 270.0, "e": 135.0}
    assert two_axes(five, 30.0, 45.0)[1].startswith("approaches on more than two axes")
    assert two_axes({"a": 0.0, "b": 35.0}, 30.0, 45.0)[1] == "axes only 35 degrees apart"
    with pytest.raises(ValueError, match="axis_tolerance_deg"):
        OsmSpec(axis_tolerance_deg=50.0)


def test_osm_node_of_names_netconvert_gives() -> None:
    clusters = [["31", "102", "27", "900", "5"]]
    assert osm_node_of("1377211669", clusters) == 1377211669
    assert osm_node_of("GS_207511251", clusters) == 207511251
    assert osm_node_of("cluster_31_102_27_900_#1more", clusters) == 5
    assert osm_node_of("cluster_44_45", clusters) == 44  # not in the join list: as named
    assert osm_node_of("joinedS_1_2", clusters) is None


def test_the_bundled_extract_converts_with_controllers(osm: OsmNetwork) -> None:
    import sumolib

    assert len(osm.junctions) >= 1 and osm.left_to_sumo
    assert all(reason for _, reason in osm.left_to_sumo)
    assert osm.sources and osm.sinks
    net = sumolib.net.readNet(str(osm.net_file))
    ids = [j.controller_id for j in osm.junctions]
    assert len(set(ids)) == len(ids)
    for j in osm.junctions:
        site = osm.sites[j.controller_id]
        assert j.controller_id == f"OSM-{site.osm_node}"
        assert 60.0 < site.lat < 60.4 and 24.7 < site.lon < 25.3  # Helsinki
        g2, g4 = j.green[2], j.green[4]
        assert len(g2) == len(g4) == j.link_count == len(j.all_red)
        # every link is green in exactly one of the two phases
        assert all((a in "Gg") != (b in "Gg") for a, b in zip(g2, g4, strict=True))
        assert {lp.phase for lp in j.loops if lp.kind == "stop_bar"} == {2, 4}
        lanes = {lp.sumo_lane for lp in j.loops}
        advance = {lp.sumo_lane for lp in j.loops if lp.kind == "advance"}
        for lane_id in lanes:
            long_enough = net.getLane(lane_id).getLength() >= ADVANCE_M + ADVANCE_MARGIN_M
            assert (lane_id in advance) == long_enough, lane_id
        assert [lp.channel for lp in j.loops] == list(range(1, len(j.loops) + 1))


def _collector(settings: Settings) -> tuple[mqtt.Client, list[tuple[str, bytes]]]:
    got: list[tuple[str, bytes]] = []
    ready = threading.Event()
    client = make_client(settings, f"osm-test-{uuid.uuid4().hex[:6]}")
    client.on_connect = lambda c, *a: c.subscribe(f"{settings.topic_prefix}/v1/signal/+/events", 1)
    client.on_subscribe = lambda *a: ready.set()
    client.on_message = lambda c, u, msg: got.append((msg.topic, bytes(msg.payload)))
    client.connect(settings.mqtt_host, settings.mqtt_port)
    client.loop_start()
    assert ready.wait(10)
    return client, got


def test_cli_runs_osm_network_events_pass_the_seeded_registry(
    osm: OsmNetwork,
    settings: Settings,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("CITYOPS_DATABASE_URL", settings.database_url)
    monkeypatch.setenv("CITYOPS_MQTT_URL", settings.mqtt_url)
    monkeypatch.setenv("CITYOPS_TOPIC_PREFIX", settings.topic_prefix)
    client, got = _collector(settings)
    try:
        argv = ["traffic", "sumo", "--network", "osm", "--seed-registry", "--duration", "120"]
        argv += ["--vph", "1800", "--seed", "3", "--work-dir", str(tmp_path)]
        assert main(argv) == 0
        out = capsys.readouterr().out
        summary = json.loads(out.strip().splitlines()[-1])
        deadline = time.monotonic() + 10.0
        while time.monotonic() < deadline:
            if sum(len(SignalEvents.model_validate_json(p).events) for _, p in got) >= int(
                summary["events_published"]
            ):
                break
            time.sleep(0.1)
    finally:
        client.disconnect()
        client.loop_stop()
    assert f"{len(osm.junctions)} controllers" in out
    assert summary["departed"] > 20 and summary["teleports"] == 0
    events: dict[str, list[Event]] = {}
    for topic, payload in got:
        batch = SignalEvents.model_validate_json(payload)
        events.setdefault(topic.split("/")[-2], []).extend(
            Event(e.ts.timestamp(), e.code, e.param) for e in batch.events
        )
    assert sum(len(v) for v in events.values()) == summary["events_published"]
    # the same controllers as a conversion into another folder: stable ids
    assert set(events) == {j.controller_id for j in osm.junctions}
    with psycopg.connect(settings.database_url) as conn:
        seeded = {r[0] for r in conn.execute("SELECT controller_id FROM signal_controllers")}
        assert seeded == set(events)
        for cid, evs in events.items():
            config = load_config(conn, cid)
            cleaned = clean(evs, config)
            assert cleaned.flags == (), (cid, cleaned.flags[:3])
            assert [e.param for e in evs if e.code == 1][:3] == [2, 4, 2], cid
    # vehicles reach the loops of most controllers within two minutes
    detected = {cid for cid, evs in events.items() if any(e.code == 82 for e in evs)}
    assert len(detected) >= len(events) // 2


def test_directly_connected_controllers_are_linked(osm: OsmNetwork) -> None:
    from cityops.simulators.sumo.registry import junction_links

    links = junction_links(osm.junctions)
    assert links  # the extract has neighbouring controlled junctions
    lane = {(j.controller_id, lp.channel): lp.sumo_lane for j in osm.junctions for lp in j.loops}
    turns = {j.controller_id: set(j.turns) for j in osm.junctions}
    for lk in links:
        up, down = lane[(lk.controller_id, lk.channel)], lane[(lk.to_controller_id, lk.to_channel)]
        # a controlled link of the upstream junction leads straight into the downstream lane
        assert (up, down) in turns[lk.controller_id]
        assert 0 < lk.share <= 1 and lk.controller_id != lk.to_controller_id
