"""`python -m ops deploy | rollback | models` on the embedded engine, with the deployment log."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from test_deploy import broken_copy
from torchserve_fixture import export_tiny_styles

from ops import guard
from ops import cli

torch.set_num_threads(1)
UNMEASURED = " " + guard.UNMEASURED.format(style="selfie2anime", version="2.0")  # tiny archives carry no quality.json


def test_deploy_a_broken_version_deploy_a_good_one_and_roll_back(
    tmp_path: Path, sqlite_db_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("DATABASE_URL", sqlite_db_url)
    monkeypatch.delenv("TORCHSERVE_URL", raising=False)
    store = tmp_path / "model_store"
    export_tiny_styles(store, "selfie2anime")
    export_tiny_styles(store, "selfie2anime", "--version", "2.0", seed=1)
    capsys.readouterr()

    def serving(*args: str) -> tuple[int, str, str]:
        code = cli.main(["--model-store", str(store), *args])
        out, err = capsys.readouterr()
        return code, out, err

    # Each command is a new process: the engine starts on the oldest archive (what shipped), then the logged default.
    assert serving("deploy", "selfie2anime", "1.0")[:2] == (0, "selfie2anime 1.0 is the default now (was 1.0).\n")
    broken_copy(store / "selfie2anime.mar", "3.0")
    code, _, err = serving("deploy", "selfie2anime", "3.0")
    assert code == 1 and "selfie2anime 3.0 did not work" in err
    assert serving("deploy", "selfie2anime", "2.0")[:2] == (0, f"selfie2anime 2.0 is the default now (was 1.0).{UNMEASURED}\n")
    code, out, _ = serving("rollback", "selfie2anime")
    assert (code, out) == (0, "selfie2anime 1.0 is the default now (was 2.0).\n")
    code, out, _ = serving("models")
    assert code == 0
    lines = out.splitlines()
    assert lines[lines.index("selfie2anime (default 1.0)") + 1].startswith("  1.0 * - ")
    assert "by cli:" in out and "  3.0 - never deployed" in out
