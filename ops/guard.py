"""The quality check before a deploy: is the new version measurably worse than the live one?

Both archives carry what their evaluation found (`styles.quality`); a
version that trails the live one by more than the measurements' own spread
is refused unless the admin forces it. A version never measured deploys
with a warning. The decision and both sets of figures go into the
deployment log.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from db.models import GuardDecision
from styles.archive import Archive
from styles.quality import Quality, comparable, read_quality, worse_than

UNMEASURED = "Warning: {style} {version} was never measured (no quality.json): its pictures are unchecked."
LIVE_UNMEASURED = "Note: the live {style} {live} was never measured, so nothing was compared."
OTHER_SPLIT = "Note: {version} and the live {live} were measured on different test pictures or judges: not compared."
REFUSED = ("{style} {version} measures worse than the live {live} on the same test pictures: {worse}. "
           "Nothing changed; add force (--force on the command line) to deploy it anyway.")
FORCED = "Deployed although it measures worse than {live}: {worse}."


@dataclass(frozen=True)
class Check:
    """What the guard decided, why (for the admin, "" when there is nothing to say) and on what figures."""

    decision: GuardDecision
    note: str
    figures: dict[str, Any]

    @property
    def refused(self) -> bool:
        return self.decision == "refused"


def _figures(new: Quality | None, live: Quality | None, worse: list[str]) -> dict[str, Any]:
    return {"version": asdict(new) if new else None, "live": asdict(live) if live else None, "worse": worse}


def check(archive: Archive, live: Archive | None, *, force: bool) -> Check:
    """Compare `archive` with the live version `live` (None: the style serves nothing yet)."""
    style, version = archive.name, archive.version
    new = read_quality(archive.path)
    old = read_quality(live.path) if live is not None else None
    if new is None:
        return Check("unmeasured", UNMEASURED.format(style=style, version=version), _figures(None, old, []))
    if live is None or old is None:
        note = LIVE_UNMEASURED.format(style=style, live=live.version) if live is not None else ""
        return Check("incomparable", note, _figures(new, None, []))
    if not comparable(new, old):
        return Check("incomparable", OTHER_SPLIT.format(version=version, live=live.version), _figures(new, old, []))
    worse = worse_than(new, old)
    if not worse:
        return Check("passed", "", _figures(new, old, []))
    said = "; ".join(worse)
    if force:
        return Check("forced", FORCED.format(live=live.version, worse=said), _figures(new, old, worse))
    return Check("refused", REFUSED.format(style=style, version=version, live=live.version, worse=said),
                 _figures(new, old, worse))
