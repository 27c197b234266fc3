"""The page over a real TorchServe: a GIF drawn through it, and what a visitor gets when it is full.

One TorchServe over the bots' tiny styles, with a job queue of one place
(`job_queue_size=1`), so two requests fill it: one at the worker, one queued.
"Full" is made real by stopping the worker process (SIGSTOP): TorchServe then
answers 503 itself, as it does when every worker is busy and the queue is full.
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import aiohttp
import pytest
import torch
from test_web import running_page, upload
from torchserve_fixture import handed_to_worker, running_torchserve, wait_for_workers
from waiting import until

import serving.torchserve
from bots import core as core_module
from bots import i18n
from media import gif_frames, make_gif
from serving import replies
from serving.torchserve import LocalTorchServe

if TYPE_CHECKING:
    from conftest import ReadUsage

torch.set_num_threads(1)
STYLE = "selfie2anime"


@pytest.fixture(scope="module")
def torchserve(engine_model_store: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalTorchServe]:
    """A real TorchServe over the tiny styles whose job queue holds one request."""
    run = tmp_path_factory.mktemp("page_torchserve")
    template = run / "config.properties"
    template.write_text(serving.torchserve.CONFIG_TEMPLATE.read_text() + "\njob_queue_size=1\n")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(serving.torchserve, "CONFIG_TEMPLATE", template)
        with running_torchserve(engine_model_store, run / "ts") as ts:
            wait_for_workers(ts, STYLE, 1)
            yield ts


def over(ts: LocalTorchServe) -> dict[str, object]:
    """The page's settings for drawing through `ts` (its ports are not consecutive: management named)."""
    return {"torchserve_url": ts.inference_url, "torchserve_management_url": ts.management_url}


async def test_a_gif_drawn_through_torchserve(
    read_usage: ReadUsage, torchserve: LocalTorchServe, engine_model_store: Path, sqlite_db_url: str
) -> None:
    gif = make_gif([100, 200, 300, 100])
    async with (
        running_page(engine_model_store, sqlite_db_url, **over(torchserve)) as url,
        aiohttp.ClientSession() as client,
        client.post(f"{url}/api/stylize", data=upload("dance.gif", gif, "image/gif")) as response,
    ):
        assert (response.status, response.content_type) == (200, "image/gif")
        drawn = await response.read()
    assert gif_frames(drawn) == [100, 200, 300, 100]
    [row] = await read_usage(sqlite_db_url)
    assert (row.status, row.style, row.model_version, row.frames) == ("ok", STYLE, "1.0", 4)


async def predict(client: aiohttp.ClientSession, ts: LocalTorchServe, image: bytes) -> int:
    """One request straight to TorchServe; its status."""
    headers = {"Content-Type": "application/octet-stream"}
    async with client.post(f"{ts.inference_url}/predictions/{STYLE}", data=image, headers=headers) as response:
        await response.read()
        return response.status


async def fill(client: aiohttp.ClientSession, ts: LocalTorchServe, image: bytes) -> list[asyncio.Task[int]]:
    """Fill TorchServe, its worker stopped: one request at the worker, one in the queue's one place;
    those two, still unanswered.

    Each step waits for TorchServe to say so, however slowly it goes: the first request is in the
    worker's hands once the frontend logs handing it over; then of two more, the queue takes the first
    to arrive and refuses the other at once (503). A TorchServe that held more would refuse neither."""
    handed = handed_to_worker(ts, STYLE)
    at_worker = asyncio.create_task(predict(client, ts, image))
    taken = "the worker taking a request"
    await until(lambda: handed_to_worker(ts, STYLE) > handed or at_worker.done(), taken, every=0.1)
    assert not at_worker.done(), f"TorchServe answered {at_worker.result()} with its worker stopped"
    pair = [asyncio.create_task(predict(client, ts, image)) for _ in range(2)]
    await until(lambda: any(request.done() for request in pair), "a refusal once the queue was full")
    [refused] = [request for request in pair if request.done()]
    assert refused.result() == 503
    return [at_worker, *(request for request in pair if request is not refused)]


async def test_a_full_torchserve_is_a_503_with_retry_after_and_an_overloaded_row(
    read_usage: ReadUsage, torchserve: LocalTorchServe, engine_model_store: Path, sqlite_db_url: str,
    face_jpeg: bytes, monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The catalogue is read from the worker too (describe): read before it stops, and kept.
    monkeypatch.setattr(core_module, "CATALOGUE_TTL_S", 3600.0)
    [worker] = wait_for_workers(torchserve, STYLE, 1)
    async with (
        running_page(engine_model_store, sqlite_db_url, **over(torchserve)) as url,
        aiohttp.ClientSession() as client,
    ):
        async with client.get(f"{url}/api/styles") as response:
            assert STYLE in [s["name"] for s in (await response.json())["styles"]]
        os.kill(worker["pid"], signal.SIGSTOP)
        held: list[asyncio.Task[int]] = []
        try:
            held = await fill(client, torchserve, face_jpeg)
            form = upload("me.jpg", face_jpeg, "image/jpeg", style=STYLE)
            async with client.post(f"{url}/api/stylize", data=form) as response:
                status, retry_after, body = response.status, response.headers.get("Retry-After"), await response.json()
        finally:
            os.kill(worker["pid"], signal.SIGCONT)
            answered = await asyncio.gather(*held, return_exceptions=True)
    assert answered == [200, 200]  # the worker's request and the queued one, once it went on
    assert (status, retry_after) == (503, str(core_module.RETRY_OVERLOADED_S))
    assert body == {"message": i18n.words("en")(replies.OVERLOADED)}
    [row] = await read_usage(sqlite_db_url)
    assert (row.platform, row.style, row.status) == ("web", STYLE, "overloaded")
