"""The local web page: the third front end, so toonbot works on a fresh machine with no tokens.

One page (`static/index.html`) and two JSON-or-image endpoints over the core:
`GET /api/styles` and `POST /api/stylize` (multipart: `image`, `style`).
A visitor is known by a random cookie, so the per-user limits apply per browser.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Awaitable, Callable
from pathlib import Path

from aiohttp import BodyPartReader, web

from bots import messages
from bots.core import Attachment, Core, Request
from bots.resources import SharedCore
from bots.settings import Settings

logger = logging.getLogger(__name__)

PLATFORM = "web"
PAGE = Path(__file__).with_name("static") / "index.html"
VISITOR_COOKIE = "toonbot_visitor"
CORE = web.AppKey("core", Core)
MAX_UPLOAD = web.AppKey("max_upload", int)
READ_CHUNK = 2**16

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _request(request: web.Request, text: str, attachment: Attachment | None = None) -> Request:
    visitor = request.cookies.get(VISITOR_COOKIE) or f"ip-{request.remote}"
    return Request(
        platform=PLATFORM, user_id=visitor, chat_id=visitor, text=text, attachment=attachment
    )


async def index(request: web.Request) -> web.StreamResponse:
    """The page; a first visit gets its visitor cookie."""
    response = web.FileResponse(PAGE)
    if VISITOR_COOKIE not in request.cookies:
        response.set_cookie(
            VISITOR_COOKIE, secrets.token_urlsafe(16), httponly=True, samesite="Strict"
        )
    return response


async def styles(request: web.Request) -> web.Response:
    """The deployed styles for the page's picker (the same list /styles shows)."""
    reply = await request.app[CORE].handle(_request(request, "/styles"))
    choices = [{"name": b.style, "title": b.label, "selected": b.selected} for b in reply.buttons]
    return web.json_response({"styles": choices, "message": "" if choices else reply.text})


async def stylize(request: web.Request) -> web.Response:
    """One upload: the image comes back as is, or `{"message": ...}` in the core's words."""
    style, content_type, data = "", "", b""
    reader = await request.multipart()
    async for part in reader:
        if not isinstance(part, BodyPartReader):
            continue
        if part.name == "style":
            style = (await part.text()).strip()
        elif part.name == "image":
            content_type = part.headers.get("Content-Type", "")
            data = await _read_capped(part, request.app[MAX_UPLOAD])

    async def read() -> bytes:
        return data

    text = f"/style {style}" if style else ""
    reply = await request.app[CORE].handle(
        _request(request, text, Attachment(content_type, len(data), read))
    )
    if reply.image is None:
        return web.json_response({"message": reply.text}, status=422)
    return web.Response(body=reply.image, content_type=reply.content_type)


async def _read_capped(part: BodyPartReader, limit: int) -> bytes:
    """Read at most one chunk past `limit`: enough for the core to say "too big"."""
    data = bytearray()
    while chunk := await part.read_chunk(READ_CHUNK):
        data += chunk
        if len(data) > limit:
            break
    return bytes(data)


@web.middleware
async def errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """The one error handler: log with the traceback, answer in plain words."""
    try:
        return await handler(request)
    except web.HTTPException:
        raise
    except Exception:
        logger.exception("%s %s failed", request.method, request.path)
        return web.json_response({"message": messages.ERROR}, status=500)


def build_app(settings: Settings, shared: SharedCore) -> web.Application:
    """The aiohttp application; the core is opened on startup and released on cleanup."""

    async def open_core(app: web.Application) -> None:
        app[CORE] = await shared.open()

    async def close_core(app: web.Application) -> None:
        await shared.close()

    app = web.Application(middlewares=[errors])
    app[MAX_UPLOAD] = settings.max_upload_bytes
    app.on_startup.append(open_core)
    app.on_cleanup.append(close_core)
    app.router.add_get("/", index)
    app.router.add_get("/api/styles", styles)
    app.router.add_post("/api/stylize", stylize)
    return app


async def serve(settings: Settings, shared: SharedCore, stop: asyncio.Event) -> None:
    """Serve the page on WEB_HOST:WEB_PORT until `stop`."""
    runner = web.AppRunner(build_app(settings, shared))
    await runner.setup()
    try:
        await web.TCPSite(runner, settings.web_host, settings.web_port).start()
        logger.info("web page: http://%s:%d", settings.web_host, settings.web_port)
        await stop.wait()
    finally:
        await runner.cleanup()
