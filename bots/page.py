"""The web page in the visitor's language: bots/static/index.html is a Jinja template.

Its words are gettext calls (`{{ _('...') }}`, `{% trans %}`) that `pybabel extract` finds
(babel.cfg); its inline <script> and <style> hold no template syntax, so they are the same in
every language and the Content-Security-Policy hashes taken from the file hold for each page.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

import jinja2

from bots import i18n

PAGE = Path(__file__).with_name("static") / "index.html"


@cache
def _template(locale: str) -> jinja2.Template:
    """The page's template with `locale`'s catalogue installed (one small environment per language)."""
    environment = jinja2.Environment(
        loader=jinja2.FileSystemLoader(PAGE.parent), autoescape=True, extensions=["jinja2.ext.i18n"]
    )
    # Old-style gettext: `_()` returns plain text, which autoescape escapes; a `trans` block is markup.
    environment.install_gettext_translations(i18n.translations(locale), newstyle=False)  # type: ignore[attr-defined]
    return environment.get_template(PAGE.name)


def render(locale: str, chosen: str | None) -> str:
    """The page in `locale` (a locale of `i18n.LANGUAGES`); `chosen`: the visitor's own choice, which
    the selector shows (None: "as my browser")."""
    return _template(locale).render(
        lang=locale.replace("_", "-"), languages=i18n.LANGUAGES, chosen=chosen
    )
