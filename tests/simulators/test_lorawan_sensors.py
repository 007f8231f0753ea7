"""Simulated LoRaWAN bin sensors: what they publish is what the ingest's parser and codecs
read back, with the registry's calibration."""

from __future__ import annotations

from datetime import UTC, datetime

from cityops.ingest.codecs import CODECS, SensorReading
from cityops.ingest.decode import Frame, Limits
from cityops.ingest.lorawan import Uplink, parse_uplink
from cityops.ingest.lorawan_readings import LoraSensor, reading_from
from cityops.routing.network import load_network
from cityops.simulators.city import build_city
from cityops.simulators.models import CitySim
from cityops.simulators.scenario import load_scenario


def test_a_share_of_the_bins_report_through_both_network_servers_and_read_back() -> None:
    scenario = load_scenario("test")
    scenario = scenario.model_copy(update={"bins": scenario.bins.model_copy(update={
        "lorawan": scenario.bins.lorawan.model_copy(update={"share": 0.5})})})
    city = build_city(scenario, load_network(None))
    lora = [b for b in city.bins if b.lora is not None]
    assert len(lora) == round(0.5 * len(city.bins))
    assert {b.lora.network for b in lora if b.lora} == {"chirpstack", "tts"}
    assert {b.lora.model for b in lora if b.lora} == set(CODECS)
    start = datetime(2026, 3, 3, 6, 0, tzinfo=UTC).timestamp()
    sim = CitySim(city, scenario, load_network(None), start)
    checked = 0
    for b in lora:
        assert b.lora is not None
        bin_sim = sim.bins[b.bin_id]
        assert bin_sim.lorawan and bin_sim.device_id == b.lora.dev_eui
        (emission,) = bin_sim.step()
        assert emission.uplink is not None
        topic, body = emission.uplink
        up = parse_uplink(topic, body, datetime.now(UTC))
        assert isinstance(up, Uplink), up
        assert up.dev_eui == b.lora.dev_eui and up.network == b.lora.network
        reading = CODECS[b.lora.model].decode(up.payload, up.f_port)
        assert isinstance(reading, SensorReading), reading
        sensor = LoraSensor(b.bin_id, b.lora.dev_eui, b.lora.model, b.lora.empty_distance_mm,
                            b.lora.full_distance_mm)
        frame = Frame(up.dev_eui, 1, up.network, 1, b"\0" * 32)
        decoded = reading_from(reading, sensor, up.time, frame, up.time, Limits())
        payload = getattr(decoded, "payload", None)
        assert payload is not None, decoded
        sent = emission.payload
        # one millimetre of distance resolution: well within a percent of fill
        assert abs(payload.fill_pct - sent.fill_pct) <= 0.3
        assert payload.ts == sent.ts
        checked += 1
    assert checked == len(lora)
