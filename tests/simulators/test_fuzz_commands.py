"""Property-based fuzzing of the command payloads devices parse: the truck's `RouteCommand`
(`cmd/route`) and the signal controller's `TimingCommand` (`cmd/timing`).

* Valid commands survive a JSON round trip; arbitrary bytes and near-miss JSON are refused
  with a pydantic ValidationError only (what the simulators catch, log and count).
* The entry points that receive them, the runner's `_take_routes` / `_take_timings` over a
  real CitySim and the SUMO bus's `_issued_at`, never raise, whatever arrives.
* Any sequence of valid timing commands at any times leaves the controller safe: it
  answers each with an outcome, and every green it gives lasts between its min and max
  green (the safety rules of simulators/controller.py).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from datetime import UTC, date, datetime
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from cityops.ingest.config import Settings
from cityops.ingest.contract import DEVICE_ID_PATTERN, DeviceKind, RouteCommand, TimingCommand
from cityops.simulators.city import build_city
from cityops.simulators.controller import (
    BEGIN_GREEN,
    BEGIN_YELLOW,
    PhaseTiming,
    RawEvent,
    SignalController,
)
from cityops.simulators.models import CitySim
from cityops.simulators.runner import RunStats, _Link, _take_routes, _take_timings
from cityops.simulators.sumo.mqtt import _issued_at
from tests.simulators.factories import START, network, small_scenario
from tests.support.text import storable_text

FUZZ = settings(
    max_examples=60,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
T0 = START
DEVICE_IDS = st.from_regex(DEVICE_ID_PATTERN, fullmatch=True)
AWARE = st.datetimes(
    min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)
)
FLOATS = st.floats(allow_nan=False, allow_infinity=False)
PHASES = st.integers(1, 16)


def _num(lo: float, hi: float) -> st.SearchStrategy[float]:
    return st.floats(lo, hi, allow_nan=False, allow_infinity=False)


# -- valid commands ----------------------------------------------------------------------


def timing_commands(
    controller_id: st.SearchStrategy[str] = DEVICE_IDS,
    issued_at: st.SearchStrategy[datetime] = AWARE,
    phases: st.SearchStrategy[int] = PHASES,
) -> st.SearchStrategy[TimingCommand]:
    return st.builds(
        TimingCommand,
        controller_id=controller_id,
        issuer=storable_text(max_size=64),
        seq=st.integers(1, 2**40),
        issued_at=issued_at,
        valid_for_s=_num(0.001, 300),
        mode=st.sampled_from(["adaptive", "plan", "fallback"]),
        phase=st.none() | phases,
        action=st.none() | st.sampled_from(["hold", "advance"]),
        greens_s=st.none()
        | st.dictionaries(phases.map(str) | storable_text(max_size=3), FLOATS, max_size=4),
    )


STOPS = st.builds(
    dict,
    seq=st.integers(0, 10_000),
    kind=st.sampled_from(["start", "stop", "unload", "break", "end"]),
    bin_id=st.none() | DEVICE_IDS,
    site_id=st.none() | storable_text(max_size=64),
    lat=_num(-90, 90),
    lon=_num(-180, 180),
    street=st.none() | storable_text(max_size=200),
    eta=AWARE,
    etd=AWARE,
    load_after_l=_num(0, 1e6),
)


def route_commands(
    truck_id: st.SearchStrategy[str] = DEVICE_IDS, bin_ids: st.SearchStrategy[str] = DEVICE_IDS
) -> st.SearchStrategy[RouteCommand]:
    stops = STOPS.flatmap(lambda s: bin_ids.map(lambda b: {**s, "bin_id": b}) | st.just(s))
    return st.builds(
        lambda **kw: RouteCommand.model_validate(kw),
        truck_id=truck_id,
        plan_date=st.dates(date(2000, 1, 1), date(2100, 1, 1)),
        version=st.integers(1, 2**31),
        created_at=AWARE,
        reason=storable_text(max_size=500),
        engine=storable_text(max_size=40),
        fraction=st.none() | st.sampled_from(["residual", "paper", "packaging", "organic"]),
        distance_m=_num(0, 1e7),
        duration_s=_num(0, 1e6),
        stops=st.lists(stops, max_size=8),
        geometry=st.builds(
            dict,
            coordinates=st.lists(st.tuples(_num(-180, 180), _num(-90, 90)), max_size=5),
        ),
        unserved=st.lists(
            st.dictionaries(storable_text(max_size=8), storable_text(max_size=8), max_size=2),
            max_size=2,
        ),
    )


@FUZZ
@given(timing_commands())
def test_timing_commands_round_trip(cmd: TimingCommand) -> None:
    assert TimingCommand.model_validate_json(cmd.model_dump_json()) == cmd


@FUZZ
@given(route_commands())
def test_route_commands_round_trip(route: RouteCommand) -> None:
    assert RouteCommand.model_validate_json(route.model_dump_json()) == route


# -- refusals ----------------------------------------------------------------------------

JSON_VALUES = st.recursive(
    st.none() | st.booleans() | FLOATS | st.integers() | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=5)
    ),
    max_leaves=20,
)


@st.composite
def near_miss_json(draw: st.DrawFn) -> bytes:
    """A valid command's JSON with one field dropped, replaced by any JSON value, or added;
    or the whole document truncated."""
    model = draw(st.sampled_from([timing_commands(), route_commands()]))
    doc: dict[str, Any] = json.loads(draw(model).model_dump_json())
    how = draw(st.sampled_from(["drop", "replace", "add", "truncate"]))
    key = draw(st.sampled_from(sorted(doc)))
    if how == "drop":
        del doc[key]
    elif how == "replace":
        doc[key] = draw(JSON_VALUES)
    elif how == "add":
        doc[draw(st.text(max_size=12))] = draw(JSON_VALUES)
    raw = json.dumps(doc).encode()
    if how == "truncate":
        raw = raw[: draw(st.integers(0, len(raw) - 1))]
    return raw


def _parse_or_refuse(model: type[TimingCommand] | type[RouteCommand], raw: bytes) -> None:
    try:
        model.model_validate_json(raw)
    except ValidationError as exc:
        errors = exc.errors()
    else:
        return
    assert errors and errors[0]["msg"]  # the simulators log the first error's message


@FUZZ
@given(st.binary(max_size=2000) | near_miss_json())
def test_garbage_and_near_misses_are_refused_with_a_validation_error(raw: bytes) -> None:
    _parse_or_refuse(TimingCommand, raw)
    _parse_or_refuse(RouteCommand, raw)


@FUZZ
@given(
    st.binary(max_size=300)
    | near_miss_json()
    | JSON_VALUES.map(lambda v: json.dumps({"issued_at": v}).encode())
)
def test_sumo_bus_reads_issued_at_of_anything(raw: bytes) -> None:
    issued = _issued_at(raw)
    assert issued is None or isinstance(issued, float)


# -- the controller stays safe -----------------------------------------------------------

TIMINGS = [
    PhaseTiming(2, green_s=20.0, min_green_s=5.0, max_green_s=40.0),
    PhaseTiming(4, green_s=15.0, min_green_s=7.0, max_green_s=30.0, yellow_s=4.0),
    PhaseTiming(6, green_s=10.0, min_green_s=4.0, max_green_s=12.0, red_clearance_s=1.0),
]
BOUNDS = {t.phase: (t.min_green_s, t.max_green_s) for t in TIMINGS}


@st.composite
def command_sequences(draw: st.DrawFn) -> list[tuple[float, TimingCommand]]:
    """Commands at growing times (seconds after T0), mostly fresh, in sequence and about
    the controller's phases, with the odd stale, repeated or foreign one."""
    out: list[tuple[float, TimingCommand]] = []
    at = 0.0
    for _ in range(draw(st.integers(1, 25))):
        at += draw(_num(0, 30))
        lag = draw(st.sampled_from([0.0, 0.0, 0.0, 1.0, 400.0]))
        issued = datetime.fromtimestamp(T0 + at - lag, UTC)
        cmd = draw(
            timing_commands(
                controller_id=st.sampled_from(["C1", "C1", "C1", "C2"]),
                issued_at=st.just(issued),
                phases=st.sampled_from([2, 4, 6, 2, 4, 6, 1]),
            )
        )
        plan = draw(st.dictionaries(st.sampled_from(["2", "4", "6"]), _num(0, 60), min_size=3))
        if cmd.mode == "plan" and draw(st.booleans()):
            cmd = cmd.model_copy(update={"greens_s": plan})
        out.append((at, cmd))
    return out


