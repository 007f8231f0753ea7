"""cityops.routing: waste-collection route planning, daily and while the trucks drive.

A pure core: `model` (the problem and plan as frozen dataclasses), `rows` (the rows the
planners read), `screening` (what no engine could plan), `network` and `osm` (the
directed road graph of an OpenStreetMap extract, travel-time matrices, leg geometry, and
the caching network of the re-planner), `closures` (street closures applied to that
graph), `forecast` (fill-level forecasts and the bins due), `dispatch` (which fraction's
round goes out with which bins and trucks), `planning` (city state to `Problem`, plan to
route documents), the pure modules of `replan/` (triggers, day state, warm start,
problem, stability, and `replan.pipeline`, one re-plan from triggers to versions) and
`check` (independent verification of every plan). Engines: `solver` with `ortools_model`
(OR-Tools, the only modules that import it), `pyvrp_engine` (PyVRP) and `engines` (which
engine a name means); `vrplib` reads and writes CVRPLIB files; `errors` holds the
package's exceptions. The edges: `repository` (the only SQL: versioned routes, closures,
planning inputs), `extract` (which street network a city plans on), `publish` (the push
to `{prefix}/v1/truck/{id}/cmd/route`), `daily` (`cityops routing plan`),
`replan.service` (the `cityops routing replan` service over MQTT, on the ingest's
service skeleton) and `cli` with `ops_cli` (`cityops routing ...`). The package exports
nothing itself; import from the modules. See docs/routing.md.
"""
