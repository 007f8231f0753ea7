"""cityops.routing: waste-collection route planning, daily and while the trucks drive.

A pure core: `model` (the problem and plan as frozen dataclasses), `network` and `osm`
(the directed road graph of an OpenStreetMap extract, travel-time matrices, leg
geometry), `closures` (street closures applied to that graph), `forecast` (fill-level
forecasts and the bins due), `dispatch` (which fraction's round goes out with which bins
and trucks), `planning` (city state to `Problem`, plan to route documents), `replan`
(which events call for a re-plan and the problem of the remaining work) and `check`
(independent verification of every plan). Engines: `solver` (OR-Tools, the one module
that imports it) and `pyvrp_engine` (PyVRP); `vrplib` reads and writes CVRPLIB files.
The edges: `repository` (the only SQL: versioned routes, closures, planning inputs),
`daily` (`cityops routing plan`, pushing through `publish` to
`{prefix}/v1/truck/{id}/cmd/route`), `replanner` (the `cityops routing replan` service
over MQTT, with its own persistent client) and `cli` with `ops_cli` (`cityops routing
...`). The package exports nothing itself; import from the modules. See docs/routing.md.
"""
