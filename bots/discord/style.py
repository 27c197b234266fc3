"""Everyone's slash commands (/style, /styles, /mystyle, /language, /help), the Apps menu's Restyle, and
images sent in a DM or with a mention (or the image of the message a mention replies to).

Command names stay English; descriptions are `locale_str`, which `bot.Translator` words in each
user's Discord language."""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable
from dataclasses import replace
from functools import partial

import discord
from discord import app_commands
from discord.app_commands import locale_str
from discord.ext import commands

from bots import i18n, messages
from bots.core import AUTO, Attachment, Core, Reply, Request, every, words_for
from bots.discord import answers
from bots.discord.answers import PLATFORM, answer, defer, deferring_read, image_file, request
from bots.limits import ChatLimits
from serving.api import StylizeError

logger = logging.getLogger(__name__)

MAX_CHOICES = 25  # Discord shows at most 25 autocomplete choices


def _image(attachments: list[discord.Attachment]) -> discord.Attachment | None:
    """The first image or video (a GIF, an MP4), else the first file (for the core to refuse), else None."""
    return next(
        (a for a in attachments if (a.content_type or "").startswith(("image/", "video/"))),
        next(iter(attachments), None),
    )


async def _replied_to(message: discord.Message) -> discord.Message | None:
    """The message `message` replies to, as the gateway sent it or else fetched; None when it is gone."""
    reference = message.reference
    assert reference is not None
    if isinstance(reference.resolved, discord.Message):
        return reference.resolved
    if isinstance(reference.resolved, discord.DeletedReferencedMessage) or reference.message_id is None:
        return None
    try:
        return reference.cached_message or await message.channel.fetch_message(reference.message_id)
    except (discord.NotFound, discord.Forbidden):
        return None


class ProgressReply:
    """A clip's progress as a reply to the message that sent it, "Drawing frame N of M…", which the
    answer then replaces (a photo, or a clip too short to show progress, gets a plain reply)."""

    def __init__(self, message: discord.Message, words: i18n.Words) -> None:
        self._message = message
        self._words = words
        self._shown: discord.Message | None = None

    async def show(self, done: int, total: int) -> None:
        """Post or edit the progress (only a courtesy: a failure is logged, never the clip's end)."""
        text = self._words(messages.DRAWING_FRAMES, done=done, total=total)
        try:
            if self._shown is None:
                self._shown = await self._message.reply(text)
            else:
                await self._shown.edit(content=text)
        except discord.HTTPException as error:
            logger.debug("progress not shown: %s", error)

    async def answer(self, reply: Reply) -> None:
        """The core's answer, in place of the progress if there was any."""
        guild = self._message.guild
        limit = guild.filesize_limit if guild else answers.DM_FILESIZE_LIMIT
        reply = answers.deliverable(reply, limit, self._words)
        file = image_file(reply) if reply.image is not None else None
        if self._shown is None:
            await self._message.reply(reply.text, file=file)
        else:
            await self._shown.edit(content=reply.text, attachments=[file] if file is not None else [])


