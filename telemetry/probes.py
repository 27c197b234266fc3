"""`/metrics` (Prometheus' text format), `/healthz` (the process answers) and `/readyz` (it can work).

An orchestrator restarts a process whose `/healthz` fails and sends no traffic
to one whose `/readyz` answers 503; Prometheus scrapes `/metrics`. Each
process says what "ready" means to it (`Ready`): the bots, styles loaded and
the database answering; the training worker, the database answering.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

logger = logging.getLogger(__name__)

# Each check's name -> whether it passes, e.g. {"styles": True, "database": False}.
Ready = Callable[[], Awaitable[dict[str, bool]]]
PATHS = ("/metrics", "/healthz", "/readyz")
READY_TIMEOUT_S = 2.0  # a check that takes longer fails: kubelet's own default timeout is 1 s per probe


class Patient:
    """A check that may hang (a query on a frozen database connection), awaited at most `timeout_s` by
    each probe and never cancelled: cancelling would wait on that same connection. A probe that comes
    while one still runs joins it, so a hung database holds one check, not one per probe."""

    def __init__(self, check: Callable[[], Awaitable[bool]], timeout_s: float) -> None:
        self._check, self._timeout_s = check, timeout_s
        self._running: asyncio.Task[bool] | None = None

    async def __call__(self) -> bool:
        """The check's answer, or False when it has not come within `timeout_s`."""
        if self._running is None or self._running.done():
            self._running = asyncio.create_task(self._check())
        done, _ = await asyncio.wait({self._running}, timeout=self._timeout_s)
        return bool(done) and self._running.result()


async def metrics(request: web.Request) -> web.Response:
    """Every metric of this process, in Prometheus' text format."""
    return web.Response(body=generate_latest(REGISTRY), headers={"Content-Type": CONTENT_TYPE_LATEST})


async def healthz(request: web.Request) -> web.Response:
    """Alive: the event loop answers. Nothing else is asked, so a slow database never gets it restarted."""
    return web.json_response({"status": "ok"})


def readyz(ready: Ready) -> Callable[[web.Request], Awaitable[web.Response]]:
    """200 when every check passes, else 503; the body names each check's result."""

    async def handler(request: web.Request) -> web.Response:
        try:
            async with asyncio.timeout(READY_TIMEOUT_S):
                checks = await ready()
        except TimeoutError:
            checks = {"answered": False}
        ok = bool(checks) and all(checks.values())
        return web.json_response({"ready": ok, "checks": checks}, status=200 if ok else 503)

    return handler


def add_routes(app: web.Application, ready: Ready) -> None:
    """The three probes on `app` (the web page's own port)."""
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz(ready))


async def serve(host: str, port: int, ready: Ready, stop: asyncio.Event) -> None:
    """The probes alone on `host:port` until `stop` (bots, the training worker: METRICS_PORT)."""
    app = web.Application()
    add_routes(app, ready)
    runner = web.AppRunner(app, access_log=None)  # scraped every few seconds: not worth a log line each
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
        logger.info("metrics and health: http://%s:%d/metrics, /healthz, /readyz", host, port)
        await stop.wait()
    finally:
        await runner.cleanup()
