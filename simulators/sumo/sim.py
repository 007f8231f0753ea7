"""Run the SUMO grid with our controllers (or SUMO's own actuated programs) via libsumo.

Each simulation step (0.1 s by default): the commands received so far are handed to their
controllers at the controller's time, every controller steps to now, the SUMO signal
states are set from each controller's phase and interval, SUMO advances one step, and every
induction loop's occupancy gives detector on (82) / off (81) events. Events are published
once per `batch_s` of simulated time as `SignalEvents` per controller.

Clocks: `lockstep` runs as fast as SUMO can and, with `control="commands"`, publishes a
tick on `{prefix}/v1/sim/clock` every `decision_s` and waits (up to `tick_timeout_s` of
wall time) for a command with `issued_at >= tick` from every controller; `realtime` paces
the simulation to the wall clock, the controllers obey whatever arrives.

`control`: `fixed` = our controllers on their own fixed-time plans (commands are still
obeyed, as a real controller would), `commands` = the same, plus the lockstep wait for
the control service, `actuated` = SUMO's own actuated programs (a reference: no
controller of ours, no phase events).
"""

from __future__ import annotations

import logging
import math
import time
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Protocol

import numpy as np

from cityops.ingest.contract import TimingCommand
from cityops.simulators.controller import Interval, PhaseTiming, RawEvent, SignalController
from cityops.simulators.sumo.network import (
    GridSpec,
    Intersection,
    build_grid,
    intersections,
    sumo_binary,
    write_demand,
    write_loops,
)

__all__ = ["Bus", "Network", "RunConfig", "RunResult", "run"]

logger = logging.getLogger(__name__)

DETECTOR_OFF, DETECTOR_ON = 81, 82
Control = Literal["fixed", "actuated", "commands"]
Clock = Literal["lockstep", "realtime"]


class Bus(Protocol):
    """Where events go and commands come from (MQTT in `mqtt.py`)."""

    def publish_events(self, controller_id: str, events: list[RawEvent]) -> None: ...

    def tick(self, ts: float, step: int) -> None: ...

    def wait_commands(self, ts: float, expected: set[str], timeout_s: float) -> bool: ...

    def take_commands(self) -> list[tuple[str, bytes]]: ...


class Network(Protocol):
    """A network other than the grid (e.g. `osm.OsmNetwork`): its file, our junctions on
    it and its demand. Its lights' SUMO programs are whatever it was built with."""

    @property
    def net_file(self) -> Path: ...

    @property
    def junctions(self) -> tuple[Intersection, ...]: ...

    def write_demand(self, path: Path, vph: float, duration_s: float, seed: int) -> int: ...


@dataclass(frozen=True)
class RunConfig:
    """One simulation run; `start` is the UNIX time of simulated second 0. With
    `network`, that network replaces the grid (`grid` then gives only the timings)."""

    start: float
    work_dir: Path
    grid: GridSpec = field(default_factory=GridSpec)
    vph: float = 3600.0
    seed: int = 1
    duration_s: float = 3600.0
    step_s: float = 0.1
    control: Control = "fixed"
    clock: Clock = "lockstep"
    decision_s: float = 2.0
    tick_timeout_s: float = 2.0
    batch_s: float = 1.0
    greens: Mapping[str, Mapping[int, float]] | None = None  # own plan per controller
    failed_share: float = 0.0
    keep_events: bool = False
    network: Network | None = None

    def __post_init__(self) -> None:
        if self.step_s <= 0 or round(self.step_s * 10, 6) != round(self.step_s * 10):
            raise ValueError("step_s must be a positive multiple of 0.1 s")
        if self.duration_s <= 0 or self.vph < 0:
            raise ValueError("duration_s must be positive and vph not negative")
        if not 0.0 <= self.failed_share < 1.0:
            raise ValueError("failed_share must be in [0, 1)")


