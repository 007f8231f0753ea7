"""cityops.traffic: signal performance measures and Webster retiming.

A pure core (`events`: the event model, registry and input cleaning; `measures`: the
ATSPM-style measures per phase and 15-minute bin; `webster`: fixed-time plans from
measured flows), SQL in `repository`, and `cli` at the edge. See docs/traffic.md.
"""

from cityops.traffic.errors import TrafficError, UnknownController
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
    "UnknownController",
    "arrivals",
    "clean",
    "cycles",
    "detector_health",
    "pedestrian_waits",
    "phase_measures",
    "split_failures",
    "webster",
]
