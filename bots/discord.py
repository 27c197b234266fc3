"""The Discord front end: discord.py slash commands (in a cog) and image messages in, the core's replies out.

Pictures come back for everyone to see; every text answer (refusals, lists,
settings, errors) goes only to the asker, as an ephemeral message.
"""

from __future__ import annotations

import asyncio
import io
import logging
import mimetypes
import re
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import Any

import discord
import yarl
from discord import app_commands
from discord.ext import commands

from bots import messages
from bots.announce import JobAnnouncer
from bots.core import Attachment, Core, Reply, Request
from bots.resources import SharedCore
from bots.settings import Settings

logger = logging.getLogger(__name__)

PLATFORM = "discord"
MAX_CHOICES = 25  # Discord shows at most 25 autocomplete choices


def _request(interaction: discord.Interaction, text: str, attachment: Attachment | None = None) -> Request:
    return Request(
        platform=PLATFORM,
        user_id=str(interaction.user.id),
        chat_id=str(interaction.channel_id),
        text=text,
        attachment=attachment,
    )


def _file(reply: Reply) -> discord.File:
    assert reply.image is not None
    suffix = mimetypes.guess_extension(reply.content_type or "") or ""
    return discord.File(io.BytesIO(reply.image), filename=f"toonbot{suffix}")


def _deferring_read(
    interaction: discord.Interaction, image: discord.Attachment
) -> Callable[[], Awaitable[bytes]]:
    """The core fetches a file only once every check has passed: that is when drawing starts,
    so defer there ("thinking...") and a refusal stays one plain ephemeral answer."""

    async def read() -> bytes:
        await interaction.response.defer(thinking=True)
        return await image.read()

    return read


async def forward(
    core: Core, interaction: discord.Interaction, text: str, attachment: Attachment | None = None
) -> None:
    """Ask the core what the command amounts to as typed text (`/styles`, `/style NAME`), and
    answer in kind; commands in other cogs (admin ones, say) can answer the same way."""
    await _answer(interaction, await core.handle(_request(interaction, text, attachment)))


async def _answer(interaction: discord.Interaction, reply: Reply) -> None:
    """The picture in the follow-up for all to see; words for the asker alone."""
    if reply.image is not None:  # drawn, so `read` has deferred
        await interaction.followup.send(reply.text, file=_file(reply))
    elif interaction.response.is_done():
        # A follow-up to a public "thinking..." replaces it publicly: remove it, then answer privately.
        await interaction.delete_original_response()
        await interaction.followup.send(reply.text, ephemeral=True)
    else:
        await interaction.response.send_message(reply.text, ephemeral=True)


class StyleCog(commands.Cog):
    """What every user can do. More commands join as another cog over the same core, added in
    `ToonBot.setup_hook`, each answering through `forward`."""

    def __init__(self, bot: commands.Bot, core: Core) -> None:
        self._bot = bot
        self._core = core

    async def style_choices(
        self, interaction: discord.Interaction, current: str
    ) -> list[app_commands.Choice[str]]:
        """The deployed styles (the list /styles shows) matching what the user has typed."""
        reply = await self._core.handle(_request(interaction, "/styles"))
        typed = current.strip().lower()
        return [
            app_commands.Choice(name=b.label, value=b.style)
            for b in reply.buttons
            if typed in b.style.lower() or typed in b.label.lower()
        ][:MAX_CHOICES]

    @app_commands.command(name="style", description="Restyle a photo")
    @app_commands.describe(image="The photo to restyle", style="Use this style just this once")
    @app_commands.autocomplete(style=style_choices)
    async def style(
        self, interaction: discord.Interaction, image: discord.Attachment, style: str | None = None
    ) -> None:
        """Draw the attached image in the chosen style, or the user's own."""
        attachment = Attachment(image.content_type or "", image.size, _deferring_read(interaction, image))
        await forward(self._core, interaction, f"/style {style}" if style else "", attachment)

    @app_commands.command(name="styles", description="List the styles")
    async def styles(self, interaction: discord.Interaction) -> None:
        """The deployed styles, the user's marked."""
        await forward(self._core, interaction, "/styles")

    @app_commands.command(name="mystyle", description="Choose your style for every photo")
    @app_commands.describe(name="The style to use from now on")
    @app_commands.autocomplete(name=style_choices)
    async def mystyle(self, interaction: discord.Interaction, name: str) -> None:
        """Switch the user's style for good (Telegram's /style NAME)."""
        await forward(self._core, interaction, f"/style {name}")

    @app_commands.command(name="help", description="What this bot does")
    async def help(self, interaction: discord.Interaction) -> None:
        """Discord's own command list."""
        await _answer(interaction, Reply(messages.DISCORD_HELP))

    @commands.Cog.listener()
    async def on_message(self, message: discord.Message) -> None:
        """An image in a DM, or with a mention of the bot, is drawn in the user's style."""
        me = self._bot.user
        if message.author.bot or me is None or (message.guild is not None and me not in message.mentions):
            return
        image = next(
            (a for a in message.attachments if (a.content_type or "").startswith("image/")),
            next(iter(message.attachments), None),  # else the first file, for the core to refuse
        )
        if image is None:
            await message.reply(messages.NOT_A_COMMAND)
            return
        text = re.sub(rf"<@!?{me.id}>", "", message.content).strip()  # "/style NAME" picks one once
        request = Request(
            platform=PLATFORM,
            user_id=str(message.author.id),
            chat_id=str(message.channel.id),
            text=text,
            attachment=Attachment(image.content_type or "", image.size, image.read),
        )
        async with message.channel.typing():
            reply = await self._core.handle(request)
        await message.reply(reply.text, file=_file(reply) if reply.image is not None else None)


