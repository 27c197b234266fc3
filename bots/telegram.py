"""The Telegram front end: python-telegram-bot updates in, the core's replies out."""

from __future__ import annotations

import asyncio
import logging
import mimetypes
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import replace
from functools import partial
from typing import Literal

import httpx
from telegram import (
    Animation,
    Bot,
    Chat,
    Document,
    File,
    InlineKeyboardButton,
    InlineKeyboardMarkup,
    Message,
    PhotoSize,
    Update,
    Video,
    VideoNote,
)
from telegram.constants import ChatAction
from telegram.error import TelegramError
from telegram.ext import (
    Application,
    CallbackQueryHandler,
    CommandHandler,
    ContextTypes,
    MessageHandler,
    filters,
)

from bots import i18n, messages, webhook
from bots.announce import JobAnnouncer
from bots.core import Attachment, Core, LanguageButton, Progress, Reply, Request, TooBig, every, words_for
from bots.limits import ChatLimits
from bots.resources import SharedCore
from config import Settings

logger = logging.getLogger(__name__)

PLATFORM = "telegram"
ACTION_REPEAT_S = 4.0  # Telegram shows a chat action for 5 s
DOWNLOAD_TIMEOUT_S = 60.0
PROGRESS_EVERY_S = 3.0  # Telegram rate-limits edits: "drawing frame N of M" changes at most this often
CAPTION_LIMIT = 1024  # characters in a photo's caption
# Private chats: every photo, file, GIF (Telegram delivers those as MP4 animations), video or video
# message. Groups, where privacy mode (the default) delivers only commands and replies to the bot: one
# captioned /style (for us), or /style replying to one.
MEDIA = filters.PHOTO | filters.Document.ALL | filters.ANIMATION | filters.VIDEO | filters.VIDEO_NOTE
PICTURES = MEDIA & (
    filters.ChatType.PRIVATE | (filters.ChatType.GROUPS & filters.CaptionRegex(r"^/style(@\w+)?(\s|$)"))
)
# How an answer goes back: in kind with what was sent (a file as a file, a GIF as a GIF).
Kind = Literal["photo", "animation", "video", "document"]
STYLE_REPLY = filters.ChatType.GROUPS & filters.REPLY
LANGUAGE_BUTTON = "language:"  # a button's data: "language:ru"; any other is a style's name (names have no ":")


def _core(context: ContextTypes.DEFAULT_TYPE) -> Core:
    return context.bot_data["core"]


def _request(
    update: Update, text: str = "", attachment: Attachment | None = None, progress: Progress | None = None
) -> Request:
    assert update.effective_user is not None and update.effective_chat is not None
    return Request(
        platform=PLATFORM,
        user_id=str(update.effective_user.id),
        chat_id=str(update.effective_chat.id),
        text=text,
        attachment=attachment,
        progress=progress,
        language=update.effective_user.language_code,  # the user's Telegram app language, e.g. "ru"
    )


def _keyboard(reply: Reply) -> InlineKeyboardMarkup | None:
    """One button per style (or language); the user's current one is ticked."""
    if not reply.buttons:
        return None
    return InlineKeyboardMarkup(
        [
            [
                InlineKeyboardButton(
                    ("✓ " if b.selected else "") + b.label,
                    callback_data=LANGUAGE_BUTTON + b.language if isinstance(b, LanguageButton) else b.style,
                )
            ]
            for b in reply.buttons
        ]
    )


