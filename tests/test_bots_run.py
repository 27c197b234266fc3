"""`make run` (`python -m bots`): migrations, the web page and each configured bot in one process."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import aiohttp
import pytest

from bots import run
from config import get_settings
from fakes.telegram import FakeTelegram
from test_db_usage import SqliteLock
from waiting import HANG_S, START_S, until

if TYPE_CHECKING:
    from conftest import ReadUsage

PAGE = r"web page: (http://\S+)"  # logged once the page serves, on the port it bound (WEB_PORT=0)


async def logged(process: asyncio.subprocess.Process, pattern: str, log: list[str]) -> re.Match[str]:
    """Read the child's output line by line (kept in `log`) until one matches `pattern`; fails if the
    output ends first."""
    assert process.stdout is not None
    while True:
        line = await process.stdout.readline()
        assert line, "".join(log)
        log.append(line.decode())
        if found := re.search(pattern, log[-1]):
            return found


async def test_one_process_serves_the_page_and_the_telegram_bot(
    read_usage: ReadUsage, engine_model_store: Path, tmp_path: Path, face_jpeg: bytes
) -> None:
    database_url = f"sqlite+aiosqlite:///{tmp_path / 'fresh.sqlite3'}"  # not migrated yet
    lines: list[str] = []
    async with FakeTelegram() as api:
        env = {
            **os.environ,
            "TELEGRAM_TOKEN": api.token,
            "TELEGRAM_API_URL": api.url,
            "DISCORD_TOKEN": "",
            "MODEL_STORE": str(engine_model_store),
            "DATABASE_URL": database_url,
            "WEB_PORT": "0",
            "OMP_NUM_THREADS": "1",
        }
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bots", cwd=tmp_path, env=env,  # tmp_path: no .env to read
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        )
        try:
            api.send_photo(42, face_jpeg)
            await api.wait_for("sendPhoto", chat_id=42, timeout=120)
            url = (await logged(process, PAGE, lines))[1]
            async with aiohttp.ClientSession() as client:
                async with client.get(f"{url}/api/styles") as response:
                    styles = await response.json()
        finally:
            process.send_signal(signal.SIGTERM)
            output, _ = await asyncio.wait_for(process.communicate(), 60)
    log = "".join(lines) + output.decode()
    assert process.returncode == 0, log
    assert "web page: http://127.0.0.1:" in log and "Telegram bot @toonbot_test_bot" in log
    assert api.token not in log  # secrets never reach the log
    assert [s["name"] for s in styles["styles"]] == ["anime2selfie", "selfie2anime"]
    rows = await read_usage(database_url)  # migrated by the runner, flushed at shutdown
    assert [(r.platform, r.platform_user_id, r.status) for r in rows] == [("telegram", "42", "ok")]


def test_a_bot_without_its_token_is_refused_clearly(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("TELEGRAM_TOKEN", raising=False)
    get_settings.cache_clear()
    try:
        with pytest.raises(SystemExit) as exit_info:
            run.main(["telegram"])
    finally:
        get_settings.cache_clear()
    assert exit_info.value.code == 2
    assert "telegram needs TELEGRAM_TOKEN" in capsys.readouterr().err


BUNDLED_STORE = Path(__file__).resolve().parents[1] / "model_store"
STOP_WITHIN_S = 2.0  # issue 15: Ctrl-C or SIGTERM stops the process within 2 s at any moment


def slowdown(work_s: float = 0.1) -> float:
    """How many times its CPU time a fixed piece of work takes here now (1: a core to itself): on a
    loaded machine, a process's own work takes that much longer, whatever the code."""
    wall, cpu = time.perf_counter(), time.process_time()
    while time.process_time() - cpu < work_s:
        pass
    return max(1.0, (time.perf_counter() - wall) / work_s)


async def database_answers(client: aiohttp.ClientSession, readyz: str) -> bool:
    """Whether the page's own check of its database passes now."""
    async with client.get(readyz) as response:
        return bool((await response.json())["checks"].get("database"))


