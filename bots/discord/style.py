"""Everyone's slash commands (/style, /styles, /mystyle, /help) and images sent in a DM or with a mention."""

from __future__ import annotations

import re

import discord
from discord import app_commands
from discord.ext import commands

from bots import messages
from bots.core import Attachment, Core, Reply, Request
from bots.discord.answers import PLATFORM, answer, deferring_read, forward, image_file, request

MAX_CHOICES = 25  # Discord shows at most 25 autocomplete choices


class StyleCog(commands.Cog):
    """What every user can do. More commands join as another cog over the same core, added in
    `ToonBot.setup_hook`, each answering through `answers.forward`."""

    def __init__(self, bot: commands.Bot, core: Core) -> None:
        self._bot = bot
        self._core = core

    async def style_choices(
        self, interaction: discord.Interaction, current: str
    ) -> list[app_commands.Choice[str]]:
        """The deployed styles (the list /styles shows) matching what the user has typed."""
        reply = await self._core.handle(request(interaction, "/styles"))
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
        attachment = Attachment(image.content_type or "", image.size, deferring_read(interaction, image))
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
        await answer(interaction, Reply(messages.DISCORD_HELP))

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
        asked = Request(
            platform=PLATFORM,
            user_id=str(message.author.id),
            chat_id=str(message.channel.id),
            text=text,
            attachment=Attachment(image.content_type or "", image.size, image.read),
        )
        async with message.channel.typing():
            reply = await self._core.handle(asked)
        await message.reply(reply.text, file=image_file(reply) if reply.image is not None else None)
