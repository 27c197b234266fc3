"""The one `Settings` of every process comes from the environment and `.env`; tokens never show in a repr."""

from __future__ import annotations

from pathlib import Path

import pytest

from config import REPO_ROOT, Settings


def test_defaults_serve_the_web_page_from_the_repo_model_store(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO_ROOT / "tests")  # no .env here
    for name in ("TELEGRAM_TOKEN", "DISCORD_TOKEN", "TORCHSERVE_URL", "DATABASE_URL", "WEB_PORT", "MODEL_STORE",
                 "DATASETS_DIR"):
        monkeypatch.delenv(name, raising=False)
    settings = Settings()
    assert settings.telegram_token is None and settings.discord_token is None
    assert settings.torchserve_url is None  # the embedded engine
    assert settings.model_store == REPO_ROOT / "model_store"
    assert (settings.web_host, settings.web_port) == ("127.0.0.1", 8000)
    assert settings.default_style == "selfie2anime"
    assert settings.database_url == f"sqlite+aiosqlite:///{REPO_ROOT / 'var' / 'toonbot.sqlite3'}"
    assert settings.datasets_dir is None  # the training worker then needs --datasets


def test_environment_and_dotenv(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("TELEGRAM_TOKEN=123:from-dotenv\nDISCORD_TOKEN=\nREQUESTS_PER_MINUTE=3\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("ADMIN_IDS", "11, 22,33")
    monkeypatch.setenv("REQUESTS_PER_MINUTE", "7")  # the environment wins over .env
    monkeypatch.setenv("DATABASE_URL", "")  # empty: unset, the default SQLite file
    monkeypatch.setenv("DATASETS_DIR", "/data/datasets")
    settings = Settings()
    assert settings.telegram_token is not None
    assert settings.telegram_token.get_secret_value() == "123:from-dotenv"
    assert "from-dotenv" not in repr(settings)
    assert settings.discord_token is None  # left empty, as in .env.example
    assert settings.admin_ids == [11, 22, 33]
    assert settings.requests_per_minute == 7
    assert settings.database_url.endswith("/var/toonbot.sqlite3")
    assert settings.datasets_dir == Path("/data/datasets")


def test_impossible_limits_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MAX_IN_FLIGHT", "0")
    with pytest.raises(ValueError, match="max_in_flight"):
        Settings()
