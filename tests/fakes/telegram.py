"""A fake Telegram Bot API server on 127.0.0.1, for driving the real python-telegram-bot stack.

It speaks the HTTP side of https://core.telegram.org/bots/api that a polling
bot uses (or a bot on webhooks: once it calls `setWebhook`, updates are POSTed
to its URL with its secret token, `post_update`): the test plays the users (`send_text`, `send_photo`,
`send_document`, `press_button` queue updates that `getUpdates` hands out)
and reads back every call the bot made (`calls`, `wait_for`). A method the
fake does not know is answered 404 and listed in `unknown`, so a test can
insist the bot used nothing else. Users send clips too (`send_animation`, `send_video`,
`send_video_note`); a GIF goes as Telegram sends it on, an MP4 `animation`.

Users write in their private chat with the bot, or in a group (`chat_id=`, a
negative id), maybe replying to an earlier message (`reply_to=`). Groups keep
privacy mode, on by default: the bot gets only what
https://core.telegram.org/bots/features#privacy-mode lets through (listed in
`withheld` otherwise).

    async with FakeTelegram() as api:
        app = Application.builder().token(api.token)
            .base_url(f"{api.url}/bot").base_file_url(f"{api.url}/file/bot").build()
"""

from __future__ import annotations

import asyncio
import io
import itertools
import json
import time
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import aiohttp
from aiohttp import web
from PIL import Image

from waiting import HANG_S

JSON = dict[str, Any]


class ApiError(Exception):
    """A Bot API error answer (`{"ok": false, ...}`), as Telegram gives for a bad request."""

    def __init__(self, code: int, description: str) -> None:
        super().__init__(description)
        self.code, self.description = code, description


@dataclass(frozen=True)
class Upload:
    """A file the bot sent in a multipart request."""

    filename: str
    content_type: str
    data: bytes


@dataclass(frozen=True)
class Call:
    """One Bot API request the bot made: the method, its form fields and any uploaded files."""

    method: str
    fields: dict[str, str]
    files: dict[str, Upload] = field(default_factory=dict)
    result: Any = None  # what the fake answered, e.g. the sent message with its message_id
    at: float = field(default_factory=time.monotonic)  # when it came

    @property
    def chat_id(self) -> int | None:
        """The chat the call addresses, if any."""
        value = self.fields.get("chat_id")
        return int(value) if value is not None else None

    def json(self, name: str) -> Any:
        """A field the bot sent JSON-encoded (`reply_markup`, `reply_parameters`, ...)."""
        return json.loads(self.fields[name])