def _greens(events: list[RawEvent]) -> Iterator[tuple[int, float]]:
    begin: dict[int, int] = {}
    for e in events:
        if e.code == BEGIN_GREEN:
            begin[e.param] = e.ts_ds
        elif e.code == BEGIN_YELLOW and e.param in begin:
            yield e.param, (e.ts_ds - begin.pop(e.param)) / 10


@FUZZ
@example(
    [
        (
            1.0,
            TimingCommand(
                controller_id="C1",
                issuer="svc",
                seq=1,
                issued_at=datetime.fromtimestamp(T0 + 1.0, UTC),
                valid_for_s=10.0,
                mode="plan",
                greens_s={"2": 1e308, "4": 10.0, "6": 10.0},
            ),
        )
    ]
)
@given(command_sequences())
def test_any_commands_leave_every_green_between_min_and_max(
    commands: list[tuple[float, TimingCommand]],
) -> None:
    controller = SignalController("C1", TIMINGS, T0)
    events: list[RawEvent] = []
    for at, cmd in commands:
        events += controller.step(T0 + at)
        outcome = controller.receive(cmd)
        assert outcome.status in ("accepted", "refused", "dropped")
        assert outcome.key.startswith(outcome.status)
    events += controller.step(T0 + commands[-1][0] + 200.0)
    for phase, seconds in _greens(events):
        lo, hi = BOUNDS[phase]
        assert lo <= seconds <= hi, (phase, seconds)
    answered = {"accepted", "refused", "dropped"}
    assert sum(n for k, n in controller.counts.items() if k.split(":")[0] in answered) == len(
        commands
    )


