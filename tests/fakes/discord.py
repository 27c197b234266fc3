"""A fake Discord (REST API, gateway and attachment CDN) on 127.0.0.1, for driving the real discord.py.

It speaks what a bot with slash commands uses of https://discord.com/developers/docs:
the REST calls (`/users/@me`, `/oauth2/applications/@me`, command sync,
interaction callbacks, follow-up webhooks, channel messages, typing) and the
gateway's HELLO / heartbeat / IDENTIFY / READY / GUILD_CREATE handshake, on one
connection per shard: events go to the shard Discord would send them to (`shard_of`; the guild sits on shard 1
of 2, DMs on shard 0), and `/gateway/bot` recommends `shards` of them. The
test plays the users (`slash_command`, `autocomplete`, `send_message` push
INTERACTION_CREATE and MESSAGE_CREATE events) and reads back every call the bot
made (`calls`, `wait_for`). A route the fake does not know is answered 404 and
listed in `unknown`, so a test can insist the bot used nothing else.

Messages the bot receives or fetches are shown as the Message Content intent
allows: without it, a guild message's content and attachments are empty unless
it mentions the bot or is the bot's own (DMs are always whole). That holds for
the message a reply refers to as well.

It holds the bot to Discord's rules for interactions: one initial answer, within
3 s (a deferral will do); follow-ups only after it; and the first follow-up after
a deferral replaces the "thinking..." message and keeps its visibility, whatever
its own flags say. A call Discord would refuse gets Discord's error and is listed
in `refused`; `Call.ephemeral` says whether a message is for the user's eyes only.

The 3 s are Discord's, counted as Discord counts them: wall-clock time from the
interaction to its answer (`answer_within_s`). In a test that clock measures the
machine as much as the bot: the bot shares its process and event loop with this
fake, and the 2-core machine with the database and whatever else runs, so a
correct bot that defers at once can be kept off the CPU past 3 s. No correction
of the clock would be honest (the time the process waited for a CPU cannot be
told, from here, from the time the bot waited on its database or a thread), so a
test whose subject is not that deadline widens it, and the deadline has its own
tests: one holds a bot past 3 s and sees its answer refused, and the bots' own
bounded waits (a hung database holds a reply at most 0.5 s) are tested where
they are the subject.

    async with FakeDiscord() as fake:
        discord.http.Route.BASE = fake.api_url
        discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(fake.gateway_url)
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from aiohttp import WSMsgType, web

from fakes.telegram import Upload  # a file in a multipart request, as on any platform

JSON = dict[str, Any]
API = "/api/v10"
EPHEMERAL = 1 << 6  # message flag: only the user who invoked the command sees it
ANSWER_WITHIN_S = 3.0  # Discord's deadline for an interaction's first answer (a deferral will do)

# Gateway op codes and the interaction types, as the Discord docs number them.
DISPATCH, HEARTBEAT, IDENTIFY, HELLO, HEARTBEAT_ACK = 0, 1, 2, 10, 11
APPLICATION_COMMAND, AUTOCOMPLETE = 2, 4
# Interaction callback types.
CHANNEL_MESSAGE, DEFERRED_CHANNEL_MESSAGE, AUTOCOMPLETE_RESULT = 4, 5, 8
# Application command option types.
STRING, INTEGER, BOOLEAN, ATTACHMENT = 3, 4, 5, 11
MESSAGE_CONTENT = 1 << 15  # the privileged intent
MESSAGE_COMMAND = 3  # application command type: an entry in a message's Apps menu
REPLY = 19  # message type of a reply


@dataclass(frozen=True)
class Call:
    """One REST request the bot made: the route's name, its URL parameters, JSON body and files."""

    route: str  # e.g. "interaction_callback", "followup", "channel_message"
    params: dict[str, str]  # from the URL, e.g. {"token": ..., "channel_id": ...}
    json: Any = None
    files: list[Upload] = field(default_factory=list)
    result: Any = None  # what the fake answered: the message as Discord shows it, or an ApiError
    at: float = field(default_factory=time.monotonic)  # when it came

    @property
    def ephemeral(self) -> bool:
        """Whether the message this call made or edited is shown to the user alone."""
        if "interaction" in self.result:  # an initial response, described by Discord
            return bool(self.result["interaction"].get("response_message_ephemeral"))
        return bool(self.result.get("flags", 0) & EPHEMERAL)


