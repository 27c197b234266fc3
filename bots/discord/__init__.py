"""The Discord front end: discord.py slash commands (in cogs) and image messages in, the core's replies out.

`answers` turns interactions into core requests and replies into messages;
`style` and `admin` are the cogs; `bot` holds the client and `serve`.
"""

from bots.discord.bot import serve

__all__ = ["serve"]
