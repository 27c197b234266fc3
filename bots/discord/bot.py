"""The Discord bot: discord.py's client with the cogs over the shared core, and `serve`."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import discord
import yarl
from discord import app_commands
from discord.ext import commands

from bots import i18n, messages
from bots.announce import JobAnnouncer
from bots.core import Core, Reply
from bots.discord.admin import AdminCog, PrivacyCog
from bots.discord.answers import PLATFORM, answer, image_file
from bots.discord.style import StyleCog
from bots.resources import SharedCore
from config import Settings

logger = logging.getLogger(__package__)  # one logger for the whole front end: "bots.discord"


class Translator(app_commands.Translator):
    """Slash command descriptions (and choices) in each Discord locale we speak; names stay English."""

    async def translate(
        self, string: app_commands.locale_str, locale: discord.Locale, context: app_commands.TranslationContextTypes
    ) -> str | None:
        """The catalogue's words for `string` in `locale`; None (Discord shows the English) elsewhere."""
        words = i18n.words(locale.value)
        if words.locale == i18n.SOURCE:
            return None
        translated = words(string.message)
        return translated if translated != string.message else None


class ToonTree(app_commands.CommandTree):
    """The one error handler of every slash command."""

    async def on_error(self, interaction: discord.Interaction, error: app_commands.AppCommandError) -> None:
        """Log with the traceback, then tell the user, privately."""
        command = interaction.command.qualified_name if interaction.command else "?"
        logger.error("/%s failed", command, exc_info=error)
        try:
            await answer(interaction, Reply(i18n.words(interaction.locale.value)(messages.ERROR)))
        except discord.HTTPException as answer_error:  # e.g. the interaction has expired
            logger.warning("could not tell the user /%s failed: %s", command, answer_error)


class ToonBot(commands.AutoShardedBot):
    """Slash commands only (no text prefix); the shared core opens in `setup_hook` and closes in `close`.

    Sharded: every shard Discord recommends in this process, or DISCORD_SHARD_IDS of DISCORD_SHARD_COUNT
    when several processes share the servers (each syncs the same global commands: harmless)."""

    def __init__(self, settings: Settings, shared: SharedCore) -> None:
        # DMs and messages that mention the bot carry their attachments without the privileged
        # message-content intent, so the default intents are enough; but the message a mention
        # replies to is shown without its images unless the bot asks for that intent.
        discord.VoiceClient.warn_nacl = discord.VoiceClient.warn_dave = False  # no voice, no warnings
        intents = discord.Intents.default()
        intents.message_content = settings.discord_message_content
        super().__init__(
            command_prefix=(), help_command=None, intents=intents, tree_cls=ToonTree,
            shard_count=settings.discord_shard_count, shard_ids=settings.discord_shard_ids or None,
        )
        self._shared = shared
        self._dev_guild = settings.discord_dev_guild
        self._jobs_poll_s = settings.jobs_poll_s
        self._has_admins = bool(settings.admin_ids)
        self._core: Core | None = None
        self._announcer: asyncio.Task[None] | None = None

    async def setup_hook(self) -> None:
        """Open the core, add the commands and sync them (to the dev guild at once, else globally)."""
        self._core = await self._shared.open()
        admin = self._shared.admin
        assert admin is not None  # built with the core
        await self.add_cog(StyleCog(self, self._core, self._shared.chat_limits(PLATFORM)))
        await self.add_cog(PrivacyCog(admin))
        if self._has_admins:  # no ADMIN_IDS: nobody could use them
            await self.add_cog(AdminCog(admin))
        announcer = JobAnnouncer(admin, PLATFORM, self.notify, poll_s=self._jobs_poll_s)
        self._announcer = asyncio.create_task(announcer.run())
        await self.tree.set_translator(Translator())  # before the sync: it sends every locale's descriptions
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
        await channel.send(reply.text, file=image_file(reply) if reply.image is not None else None)

    async def on_error(self, event_method: str, /, *args: Any, **kwargs: Any) -> None:
        """Log an event handler's failure with its traceback; a message gets a short apology."""
        logger.exception("%s failed", event_method)
        if args and isinstance(args[0], discord.Message):
            guild = args[0].guild
            try:
                await args[0].reply(i18n.words(guild.preferred_locale.value if guild else None)(messages.ERROR))
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