class ApiError(Exception):
    """A Discord error answer (`{"code": ..., "message": ...}`), for a call Discord would refuse."""

    def __init__(self, status: int, code: int, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


@dataclass
class _InteractionState:
    """Where an interaction's answers stand, for Discord's rules on responses and follow-ups."""

    created: float = field(default_factory=time.monotonic)
    acknowledged: bool = False
    original: JSON | None = None  # the initial response's message, while it exists
    loading: bool = False  # deferred: the original is "thinking..." until a follow-up replaces it


# A REST route: the request and its recorded call in, the JSON answer out (None: 204).
Handler = Callable[[web.Request, Call], Any]


@dataclass(frozen=True)
class Interaction:
    """An interaction the test sent, to find the bot's answers to it."""

    id: str
    token: str


class FakeDiscord:
    """One application, one guild with one text channel, and users played by the test."""

    def __init__(self, token: str = "fake-discord-bot-token", *, answer_within_s: float = ANSWER_WITHIN_S) -> None:
        self.token = token
        self.answer_within_s = answer_within_s  # an interaction's first answer after this is refused, as lapsed
        self._ids = itertools.count(1_000_000_000_000_000_000)
        self.app_id = self._id()
        self.bot_user = _user(self.app_id, "toonbot", bot=True)
        self.guild_id = self._id() | 1 << 22  # on shard 1 of 2 (`shard_of`): two shards in one process both get events
        self.channel_id = self._id()
        self.calls: list[Call] = []
        self.unknown: list[str] = []  # "METHOD /path" of routes the fake does not implement
        self.shards = 1  # how many shards GET /gateway/bot recommends
        self.identified: dict[int, JSON] = {}  # each shard's IDENTIFY payload, by shard id
        self.dispatched: list[tuple[int, str, JSON]] = []  # (shard, event, data) of every event sent to the bot
        self.downloads: list[str] = []  # attachment ids the bot fetched
        self.refused: list[Call] = []  # calls Discord would have refused (answered with an error)
        self.attachment_size_limit = 10 * 2**20  # what the bot may upload, as interactions say
        self.locales: dict[int, str] = {}  # user id -> their Discord app's language (default "en-US")
        self._interactions: dict[str, _InteractionState] = {}  # by token
        self._attachments: dict[str, bytes] = {}
        self._messages: dict[str, JSON] = {}  # every message sent, by id, to reply to or fetch
        self._sockets: list[web.WebSocketResponse] = []
        self._shards: dict[int, tuple[int, web.WebSocketResponse]] = {}  # shard id -> (shard count, connection)
        self._sequence = itertools.count(1)
        self._changed = asyncio.Condition()  # a call was recorded, or a shard identified
        self._runner: web.AppRunner | None = None
        self.url = ""

    # Server ---------------------------------------------------------------

    @property
    def api_url(self) -> str:
        """What `DISCORD_API_URL` should say."""
        return f"{self.url}{API}"

    @property
    def gateway_url(self) -> str:
        """What `DISCORD_GATEWAY_URL` should say."""
        return f"{self.url.replace('http', 'ws', 1)}/gateway"

    async def __aenter__(self) -> FakeDiscord:
        app = web.Application(client_max_size=64 * 2**20, middlewares=[self._unknown_routes])
        bot_routes: list[tuple[str, str, str, Handler]] = [  # with `Authorization: Bot <token>`
            ("GET", "/users/@me", "me", lambda r, c: self.bot_user),
            ("GET", "/oauth2/applications/@me", "application", self._application),
            ("GET", "/gateway/bot", "gateway_bot", self._gateway_bot),  # a sharded bot asks how many shards
            ("PUT", "/applications/{app_id}/commands", "sync", self._sync),
            ("PUT", "/applications/{app_id}/guilds/{guild_id}/commands", "sync", self._sync),
            ("POST", "/channels/{channel_id}/messages", "channel_message", self._channel_message),
            ("POST", "/channels/{channel_id}/typing", "typing", _no_content),
            ("GET", "/channels/{channel_id}/messages/{message_id}", "fetch_message", self._fetch_message),
            ("PATCH", "/channels/{channel_id}/messages/{message_id}", "edit_message", self._edit_message),
        ]
        interaction_routes: list[tuple[str, str, str, Handler]] = [  # the interaction's token in the URL
            ("POST", "/interactions/{id}/{token}/callback", "interaction_callback", self._callback),
            ("POST", "/webhooks/{app_id}/{token}", "followup", self._followup),
            ("DELETE", "/webhooks/{app_id}/{token}/messages/@original", "delete_original", self._delete_original),
            ("PATCH", "/webhooks/{app_id}/{token}/messages/@original", "edit_original", self._edit_original),
        ]
        for routes, authorised in ((bot_routes, True), (interaction_routes, False)):
            for method, path, name, handler in routes:
                app.router.add_route(method, API + path, self._recording(name, handler, authorised))
        app.router.add_get("/attachments/{attachment_id}/{filename}", self._on_attachment)
        app.router.add_get("/gateway", self._on_gateway)
        self._runner = web.AppRunner(app, shutdown_timeout=0.1)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}"
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        assert self._runner is not None
        for socket in self._sockets:
            await socket.close()
        await self._runner.cleanup()

    @web.middleware
    async def _unknown_routes(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        try:
            return await handler(request)
        except (web.HTTPNotFound, web.HTTPMethodNotAllowed):
            if request.path.startswith(API):
                self.unknown.append(f"{request.method} {request.path}")
            return _json({"message": "404: Not Found", "code": 0}, status=404)

    def _recording(
        self, name: str, handler: Handler, authorised: bool
    ) -> Callable[[web.Request], Awaitable[web.Response]]:
        """Check the token, record the call (JSON, or multipart `payload_json` + `files[n]`), answer it."""

        async def record(request: web.Request) -> web.Response:
            if authorised and request.headers.get("Authorization") != f"Bot {self.token}":
                return _json({"message": "401: Unauthorized", "code": 0}, status=401)
            body, files = await _read_body(request)
            call = Call(name, dict(request.match_info), body, files)
            try:
                result = handler(request, call)
            except ApiError as error:
                self.refused.append(replace(call, result=error))
                return _json({"code": error.code, "message": error.message}, status=error.status)
            async with self._changed:
                self.calls.append(replace(call, result=result))
                self._changed.notify_all()
            return web.Response(status=204) if result is None else _json(result)

        return record

    # REST routes --------------------------------------------------------------

    def _application(self, request: web.Request, call: Call) -> JSON:
        return {
            "id": str(self.app_id),
            "name": "toonbot",
            "description": "",
            "icon": None,
            "bot_public": True,
            "bot_require_code_grant": False,
            "owner": _user(self._id(), "owner"),
            "verify_key": "0" * 64,
            "flags": 0,
        }

    def _sync(self, request: web.Request, call: Call) -> list[JSON]:
        """Bulk overwrite: Discord answers with the commands, ids added."""
        guild = request.match_info.get("guild_id")
        extra = {"guild_id": guild} if guild else {}
        return [
            {"description": "", **command, "id": str(self._id()), "application_id": str(self.app_id), "version": "1",
             **extra}  # an Apps menu entry has no description: Discord answers ""
            for command in call.json
        ]

    def _callback(self, request: web.Request, call: Call) -> JSON:
        """The one initial answer an interaction may get (`?with_response=1`: Discord describes it)."""
        state = self._interactions.get(request.match_info["token"])
        if state is None:
            raise ApiError(404, 10062, "Unknown interaction")
        if state.acknowledged:
            raise ApiError(400, 40060, "Interaction has already been acknowledged.")
        if time.monotonic() - state.created > self.answer_within_s:
            raise ApiError(404, 10062, "Unknown interaction")  # the token has lapsed
        state.acknowledged = True
        kind, data = call.json["type"], call.json.get("data") or {}
        interaction: JSON = {"id": request.match_info["id"], "type": APPLICATION_COMMAND}
        resource: JSON = {"type": kind}
        if kind in (CHANNEL_MESSAGE, DEFERRED_CHANNEL_MESSAGE):
            state.original = self._bot_message(str(self.channel_id), data, call.files, webhook=True)
            state.loading = kind == DEFERRED_CHANNEL_MESSAGE
            interaction["response_message_id"] = state.original["id"]
            interaction["response_message_loading"] = state.loading
            interaction["response_message_ephemeral"] = bool(state.original["flags"] & EPHEMERAL)
            if kind == CHANNEL_MESSAGE:
                resource["message"] = state.original
        return {"interaction": interaction, "resource": resource}

    def _followup(self, request: web.Request, call: Call) -> JSON:
        """A new message; but the first one after a deferral replaces the "thinking..." message,
        keeping its visibility whatever the flags say (as Discord documents, for compatibility)."""
        state = self._interactions.get(request.match_info["token"])
        if state is None or not state.acknowledged:
            raise ApiError(404, 10015, "Unknown Webhook")
        message = self._bot_message(str(self.channel_id), call.json, call.files, webhook=True)
        if state.loading and state.original is not None:
            state.loading = False
            message["id"], message["flags"] = state.original["id"], state.original["flags"]
            state.original = message
        return message

    def _edit_original(self, request: web.Request, call: Call) -> JSON:
        """New content and maybe files for the initial response; a deferred one stops "thinking..."."""
        state = self._interactions.get(request.match_info["token"])
        if state is None or state.original is None:
            raise ApiError(404, 10008, "Unknown Message")
        state.loading = False
        return self._edited(state.original, call)

    def _delete_original(self, request: web.Request, call: Call) -> None:
        state = self._interactions.get(request.match_info["token"])
        if state is None or state.original is None:
            raise ApiError(404, 10008, "Unknown Message")
        state.original, state.loading = None, False

    def _channel_message(self, request: web.Request, call: Call) -> JSON:
        return self._bot_message(request.match_info["channel_id"], call.json, call.files)

    def _edit_message(self, request: web.Request, call: Call) -> JSON:
        """The bot edits one of its own messages: new content, and its files when it sends any."""
        message = self._messages.get(request.match_info["message_id"])
        if message is None or message["channel_id"] != request.match_info["channel_id"]:
            raise ApiError(404, 10008, "Unknown Message")
        if message["author"]["id"] != str(self.app_id):
            raise ApiError(403, 50005, "Cannot edit a message authored by another user")
        return self._edited(message, call)

    def _edited(self, message: JSON, call: Call) -> JSON:
        body = call.json or {}
        if "content" in body:
            message["content"] = body["content"]
        if call.files:
            message["attachments"] = [self.attachment(f.data, f.filename, f.content_type) for f in call.files]
        message["edited_timestamp"] = _now()
        return message

    def _fetch_message(self, request: web.Request, call: Call) -> JSON:
        message = self._messages.get(request.match_info["message_id"])
        if message is None or message["channel_id"] != request.match_info["channel_id"]:
            raise ApiError(404, 10008, "Unknown Message")
        return self._as_seen(message)

    def _as_seen(self, message: JSON) -> JSON:
        """`message` as the bot gets it: without the Message Content intent, a guild message neither
        from the bot nor mentioning it comes with empty content and attachments."""
        intents = self.identify["intents"] if self.identify else 0
        mentioned = any(u["id"] == str(self.app_id) for u in message["mentions"])
        if intents & MESSAGE_CONTENT or "guild_id" not in message or mentioned or message["author"]["bot"]:
            return message
        return {**message, "content": "", "attachments": [], "embeds": []}

    async def _on_attachment(self, request: web.Request) -> web.Response:
        """The CDN: what users uploaded, fetched by the bot with a plain GET."""
        attachment_id = request.match_info["attachment_id"]
        if attachment_id not in self._attachments:
            return web.Response(status=404)
        self.downloads.append(attachment_id)
        return web.Response(body=self._attachments[attachment_id], content_type="application/octet-stream")

    def _bot_message(
        self, channel_id: str, body: JSON, files: list[Upload], *, webhook: bool = False
    ) -> JSON:
        attachments = [self.attachment(f.data, f.filename, f.content_type) for f in files]
        message = _message(self._id(), channel_id, self.bot_user, body.get("content") or "", attachments)
        message["flags"] = body.get("flags", 0)
        if channel_id == str(self.channel_id):
            message["guild_id"] = str(self.guild_id)
        if webhook:
            message["webhook_id"] = str(self.app_id)
            message["application_id"] = str(self.app_id)
        self._messages[message["id"]] = message
        return message

    # Gateway -----------------------------------------------------------------

    @property
    def identify(self) -> JSON | None:
        """The bot's latest IDENTIFY payload (None before one)."""
        return next(reversed(self.identified.values()), None)

    async def _on_gateway(self, request: web.Request) -> web.WebSocketResponse:
        """HELLO; answer heartbeats; IDENTIFY gets READY and, on the guild's shard, the guild; then events."""
        socket = web.WebSocketResponse()
        await socket.prepare(request)
        self._sockets.append(socket)
        await socket.send_json({"op": HELLO, "d": {"heartbeat_interval": 41_250}})
        async for frame in socket:
            if frame.type != WSMsgType.TEXT:
                break
            payload = json.loads(frame.data)
            if payload["op"] == HEARTBEAT:
                await socket.send_json({"op": HEARTBEAT_ACK})
            elif payload["op"] == IDENTIFY:
                if payload["d"]["token"] != self.token:
                    await socket.close(code=4004, message=b"Authentication failed.")
                    break
                shard, count = payload["d"].get("shard", (0, 1))
                ours = shard_of(self.guild_id, count) == shard
                ready = self._ready_event(with_guild=ours)
                if "shard" in payload["d"]:  # a sharded bot's READY says which shard it is, as Discord's does
                    ready["shard"] = payload["d"]["shard"]
                await self._send(socket, "READY", ready)
                if ours:
                    await self._send(socket, "GUILD_CREATE", self._guild())
                async with self._changed:
                    self.identified[shard] = payload["d"]
                    self._shards[shard] = (count, socket)
                    self._changed.notify_all()
        self._sockets.remove(socket)
        return socket

    async def _send(self, socket: web.WebSocketResponse, event: str, data: JSON) -> None:
        await socket.send_json({"op": DISPATCH, "s": next(self._sequence), "t": event, "d": data})

    def _gateway_bot(self, request: web.Request, call: Call) -> JSON:
        """`shards` shards, at this fake's gateway."""
        limit = {"total": 1000, "remaining": 1000, "reset_after": 0, "max_concurrency": 1}
        return {"url": self.gateway_url, "shards": self.shards, "session_start_limit": limit}

    def _ready_event(self, *, with_guild: bool) -> JSON:
        return {
            "v": 10,
            "user": self.bot_user,
            "guilds": [{"id": str(self.guild_id), "unavailable": True}] if with_guild else [],
            "session_id": "fake-session",
            "resume_gateway_url": self.gateway_url,
            "application": {"id": str(self.app_id), "flags": 0},
        }

    def _guild(self) -> JSON:
        now = _now()
        return {
            "id": str(self.guild_id),
            "name": "toonbot test server",
            "icon": None,
            "owner_id": str(self.app_id),
            "features": [],
            "member_count": 2,
            "large": False,
            "joined_at": now,
            "roles": [
                {
                    "id": str(self.guild_id),  # @everyone shares the guild's id
                    "name": "@everyone",
                    "permissions": str((1 << 11) | (1 << 15) | (1 << 16) | (1 << 10)),
                    "position": 0,
                    "color": 0,
                    "hoist": False,
                    "managed": False,
                    "mentionable": False,
                    "flags": 0,
                }
            ],
            "channels": [
                {
                    "id": str(self.channel_id),
                    "type": 0,
                    "name": "general",
                    "position": 0,
                    "permission_overwrites": [],
                    "nsfw": False,
                    "parent_id": None,
                }
            ],
            "members": [{**_member(self.app_id), "user": self.bot_user}],
            "emojis": [],
            "stickers": [],
            "threads": [],
            "voice_states": [],
            "presences": [],
            "stage_instances": [],
            "guild_scheduled_events": [],
            "soundboard_sounds": [],
        }

    async def ready(self, timeout: float = 60.0, shards: int = 1) -> None:
        """Wait until a bot has identified on `shards` shards (and the guild's shard was told about it)."""
        async with asyncio.timeout(timeout), self._changed:
            await self._changed.wait_for(lambda: len(self._shards) >= shards)

    async def _dispatch(self, event: str, data: JSON) -> None:
        """Send an event on the shard Discord would use: the guild's, or shard 0 for a DM."""
        await self.ready()
        count = next(iter(self._shards.values()))[0]
        shard = shard_of(int(data["guild_id"]), count) if "guild_id" in data else 0
        async with asyncio.timeout(60.0), self._changed:
            await self._changed.wait_for(lambda: shard in self._shards)
        self.dispatched.append((shard, event, data))
        await self._send(self._shards[shard][1], event, data)

    # The users' side ---------------------------------------------------------

    def attachment(
        self, data: bytes, filename: str, content_type: str | None, *, size: int | None = None
    ) -> JSON:
        """Upload a file as a user would (`size`: declare another size, e.g. a huge one);
        the payload names where the bot can fetch it."""
        attachment_id = str(self._id())
        self._attachments[attachment_id] = data
        url = f"{self.url}/attachments/{attachment_id}/{filename}"
        payload: JSON = {
            "id": attachment_id,
            "filename": filename,
            "size": len(data) if size is None else size,
            "url": url,
            "proxy_url": url,
        }
        if content_type is not None:  # Discord omits it when it cannot tell
            payload["content_type"] = content_type
        return payload

    def forget_attachments(self) -> None:
        """Make every upload so far unavailable, as an expired CDN link is."""
        self._attachments.clear()

    async def slash_command(
        self, user_id: int, name: str, /, *, attachment: JSON | None = None, dm: bool = False,
        **options: str | int | bool,
    ) -> Interaction:
        """The user runs `/name` with string, integer or boolean `options` and maybe one attachment option
        (`image`), typed as Discord types them."""
        values: list[JSON] = [{"name": k, "type": _option_type(v), "value": v} for k, v in options.items()]
        resolved: JSON = {}
        if attachment is not None:
            values.insert(0, {"name": "image", "type": ATTACHMENT, "value": attachment["id"]})
            resolved = {"attachments": {attachment["id"]: attachment}}
        data = {"id": str(self._id()), "name": name, "type": 1, "options": values, "resolved": resolved}
        return await self._interaction(user_id, APPLICATION_COMMAND, data, dm=dm)

    async def message_command(self, user_id: int, name: str, message: JSON) -> Interaction:
        """The user picks Apps → `name` on `message`: Discord sends it whole, whatever the intents."""
        data = {
            "id": str(self._id()), "name": name, "type": MESSAGE_COMMAND,
            "target_id": message["id"], "resolved": {"messages": {message["id"]: message}},
        }
        return await self._interaction(user_id, APPLICATION_COMMAND, data)

    async def autocomplete(self, user_id: int, name: str, option: str, typed: str) -> Interaction:
        """The user is typing `typed` into `option` of `/name`."""
        value = {"name": option, "type": STRING, "value": typed, "focused": True}
        data = {"id": str(self._id()), "name": name, "type": 1, "options": [value]}
        return await self._interaction(user_id, AUTOCOMPLETE, data)

    async def _interaction(self, user_id: int, kind: int, data: JSON, *, dm: bool = False) -> Interaction:
        interaction = Interaction(str(self._id()), f"interaction-token-{self._id()}")
        self._interactions[interaction.token] = _InteractionState()
        payload: JSON = {
            "id": interaction.id,
            "application_id": str(self.app_id),
            "type": kind,
            "data": data,
            "token": interaction.token,
            "version": 1,
            "locale": self.locales.get(user_id, "en-US"),
            "app_permissions": "0",
            "entitlements": [],
            "attachment_size_limit": self.attachment_size_limit,
        }
        if dm:
            recipient = _user(user_id, f"user{user_id}")
            payload["channel"] = {"id": str(user_id), "type": 1, "recipients": [recipient]}
            payload["channel_id"] = str(user_id)
            payload["user"] = _user(user_id, f"user{user_id}")
            payload["context"] = 1
        else:
            payload["guild_id"] = str(self.guild_id)
            payload["channel"] = {"id": str(self.channel_id), "type": 0, "guild_id": str(self.guild_id)}
            payload["channel_id"] = str(self.channel_id)
            payload["member"] = {**_member(user_id), "permissions": "0"}
            payload["context"] = 0
        await self._dispatch("INTERACTION_CREATE", payload)
        return interaction

    async def send_message(
        self, user_id: int, content: str = "", *, attachments: list[JSON] | None = None, dm: bool = True,
        mention_bot: bool = False, reply_to: JSON | None = None, resolved: bool = True, unseen: bool = False,
    ) -> JSON:
        """The user writes in a DM (their id is the channel's) or in the guild's channel, maybe
        replying to an earlier message there (`resolved=False`: the event leaves out the message
        replied to, as Discord may, so a bot that has not cached it fetches it). `unseen`: sent
        while the bot was away, so no event."""
        author = _user(user_id, f"user{user_id}")
        channel_id = str(user_id) if dm else str(self.channel_id)
        if mention_bot:
            content = f"<@{self.app_id}> {content}".strip()
        message = _message(self._id(), channel_id, author, content, attachments or [])
        if mention_bot:
            message["mentions"] = [self.bot_user]
        if not dm:
            message["guild_id"] = str(self.guild_id)
            message["member"] = {k: v for k, v in _member(user_id).items() if k != "user"}
        self._messages[message["id"]] = message
        event = self._as_seen(message)
        if reply_to is not None:
            reference = {"type": 0, "message_id": reply_to["id"], "channel_id": channel_id}
            message["type"] = event["type"] = REPLY
            message["message_reference"] = event["message_reference"] = reference
            if resolved:
                event["referenced_message"] = self._as_seen(self._messages[reply_to["id"]])
        if not unseen:
            await self._dispatch("MESSAGE_CREATE", event)
        return message

    def _id(self) -> int:
        return next(self._ids)

    # Observing the bot -------------------------------------------------------

    def calls_to(self, route: str, **params: str) -> list[Call]:
        """The calls of `route` so far whose URL parameters include `params`."""
        return [
            c for c in self.calls if c.route == route and all(c.params.get(k) == v for k, v in params.items())
        ]

    async def wait_for(self, route: str, count: int = 1, timeout: float = 60.0, **params: str) -> list[Call]:
        """Wait until the bot has made `count` calls of `route` (matching `params`); return them."""
        async with asyncio.timeout(timeout), self._changed:
            await self._changed.wait_for(lambda: len(self.calls_to(route, **params)) >= count)
        return self.calls_to(route, **params)

    async def wait_for_file(self, route: str, timeout: float = 60.0, **params: str) -> Call:
        """The first call of `route` (matching `params`) that carries a file: the answer itself, past
        any progress edits a slow drawing sends before it."""
        def with_file() -> list[Call]:
            return [call for call in self.calls_to(route, **params) if call.files]

        async with asyncio.timeout(timeout), self._changed:
            await self._changed.wait_for(lambda: bool(with_file()))
        return with_file()[0]


def shard_of(guild_id: int, count: int) -> int:
    """The shard that gets a guild's events: https://discord.com/developers/docs/events/gateway#sharding."""
    return (guild_id >> 22) % count


async def _read_body(request: web.Request) -> tuple[Any, list[Upload]]:
    """JSON as sent, or discord.py's multipart: `payload_json` plus `files[n]` parts."""
    if request.content_type == "application/json":
        return await request.json(), []
    if request.content_type != "multipart/form-data":
        return None, []
    body: Any = None
    files: list[Upload] = []
    for name, value in (await request.post()).items():
        if isinstance(value, web.FileField):
            files.append(Upload(value.filename, value.content_type, value.file.read()))
        elif name == "payload_json":
            body = json.loads(value if isinstance(value, str) else bytes(value))
    return body, files


def _no_content(request: web.Request, call: Call) -> None:
    return None


def _json(data: Any, status: int = 200) -> web.Response:
    """discord.py parses JSON only when the Content-Type is exactly `application/json` (no charset)."""
    return web.Response(
        body=json.dumps(data).encode(), status=status, headers={"Content-Type": "application/json"}
    )


def _now() -> str:
    return datetime.now(UTC).isoformat()


def _user(user_id: int, name: str, *, bot: bool = False) -> JSON:
    return {
        "id": str(user_id),
        "username": name,
        "global_name": name,
        "discriminator": "0",
        "avatar": None,
        "bot": bot,
    }


def _member(user_id: int) -> JSON:
    return {
        "user": _user(user_id, f"user{user_id}"),
        "roles": [],
        "joined_at": _now(),
        "deaf": False,
        "mute": False,
        "flags": 0,
    }


def _message(message_id: int, channel_id: str, author: JSON, content: str, attachments: list[JSON]) -> JSON:
    return {
        "id": str(message_id),
        "channel_id": channel_id,
        "author": author,
        "content": content,
        "timestamp": _now(),
        "edited_timestamp": None,
        "tts": False,
        "mention_everyone": False,
        "mentions": [],
        "mention_roles": [],
        "attachments": attachments,
        "embeds": [],
        "pinned": False,
        "type": 0,
    }


def _option_type(value: object) -> int:
    """Discord's application-command option type for a value the test passes."""
    if isinstance(value, bool):
        return BOOLEAN
    return INTEGER if isinstance(value, int) else STRING
