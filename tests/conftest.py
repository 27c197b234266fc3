"""Shared fixtures. Each team keeps its fixtures in its own labelled section."""

from __future__ import annotations

import asyncio
import os
import shutil
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import asyncpg
import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from config import get_settings
from db.engine import create_engine, migrate, session_factory
from db.models import Usage

# Handlers load with the plain eager generator in tests: choosing a faster path
# compiles each archive (tens of seconds). tests/test_acceleration.py runs the
# real choice, in-process and through the handler.
os.environ.setdefault("TOONBOT_INFERENCE", "eager")

# --- lanes: `make test-fast` runs what is not marked `full` ----------------------
# A test that builds real .mar archives (torch export, then the engine or
# TorchServe), needs PostgreSQL or drives Chromium is in the full lane only;
# parametrized fixtures mark just their slow variants (see `bots_model_store`).
FULL_FIXTURES = {"engine_model_store", "serving_model_store", "tiny_store", "upscaled_store", "postgres_template", "page"}
FULL_MODULES = {  # whole modules, and why
    "test_acceleration": "compiles the faster inference paths",
    "test_bench_latency": "times the real engine",
    "test_bundled_styles": "runs the bundled archives",
    "test_bundled_quality": "measures an untrained generator on a real test split",
    "test_deploy": "deploys real archives",
    "test_deploy_cli": "deploys real archives",
    "test_evaluate": "trains a judge and measures exported archives",
    "test_export": "exports trained generators",
    "test_framing": "runs the face detectors",
    "test_serving_handler": "runs the packaged handler",
    "test_serving_runtimes": "holds the engine and TorchServe to the same answers",
    "test_torchserve_replicas": "starts two TorchServes",
    "test_torchserve_start": "starts TorchServe",
    "test_training_networks": "builds the real networks",
    "test_training_official": "converts real checkpoints",
    "test_training_stretches": "trains and exports",
    "test_training_trainer": "trains",
    "test_worker": "trains and exports through the job queue",
}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark `full` every test of `FULL_MODULES` and every one that needs one of `FULL_FIXTURES`,
    directly or through another fixture."""
    for item in items:
        module = item.module.__name__ if isinstance(item, pytest.Function) else ""
        if module in FULL_MODULES or FULL_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.full)


# --- settings: each test reads the environment it set ----------------------------
@pytest.fixture(autouse=True)
def fresh_settings() -> Iterator[None]:
    """`config.get_settings` caches per process; a test's `monkeypatch.setenv` must reach the
    command lines it runs in-process (and not leak into the next test)."""
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


# --- db: migrated SQLite and PostgreSQL databases -------------------------------
# `db_url` runs a test on both backends; `sqlite_db_url` / `postgres_db_url`
# pick one. Each test gets its own database, copied from one migrated once
# per session (PostgreSQL: CREATE DATABASE ... TEMPLATE), so it stays fast.

PG_HOST, PG_PORT = "127.0.0.1", 5432
PG_USERS = ("postgres", "root")


async def _pg_user() -> str | None:
    """The first superuser name the local server lets in (trust auth), or None."""
    for user in PG_USERS:
        try:
            connection = await asyncpg.connect(
                host=PG_HOST, port=PG_PORT, user=user, database="postgres", timeout=3
            )
        except (OSError, asyncpg.PostgresError, TimeoutError):
            continue
        await connection.close()
        return user
    return None


async def _pg_admin(user: str, statement: str) -> None:
    connection = await asyncpg.connect(host=PG_HOST, port=PG_PORT, user=user, database="postgres")
    try:
        await connection.execute(statement)
    finally:
        await connection.close()


@pytest.fixture(scope="session")
def postgres_template() -> Iterator[tuple[str, str]]:
    """(user, database) of a migrated template database on the local PostgreSQL server."""
    user = asyncio.run(_pg_user())
    if user is None:
        pytest.skip(f"PostgreSQL not reachable on {PG_HOST}:{PG_PORT} as {' or '.join(PG_USERS)}")
    name = f"toonbot_test_template_{uuid.uuid4().hex[:8]}"
    asyncio.run(_pg_admin(user, f'CREATE DATABASE "{name}"'))
    try:
        asyncio.run(migrate(f"postgresql+asyncpg://{user}@{PG_HOST}:{PG_PORT}/{name}"))
        yield user, name
    finally:
        asyncio.run(_pg_admin(user, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture
async def postgres_db_url(postgres_template: tuple[str, str]) -> AsyncIterator[str]:
    """A fresh, migrated PostgreSQL database, dropped after the test."""
    user, template = postgres_template
    name = f"toonbot_test_{uuid.uuid4().hex[:12]}"
    await _pg_admin(user, f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
    try:
        yield f"postgresql+asyncpg://{user}@{PG_HOST}:{PG_PORT}/{name}"
    finally:
        await _pg_admin(user, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A migrated SQLite file to copy from."""
    path = tmp_path_factory.mktemp("db") / "template.sqlite3"
    asyncio.run(migrate(f"sqlite+aiosqlite:///{path}"))
    return path


