"""The simulators' LoRaWAN message builders, for the tests."""

from cityops.simulators.lorawan import chirpstack_uplink, em310_udl, ldds75, tts_uplink

__all__ = ["chirpstack_uplink", "em310_udl", "ldds75", "tts_uplink"]
