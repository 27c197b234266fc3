"""The local web page: the third front end, so toonbot works on a fresh machine with no tokens.

One page (`static/index.html`) and three JSON-or-image endpoints over the core:
`GET /api/styles` (the page's gallery), `GET /api/styles/{name}/preview` (a style's before
and after, drawn at export) and `POST /api/stylize` (multipart: `image`, `style`; the image
may be an animated GIF or an MP4, which comes back as a GIF or an MP4).

A visitor is known by a cookie the server signs, so a client cannot mint its
own identities; the core also limits each IP address per minute, so fresh
cookies gain nothing. Only the Host names derived from WEB_HOST/WEB_PORT (or
listed in WEB_ALLOWED_HOSTS) are served, and a cross-site Origin is refused:
a page bound to 127.0.0.1 cannot be driven from another web site by DNS
rebinding.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import ipaddress
import logging
import re
import secrets
from collections import Counter
from collections.abc import Awaitable, Callable, Collection
from dataclasses import replace
from pathlib import Path

from aiohttp import BodyPartReader, web
from aiohttp.http_exceptions import HttpProcessingError

from bots import i18n, messages, page
from bots.core import Attachment, Core, Problem, Reply, Request, experimental_note, refusal, words_for
from bots.deadline import HeadersWithin
from bots.resources import SharedCore
from config import Settings
from serving.api import StylizeError
from telemetry import probes

logger = logging.getLogger(__name__)

PLATFORM = "web"
PAGE = page.PAGE  # a template: its words come in the visitor's language (`index`)
VISITOR_COOKIE = "toonbot_visitor"
CORE = web.AppKey("core", Core)
MAX_UPLOAD = web.AppKey("max_upload", int)
BODY_TIMEOUT = web.AppKey("body_timeout", float)
READ_CHUNK = 2**16
MAX_STYLE_FIELD = 256  # bytes of the `style` field read; a name is at most 64
MAX_PARTS = 8  # form fields looked at; the page sends two
PREVIEW_CACHE = "private, max-age=3600"  # its address names the version; a re-export of one shows within the hour
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "[::1]")
WILDCARD_HOSTS = ("", "0.0.0.0", "::")

# The core's reason for no picture -> the HTTP status the page (or a script) gets.
HTTP_STATUS: dict[Problem, int] = {
    "not_a_form": 415, "not_an_image": 415, "too_big": 413, "unknown_style": 400, "bad_input": 400,
    "no_face": 422, "busy": 429, "too_many": 429, "overloaded": 503, "unavailable": 503,
    "no_styles": 503, "error": 500, "too_slow": 408,
}
FORM_OVERHEAD = 64 * 1024  # a form's bytes besides the image: boundaries, part headers, the style field
UPLOAD_RETRY_S = 5  # Retry-After when the uploads at once are taken
# How long a connection whose body was left unread stays open, unread, after its answer: a client still
# sending has that long to read the answer before the close resets the connection.
LINGER_S = 1.0

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Visitors:
    """Visitor ids signed with a server key: a cookie the server did not issue counts as none."""

    def __init__(self, key: bytes) -> None:
        self._key = key

    def issue(self) -> str:
        """A new cookie value: a random id and its signature."""
        visitor = secrets.token_urlsafe(16)
        return f"{visitor}.{self._sign(visitor)}"

    def verify(self, cookie: str | None) -> str | None:
        """The visitor id in `cookie` if the signature holds, else None."""
        visitor, _, signature = (cookie or "").partition(".")
        if not visitor or not hmac.compare_digest(signature, self._sign(visitor)):
            return None
        return visitor

    def _sign(self, visitor: str) -> str:
        digest = hmac.new(self._key, visitor.encode(), hashlib.sha256).digest()[:16]
        return base64.urlsafe_b64encode(digest).decode().rstrip("=")


VISITORS = web.AppKey("visitors", Visitors)


class Uploads:
    """Upload bodies being read, held to `per_address` at once from one address and `budget` bytes
    for all of them; a request reserves its share before the first byte of its body is read."""

    def __init__(self, per_address: int, budget: int) -> None:
        self._per_address, self._budget = per_address, budget
        self._at_once: Counter[str] = Counter()
        self.held = 0  # bytes reserved now

    def reserve(self, address: str, size: int) -> Problem | None:
        """Hold `size` bytes for one upload from `address` (`release` must follow), or say why not.
        More than the whole budget holds all of it: with nothing else held, one upload always fits."""
        if self._at_once[address] >= self._per_address:
            return "too_many"
        if self.held + min(size, self._budget) > self._budget:
            return "overloaded"
        self._at_once[address] += 1
        self.held += min(size, self._budget)
        return None

    def release(self, address: str, size: int) -> None:
        """The upload is read (or given up): its bytes and its place are free again."""
        self.held -= min(size, self._budget)
        self._at_once[address] -= 1
        if self._at_once[address] <= 0:
            del self._at_once[address]


UPLOADS = web.AppKey("uploads", Uploads)


def allowed_hosts(settings: Settings) -> frozenset[str]:
    """Host header values served: WEB_ALLOWED_HOSTS, else WEB_HOST (loopback names when local or wildcard).

    A name without a port gets WEB_PORT; on port 80 the bare name, as browsers send it, also passes.
    """
    names = list(settings.web_allowed_hosts)
    if not names:
        host = settings.web_host.strip("[]")
        local = host in WILDCARD_HOSTS or host == "localhost" or _is_loopback(host)
        names = [*LOOPBACK_NAMES] if local else [f"[{host}]" if ":" in host else host]
    hosts = set()
    for name in (n.lower() for n in names):
        with_port = name if re.search(r":\d+$", name) else f"{name}:{settings.web_port}"
        hosts.add(with_port)
        if with_port.endswith(":80"):
            hosts.add(with_port[: -len(":80")])
    return frozenset(hosts)


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def content_security_policy(page: str) -> str:
    """Only the page's own inline script and style (by hash), same-origin fetches, blob: images and videos."""

    def hashes(tag: str) -> str:
        found = re.findall(rf"<{tag}>(.*?)</{tag}>", page, flags=re.S)
        return " ".join(f"'sha256-{base64.b64encode(hashlib.sha256(s.encode()).digest()).decode()}'" for s in found)

    return (
        f"default-src 'none'; script-src {hashes('script')}; style-src {hashes('style')}; "
        "img-src 'self' blob:; media-src blob:; connect-src 'self'; "
        "form-action 'none'; base-uri 'none'; frame-ancestors 'none'"
    )