@pytest.fixture
def sqlite_db_url(sqlite_template: Path, tmp_path: Path) -> str:
    """A fresh, migrated SQLite file in the test's temporary folder."""
    path = tmp_path / "toonbot.sqlite3"
    shutil.copy(sqlite_template, path)
    return f"sqlite+aiosqlite:///{path}"


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.full)])
def db_url(request: pytest.FixtureRequest) -> str:
    """A fresh, migrated database: the test runs once per backend."""
    return request.getfixturevalue(f"{request.param}_db_url")


@pytest.fixture
async def db_engine(db_url: str) -> AsyncIterator[AsyncEngine]:
    """An engine on `db_url`, disposed after the test."""
    engine = create_engine(db_url)
    yield engine
    await engine.dispose()


@pytest.fixture
def db_sessions(db_engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    """Sessions on `db_url`."""
    return session_factory(db_engine)


@pytest.fixture(autouse=True)
def patient_database(request: pytest.FixtureRequest) -> Iterator[None]:
    """Every test waits for the database however slowly it answers (`waiting.patience`): on a loaded
    2-core machine a query outlasts a reply's deadline, and the reply then says so instead. A test whose
    subject is such a deadline says so (`@pytest.mark.deadline`) and keeps the real ones."""
    if request.node.get_closest_marker("deadline"):
        yield
        return
    from waiting import patience

    with patience():
        yield


# --- bots: a tiny deployed model store and public-domain sample photos -----------

FIXTURES = Path(__file__).with_name("fixtures")


@pytest.fixture(scope="session")
def engine_model_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`selfie2anime` and `anime2selfie` (tiny random-weight generators) as real .mar files."""
    from torchserve_fixture import export_tiny_styles

    store = tmp_path_factory.mktemp("bots") / "model_store"
    export_tiny_styles(store, "selfie2anime")
    return store


@pytest.fixture(params=["memory", pytest.param("engine", marks=pytest.mark.full)])
def bots_model_store(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Path:
    """The model store of a core, bot or web test, which runs twice: on the in-memory stylizer
    (the fast lane; the store is empty and every `SharedCore` draws with a `MemoryStylizer`
    of the same two styles) and on the real embedded engine over `engine_model_store`."""
    if request.param == "engine":
        return request.getfixturevalue("engine_model_store")
    from bots import resources
    from fakes.stylizer import MemoryStylizer

    stylizer = MemoryStylizer()  # one per test, shared by its cores as one process's engine would be
    monkeypatch.setattr(resources, "open_stylizer", lambda settings: stylizer)
    monkeypatch.setattr(resources, "open_management", lambda settings, stylizer: stylizer)
    store = tmp_path / "memory_store"
    store.mkdir()
    return store


@pytest.fixture(scope="session")
def face_jpeg() -> bytes:
    """A public-domain portrait (Grace Hopper, US Navy) the face detector finds."""
    return (FIXTURES / "grace_hopper_256.jpg").read_bytes()


ReadUsage = Callable[[str], Awaitable[list[Usage]]]


@pytest.fixture
def read_usage() -> ReadUsage:
    """Reads back the usage table of a database URL, oldest first."""

    async def read(url: str) -> list[Usage]:
        engine = create_engine(url)
        try:
            async with session_factory(engine)() as session:
                return list(await session.scalars(select(Usage).order_by(Usage.id)))
        finally:
            await engine.dispose()

    return read


# --- serving: tiny exported styles for both runtimes ------------------------------


@pytest.fixture(scope="session")
def serving_model_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """selfie2anime/anime2selfie (face styles; batches of up to 8 within 300 ms) and
    cat2dog/dog2cat (no face; one request at a time; drawn at twice the training size),
    tiny random-weight generators."""
    from torchserve_fixture import export_tiny_styles

    store = tmp_path_factory.mktemp("serving") / "model_store"
    export_tiny_styles(store, "selfie2anime", "--batch-size", "8", "--max-batch-delay", "300")
    export_tiny_styles(store, "cat2dog", "--draw-size-factor", "2", seed=1)
    return store


@pytest.fixture(scope="session")
def serving_mar_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where embedded engines unpack archives during the test session."""
    return tmp_path_factory.mktemp("mar_cache")


# --- training: a tiny unpaired dataset ------------------------------------------


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """trainA/trainB/testA/testB of 40 px random-texture images, plus one unreadable file."""
    import numpy as np
    from PIL import Image

    root = tmp_path_factory.mktemp("tiny_dataset")
    rng = np.random.default_rng(0)
    for i, folder in enumerate(("trainA", "trainB", "testA", "testB")):
        (root / folder).mkdir()
        for j in range(5):
            pixels = (rng.random((40, 40, 3)) * 255 * (0.5 + 0.5 * (i % 2))).astype("uint8")
            Image.fromarray(pixels).save(root / folder / f"{j}.png")
    (root / "trainA" / "empty.jpg").write_bytes(b"")
    return root


# --- admin: a model store that deploys and retraining may change -------------------


@pytest.fixture
def tiny_store(tmp_path: Path) -> Path:
    """selfie2anime/anime2selfie 1.0 (tiny generators, img_size 32) in this test's own model store."""
    from torchserve_fixture import export_tiny_styles

    store = tmp_path / "model_store"
    export_tiny_styles(store, "selfie2anime")
    return store