class ToonTree(app_commands.CommandTree):
    """The one error handler of every slash command."""

    async def on_error(self, interaction: discord.Interaction, error: app_commands.AppCommandError) -> None:
        """Log with the traceback, then tell the user, privately."""
        command = interaction.command.qualified_name if interaction.command else "?"
        logger.error("/%s failed", command, exc_info=error)
        try:
            await _answer(interaction, Reply(messages.ERROR))
        except discord.HTTPException as answer_error:  # e.g. the interaction has expired
            logger.warning("could not tell the user /%s failed: %s", command, answer_error)


class ToonBot(commands.Bot):
    """Slash commands only (no text prefix); the shared core opens in `setup_hook` and closes in `close`."""

    def __init__(self, settings: Settings, shared: SharedCore) -> None:
        # DMs and messages that mention the bot carry their attachments without the
        # privileged message-content intent, so the default intents are enough.
        discord.VoiceClient.warn_nacl = discord.VoiceClient.warn_dave = False  # no voice, no warnings
        super().__init__(
            command_prefix=(), help_command=None, intents=discord.Intents.default(), tree_cls=ToonTree
        )
        self._shared = shared
        self._dev_guild = settings.discord_dev_guild
        self._jobs_poll_s = settings.jobs_poll_s
        self._has_admins = bool(settings.admin_ids)
        self._core: Core | None = None
        self._announcer: asyncio.Task[None] | None = None

    async def setup_hook(self) -> None:
        """Open the core, add the commands and sync them (to the dev guild at once, else globally)."""
        from bots.discord_admin import AdminCog, PrivacyCog  # they answer through this module's `forward`

        self._core = await self._shared.open()
        await self.add_cog(StyleCog(self, self._core))
        await self.add_cog(PrivacyCog(self._core))
        if self._has_admins:  # no ADMIN_IDS: nobody could use them, so don't list them
            await self.add_cog(AdminCog(self._core))
        if self._shared.admin is not None:
            announcer = JobAnnouncer(self._shared.admin, PLATFORM, self.notify, poll_s=self._jobs_poll_s)
            self._announcer = asyncio.create_task(announcer.run())
        guild = discord.Object(self._dev_guild) if self._dev_guild else None
        if guild is not None:
            self.tree.copy_global_to(guild=guild)
        synced = await self.tree.sync(guild=guild)
        where = f"to server {self._dev_guild}" if guild else "globally (new ones may take a while to show)"
        assert self.user is not None  # logged in before this hook runs
        logger.info("Discord bot @%s: %d slash commands synced %s", self.user.name, len(synced), where)

    async def notify(self, channel_id: str, reply: Reply) -> None:
        """A message nobody asked for just now (a training job ended), in the channel of the request."""
        channel = self.get_partial_messageable(int(channel_id))
        await channel.send(reply.text, file=_file(reply) if reply.image is not None else None)

    async def on_error(self, event_method: str, /, *args: Any, **kwargs: Any) -> None:
        """Log an event handler's failure with its traceback; a message gets a short apology."""
        logger.exception("%s failed", event_method)
        if args and isinstance(args[0], discord.Message):
            try:
                await args[0].reply(messages.ERROR)
            except discord.HTTPException as reply_error:  # e.g. not allowed to write there
                logger.warning("could not tell the user %s failed: %s", event_method, reply_error)

    async def close(self) -> None:
        """Leave the gateway, then release the core (flushing the usage log if we were last)."""
        if self._announcer is not None:
            self._announcer.cancel()
            await asyncio.gather(self._announcer, return_exceptions=True)
        try:
            await super().close()
        finally:
            if self._core is not None:
                self._core = None
                await self._shared.close()


@contextmanager
def _endpoints(settings: Settings) -> Iterator[None]:
    """Point discord.py at another REST API and gateway while the bot runs (its only hooks are
    class attributes, so put them back afterwards)."""
    saved = discord.http.Route.BASE, discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY
    if settings.discord_api_url:
        discord.http.Route.BASE = settings.discord_api_url.rstrip("/")
    if settings.discord_gateway_url:
        discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(settings.discord_gateway_url)
    try:
        yield
    finally:
        discord.http.Route.BASE, discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = saved


async def serve(settings: Settings, shared: SharedCore, stop: asyncio.Event) -> None:
    """Log in, sync the commands and stay on the gateway until `stop` (or until it fails)."""
    assert settings.discord_token is not None
    with _endpoints(settings):
        bot = ToonBot(settings, shared)
        async with bot, asyncio.TaskGroup() as tasks:
            running = tasks.create_task(bot.start(settings.discord_token.get_secret_value()))
            await stop.wait()
            running.cancel()  # at whatever step it is; leaving `async with bot` then closes it all
