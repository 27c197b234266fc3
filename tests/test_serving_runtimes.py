"""Both runtimes on the same `.mar` files: the real TorchServe and the embedded engine.

One TorchServe (token auth off) serves the module; token authorisation is
tested once for real on a second instance.
"""

from __future__ import annotations

import asyncio
import io
import logging
import os
import signal
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
import numpy as np
import pytest
import torch
from PIL import Image
from group_photos import group_photo
from torchserve_fixture import (
    free_ports,
    handed_to_worker,
    management,
    model_log,
    ready_workers,
    running_torchserve,
    wait_for_workers,
)
from waiting import until

from config import Settings
from serving import replies
from serving.factory import open_stylizer
from serving.api import BadInput, NoFace, Stylized, Stylizer, UnknownStyle, Unavailable
from styles.payload import framing, imaging
from serving.client import TorchServeClient
from serving.engine import EmbeddedEngine
from serving.torchserve import LocalTorchServe
from styles.archive import read_archive

torch.set_num_threads(1)
pytestmark = pytest.mark.slow
FIXTURES = Path(__file__).with_name("fixtures")
FACE = (FIXTURES / "obama_256.jpg").read_bytes()
CAT = (FIXTURES / "chelsea_256.jpg").read_bytes()


@pytest.fixture(scope="module")
def torchserve(serving_model_store: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalTorchServe]:
    with running_torchserve(serving_model_store, tmp_path_factory.mktemp("torchserve")) as ts:
        for style in ("selfie2anime", "anime2selfie", "cat2dog", "dog2cat"):
            wait_for_workers(ts, style, 1)
        yield ts


@pytest.fixture(params=["embedded", "torchserve"])
async def stylizer(
    request: pytest.FixtureRequest, serving_model_store: Path, serving_mar_cache: Path
) -> AsyncIterator[Stylizer]:
    if request.param == "embedded":
        runtime: Stylizer = EmbeddedEngine(serving_model_store, cache_dir=serving_mar_cache)
    else:
        runtime = client_for(request.getfixturevalue("torchserve"))
    yield runtime
    await runtime.close()


def client_for(ts: LocalTorchServe, **options) -> TorchServeClient:
    keys = ts.keys()
    return TorchServeClient(
        ts.inference_url, keys.get("inference"), management_urls=[ts.management_url],
        management_token=keys.get("management"), **options,
    )


