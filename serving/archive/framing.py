"""TEMPORARY: framing is `styles.payload.framing`. tests/test_discord.py still imports NO_FACE
from here; delete this file (and serving/archive/) once it imports `styles.payload.framing`."""

from styles.payload.framing import NO_FACE  # noqa: F401
