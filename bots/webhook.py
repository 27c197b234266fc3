"""Telegram on webhooks, as python-telegram-bot runs them: several bot replicas behind one public URL.

Long polling allows one process per token; with TELEGRAM_WEBHOOK_URL set,
Telegram POSTs each update to that address instead, a load balancer spreads
them over the replicas, and each replica's updater (PTB's `start_webhook`,
tornado) listens on TELEGRAM_WEBHOOK_LISTEN:TELEGRAM_WEBHOOK_PORT. Every
replica registers the same URL and secret at start (`setWebhook` is
idempotent); an update without the secret in `X-Telegram-Bot-Api-Secret-Token`
is refused with 403 by PTB and logged here, without its body.
"""

from __future__ import annotations

import logging
from urllib.parse import urlsplit

from telegram import Update
from telegram.ext import Application

from config import Settings, reveal

logger = logging.getLogger(__name__)

UPDATER_LOGGER = "telegram.ext.Updater"  # PTB's updater and its webhook server log here
# What PTB says, at DEBUG, when it refuses an update for its secret token.
REFUSED = ("Request did not include the secret token", "Request had the wrong secret token")


class RefusedUpdates(logging.Filter):
    """PTB's updater logs a refused update at DEBUG only (with the token it got), and every accepted
    update's whole JSON at DEBUG too: this passes the refusals on as warnings without the token,
    and keeps every other DEBUG line of the updater, bodies and all, out of the log."""

    def filter(self, record: logging.LogRecord) -> bool:
        reason = next((r for r in REFUSED if str(record.msg).startswith(r)), None)
        if reason is not None:
            record.levelno, record.levelname = logging.WARNING, "WARNING"
            record.msg, record.args = "webhook update refused with 403: %s (its body is neither read nor logged)", (
                reason.removeprefix("Request ").lower(),)
            return True
        return record.levelno > logging.DEBUG


def log_refusals() -> None:
    """Let PTB's refusals through `RefusedUpdates` (once per process)."""
    updater = logging.getLogger(UPDATER_LOGGER)
    if not any(isinstance(f, RefusedUpdates) for f in updater.filters):
        updater.addFilter(RefusedUpdates())
        updater.setLevel(logging.DEBUG)  # the refusals are DEBUG records: the filter drops the others


async def start(app: Application, settings: Settings) -> None:
    """Listen for updates on the webhook and register it with Telegram (URL and secret).

    The listener serves the public URL's own path, so a balancer forwards the path unchanged."""
    assert app.updater is not None and settings.telegram_webhook_url is not None
    log_refusals()
    url = settings.telegram_webhook_url
    await app.updater.start_webhook(
        listen=settings.telegram_webhook_listen,
        port=settings.telegram_webhook_port,
        url_path=urlsplit(url).path.strip("/"),
        webhook_url=url,
        secret_token=reveal(settings.telegram_webhook_secret),
        allowed_updates=Update.ALL_TYPES,
    )
    logger.info(
        "Telegram bot @%s takes updates at %s (listening on %s:%d)",
        app.bot.username, url, settings.telegram_webhook_listen, settings.telegram_webhook_port,
    )
