"""The SUMO traffic simulator: a generated grid whose traffic lights are our controllers.

`network.py` builds the grid, its loops and demand; `sim.py` runs it through libsumo;
`mqtt.py` is the broker edge (events out, timing commands in, the lockstep clock);
`registry.py` writes the grid's controllers into the database registry; `cli.py` is
`cityops traffic sumo`.
"""

from cityops.simulators.sumo.network import GridSpec, Intersection, Loop
from cityops.simulators.sumo.sim import RunConfig, RunResult, run

__all__ = ["GridSpec", "Intersection", "Loop", "RunConfig", "RunResult", "run"]
