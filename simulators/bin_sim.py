"""A waste bin with an ultrasonic fill-level sensor (temperature, battery, tilt switch).

The bin fills at its fraction's rate, scaled by its size, a per-bin factor (some
households throw away more), the weekday and the hour of the day. The sensor reads every
`reading_interval_min` with some noise. Faults, each drawn per simulated day:

* stuck sensor: repeats its last value for `stuck_hours`; after 8 identical readings
  its firmware reports `fault="stuck"`;
* battery drain: a failing battery loses a few percent a day; below 10 % the sensor
  reports `low_battery`, at 0 % it falls silent;
* fire: the temperature climbs to 60-150 degC within ~20 minutes and the sensor
  switches to one reading a minute while above 50 degC, for one to two hours;
* tilt: the bin is knocked over and reports `tilt` until the next emptying.
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np

from cityops.ingest.contract import BinTelemetry, Channel, DeviceKind
from cityops.simulators.city import Bin
from cityops.simulators.emission import WASTE_PROFILE, Emission, LocalClock, to_datetime
from cityops.simulators.lorawan import chirpstack_uplink, em310_udl, ldds75, tts_uplink
from cityops.simulators.scenario import BinsConfig

__all__ = ["BinSim"]

_DAY = 86400.0
_STUCK_REPORT_AFTER = 8
_LOW_BATTERY_PCT = 10.0
_NORMAL_DRAIN_PCT_DAY = 0.02
_ALARM_TEMP_C = 50.0
_ALARM_INTERVAL_S = 60.0
_MAX_STEP_S = 3600.0


class BinSim:
    """The state of one bin and its sensor; deterministic for (seed, index)."""

    kind = DeviceKind.BIN

    def __init__(
        self, spec: Bin, cfg: BinsConfig, clock: LocalClock, seed: int, index: int, start: float
    ) -> None:
        self.spec = spec
        self.cfg = cfg
        self._clock = clock
        self._rng = np.random.default_rng([seed, 10, index])
        rng = self._rng
        low, high = cfg.initial_fill_pct
        self.fill_l = spec.capacity_l * float(rng.uniform(low, high)) / 100.0
        rate_per_day = cfg.fill_rate_l_per_day[spec.fraction] * spec.capacity_l / 240.0
        self._rate_l_s = rate_per_day * float(rng.lognormal(0.0, 0.35)) / _DAY
        self.battery_pct = float(rng.uniform(55.0, 100.0))
        self._drain_pct_s = _NORMAL_DRAIN_PCT_DAY / _DAY
        self._temp_offset = float(rng.normal(0.0, 1.0))
        self._interval_s = cfg.reading_interval_min * 60.0
        self._t = start
        self._next = start + float(rng.uniform(0.0, self._interval_s))
        self._stuck_until = -math.inf
        self._stuck_value = 0.0
        self._same_count = 0
        self._last_reported: float | None = None
        self._fire: tuple[float, float, float] | None = None  # start, peak degC, duration s
        self.tilt = False
        self.emptied = 0
        self._f_cnt = 0  # LoRaWAN frame counter

    @property
    def lorawan(self) -> bool:
        """Reports through a LoRaWAN network server, not on the MQTT contract."""
        return self.spec.lora is not None

    @property
    def device_id(self) -> str:
        return self.spec.lora.dev_eui if self.spec.lora else self.spec.sensor_id

    @property
    def next_time(self) -> float:
        return self._next

    @property
    def fill_pct(self) -> float:
        """True fill at the last update (what the platform would roughly know)."""
        return 100.0 * self.fill_l / self.spec.capacity_l

    @property
    def stuck(self) -> bool:
        return self._t < self._stuck_until

    @property
    def dead(self) -> bool:
        return self.battery_pct <= 0.0

    def step(self) -> list[Emission]:
        """Take the reading due at `next_time`."""
        t = self._next
        self._advance(t)
        temperature = self._temperature(t)
        self._next = t + (_ALARM_INTERVAL_S if temperature > _ALARM_TEMP_C else self._interval_s)
        if self.dead:
            self._next = math.inf
            return []
        noisy = self.fill_pct + float(self._rng.normal(0.0, self.cfg.noise_pct))
        reading = round(min(100.0, max(0.0, noisy)), 1)
        fault: Literal["stuck", "low_battery"] | None = None
        if self.stuck:
            reading = self._stuck_value
        if reading == self._last_reported:
            self._same_count += 1
        else:
            self._same_count = 0
        self._last_reported = reading
        if self.stuck and self._same_count >= _STUCK_REPORT_AFTER:
            fault = "stuck"
        elif self.battery_pct < _LOW_BATTERY_PCT:
            fault = "low_battery"
        payload = BinTelemetry(
            ts=to_datetime(t),
            fill_pct=reading,
            temperature_c=round(temperature, 1),
            battery_pct=round(self.battery_pct, 1),
            tilt=self.tilt,
            fault=fault,
        )
        uplink = self._uplink(payload) if self.spec.lora else None
        return [Emission(DeviceKind.BIN, self.device_id, Channel.TELEMETRY, payload, uplink)]

    def _uplink(self, reading: BinTelemetry) -> tuple[str, bytes]:
        """The reading as the sensor measures it (a distance) and its network server
        publishes it: the bin's calibration, the model's payload, the server's JSON."""
        lora = self.spec.lora
        assert lora is not None
        span = lora.empty_distance_mm - lora.full_distance_mm
        distance = round(lora.empty_distance_mm - reading.fill_pct / 100.0 * span)
        battery = reading.battery_pct or 0.0
        if lora.model == "dragino-ldds75":
            payload = ldds75(distance, round(3000 + 6 * battery),
                             reading.temperature_c or 0.0)
        else:
            payload = em310_udl(distance, round(battery), reading.tilt)
        self._f_cnt += 1
        build = chirpstack_uplink if lora.network == "chirpstack" else tts_uplink
        return build(lora.dev_eui, payload, self._f_cnt, reading.ts)

    def empty(self, t: float) -> float:
        """A truck empties the bin at `t`; returns the litres taken."""
        self._advance(t)
        volume = min(self.fill_l, float(self.spec.capacity_l))
        self.fill_l = self.spec.capacity_l * float(self._rng.uniform(0.0, 0.02))
        self.tilt = False
        self.emptied += 1
        return volume

    # -- internals ----------------------------------------------------------------------

    def _advance(self, t: float) -> None:
        """Move the physical state forward to `t` (never backwards)."""
        while self._t < t:
            dt = min(t - self._t, _MAX_STEP_S)
            mid = self._t + dt / 2
            hour, weekday = self._clock.hour_weekday(mid)
            factor = WASTE_PROFILE[int(hour) % 24] * self.cfg.weekday_factors[weekday]
            grown = self.fill_l + self._rate_l_s * factor * dt
            self.fill_l = min(float(self.spec.capacity_l), grown)
            self.battery_pct = max(0.0, self.battery_pct - self._drain_pct_s * dt)
            self._draw_faults(self._t, dt)
            self._t += dt

    def _draw_faults(self, t: float, dt: float) -> None:
        faults = self.cfg.faults
        days = dt / _DAY

        def chance(per_day: float) -> float:
            return 1.0 - math.pow(1.0 - per_day, days)

        draws = self._rng.random(4)
        if not self.stuck and draws[0] < chance(faults.stuck_sensor):
            self._stuck_until = t + faults.stuck_hours * 3600.0
            self._stuck_value = self._last_reported if self._last_reported is not None else 0.0
        if self._drain_pct_s * _DAY < 1.0 and draws[1] < chance(faults.battery_drain):
            self._drain_pct_s = float(self._rng.uniform(2.0, 6.0)) / _DAY
        if self._fire is None and draws[2] < chance(faults.fire):
            self._fire = (
                t + float(self._rng.uniform(0.0, dt)),
                float(self._rng.uniform(60.0, 150.0)),
                float(self._rng.uniform(3600.0, 7200.0)),
            )
        if not self.tilt and draws[3] < chance(faults.tilt):
            self.tilt = True
        if self._fire is not None and t > self._fire[0] + self._fire[2] + 2 * 3600.0:
            self._fire = None

    def _temperature(self, t: float) -> float:
        hour, _ = self._clock.hour_weekday(t)
        ambient = 10.0 + 7.0 * math.sin(2 * math.pi * (hour - 9.0) / 24.0) + self._temp_offset
        value = ambient + float(self._rng.normal(0.0, 0.3))
        if self._fire is not None:
            start, peak, duration = self._fire
            age = t - start
            if 0.0 <= age <= duration:
                value += (peak - ambient) * min(1.0, age / 1200.0)
            elif age > duration:
                value += (peak - ambient) * math.exp(-(age - duration) / 900.0)
        return min(200.0, max(-50.0, value))
