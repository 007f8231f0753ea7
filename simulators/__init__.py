"""cityops.simulators: a simulated city publishing to the broker like real devices.

Pure core, I/O at the edges:

* `scenario` - the YAML scenario (pydantic, unknown keys refused) and `load_scenario`;
* `city` - `build_city(scenario, network)`: where every bin, signal controller, site
  and truck is, deterministic for the seed;
* `models` - `CitySim` stepping `BinSim` (bin_sim.py), `SignalControllerSim`
  (signal_sim.py) and `TruckSim` (truck_sim.py) in time order, returning `Emission`s
  whose payloads are the contract models of `cityops.ingest.contract`;
* `seed` - upserts the city into the device registry (psycopg);
* `runner` - the accelerated clock and one MQTT client per device;
* `cli` - `cityops simulate`;
* `demo` - `cityops demo`, the whole city on one machine (child processes), with what it
  prints and scripts in `demo_show`.

Nothing is imported here so that `cityops --help` stays fast.
"""
