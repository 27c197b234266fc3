"""TEMPORARY: the catalogue is `styles.catalog`. bots/core.py and tests/fakes/stylizer.py still
import it from here; delete this file once they import `styles.catalog`."""

from styles.catalog import *  # noqa: F401,F403
from styles.catalog import shown  # noqa: F401
