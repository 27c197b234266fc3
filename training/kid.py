"""Kernel Inception Distance (Binkowski et al. 2018) on any features: how far two picture sets lie apart.

Unbiased, cubic polynomial kernel, reported x100. The features are the
product's own judge's (`training.judge_net`), not Inception's (nothing is
downloaded), so a figure compares only with figures from the same judge.
"""

from __future__ import annotations

import numpy as np


def kid(x: np.ndarray, y: np.ndarray) -> float:
    """KID between feature rows `x` (m, d) and `y` (n, d); needs m, n >= 2."""
    d = x.shape[1]

    def k(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return (a @ b.T / d + 1.0) ** 3

    m, n = len(x), len(y)
    kxx, kyy = k(x, x), k(y, y)
    within = (kxx.sum() - np.trace(kxx)) / (m * (m - 1)) + (kyy.sum() - np.trace(kyy)) / (n * (n - 1))
    return float(within - 2.0 * k(x, y).mean())


def kid100(x: np.ndarray, y: np.ndarray) -> float:
    """KID x100, the scale reports use."""
    return 100.0 * kid(x, y)
