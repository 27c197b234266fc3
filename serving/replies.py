"""Turning a runtime's answer into a `StylizeError`: written once for both runtimes.

The handler's own rejections carry their user message in the JSON body;
the messages here cover what happens around the handler.
"""

from __future__ import annotations

import json

from serving.api import BadInput, NoFace, StylizeError, TooLarge, UnknownStyle
from styles import catalog

# The one wording for a style name nothing is deployed under: the bots say it too (with the list after it).
UNKNOWN_STYLE = "I don't know the style \"{name}\"."
OVERLOADED = "I'm busy with other pictures right now. Please try again in a minute."
UNAVAILABLE = "The picture service is not reachable right now. Please try again later."
TOO_LARGE_KINDS = ("too_large", "too_many_pixels")  # the handler's 413s (styles/payload/imaging.py)
FAILED = "Something went wrong while drawing your picture. Please try again."


def unknown_style(style: str) -> UnknownStyle:
    """The error for a style name nothing is deployed under (the name cut to what may be repeated back)."""
    name = catalog.shown(style)
    return UnknownStyle(UNKNOWN_STYLE.format(name=name), params={"name": name})


def rejection(body: bytes) -> StylizeError:
    """A handler's 4xx JSON `{"error": kind, "message": text}` -> the matching exception."""
    try:
        payload = json.loads(body)
        kind, message = payload["error"], payload["message"]
    except (ValueError, KeyError, TypeError):
        return BadInput(FAILED)
    if kind == "no_face":
        return NoFace(message, code=kind)
    return (TooLarge if kind in TOO_LARGE_KINDS else BadInput)(message, code=str(kind))
