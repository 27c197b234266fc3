"""What the handler refuses, and the words it refuses in: the one home of the upload limit.

Ships inside every `.mar` beside `imaging.py` and imports nothing, so the
code in front of a style (the bots' upload limit and wording, the TorchServe
client's early refusal) reads the same values as `styles.payload.refusals`.
"""

MAX_BYTES = 20 * 1024 * 1024  # the one upload limit: the bots' default and TorchServe's config.properties follow it
MAX_PIXELS = 40_000_000
MIN_SIDE = 32

NOT_AN_IMAGE = "That file is not a picture I can read. Please send a JPEG, PNG, WebP or HEIC photo."
TRUNCATED = "That picture seems cut off (the file is incomplete). Please send it again."
TOO_LARGE_AT = "That file is too big (the limit is {limit_mb} MB). Please send a smaller photo."  # the bots fill theirs
TOO_LARGE = TOO_LARGE_AT.format(limit_mb=MAX_BYTES // 2**20)
TOO_MANY_PIXELS = "That picture has too many pixels (the limit is 40 megapixels). Please send a smaller one."
TOO_SMALL = f"That picture is too small. Please send one at least {MIN_SIDE} pixels on each side."