@pytest.mark.full  # a child process over the bundled styles, compiling them
@pytest.mark.parametrize("moment", ["migrating", "compiling"])
async def test_a_stop_signal_ends_the_process_within_two_seconds(
    moment: str, read_usage: ReadUsage, tmp_path: Path
) -> None:
    """Even while a style is compiling (the bundled styles choose their fastest inference path at
    start, which takes over a minute here), and with the usage log still flushed.

    The 2 s are the stop grace (a timer) and the closing work, which on a loaded machine takes as many
    times longer as any work does (`slowdown`, measured beside it); waiting for a compile took 79 s.
    That the exit did not wait for the compile is also seen in the cache: no compile ended after it."""
    database_url = f"sqlite+aiosqlite:///{tmp_path / 'fresh.sqlite3'}"
    env = {k: v for k, v in os.environ.items() if k != "TOONBOT_INFERENCE"}  # compile, as in production
    # Its own compile cache: with the shared one filled, nothing would compile and this would check nothing.
    compile_cache = tmp_path / "compiled"
    env.update({"TELEGRAM_TOKEN": "", "DISCORD_TOKEN": "", "MODEL_STORE": str(BUNDLED_STORE),
                "DATABASE_URL": database_url, "WEB_PORT": "0", "OMP_NUM_THREADS": "1",
                "TOONBOT_COMPILE_CACHE": str(compile_cache)})
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bots", "web", cwd=tmp_path, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )
    lines: list[str] = []
    try:
        async with asyncio.timeout(START_S):
            found = await logged(process, "Running upgrade" if moment == "migrating" else PAGE, lines)
            if moment == "compiling":  # once a compile holds the cache's lock, a request the core logs, then the signal
                while not (compile_cache / ".build.lock").exists():
                    await asyncio.sleep(0.1)
                async with aiohttp.ClientSession() as client:
                    # Until /readyz finds the database answering, as a running page's probes have: the stop
                    # then flushes one row, not the row and the engine's first connection.
                    while not await database_answers(client, f"{found[1]}/readyz"):
                        await asyncio.sleep(0.1)
                    async with client.post(f"{found[1]}/api/stylize", json={}) as response:
                        assert response.status == 415
        verdicts = set(compile_cache.glob("*/verdict.json"))  # the compiles that ended before the signal
        sent = asyncio.get_running_loop().time()
        process.send_signal(signal.SIGINT)
        output, _ = await asyncio.wait_for(process.communicate(), 120)
        took = asyncio.get_running_loop().time() - sent
    finally:
        if process.returncode is None:  # a failed check: the process must not go on compiling for minutes
            process.kill()
            await process.wait()
    log = "".join(lines)
    within = run.STOP_GRACE_S + (STOP_WITHIN_S - run.STOP_GRACE_S) * (load := slowdown())
    assert process.returncode == 0, log + output.decode()
    assert took < within, f"took {took:.1f} s to stop (allowed {within:.1f} s, the machine {load:.1f}x slower)"
    assert set(compile_cache.glob("*/verdict.json")) == verdicts  # the exit did not wait for a compile to end
    if moment == "compiling":
        rows = [(r.platform, r.status) for r in await read_usage(database_url)]
        assert rows == [("web", "bad_input")], log + output.decode()


async def test_a_stop_writes_the_usage_log_before_its_grace_however_slow_the_database(
    read_usage: ReadUsage, tmp_path: Path
) -> None:
    """The usage log's last rows are written first at a stop signal, for as long as the database takes,
    and the stop grace (`run.STOP_GRACE_S`) runs only after: here the database cannot write the row
    until the process says it is writing it (its file locked by another connection), which on a
    loaded machine can be past the grace. The grace cut the write short, and the row was lost."""
    database_url = f"sqlite+aiosqlite:///{tmp_path / 'fresh.sqlite3'}"
    (tmp_path / "store").mkdir()
    env = {**os.environ, "TELEGRAM_TOKEN": "", "DISCORD_TOKEN": "", "MODEL_STORE": str(tmp_path / "store"),
           "DATABASE_URL": database_url, "WEB_PORT": "0", "OMP_NUM_THREADS": "1"}
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bots", "web", cwd=tmp_path, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )
    lock, lines, output, held = SqliteLock(database_url), [], b"", False
    try:
        async with asyncio.timeout(START_S):
            url = (await logged(process, PAGE, lines))[1]
        async with aiohttp.ClientSession() as client:
            await until(lambda: database_answers(client, f"{url}/readyz"), "the page's database connection")
            await lock.cut()  # the page's writes wait from here on
            held = True
            async with client.post(f"{url}/api/stylize", json={}) as response:
                assert response.status == 415  # a usage row, queued
        process.send_signal(signal.SIGINT)
        # Writing it (or, cut short, saying it was not saved): only then can the database take it.
        await logged(process, r"stopping: writing 1 usage rows first|usage records not saved", lines)
        await lock.restore()
        held = False
        output, _ = await asyncio.wait_for(process.communicate(), HANG_S)
    finally:
        if held:
            await lock.restore()
        if process.returncode is None:
            process.kill()
            await process.wait()
    log = "".join(lines) + output.decode()
    assert process.returncode == 0, log
    assert [(r.platform, r.status) for r in await read_usage(database_url)] == [("web", "bad_input")], log
