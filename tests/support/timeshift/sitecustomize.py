"""Shift this Python process's wall clock when CITYOPS_TEST_TIME_SHIFT_S is set.

tests/support/run-at.sh puts this folder on PYTHONPATH, so that pytest and every Python
process the tests start (the `cityops` CLI, simulators, the API) read the same shifted
date and time; it starts PostgreSQL under libfaketime with the same shift. Only wall-clock
reads move (time.time, datetime.now, ...); monotonic clocks, and so every timeout, stay real.
Nothing here runs outside such a test run.
"""

import os

_shift = os.environ.get("CITYOPS_TEST_TIME_SHIFT_S")
if _shift:
    import time

    import time_machine

    time_machine.travel(time.time() + float(_shift), tick=True).start()
