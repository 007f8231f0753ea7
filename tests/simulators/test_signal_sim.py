"""SignalControllerSim: a valid fixed-time phase sequence and believable detector events."""

from __future__ import annotations

import itertools
from collections import defaultdict
from zoneinfo import ZoneInfo

from cityops.ingest.contract import SignalEvents
from cityops.simulators.emission import LocalClock
from cityops.simulators.signal_sim import SignalControllerSim
from tests.simulators.factories import START, make_controller

CLOCK = LocalClock(ZoneInfo("Europe/Berlin"))
HOUR = 3600.0


def raw(
    offset_s: float = 7.0, seconds: float = HOUR
) -> tuple[SignalControllerSim, list[tuple[int, int, int]]]:
    sim = SignalControllerSim(make_controller(offset_s), CLOCK, seed=1, index=0, start=START)
    events: list[tuple[int, int, int]] = []
    t = START
    while t < START + seconds:
        t += 7.3  # odd steps: batches must not change the log
        events.extend(sim.raw_events_until(t))
    return sim, events


def test_phase_sequence_and_durations() -> None:
    _sim, events = raw()
    assert [ts for ts, _, _ in events] == sorted(ts for ts, _, _ in events)
    assert all(START * 10 < ts <= (START + HOUR + 7.3) * 10 for ts, _, _ in events)
    phase_events = [(ts, code, p) for ts, code, p in events if code < 80]
    # the log starts mid-cycle; from the first begin green on it is the full sequence
    first = next(i for i, (_, code, p) in enumerate(phase_events) if code == 1 and p == 2)
    seq = phase_events[first:]
    expected = [(1, 2), (7, 2), (8, 2), (9, 2), (10, 2), (11, 2),
                (1, 4), (7, 4), (8, 4), (9, 4), (10, 4), (11, 4)]
    cycles = len(seq) // 12
    assert cycles >= 55  # 3600 s / 60.5 s
    for k in range(cycles):
        chunk = seq[12 * k : 12 * k + 12]
        assert [(code, p) for _, code, p in chunk] == expected
        t = {(code, p): ts for ts, code, p in chunk}
        for phase, green, yellow, red in ((2, 300, 40, 20), (4, 200, 30, 15)):  # tenths
            assert t[7, phase] - t[1, phase] == green
            assert t[8, phase] == t[7, phase]
            assert t[9, phase] - t[8, phase] == yellow
            assert t[10, phase] == t[9, phase]
            assert t[11, phase] - t[10, phase] == red
        assert t[1, 4] == t[11, 2]  # next phase starts as the previous clears
        if k:
            assert chunk[0][0] - seq[12 * (k - 1)][0] == 605  # cycle 60.5 s
    # the offset places the cycle: green of phase 2 starts at offset + k * cycle
    assert (seq[0][0] - 70) % 605 == 0


def test_detectors_alternate_on_and_off() -> None:
    _, events = raw()
    by_channel: dict[int, list[tuple[int, int]]] = defaultdict(list)
    for ts, code, param in events:
        if code in (81, 82):
            by_channel[param].append((ts, code))
    assert set(by_channel) == {1, 2, 3}
    occupancy: dict[int, list[int]] = defaultdict(list)
    for channel, seq in by_channel.items():
        codes = [code for _, code in seq]
        assert codes[0] == 82
        assert all(a != b for a, b in itertools.pairwise(codes)), channel
        for (on, c1), (off, c2) in zip(seq[::2], seq[1::2], strict=False):
            assert (c1, c2) == (82, 81) and off > on
            occupancy[channel].append(off - on)
    # advance loop: vehicles pass at ~50 km/h, about half a second each
    adv = sorted(occupancy[2])
    assert 3 <= adv[len(adv) // 2] <= 8
    # stop bar of phase 2: vehicles queue on red, so some occupancies last many seconds
    assert max(occupancy[1]) > 150
    # counts follow the arrival rate: 1200 veh/h peak x ~0.9 at 8-9 on a weekday
    assert 700 < len(occupancy[2]) < 1300


def test_batches_carry_every_event_once() -> None:
    sim = SignalControllerSim(make_controller(), CLOCK, seed=1, index=0, start=START)
    _, reference = raw(seconds=300)
    got = []
    last = START
    while sim.next_time <= START + 300:
        end = sim.next_time
        for emission in sim.step():
            assert isinstance(emission.payload, SignalEvents)
            for e in emission.payload.events:
                # never ahead of the batch; at the very end of one it may wait for the next
                assert last <= e.ts.timestamp() <= end
                assert round(e.ts.timestamp() * 10) == e.ts.timestamp() * 10  # tenths
                got.append((round(e.ts.timestamp() * 10), e.code, e.param))
        last = end
    assert got == reference[: len(got)]
    assert len(got) > 100


def test_deterministic_for_a_seed() -> None:
    assert raw()[1] == raw()[1]
    other = SignalControllerSim(make_controller(), CLOCK, seed=2, index=0, start=START)
    assert other.raw_events_until(START + 600) != raw(seconds=600)[1][:10]
