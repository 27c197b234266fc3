"""Every sentence the bots say, written once, in plain words: the English source of the translations.

Front ends never write their own wording: they show these (via the core's
replies) so Telegram, Discord and the web page always say the same thing, each
in the user's language (`bots.i18n.Words`; the catalogues are bots/locale/*,
and every public constant here is a message in them). Serving's refusals (no
face, too small, busy) arrive worded in English; the bots word them again by
their code (`REFUSALS`), or by their exact words where those are listed here.
"""

from __future__ import annotations

from bots.i18n import Plural
from serving import animation, inputs, replies
from styles.payload import refusals

WELCOME = (
    "Hi! Send me a photo and I'll redraw it.\n"
    "Your style now: {style}. /styles lists them all, /help says more."
)
LANGUAGE_COMMAND = "/language - choose the language I answer in"  # in both helps
PRIVACY_COMMANDS = "/privacy - what I keep about you (never your photos); /forget - delete it"  # the last line of both helps
HELP = (
    "Send a photo (or an image file) and I'll send it back restyled.\n"
    "A GIF or a short video comes back restyled too, frame by frame.\n"
    "/styles - see the styles and pick one\n"
    "/style NAME - switch to a style\n"
    "A photo with the caption /style NAME uses that style just once; add compare (/style NAME compare) "
    "to get the original and the result side by side.\n"
    "In a group: reply /style (or /style NAME) to a photo, or send a photo with the caption /style NAME. "
    "I only see commands there; if other bots are in the group, add my @username (/style@me).\n"
    + LANGUAGE_COMMAND + "\n"
    + PRIVACY_COMMANDS
)
DISCORD_HELP = (  # Discord's commands differ: /style draws, /mystyle switches
    "/style with a photo - I send it back restyled (pick a style there to use it just once; "
    "compare: True puts the original beside it)\n"
    "A GIF or a short MP4 comes back restyled too, frame by frame.\n"
    "/styles - see the styles\n"
    "/mystyle NAME - switch to a style\n"
    "You can also send me a photo in a DM, or mention me with one in a channel, "
    "or mention me in a reply to a message with an image (add a style name to use it once).\n"
    "Apps → Restyle on any message with an image draws it too.\n"
    + LANGUAGE_COMMAND + "\n"
    + PRIVACY_COMMANDS
)
STYLES_HEADER = "Styles (yours now: {style}):"
STYLE_LINE = "{name} - {description}"
# Under a style whose live version falls below its bar on its test split (styles/catalog.py BARS): why.
EXPERIMENTAL = {
    "judged": "Experimental: only {value:.0%} of its test pictures came out looking like the target "
              "(its bar is {bar:.0%}).",
    "kid": "Experimental: its test pictures are still far from real ones (distance {value:.0f}, its bar is {bar:.0f}).",
    "sharpness": "Experimental: its pictures are much blurrier than real ones ({value:.0%} of their sharpness, "
                 "its bar is {bar:.0%}).",
}
STYLES_TITLE = "What each style does"  # above the picture of every style's before and after (Discord)
NO_PREVIEW = "no preview in this archive"  # in that picture, for a style exported before previews
STYLE_SET = "Done: your style is now {title}. Send a photo!"
COMPARE_HOW = "For the original and the result side by side, send a photo with the caption /style compare."
UNKNOWN_STYLE = replies.UNKNOWN_STYLE  # the runtimes refuse an unknown style in the same words
NO_STYLES = "No styles are available right now. Please try again later."
NOT_A_COMMAND = "Send me a photo to restyle, or /help to see what I can do."
RESULT_CAPTION = "{title}"
FACES_DRAWN = Plural(" · {count} face drawn", " · {count} faces drawn")  # after the caption, for a group photo