@dataclass
class RunResult:
    """What SUMO measured (tripinfo of arrived vehicles) and what the controllers did."""

    control: str
    vph: float
    seed: int
    duration_s: float
    departed: int = 0
    arrived: int = 0
    in_network: int = 0
    waiting_to_enter: int = 0
    mean_time_loss_s: float = math.nan
    mean_depart_delay_s: float = math.nan
    mean_stops: float = math.nan
    throughput_vph: float = 0.0
    teleports: int = 0
    wall_s: float = 0.0
    events_published: int = 0
    ticks: int = 0
    tick_timeouts: int = 0
    command_counts: Counter[str] = field(default_factory=Counter)
    failed_loops: tuple[str, ...] = ()
    events: dict[str, list[RawEvent]] = field(default_factory=dict)
    junctions: tuple[Intersection, ...] = ()

    def summary(self) -> dict[str, object]:
        return {
            "control": self.control,
            "vph": self.vph,
            "seed": self.seed,
            "duration_s": self.duration_s,
            "departed": self.departed,
            "arrived": self.arrived,
            "in_network": self.in_network,
            "waiting_to_enter": self.waiting_to_enter,
            "mean_time_loss_s": round(self.mean_time_loss_s, 2),
            "mean_depart_delay_s": round(self.mean_depart_delay_s, 2),
            "mean_stops": round(self.mean_stops, 3),
            "throughput_vph": round(self.throughput_vph, 1),
            "teleports": self.teleports,
            "wall_s": round(self.wall_s, 2),
            "events_published": self.events_published,
            "ticks": self.ticks,
            "tick_timeouts": self.tick_timeouts,
            "commands": dict(sorted(self.command_counts.items())),
            "failed_loops": len(self.failed_loops),
        }


def timings(cfg: RunConfig, junction: Intersection) -> list[PhaseTiming]:
    g = cfg.grid
    plan = (cfg.greens or {}).get(junction.controller_id, {})
    return [
        PhaseTiming(
            p,
            green_s=float(plan.get(p, g.green_s)),
            min_green_s=g.min_green_s,
            max_green_s=g.max_green_s,
            yellow_s=g.yellow_s,
            red_clearance_s=g.red_clearance_s,
        )
        for p in (2, 4)
    ]


def prepare(cfg: RunConfig) -> tuple[Path, tuple[Intersection, ...]]:
    """Network (cached in `work_dir`) and our view of its junctions."""
    if cfg.network is not None:
        return cfg.network.net_file, cfg.network.junctions
    tls_type = "actuated" if cfg.control == "actuated" else "static"
    net = build_grid(cfg.grid, cfg.work_dir, tls_type)
    return net, intersections(cfg.grid, net)


