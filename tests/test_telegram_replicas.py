"""Two Telegram bot replicas as real processes (`python -m bots telegram` on webhooks, as docs/deploy.md
starts them: one secret, one database, a port each) behind a round-robin balancer, fed by the fake Bot API."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import signal
import sys
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path

import aiohttp
from aiohttp import web

from fakes.telegram import FakeTelegram
from torchserve_fixture import free_ports

SECRET = "replica_Secret-2"
HOOK = "/telegram/hook"
SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"
READY = "takes updates at"  # bots.webhook logs it once the replica listens
PATIENT_BOTS = str(Path(__file__).with_name("patient_bots.py"))
START_TIMEOUT_S = 240.0  # two interpreters loading torch side by side on a loaded 2-core machine


class RoundRobin:
    """The load balancer at the public URL: each update to the next replica in turn, path and headers unchanged."""

    def __init__(self, ports: list[int]) -> None:
        self.ports = ports
        self.turns = itertools.cycle(range(len(ports)))
        self.forwarded: list[tuple[int, int, int]] = []  # (replica, the update's message_id, the status it answered)
        self.url = ""

    async def forward(self, request: web.Request) -> web.Response:
        replica = next(self.turns)
        body = await request.read()
        headers = {k: request.headers[k] for k in ("Content-Type", SECRET_HEADER) if k in request.headers}
        async with aiohttp.ClientSession() as client:
            async with client.post(f"http://127.0.0.1:{self.ports[replica]}{request.path_qs}", data=body,
                                   headers=headers) as response:
                answer = await response.read()
        self.forwarded.append((replica, json.loads(body)["message"]["message_id"], response.status))
        return web.Response(status=response.status, body=answer)

    @asynccontextmanager
    async def running(self) -> AsyncIterator[RoundRobin]:
        app = web.Application()
        app.router.add_post(HOOK, self.forward)
        runner = web.AppRunner(app)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        self.url = f"http://127.0.0.1:{runner.addresses[0][1]}{HOOK}"
        try:
            yield self
        finally:
            await runner.cleanup()

    def replicas_of(self, message_ids: list[int]) -> list[int]:
        """Which replica each of these messages went to, in their order."""
        went = {message: replica for replica, message, _ in self.forwarded}
        return [went[m] for m in message_ids]


@asynccontextmanager
async def replicas(
    api: FakeTelegram, balancer: RoundRobin, model_store: Path, database_url: str, folder: Path
) -> AsyncIterator[list[Path]]:
    """Both replicas started and listening; their logs (files) come back, complete once the block has
    stopped them with SIGTERM and they exited 0."""
    processes: list[asyncio.subprocess.Process] = []
    logs = [folder / f"replica{i}.log" for i in range(len(balancer.ports))]
    minute = time.time()
    async with AsyncExitStack() as stack:
        for port, log in zip(balancer.ports, logs, strict=True):
            env = {
                **os.environ,
                "TELEGRAM_TOKEN": api.token, "TELEGRAM_API_URL": api.url, "DISCORD_TOKEN": "",
                "TELEGRAM_WEBHOOK_URL": balancer.url, "TELEGRAM_WEBHOOK_SECRET": SECRET,
                "TELEGRAM_WEBHOOK_LISTEN": "127.0.0.1", "TELEGRAM_WEBHOOK_PORT": str(port),
                "MODEL_STORE": str(model_store), "DATABASE_URL": database_url,
                "SHARED_LIMITS": "true", "REQUESTS_PER_MINUTE": "2", "OMP_NUM_THREADS": "1",
                "TOONBOT_TEST_MINUTE": str(minute),  # both replicas' one minute, however long the photos take
            }
            out = stack.enter_context(log.open("wb"))
            process = await asyncio.create_subprocess_exec(  # `python -m bots telegram`, waiting for its database
                sys.executable, PATIENT_BOTS, "telegram", cwd=folder, env=env,  # folder: no .env to read
                stdout=out, stderr=asyncio.subprocess.STDOUT,
            )
            processes.append(process)
        try:
            for process, log in zip(processes, logs, strict=True):
                await _logged(process, log, READY)
            yield logs
        finally:
            for process in processes:
                if process.returncode is None:
                    process.send_signal(signal.SIGTERM)
            codes = [await asyncio.wait_for(p.wait(), 60) for p in processes]
    assert codes == [0, 0], "\n".join(log.read_text() for log in logs)


async def _logged(process: asyncio.subprocess.Process, log: Path, text: str) -> None:
    """Wait until the replica's log says `text` (it fails at once if the process ends first)."""
    deadline = time.monotonic() + START_TIMEOUT_S
    while text not in log.read_text(errors="replace"):
        assert process.returncode is None, log.read_text()
        assert time.monotonic() < deadline, f"no {text!r} within {START_TIMEOUT_S:.0f} s:\n{log.read_text()}"
        await asyncio.sleep(0.2)


async def test_two_replicas_share_the_updates_the_secret_and_the_limits(
    db_url: str, engine_model_store: Path, tmp_path: Path, face_jpeg: bytes
) -> None:
    async with FakeTelegram() as api, RoundRobin(free_ports(2)).running() as balancer:
        async with replicas(api, balancer, engine_model_store, db_url, tmp_path) as logs:
            assert [c.fields["url"] for c in api.calls_to("setWebhook")] == [balancer.url] * 2

            helps = [api.send_text(user, "/help")["message_id"] for user in (11, 12, 13, 14)]
            for user in (11, 12, 13, 14):
                await api.wait_for("sendMessage", chat_id=user, timeout=120)

            photos = []  # one user's photos, one after the other: two a minute are allowed, wherever they land
            for count in range(1, 5):
                photos.append(api.send_photo(42, face_jpeg)["message_id"])
                await api.wait_for(("sendPhoto", "sendMessage"), chat_id=42, count=count, timeout=120)

            forged = {"update_id": 999, "message": {
                "message_id": 999, "date": 0, "chat": {"id": 202, "type": "private", "first_name": "Eve"},
                "from": {"id": 202, "is_bot": False, "first_name": "Eve"}, "text": "/start private words",
            }}
            assert await api.post_update(forged, "wrong-secret") == 403
            assert await api.post_update(forged, None) == 403
        # Both replicas have stopped: any second answer to an update would be among the calls by now.

    delivered = [(r, m, s) for r, m, s in balancer.forwarded if m in helps + photos]
    assert sorted(m for _, m, _ in delivered) == sorted(helps + photos) and {s for *_, s in delivered} == {200}
    assert [len(api.calls_to("sendMessage", chat_id=user)) for user in (11, 12, 13, 14)] == [1] * 4
    assert {r for r, _, _ in delivered} == {0, 1}  # both replicas took updates

    assert balancer.replicas_of(photos) == [0, 1, 0, 1] or balancer.replicas_of(photos) == [1, 0, 1, 0]
    answers = [c.method for c in api.calls_to(("sendPhoto", "sendMessage"), chat_id=42)]
    assert answers == ["sendPhoto", "sendPhoto", "sendMessage", "sendMessage"]  # each replica alone would draw all 4
    assert "at most 2 photos a minute" in api.calls_to("sendMessage", chat_id=42)[0].fields["text"]

    assert [s for _, m, s in balancer.forwarded if m == 999] == [403, 403]
    assert api.calls_to("sendMessage", chat_id=202) == []
    texts = [log.read_text() for log in logs]
    refused = [t.count("webhook update refused with 403") for t in texts]
    assert refused == [1, 1], refused  # one forged update reached each replica, and was refused there
    assert not any("private words" in t or "wrong-secret" in t or api.token in t for t in texts)
