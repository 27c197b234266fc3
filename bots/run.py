"""Run the front ends in one process: `python -m bots [web|telegram|discord]` (no name: every configured one)."""

from __future__ import annotations

import argparse
import asyncio
import importlib
import logging
import signal
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass

from bots.resources import SharedCore
from config import Settings, get_settings
from db.engine import migrate
from telemetry import probes

logger = logging.getLogger(__name__)

# After Ctrl-C or SIGTERM the usage log's queued rows are written first, for as long as the database
# takes (a loaded machine's second or two), up to STOP_FLUSH_S while it does not answer; only then do the
# front ends get STOP_GRACE_S to finish closing, and whatever still runs, start-up included, is cancelled.
STOP_FLUSH_S = 10.0
STOP_GRACE_S = 1.0


Serve = Callable[[Settings, SharedCore, asyncio.Event], Awaitable[None]]


@dataclass(frozen=True)
class FrontEnd:
    """How to serve one front end until a stop event, and whether the settings allow it."""

    module: str  # its adapter, with `serve`; imported only when it runs (PTB and discord.py cost ~25 MiB each)
    configured: Callable[[Settings], bool]
    missing: str  # what to set when it is asked for but not configured

    @property
    def serve(self) -> Serve:
        return importlib.import_module(self.module).serve


# The one list of front ends: a new one is a new line here.
FRONT_ENDS: dict[str, FrontEnd] = {
    "web": FrontEnd("bots.web", lambda s: True, ""),
    "telegram": FrontEnd("bots.telegram", lambda s: s.telegram_token is not None, "TELEGRAM_TOKEN"),
    "discord": FrontEnd("bots.discord", lambda s: s.discord_token is not None, "DISCORD_TOKEN"),
}


async def run(names: Sequence[str], settings: Settings) -> None:
    """Migrate the database, then serve `names` side by side until SIGINT/SIGTERM.

    A signal stops the process within about `STOP_GRACE_S` at any moment, start-up included, once
    the usage log is written (no grace cuts that short): the front ends close in that time, else are
    cancelled.
    """
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    shared = SharedCore(settings)
    work = asyncio.create_task(_migrate_and_serve(names, settings, stop, shared), name="front-ends")
    stopping = asyncio.create_task(stop.wait())
    await asyncio.wait({work, stopping}, return_when=asyncio.FIRST_COMPLETED)
    stopping.cancel()
    if not work.done():
        await shared.flush(STOP_FLUSH_S)  # while the front ends begin closing
        await asyncio.wait({work}, timeout=STOP_GRACE_S)
    if not work.done():
        logger.warning("still busy %.1f s after the stop signal (starting up?): cutting it short", STOP_GRACE_S)
        work.cancel()
        await asyncio.wait({work})
        if work.cancelled():
            return
    work.result()  # a front end's failure


async def _migrate_and_serve(
    names: Sequence[str], settings: Settings, stop: asyncio.Event, shared: SharedCore | None = None
) -> None:
    shared = shared or SharedCore(settings)
    # One failing front end cancels the others, and each cleans up on the way out.
    async with asyncio.TaskGroup() as group:
        if settings.metrics_port is not None:  # up first: /healthz answers (and /readyz says 503) while starting
            probe = probes.serve(settings.metrics_host, settings.metrics_port, shared.ready, stop)
            group.create_task(probe, name="probes")
        await migrate(settings.database_url)
        for name in names:
            group.create_task(FRONT_ENDS[name].serve(settings, shared, stop), name=name)


def run_loop(main: Coroutine[None, None, None]) -> None:
    """`asyncio.run`, except that threads still working at the end are not waited for.

    A style compiling in a thread at start-up takes tens of seconds and cannot
    be interrupted; everything that needed closing has closed by now.
    """
    loop = asyncio.new_event_loop()
    try:
        loop.run_until_complete(main)
        loop.run_until_complete(loop.shutdown_asyncgens())
    finally:
        loop.close()  # shuts the default executor down without waiting for it


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the command line, check the chosen front ends are configured, and run them."""
    parser = argparse.ArgumentParser(prog="python -m bots", description=__doc__)
    parser.add_argument("front_end", nargs="?", choices=sorted(FRONT_ENDS))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # PTB's every long poll otherwise
    settings = get_settings()
    if args.front_end:
        front_end = FRONT_ENDS[args.front_end]
        if not front_end.configured(settings):
            parser.error(f"{args.front_end} needs {front_end.missing} (in the environment or .env)")
        names = [args.front_end]
    else:
        names = [name for name, f in FRONT_ENDS.items() if f.configured(settings)]
    try:
        run_loop(run(names, settings))
    except KeyboardInterrupt:  # before the signal handlers were in place
        return 130
    return 0
