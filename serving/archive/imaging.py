"""TEMPORARY: the handler's imaging is `styles.payload.imaging`. tests/fakes/stylizer.py still
imports it from here; delete this file (and serving/archive/) once it imports `styles.payload.imaging`."""

from styles.payload.imaging import *  # noqa: F401,F403
