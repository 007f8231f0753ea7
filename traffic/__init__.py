"""cityops.traffic: signal performance measures, Webster retiming and adaptive control.

A pure core: `events` (the event model, registry and input cleaning), `measures` (the
ATSPM-style measures per phase and 15-minute bin), `purdue` (coordination diagram points),
`webster` (fixed-time plans from measured flows) and `maxpressure` (the queue estimate and
the hold/advance/fallback decision of adaptive control). The edges: `repository` (SQL of
the registry, events and stored measures), `store` (the measures of complete bins,
computed continuously and stored), `control` with `control_state` and `control_store`
(the max-pressure service over MQTT, `cmd/timing` out, control modes from the database),
`eventlog` with `event_import`, `event_watch` and `follow_log` (controllers' event log
files: imported into the events and measured, or followed and published over MQTT) and
`cli` (`cityops traffic ...`). The package exports the measures and Webster core below; import
the others from their modules. See docs/traffic.md.
"""

from cityops.traffic.errors import TrafficError, UnknownControllerError
from cityops.traffic.events import (
    Cleaned,
    ControllerConfig,
    DetectorConfig,
    Event,
    Flag,
    PhaseConfig,
    Problem,
    clean,
)
from cityops.traffic.measures import (
    Cycle,
    CycleOccupancy,
    DetectorHealth,
    PedestrianWait,
    PhaseBin,
    arrivals,
    cycles,
    detector_health,
    pedestrian_waits,
    phase_measures,
    split_failures,
)
from cityops.traffic.webster import PhaseDemand, PhaseTiming, Plan, webster

__all__ = [
    "Cleaned",
    "ControllerConfig",
    "Cycle",
    "CycleOccupancy",
    "DetectorConfig",
    "DetectorHealth",
    "Event",
    "Flag",
    "PedestrianWait",
    "PhaseBin",
    "PhaseConfig",
    "PhaseDemand",
    "PhaseTiming",
    "Plan",
    "Problem",
    "TrafficError",
    "UnknownControllerError",
    "arrivals",
    "clean",
    "cycles",
    "detector_health",
    "pedestrian_waits",
    "phase_measures",
    "split_failures",
    "webster",
]