NOT_AN_IMAGE = refusals.NOT_AN_IMAGE  # the handler refuses in the same words what it cannot decode
TOO_BIG = refusals.TOO_LARGE_AT  # the handler's words, at the bots' own limit (MAX_UPLOAD_BYTES)
BUSY_USER = "I'm still working on your last photo. One at a time, please!"
SLOW_DOWN = Plural(
    "Slow down a little: at most {limit} photo a minute. Try again shortly.",
    "Slow down a little: at most {limit} photos a minute. Try again shortly.",
    count="limit",
)
CHAT_SLOW_DOWN = Plural(
    "This group is busy: at most {limit} photo a minute here. Try again shortly.",
    "This group is busy: at most {limit} photos a minute here. Try again shortly.",
    count="limit",
)
NO_PICTURE_IN_REPLY = (
    "The message you replied to has no photo. Reply /style to a photo (or an image file), "
    "or send a photo with the caption /style NAME."
)
DISCORD_NO_PICTURE_IN_REPLY = (
    "I can't see an image in the message you replied to. Try Apps → Restyle on that message "
    "(right-click it, or long-press on a phone), or /style with the image."
)
DISCORD_NO_IMAGE_IN_MESSAGE = "That message has no image to restyle."
DISCORD_RESULT_TOO_BIG = (
    "The result is {size_mb:.1f} MB, more than the {limit_mb:g} MB Discord lets me upload here. "
    "Try a shorter or smaller clip (an MP4 is far smaller than the same GIF)."
)
# Animated GIFs and short videos (serving words its own refusals; the core passes them on).
DRAWING_FRAMES = "Drawing frame {done} of {total}…"
CLIP_TOO_LONG = animation.TOO_LONG  # with the clip's length and the limits filled in
CLIP_DAMAGED = animation.DAMAGED_VIDEO  # (and DAMAGED_GIF for a GIF)
NOT_A_CLIP = (
    "I can draw animated GIFs and MP4 videos, but not that kind of video. "
    "Send it as an MP4 (most phones record MP4), or send a photo."
)
NO_FACE_IN_CLIP = animation.NO_FACE_IN_CLIP
CLIP_FRAMES_TOO_LARGE = inputs.FRAME_TOO_LARGE  # refused from the headers, before a frame is decoded
CLIP_TOO_LARGE = inputs.CLIP_TOO_LARGE
TOO_MANY_PIXELS = refusals.TOO_MANY_PIXELS  # a still photo, from its header

# Serving's own words (each `.mar` refuses in English), listed to be translated.
TOO_LARGE = refusals.TOO_LARGE
TRUNCATED = refusals.TRUNCATED
TOO_MANY_PIXELS = refusals.TOO_MANY_PIXELS
TOO_SMALL = refusals.TOO_SMALL
NO_FACE = (  # styles/payload/framing.py's words (it imports OpenCV, which the bots need not load)
    "I couldn't find a face in that photo. Try one where the face is clearly visible: turned towards "
    "the camera, not covered or cut off at an edge, in even light. Or pick a style that needs no face "
    "with /styles."
)
FACES_TOO_SMALL = (  # framing.py's too
    "The faces in that photo are too small for me to draw (each needs about 48 pixels across). "
    "Send a closer photo, or crop it around the faces."
)
CLIP_NOT_A_CLIP = animation.NOT_A_CLIP
GIF_DAMAGED = animation.DAMAGED_GIF
NO_PICTURE_TRACK = animation.NO_PICTURE_TRACK
NO_FRAMES = animation.NO_FRAMES
OVERLOADED = replies.OVERLOADED
UNAVAILABLE = replies.UNAVAILABLE
FAILED = replies.FAILED
# A refusal's code (the handler's JSON "error", or `StylizeError.code`) -> its words, filled in
# with the error's `params`: an archive's English, however worded, reaches users translated.
REFUSALS = {
    "not_an_image": NOT_AN_IMAGE,
    "truncated": TRUNCATED,
    "too_large": TOO_LARGE,
    "too_many_pixels": TOO_MANY_PIXELS,
    "too_small": TOO_SMALL,
    "unknown_style": UNKNOWN_STYLE,
    "too_long": CLIP_TOO_LONG,
    "frame_too_large": CLIP_FRAMES_TOO_LARGE,
    "clip_too_large": CLIP_TOO_LARGE,
    "overloaded": OVERLOADED,
    "unavailable": UNAVAILABLE,
}

# The user's language (/language).
LANGUAGES_HEADER = "Languages (yours now: {language}):"
LANGUAGE_LINE = "/language {code} - {name}"
LANGUAGE_AUTO_LINE = "/language auto - the language of your app"
LANGUAGE_SET = "Done: I'll answer you in {language} from now on."
LANGUAGE_AUTO = "Done: I'll answer in the language of your app ({language})."
UNKNOWN_LANGUAGE = "I don't speak \"{name}\" yet."

