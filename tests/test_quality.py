"""quality.json and what it decides: a worse version by more than the spread, a style below its bar,
the figures' arithmetic, and the committed judges (small, with their accuracy)."""

from __future__ import annotations

import zipfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from bots import messages
from bots.admin import Admin
from bots.core import Request
from ops.deploy import Outcome, StyleReport, VersionInfo, describe_models
from styles.catalog import Bar
from styles.quality import Figure, Quality, below_bar, read_quality, worse_than, write_quality
from training import kid, spread
from training.judge_net import JUDGES, load_judge

PAIRS = ("selfie2anime", "cat2dog", "horse2zebra", "vangogh2photo")


def quality(judged: float = 0.9, kid100: float = 20.0, sharp: float = 0.5, *, split_id: str = "s1") -> Quality:
    """A plausible evaluation with the spreads a 50-picture test split gives."""
    return Quality(
        pair="cat2dog", split="testA", split_id=split_id, offered=50, drawn=Figure(1.0, 0.0),
        judged=Figure(judged, 0.04), kid=Figure(kid100, 3.0), sharpness=Figure(sharp, 0.03),
        untranslated_judged=0.05, untranslated_kid=200.0, seconds_per_picture=0.3, judge_accuracy=0.97,
        date="2026-12-06", machine="test",
    )


def test_a_broken_version_is_worse_by_more_than_the_spread() -> None:
    worse = worse_than(quality(judged=0.1, kid100=150.0, sharp=5.0), quality())
    assert [w.split()[0] for w in worse] == ["judged", "kid", "sharpness"]
    assert "worse by 0.80" in worse[0]


def test_a_difference_within_the_spread_is_not_worse() -> None:
    assert worse_than(quality(judged=0.86, kid100=24.0), quality()) == []
    assert worse_than(quality(judged=0.95, kid100=10.0), quality()) == []  # better


def test_other_test_pictures_are_not_compared() -> None:
    assert worse_than(quality(judged=0.1, split_id="other"), quality()) == []


def test_below_bar_says_which_figure() -> None:
    assert below_bar(quality(judged=0.4), Bar()).figure == "judged"
    assert below_bar(quality(kid100=90.0), Bar(max_kid=60.0)).figure == "kid"
    assert below_bar(quality(sharp=0.03), Bar(min_sharpness=0.1)).figure == "sharpness"
    assert below_bar(quality(), Bar(max_kid=60.0, min_sharpness=0.1)) is None
    assert below_bar(None, Bar()) is None  # never measured: nothing to say


def test_quality_json_replaces_the_old_one_and_keeps_the_rest(tmp_path: Path) -> None:
    archive = tmp_path / "x.mar"
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("MAR-INF/MANIFEST.json", "{}")
    assert read_quality(archive) is None
    write_quality(archive, quality())
    write_quality(archive, replace(quality(), offered=7))
    with zipfile.ZipFile(archive) as z:
        assert sorted(z.namelist()) == ["MAR-INF/MANIFEST.json", "quality.json"]
    assert read_quality(archive) == replace(quality(), offered=7)


def test_kid_is_near_zero_for_one_distribution_and_grows_with_a_shift() -> None:
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(200, 16)), rng.normal(size=(200, 16))
    assert abs(kid.kid(a, b)) < 0.05
    assert kid.kid(a, b + 1.0) > 1.0


def test_half_sample_spread_matches_the_std_of_a_mean() -> None:
    x = np.random.default_rng(1).normal(size=400)
    estimated = spread.half_sample_std(lambda s: float(s.mean()), [x])
    assert estimated == pytest.approx(1 / np.sqrt(400), rel=0.25)


@pytest.mark.parametrize("pair", PAIRS)
def test_committed_judges_are_small_and_state_their_accuracy(pair: str) -> None:
    path = JUDGES / f"{pair}.pt"
    assert path.stat().st_size <= 2_000_000
    judge = load_judge(path)
    assert judge.meta["pair"] == pair and judge.meta["test_accuracy"] >= 0.9


def test_models_lists_each_version_beside_the_live_one() -> None:
    report = StyleReport("cat2dog", "1.0", (
        VersionInfo("1.0", None, None, quality()),
        VersionInfo("2.0", None, None, quality(judged=0.1)),
        VersionInfo("3.0", None, None, None),
    ))
    lines = describe_models([report])
    assert lines[1].startswith("  1.0 *") and "judged 0.90±0.04, KID 20.0±3.0" in lines[2]
    assert "worse than live: judged 0.10 vs 0.90" in lines[4]
    assert lines[6].strip() == "not measured (no quality.json)"
    experimental = describe_models([StyleReport("cat2dog", "2.0", report.versions)])
    assert "experimental: judged 0.10, bar" in experimental[4]


async def test_deploy_force_in_chat() -> None:
    asked: list[tuple[str, str, bool]] = []

    class Deployer:
        async def deploy(self, style: str, version: str, *, by: str, force: bool = False) -> Outcome:
            asked.append((style, version, force))
            return Outcome(True, "done")

    admin = Admin(deployer=Deployer(), sessions=None, admin_ids=[1])  # type: ignore[arg-type]
    as_admin = Request(platform="telegram", user_id="1", chat_id="1", text="")
    for text in ("selfie2anime 2.0", "selfie2anime 2.0 force"):
        await admin._deploy(as_admin, text)
    assert asked == [("selfie2anime", "2.0", False), ("selfie2anime", "2.0", True)]
    assert (await admin._deploy(as_admin, "selfie2anime 2.0 now")).text == messages.ADMIN_USAGE["deploy"]