def pixels(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"), dtype=np.int16)


def png_bomb() -> bytes:
    """An 8000 x 6000 (48 MP) greyscale PNG: a few hundred KB of zeros."""
    out = io.BytesIO()
    Image.new("L", (8000, 6000)).save(out, "PNG")
    return out.getvalue()


async def test_torchserve_and_embedded_give_the_same_image(
    torchserve: LocalTorchServe, serving_model_store: Path, serving_mar_cache: Path
) -> None:
    engine = EmbeddedEngine(serving_model_store, cache_dir=serving_mar_cache)
    client = client_for(torchserve)
    try:
        group = io.BytesIO()
        group_photo(3, 200).save(group, "PNG")
        for style, image in (("selfie2anime", FACE), ("cat2dog", CAT), ("selfie2anime", group.getvalue())):
            local = await engine.stylize(style, image, fmt="png")
            served = await client.stylize(style, image, fmt="png")
            assert served.faces == local.faces is not None  # X-Faces reaches both
            assert served.frames == local.frames  # so does X-Frames, which a clip's next frame follows
            assert served.content_type == local.content_type == "image/png"
            assert served.version == local.version == "1.0"
            assert np.abs(pixels(local.image) - pixels(served.image)).max() <= 1
        follow = (await engine.stylize("selfie2anime", FACE)).frames
        assert follow is not None
        local = await engine.stylize("selfie2anime", FACE, fmt="png", follow=follow)
        served = await client.stylize("selfie2anime", FACE, fmt="png", follow=follow)  # X-Follow reaches both
        assert served.frames == local.frames and np.abs(pixels(local.image) - pixels(served.image)).max() <= 1
        local = await engine.stylize("selfie2anime", FACE, fmt="png", compare=True)
        served = await client.stylize("selfie2anime", FACE, fmt="png", compare=True)  # X-Compare reaches both
        assert pixels(served.image).shape == pixels(local.image).shape == (32, 64, 3)
        assert np.abs(pixels(local.image) - pixels(served.image)).max() <= 1
    finally:
        await engine.close()
        await client.close()


async def test_styles_and_health_agree(stylizer: Stylizer, serving_model_store: Path) -> None:
    styles = await stylizer.styles()
    assert [(s.name, s.needs_face, s.version) for s in styles] == [
        ("anime2selfie", False, "1.0"), ("cat2dog", False, "1.0"),
        ("dog2cat", False, "1.0"), ("selfie2anime", True, "1.0"),
    ]
    assert styles[3].title == "Selfie to anime"
    for style in styles:  # the preview export drew into each archive, through either runtime
        assert style.preview == read_archive(serving_model_store / f"{style.name}.mar").preview()
        assert style.preview is not None and Image.open(io.BytesIO(style.preview)).format == "JPEG"
        assert style.output_size == read_archive(serving_model_store / f"{style.name}.mar").output_size
    assert await stylizer.health()


@pytest.mark.parametrize(
    ("case", "error", "message"),
    [
        ("not_an_image", BadInput, imaging.NOT_AN_IMAGE),
        ("empty", BadInput, imaging.NOT_AN_IMAGE),
        ("truncated", BadInput, imaging.TRUNCATED),
        ("too_large", BadInput, imaging.TOO_LARGE),
        ("too_many_pixels", BadInput, imaging.TOO_MANY_PIXELS),
        ("too_small", BadInput, imaging.TOO_SMALL),
        ("no_face", NoFace, framing.NO_FACE),
    ],
)
async def test_rejections(stylizer: Stylizer, case: str, error: type, message: str) -> None:
    image = {
        "not_an_image": b"%PDF-1.4 not a picture",
        "empty": b"",
        "truncated": (FIXTURES / "edge_cases" / "astronaut_truncated.jpg").read_bytes(),
        "too_large": b"\xff\xd8" + bytes(imaging.MAX_BYTES),
        "too_many_pixels": png_bomb(),
        "too_small": (FIXTURES / "edge_cases" / "astronaut_tiny_31x47.jpg").read_bytes(),
        "no_face": CAT,
    }[case]
    style = "selfie2anime" if case == "no_face" else "cat2dog"
    with pytest.raises(error) as err:
        await stylizer.stylize(style, image)
    assert err.value.message == message


async def test_unknown_style(stylizer: Stylizer) -> None:
    with pytest.raises(UnknownStyle) as err:
        await stylizer.stylize("dog2horse", FACE)
    assert err.value.message == replies.UNKNOWN_STYLE.format(name="dog2horse")


async def test_torchserve_refuses_uploads_over_20_mb(torchserve: LocalTorchServe) -> None:
    # The client never sends these; TorchServe's own limit stops anyone else.
    async with aiohttp.ClientSession() as http:
        async with http.post(
            f"{torchserve.inference_url}/predictions/cat2dog", data=bytes(imaging.MAX_BYTES + 1),
            headers={"Content-Type": "application/octet-stream"},
        ) as resp:
            assert resp.status == 413


async def test_handler_rejections_reach_http_as_4xx_json(torchserve: LocalTorchServe) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.post(
            f"{torchserve.inference_url}/predictions/selfie2anime", data=CAT,
            headers={"Content-Type": "image/jpeg"},
        ) as resp:
            assert resp.status == 422
            assert resp.content_type == "application/json"
            assert await resp.json() == {"error": "no_face", "message": framing.NO_FACE}


async def test_a_bad_item_fails_alone_in_a_mixed_batch(
    stylizer: Stylizer, request: pytest.FixtureRequest, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    truncated = (FIXTURES / "edge_cases" / "astronaut_truncated.jpg").read_bytes()

    def ask() -> asyncio.Future[list[Stylized | BaseException]]:
        return asyncio.gather(
            stylizer.stylize("selfie2anime", FACE, size=64),
            stylizer.stylize("selfie2anime", b"not an image", size=64),
            stylizer.stylize("selfie2anime", CAT, size=64),
            stylizer.stylize("selfie2anime", truncated, size=64),
            stylizer.stylize("selfie2anime", FACE, size=64, fmt="webp"),
            return_exceptions=True,
        )

    one_batch = "batch of 5 (2 to the generator)"  # all five met in one handler call
    if isinstance(stylizer, EmbeddedEngine):  # in-process: queued in one turn of the event loop
        results = await ask()
        assert one_batch in caplog.text
    else:  # over HTTP they meet in TorchServe's queue, behind a full batch, not in its 300 ms window
        torchserve = request.getfixturevalue("torchserve")
        async with behind_a_full_batch(torchserve, "selfie2anime", stylizer):
            mixed = ask()
            await until(lambda: queued_at_least(torchserve, "selfie2anime", 13), "the five behind the eight", every=0.1)
        results = await mixed
        await until_logged(torchserve, one_batch, before=0)
    assert [type(r).__name__ for r in results] == ["Stylized", "BadInput", "NoFace", "BadInput", "Stylized"]
    assert results[4].content_type == "image/webp"


@asynccontextmanager
async def behind_a_full_batch(
    ts: LocalTorchServe, model: str, client: Stylizer
) -> AsyncIterator[list[asyncio.Task[Stylized]]]:
    """The model's worker stopped, a batch handed to it and eight requests in its queue: what the block
    sends queues behind them, and when the block ends the worker goes on, so the batch after those
    eight is what the block queued (batchSize 8). Every step waits for TorchServe's own word, however
    long a loaded machine takes: one request, until the frontend logs handing its batch to the worker
    (its 300 ms window closed, nothing more joins it); then eight, until its queue counts eight.
    Yields those requests, answered once the block has ended."""
    [worker] = wait_for_workers(ts, model, 1)
    os.kill(worker["pid"], signal.SIGSTOP)
    plugs: list[asyncio.Task[Stylized]] = []
    try:
        handed = handed_to_worker(ts, model)
        plugs.append(asyncio.create_task(client.stylize(model, FACE, size=32)))
        await until(lambda: handed_to_worker(ts, model) > handed, "a batch handed to the stopped worker", every=0.1)
        plugs += [asyncio.create_task(client.stylize(model, FACE, size=32)) for _ in range(8)]
        await until(lambda: queued_at_least(ts, model, 8), "eight requests in the queue", every=0.1)
        assert await asyncio.to_thread(queued, ts, model) == 8
        yield plugs
    finally:
        os.kill(worker["pid"], signal.SIGCONT)
        await asyncio.gather(*plugs, return_exceptions=True)


async def until_logged(ts: LocalTorchServe, line: str, before: int) -> None:
    """Wait for the handler's log line to reach model_log.log (through Java) more than `before` times."""
    await until(lambda: model_log(ts).count(line) > before, f"{line!r} in model_log.log", every=0.1)


def queued(ts: LocalTorchServe, model: str) -> int:
    """Requests waiting in the model's job queue, as TorchServe's describe reports them."""
    status, body = management(ts, "GET", f"/models/{model}")
    assert status == 200, body
    return body[0]["jobQueueStatus"]["pendingRequests"]


async def queued_at_least(ts: LocalTorchServe, model: str, count: int) -> bool:
    """Whether `count` or more requests wait in the model's job queue (asked off the event loop)."""
    return await asyncio.to_thread(queued, ts, model) >= count


async def test_queued_requests_go_to_the_worker_a_full_batch_at_once(torchserve: LocalTorchServe) -> None:
    """No race with the 300 ms window: eight requests wait in the queue, counted by TorchServe, while the
    worker is stopped; when it goes on, they reach the handler as one batch of eight."""
    before = model_log(torchserve).count("batch of 8 (8 to the generator)")
    client = client_for(torchserve)
    try:
        async with behind_a_full_batch(torchserve, "selfie2anime", client) as asked:
            pass
    finally:
        await client.close()
    assert all(r.result().content_type == "image/jpeg" for r in asked)
    await until_logged(torchserve, "batch of 8 (8 to the generator)", before)


async def test_a_killed_worker_is_replaced_while_requests_are_answered(torchserve: LocalTorchServe) -> None:
    status, _ = management(torchserve, "PUT", "/models/dog2cat?min_worker=2&max_worker=2&synchronous=true")
    assert status == 200
    before = {w["pid"] for w in wait_for_workers(torchserve, "dog2cat", 2)}
    client = client_for(torchserve, retries=6, backoff=0.25)

    answers: list[bytes] = []

    async def keep_asking(n: int) -> None:
        for _ in range(n):
            answers.append((await client.stylize("dog2cat", CAT, size=32)).image)

    try:
        asking = asyncio.create_task(keep_asking(12))
        await until(lambda: bool(answers) or asking.done(), "a first answer")  # the kill lands while it asks
        os.kill(sorted(before)[0], signal.SIGKILL)
        await asking
        assert len(answers) == 12 and all(answers)
        deadline = time.monotonic() + 90
        while True:
            pids = {w["pid"] for w in ready_workers(torchserve, "dog2cat")}
            if len(pids) == 2 and pids != before:
                break
            assert time.monotonic() < deadline, f"worker not replaced: {pids}"
            await asyncio.sleep(0.5)
        assert (await client.stylize("dog2cat", CAT, size=32)).image
    finally:
        await client.close()
        management(torchserve, "PUT", "/models/dog2cat?min_worker=1&max_worker=1&synchronous=true")


async def test_unreachable_torchserve_is_unavailable() -> None:
    (port,) = free_ports(1)
    client = TorchServeClient(f"http://127.0.0.1:{port}", retries=2, backoff=0.01)
    try:
        with pytest.raises(Unavailable):
            await client.stylize("cat2dog", CAT)
        assert not await client.health()
    finally:
        await client.close()


async def test_token_authorisation(serving_model_store: Path, tmp_path: Path) -> None:
    store = tmp_path / "store"
    store.mkdir()
    (store / "cat2dog.mar").symlink_to(serving_model_store / "cat2dog.mar")
    with running_torchserve(store, tmp_path / "run", token_auth=True) as ts:
        keys = ts.keys()
        assert set(keys) == {"inference", "management", "API"}
        wait_for_workers(ts, "cat2dog", 1)
        anonymous = TorchServeClient(ts.inference_url, retries=0)
        wrong = TorchServeClient(ts.inference_url, keys["management"], retries=0)
        stylizer = open_stylizer(Settings(
            _env_file=None, torchserve_url=ts.inference_url, model_store=store, torchserve_token=keys["inference"],
            torchserve_management_url=ts.management_url, torchserve_management_token=keys["management"],
        ))
        try:
            for refused in (anonymous, wrong):
                with pytest.raises(Unavailable):
                    await refused.stylize("cat2dog", CAT)
            assert not await anonymous.health()
            assert await stylizer.health()
            assert [s.name for s in await stylizer.styles()] == ["cat2dog"]
            assert (await stylizer.stylize("cat2dog", CAT, size=32)).image
        finally:
            for c in (anonymous, wrong, stylizer):
                await c.close()


def test_a_port_taken_before_java_binds_it_is_caught_and_others_are_used(
    serving_model_store: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The fixture's ports are free when chosen, not when Java binds them: here another process holds
    the management port first. A start that does not own its ports must not pass for a running TorchServe."""
    import socket

    import torchserve_fixture

    store = tmp_path / "store"
    store.mkdir()
    (store / "cat2dog.mar").symlink_to(serving_model_store / "cat2dog.mar")
    squatter = socket.create_server(("127.0.0.1", 0))
    chosen = iter([[*torchserve_fixture.free_ports(1), squatter.getsockname()[1], *torchserve_fixture.free_ports(3)]])
    real_free_ports = torchserve_fixture.free_ports
    monkeypatch.setattr(torchserve_fixture, "free_ports", lambda n: next(chosen, None) or real_free_ports(n))
    try:
        with running_torchserve(store, tmp_path / "run") as ts:
            assert ts.ports.management != squatter.getsockname()[1]
            assert ts.owns_its_ports()
            assert management(ts, "GET", "/models")[1]["models"][0]["modelName"] == "cat2dog"
    finally:
        squatter.close()
