"""Deploys that reach every TorchServe replica: each registers and checks the version, then each switches;
a failure on any replica puts them all back as they were; the lists are what every replica serves. Two fake
TorchServes stand in for the replicas (tests/test_torchserve_replicas.py runs two real ones)."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from pathlib import Path

import pytest
from aiohttp import web

from config import Settings
from ops.management import DeployError, ReplicatedManagement, StyleVersions, open_management
from serving.api import Unavailable
from serving.client import TorchServeClient
from styles.archive import Archive
from torchserve_fixture import free_port_block, free_ports

STYLE = "selfie2anime"
PNG = b"\x89PNG\r\n\x1a\n" + b"\0" * 16


class FakeTorchServe:
    """TorchServe's management API (one port up) and inference API, as far as a deploy uses them."""

    def __init__(self) -> None:
        self.versions: dict[str, set[str]] = {STYLE: {"1.0"}}
        self.default: dict[str, str] = {STYLE: "1.0"}
        self.fail_check = self.fail_switch = False
        self.inference_port = 0

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/models", self._list)
        app.router.add_get("/models/{style}/all", self._all)
        app.router.add_get("/models/{style}", self._describe)
        app.router.add_post("/models", self._register)
        app.router.add_put("/models/{style}/{version}/set-default", self._set_default)
        app.router.add_put("/models/{style}/{version}", self._scale)
        app.router.add_delete("/models/{style}/{version}", self._unregister)
        app.router.add_post("/predictions/{style}/{version}", self._predict)
        return app

    async def _list(self, request: web.Request) -> web.Response:
        return web.json_response({"models": [{"modelName": style} for style in self.default]})

    async def _scale(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "scaled"})

    async def _all(self, request: web.Request) -> web.Response:
        found = self.versions.get(request.match_info["style"])
        return web.json_response([{"modelVersion": v} for v in sorted(found or ())], status=200 if found else 404)

    async def _describe(self, request: web.Request) -> web.Response:
        style = request.match_info["style"]
        if style not in self.default:
            return web.json_response({"message": "not found"}, status=404)
        described = {"modelVersion": self.default[style]}
        if request.query.get("customized") == "true":  # what the handler says of itself, as a JSON string
            described["customizedMetadata"] = json.dumps({"title": style, "description": "", "needs_face": False})
        return web.json_response([described])

    async def _register(self, request: web.Request) -> web.Response:
        style, version = request.query["url"].removesuffix(".mar").split("-")
        self.versions.setdefault(style, set()).add(version)
        return web.json_response({"status": "registered"})

    async def _set_default(self, request: web.Request) -> web.Response:
        if self.fail_switch:
            return web.json_response({"message": "no"}, status=500)
        self.default[request.match_info["style"]] = request.match_info["version"]
        return web.json_response({"status": "default"})

    async def _unregister(self, request: web.Request) -> web.Response:
        self.versions[request.match_info["style"]].discard(request.match_info["version"])
        return web.json_response({"status": "unregistered"})

    async def _predict(self, request: web.Request) -> web.Response:
        await request.read()
        if self.fail_check:
            return web.json_response({"message": "the worker died"}, status=503)
        return web.Response(body=PNG, content_type="image/png")


@pytest.fixture
async def replicas() -> AsyncIterator[list[FakeTorchServe]]:
    async with AsyncExitStack() as stack:
        fakes = []
        for _ in range(2):
            fake = FakeTorchServe()
            runner = web.AppRunner(fake.app())
            await runner.setup()
            stack.push_async_callback(runner.cleanup)
            fake.inference_port = port = free_port_block(2)  # TorchServe's inference and management layout
            for listening in (port, port + 1):
                await web.TCPSite(runner, "127.0.0.1", listening).start()
            fakes.append(fake)
        yield fakes


def archive(version: str) -> Archive:
    manifest = {"model": {"modelName": STYLE, "modelVersion": version}}
    return Archive(Path(f"/models/{STYLE}-{version}.mar"), manifest, {})


def management_url(fake: FakeTorchServe) -> str:
    return f"http://127.0.0.1:{fake.inference_port + 1}"


def management(fakes: list[FakeTorchServe]) -> ReplicatedManagement:
    urls = ",".join(management_url(f) for f in fakes)
    settings = Settings(_env_file=None, torchserve_url="http://balancer:8080", torchserve_management_url=urls)
    manager = open_management(settings, stylizer=object())  # type: ignore[arg-type]  (not the embedded engine)
    assert isinstance(manager, ReplicatedManagement)
    return manager


async def test_a_deploy_switches_every_replica(replicas: list[FakeTorchServe]) -> None:
    manager = management(replicas)
    try:
        await manager.make_default(archive("2.0"))
        assert [(f.default[STYLE], f.versions[STYLE]) for f in replicas] == [("2.0", {"1.0", "2.0"})] * 2
        assert [v.default for v in await manager.versions()] == ["2.0"]
    finally:
        await manager.close()


@pytest.mark.parametrize("failure", ["fail_check", "fail_switch"])
async def test_a_failure_on_one_replica_puts_every_replica_back(replicas: list[FakeTorchServe], failure: str) -> None:
    setattr(replicas[1], failure, True)  # the second replica fails its check, or refuses to switch
    manager = management(replicas)
    try:
        with pytest.raises(DeployError, match=f"{management_url(replicas[1])}.*back as it was"):
            await manager.make_default(archive("2.0"))
        assert [(f.default[STYLE], f.versions[STYLE]) for f in replicas] == [("1.0", {"1.0"})] * 2
    finally:
        await manager.close()


async def test_the_lists_are_what_every_replica_serves(replicas: list[FakeTorchServe]) -> None:
    """A style or a version registered on one replica only is left out, and a default they do not agree on
    is None (a restore, or the next deploy, then sets the logged one on each)."""
    first, second = replicas
    first.versions["cat2dog"], first.default["cat2dog"] = {"1.0"}, "1.0"
    first.versions[STYLE].add("2.0")
    first.default[STYLE] = "2.0"  # as when the second restarted on its own and serves its shipped version
    manager = management(replicas)
    client = TorchServeClient("http://balancer:8080", management_urls=[management_url(f) for f in replicas])
    try:
        assert await manager.versions() == [StyleVersions(STYLE, ("1.0",), None)]
        assert [(s.name, s.version) for s in await client.styles()] == [(STYLE, "2.0")]

        second.versions[STYLE].add("2.0")
        second.default[STYLE] = "2.0"
        assert await manager.versions() == [StyleVersions(STYLE, ("1.0", "2.0"), "2.0")]
    finally:
        await manager.close()
        await client.close()


async def test_the_style_list_leaves_out_a_replica_that_does_not_answer(
    replicas: list[FakeTorchServe], caplog: pytest.LogCaptureFixture
) -> None:
    (closed,) = free_ports(1)
    down = f"http://127.0.0.1:{closed}"
    client = TorchServeClient("http://balancer:8080", management_urls=[down, management_url(replicas[0])], retries=0)
    alone = TorchServeClient("http://balancer:8080", management_urls=[down], retries=0)
    try:
        with caplog.at_level(logging.WARNING):
            assert [s.name for s in await client.styles()] == [STYLE]
        assert f"TorchServe at {down} left out of the style list" in caplog.text
        with pytest.raises(Unavailable):
            await alone.styles()
    finally:
        await client.close()
        await alone.close()