async def _send(message: Message, reply: Reply, *, as_document: bool) -> None:
    """Answer in kind: a file for a file, a video for a video with sound, an animation for a GIF
    or a silent video (Telegram shows it as a GIF), a photo for a photo, else text (with buttons);
    /styles: the picture of every style's before and after, the list and buttons its caption."""
    suffix = mimetypes.guess_extension(reply.content_type or "") or ""
    if reply.image is None:
        await message.reply_text(reply.text, reply_markup=_keyboard(reply))
    elif reply.buttons and len(reply.text) <= CAPTION_LIMIT:
        await message.reply_photo(reply.image, caption=reply.text, reply_markup=_keyboard(reply))
    elif reply.buttons:  # a list too long for a caption follows its picture
        await message.reply_photo(reply.image)
        await message.reply_text(reply.text, reply_markup=_keyboard(reply))
    elif as_document:
        await message.reply_document(reply.image, filename=f"toonbot{suffix}", caption=reply.text)
    elif reply.animated is not None and reply.sound:
        await message.reply_video(
            reply.image, filename=f"toonbot{suffix}", caption=reply.text, supports_streaming=True
        )
    elif reply.animated is not None:
        await message.reply_animation(reply.image, filename=f"toonbot{suffix}", caption=reply.text)
    else:
        await message.reply_photo(reply.image, caption=reply.text)


@asynccontextmanager
async def _showing(chat: Chat, action: str) -> AsyncIterator[None]:
    """Keep "uploading photo..." on screen for as long as the block runs."""

    async def repeat() -> None:
        try:
            while True:
                await chat.send_action(action)
                await asyncio.sleep(ACTION_REPEAT_S)
        except TelegramError as error:  # only a courtesy: never fail the photo over it
            logger.debug("chat action stopped: %s", error)

    task = asyncio.create_task(repeat())
    try:
        yield
    finally:
        task.cancel()


def _for_us(text: str, context: ContextTypes.DEFAULT_TYPE) -> bool:
    """False for "/help@otherbot": in a group, a command addressed to another bot."""
    _, _, addressee = text.split(" ", 1)[0].partition("@")
    return not addressee or addressee.lower() == context.bot.username.lower()