def test_a_plan_green_too_large_for_tenths_is_refused() -> None:
    """Once an OverflowError that stopped the simulator (found by the test above)."""
    controller = SignalController("C1", TIMINGS, T0)
    for seq, huge in enumerate((1e308, 1.7e308, 1e20, -1e308), start=1):
        cmd = TimingCommand(
            controller_id="C1",
            issuer="svc",
            seq=seq,
            issued_at=datetime.fromtimestamp(T0, UTC),
            valid_for_s=10.0,
            mode="plan",
            greens_s={"2": huge, "4": 10.0, "6": 10.0},
        )
        outcome = controller.receive(cmd)
        assert outcome.key == "refused:plan_bounds", outcome


# -- the runner's entry points over a real CitySim --------------------------------------


@pytest.fixture(scope="module")
def city_sim() -> CitySim:
    scenario = small_scenario()
    return CitySim(build_city(scenario, network()), scenario, network(), START)


def _link(sim: CitySim, kind: DeviceKind, device_id: str) -> _Link:
    settings = Settings(topic_prefix="fuzz", mqtt_url="mqtt://127.0.0.1:1")
    return _Link(settings, kind, device_id, f"fuzz-{device_id}", lambda: START)


@FUZZ
@given(st.data())
def test_runner_takes_any_route_message(city_sim: CitySim, data: st.DataObject) -> None:
    truck_id = sorted(city_sim.trucks)[0]
    bins = sorted(b.bin_id for b in city_sim.city.bins)
    valid = route_commands(
        truck_id=st.sampled_from([truck_id, "T-other"]),
        bin_ids=st.sampled_from([*bins, "B-unknown"]),
    ).map(lambda r: r.model_dump_json().encode())
    inbox = data.draw(st.lists(valid | near_miss_json() | st.binary(max_size=200), max_size=6))
    link = _link(city_sim, DeviceKind.TRUCK, truck_id)
    link.inbox.extend(inbox)
    _take_routes(city_sim, {truck_id: link})
    assert link.inbox == []


@FUZZ
@given(st.data())
def test_runner_takes_any_timing_message(city_sim: CitySim, data: st.DataObject) -> None:
    cid = sorted(city_sim.controllers)[0]
    phases = [p.phase for p in city_sim.controllers[cid].controller.timings]
    valid = timing_commands(
        controller_id=st.sampled_from([cid, "K-other"]),
        issued_at=st.just(datetime.fromtimestamp(START, UTC)),
        phases=st.sampled_from(phases),
    ).map(lambda c: c.model_dump_json().encode())
    inbox = data.draw(st.lists(valid | near_miss_json() | st.binary(max_size=200), max_size=6))
    link = _link(city_sim, DeviceKind.SIGNAL, cid)
    link.inbox.extend(inbox)
    stats = RunStats(sim_start=START)
    _take_timings(city_sim, {cid: link}, START + 1.0, stats)
    assert link.inbox == []
    assert sum(stats.commands.values()) == len(inbox)


@pytest.fixture(autouse=True)
def _quiet(caplog: pytest.LogCaptureFixture) -> None:
    """Refusals are logged as warnings by design; keep them out of the report."""
    caplog.set_level(logging.ERROR)
