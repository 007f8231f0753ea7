"""Re-planning during the day: which events call for a new plan, and the new routes of a
fraction's trucks while they drive them.

A re-plan goes forward through these modules, the pure ones first:

* ``triggers.py``: bin readings and truck events and positions as triggers (and the rules
  that silence one: an emptied bin, a stuck sensor, a bin still to come on a route);
* ``day.py``: the day's state a re-plan reads and which fraction each trigger re-plans;
* ``pool.py``, ``warm.py``, ``problem.py``: the stops to serve, the starting solution
  (the current routes with what the event calls for) and the problem;
* ``solve.py``, ``stability.py``, ``documents.py``: the warm and the cold solve, the rule
  that keeps a driver's order for a small gain, the route versions;
* ``pipeline.py``: :func:`~cityops.routing.replan.pipeline.replan_fraction`, every decision
  from the triggers to the trucks that get a new version, in order.

The service around them: ``listen.py`` (MQTT), ``heard.py`` (what it heard), ``loading.py``
(the database and the network under the closures), ``startup.py`` (the cold-solve process,
the network's warm-up), ``metrics.py`` and ``service.py`` (listen, load, call the pipeline,
store, push through ``routing/publish.py``).

Rules (see :func:`~cityops.routing.replan.problem.build_replan` for the details):

* A bin reading at or above ``overflow_pct`` (or ``fire_c``) for a bin on no current route
  of today adds it as a required stop for the trucks collecting its fraction today; a fire
  must be served within ``fire_within_s`` (relaxed when no truck can).
* A skipped stop goes back to the pool, not before ``skip_retry_s``; required when the bin
  is at least ``mandatory_pct`` full (or its level is unknown), else optional with the
  daily plan's reward.
* A broken-down (or finished) truck's remaining stops go to the other trucks of its
  fraction; it gets a final version without stops.
* A truck more than ``late_s`` behind the ETA of its next stop re-plans its fraction.
* Done stops (``stop_done`` of any truck since the day's first ETA minus ``done_margin``)
  never re-appear; every truck starts where and when it is, with its load and the work
  since its shift start or last planned break.
* A bin emptied today re-plans again only on a reading taken ``refill_after`` or more after
  its emptying, once the emptying has been known as long (it filled up again, or a fire);
  an earlier reading is a late one or the emptying itself. The version that takes it
  back lists it again, and the stop counts as done only when it is emptied again
  (``triggers.emptied_for``, ``triggers.refilled``).
"""
