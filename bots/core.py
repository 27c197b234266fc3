"""The conversation, once for every front end: commands, style choice, limits, replies, usage.

An adapter (Telegram, Discord, the web page) turns what its platform delivers
into a `Request` and shows the `Reply`; nothing here knows any platform.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Coroutine, Hashable
from dataclasses import dataclass, field, replace
from typing import Literal

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bots import collage, i18n, messages, metrics
from bots.limits import Limits, Refusal, UserLimits
from bots.shared_limits import SharedLimits
from db import users
from db.engine import answers
from db.models import Platform, UsageStatus
from db.usage import UsageRecord, UsageRecorder
from serving import animation, inputs
from styles import catalog
from telemetry import probes
from serving.api import StyleInfo, Stylizer, StylizeError

logger = logging.getLogger(__name__)

# Why a photo was not drawn, for front ends that show the kind (the web page's HTTP status).
Problem = Literal[
    "not_a_form", "not_an_image", "too_big", "unknown_style", "bad_input", "no_face",
    "busy", "too_many", "overloaded", "unavailable", "no_styles", "error", "too_slow",
]
# Serving's error kinds -> the usage log's statuses (anything else is an "error").
_STATUS: dict[str, UsageStatus] = {
    "bad_input": "bad_input", "too_big": "bad_input", "no_face": "no_face", "overloaded": "overloaded",
}
_PROBLEMS = frozenset(Problem.__args__)  # type: ignore[attr-defined]
RETRY_OVERLOADED_S = 30  # what "try again in a minute" means to a program
CATALOGUE_TTL_S = 10.0  # a new deployment shows within this long
DB_DEADLINE_S = 0.5  # the longest a reply waits for the database; then it goes on without it
SAVED_STYLE_TTL_S = 300.0  # another process's /style shows here within this long
SAVED_STYLE_USERS = 100_000  # users whose style (and language) is remembered in memory
AUTO = "auto"  # /language auto: the platform's language again
COMPARE = "compare"  # the word after /style [NAME] that asks for before/after
# Declared types that say nothing either way: let the decoder judge the bytes.
_UNDECLARED = ("", "application/octet-stream")
# (frames drawn, frames in all), called as a clip is drawn; an adapter shows it (`every` spaces it out).
Progress = animation.Progress


class TooBig(Exception):
    """Raised by an adapter's `read` that stopped at `Core.max_upload_bytes`: the core says "too big"."""


@dataclass(frozen=True)
class Attachment:
    """A file the user sent, read only once it passes the checks (a refused PDF is never fetched)."""

    content_type: str  # as the platform declares it, e.g. "image/jpeg"; "" when unknown
    size: int | None  # declared size in bytes, when the platform says
    read: Callable[[], Awaitable[bytes]]


@dataclass(frozen=True)
class Request:
    """One thing a user did: a message text or caption, maybe with a file, and how to draw it.

    `style` and `compare` are what a front end with typed options (the page's
    form, Discord's slash options) sets; a chat caption "/style NAME compare"
    comes to the same fields (`Core.handle`)."""

    platform: Platform
    user_id: str
    chat_id: str
    text: str = ""
    attachment: Attachment | None = None
    network: str | None = None  # where it came from (the web page: the IP); limited per minute too
    progress: Progress | None = None  # told as an animated GIF or video is drawn, frame by frame
    style: str | None = None  # draw this photo in this style, this once (None: the user's own)
    compare: bool = False  # the original beside the result, in one picture
    admitted: bool = False  # counted against the limits already (`Core.admit`, before the upload was read)
    # What the user reads: the platform's word for it (a Telegram language_code, a Discord locale, an
    # Accept-Language header; None: English), and their /language choice, which wins (`Core.localise`).
    language: str | None = None
    chosen_language: str | None = None
    # When the reply stops waiting for the database (`Core.localise` sets it, as it first asks): every
    # wait for this request ends then, so a hung database costs a reply one deadline, not one per query.
    db_until: float | None = None


@dataclass(frozen=True)
class StyleButton:
    """A button that, when pressed, switches the user to `style` (`Core.set_style`)."""

    style: str
    label: str
    selected: bool


@dataclass(frozen=True)
class LanguageButton:
    """A button that, when pressed, switches the user to `language` (`Core.set_language`)."""

    language: str  # a locale of `i18n.LANGUAGES`, or `AUTO`
    label: str
    selected: bool