ERROR = "Sorry, something went wrong on my side. Please try again."
NOT_A_FORM = "Send the picture as a file upload: a multipart form with an \"image\" field (and optionally \"style\")."
WRONG_HOST = "This page is not served under that name. Open it at the address toonbot printed when it started."
CROSS_SITE = "Requests from other web sites are not accepted. Open the page itself to upload a picture."
# The page's uploads (bots/web.py): too slow to arrive, too many at once from one address, or for everyone.
UPLOAD_TOO_SLOW = (
    "Your upload took longer than {seconds:g} s to arrive, so I stopped waiting. "
    "Please try again, or send a smaller file."
)
UPLOADS_AT_ONCE = "Too many uploads from your network at once. Wait for one to finish, then try again."
UPLOADS_BUSY = "I'm receiving too many uploads right now. Please try again in a few seconds."

# Everyone: privacy.
PRIVACY = (
    "What I keep: your platform user id, the style and language you chose, and one line per photo request "
    "(when, which style, whether it worked, how long it took, the file's size). "
    "Your photos are never stored: they are restyled in memory and forgotten. "
    "/forget deletes everything I keep about you."
)
FORGOTTEN = Plural(
    "Done: I deleted everything I kept about you ({count} record).",
    "Done: I deleted everything I kept about you ({count} records).",
)
# A hung database (bots/admin.py says what each command does then).
DB_NOT_ANSWERING = "The database is not answering, try again shortly."
DB_LATER = (
    "The database is not answering. I'll do it as soon as it answers; "
    "send the same command again shortly to see how it went."
)
FORGET_LATER = (
    "The database is not answering, so nothing is deleted yet. I'll delete everything I keep about you "
    "as soon as it answers; send /forget again shortly to see it done."
)
NOT_LOGGED_YET = "(The database is not answering: the deployment log gets this entry as soon as it answers.)"

# Admins only (everyone else gets the answer to an unknown command).
ADMIN_USAGE = {
    "stats": "Usage: /stats [days], e.g. /stats 7",
    "deploy": "Usage: /deploy STYLE VERSION [force], e.g. /deploy selfie2anime 2.0 (force: even if it measures worse)",
    "rollback": "Usage: /rollback STYLE",
    "retrain": "Usage: /retrain PAIR [iterations] [from VERSION] [deploy], e.g. /retrain selfie2anime 20000 from 1.0",
    "cancel": "Usage: /cancel JOB, e.g. /cancel 12",
}
STATS_EMPTY = "No requests in the last {days} days."
STATS_TOTAL = "Last {days} days: {requests} requests, {rate:.0%} ok."
STATS_STYLE = "{style}: {requests} requests, {rate:.0%} ok, p50 {p50}, p95 {p95}"
STATS_ERRORS = "Top errors: {errors}"
STATS_CHART_TITLE = "Requests per day, last {days} days (UTC)"
STATS_CHART_AXIS = "requests"
MODELS_EMPTY = "No styles are deployed."
DEPLOYED = "Deployed: {message}"
DEPLOY_FAILED = "Not deployed, the old default keeps serving: {message}"
ROLLED_BACK = "Rolled back: {message}"
ROLLBACK_FAILED = "No rollback: {message}"
JOB_QUEUED = (
    "Queued job #{id}: {pair}, {iterations} iterations{start}. "
    "/jobs shows its progress; I'll message you here when it ends."
)
JOB_FROM = ", from {version}"  # the start of JOB_QUEUED, when it continues a version
JOBS_EMPTY = "No training jobs yet."
NO_SUCH_JOB = "There is no job #{id}."
JOB_CANCELLED = "Cancelling: {job}"
JOB_DONE = "Job #{id} ({pair}) is done: {versions}. Deploy with /deploy STYLE VERSION."
JOB_DONE_DEPLOYED = "Job #{id} ({pair}) is done: {versions}.\n{deployments}"
JOB_SCORES = "Measured on the test split (judged: share taken for the target; KID: lower is better):"
JOB_FAILED = "Job #{id} ({pair}) {status}: {error}"
JOB_NO_REASON = "no reason recorded"  # JOB_FAILED's error when the worker recorded none