def _request(
    request: web.Request, attachment: Attachment | None = None, *, style: str | None = None, compare: bool = False
) -> Request:
    """The core's request: the visitor, their network, and the form's typed fields."""
    visitor = request.app[VISITORS].verify(request.cookies.get(VISITOR_COOKIE))
    user = f"v-{visitor}" if visitor else f"ip-{request.remote}"
    return Request(
        platform=PLATFORM, user_id=user, chat_id=user, attachment=attachment,
        network=request.remote or "unknown", style=style, compare=compare,
        language=request.headers.get("Accept-Language"),  # the page's selector (`language`) beats it
    )


def _words(request: web.Request) -> i18n.Words:
    """The browser's language, for answers given before the visitor is known (wrong host, errors)."""
    return i18n.words(request.headers.get("Accept-Language"))


def _answer(reply: Reply) -> web.Response:
    """The picture, or `{"message": ...}` with the status that says why not (and when to retry)."""
    if reply.image is not None:
        return web.Response(body=reply.image, content_type=reply.content_type)
    status = HTTP_STATUS.get(reply.problem or "error", 500)
    headers = {"Retry-After": str(reply.retry_after_s)} if reply.retry_after_s else None
    return web.json_response({"message": reply.text}, status=status, headers=headers)


async def index(request: web.Request) -> web.StreamResponse:
    """The page in the visitor's language (their choice, else their browser's); a visitor without a
    valid cookie gets one."""
    asked = _request(request)
    chosen = await request.app[CORE].chosen_language(asked)
    locale = chosen or i18n.negotiate(asked.language)
    response = web.Response(
        text=page.render(locale, chosen), content_type="text/html",
        headers={"Content-Language": locale.replace("_", "-"), "Vary": "Accept-Language, Cookie"},
    )
    visitors = request.app[VISITORS]
    if visitors.verify(request.cookies.get(VISITOR_COOKIE)) is None:
        response.set_cookie(VISITOR_COOKIE, visitors.issue(), httponly=True, samesite="Strict")
    return response


