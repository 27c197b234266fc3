"""Run the front ends in one process: `python -m bots [web|telegram|discord]` (no name: every configured one)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from bots import discord, telegram, web
from bots.resources import SharedCore
from bots.settings import Settings, get_settings
from db.engine import default_url, migrate

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class FrontEnd:
    """How to serve one front end until a stop event, and whether the settings allow it."""

    serve: Callable[[Settings, SharedCore, asyncio.Event], Awaitable[None]]
    configured: Callable[[Settings], bool]
    missing: str  # what to set when it is asked for but not configured


# The one list of front ends: a new one is a new line here.
FRONT_ENDS: dict[str, FrontEnd] = {
    "web": FrontEnd(web.serve, lambda s: True, ""),
    "telegram": FrontEnd(telegram.serve, lambda s: s.telegram_token is not None, "TELEGRAM_TOKEN"),
    "discord": FrontEnd(discord.serve, lambda s: s.discord_token is not None, "DISCORD_TOKEN"),
}


async def run(names: Sequence[str], settings: Settings) -> None:
    """Migrate the database, then serve `names` side by side until SIGINT/SIGTERM."""
    await migrate(settings.database_url or default_url())
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    shared = SharedCore(settings)
    # One failing front end cancels the others, and each cleans up on the way out.
    async with asyncio.TaskGroup() as group:
        for name in names:
            group.create_task(FRONT_ENDS[name].serve(settings, shared, stop), name=name)


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
    asyncio.run(run(names, settings))
    return 0