class FakeTelegram:
    """The Bot API methods a polling bot uses, with users played by the test."""

    def __init__(self, token: str = "123456:TEST-TOKEN") -> None:
        self.token = token
        self.bot_id = int(token.split(":", 1)[0])
        self.calls: list[Call] = []
        self.unknown: list[str] = []  # methods the fake does not implement
        self.endless_bytes_sent = 0  # how much of the endless download went out
        self.username = "toonbot_test_bot"
        self.privacy_mode = True  # BotFather's default: in groups, commands and replies to the bot only
        self.withheld: list[JSON] = []  # group messages privacy mode kept from the bot
        self.languages: dict[int, str] = {}  # user id -> the language_code their app sends (none: no field)
        self._updates: list[JSON] = []
        self._files: dict[str, tuple[str, bytes | None]] = {}  # file_id -> (file_path, data); None: endless
        self._messages: dict[int, JSON] = {}  # every message, by id, for edits and buttons
        self._ids = itertools.count(1)
        self._changed = asyncio.Condition()  # a call was recorded
        self._update_pushed = asyncio.Event()
        # What setWebhook registered (its fields: url, secret_token, ...); while set, updates are POSTed there
        # with the secret in X-Telegram-Bot-Api-Secret-Token, as Telegram does, and not handed to getUpdates.
        self.webhook: dict[str, str] | None = None
        self.deliveries: list[int] = []  # the HTTP status each POSTed update got
        self._posting: set[asyncio.Task[int]] = set()
        self._runner: web.AppRunner | None = None
        self.url = ""
        self._methods: dict[str, Callable[[dict[str, str], dict[str, Upload]], Any]] = {
            "getMe": self._get_me,
            "deleteWebhook": self._delete_webhook,
            "setWebhook": self._set_webhook,
            "getFile": self._get_file,
            "sendMessage": lambda f, u: self._bot_message(f, text=f["text"]),
            "sendPhoto": self._send_photo,
            "sendDocument": self._send_document,
            "sendAnimation": self._send_animation,
            "sendVideo": self._send_video,
            "deleteMessage": self._delete,
            "sendChatAction": lambda f, u: True,
            "answerCallbackQuery": lambda f, u: True,
            "editMessageText": partial(self._edit, "text"),
            "editMessageCaption": partial(self._edit, "caption"),
            "editMessageReplyMarkup": partial(self._edit, None),
        }

    # Server ---------------------------------------------------------------

    async def __aenter__(self) -> FakeTelegram:
        app = web.Application(client_max_size=64 * 2**20)
        app.router.add_route("*", "/bot{token}/{method}", self._on_method)
        app.router.add_get("/file/bot{token}/{path:.+}", self._on_file)
        self._runner = web.AppRunner(app, shutdown_timeout=0.1)  # a pending long poll need not finish
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}"
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        assert self._runner is not None
        await self._runner.cleanup()

    async def _on_method(self, request: web.Request) -> web.Response:
        if request.match_info["token"] != self.token:
            return _error(401, "Unauthorized")
        method = request.match_info["method"]
        fields: dict[str, str] = {}
        files: dict[str, Upload] = {}
        for name, value in (await request.post()).items():
            if isinstance(value, web.FileField):
                files[name] = Upload(value.filename, value.content_type, value.file.read())
            else:
                fields[name] = str(value)
        if method == "getUpdates":  # polled all the time: not worth recording
            return web.json_response({"ok": True, "result": await self._get_updates(fields)})
        handler = self._methods.get(method)
        if handler is None:
            self.unknown.append(method)
            return _error(404, "Not Found: method not found")
        try:
            result = handler(fields, files)
        except ApiError as error:
            result = error
        async with self._changed:
            self.calls.append(Call(method, fields, files, result))
            self._changed.notify_all()
        if isinstance(result, ApiError):
            return _error(result.code, result.description)
        return web.json_response({"ok": True, "result": result})

    async def _on_file(self, request: web.Request) -> web.StreamResponse:
        if request.match_info["token"] != self.token:
            return _error(401, "Unauthorized")
        for path, data in self._files.values():
            if path == request.match_info["path"]:
                if data is None:
                    return await self._endless(request)
                return web.Response(body=data, content_type="application/octet-stream")
        return _error(404, "Not Found")

    async def _endless(self, request: web.Request) -> web.StreamResponse:
        """A download that never ends (until the bot hangs up), counting what it sent."""
        response = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
        await response.prepare(request)
        chunk = b"\xff" * 2**16
        with suppress(ConnectionError, RuntimeError):
            while True:
                await response.write(chunk)
                self.endless_bytes_sent += len(chunk)
        return response

    # Bot API methods ---------------------------------------------------------

    async def _get_updates(self, fields: dict[str, str]) -> list[JSON]:
        """Long polling: updates from `offset` on, waiting up to `timeout` seconds for one."""
        offset = int(fields.get("offset", 0))
        limit = int(fields.get("limit", 100))
        self._updates = [u for u in self._updates if u["update_id"] >= offset]  # confirmed
        with suppress(TimeoutError):
            async with asyncio.timeout(float(fields.get("timeout", 0))):
                while not self._updates:
                    self._update_pushed.clear()
                    await self._update_pushed.wait()
        return self._updates[:limit]

    def _set_webhook(self, fields: dict[str, str], files: dict[str, Upload]) -> bool:
        self.webhook = dict(fields)
        return True

    def _delete_webhook(self, fields: dict[str, str], files: dict[str, Upload]) -> bool:
        self.webhook = None
        return True

    def _get_me(self, fields: dict[str, str], files: dict[str, Upload]) -> JSON:
        return {
            "id": self.bot_id,
            "is_bot": True,
            "first_name": "toonbot",
            "username": self.username,
            "can_join_groups": True,
            "can_read_all_group_messages": not self.privacy_mode,
            "supports_inline_queries": False,
        }

    def _get_file(self, fields: dict[str, str], files: dict[str, Upload]) -> JSON:
        file_id = fields["file_id"]
        if file_id not in self._files:
            raise ApiError(400, "Bad Request: invalid file_id")
        path, data = self._files[file_id]
        sized = {"file_size": len(data)} if data is not None else {}  # the Bot API may leave it out
        return {"file_id": file_id, "file_unique_id": f"u{file_id}", "file_path": path, **sized}

    def _send_photo(self, fields: dict[str, str], files: dict[str, Upload]) -> JSON:
        width, height = _image_size(files["photo"].data)
        photo = [self._file_entry(files["photo"].data, "photos", width=width, height=height)]
        return self._bot_message(fields, photo=photo, caption=fields.get("caption"))

    def _send_document(self, fields: dict[str, str], files: dict[str, Upload]) -> JSON:
        upload = files["document"]
        document = self._file_entry(upload.data, "documents", file_name=upload.filename)
        return self._bot_message(fields, document=document, caption=fields.get("caption"))

    def _send_animation(self, fields: dict[str, str], files: dict[str, Upload]) -> JSON:
        """A GIF or a silent MP4; the Bot API sets `document` too, for older clients."""
        upload = files["animation"]
        animation = self._file_entry(
            upload.data, "animations", file_name=upload.filename, mime_type=upload.content_type,
            width=0, height=0, duration=0,
        )
        return self._bot_message(fields, animation=animation, document=animation, caption=fields.get("caption"))

    def _send_video(self, fields: dict[str, str], files: dict[str, Upload]) -> JSON:
        upload = files["video"]
        video = self._file_entry(
            upload.data, "videos", file_name=upload.filename, mime_type=upload.content_type,
            width=0, height=0, duration=0,
        )
        return self._bot_message(fields, video=video, caption=fields.get("caption"))

    def _delete(self, fields: dict[str, str], files: dict[str, Upload]) -> bool:
        if self._messages.pop(int(fields["message_id"]), None) is None:
            raise ApiError(400, "Bad Request: message to delete not found")
        return True

    def _edit(self, part: str | None, fields: dict[str, str], files: dict[str, Upload]) -> JSON:
        """editMessageText / Caption / ReplyMarkup (`part`: what it edits); a photo has no text to
        edit and a text message no caption, as Telegram says."""
        if int(fields["message_id"]) not in self._messages:
            raise ApiError(400, "Bad Request: message to edit not found")
        message = self._messages[int(fields["message_id"])]
        if part is not None and ("text" in message) != (part == "text"):
            raise ApiError(400, f"Bad Request: there is no {part} in the message to edit")
        for name in ("text", "caption"):
            if name in fields:
                message[name] = fields[name]
        message.pop("reply_markup", None)  # an edit without a keyboard removes it
        if "reply_markup" in fields:
            message["reply_markup"] = json.loads(fields["reply_markup"])
        message["edit_date"] = int(time.time())
        return message

    def _bot_message(self, fields: dict[str, str], **content: Any) -> JSON:
        chat_id = int(fields["chat_id"])
        message = {
            "message_id": next(self._ids),
            "date": int(time.time()),
            "chat": _chat(chat_id),
            "from": self._get_me(fields, {}),
            **{k: v for k, v in content.items() if v is not None},
        }
        if "reply_markup" in fields:
            message["reply_markup"] = json.loads(fields["reply_markup"])
        self._messages[message["message_id"]] = message
        return message

    def _file_entry(self, data: bytes | None, folder: str, **extra: Any) -> JSON:
        """Store `data` for getFile and the download, and describe it as the Bot API does
        (None: a download without end, and no size said anywhere)."""
        file_id = f"file{next(self._ids)}"
        suffix = extra.get("file_name", "x.jpg").rsplit(".", 1)[-1]
        self._files[file_id] = (f"{folder}/{file_id}.{suffix}", data)
        sized = {"file_size": len(data)} if data is not None else {}
        return {"file_id": file_id, "file_unique_id": f"u{file_id}", **sized, **extra}

    # The users' side ---------------------------------------------------------

    def send_text(self, user_id: int, text: str, **where: Any) -> JSON:
        """The user types `text` (a leading /word is marked as a bot command, as Telegram does).

        `where`, for this and the other `send_*`: `chat_id` (a group; else the user's
        private chat) and `reply_to` (a message sent earlier, which the new one replies to)."""
        return self._user_message(user_id, where, text=text, entities=_command_entities(text))

    def send_photo(self, user_id: int, data: bytes, caption: str = "", **where: Any) -> JSON:
        """The user sends a compressed photo (Telegram always makes those JPEG)."""
        width, height = _image_size(data)
        photo = [self._file_entry(data, "photos", width=width, height=height)]
        return self._user_message(user_id, where, photo=photo, **_caption(caption))

    def send_document(
        self, user_id: int, data: bytes | None, file_name: str, mime_type: str, caption: str = "", **where: Any
    ) -> JSON:
        """The user sends a file as is ("without compression"); None: one of unknown size that never ends."""
        document = self._file_entry(data, "documents", file_name=file_name, mime_type=mime_type)
        return self._user_message(user_id, where, document=document, **_caption(caption))

    def send_animation(
        self, user_id: int, data: bytes, file_name: str = "clip.gif.mp4", mime_type: str = "video/mp4",
        caption: str = "", **where: Any,
    ) -> JSON:
        """The user sends a GIF (Telegram has made it a silent MP4 by now) or a silent video as a GIF;
        `document` describes it too, as the Bot API does."""
        animation = self._file_entry(
            data, "animations", file_name=file_name, mime_type=mime_type, width=128, height=96, duration=1
        )
        return self._user_message(user_id, where, animation=animation, document=animation, **_caption(caption))

    def send_video(self, user_id: int, data: bytes, caption: str = "", **where: Any) -> JSON:
        """The user sends a video (an MP4, maybe with sound)."""
        video = self._file_entry(
            data, "videos", file_name="video.mp4", mime_type="video/mp4", width=128, height=96, duration=3
        )
        return self._user_message(user_id, where, video=video, **_caption(caption))

    def send_video_note(self, user_id: int, data: bytes, **where: Any) -> JSON:
        """The user records a round video message (no caption, no MIME type said)."""
        note = self._file_entry(data, "video_notes", length=96, duration=3)
        return self._user_message(user_id, where, video_note=note)

    def open_topic(self, user_id: int, chat_id: int, name: str) -> JSON:
        """The user opens a forum topic in a group: a service message that every message in the
        topic "replies" to (`reply_to=` it, as Telegram does)."""
        started = {"name": name, "icon_color": 0}
        return self._user_message(user_id, {"chat_id": chat_id}, forum_topic_created=started)

    def press_button(self, user_id: int, message_id: int, callback_data: str) -> None:
        """The user presses an inline keyboard button that the bot's message really shows."""
        message = self._messages[message_id]
        keyboard = message.get("reply_markup", {}).get("inline_keyboard", [])
        shown = [b.get("callback_data") for row in keyboard for b in row]
        if callback_data not in shown:
            raise AssertionError(f"message {message_id} has no button {callback_data!r}: {shown}")
        self._push(
            callback_query={
                "id": str(next(self._ids)),
                "from": _user(user_id, self.languages.get(user_id)),
                "chat_instance": str(user_id),
                "message": message,
                "data": callback_data,
            }
        )

    def _user_message(self, user_id: int, where: dict[str, Any], **content: Any) -> JSON:
        chat_id, reply_to = where.get("chat_id", user_id), where.get("reply_to")
        message = {
            "message_id": next(self._ids),
            "date": int(time.time()),
            "chat": _chat(chat_id),
            "from": _user(user_id, self.languages.get(user_id)),
            **{k: v for k, v in content.items() if v},
        }
        if reply_to is not None:  # the message replied to comes along, without its own reply
            message["reply_to_message"] = {k: v for k, v in reply_to.items() if k != "reply_to_message"}
        self._messages[message["message_id"]] = message
        if chat_id < 0 and self.privacy_mode and not (self._for_the_bot(message) or _service(message)):
            self.withheld.append(message)
        else:
            self._push(message=message)
        return message

    def _for_the_bot(self, message: JSON) -> bool:
        """What a bot in privacy mode gets in a group: commands explicitly for it (/cmd@this_bot), general
        commands (/cmd: it is the only bot in these groups, so the last to speak), and replies to its
        messages. A caption that starts with a command counts as one."""
        text = message.get("text") or message.get("caption") or ""
        entities = message.get("entities") or message.get("caption_entities") or []
        if entities and entities[0]["type"] == "bot_command" and entities[0]["offset"] == 0:
            _, _, addressee = text[: entities[0]["length"]].partition("@")
            if addressee in ("", self.username):
                return True
        return message.get("reply_to_message", {}).get("from", {}).get("id") == self.bot_id

    def _push(self, **update: Any) -> None:
        update = {"update_id": next(self._ids), **update}
        if self.webhook is not None:  # delivered to the bot's webhook, with the secret it registered
            task = asyncio.get_running_loop().create_task(self.post_update(update, self.webhook.get("secret_token")))
            self._posting.add(task)
            task.add_done_callback(self._posting.discard)
            return
        self._updates.append(update)
        self._update_pushed.set()

    async def post_update(self, update: JSON, secret: str | None) -> int:
        """POST `update` to the registered webhook as Telegram does, with `secret` (None: no header);
        the status the bot answered, also kept in `deliveries`."""
        assert self.webhook is not None, "no webhook registered (setWebhook)"
        headers = {} if secret is None else {"X-Telegram-Bot-Api-Secret-Token": secret}
        async with aiohttp.ClientSession() as client:
            try:
                async with asyncio.timeout(HANG_S):  # however long a loaded machine takes to start listening
                    while True:  # Telegram retries while nothing listens (PTB registers before it listens)
                        try:
                            async with client.post(self.webhook["url"], json=update, headers=headers) as response:
                                self.deliveries.append(response.status)
                                return response.status
                        except aiohttp.ClientConnectionError:
                            await asyncio.sleep(0.05)
            except TimeoutError:
                raise AssertionError(f"nothing listens at {self.webhook['url']}") from None

    def forget_files(self) -> None:
        """Make every file the users sent so far unavailable, as an expired file_id is."""
        self._files.clear()

    # Observing the bot -------------------------------------------------------

    def calls_to(self, method: str | tuple[str, ...], chat_id: int | None = None) -> list[Call]:
        """The calls of `method` (or of any of several: a photo, or the refusal in its place) so far,
        to one chat if given."""
        methods = (method,) if isinstance(method, str) else method
        return [
            c for c in self.calls if c.method in methods and chat_id in (None, c.chat_id)
        ]

    async def wait_for(
        self, method: str | tuple[str, ...], chat_id: int | None = None, count: int = 1, timeout: float = 60.0
    ) -> list[Call]:
        """Wait until the bot has made `count` calls of `method` (of any of several) to `chat_id`; return them."""
        async with asyncio.timeout(timeout), self._changed:
            await self._changed.wait_for(lambda: len(self.calls_to(method, chat_id)) >= count)
        return self.calls_to(method, chat_id)


