"""Probes of every process: /metrics counts what the core answered, /healthz and /readyz tell orchestrators."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from bots import resources
from bots.core import Core
from bots.resources import SharedCore
from bots.run import _migrate_and_serve
from config import Settings
from db.engine import create_engine, session_factory
from db.usage import UsageRecorder
from fakes.stylizer import MemoryStylizer
from telemetry import probes
from test_db_usage import PostgresProxy
from test_web import running_page, upload
from torchserve_fixture import free_ports
from waiting import until

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]
FOREIGN_HOST = "10.1.2.3:8000"  # what kubelet or Prometheus sends: the pod's address, not the page's name


def parse(text: str) -> Samples:
    """Every sample of a scrape by (name, labels)."""
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    """A sample's value, 0 when it is not there yet."""
    return samples.get((name, frozenset(labels.items())), 0.0)


async def scrape(client: aiohttp.ClientSession, url: str) -> Samples:
    async with client.get(f"{url}/metrics", headers={"Host": FOREIGN_HOST}) as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain")
        return parse(await response.text())


async def test_the_page_counts_requests_by_style_and_outcome(
    bots_model_store: Path, sqlite_db_url: str, face_jpeg: bytes
) -> None:
    async with running_page(bots_model_store, sqlite_db_url) as url, aiohttp.ClientSession() as client:
        before = await scrape(client, url)
        async with client.post(f"{url}/api/stylize", data=upload("me.jpg", face_jpeg, "image/jpeg")) as response:
            assert response.status == 200
        async with client.post(f"{url}/api/stylize", data=upload("cv.pdf", b"%PDF-1.4", "application/pdf")) as response:
            assert response.status == 415
        after = await scrape(client, url)

    ok = {"front_end": "web", "style": "selfie2anime", "outcome": "ok"}
    refused = {"front_end": "web", "style": "selfie2anime", "outcome": "bad_input"}
    for labels in (ok, refused):
        assert value(after, "toonbot_requests_total", **labels) == value(before, "toonbot_requests_total", **labels) + 1
    reason = {"front_end": "web", "reason": "not_an_image"}
    assert value(after, "toonbot_refusals_total", **reason) == value(before, "toonbot_refusals_total", **reason) + 1
    for histogram in ("toonbot_queue_wait_seconds", "toonbot_drawing_seconds"):  # one photo: one slot taken
        assert value(after, f"{histogram}_count") == value(before, f"{histogram}_count") + 1
        assert value(after, f"{histogram}_bucket", le="+Inf") == value(after, f"{histogram}_count")
    latency = {"front_end": "web", "outcome": "ok"}
    assert value(after, "toonbot_request_seconds_count", **latency) == value(
        before, "toonbot_request_seconds_count", **latency) + 1
    assert ("toonbot_queue_depth", frozenset()) in after
    assert value(after, "toonbot_engine_queue_depth") == 0  # nothing waits once the answer is in


async def test_the_page_answers_probes_under_any_host_but_not_cross_site(
    bots_model_store: Path, sqlite_db_url: str
) -> None:
    async with running_page(bots_model_store, sqlite_db_url) as url, aiohttp.ClientSession() as client:
        for path in ("/healthz", "/readyz"):
            for _ in range(600):  # the real engine is ready once it has warmed up (seconds on a loaded machine)
                async with client.get(f"{url}{path}", headers={"Host": FOREIGN_HOST}) as response:
                    if response.status == 200:
                        break
                    assert response.status == 503, await response.text()
                await asyncio.sleep(0.2)
            assert response.status == 200
            assert response.headers["X-Content-Type-Options"] == "nosniff"  # the page's headers still
        async with client.get(f"{url}/api/styles", headers={"Host": FOREIGN_HOST}) as response:
            assert response.status == 421  # the rest of the page keeps its Host check
        async with client.get(f"{url}/metrics", headers={"Sec-Fetch-Site": "cross-site"}) as response:
            assert response.status == 403


@asynccontextmanager
async def probe_server(shared: SharedCore) -> AsyncIterator[str]:
    """`probes.serve` over `shared` on a free port, as METRICS_PORT runs it."""
    port, stop = free_ports(1)[0], asyncio.Event()
    task = asyncio.create_task(probes.serve("127.0.0.1", port, shared.ready, stop))
    url = f"http://127.0.0.1:{port}"
    try:
        await until_listening(url, task)
        yield url
    finally:
        stop.set()
        await task


async def until_listening(url: str, task: asyncio.Task[None]) -> None:
    async with aiohttp.ClientSession() as client:
        for _ in range(400):
            assert not task.done(), "the probe server stopped"
            try:
                async with client.get(f"{url}/healthz") as response:
                    assert response.status == 200
                    return
            except aiohttp.ClientConnectionError:
                await asyncio.sleep(0.05)
    raise AssertionError(f"nothing answered on {url}")


async def ready(url: str) -> tuple[int, dict[str, bool]]:
    async with aiohttp.ClientSession() as client, client.get(f"{url}/readyz") as response:
        return response.status, (await response.json())["checks"]