async def on_text(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """Commands (and, in private chats, plain text) go to the core as typed."""
    message = update.effective_message
    assert message is not None and message.text is not None
    if not _for_us(message.text, context):
        return
    reply = await _core(context).handle(_request(update, message.text))
    await _send(message, reply, as_document=False)


async def on_image(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """A photo, GIF, video or file (in a group: captioned /style): the core checks, fetches and draws it."""
    message = update.effective_message
    assert message is not None
    if _for_us(message.caption or "", context):
        await _draw(update, context, message, message.caption or "")


async def on_style_reply(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """/style [NAME] replying to a photo in a group draws that photo (NAME: this once)."""
    message = update.effective_message
    assert message is not None and message.text is not None
    replied = message.reply_to_message
    if replied is None or replied.forum_topic_created is not None:  # a topic's messages "reply" to its start
        await on_text(update, context)
    elif _media(replied) is not None:
        await _draw(update, context, replied, message.text)
    else:
        words = words_for(await _core(context).localise(_request(update)))
        await message.reply_text(words(messages.NO_PICTURE_IN_REPLY))


Media = PhotoSize | Animation | Video | VideoNote | Document


def _media(picture: Message) -> tuple[Media, str, Kind] | None:
    """(the file to fetch, its declared type, what kind of message it came in), or None: no picture.

    A GIF arrives as an MP4 `animation` (Telegram converts it), with `document` set as well."""
    if picture.photo:
        return picture.photo[-1], "image/jpeg", "photo"
    if picture.animation:
        return picture.animation, picture.animation.mime_type or "video/mp4", "animation"
    if picture.video:
        return picture.video, picture.video.mime_type or "video/mp4", "video"
    if picture.video_note:
        return picture.video_note, "video/mp4", "video"
    if picture.document:
        return picture.document, picture.document.mime_type or "", "document"
    return None


ACTIONS: dict[Kind, str] = {
    "photo": ChatAction.UPLOAD_PHOTO, "animation": ChatAction.UPLOAD_VIDEO,
    "video": ChatAction.UPLOAD_VIDEO, "document": ChatAction.UPLOAD_DOCUMENT,
}


async def _draw(update: Update, context: ContextTypes.DEFAULT_TYPE, picture: Message, text: str) -> None:
    """Draw `picture`'s photo, clip or file as `text` asks, answering the message that asked, in kind."""
    message = update.effective_message
    media = _media(picture)
    assert message is not None and media is not None
    source, content_type, kind = media

    async def read() -> bytes:
        return await download(await source.get_file(), _core(context).max_upload_bytes)

    request = await _core(context).localise(_request(update, text, Attachment(content_type, source.file_size, read)))
    async with _progress(message, words_for(request)) as progress:
        request = replace(request, progress=progress)
        if message.chat.type == Chat.PRIVATE:
            async with _showing(message.chat, ACTIONS[kind]):
                reply = await _core(context).handle(request)
        else:
            reply = await _in_group(context, request, ACTIONS[kind], message.chat)
    await _send(message, reply, as_document=kind == "document")


@asynccontextmanager
async def _progress(message: Message, words: i18n.Words) -> AsyncIterator[Progress]:
    """While a clip is drawn: one message, "Drawing frame 120 of 300…", edited at most every
    `PROGRESS_EVERY_S` and deleted when the block ends (a photo, or a short clip, shows none)."""
    shown: Message | None = None

    async def show(done: int, total: int) -> None:
        nonlocal shown
        text = words(messages.DRAWING_FRAMES, done=done, total=total)
        try:
            if shown is None:
                shown = await message.reply_text(text)
            else:
                await shown.edit_text(text)
        except TelegramError as error:  # only a courtesy: never fail the clip over it
            logger.debug("progress not shown: %s", error)

    try:
        yield every(PROGRESS_EVERY_S, show)
    finally:
        if shown is not None:
            try:
                await shown.delete()
            except TelegramError as error:
                logger.debug("progress message not deleted: %s", error)


async def _in_group(context: ContextTypes.DEFAULT_TYPE, request: Request, action: str, chat: Chat) -> Reply:
    """The core's answer within the group's share (`CHAT_REQUESTS_PER_MINUTE`, `CHAT_MAX_IN_FLIGHT`)."""
    limits: ChatLimits = context.bot_data["chat_limits"]
    async with _showing(chat, action), limits.share(chat.id) as share:
        if share.refusal is not None:
            return Reply(words_for(request)(messages.CHAT_SLOW_DOWN, limit=limits.per_minute), problem="too_many")
        reply = await _core(context).handle(request)
        share.answered(reply.problem)
        return reply


async def download(file: File, limit: int) -> bytes:
    """The file's bytes, streamed and abandoned one chunk past `limit` (`TooBig`).

    Telegram does not always say a file's size, and a self-hosted Bot API
    server serves files up to 2 GB: the size is known only by reading.
    """
    if file.file_size is not None and file.file_size > limit:
        raise TooBig
    assert file.file_path is not None
    data = bytearray()
    try:
        async with (
            httpx.AsyncClient(timeout=DOWNLOAD_TIMEOUT_S) as client,
            client.stream("GET", file.file_path) as response,
        ):
            response.raise_for_status()
            async for chunk in response.aiter_bytes():
                data += chunk
                if len(data) > limit:
                    raise TooBig
    except httpx.HTTPError as error:  # its message holds the file URL, and the URL the bot's token
        raise TelegramError(f"file download failed: {type(error).__name__}") from None
    return bytes(data)


async def on_button(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """A style (or language) button switches the user's style, as /style NAME does (/language CODE);
    the list is replaced by the confirmation."""
    query = update.callback_query
    assert query is not None
    data = query.data or ""
    if data.startswith(LANGUAGE_BUTTON):
        reply = await _core(context).set_language(_request(update), data.removeprefix(LANGUAGE_BUTTON))
    else:
        reply = await _core(context).set_style(_request(update), data)
    await query.answer()
    if isinstance(query.message, Message) and query.message.photo:  # the list was the styles' picture's caption
        await query.edit_message_caption(reply.text, reply_markup=_keyboard(reply))
    else:
        await query.edit_message_text(reply.text, reply_markup=_keyboard(reply))


async def on_error(update: object, context: ContextTypes.DEFAULT_TYPE) -> None:
    """Log the failure with its traceback, then tell the user something short.

    The update is named by its ids only: its text, captions and names stay out of the log.
    """
    logger.error("%s failed", describe_update(update), exc_info=context.error)
    if isinstance(update, Update) and update.effective_message is not None:
        user = update.effective_user
        words = i18n.words(user.language_code if user else None)
        await update.effective_message.reply_text(words(messages.ERROR))


def describe_update(update: object) -> str:
    """"update 12 (message, chat 34, user 56)": enough to find it, nothing a user wrote."""
    if not isinstance(update, Update):
        return f"a {type(update).__name__} update"
    kind = next((k for k in Update.ALL_TYPES if getattr(update, k, None) is not None), "unknown")
    chat = update.effective_chat.id if update.effective_chat else "-"
    user = update.effective_user.id if update.effective_user else "-"
    return f"update {update.update_id} ({kind}, chat {chat}, user {user})"


async def notify(bot: Bot, chat_id: str, reply: Reply) -> None:
    """A message nobody asked for just now (a training job ended): a picture with a caption, or text."""
    if reply.image is not None:
        await bot.send_photo(int(chat_id), reply.image, caption=reply.text)
    else:
        await bot.send_message(int(chat_id), reply.text)


def build_application(settings: Settings, shared: SharedCore) -> Application:
    """The bot: polling, concurrent updates (the core does the queueing), shared core via hooks."""
    assert settings.telegram_token is not None

    async def post_init(app: Application) -> None:
        app.bot_data["core"] = await shared.open()
        app.bot_data["chat_limits"] = shared.chat_limits(PLATFORM)
        if shared.admin is not None:
            announcer = JobAnnouncer(shared.admin, PLATFORM, partial(notify, app.bot), poll_s=settings.jobs_poll_s)
            app.bot_data["announcer"] = asyncio.create_task(announcer.run())

    async def post_shutdown(app: Application) -> None:
        if (announcer := app.bot_data.pop("announcer", None)) is not None:
            announcer.cancel()
            await asyncio.gather(announcer, return_exceptions=True)
        if app.bot_data.pop("core", None) is not None:
            await shared.close()

    builder = (
        Application.builder()
        .token(settings.telegram_token.get_secret_value())
        .concurrent_updates(True)
        .post_init(post_init)
        .post_shutdown(post_shutdown)
    )
    if settings.telegram_api_url:  # a self-hosted Bot API server
        url = settings.telegram_api_url.rstrip("/")
        builder = builder.base_url(f"{url}/bot").base_file_url(f"{url}/file/bot")
    app = builder.build()
    app.add_handler(MessageHandler(PICTURES, on_image))
    app.add_handler(CommandHandler("style", on_style_reply, STYLE_REPLY))
    chatter = filters.COMMAND | (filters.TEXT & filters.ChatType.PRIVATE)  # groups: commands only
    app.add_handler(MessageHandler(chatter, on_text))
    app.add_handler(CallbackQueryHandler(on_button))
    app.add_error_handler(on_error)
    return app


async def serve(settings: Settings, shared: SharedCore, stop: asyncio.Event) -> None:
    """`run_polling`'s (or `run_webhook`'s) steps on the running loop, sharing the process until `stop`."""
    app = build_application(settings, shared)
    assert app.updater is not None and app.post_init and app.post_shutdown
    async with AsyncExitStack() as stack:  # undoes exactly the steps that happened, in reverse
        await app.initialize()
        stack.push_async_callback(app.post_shutdown, app)
        stack.push_async_callback(app.shutdown)
        await app.post_init(app)
        await app.start()
        stack.push_async_callback(app.stop)
        if settings.telegram_webhook_url:  # several replicas behind a balancer
            await webhook.start(app, settings)
        else:
            await app.updater.start_polling()
            logger.info("Telegram bot @%s is polling", app.bot.username)
        stack.push_async_callback(app.updater.stop)
        await stop.wait()
