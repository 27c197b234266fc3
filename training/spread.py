"""How much a figure measured on a test split would move on another draw of the split.

Half-sampling: the figure is recomputed on many random halves of the pictures
(each set halved on its own, without replacement). For a mean-like statistic a
half-sample's variance, with the finite-population correction, equals the full
sample's, so the halves' std estimates the figure's own std. Unlike the
bootstrap it never repeats a picture, which the unbiased KID would count as a
perfect match.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

ROUNDS = 200


def half_sample_std(
    figure: Callable[..., float], sets: Sequence[np.ndarray], *, rounds: int = ROUNDS, seed: int = 0
) -> float:
    """Std of `figure(*halves)` over `rounds` random halves of each of `sets` (arrays indexed by picture)."""
    if any(len(s) < 4 for s in sets):
        return float("nan")  # too few pictures to say
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(rounds):
        halves = [s[rng.choice(len(s), len(s) // 2, replace=False)] for s in sets]
        values.append(figure(*halves))
    return float(np.std(values, ddof=1))
