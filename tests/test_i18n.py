"""Every message in every language: the template is current, each catalogue complete and faithful
to the English placeholders, and the user's language chosen as each platform says it."""

from __future__ import annotations

from pathlib import Path

import pytest
from babel.messages.catalog import Catalog
from babel.messages.extract import extract_from_dir
from babel.messages.frontend import parse_mapping_cfg
from babel.messages.pofile import read_po

from bots import i18n, messages
from bots.core import refusal
from serving import replies
from serving.api import BadInput, StylizeError

ROOT = Path(__file__).resolve().parents[1]
TEMPLATE = i18n.LOCALE_DIR / "messages.pot"
TRANSLATED = [code for code in i18n.LANGUAGES if code != i18n.SOURCE]
DISCORD_TEXT_LIMIT = 100  # characters in a slash command's or option's description, and a choice's name
UPDATE = (
    "run: pybabel extract -F babel.cfg -o bots/locale/messages.pot --no-location --sort-output . && "
    "pybabel update -i bots/locale/messages.pot -d bots/locale -D toonbot --no-fuzzy-matching, then translate"
)

Key = tuple[str | None, str]


def _read(path: Path, locale: str | None = None) -> Catalog:
    with path.open("rb") as po:
        return read_po(po, locale=locale)


def _key(msgid: str | tuple[str, ...], context: str | None) -> Key:
    return context, msgid if isinstance(msgid, str) else msgid[0]


def _extracted() -> dict[Key, str | tuple[str, ...]]:
    """What `pybabel extract -F babel.cfg` finds now, by (context, msgid)."""
    with (ROOT / "babel.cfg").open() as config:
        method_map, options_map = parse_mapping_cfg(config)
    found = extract_from_dir(
        str(ROOT), method_map, options_map,
        directory_filter=lambda path: Path(path).relative_to(ROOT).parts[0] in ("bots", "styles"),
    )
    return {_key(msgid, context): msgid for _, _, msgid, _, context in found}


@pytest.fixture(scope="module")
def template() -> Catalog:
    return _read(TEMPLATE)


def test_the_template_holds_every_message_of_the_code(template: Catalog) -> None:
    extracted = _extracted()
    listed = {_key(m.id, m.context) for m in template if m.id}
    assert set(extracted) == listed, UPDATE
    assert len(listed) > 100  # messages, the page, the styles and Discord's descriptions
    assert (None, messages.WELCOME) in listed and ("style:selfie2anime", "Selfie to anime") in listed
    assert (None, "Restyle a photo, a GIF or a short MP4") in listed  # a Discord description
    assert (None, "Redraw it") in listed  # the page


@pytest.mark.parametrize("locale", TRANSLATED)
def test_every_message_has_a_translation_with_the_same_placeholders(template: Catalog, locale: str) -> None:
    catalog = _read(i18n.LOCALE_DIR / locale / "LC_MESSAGES" / f"{i18n.DOMAIN}.po", locale)
    problems = []
    for english in (m for m in template if m.id):
        found = catalog.get(english.id, context=english.context)
        where = f"{locale}: {english.context or ''} {str(english.id)[:60]!r}"
        if found is None or found.fuzzy:
            problems.append(f"{where} missing or fuzzy")
            continue
        forms = found.string if isinstance(found.string, tuple) else (found.string,)
        source = english.id[-1] if isinstance(english.id, tuple) else english.id
        if isinstance(english.id, tuple) and len(forms) != catalog.num_plurals:
            problems.append(f"{where} has {len(forms)} plural forms, the language {catalog.num_plurals}")
        for form in forms:
            if not form.strip():
                problems.append(f"{where} is empty")
            elif i18n.placeholders(form) != i18n.placeholders(source):
                problems.append(f"{where}: {sorted(i18n.placeholders(form))} for {sorted(i18n.placeholders(source))}")
    assert not problems, "\n".join(problems) + "\n" + UPDATE


@pytest.mark.parametrize("locale", TRANSLATED)
def test_each_catalogue_compiles_and_translates(locale: str) -> None:
    words = i18n.words(locale)
    assert words.locale == locale
    for message in (messages.WELCOME, messages.HELP, messages.NOT_AN_IMAGE, messages.RESULT_CAPTION):
        assert words(message, style="x", title="x") != message.format(style="x", title="x") or message == "{title}"
    assert words(messages.FACES_DRAWN, count=3) != messages.FACES_DRAWN.format(count=3)
    title, description = words.style("selfie2anime", "Selfie to anime", "Turns a selfie into an anime portrait.")
    assert title != "Selfie to anime" and description


def test_plurals_follow_each_language() -> None:
    ru = i18n.words("ru")
    assert [ru(messages.FORGOTTEN, count=n).split("(")[1] for n in (1, 3, 5, 21)] == [
        "1 запись).", "3 записи).", "5 записей).", "21 запись).",
    ]
    assert i18n.words("es")(messages.FACES_DRAWN, count=1) == " · 1 cara dibujada"
    assert i18n.words("en")(messages.FACES_DRAWN, count=1) == messages.FACES_DRAWN.format(count=1) == " · 1 face drawn"


