"""Configuration of every toonbot process: environment variables and an optional `.env` file, read once.

The bots, `python -m serving`, `python -m ops`, the training worker and queue
commands and Alembic's environment all read this one `Settings`; a command
line's flags (`--model-store`, `--torchserve`, `--database-url`) override it
for that run. It imports nothing of toonbot's but the handler's upload limit
(`styles.payload.refusals`, itself a leaf), so every package may import it.
"""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path
from typing import Annotated

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from styles.payload import refusals

REPO_ROOT = Path(__file__).resolve().parents[1]


def default_database_url() -> str:
    """The SQLite file used when DATABASE_URL is not set: var/toonbot.sqlite3 in the repository
    (`db.engine.create_engine` makes the folder)."""
    return f"sqlite+aiosqlite:///{REPO_ROOT / 'var' / 'toonbot.sqlite3'}"


class Settings(BaseSettings):
    """Everything any process reads from the environment; tokens stay `SecretStr` so they never print."""

    # Empty values count as unset, so .env.example's `TELEGRAM_TOKEN=` starts no bot.
    model_config = SettingsConfigDict(
        env_file=".env", env_file_encoding="utf-8", env_ignore_empty=True, extra="ignore"
    )

    # Front ends: a bot runs only when its token is set.
    telegram_token: SecretStr | None = None
    telegram_api_url: str | None = None  # a self-hosted Bot API server, e.g. http://127.0.0.1:8081
    # Telegram on webhooks, for several replicas behind a load balancer: TELEGRAM_WEBHOOK_URL is the public HTTPS
    # address Telegram POSTs updates to (set with setWebhook at start); the bot listens on
    # TELEGRAM_WEBHOOK_LISTEN:TELEGRAM_WEBHOOK_PORT and refuses any update without TELEGRAM_WEBHOOK_SECRET in its
    # X-Telegram-Bot-Api-Secret-Token header (required with a URL). Unset: long polling, one process per token.
    telegram_webhook_url: str | None = None
    telegram_webhook_listen: str = "127.0.0.1"
    telegram_webhook_port: int = Field(default=8443, ge=1, le=65535)
    telegram_webhook_secret: SecretStr | None = None
    discord_token: SecretStr | None = None
    # Shards: one gateway connection serves at most 2,500 servers. Unset count: as many as Discord recommends,
    # all in this process; with several processes, each takes DISCORD_SHARD_IDS (e.g. 0,1) of DISCORD_SHARD_COUNT.
    discord_shard_count: int | None = Field(default=None, ge=1)
    discord_shard_ids: Annotated[list[int], NoDecode] = Field(default_factory=list)
    discord_dev_guild: int | None = None  # sync slash commands to one guild at once while developing
    discord_api_url: str | None = None
    discord_gateway_url: str | None = None
    # Ask for the privileged Message Content intent (enable it in the Developer Portal first): then a
    # mention replying to anyone's image sees that image. Off: only the bot's own, DMs, or mentions.
    discord_message_content: bool = False
    web_host: str = "127.0.0.1"
    web_port: int = 8000
    # Host names the page answers to (name or name:port); unset: WEB_HOST's, or the loopback names
    # when WEB_HOST is local or 0.0.0.0. Anything else gets 421, so DNS rebinding cannot reach it.
    web_allowed_hosts: Annotated[list[str], NoDecode] = Field(default_factory=list)
    web_secret: SecretStr | None = None  # signs visitor cookies; unset: a random key per process
    web_requests_per_minute_per_ip: int | None = Field(default=None, ge=1)  # unset: REQUESTS_PER_MINUTE
    # Uploads to the page: the headers within WEB_HEADER_TIMEOUT_S of the connection (or the last answer),
    # the body within WEB_BODY_TIMEOUT_S (else 408); at most WEB_UPLOADS_PER_IP at once from one address
    # (429) and WEB_UPLOAD_BUDGET_BYTES held for all of them (503), checked before a byte is read.
    web_header_timeout_s: float = Field(default=10.0, gt=0)
    web_body_timeout_s: float = Field(default=40.0, gt=0)
    web_uploads_per_ip: int = Field(default=2, ge=1)
    web_upload_budget_bytes: int = Field(default=200 * 2**20, ge=2**20)
    admin_ids: Annotated[list[int], NoDecode] = Field(default_factory=list)
    # /metrics, /healthz and /readyz on a port of their own in the bots' and the training worker's processes
    # (unset: none; the web page serves them on its own port anyway). 0.0.0.0 in a container.
    metrics_host: str = "127.0.0.1"
    metrics_port: int | None = Field(default=None, ge=1, le=65535)

    # Data and models.
    database_url: str = Field(default_factory=default_database_url)
    torchserve_url: str | None = None  # unset: the embedded engine serves model_store/ in-process
    torchserve_token: SecretStr | None = None  # TorchServe's inference key
    # Unset: the inference port + 1, as TorchServe lays out. Several, comma-separated: every replica's, and a
    # deploy registers on each (its check on each replica's own inference API, one port below).
    torchserve_management_url: str | None = None
    torchserve_management_token: SecretStr | None = None  # unset: the inference key
    # How long `python -m serving start` (and `python -m ops start`) waits for a local TorchServe to answer:
    # Java's start alone has taken over a minute on a loaded 2-core machine. Past it, Java is stopped.
    torchserve_start_timeout_s: float = Field(default=300.0, gt=0)
    model_store: Path = REPO_ROOT / "model_store"

    # Behaviour.
    default_style: str = "selfie2anime"
    requests_per_minute: int = Field(default=10, ge=1)  # per user
    max_in_flight: int = Field(default=4, ge=1)  # all users together; more wait in line
    # Per group chat (Telegram group, Discord server), beside each member's own limits:
    # its photos drawn at once (below MAX_IN_FLIGHT, so others always get a slot) and a minute.
    chat_max_in_flight: int = Field(default=2, ge=1)
    chat_requests_per_minute: int = Field(default=20, ge=1)
    # The minutes' counts (per user, address and group) and each user's one photo at a time kept in the database,
    # so replicas share them; unset: on with PostgreSQL, off with SQLite (in memory, per process).
    shared_limits: bool | None = None
    max_upload_bytes: int = Field(default=refusals.MAX_BYTES, ge=1)  # the handler's limit; also Telegram's for bots
    output_size: int | None = Field(default=None, ge=32, le=2048)  # None: the size each style draws at
    # While more photos than this wait for a model slot, a new one skips its style's learned upscaler and is
    # resized to the same size instead (~0.05 instead of ~0.4 CPU-s for selfie2anime), so a burst drains in
    # seconds (bench/load.py); a large number never skips.
    upscale_backlog: int = Field(default=4, ge=0)
    # Animated GIFs and MP4 videos, drawn frame by frame: longer clips are refused with these limits
    # in the words; larger frames are scaled down to ANIMATION_MAX_PIXELS before drawing.
    animation_max_seconds: float = Field(default=10.0, gt=0)
    animation_max_frames: int = Field(default=300, ge=1)
    animation_max_pixels: int = Field(default=1280 * 720, ge=64 * 64)
    # Refused from the headers before a frame is decoded: a frame as sent (a GIF's screen, a video's frame)
    # past ANIMATION_MAX_INPUT_PIXELS (4K), or more than ANIMATION_MAX_TOTAL_PIXELS in all (frames x
    # pixels: 10 s of 1080p at 30 frames a second); decoding costs that, whatever is drawn.
    animation_max_input_pixels: int = Field(default=3840 * 2160, ge=64 * 64)
    animation_max_total_pixels: int = Field(default=1920 * 1080 * 300, ge=64 * 64)
    # Clips decoded and drawn at once (their frames take model slots one at a time, between photos);
    # more wait in line.
    animation_max_in_flight: int = Field(default=2, ge=1)
    jobs_poll_s: float = Field(default=5.0, gt=0)  # how often finished training jobs are looked for

    # Training worker: the dataset root holding <pair>/trainA, trainB, testA, testB.
    datasets_dir: Path | None = None

    @property
    def torchserve_management_urls(self) -> list[str]:
        """Every TorchServe replica's management API (TORCHSERVE_MANAGEMENT_URL, comma-separated)."""
        return [url.strip() for url in (self.torchserve_management_url or "").split(",") if url.strip()]

    @property
    def limits_in_database(self) -> bool:
        """Whether the rate limits live in the database (SHARED_LIMITS, else whether it is PostgreSQL)."""
        return self.shared_limits if self.shared_limits is not None else self.database_url.startswith("postgresql")

    @field_validator("telegram_webhook_secret")
    @classmethod
    def _telegram_secret(cls, value: SecretStr | None) -> SecretStr | None:
        """Telegram takes 1-256 characters A-Z, a-z, 0-9, _ and - (setWebhook's secret_token)."""
        if value is not None and not re.fullmatch(r"[A-Za-z0-9_-]{1,256}", value.get_secret_value()):
            raise ValueError("TELEGRAM_WEBHOOK_SECRET: 1-256 letters, digits, _ or -")
        return value

    @model_validator(mode="after")
    def _webhook_needs_secret(self) -> Settings:
        """A webhook without a secret would take updates from anyone who finds its address."""
        if self.telegram_webhook_url and self.telegram_webhook_secret is None:
            raise ValueError("TELEGRAM_WEBHOOK_URL needs TELEGRAM_WEBHOOK_SECRET")
        return self

    @model_validator(mode="after")
    def _shards_within_count(self) -> Settings:
        """Shard ids are 0 .. DISCORD_SHARD_COUNT - 1, and need the count."""
        count = self.discord_shard_count
        if self.discord_shard_ids and (count is None or not all(0 <= i < count for i in self.discord_shard_ids)):
            raise ValueError("DISCORD_SHARD_IDS needs DISCORD_SHARD_COUNT, and each id below it")
        return self

    @field_validator("admin_ids", "web_allowed_hosts", "discord_shard_ids", mode="before")
    @classmethod
    def _split_ids(cls, value: object) -> object:
        """Accept `ADMIN_IDS=1,2,3` (or `WEB_ALLOWED_HOSTS=a,b`) as people write it, not only JSON."""
        if isinstance(value, str):
            return [part for part in value.replace(" ", "").split(",") if part]
        return value


@lru_cache
def get_settings() -> Settings:
    """The process-wide settings, read on first use."""
    return Settings()


def reveal(secret: SecretStr | None) -> str | None:
    """A token's text, for the one call that sends it."""
    return secret.get_secret_value() if secret is not None else None
