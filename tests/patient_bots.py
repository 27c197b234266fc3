"""`python -m bots ARGS` as a test's child process: `python tests/patient_bots.py ARGS`.

What every in-process test gets (tests/conftest.py, `patient_database`), a child gets here: it waits for
its database however slowly a loaded machine makes it answer (`waiting.patience`), so that what it
counts in the database is not counted in memory instead. With TOONBOT_TEST_MINUTE (Unix time), its rate
limiters' minute stands still there (`waiting.still_minute`): replicas a test starts count one minute.
"""

import os
import runpy
import sys
from contextlib import ExitStack

from waiting import patience, still_minute  # this folder is the script's: first on sys.path

with ExitStack() as stack:
    stack.enter_context(patience())
    if minute := os.environ.get("TOONBOT_TEST_MINUTE"):
        stack.enter_context(still_minute(float(minute)))
    sys.argv[0] = "python -m bots"
    runpy.run_module("bots", run_name="__main__", alter_sys=True)
