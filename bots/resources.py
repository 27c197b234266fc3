"""The process's one core and what it holds open: the model runtime and the database.

Each front end opens it in its own startup hook (PTB `post_init`, aiohttp
`on_startup`, discord.py `setup_hook`) and closes it in its shutdown hook;
the first opener builds it and the last closer releases it, so several front
ends in one process share one model, one connection pool and one global
limit on work in flight.
"""

from __future__ import annotations

import asyncio
import logging
from contextlib import AsyncExitStack

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bots import metrics
from bots.admin import Admin, open_admin
from bots.core import Core
from bots.limits import ChatLimits
from bots.shared_limits import SharedLimits
from config import Settings
from db.engine import create_engine, session_factory
from db.usage import UsageRecorder
from ops.management import open_management
from serving import animation
from serving.engine import EmbeddedEngine
from serving.factory import open_stylizer

logger = logging.getLogger(__name__)


class SharedCore:
    """Reference-counted: `open` in every startup hook, `close` in the matching shutdown hook."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._lock = asyncio.Lock()
        self._holders = 0
        self._core: Core | None = None
        self.admin: Admin | None = None  # built with the core; front ends announce finished jobs with it
        self._stack = AsyncExitStack()
        self._warm_up: asyncio.Task[None] | None = None  # the embedded engine loading every style
        self._sessions: async_sessionmaker[AsyncSession] | None = None  # the core's database, once open
        self._recorder: UsageRecorder | None = None  # the core's usage log, while open

    def chat_limits(self, platform: str) -> ChatLimits:
        """A front end's per-group limits (`CHAT_REQUESTS_PER_MINUTE`, `CHAT_MAX_IN_FLIGHT`), their minute kept
        in the database like the users' when the core's are (`SHARED_LIMITS`); call once the core is open."""
        settings, minute = self._settings, None
        if settings.limits_in_database and self._sessions is not None:
            minute = SharedLimits(self._sessions, f"chat:{platform}", settings.chat_requests_per_minute,
                                  one_at_a_time=False)
        return ChatLimits(settings.chat_requests_per_minute, settings.chat_max_in_flight, minute=minute)

    async def ready(self) -> dict[str, bool]:
        """For `/readyz`: the core is open, its styles are loaded (the embedded engine's warm-up is
        done: a request would otherwise wait for a style to load) and the database answers."""
        core = self._core
        if core is None:
            return {"started": False}
        checks = await core.ready()
        if self._warm_up is not None and not self._warm_up.done():
            checks["styles"] = False
        return checks

    async def open(self) -> Core:
        """The core, built on first use."""
        async with self._lock:
            if self._core is None:
                try:
                    self._core = await self._build()
                except BaseException:  # a failure, or a stop signal during start-up
                    await self._stack.aclose()  # release what was opened before it
                    raise
            self._holders += 1
            return self._core

    async def close(self) -> None:
        """Release one hold; the last one flushes the usage log and closes everything."""
        async with self._lock:
            self._holders -= 1
            if self._holders == 0:
                self._core = None
                try:
                    await self._stack.aclose()
                finally:
                    self._recorder = None  # not before: a stop's `flush` may wait for the close's

    async def flush(self, timeout_s: float) -> None:
        """Write the usage log's queued rows now, waiting for the database up to `timeout_s` (at a stop
        signal, before the grace that cuts the closing short: however slowly a loaded machine writes them,
        they are not lost to it); rows still queued then are left to the close, which says how many."""
        recorder = self._recorder
        if recorder is None or not recorder.pending:
            return
        logger.info("stopping: writing %d usage rows first", recorder.pending)
        try:
            await asyncio.wait_for(recorder.flush(), timeout_s)
        except TimeoutError:
            logger.warning("stopping: %d usage rows still unwritten after %.0f s", recorder.pending, timeout_s)

    async def _build(self) -> Core:
        settings = self._settings
        engine = create_engine(settings.database_url)
        self._stack.push_async_callback(engine.dispose)
        sessions = session_factory(engine)
        stylizer = open_stylizer(settings)
        self._stack.push_async_callback(stylizer.close)
        if not await stylizer.styles():
            logger.warning(
                "no styles deployed%s: export a checkpoint into the model store (README, Serving)",
                f" in {settings.model_store}" if settings.torchserve_url is None else "",
            )
        if isinstance(stylizer, EmbeddedEngine):
            metrics.ENGINE_QUEUE.set_function(stylizer.queued)
            self._warm_up = warm_up = asyncio.create_task(stylizer.warm_up(first=settings.default_style))
            self._stack.callback(warm_up.cancel)
        self._recorder = recorder = UsageRecorder(sessions)
        self._stack.push_async_callback(recorder.close)  # flushed before the engine goes
        core = Core(
            stylizer=stylizer,
            sessions=sessions,
            recorder=recorder,
            default_style=settings.default_style,
            requests_per_minute=settings.requests_per_minute,
            network_requests_per_minute=settings.web_requests_per_minute_per_ip,
            max_in_flight=settings.max_in_flight,
            max_upload_bytes=settings.max_upload_bytes,
            output_size=settings.output_size,
            upscale_backlog=settings.upscale_backlog,
            animation_limits=animation.Limits.of(settings),
            clips_in_flight=settings.animation_max_in_flight,
            shared_limits=settings.limits_in_database,
        )
        self._sessions = sessions
        self._stack.push_async_callback(core.settle, 5.0)  # style saves still in flight, before the engine goes
        self.admin = await open_admin(settings, open_management(settings, stylizer), sessions, core)
        self._stack.push_async_callback(self.admin.close)
        return core
