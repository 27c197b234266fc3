"""bench/latency.py's inference-paths table on a tiny generator: a row per path, sane fields.

Checks what the table reports, never how fast (speed is measured in bench/, not asserted).
"""

from __future__ import annotations

import copy
import math
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

import latency  # noqa: E402  (also puts styles/payload on sys.path)
from latency import acceleration  # noqa: E402
from styles.payload.networks import ResnetGenerator  # noqa: E402

SIZE = 32


@pytest.fixture(scope="module")
def peaks() -> dict[str, float]:
    torch.set_num_threads(1)
    return latency.measure_peaks(reps=1)


def test_peaks_are_measured_for_each_compute_dtype_the_cpu_has(peaks) -> None:
    assert set(peaks) == {"fp32", "int8"} | ({"bf16"} if acceleration.cpu_has_bf16() else set())
    assert all(math.isfinite(v) and v > 0 for v in peaks.values())


def test_paths_table_has_eager_float32_then_a_row_per_candidate(peaks, capsys) -> None:
    torch.manual_seed(0)
    generator = ResnetGenerator(ngf=8, n_blocks=1, img_size=SIZE, light=True).eval()
    rows = latency.paths_table(generator, SIZE, peaks, runs=2)

    expected = ["eager-fp32"] + [name for name, _ in acceleration.candidates(copy.deepcopy(generator), latency.CPU)]
    assert [r.name for r in rows] == expected
    assert rows[0].psnr_db == math.inf  # the baseline against itself
    for r in rows:
        assert r.psnr_db >= acceleration.PSNR_FLOOR_DB, r.name
        assert sorted(r.ms) == list(latency.BATCHES)
        assert all(0 < median <= p95 for median, p95 in r.ms.values()), r.name
        assert r.peak_mib >= 0
        assert math.isfinite(r.gflops) and r.gflops > 0
        assert math.isfinite(r.share) and r.share > 0
    assert all(p.is_contiguous() for p in generator.parameters())  # the caller's generator is left as it was

    latency.print_paths(rows, peaks)
    printed = capsys.readouterr().out
    assert all(name in printed for name in expected) and "fastest:" in printed and "GFLOP/s" in printed


def test_cpu_name_names_the_processor() -> None:
    assert "family" in latency.cpu_name() and "model" in latency.cpu_name()


def test_process_age_counts_from_this_process_start() -> None:
    assert 0 < latency.process_age() < float(Path("/proc/uptime").read_text().split()[0])