@dataclass(frozen=True)
class Reply:
    """What to send back: a short text, maybe an image, maybe style (or language) buttons."""

    text: str
    image: bytes | None = None
    content_type: str | None = None
    buttons: tuple[StyleButton | LanguageButton, ...] = ()
    problem: Problem | None = None  # why no picture came back, when one was sent
    retry_after_s: int | None = None  # when it may work again (rate limits, overload)
    animated: animation.Kind | None = None  # "gif" or "mp4": the image is an animation of that kind
    sound: bool = False  # an animated MP4 with a sound track (Telegram: a video, not a silent animation)


Command = Callable[[Request, str], Awaitable[Reply]]


def parse_command(text: str) -> tuple[str | None, str]:
    """`"/style@toonbot cat2dog"` -> `("style", "cat2dog")`; plain text -> `(None, text)`."""
    text = text.strip()
    if not text.startswith("/"):
        return None, text
    head, _, arg = text[1:].partition(" ")
    return head.split("@", 1)[0].lower(), arg.strip()


def split_compare(arg: str) -> tuple[str, bool]:
    """`"cat2dog compare"` -> `("cat2dog", True)`; `"compare"` -> `("", True)`: before/after asked."""
    words = arg.split()
    if words and words[-1].lower() == COMPARE:
        return " ".join(words[:-1]), True
    return arg, False


class SavedStyles:
    """Users' chosen styles (or languages), remembered in memory so most replies need no database round trip.

    Entries expire after `ttl_s`, so processes sharing one database see each
    other's changes; the least recently stored go first beyond `max_users`.
    """

    def __init__(self, ttl_s: float = SAVED_STYLE_TTL_S, max_users: int = SAVED_STYLE_USERS) -> None:
        self._ttl_s = ttl_s
        self._max_users = max_users
        self._entries: OrderedDict[Hashable, tuple[str | None, float]] = OrderedDict()

    def get(self, user: Hashable) -> tuple[bool, str | None]:
        """(known, style): known is False when the database must be asked."""
        style, expires = self._entries.get(user, (None, 0.0))
        return time.monotonic() < expires, style

    def put(self, user: Hashable, style: str | None) -> None:
        """Remember `style` (None: the user never chose one)."""
        self._entries.pop(user, None)
        self._entries[user] = (style, time.monotonic() + self._ttl_s)
        while len(self._entries) > self._max_users:
            self._entries.popitem(last=False)

    def forget(self, user: Hashable) -> None:
        """Drop what is remembered about `user` (/forget)."""
        self._entries.pop(user, None)


@dataclass
class _Outcome:
    """What one photo request came to, for the reply and the usage log."""

    style: str
    words: i18n.Words = field(default_factory=lambda: i18n.words(None))  # the user's language
    status: UsageStatus = "error"
    reply: Reply = Reply(messages.ERROR)
    input_bytes: int | None = None
    input_pixels: int | None = None
    version: str | None = None
    faces: int | None = None
    frames: int | None = None  # an animated GIF or a video: its frames and length
    seconds: float | None = None

    def refuse(self, status: UsageStatus, problem: Problem, text: str, retry_after_s: int | None = None) -> None:
        """The request ends without a picture: `text` for the user, `status` for the log."""
        self.status = status
        self.reply = Reply(text, problem=problem, retry_after_s=retry_after_s)