async def styles(request: web.Request) -> web.Response:
    """The deployed styles for the page's gallery (the same list /styles shows), each with the
    address of its preview (None for an archive without one; the version keeps caches apart)."""
    asked = await request.app[CORE].localise(_request(request))
    words = words_for(asked)
    try:
        found, current = await request.app[CORE].styles(asked)
    except StylizeError as error:  # e.g. TorchServe unreachable
        return web.json_response({"styles": [], "message": refusal(error, words)})
    choices = []
    for s in found:
        title, description = words.style(s.name, s.title, s.description)
        choices.append({
            "name": s.name, "title": title, "description": description, "selected": s == current,
            "preview": None if s.preview is None else f"/api/styles/{s.name}/preview?version={s.version}",
            "experimental": experimental_note(words, s),  # None, or one line saying why
        })
    return web.json_response({"styles": choices, "message": "" if choices else words(messages.NO_STYLES)})


async def language(request: web.Request) -> web.Response:
    """The page's selector: a form's `language` (a locale, or "auto") remembered for the visitor."""
    form = await request.post()
    reply = await request.app[CORE].set_language(_request(request), str(form.get("language", "")))
    return web.json_response({"message": reply.text}, status=400 if reply.buttons else 200)


async def preview(request: web.Request) -> web.Response:
    """A deployed style's before and after, a JPEG the page's card shows."""
    try:
        shown = await request.app[CORE].preview(request.match_info["name"])
    except StylizeError as error:
        return web.json_response({"message": refusal(error, _words(request))}, status=503)
    if shown is None:
        return web.json_response({"message": _words(request)(messages.NO_PREVIEW)}, status=404)
    return web.Response(body=shown, content_type="image/jpeg", headers={"Cache-Control": PREVIEW_CACHE})


