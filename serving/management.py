"""TEMPORARY: management is `ops.management`. tests/fakes/stylizer.py still imports
DeployError and StyleVersions from here; delete this file once it imports `ops.management`."""

from ops.management import DeployError, StyleVersions  # noqa: F401
