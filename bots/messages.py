"""Every sentence the bots say, written once, in plain words.

Front ends never write their own wording: they show these (via the core's
replies) so Telegram, Discord and the web page always say the same thing.
Serving's refusals (no face, too small, busy) arrive worded for users already
and are passed on as they are.
"""

from __future__ import annotations

WELCOME = (
    "Hi! Send me a photo and I'll redraw it.\n"
    "Your style now: {style}. /styles lists them all, /help says more."
)
HELP = (
    "Send a photo (or an image file) and I'll send it back restyled.\n"
    "/styles - see the styles and pick one\n"
    "/style NAME - switch to a style\n"
    "A photo with the caption /style NAME uses that style just once."
)
DISCORD_HELP = (  # Discord's commands differ: /style draws, /mystyle switches
    "/style with a photo - I send it back restyled (pick a style there to use it just once)\n"
    "/styles - see the styles\n"
    "/mystyle NAME - switch to a style\n"
    "You can also send me a photo in a DM, or mention me with one in a channel."
)
STYLES_HEADER = "Styles (yours now: {style}):"
STYLE_LINE = "{name} - {description}"
STYLE_SET = "Done: your style is now {title}. Send a photo!"
UNKNOWN_STYLE = "I don't know the style \"{name}\"."
NO_STYLES = "No styles are available right now. Please try again later."
NOT_A_COMMAND = "Send me a photo to restyle, or /help to see what I can do."
RESULT_CAPTION = "{title}"

NOT_AN_IMAGE = "That file is not a picture I can read. Please send a JPEG, PNG, WebP or HEIC photo."
TOO_BIG = "That file is too big. Please send an image under {limit_mb} MB."
BUSY_USER = "I'm still working on your last photo. One at a time, please!"
SLOW_DOWN = "Slow down a little: at most {limit} photos a minute. Try again shortly."
ERROR = "Sorry, something went wrong on my side. Please try again."
