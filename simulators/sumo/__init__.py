"""The SUMO traffic simulator: a road network whose traffic lights are our controllers.

Two networks: `network.py` builds a generated n x n grid (`GridSpec`, controllers
`GRID-A0` ..), its induction loops and demand; `osm.py` converts the city's OpenStreetMap
extract with netconvert (`build_osm_network`; two-axis signals become controllers
`OSM-<node id>`, the other lights keep SUMO's own program). Either way the lights follow
`cityops.simulators.controller` state machines. `sim.py` runs the network through libsumo
(`RunConfig.network` picks the OSM one instead of the grid); `mqtt.py` is the broker edge
(events out, timing commands in, the lockstep clock); `registry.py` writes the
controllers, phases and detectors of either network into the database registry; `cli.py`
is `cityops traffic sumo --network grid|osm`; `loop.py` is the traffic closed loop that
`cityops demo` runs on the grid. See docs/traffic.md, "Simulator (SUMO)".
"""

from cityops.simulators.sumo.network import GridSpec, Intersection, Loop
from cityops.simulators.sumo.sim import RunConfig, RunResult, run

__all__ = ["GridSpec", "Intersection", "Loop", "RunConfig", "RunResult", "run"]
