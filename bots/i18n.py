"""The user's language: which one (`negotiate`) and the words in it (`words`).

English in `bots/messages.py` is the source and the fallback; translations are
gettext catalogues, `bots/locale/<locale>/LC_MESSAGES/toonbot.po`, read with
Babel and compiled in memory on first use (no binary .mo in the repository,
no build step). `messages.pot` is what `pybabel extract -F babel.cfg` finds;
`extract_messages` and `extract_styles` are the extractors babel.cfg names for
the message constants and the style catalogue, which are plain data, not calls.
"""

from __future__ import annotations

import ast
import gettext
import io
import re
import string
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, BinaryIO

from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from babel.numbers import format_decimal, format_percent
from babel.support import Translations

from styles import catalog

LOCALE_DIR = Path(__file__).with_name("locale")
DOMAIN = "toonbot"
SOURCE = "en"
# Every language the bots speak, in its own name (the /language list and the page's selector).
LANGUAGES: dict[str, str] = {
    "en": "English",
    "ru": "Русский",
    "es": "Español",
    "pt_BR": "Português (Brasil)",
    "ja": "日本語",
    "zh_Hans": "简体中文",
}
# A tag's first part -> our locale. Portuguese is Brazil's; every Chinese reader gets Simplified
# Chinese (closer for a Traditional reader than English).
_BY_LANGUAGE = {code.split("_")[0].lower(): code for code in LANGUAGES}
_TAG = re.compile(r"[A-Za-z]{1,8}(?:[-_][A-Za-z0-9]{1,8})*")


@dataclass(frozen=True)
class Plural:
    """A message with a count in it: the English singular and plural (ngettext's two msgids);
    `count` names the placeholder that picks the form."""

    one: str
    other: str
    count: str = "count"

    def format(self, **values: Any) -> str:
        """The English, as logs and tests read it."""
        return (self.one if values[self.count] == 1 else self.other).format(**values)


Message = str | Plural


def _match(tag: str) -> str | None:
    """One language tag ("pt-BR", "zh_Hans", "ja") -> our locale, or None."""
    return _BY_LANGUAGE.get(tag.replace("_", "-").split("-")[0].lower())


def choose(tag: str | None) -> str | None:
    """A locale a user named (/language pt-BR, the page's selector), or None: not one we speak."""
    if not tag or not _TAG.fullmatch(tag.strip()):
        return None
    return _match(tag.strip())


def negotiate(tags: str | None) -> str:
    """The best locale for what a platform says: an Accept-Language header ("pt-BR,pt;q=0.9"),
    a Telegram `language_code` ("ru") or a Discord locale ("zh-CN"); English when none fits."""
    preferred: list[tuple[float, int, str]] = []
    for index, item in enumerate((tags or "").split(",")):
        tag, _, params = item.strip().partition(";")
        quality = 1.0
        if (found := re.search(r"q\s*=\s*([0-9.]+)", params)) is not None:
            try:
                quality = float(found.group(1))
            except ValueError:
                quality = 0.0
        if quality > 0 and _TAG.fullmatch(tag.strip()):
            preferred.append((-quality, index, tag.strip()))
    for _, _, tag in sorted(preferred):
        if (locale := _match(tag)) is not None:
            return locale
    return SOURCE


@cache
def translations(locale: str) -> gettext.NullTranslations:
    """The catalogue of `locale`, compiled from its .po in memory once per process (English: none)."""
    path = LOCALE_DIR / locale / "LC_MESSAGES" / f"{DOMAIN}.po"
    if locale == SOURCE or not path.is_file():
        return gettext.NullTranslations()
    with path.open("rb") as po:
        catalog = read_po(po, locale=locale, domain=DOMAIN)
    compiled = io.BytesIO()
    write_mo(compiled, catalog)  # fuzzy entries stay out: English shows until a translator confirms
    compiled.seek(0)
    return Translations(compiled, domain=DOMAIN)


