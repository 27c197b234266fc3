"""A deadline for a connection's request headers: a client that trickles them is answered 408 and logged.

aiohttp reads headers for as long as a client sends them, a line at a time;
its keep-alive timer (WEB_HEADER_TIMEOUT_S) does close a connection whose
headers are not done by then, but silently. This wrapper around aiohttp's own
protocol watches the first request's headers, and at the deadline answers
408 and says so in the log. Later requests on a kept-alive connection keep
the keep-alive timer's silent close.
"""

from __future__ import annotations

import asyncio
import json
import logging

from bots import messages

logger = logging.getLogger(__name__)

HEADERS_END = (b"\r\n\r\n", b"\n\n")


def timeout_response(seconds: float) -> bytes:
    """A complete HTTP 408 answer that closes the connection, with the page's words."""
    body = json.dumps({"message": messages.UPLOAD_TOO_SLOW.format(seconds=seconds)}).encode()
    head = ("HTTP/1.1 408 Request Timeout\r\nContent-Type: application/json; charset=utf-8\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n")
    return head.encode() + body


class HeadersWithin(asyncio.Protocol):
    """aiohttp's protocol for one connection (`inner`), cut off when its first request's headers
    are not complete within `seconds`."""

    def __init__(self, inner: asyncio.Protocol, seconds: float) -> None:
        self._inner, self._seconds = inner, seconds
        self._tail = b""  # the last bytes seen, for a header end split across two reads
        self._timer: asyncio.TimerHandle | None = None
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]
        self._timer = asyncio.get_running_loop().call_later(self._seconds, self._expire)
        self._inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        if self._timer is not None:
            seen = self._tail + data
            if any(end in seen for end in HEADERS_END):
                self._timer.cancel()
                self._timer = None
            self._tail = seen[-3:]
        self._inner.data_received(data)

    def _expire(self) -> None:
        self._timer = None
        if self._transport is None or self._transport.is_closing():
            return
        peer = self._transport.get_extra_info("peername")
        logger.warning("connection from %s cut off: no complete request headers within %g s",
                       peer[0] if peer else "unknown", self._seconds)
        self._transport.write(timeout_response(self._seconds))
        self._transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._inner.connection_lost(exc)

    def eof_received(self) -> bool | None:
        return self._inner.eof_received()

    def pause_writing(self) -> None:
        self._inner.pause_writing()

    def resume_writing(self) -> None:
        self._inner.resume_writing()