def run(
    cfg: RunConfig,
    bus: Bus | None = None,
    progress: Callable[[float, RunResult], None] | None = None,
) -> RunResult:
    """Simulate `cfg.duration_s` seconds; deterministic for the seed when commands are."""
    import libsumo

    net, junctions = prepare(cfg)
    tag = f"{cfg.control}_{cfg.vph:g}_{cfg.seed}_{id(cfg)}"
    trips = cfg.work_dir / f"trips_{tag}.xml"
    loops_file = write_loops(cfg.work_dir / f"loops_{tag}.add.xml", junctions)
    if cfg.network is not None:
        cfg.network.write_demand(trips, cfg.vph, cfg.duration_s, cfg.seed)
    else:
        write_demand(trips, net, cfg.vph, cfg.duration_s, cfg.seed)
    tripinfo = cfg.work_dir / f"tripinfo_{tag}.xml"
    result = RunResult(cfg.control, cfg.vph, cfg.seed, cfg.duration_s, junctions=junctions)
    ours = cfg.control != "actuated"
    controllers = (
        {
            j.controller_id: SignalController(j.controller_id, timings(cfg, j), cfg.start)
            for j in junctions
        }
        if ours
        else {}
    )
    by_id = {j.controller_id: j for j in junctions}
    loops = [(j.controller_id, lp.loop_id, lp.channel) for j in junctions for lp in j.loops]
    rng = np.random.default_rng([cfg.seed, 9])
    n_failed = round(cfg.failed_share * len(loops))
    failed = {loops[int(i)][1] for i in rng.choice(len(loops), n_failed, replace=False)}
    result.failed_loops = tuple(sorted(failed))
    if failed:
        logger.info(
            "%d of %d detectors failed (silent): %s",
            len(failed),
            len(loops),
            ", ".join(sorted(failed)),
        )
    live = [lp for lp in loops if lp[1] not in failed]
    occupied = dict.fromkeys((lp[1] for lp in live), False)
    buffers: dict[str, list[RawEvent]] = {cid: [] for cid in by_id}
    states: dict[str, str] = {}
    ds = round(cfg.step_s * 10)
    start_ds = math.floor(cfg.start * 10)
    n_steps = round(cfg.duration_s * 10) // ds
    batch_steps = max(1, round(cfg.batch_s * 10) // ds)
    decision_steps = max(1, round(cfg.decision_s * 10) // ds)
    lockstep_wait = bus is not None and cfg.control == "commands" and cfg.clock == "lockstep"

    libsumo.start(
        [
            sumo_binary("sumo"),
            "-n",
            str(net),
            "-r",
            str(trips),
            "-a",
            str(loops_file),
            "--step-length",
            f"{cfg.step_s:g}",
            "--seed",
            str(cfg.seed),
            "--begin",
            "0",
            "--tripinfo-output",
            str(tripinfo),
            "--no-step-log",
            "true",
            "--no-warnings",
            "true",
            "--time-to-teleport",
            "300",
            "--duration-log.disable",
            "true",
        ]
    )
    wall0 = time.monotonic()
    try:
        for k in range(n_steps):
            now_ds = start_ds + k * ds
            if bus is not None and ours:
                _apply_commands(bus, controllers, buffers, now_ds / 10, result)
            for cid, ctrl in controllers.items():
                buffers[cid] += ctrl.step(now_ds / 10)
                state = _state(by_id[cid], ctrl)
                if states.get(cid) != state:
                    libsumo.trafficlight.setRedYellowGreenState(by_id[cid].tls_id, state)
                    states[cid] = state
            if cfg.clock == "realtime":
                delay = wall0 + k * cfg.step_s - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
            libsumo.simulationStep()
            after_ds = now_ds + ds
            for cid, loop_id, channel in live:
                on = libsumo.inductionloop.getLastStepOccupancy(loop_id) > 0.0
                if on != occupied[loop_id]:
                    occupied[loop_id] = on
                    buffers[cid].append(
                        RawEvent(after_ds, DETECTOR_ON if on else DETECTOR_OFF, channel)
                    )
            result.teleports += libsumo.simulation.getStartingTeleportNumber()
            done = k + 1
            if done % batch_steps == 0 or done % decision_steps == 0 or done == n_steps:
                _flush(buffers, bus, result, cfg.keep_events)
            if lockstep_wait and done % decision_steps == 0 and bus is not None:
                result.ticks += 1
                bus.tick(after_ds / 10, result.ticks)
                if not bus.wait_commands(after_ds / 10, set(controllers), cfg.tick_timeout_s):
                    result.tick_timeouts += 1
            if progress is not None and done % round(600 * 10 / ds) == 0:
                progress(done * cfg.step_s, result)
        result.in_network = libsumo.vehicle.getIDCount()
        result.waiting_to_enter = len(libsumo.simulation.getPendingVehicles())
        for ctrl in controllers.values():
            result.command_counts.update(ctrl.counts)
    finally:
        libsumo.close()
        result.wall_s = time.monotonic() - wall0
    _read_tripinfo(tripinfo, result)
    for f in (trips, loops_file, tripinfo):
        f.unlink(missing_ok=True)
    return result


def _state(j: Intersection, ctrl: SignalController) -> str:
    if ctrl.interval is Interval.GREEN:
        return j.green[ctrl.phase]
    if ctrl.interval is Interval.YELLOW:
        return j.yellow[ctrl.phase]
    return j.all_red


def _apply_commands(
    bus: Bus,
    controllers: dict[str, SignalController],
    buffers: dict[str, list[RawEvent]],
    now: float,
    result: RunResult,
) -> None:
    from pydantic import ValidationError

    for cid, raw in bus.take_commands():
        ctrl = controllers.get(cid)
        if ctrl is None:
            result.command_counts["dropped:unknown_controller"] += 1
            continue
        try:
            cmd = TimingCommand.model_validate_json(raw)
        except ValidationError as exc:
            logger.warning("%s: invalid timing command refused: %s", cid, exc.errors()[0]["msg"])
            result.command_counts["refused:invalid"] += 1
            continue
        # Bring the controller up to `now` before the command; the events of that step
        # (e.g. an expiry's 131) are published like any other.
        buffers[cid] += ctrl.step(now)
        ctrl.receive(cmd)


def _flush(
    buffers: dict[str, list[RawEvent]], bus: Bus | None, result: RunResult, keep: bool
) -> None:
    for cid, events in buffers.items():
        if not events:
            continue
        if bus is not None:
            bus.publish_events(cid, events)
        result.events_published += len(events)
        if keep:
            result.events.setdefault(cid, []).extend(events)
        buffers[cid] = []


def _read_tripinfo(path: Path, result: RunResult) -> None:
    loss = delay = stops = 0.0
    n = 0
    if path.exists():
        for _, el in ET.iterparse(path):  # noqa: S314  (our own SUMO output)
            if el.tag == "tripinfo":
                n += 1
                loss += float(el.get("timeLoss", 0.0))
                delay += float(el.get("departDelay", 0.0))
                stops += float(el.get("waitingCount", 0.0))
                el.clear()
    result.arrived = n
    result.departed = n + result.in_network
    if n:
        result.mean_time_loss_s = loss / n
        result.mean_depart_delay_s = delay / n
        result.mean_stops = stops / n
    result.throughput_vph = n * 3600.0 / result.duration_s