class _Numbers(string.Formatter):
    """str.format with decimals and percentages written the locale's way ("2,5", "50 %"); whole
    numbers stay plain digits, as ids and counts read the same in every language we speak."""

    def __init__(self, locale: str) -> None:
        self._locale = locale

    def format_field(self, value: Any, format_spec: str) -> str:
        if isinstance(value, float) and (spec := re.fullmatch(r"\.(\d+)([f%])|g?", format_spec)):
            digits = int(spec.group(1) or 0)
            pattern = "#,##0" + ("." + "0" * digits if digits else "")
            if spec.group(2) == "%":  # whole percentages in the locale's own pattern ("50 %" in Russian)
                return format_percent(value, pattern + "%" if digits else None, locale=self._locale)
            if spec.group(2) == "f":
                return format_decimal(value, pattern, locale=self._locale)
            return format_decimal(value, locale=self._locale)
        return super().format_field(value, format_spec)


class Words:
    """The messages in one language: `words(messages.WELCOME, style=...)` translates, then fills in."""

    def __init__(self, locale: str) -> None:
        self.locale = locale
        self._catalog = translations(locale)
        self._formatter = _Numbers(locale.replace("_Hans", "_Hans_CN"))

    def __call__(self, message: Message, /, **values: Any) -> str:
        """`message` in this language, its placeholders filled from `values` (a Plural by its count)."""
        if isinstance(message, Plural):
            text = self._catalog.ngettext(message.one, message.other, values[message.count])
        else:
            text = self._catalog.gettext(message)
        return self._formatter.vformat(text, (), values) if values else text

    def style(self, name: str, title: str, description: str) -> tuple[str, str]:
        """A style's title and description: the archive's English, translated by the style's name
        where the catalogue knows it (the English is the archive's own, as exported)."""
        entry = catalog.KNOWN.get(name)
        if entry is None or self.locale == SOURCE:
            return title, description
        return self._catalog.pgettext(f"style:{name}", entry.title), self._catalog.pgettext(
            f"style:{name}", entry.description
        )


def words(locale: str | None) -> Words:
    """The words for a locale, a tag or a header (anything `negotiate` reads); English by default."""
    return _words(negotiate(locale))


@cache
def _words(locale: str) -> Words:
    """One `Words` per language we speak (cached by locale, never by what a client sent)."""
    return Words(locale)


def placeholders(text: str) -> set[str]:
    """The `{name}` fields of a message (with their format specs), which every translation keeps."""
    return {f"{name}:{spec}" for _, name, spec, _ in string.Formatter().parse(text) if name is not None}


# Extractors (babel.cfg) ---------------------------------------------------------------------------

Extracted = Iterator[tuple[int, str, str | tuple[str, ...], list[str]]]


def _assignments(source: str) -> Iterator[tuple[str, int]]:
    """Each top-level `NAME = ...` in `source`, with its line."""
    for node in ast.parse(source).body:
        targets = [node.target] if isinstance(node, ast.AnnAssign) else getattr(node, "targets", [])
        for target in targets:
            if isinstance(target, ast.Name):
                yield target.id, node.lineno


def _entries(value: Any) -> Iterator[tuple[str, str | tuple[str, ...]]]:
    """A constant's messages: a string, a Plural's two forms, a mapping's values."""
    if isinstance(value, str):
        yield "gettext", value
    elif isinstance(value, Plural):
        yield "ngettext", (value.one, value.other)
    elif isinstance(value, Mapping):
        for item in value.values():
            yield from _entries(item)


def extract_messages(fileobj: BinaryIO, keywords: Any, comment_tags: Any, options: Any) -> Extracted:
    """Babel extractor for bots/messages.py: every public constant, as the module holds it (several
    are other modules' words: serving's refusals), with its name for the translator."""
    from bots import messages

    for name, line in _assignments(fileobj.read().decode("utf-8")):
        if name.isupper():
            for funcname, text in _entries(getattr(messages, name)):
                yield line, funcname, text, [name]


def extract_styles(fileobj: BinaryIO, keywords: Any, comment_tags: Any, options: Any) -> Extracted:
    """Babel extractor for styles/catalog.py: each known style's title and description, in the
    context "style:NAME" (the bots translate by name)."""
    line = next(line for name, line in _assignments(fileobj.read().decode("utf-8")) if name == "KNOWN")
    for name, entry in catalog.KNOWN.items():
        for text in (entry.title, entry.description):
            yield line, "pgettext", (f"style:{name}", text), [f"the style {name}"]
