"""Telegram on webhooks: the real python-telegram-bot updater behind its secret token, the fake Bot API
POSTing updates to it as Telegram does."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from test_telegram import bot_settings, fetched_all, running_bot

from bots import webhook
from fakes.telegram import FakeTelegram
from torchserve_fixture import free_ports

SECRET = "s3cret_Token-1"


@pytest.fixture
async def api() -> AsyncIterator[FakeTelegram]:
    async with FakeTelegram() as fake:
        yield fake
    assert fake.unknown == []


async def test_updates_come_by_webhook_and_need_the_secret(
    api: FakeTelegram, bots_model_store: Path, sqlite_db_url: str, face_jpeg: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    port = free_ports(1)[0]
    url = f"http://127.0.0.1:{port}/telegram/hook"
    settings = bot_settings(
        api, bots_model_store, sqlite_db_url, telegram_webhook_url=url, telegram_webhook_listen="127.0.0.1",
        telegram_webhook_port=port, telegram_webhook_secret=SECRET,
    )
    caplog.set_level(logging.INFO)
    async with running_bot(api, settings):
        [registered] = await api.wait_for("setWebhook")
        assert registered.fields["url"] == url and registered.fields["secret_token"] == SECRET
        api.send_photo(101, face_jpeg)  # POSTed with the secret
        [photo] = await api.wait_for("sendPhoto", chat_id=101)
        assert photo.fields["caption"] == "Selfie to anime"

        forged = {"update_id": 999, "message": {
            "message_id": 999, "date": 0, "chat": {"id": 202, "type": "private", "first_name": "Eve"},
            "from": {"id": 202, "is_bot": False, "first_name": "Eve"}, "text": "/start private words",
        }}
        assert await api.post_update(forged, "wrong-secret") == 403
        assert await api.post_update(forged, None) == 403
        await fetched_all(api)  # had a forged one been taken, it is answered by now

    assert api.deliveries == [200, 403, 403, 200]
    assert len(api.calls_to("sendPhoto", chat_id=101)) == 1  # answered once
    assert api.calls_to("sendMessage", chat_id=202) == []  # the forged ones never reached the bot
    refusals = [r for r in caplog.records if r.name == webhook.UPDATER_LOGGER and r.levelno == logging.WARNING]
    assert [r.getMessage() for r in refusals] == [
        "webhook update refused with 403: had the wrong secret token (its body is neither read nor logged)",
        "webhook update refused with 403: did not include the secret token (its body is neither read nor logged)",
    ]
    assert "private words" not in caplog.text and "wrong-secret" not in caplog.text
    assert "getUpdates" not in {c.method for c in api.calls}


def test_a_webhook_needs_a_secret(api: FakeTelegram, tmp_path: Path) -> None:
    from pydantic import ValidationError

    from config import Settings

    with pytest.raises(ValidationError, match="TELEGRAM_WEBHOOK_SECRET"):
        Settings(_env_file=None, telegram_token=api.token, telegram_webhook_url="https://bot.example/hook")
    with pytest.raises(ValidationError, match="letters, digits"):
        Settings(_env_file=None, telegram_webhook_url="https://bot.example/hook", telegram_webhook_secret="a b")