class StyleCog(commands.Cog):
    """What every user can do. More commands join as another cog over the same core, added in
    `ToonBot.setup_hook`, each answering through `answers.answer`."""

    def __init__(self, bot: commands.Bot, core: Core, chat_limits: ChatLimits) -> None:
        self._bot = bot
        self._core = core
        self._chat_limits = chat_limits  # per server: one busy server cannot take every model slot
        # A message's Apps menu. Discord shows the bot that message whole, with its images, even
        # without the Message Content intent; a context menu cannot be a cog method, so it is added here.
        self._restyle = app_commands.ContextMenu(name="Restyle", callback=self.restyle)

    async def cog_load(self) -> None:
        """Add the Apps menu entry with the cog's slash commands."""
        self._bot.tree.add_command(self._restyle)

    async def cog_unload(self) -> None:
        """Take the Apps menu entry away with the cog."""
        self._bot.tree.remove_command(self._restyle.name, type=self._restyle.type)

    async def style_choices(
        self, interaction: discord.Interaction, current: str
    ) -> list[app_commands.Choice[str]]:
        """The deployed styles (the list /styles shows) matching what the user has typed."""
        try:
            found, _ = await self._core.styles(request(interaction))
        except StylizeError:  # no list to offer: the command itself will say why
            return []
        typed = current.strip().lower()
        words = i18n.words(interaction.locale.value)
        titles = {s.name: words.style(s.name, s.title, s.description)[0] for s in found}
        return [
            app_commands.Choice(name=titles[s.name], value=s.name)
            for s in found
            if typed in s.name.lower() or typed in s.title.lower() or typed in titles[s.name].lower()
        ][:MAX_CHOICES]

    @app_commands.command(name="style", description=locale_str("Restyle a photo, a GIF or a short MP4"))
    @app_commands.describe(
        image=locale_str("The photo, GIF or MP4 to restyle"), style=locale_str("Use this style just this once"),
        compare=locale_str("Put the original beside the result (photos)"),
    )
    @app_commands.autocomplete(style=style_choices)
    async def style(
        self, interaction: discord.Interaction, image: discord.Attachment, style: str | None = None,
        compare: bool = False,
    ) -> None:
        """Draw the attached image in the chosen style, or the user's own."""
        await self._draw_for(interaction, image, style=style or None, compare=compare)

    async def restyle(self, interaction: discord.Interaction, message: discord.Message) -> None:
        """Apps → Restyle on a message: draw its image in the user's style."""
        image = _image(message.attachments)
        if image is None:
            words = words_for(await self._core.localise(request(interaction)))
            await answer(interaction, Reply(words(messages.DISCORD_NO_IMAGE_IN_MESSAGE)))
        else:
            await self._draw_for(interaction, image)

    async def _draw_for(
        self, interaction: discord.Interaction, image: discord.Attachment, *, style: str | None = None,
        compare: bool = False,
    ) -> None:
        """Draw `image` in `style` (None: the user's), "thinking..." from when drawing (or waiting for a
        turn) starts."""
        attachment = Attachment(image.content_type or "", image.size, deferring_read(interaction, image))
        asked = await self._core.localise(replace(request(interaction, attachment), style=style, compare=compare))
        show = partial(answers.show_progress, interaction, words_for(asked))
        asked = replace(asked, progress=every(answers.PROGRESS_EVERY_S, show))
        drawn = await self._draw(interaction.guild_id, asked, lambda: defer(interaction))
        await answer(interaction, drawn, words_for(asked))

    @app_commands.command(name="styles", description=locale_str("List the styles"))
    async def styles(self, interaction: discord.Interaction) -> None:
        """The deployed styles, the user's marked, with what each does."""
        asked = await self._core.localise(request(interaction))
        await answers.show_styles(interaction, await self._core.list_styles(asked), words_for(asked))

    @app_commands.command(name="mystyle", description=locale_str("Choose your style for every photo"))
    @app_commands.describe(name=locale_str("The style to use from now on"))
    @app_commands.autocomplete(name=style_choices)
    async def mystyle(self, interaction: discord.Interaction, name: str) -> None:
        """Switch the user's style for good (Telegram's /style NAME)."""
        await answer(interaction, await self._core.set_style(request(interaction), name))

    @app_commands.command(name="language", description=locale_str("Choose the language I answer you in"))
    @app_commands.describe(language=locale_str("A language, or the one your Discord app uses"))
    @app_commands.choices(
        language=[app_commands.Choice(name=name, value=code) for code, name in i18n.LANGUAGES.items()]
        + [app_commands.Choice(name=locale_str("The language of my Discord app"), value=AUTO)]
    )
    async def language(self, interaction: discord.Interaction, language: str) -> None:
        """Answer this user in `language` from now on (Telegram's /language CODE)."""
        await answer(interaction, await self._core.set_language(request(interaction), language))

    @app_commands.command(name="help", description=locale_str("What this bot does"))
    async def help(self, interaction: discord.Interaction) -> None:
        """Discord's own command list."""
        words = words_for(await self._core.localise(request(interaction)))
        await answer(interaction, Reply(words(messages.DISCORD_HELP)))

    @commands.Cog.listener()
    async def on_message(self, message: discord.Message) -> None:
        """An image in a DM, or with a mention of the bot, is drawn in the user's style (or the one
        named); a mention replying to a message draws that message's image."""
        me = self._bot.user
        if message.author.bot or me is None or (message.guild is not None and me not in message.mentions):
            return
        asked = await self._core.localise(
            Request(
                platform=PLATFORM,
                user_id=str(message.author.id),
                chat_id=str(message.channel.id),
                text=re.sub(rf"<@!?{me.id}>", "", message.content).strip(),
                # A message has no locale: the server's, where it set one (a DM: the /language choice, or English).
                language=message.guild.preferred_locale.value if message.guild else None,
            )
        )
        words = words_for(asked)
        image = _image(message.attachments)
        reference = message.reference
        if image is None and reference is not None and reference.type is discord.MessageReferenceType.reply:
            replied = await _replied_to(message)
            image = _image(replied.attachments) if replied is not None else None
            if image is None:  # Discord hides others' images without the message content intent
                await message.reply(words(messages.DISCORD_NO_PICTURE_IN_REPLY))
                return
        if image is None:
            await message.reply(words(messages.NOT_A_COMMAND))
            return
        shown = ProgressReply(message, words)
        progress = every(answers.PROGRESS_EVERY_S, shown.show)
        attachment = Attachment(image.content_type or "", image.size, image.read)
        asked = replace(await self._style_asked(asked), attachment=attachment, progress=progress)
        async with message.channel.typing():
            reply = await self._draw(message.guild.id if message.guild else None, asked)
        await shown.answer(reply)

    async def _style_asked(self, asked: Request) -> Request:
        """A mention's words as the core reads them: a caption as typed ("/style NAME compare"), or
        a deployed style's bare name ("@toonbot anime2selfie": that style this once); any other
        words are just chatter."""
        if asked.text.startswith("/"):
            return asked
        try:
            found, _ = await self._core.styles(asked)
        except StylizeError:
            found = []
        named = asked.text if asked.text in {s.name for s in found} else None
        return replace(asked, text="", style=named)

    async def _draw(
        self, guild_id: int | None, asked: Request, before_waiting: Callable[[], Awaitable[None]] | None = None
    ) -> Reply:
        """The core's answer; in a server, within the server's share (`CHAT_REQUESTS_PER_MINUTE`,
        `CHAT_MAX_IN_FLIGHT`; `before_waiting` runs before waiting for its turn). A DM is its
        user's own limits' business."""
        if guild_id is None:
            return await self._core.handle(asked)
        async with self._chat_limits.share(guild_id, before_waiting=before_waiting) as share:
            if share.refusal is not None:
                text = words_for(asked)(messages.CHAT_SLOW_DOWN, limit=self._chat_limits.per_minute)
                return Reply(text, problem="too_many")
            reply = await self._core.handle(asked)
            share.answered(reply.problem)
            return reply