def _error(code: int, description: str) -> web.Response:
    return web.json_response(
        {"ok": False, "error_code": code, "description": description}, status=code
    )


def _user(user_id: int, language_code: str | None = None) -> JSON:
    user: JSON = {"id": user_id, "is_bot": False, "first_name": f"User{user_id}"}
    if language_code is not None:  # as Telegram sends it: the user's app language, an IETF tag
        user["language_code"] = language_code
    return user


def _chat(chat_id: int) -> JSON:
    if chat_id < 0:  # groups have negative ids
        return {"id": chat_id, "type": "supergroup", "title": f"Group{-chat_id}"}
    return {"id": chat_id, "type": "private", "first_name": f"User{chat_id}"}


def _service(message: JSON) -> bool:
    """Service messages reach every bot, privacy mode or not (only a topic's start is made here)."""
    return "forum_topic_created" in message


def _command_entities(text: str) -> list[JSON]:
    if not text.startswith("/"):
        return []
    return [{"type": "bot_command", "offset": 0, "length": len(text.split(" ", 1)[0])}]


def _caption(caption: str) -> JSON:
    return {"caption": caption, "caption_entities": _command_entities(caption)}


def _image_size(data: bytes) -> tuple[int, int]:
    with Image.open(io.BytesIO(data)) as image:
        return image.size
