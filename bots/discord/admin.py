"""Discord slash commands for admins, and everyone's /privacy and /forget, over the core.

The admin commands are hidden from members without the Administrator
permission (`default_permissions`), and the core still checks ADMIN_IDS: a
server's administrators are not necessarily the bot's. Each command defers
(deploys and charts take longer than Discord's 3 s) and answers only the asker.
"""

from __future__ import annotations

import discord
from discord import app_commands
from discord.ext import commands

from bots.core import Core
from bots.discord.answers import forward


async def _privately(core: Core, interaction: discord.Interaction, text: str) -> None:
    """Defer ("thinking...", seen only by the asker), then answer as the core says."""
    await interaction.response.defer(thinking=True, ephemeral=True)
    await forward(core, interaction, text.strip())


ADMINS_ONLY = app_commands.default_permissions(administrator=True)


class AdminCog(commands.Cog):
    """/stats, /deploy ...: the chat commands of the README's Admin section."""

    def __init__(self, core: Core) -> None:
        self._core = core

    @ADMINS_ONLY
    @app_commands.command(name="stats", description="Requests per style per day, success rate, latency")
    async def stats(self, interaction: discord.Interaction, days: int | None = None) -> None:
        """The usage chart and summary."""
        await _privately(self._core, interaction, f"/stats {days or ''}")

    @ADMINS_ONLY
    @app_commands.command(name="models", description="Each style's versions and its default")
    async def models(self, interaction: discord.Interaction) -> None:
        """Deployed versions, who deployed them and when."""
        await _privately(self._core, interaction, "/models")

    @ADMINS_ONLY
    @app_commands.command(name="deploy", description="Make a model-store version a style's default")
    async def deploy(self, interaction: discord.Interaction, style: str, version: str) -> None:
        """Load, check on a sample image, then switch."""
        await _privately(self._core, interaction, f"/deploy {style} {version}")

    @ADMINS_ONLY
    @app_commands.command(name="rollback", description="Make the previous version the default again")
    async def rollback(self, interaction: discord.Interaction, style: str) -> None:
        """Back one deployment."""
        await _privately(self._core, interaction, f"/rollback {style}")

    @ADMINS_ONLY
    @app_commands.command(name="retrain", description="Queue a training job for a pair, e.g. selfie2anime")
    @app_commands.rename(from_version="from")
    async def retrain(
        self, interaction: discord.Interaction, pair: str, iterations: int | None = None,
        from_version: str | None = None, deploy: bool = False,
    ) -> None:
        """A row in training_jobs for the training worker."""
        text = f"/retrain {pair} {iterations or ''}"
        if from_version:
            text += f" from {from_version}"
        await _privately(self._core, interaction, text + (" deploy" if deploy else ""))

    @ADMINS_ONLY
    @app_commands.command(name="jobs", description="The latest training jobs")
    async def jobs(self, interaction: discord.Interaction) -> None:
        """Jobs with their progress."""
        await _privately(self._core, interaction, "/jobs")

    @ADMINS_ONLY
    @app_commands.command(name="cancel", description="Cancel a training job")
    async def cancel(self, interaction: discord.Interaction, job: int) -> None:
        """Queued: at once; running: at its next heartbeat."""
        await _privately(self._core, interaction, f"/cancel {job}")


class PrivacyCog(commands.Cog):
    """What is stored about users, and deleting it: for everyone."""

    def __init__(self, core: Core) -> None:
        self._core = core

    @app_commands.command(name="privacy", description="What this bot stores about you")
    async def privacy(self, interaction: discord.Interaction) -> None:
        """Photos are never kept."""
        await forward(self._core, interaction, "/privacy")

    @app_commands.command(name="forget", description="Delete everything this bot stores about you")
    async def forget(self, interaction: discord.Interaction) -> None:
        """The user's row and usage records."""
        await forward(self._core, interaction, "/forget")
