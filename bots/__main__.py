import logging
import os
import sys

from bots.run import main

code = main()
# Threads still working (a style compiling since start-up) must not hold the exit: main has
# closed everything that needed closing, the usage log included.
logging.shutdown()
sys.stdout.flush()
sys.stderr.flush()
os._exit(code)