async def test_readyz_waits_for_the_styles_and_the_database(
    tmp_path: Path, sqlite_db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    stylizer = MemoryStylizer(names=())  # nothing deployed yet
    monkeypatch.setattr(resources, "open_stylizer", lambda settings: stylizer)
    monkeypatch.setattr(resources, "open_management", lambda settings, stylizer: stylizer)
    settings = Settings(_env_file=None, model_store=tmp_path, database_url=sqlite_db_url)
    shared = SharedCore(settings)
    async with probe_server(shared) as url:
        assert await ready(url) == (503, {"started": False})  # the core is not open yet
        core = await shared.open()
        try:
            assert await ready(url) == (503, {"styles": False, "database": True})
            stylizer._styles = MemoryStylizer()._styles  # a style is deployed
            core.refresh_styles()
            assert await ready(url) == (200, {"styles": True, "database": True})
        finally:
            await shared.close()


@pytest.mark.deadline  # /readyz waits for the database at most DB_DEADLINE_S
async def test_readyz_is_503_while_the_database_hangs(
    tmp_path: Path, postgres_db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(resources, "open_stylizer", lambda settings: MemoryStylizer())
    monkeypatch.setattr(resources, "open_management", lambda settings, stylizer: stylizer)
    proxy = PostgresProxy(postgres_db_url)  # PostgreSQL behind a proxy that can stop passing bytes
    await proxy.start()
    shared = SharedCore(Settings(_env_file=None, model_store=tmp_path, database_url=proxy.url))
    try:
        async with probe_server(shared) as url:
            await shared.open()
            try:
                async def ready_again() -> bool:  # a loaded machine's database may take a probe or two
                    return await ready(url) == (200, {"styles": True, "database": True})

                await until(ready_again, "a ready page")
                proxy.freeze()
                assert await ready(url) == (503, {"styles": True, "database": False})
                proxy.thaw()
                await until(ready_again, "a ready page once the database answers")
            finally:
                await shared.close()
    finally:
        proxy.thaw()
        await proxy.cut()


async def test_readyz_is_503_when_the_database_is_unreachable(sqlite_db_url: str) -> None:
    (closed,) = free_ports(1)  # nothing listens there
    engine = create_engine(f"postgresql+asyncpg://toonbot@127.0.0.1:{closed}/toonbot")
    sessions = session_factory(engine)
    core = Core(stylizer=MemoryStylizer(), sessions=sessions, recorder=UsageRecorder(sessions),
                default_style="selfie2anime", requests_per_minute=10, max_in_flight=1,
                max_upload_bytes=2**20, output_size=64)
    try:
        assert await core.ready() == {"styles": True, "database": False}
    finally:
        await engine.dispose()


async def test_a_bot_process_serves_probes_from_its_start(tmp_path: Path, sqlite_db_url: str) -> None:
    port, stop = free_ports(1)[0], asyncio.Event()
    settings = Settings(_env_file=None, model_store=tmp_path, database_url=sqlite_db_url, metrics_port=port)
    task = asyncio.create_task(_migrate_and_serve([], settings, stop))  # no front end: probes only
    url = f"http://127.0.0.1:{port}"
    try:
        await until_listening(url, task)
        status, _ = await ready(url)
        assert status == 503  # no core opened in this process
        async with aiohttp.ClientSession() as client:
            assert "toonbot_queue_depth" in {f.name for f in text_string_to_metric_families(
                await (await client.get(f"{url}/metrics")).text())}
    finally:
        stop.set()
        await task


async def test_the_training_worker_counts_jobs_and_serves_probes(sqlite_db_url: str, tmp_path: Path) -> None:
    from db import jobs
    from training import metrics as training_metrics
    from training.worker import TrainingWorker, WorkerConfig

    engine = create_engine(sqlite_db_url)
    sessions = session_factory(engine)
    port, stop = free_ports(1)[0], asyncio.Event()
    settings = Settings(_env_file=None, database_url=sqlite_db_url, metrics_port=port)
    task = asyncio.create_task(training_metrics.serve_probes(settings, sessions, stop))
    url = f"http://127.0.0.1:{port}"
    try:
        async with sessions() as session:
            job = await jobs.enqueue(session, pair="selfie2anime", iterations=2, requested_by="telegram:1",
                                     notify_platform="telegram", notify_chat_id="1")
        await until_listening(url, task)
        before = await scrape_plain(url)
        worker = TrainingWorker(sessions, WorkerConfig(datasets=tmp_path / "none", model_store=tmp_path))
        assert await worker.run_once() == job.id  # no dataset: the job fails at once
        after = await scrape_plain(url)
        failed = value(after, "toonbot_training_jobs_total", outcome="failed")
        assert failed == value(before, "toonbot_training_jobs_total", outcome="failed") + 1
        assert value(after, "toonbot_training_job_running") == 0
        assert await ready(url) == (200, {"database": True})
    finally:
        stop.set()
        await task
        await engine.dispose()


async def scrape_plain(url: str) -> Samples:
    async with aiohttp.ClientSession() as client, client.get(f"{url}/metrics") as response:
        return parse(await response.text())
