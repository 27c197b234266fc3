"""How the Discord front end talks to the core: an interaction in, the core's reply out.

Every cog calls the core's typed methods with its slash options and answers
through `answer`: pictures come back for everyone to see; every text answer
(refusals, lists, settings, errors) goes only to the asker, as an ephemeral
message.
"""

from __future__ import annotations

import io
import logging
import mimetypes
from collections.abc import Awaitable, Callable

import discord

from bots import i18n, messages
from bots.core import Attachment, Progress, Reply, Request

logger = logging.getLogger(__name__)

PLATFORM = "discord"
PROGRESS_EVERY_S = 3.0  # "Drawing frame N of M" changes at most this often (edits are rate-limited)
DM_FILESIZE_LIMIT = 10 * 2**20  # what a bot may upload outside boosted servers
STYLES_PICTURE = "styles.jpg"  # the embed of /styles shows the attachment of this name


def request(
    interaction: discord.Interaction, attachment: Attachment | None = None, progress: Progress | None = None
) -> Request:
    """The core's request for who asked where, in their Discord language (a slash command's options
    go to the typed call)."""
    return Request(
        platform=PLATFORM,
        user_id=str(interaction.user.id),
        chat_id=str(interaction.channel_id),
        attachment=attachment,
        progress=progress,
        language=interaction.locale.value,
    )


def image_file(reply: Reply) -> discord.File:
    """The drawn picture as an upload named after its type."""
    assert reply.image is not None
    suffix = mimetypes.guess_extension(reply.content_type or "") or ""
    return discord.File(io.BytesIO(reply.image), filename=f"toonbot{suffix}")


def deferring_read(
    interaction: discord.Interaction, image: discord.Attachment
) -> Callable[[], Awaitable[bytes]]:
    """The core fetches a file only once every check has passed: that is when drawing starts,
    so defer there ("thinking...") and a refusal stays one plain ephemeral answer."""

    async def read() -> bytes:
        await defer(interaction)
        return await image.read()

    return read


async def defer(interaction: discord.Interaction) -> None:
    """Show "thinking..." (once: a wait for the server's turn may have shown it already)."""
    if not interaction.response.is_done():
        await interaction.response.defer(thinking=True)


async def show_progress(interaction: discord.Interaction, words: i18n.Words, done: int, total: int) -> None:
    """Turn the deferred "thinking..." into "Drawing frame N of M…" (only a courtesy: a failed
    edit is logged, never the clip's end)."""
    try:
        await interaction.edit_original_response(content=words(messages.DRAWING_FRAMES, done=done, total=total))
    except discord.HTTPException as error:
        logger.debug("progress not shown: %s", error)


def deliverable(reply: Reply, limit: int, words: i18n.Words) -> Reply:
    """`reply`, or words saying its file is over Discord's upload `limit` (a long GIF can be)."""
    if reply.image is None or len(reply.image) <= limit:
        return reply
    text = words(messages.DISCORD_RESULT_TOO_BIG, size_mb=len(reply.image) / 2**20, limit_mb=limit / 2**20)
    return Reply(text, problem="too_big")


async def answer(interaction: discord.Interaction, reply: Reply, words: i18n.Words | None = None) -> None:
    """The picture in the follow-up for all to see; words for the asker alone. A clip takes the
    place of its deferred message, which its progress may have edited into "Drawing frame N of M…".
    `words`: the asker's language, should the picture be too big to send (default: their Discord's)."""
    reply = deliverable(reply, interaction.filesize_limit, words or i18n.words(interaction.locale.value))
    if reply.image is not None and reply.animated is not None:  # drawn, so `read` has deferred
        await interaction.edit_original_response(content=reply.text, attachments=[image_file(reply)])
    elif reply.image is not None:
        await interaction.followup.send(reply.text, file=image_file(reply))
    elif interaction.response.is_done():
        # A follow-up to a public "thinking..." replaces it publicly: remove it, then answer privately.
        await interaction.delete_original_response()
        await interaction.followup.send(reply.text, ephemeral=True)
    else:
        await interaction.response.send_message(reply.text, ephemeral=True)


async def show_styles(interaction: discord.Interaction, reply: Reply, words: i18n.Words) -> None:
    """/styles for the asker alone: the list in an embed around the picture of every style's before
    and after (words alone when there is no picture: nothing deployed, or no previews)."""
    if reply.image is None:
        await answer(interaction, reply, words)
        return
    embed = discord.Embed(title=words(messages.STYLES_TITLE), description=reply.text)
    embed.set_image(url=f"attachment://{STYLES_PICTURE}")
    picture = discord.File(io.BytesIO(reply.image), filename=STYLES_PICTURE)
    await interaction.response.send_message(embed=embed, file=picture, ephemeral=True)