class Core:
    """Answers requests from every front end; holds the per-user limits and the model's queue."""

    def __init__(
        self,
        *,
        stylizer: Stylizer,
        sessions: async_sessionmaker[AsyncSession],
        recorder: UsageRecorder,
        default_style: str,
        requests_per_minute: int,
        network_requests_per_minute: int | None = None,
        max_in_flight: int,
        max_upload_bytes: int,
        output_size: int | None,
        upscale_backlog: int = 4,
        animation_limits: animation.Limits = animation.Limits(),
        clips_in_flight: int = 2,
        shared_limits: bool = False,
    ) -> None:
        self._stylizer = stylizer
        self._sessions = sessions
        self._recorder = recorder
        self._default_style = default_style
        per_network = network_requests_per_minute or requests_per_minute
        self._limits: Limits = UserLimits(requests_per_minute)
        self._network_limits: Limits = UserLimits(per_network, one_at_a_time=False)
        if shared_limits:  # in the database: every replica counts the same requests
            self._limits = SharedLimits(sessions, "user", requests_per_minute)
            self._network_limits = SharedLimits(sessions, "network", per_network, one_at_a_time=False)
        self._model_slots = metrics.ModelSlots(max_in_flight)  # photos and clips' frames, one each, in turn
        self._clip_slots = asyncio.Semaphore(clips_in_flight)  # clips decoded and held at once
        self._max_upload_bytes = max_upload_bytes
        self._output_size = output_size
        self._upscale_backlog = upscale_backlog
        self._animation_limits = animation_limits
        self._catalogue_lock = asyncio.Lock()
        self._catalogue_cache: dict[str, StyleInfo] = {}
        self._catalogue_expires = 0.0
        self.saved_styles = SavedStyles()
        self.saved_languages = SavedStyles()  # the /language choices, read and cached with the styles
        # Database work that outlived its reply's deadline: it finishes (or fails) on its own.
        self._pending: dict[Hashable, asyncio.Task[None]] = {}
        self._database_answers = probes.Patient(lambda: answers(sessions), DB_DEADLINE_S)  # `ready`
        # The chat text commands, each parsed into a typed call; the admin commands register here too.
        self.commands: dict[str, Command] = {
            "start": self._start,
            "help": self._help,
            "styles": lambda request, arg: self.list_styles(request),
            "style": self._style,
            "language": self._language,
        }

    async def handle(self, request: Request) -> Reply:
        """Every photo, and a chat's text: a command, or a caption "/style [NAME] [compare]" that
        sets the photo's `style` (this once) and `compare` as a typed front end does."""
        command, arg = parse_command(request.text)
        request = await self.localise(request)
        if request.attachment is not None:
            if command == "style":
                name, compare = split_compare(arg)
                request = replace(request, style=name or request.style, compare=request.compare or compare)
            return await self._photo(request, request.attachment)
        if command is None:
            return Reply(words_for(request)(messages.NOT_A_COMMAND))
        try:
            return await self.commands.get(command, self._help)(request, arg)
        except StylizeError as error:  # e.g. TorchServe unreachable while greeting
            return _unreachable(error, words_for(request))

    # Commands ---------------------------------------------------------------

    async def _start(self, request: Request, arg: str) -> Reply:
        """Greet and say which style is on."""
        catalogue = await self._catalogue()
        style = await self._current_style(request, catalogue)
        words = words_for(request)
        return Reply(words(messages.WELCOME, style=_title(words, style) if style else "-"))

    async def _help(self, request: Request, arg: str) -> Reply:
        """What the bot does, in four lines."""
        return Reply(words_for(request)(messages.HELP))

    async def styles(self, request: Request) -> tuple[list[StyleInfo], StyleInfo | None]:
        """The deployed styles and the user's own (None when nothing is deployed), for front ends
        that show them their own way (the page's picker, Discord's autocomplete).

        Raises `StylizeError` when the runtime cannot say (TorchServe unreachable)."""
        catalogue = await self._catalogue()
        return list(catalogue.values()), await self._current_style(request, catalogue)

    async def preview(self, name: str) -> bytes | None:
        """A deployed style's before|after JPEG (None: no such style, or an archive without one);
        from the cached catalogue, with no user to look up (the page fetches one per card).

        Raises `StylizeError` when the runtime cannot say (TorchServe unreachable)."""
        style = (await self._catalogue()).get(name)
        return style.preview if style else None

    async def list_styles(self, request: Request) -> Reply:
        """/styles: the deployed styles, one per line, with a button each, the user's ticked, and a
        picture of what each does (every style's preview, `bots.collage`) for the chats to show."""
        request = await self.localise(request)
        try:
            return await self._listing(request, previews=True)
        except StylizeError as error:
            return _unreachable(error, words_for(request))

    async def _listing(self, request: Request, header: str = "", *, previews: bool = False) -> Reply:
        """The /styles reply, under `header` (why it is shown, e.g. an unknown name)."""
        found, current = await self.styles(request)
        words = words_for(request)
        if not found:
            return Reply(words(messages.NO_STYLES))
        lines = [header] if header else []
        lines.append(words(messages.STYLES_HEADER, style=current.name if current else "-"))
        for s in found:
            description = words.style(s.name, s.title, s.description)[1]
            lines.append(words(messages.STYLE_LINE, name=s.name, description=description))
            lines += [f"  {note}"] if (note := experimental_note(words, s)) else []
        buttons = tuple(StyleButton(style=s.name, label=_title(words, s), selected=s == current) for s in found)
        image = collage.collage(found) if previews else None
        return Reply("\n".join(lines), image=image, content_type="image/jpeg" if image else None, buttons=buttons)

    async def _style(self, request: Request, arg: str) -> Reply:
        """/style NAME [compare]; a bare /style lists the styles."""
        name, compare = split_compare(arg)
        if not name:
            return Reply(words_for(request)(messages.COMPARE_HOW)) if compare else await self.list_styles(request)
        return await self.set_style(request, name, compare=compare)

    async def set_style(self, request: Request, name: str, *, compare: bool = False) -> Reply:
        """Switch the user's style for good; an unknown name gets the list. `compare`: before/after
        was asked too, which only a photo can have, so the reply says how."""
        request = await self.localise(request)
        words = words_for(request)
        try:
            style = (await self._catalogue()).get(name)
            if style is None:
                return await self._listing(request, words(messages.UNKNOWN_STYLE, name=catalog.shown(name)))
        except StylizeError as error:
            return _unreachable(error, words)
        self.saved_styles.put((request.platform, request.user_id), name)
        # This process knows the style at once; a slow database gets the save when it can.
        await self._within_deadline(("save", request.platform, request.user_id), self._save_style(request), request)
        how = " " + words(messages.COMPARE_HOW) if compare else ""
        return Reply(words(messages.STYLE_SET, title=_title(words, style)) + how)

    async def _within_deadline(
        self, key: Hashable, work: Coroutine[None, None, None], request: Request | None = None
    ) -> None:
        """Run `work` for at most `DB_DEADLINE_S` here (or until `request.db_until`), then leave it
        running in the background.

        Not cancelled: cancelling a query on a hung connection waits on that
        connection too. One piece of work per key at a time; a repeat waits for it.
        """
        task = self._pending.get(key)
        if task is None:
            task = asyncio.create_task(work)
            self._pending[key] = task
            task.add_done_callback(lambda _: self._pending.pop(key, None))
        else:
            work.close()
        until = request.db_until if request is not None else None
        timeout = DB_DEADLINE_S if until is None else max(0.0, until - time.monotonic())
        await asyncio.wait({task}, timeout=timeout)

    async def settle(self, timeout_s: float) -> None:
        """Wait up to `timeout_s` for database work still running in the background (at shutdown)."""
        if self._pending:
            await asyncio.wait(list(self._pending.values()), timeout=timeout_s)
        for limits in (self._limits, self._network_limits):  # turns still being given back
            if isinstance(limits, SharedLimits):
                await limits.settle(timeout_s)

    async def quiet(self, platform: Platform, user_id: str) -> None:
        """Wait until this process's database work on the user (a style save, usage records) has
        landed, however long that takes: /forget deletes after it, so nothing lands after the delete."""
        pending = [task for key, task in self._pending.items() if key[1:] == (platform, user_id)]  # type: ignore[index]
        if pending:
            await asyncio.wait(pending)
        await self._recorder.flush()

    async def _read_style(self, request: Request) -> None:
        """Ask the database for the user's style and language, and remember them."""
        try:
            async with self._sessions() as session:
                saved = await users.get_choices(
                    session, platform=request.platform, platform_user_id=request.user_id
                )
        except (SQLAlchemyError, OSError) as error:
            logger.warning("style of %s:%s not read: %s", request.platform, request.user_id, error)
            return
        user = (request.platform, request.user_id)
        for remembered, value in ((self.saved_styles, saved.style), (self.saved_languages, saved.language)):
            if not remembered.get(user)[0]:  # a /style (/language) meanwhile is newer than what was read
                remembered.put(user, value)

    async def _save_style(self, request: Request) -> None:
        """Save the user's remembered style, and again if a /style changed it while this one waited."""

        async def write(session: AsyncSession, style: str | None) -> None:
            if style is not None:  # None: forgotten, then read again meanwhile
                await users.set_style(session, platform=request.platform, platform_user_id=request.user_id, style=style)

        await self._save_choice(request, self.saved_styles, write)

    async def _save_language(self, request: Request) -> None:
        """Save the user's remembered language (None: their platform's again), as `_save_style` does."""

        async def write(session: AsyncSession, language: str | None) -> None:
            await users.set_language(
                session, platform=request.platform, platform_user_id=request.user_id, language=language
            )

        await self._save_choice(request, self.saved_languages, write)

    async def _save_choice(
        self, request: Request, remembered: SavedStyles,
        write: Callable[[AsyncSession, str | None], Awaitable[None]],
    ) -> None:
        """Write what `remembered` holds for the user, and again if they changed it while this one waited."""
        user, written = (request.platform, request.user_id), ""
        while True:
            known, value = remembered.get(user)
            if not known or value == written:  # saved, or forgotten meanwhile
                return
            try:
                async with self._sessions() as session:
                    await write(session, value)
            except (SQLAlchemyError, OSError) as error:
                logger.warning("choice of %s:%s not saved: %s", *user, error)
                return
            written = value

    # Languages --------------------------------------------------------------

    async def chosen_language(self, request: Request) -> str | None:
        """The user's /language choice (a locale of `i18n.LANGUAGES`), None when they made none;
        read like the style (`_current_style`): remembered, else the database within its deadline."""
        user = (request.platform, request.user_id)
        known, language = self.saved_languages.get(user)
        if not known:
            await self._within_deadline(("read", *user), self._read_style(request), request)
            known, language = self.saved_languages.get(user)
        return i18n.choose(language) if known else None

    async def localise(self, request: Request) -> Request:
        """`request` in the user's own language: their /language choice beats what the platform says."""
        if request.db_until is not None:  # localised already
            return request
        request = replace(request, db_until=time.monotonic() + DB_DEADLINE_S)
        return replace(request, chosen_language=await self.chosen_language(request))

    def forget_choices(self, user: Hashable) -> None:
        """Drop what is remembered about `user` (/forget): style and language."""
        self.saved_styles.forget(user)
        self.saved_languages.forget(user)

    async def _language(self, request: Request, arg: str) -> Reply:
        """/language [CODE|auto]: a bare one lists the languages, with a button each."""
        return await self.set_language(request, arg) if arg else await self.list_languages(request)

    async def list_languages(self, request: Request) -> Reply:
        """The languages, each in its own name, the user's choice ticked (none: their platform's)."""
        chosen = await self.chosen_language(request)
        words = i18n.words(chosen or request.language)
        lines = [words(messages.LANGUAGES_HEADER, language=i18n.LANGUAGES[words.locale])]
        lines += [words(messages.LANGUAGE_LINE, code=code, name=name) for code, name in i18n.LANGUAGES.items()]
        lines.append(words(messages.LANGUAGE_AUTO_LINE))
        buttons = tuple(
            LanguageButton(language=code, label=name, selected=code == chosen) for code, name in i18n.LANGUAGES.items()
        )
        return Reply("\n".join(lines), buttons=buttons)

    async def set_language(self, request: Request, code: str) -> Reply:
        """Answer the user in `code` from now on (`AUTO`: in their platform's language again)."""
        request = await self.localise(request)
        automatic = code.strip().lower() == AUTO
        chosen = None if automatic else i18n.choose(code)
        if chosen is None and not automatic:
            listing = await self.list_languages(request)
            unknown = words_for(request)(messages.UNKNOWN_LANGUAGE, name=catalog.shown(code))
            return replace(listing, text=unknown + "\n" + listing.text)
        self.saved_languages.put((request.platform, request.user_id), chosen)
        key = ("language", request.platform, request.user_id)
        await self._within_deadline(key, self._save_language(request), request)
        words = i18n.words(chosen or request.language)
        done = messages.LANGUAGE_AUTO if automatic else messages.LANGUAGE_SET
        return Reply(words(done, language=i18n.LANGUAGES[words.locale]))

    async def ready(self) -> dict[str, bool]:
        """For `/readyz`: styles deployed (the runtime lists at least one) and the database answering,
        each within `DB_DEADLINE_S` (an orchestrator sends no traffic to a replica that is not ready)."""
        try:
            async with asyncio.timeout(DB_DEADLINE_S):
                styles = bool(await self._catalogue())
        except (TimeoutError, StylizeError) as error:
            logger.info("not ready: styles: %s", type(error).__name__)
            styles = False
        return {"styles": styles, "database": await self._database_answers()}

    @property
    def max_upload_bytes(self) -> int:
        """The largest file drawn; an adapter that streams a download stops there (`TooBig`)."""
        return self._max_upload_bytes

    def refresh_styles(self) -> None:
        """Forget the cached style list (a deploy just changed it): the next request asks the runtime."""
        self._catalogue_expires = 0.0

    # Photos -----------------------------------------------------------------

    async def _photo(self, request: Request, attachment: Attachment) -> Reply:
        """Stylize one image within the limits, and log it whatever happens."""
        started = time.perf_counter()
        once = request.style  # this photo only
        outcome = _Outcome(style=once or self._default_style, words=words_for(request), input_bytes=attachment.size)
        try:
            catalogue = await self._catalogue()
            style = catalogue.get(once) if once else await self._current_style(request, catalogue)
            if not catalogue:  # nothing deployed: our fault, not the user's
                outcome.refuse("error", "no_styles", outcome.words(messages.NO_STYLES), RETRY_OVERLOADED_S)
            elif style is None:
                unknown = outcome.words(messages.UNKNOWN_STYLE, name=catalog.shown(once or ""))
                listing = await self._listing(request, unknown)
                outcome.status = "bad_input"
                outcome.reply = Reply(listing.text, buttons=listing.buttons, problem="unknown_style")
            else:
                outcome.style, outcome.version = style.name, style.version
                await self._within_limits(request, style, attachment, outcome)
        except StylizeError as error:
            logger.info("stylize %s refused: %s (%s)", outcome.style, error.kind, error)
            retry = RETRY_OVERLOADED_S if error.kind in ("overloaded", "unavailable") else None
            problem: Problem = error.kind if error.kind in _PROBLEMS else "error"  # type: ignore[assignment]
            # Serving words it for users, in English: the user's language by its code.
            outcome.refuse(_STATUS.get(error.kind, "error"), problem, refusal(error, outcome.words), retry)
        finally:  # written even when the adapter's download blows up
            self._record(request, outcome, started)
        return outcome.reply

    def refuse(
        self, request: Request, problem: Problem, text: i18n.Message, *, input_bytes: int | None = None,
        status: UsageStatus = "bad_input", retry_after_s: int | None = None, **values: object,
    ) -> Reply:
        """A photo request its adapter refused before there was a picture (a body that is not a form,
        an upload too slow or one too many): logged like any other, answered with `text` (a message
        of `bots.messages`, filled in with `values`) in the user's language."""
        words = words_for(request)
        outcome = _Outcome(style=request.style or self._default_style, words=words, input_bytes=input_bytes)
        outcome.refuse(status, problem, words(text, **values), retry_after_s)
        self._record(request, outcome, time.perf_counter())
        return outcome.reply

    async def admit(self, request: Request) -> Reply | None:
        """Count a photo request against its network's and user's allowances before its upload is
        read, so a refused one is never held in memory: None when admitted (then `handle` it with
        `admitted=True`, and `release` it whatever happens), else the refusal, logged."""
        outcome = _Outcome(style=request.style or self._default_style, words=words_for(request))
        if await self._admit(request, outcome):
            return None
        self._record(request, outcome, time.perf_counter())
        return outcome.reply

    async def release(self, request: Request) -> None:
        """End an admitted request (`admit`) that is answered or abandoned; again is harmless."""
        await self._limits.end((request.platform, request.user_id))

    def _record(self, request: Request, outcome: _Outcome, started: float) -> None:
        seconds = time.perf_counter() - started
        metrics.observe(  # beside the usage row, so the two never disagree
            front_end=request.platform, style=outcome.style if outcome.version else None, outcome=outcome.status,
            problem=outcome.reply.problem if outcome.reply.image is None else None, seconds=seconds,
            faces=outcome.faces, frames=outcome.frames,
        )
        self._recorder.record(
            UsageRecord(
                platform=request.platform,
                platform_user_id=request.user_id,
                chat_id=request.chat_id,
                style=outcome.style,
                model_version=outcome.version,
                status=outcome.status,
                latency_ms=round(seconds * 1000),
                input_bytes=outcome.input_bytes,
                input_pixels=outcome.input_pixels,
                faces=outcome.faces,
                frames=outcome.frames,
                seconds=outcome.seconds,
            )
        )

    async def _within_limits(
        self, request: Request, style: StyleInfo, attachment: Attachment, outcome: _Outcome
    ) -> None:
        """Refuse politely when the user's network or the user is over their allowance, else draw."""
        if not request.admitted and not await self._admit(request, outcome):
            return
        try:
            await self._draw(style, attachment, outcome, request.progress, request.compare)
        finally:
            await self.release(request)

    async def _admit(self, request: Request, outcome: _Outcome) -> bool:
        """True when the request may start now (`release` must follow), else `outcome` says why not.

        The network is asked first: a request it admits counts for it even if
        the user is then refused, so rotating identities gains nothing.
        """
        checks = [(self._limits, (request.platform, request.user_id))]
        if request.network is not None:
            checks.insert(0, (self._network_limits, (request.platform, "network", request.network)))
        for limits, key in checks:
            refusal, retry_after = await limits.admit(key, until=request.db_until)  # the reply's one deadline
            if refusal is Refusal.BUSY:
                outcome.refuse("rate_limited", "busy", outcome.words(messages.BUSY_USER), retry_after)
                return False
            if refusal is Refusal.TOO_MANY:
                text = outcome.words(messages.SLOW_DOWN, limit=limits.per_minute)
                outcome.refuse("rate_limited", "too_many", text, retry_after)
                return False
        return True

    async def _draw(
        self, style: StyleInfo, attachment: Attachment, outcome: _Outcome, progress: Progress | None,
        compare: bool,
    ) -> None:
        """Check the file, fetch it, wait for a model slot, and translate it (a clip has no before/after)."""
        declared = attachment.content_type.lower()
        if declared not in _UNDECLARED and not declared.startswith(("image/", "video/")):
            outcome.refuse("bad_input", "not_an_image", outcome.words(messages.NOT_AN_IMAGE))
            return
        too_big = outcome.words(messages.TOO_BIG, limit_mb=self._max_upload_bytes // 2**20)
        if (attachment.size or 0) > self._max_upload_bytes:
            outcome.refuse("bad_input", "too_big", too_big)
            return
        try:
            data = await attachment.read()
        except TooBig:
            outcome.refuse("bad_input", "too_big", too_big)
            return
        outcome.input_bytes = len(data)
        if len(data) > self._max_upload_bytes:
            outcome.refuse("bad_input", "too_big", too_big)
            return
        # From the headers alone, off the event loop (a GIF's blocks are walked): a clip or a still
        # past the pixel budget is refused here (`TooLarge`), before anything is decoded.
        shape = await asyncio.to_thread(inputs.inspect, data, self._animation_limits)
        outcome.input_pixels = shape.pixels or None
        if shape.kind is not None:
            await self._draw_clip(style, data, shape, outcome, progress)
            return
        if declared.startswith("video/"):  # a WebM, an AVI...: no still image either
            outcome.refuse("bad_input", "not_an_image", outcome.words(messages.NOT_A_CLIP))
            return
        size, upscale = self._output_size, True
        if self._model_slots.waiting > self._upscale_backlog and style.output_size is not None:
            # A burst: the same size, resized instead of drawn by the upscaler, so the line moves (UPSCALE_BACKLOG).
            size, upscale = size or style.output_size, False
            metrics.UPSCALER_SKIPPED.labels(style.name).inc()
        async with self._model_slots:
            result = await self._stylizer.stylize(
                style.name, data, size=size, fmt="jpeg", compare=compare, upscale=upscale
            )
        outcome.status, outcome.version, outcome.faces = "ok", result.version, result.faces
        caption = outcome.words(messages.RESULT_CAPTION, title=_title(outcome.words, style))
        if result.faces and result.faces > 1:
            caption += outcome.words(messages.FACES_DRAWN, count=result.faces)
        outcome.reply = Reply(
            caption,
            image=result.image,
            content_type=result.content_type,
        )

    async def _draw_clip(
        self, style: StyleInfo, data: bytes, shape: inputs.Shape, outcome: _Outcome, progress: Progress | None
    ) -> None:
        """An animated GIF or a video, frame by frame: each frame takes a model slot for its own
        request only, so photos that arrive meanwhile are drawn between two frames.

        At most `clips_in_flight` clips are decoded and held at once (the others wait in line).
        Decoding runs in a low-priority thread (seconds of CPU for a long video, yielding to photos)
        and stops at the next frame when nobody waits any more (the page closed: the request is
        cancelled)."""
        async with self._clip_slots:
            stop = threading.Event()
            try:
                clip = await animation.in_background(animation.decode, data, self._animation_limits, shape=shape, stop=stop)
            finally:
                stop.set()  # a cancelled wait leaves the thread running: this ends it
            outcome.input_pixels = clip.size[0] * clip.size[1]
            outcome.frames, outcome.seconds = len(clip.frames), round(clip.duration, 3)
            result = await animation.draw(
                self._stylizer, style.name, clip, size=self._output_size, progress=progress, turns=self._model_slots
            )
        outcome.status, outcome.version, outcome.faces = "ok", result.version, result.faces
        outcome.reply = Reply(
            outcome.words(messages.RESULT_CAPTION, title=_title(outcome.words, style)),
            image=result.image,
            content_type=result.content_type,
            animated=clip.kind,
            sound=clip.audio,
        )

    # Styles -----------------------------------------------------------------

    async def _catalogue(self) -> dict[str, StyleInfo]:
        """What is deployed, by name: the only source of style names.

        Asked of the runtime at most every `CATALOGUE_TTL_S`: on TorchServe the
        listing queries every model's handler, which would otherwise double
        the workers' load (a describe per model for every photo).
        """
        async with self._catalogue_lock:
            if time.monotonic() >= self._catalogue_expires:
                self._catalogue_cache = {s.name: s for s in await self._stylizer.styles()}
                self._catalogue_expires = time.monotonic() + CATALOGUE_TTL_S
            return self._catalogue_cache

    async def _current_style(
        self, request: Request, catalogue: dict[str, StyleInfo]
    ) -> StyleInfo | None:
        """The user's saved style if still deployed, else the default, else the first deployed.

        Remembered from earlier requests when possible; else the database is
        asked for at most `DB_DEADLINE_S`, and a down or hung one means the default.
        """
        user = (request.platform, request.user_id)
        known, saved = self.saved_styles.get(user)
        if not known:
            await self._within_deadline(("read", *user), self._read_style(request), request)
            known, saved = self.saved_styles.get(user)
        if not known:
            logger.warning("style of %s:%s unknown (database slow or down): the default", *user)
        for name in (saved, self._default_style):
            if name in catalogue:
                return catalogue[name]
        return next(iter(catalogue.values()), None)


def words_for(request: Request) -> i18n.Words:
    """The words `request`'s user reads: their /language choice, else their platform's language."""
    return i18n.words(request.chosen_language or request.language)


def experimental_note(words: i18n.Words, style: StyleInfo) -> str | None:
    """One line saying why a style is experimental (its live version is below its bar), or None."""
    short = style.experimental
    return None if short is None else words(messages.EXPERIMENTAL[short.figure], value=short.value, bar=short.bar)


def _title(words: i18n.Words, style: StyleInfo) -> str:
    """A style's title in the user's language."""
    return words.style(style.name, style.title, style.description)[0]


def _unreachable(error: StylizeError, words: i18n.Words) -> Reply:
    """The runtime could not say which styles there are (TorchServe unreachable): serving's words."""
    return Reply(refusal(error, words))


def refusal(error: StylizeError, words: i18n.Words) -> str:
    """Serving's refusal in the user's language: by its code (`messages.REFUSALS`, filled in with
    its params), else by its exact words where the catalogue lists them, else its English."""
    template = messages.REFUSALS.get(error.code)
    needed = {field.partition(":")[0] for field in i18n.placeholders(template or "")}
    if template is not None and needed <= error.params.keys():  # else the code's words lack their values
        return words(template, **error.params)
    return words(error.message) if error.message else words(messages.ERROR)


def every(seconds: float, show: Progress, clock: Callable[[], float] = time.monotonic) -> Progress:
    """`show`, passed at most one update per `seconds` (chats rate-limit message edits); the first
    comes `seconds` after the start, so a short clip shows no progress at all."""
    last = clock()

    async def spaced(done: int, total: int) -> None:
        nonlocal last
        if done < total and clock() - last >= seconds:
            last = clock()
            await show(done, total)

    return spaced