async def stylize(request: web.Request) -> web.Response:
    """One upload: the image comes back as is, or `{"message": ...}` in the core's words.

    Nothing of the body is read before the request is counted against the visitor's limits and
    has its place among the uploads at once; the body then has `WEB_BODY_TIMEOUT_S` to arrive."""
    core, limit = request.app[CORE], request.app[MAX_UPLOAD]
    asked = _request(request)
    if request.content_type != "multipart/form-data":  # JSON, a raw image, a form, nothing
        problem: Problem = "not_a_form" if request.body_exists else "bad_input"
        return _answer(core.refuse(asked, problem, messages.NOT_A_FORM, input_bytes=request.content_length))
    size = request.content_length
    if size is not None and size > limit + FORM_OVERHEAD:  # declared too big: refused unread
        return _answer(core.refuse(asked, "too_big", messages.TOO_BIG, limit_mb=limit // 2**20, input_bytes=size))
    refused = await core.admit(asked)
    if refused is not None:
        return _answer(refused)
    try:
        form = await _upload(request, asked, min(size or limit + FORM_OVERHEAD, limit + FORM_OVERHEAD))
        if isinstance(form, web.Response):
            return form
        style, compare, content_type, data = form

        async def read() -> bytes:
            return data

        attachment = Attachment(content_type, len(data), read)
        drawn = _request(request, attachment, style=style or None, compare=compare)
        return _answer(await core.handle(replace(drawn, admitted=True)))
    finally:
        await core.release(asked)


async def _upload(
    request: web.Request, asked: Request, size: int
) -> tuple[str, bool, str, bytes] | web.Response:
    """The form, read within the body deadline with `size` bytes reserved; or the refusal."""
    core, uploads, address = request.app[CORE], request.app[UPLOADS], request.remote or "unknown"
    held = uploads.reserve(address, size)
    if held is not None:
        text = messages.UPLOADS_AT_ONCE if held == "too_many" else messages.UPLOADS_BUSY
        logger.warning("upload from %s refused (%s): %d bytes held for uploads", address, held, uploads.held)
        status = "rate_limited" if held == "too_many" else "overloaded"
        return _answer(core.refuse(asked, held, text, status=status, retry_after_s=UPLOAD_RETRY_S))
    deadline = request.app[BODY_TIMEOUT]
    try:
        async with asyncio.timeout(deadline):
            return await _read_form(request, request.app[MAX_UPLOAD])
    except TimeoutError:
        logger.warning("upload from %s cut off: its body took over %g s", address, deadline)
        return _closing(_answer(core.refuse(asked, "too_slow", messages.UPLOAD_TOO_SLOW, seconds=deadline)))
    except web.RequestPayloadError as error:  # bytes that do not follow its Content-Encoding (or framing)
        logger.info("undecodable upload from %s: %s", address, error)
        return _closing(_answer(core.refuse(asked, "bad_input", messages.NOT_A_FORM)))
    except (ValueError, HttpProcessingError) as error:  # a broken multipart body (no boundary, bad headers)
        logger.info("unreadable upload from %s: %s", address, error)
        return _answer(core.refuse(asked, "bad_input", messages.NOT_A_FORM))
    finally:
        uploads.release(address, size)


def _closing(response: web.Response) -> web.Response:
    """`response`, and the connection closed after it: the rest of its request's body is not read."""
    response.force_close()
    return response


async def _read_form(request: web.Request, limit: int) -> tuple[str, bool, str, bytes]:
    """(style, before/after asked, the image's declared type, the image's bytes), each read only up to its cap."""
    style, compare, content_type, data = "", False, "", b""
    reader = await request.multipart()
    for _ in range(MAX_PARTS):
        part = await reader.next()
        if part is None:
            break
        if not isinstance(part, BodyPartReader):
            continue
        if part.name == "style":
            style = (await _read_capped(part, MAX_STYLE_FIELD)).decode("utf-8", "replace").strip()
        elif part.name == "compare":  # a checkbox: "1" (or the browser's "on") when ticked
            compare = (await _read_capped(part, MAX_STYLE_FIELD)).strip().lower() in (b"1", b"on", b"true")
        elif part.name == "image":
            content_type = part.headers.get("Content-Type", "")
            data = await _read_capped(part, limit)
            if len(data) > limit:
                break  # the core says "too big"; the rest is never read
    return style, compare, content_type, data


async def _read_capped(part: BodyPartReader, limit: int) -> bytes:
    """Read at most one chunk past `limit`: enough for the core to say "too big"."""
    data = bytearray()
    while chunk := await part.read_chunk(READ_CHUNK):
        data += chunk
        if len(data) > limit:
            break
    return bytes(data)


@web.middleware
async def unread_bodies(request: web.Request, handler: Handler) -> web.StreamResponse:
    """An answer given before its request's body was read (a refusal) goes out, and nothing more of
    that body is received: its socket is paused until the close, LINGER_S later. aiohttp's own
    lingering close receives whatever the client goes on sending, as fast as it comes, for each
    refusal at once: 60 refused uploads kept the page's loop busy with bytes nobody uses."""
    response = await handler(request)
    if request.content.is_eof() or response.keep_alive is False:  # read to its end, or closed at once
        return response
    request.protocol.pause_reading()
    response.force_close()
    await response.prepare(request)
    await response.write_eof()
    await asyncio.sleep(LINGER_S)
    return response


def guard(hosts: Collection[str]) -> Callable[[web.Request, Handler], Awaitable[web.StreamResponse]]:
    """Serve only our own Host names, and refuse requests another site's page makes."""
    origins = {f"{scheme}://{host}" for host in hosts for scheme in ("http", "https")}

    @web.middleware
    async def check(request: web.Request, handler: Handler) -> web.StreamResponse:
        # Orchestrators and Prometheus call the probes by an address of their own (a pod's IP): any Host
        # may read them, as they change nothing and tell no visitor's data; a browser's cross-site call may not.
        probe = request.method == "GET" and request.path in probes.PATHS
        if request.host.lower() not in hosts and not probe:
            logger.warning("refused Host %r from %s (not in the allowed hosts)", request.host[:100], request.remote)
            return web.json_response({"message": _words(request)(messages.WRONG_HOST)}, status=421)
        origin = request.headers.get("Origin")
        if (origin is not None and origin.lower() not in origins) or request.headers.get(
            "Sec-Fetch-Site"
        ) == "cross-site":
            logger.warning("refused a cross-site %s %s from %s", request.method, request.path, request.remote)
            return web.json_response({"message": _words(request)(messages.CROSS_SITE)}, status=403)
        return await handler(request)

    return check


@web.middleware
async def errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """The one error handler: log with the traceback, answer in plain words."""
    try:
        return await handler(request)
    except web.HTTPException:
        raise
    except Exception:
        logger.exception("%s %s failed", request.method, request.path)
        return web.json_response({"message": _words(request)(messages.ERROR)}, status=500)


def build_app(settings: Settings, shared: SharedCore) -> web.Application:
    """The aiohttp application; the core is opened on startup and released on cleanup."""
    security_headers = {
        "X-Content-Type-Options": "nosniff",
        "Content-Security-Policy": content_security_policy(PAGE.read_text(encoding="utf-8")),
        "Referrer-Policy": "no-referrer",
        "X-Frame-Options": "DENY",
        "Cross-Origin-Resource-Policy": "same-origin",
    }

    async def open_core(app: web.Application) -> None:
        app[CORE] = await shared.open()

    async def close_core(app: web.Application) -> None:
        await shared.close()

    async def add_headers(request: web.Request, response: web.StreamResponse) -> None:
        response.headers.update(security_headers)

    app = web.Application(middlewares=[unread_bodies, guard(allowed_hosts(settings)), errors])
    app[MAX_UPLOAD] = settings.max_upload_bytes
    app[BODY_TIMEOUT] = settings.web_body_timeout_s
    app[UPLOADS] = Uploads(settings.web_uploads_per_ip, settings.web_upload_budget_bytes)
    secret = settings.web_secret.get_secret_value().encode() if settings.web_secret else secrets.token_bytes(32)
    app[VISITORS] = Visitors(secret)
    app.on_startup.append(open_core)
    app.on_cleanup.append(close_core)
    app.on_response_prepare.append(add_headers)
    app.router.add_get("/", index)
    app.router.add_get("/api/styles", styles)
    app.router.add_get("/api/styles/{name}/preview", preview)
    app.router.add_post("/api/stylize", stylize)
    app.router.add_post("/api/language", language)
    probes.add_routes(app, shared.ready)  # /metrics, /healthz, /readyz
    return app


async def serve(settings: Settings, shared: SharedCore, stop: asyncio.Event) -> None:
    """Serve the page on WEB_HOST:WEB_PORT until `stop` (WEB_PORT=0: a free port, the one logged).

    A connection gets WEB_HEADER_TIMEOUT_S for its request's headers: the first request's are
    watched by `bots.deadline` (408, logged), later ones on a kept-alive connection by aiohttp's
    keep-alive timer, which runs from each answer and closes a connection still without headers.
    A visitor who leaves cancels their request: the engine's slot is freed at the next frame
    instead of drawing for nobody."""
    handlers: list[web.Server] = []  # the runner's, once set up: nothing is accepted before
    # What aiohttp's TCPSite does, with each connection's protocol behind the header deadline; bound before
    # the app is built, so that the Host names it allows carry the port it got.
    listening = await asyncio.get_running_loop().create_server(
        lambda: HeadersWithin(handlers[0](), settings.web_header_timeout_s), settings.web_host, settings.web_port,
        start_serving=False,
    )
    try:
        port = listening.sockets[0].getsockname()[1]
        runner = web.AppRunner(
            build_app(settings.model_copy(update={"web_port": port}), shared), handler_cancellation=True,
            keepalive_timeout=settings.web_header_timeout_s, lingering_time=0,  # `unread_bodies` instead
        )
        await runner.setup()
    except BaseException:
        listening.close()
        raise
    try:
        assert runner.server is not None  # made by setup()
        handlers.append(runner.server)
        await listening.start_serving()
        logger.info("web page: http://%s:%d", settings.web_host, port)
        await stop.wait()
    finally:
        listening.close()
        await runner.cleanup()
