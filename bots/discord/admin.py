"""Discord slash commands for admins, and everyone's /privacy and /forget, over the core.

The admin commands are hidden from members without the Administrator
permission (`default_permissions`), and the core still checks ADMIN_IDS: a
server's administrators are not necessarily the bot's. Each command defers
(deploys and charts take longer than Discord's 3 s) and answers only the asker.
"""

from __future__ import annotations

from collections.abc import Awaitable

import discord
from discord import app_commands
from discord.app_commands import locale_str
from discord.ext import commands

from bots.admin import DEFAULT_ITERATIONS, Admin
from bots.core import Reply
from bots.discord.answers import answer, request


async def _privately(interaction: discord.Interaction, work: Awaitable[Reply]) -> None:
    """Defer ("thinking...", seen only by the asker), then answer with what `work` comes to."""
    await interaction.response.defer(thinking=True, ephemeral=True)
    await answer(interaction, await work)


ADMINS_ONLY = app_commands.default_permissions(administrator=True)


class AdminCog(commands.Cog):
    """/stats, /deploy ...: the chat commands of the README's Admin section, as typed calls."""

    def __init__(self, admin: Admin) -> None:
        self._admin = admin

    @ADMINS_ONLY
    @app_commands.command(name="stats", description=locale_str("Requests per style per day, success rate, latency"))
    async def stats(self, interaction: discord.Interaction, days: int = 7) -> None:
        """The usage chart and summary."""
        await _privately(interaction, self._admin.stats(request(interaction), days))

    @ADMINS_ONLY
    @app_commands.command(name="models", description=locale_str("Each style's versions and its default"))
    async def models(self, interaction: discord.Interaction) -> None:
        """Deployed versions, who deployed them and when."""
        await _privately(interaction, self._admin.models(request(interaction)))

    @ADMINS_ONLY
    @app_commands.command(name="deploy", description=locale_str("Make a model-store version a style's default"))
    async def deploy(self, interaction: discord.Interaction, style: str, version: str, force: bool = False) -> None:
        """Compare with the live version, load, check on a sample image, then switch."""
        await _privately(interaction, self._admin.deploy(request(interaction), style, version, force=force))

    @ADMINS_ONLY
    @app_commands.command(name="rollback", description=locale_str("Make the previous version the default again"))
    async def rollback(self, interaction: discord.Interaction, style: str) -> None:
        """Back one deployment."""
        await _privately(interaction, self._admin.rollback(request(interaction), style))

    @ADMINS_ONLY
    @app_commands.command(name="retrain", description=locale_str("Queue a training job for a pair, e.g. selfie2anime"))
    @app_commands.rename(from_version="from")
    async def retrain(
        self, interaction: discord.Interaction, pair: str, iterations: int = DEFAULT_ITERATIONS,
        from_version: str | None = None, deploy: bool = False,
    ) -> None:
        """A row in training_jobs for the training worker."""
        asked = request(interaction)
        await _privately(
            interaction, self._admin.retrain(asked, pair, iterations, from_version=from_version, deploy=deploy)
        )

    @ADMINS_ONLY
    @app_commands.command(name="jobs", description=locale_str("The latest training jobs"))
    async def jobs(self, interaction: discord.Interaction) -> None:
        """Jobs with their progress."""
        await _privately(interaction, self._admin.jobs(request(interaction)))

    @ADMINS_ONLY
    @app_commands.command(name="cancel", description=locale_str("Cancel a training job"))
    async def cancel(self, interaction: discord.Interaction, job: int) -> None:
        """Queued: at once; running: at its next heartbeat."""
        await _privately(interaction, self._admin.cancel(request(interaction), job))


class PrivacyCog(commands.Cog):
    """What is stored about users, and deleting it: for everyone."""

    def __init__(self, admin: Admin) -> None:
        self._admin = admin

    @app_commands.command(name="privacy", description=locale_str("What this bot stores about you"))
    async def privacy(self, interaction: discord.Interaction) -> None:
        """Photos are never kept."""
        await answer(interaction, await self._admin.privacy(request(interaction)))

    @app_commands.command(name="forget", description=locale_str("Delete everything this bot stores about you"))
    async def forget(self, interaction: discord.Interaction) -> None:
        """The user's row and usage records."""
        await answer(interaction, await self._admin.forget(request(interaction)))