def test_decimals_and_percentages_are_written_the_local_way() -> None:
    too_big = {"size_mb": 12.34, "limit_mb": 10.0}
    assert "12,3 МБ" in i18n.words("ru")(messages.DISCORD_RESULT_TOO_BIG, **too_big)
    assert "12,3 MB" in i18n.words("pt-BR")(messages.DISCORD_RESULT_TOO_BIG, **too_big)
    assert "12.3 MB" in i18n.words("ja")(messages.DISCORD_RESULT_TOO_BIG, **too_big)
    assert "50\xa0%" in i18n.words("ru")(messages.STATS_TOTAL, days=7, requests=2, rate=0.5)
    assert i18n.words("en")(messages.STATS_TOTAL, days=7, requests=2, rate=0.5) == messages.STATS_TOTAL.format(
        days=7, requests=2, rate=0.5
    )
    assert "#12345" in i18n.words("es")(messages.NO_SUCH_JOB, id=12345)  # ids stay plain digits


@pytest.mark.parametrize(
    ("said", "locale"),
    [
        ("ru", "ru"), ("pt-br", "pt_BR"), ("pt-BR,pt;q=0.9,en;q=0.8", "pt_BR"), ("pt", "pt_BR"),
        ("zh-CN", "zh_Hans"), ("zh-hans", "zh_Hans"), ("zh-Hans-CN", "zh_Hans"), ("ja", "ja"), ("es-419", "es"),
        ("en-US", "en"), ("de-DE,de;q=0.9", "en"), ("fr-CH, fr;q=0.9, ja;q=0.5", "ja"), ("ru;q=0, es", "es"),
        ("*", "en"), ("", "en"), (None, "en"), ("zh_Hans", "zh_Hans"), ("pt_BR", "pt_BR"), ("\x00;;", "en"),
    ],
)
def test_negotiate_reads_every_platform(said: str | None, locale: str) -> None:
    assert i18n.negotiate(said) == locale


def test_choose_accepts_codes_only() -> None:
    assert [i18n.choose(c) for c in ("ru", "PT-br", "zh", "ja ", "xx", "", "ru;q=1", "../ru")] == [
        "ru", "pt_BR", "zh_Hans", "ja", None, None, None, None,
    ]


@pytest.mark.parametrize("locale", TRANSLATED)
def test_refusals_are_worded_by_their_code(locale: str) -> None:
    words = i18n.words(locale)
    # An archive's English, however worded, is translated by the code the handler sent.
    assert refusal(BadInput("Too small, old words.", code="too_small"), words) == words(messages.TOO_SMALL)
    assert refusal(replies.unknown_style("nope"), words) == words(messages.UNKNOWN_STYLE, name="nope")
    # No code the bots know: the exact English where it is a message (here, a clip's), else as it came.
    assert refusal(BadInput(messages.GIF_DAMAGED), words) == words(messages.GIF_DAMAGED) != messages.GIF_DAMAGED
    assert refusal(StylizeError("Brand new words."), words) == "Brand new words."
    assert refusal(BadInput("x", code="too_long"), words) == "x"  # the code's words need values it lacks


def test_messages_copied_from_the_payload_match_it() -> None:
    from styles.payload import framing  # imports OpenCV, which the bots' messages do not

    assert (messages.NO_FACE, messages.FACES_TOO_SMALL) == (framing.NO_FACE, framing.FACES_TOO_SMALL)


@pytest.mark.parametrize("locale", list(i18n.LANGUAGES))
def test_discord_descriptions_fit_in_every_language(locale: str) -> None:
    from bots.discord import admin, style

    words = i18n.words(locale)
    for text in _discord_strings(style, admin):
        assert 0 < len(words(text)) <= DISCORD_TEXT_LIMIT, (locale, text)
    for name in i18n.LANGUAGES.values():
        assert len(name) <= DISCORD_TEXT_LIMIT


def _discord_strings(*modules: object) -> list[str]:
    """The `locale_str` texts in the Discord cogs."""
    import ast
    import inspect

    found = []
    for module in modules:
        for node in ast.walk(ast.parse(inspect.getsource(module))):  # type: ignore[arg-type]
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "locale_str":
                found.append(node.args[0].value)  # type: ignore[attr-defined]
    assert found
    return found


@pytest.mark.parametrize("locale", TRANSLATED)
def test_a_clips_refusal_carries_its_values_into_every_language(locale: str) -> None:
    from serving import inputs

    words = i18n.words(locale)
    limits = inputs.Limits()
    long = inputs.too_long(limits, 12.5, 400)
    worded = refusal(long, words)
    assert worded == words(messages.CLIP_TOO_LONG, **long.params) != long.message
    assert "12,5" in worded or "12.5" in worded
    large = inputs.frame_too_large(7680, 4320, limits)
    worded = refusal(large, words)
    assert worded == words(messages.CLIP_FRAMES_TOO_LARGE, **large.params) and "7680" in worded
