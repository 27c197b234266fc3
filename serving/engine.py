"""The embedded engine: the `.mar` files' own handlers, run in-process.

No Java, no server: each style's handler runs on its own worker threads (one
TorchServe worker's worth per lane), fed by a queue that gathers batches under
the archive's `batchSize` / `maxBatchDelay`, exactly as TorchServe would.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import ctypes
import logging
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from ts.service import Service

from config import get_settings
from serving import replies
from serving.api import (
    FRAMES_HEADER, ImageFormat, Overloaded, StyleInfo, Stylized, StylizeError, faces_drawn, request_headers,
)
from styles import catalog, loader
from styles.archive import Archive, scan
from styles.loader import Answer
from styles.quality import below_bar, read_quality

if TYPE_CHECKING:
    from ts.torch_handler.base_handler import BaseHandler

logger = logging.getLogger(__name__)

DEFAULT_CACHE = Path.home() / ".cache" / "toonbot" / "mar"


@dataclass
class _Request:
    """One queued request and the future its caller awaits."""

    image: bytes
    headers: dict[str, str]  # the options, as `request_headers` writes them
    done: asyncio.Future[Answer]


class _Worker:
    """One loaded archive: a queue, and `lanes` batching loops, each running the handler in its own thread.

    A TorchServe worker runs one batch at a time. Here every lane runs one: the first on the loaded
    handler, the others on copies of it that share its model and framer but keep their own request
    context (`BaseHandler.handle` stores it on the handler), so one style's requests use every core.
    """

    def __init__(self, archive: Archive, handler: BaseHandler, service: Service, queue_size: int,
                 lanes: int, idle: _Idle) -> None:
        self.archive = archive
        self.handler = handler
        self.idle = idle
        self.batch_size = max(1, int(archive.config.get("batchSize", 1)))
        self.max_delay = int(archive.config.get("maxBatchDelay", 0)) / 1000
        self.queue: asyncio.Queue[_Request] = asyncio.Queue(maxsize=queue_size)
        self.thread = ThreadPoolExecutor(max_workers=lanes, thread_name_prefix=f"style-{archive.name}")
        twins = [(copy.copy(handler), _own_context(service)) for _ in range(lanes - 1)]
        self.tasks = [asyncio.create_task(self._serve(h, s)) for h, s in [(handler, service), *twins]]

    async def submit(self, image: bytes, headers: dict[str, str]) -> Answer:
        """Queue one request; its answer as TorchServe would give it."""
        done = asyncio.get_running_loop().create_future()
        try:
            self.queue.put_nowait(_Request(image, headers, done))
        except asyncio.QueueFull:
            raise Overloaded(replies.OVERLOADED) from None
        return await done

    async def _serve(self, handler: BaseHandler, service: Service) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = [await self.queue.get()]
            deadline = loop.time() + self.max_delay
            while len(batch) < self.batch_size and (left := deadline - loop.time()) > 0:
                try:
                    batch.append(await asyncio.wait_for(self.queue.get(), left))
                except TimeoutError:
                    break
            live = [r for r in batch if not r.done.cancelled()]
            for _ in range(len(batch) - len(live)):  # callers who left (a page closed mid-clip): not drawn
                self.queue.task_done()
            if not live:
                continue
            self.idle.drawing += 1
            try:
                answers = await loop.run_in_executor(self.thread, _predict, handler, service, live)
            except Exception:  # the handler failed as a whole; TorchServe answers 503
                logger.exception("style %s failed on a batch of %d", self.archive.name, len(live))
                answers = [Answer(503, None, b"", {})] * len(live)
            finally:
                self.idle.drawn()
            for request, answer in zip(live, answers):
                if not request.done.done():
                    request.done.set_result(answer)
                self.queue.task_done()

    async def close(self) -> None:
        """Answer what is queued, then stop the loops and the threads."""
        await self.queue.join()
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        self.thread.shutdown(wait=True)


def _predict(handler: BaseHandler, service: Service, batch: list[_Request]) -> list[Answer]:
    """Run a lane's handler on one batch, in one of its worker's threads."""
    return loader.predict(handler, service, [(r.image, r.headers) for r in batch])


def _own_context(service: Service) -> Service:
    """`service` with a request context (and metrics) of its own, for another lane of the same handler."""
    twin = copy.copy(service)
    twin._context = copy.copy(service.context)  # noqa: SLF001 - Service exposes no setter
    twin.context.metrics = copy.copy(service.context.metrics)
    return twin


def _info(archive: Archive) -> StyleInfo:
    """A served archive as the bots see it: its catalogue entry, version and preview."""
    entry = archive.entry
    return StyleInfo(archive.name, entry.title, entry.description, entry.needs_face, archive.version,
                     archive.preview(), below_bar(read_quality(archive.path), catalog.bar(archive.name)),
                     archive.output_size)


class _Idle:
    """Counts the batches being drawn, all styles together; when the last ends and none waits, the heap's
    free pages go back to the system.

    A reply's activations are freed after each batch, but glibc keeps their pages for the next allocation:
    after two bursts of 30 web users the server held ~400 MiB more than before them (bench/load.py), and
    a first picture of each style ~250 MiB. Trimming only when nothing is left to draw costs a burst
    nothing; the next request maps its buffers afresh.
    """

    def __init__(self, queued: Callable[[], int]) -> None:
        self.queued = queued
        self.drawing = 0
        self.trim: asyncio.Future[None] | None = None  # the latest trim

    def drawn(self) -> None:
        """One batch ended: trim (in a thread: it walks every arena) if it was the last."""
        self.drawing -= 1
        if self.drawing == 0 and self.queued() == 0 and (self.trim is None or self.trim.done()):
            self.trim = asyncio.get_running_loop().run_in_executor(None, give_back_free_heap)


def give_back_free_heap() -> None:
    """Return the pages on glibc's free lists to the system (malloc_trim); nothing elsewhere (musl, macOS)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None).malloc_trim(0)


M_ARENA_MAX = -8  # glibc's mallopt() parameter


def _limit_malloc_arenas(count: int) -> None:
    """At most `count` glibc malloc arenas, unless MALLOC_ARENA_MAX says otherwise.

    glibc gives threads their own arenas, up to 8 per core, and each keeps what it
    once held: the lanes, loading and executor threads left ~50 MiB of such slack
    with eight styles loaded (bench/load.py: 589 MiB resident, 539 MiB with 2 arenas).
    One per lane and one for everything else keeps lanes from contending.
    """
    if "MALLOC_ARENA_MAX" in os.environ:
        return
    with contextlib.suppress(OSError, AttributeError):  # not glibc (musl, macOS): nothing to do
        ctypes.CDLL(None).mallopt(M_ARENA_MAX, count)


class EmbeddedEngine:
    """`Stylizer` over the `.mar` files in a model store, run in this process."""

    def __init__(self, model_store: Path, *, cache_dir: Path = DEFAULT_CACHE, queue_size: int = 32,
                 lanes: int | None = None) -> None:
        """`lanes`: requests of one style drawn at once (default: `TOONBOT_LANES`, else one per thread
        torch may use, OMP_NUM_THREADS or the cores, but no more than MAX_IN_FLIGHT lets in), torch's
        threads shared out among them: on 2 cores two photos on one thread each, so that no core waits
        for the other's half of a small convolution or idles through a photo's single-threaded steps
        (bench/request_cost.py, bench/load.py)."""
        self.model_store = Path(model_store)
        self.cache_dir = Path(cache_dir)
        self.queue_size = queue_size
        threads = torch.get_num_threads()
        self.lanes = lanes or int(os.environ.get("TOONBOT_LANES") or min(threads, get_settings().max_in_flight))
        if self.lanes > 1:  # process-wide: torch has one thread count for every thread
            torch.set_num_threads(max(1, threads // self.lanes))
        _limit_malloc_arenas(self.lanes + 1)
        self._workers: dict[str, _Worker] = {}
        self._idle = _Idle(self.queued)
        self._pinned: dict[str, Archive] = {}  # style -> the version it serves
        self._loading = asyncio.Lock()

    async def styles(self) -> list[StyleInfo]:
        """The version served of every style in the model store, sorted by name."""
        found = await asyncio.to_thread(scan, self.model_store)
        return [_info(self._pin(found[name])) for name in sorted(found)]

    def _pin(self, shipped: Archive) -> Archive:
        """A style's version is fixed when the engine first sees it (the oldest in the store);
        other versions wait for `make_default` (an admin's deploy), as on TorchServe."""
        return self._pinned.setdefault(shipped.name, shipped)

    async def stylize(
        self, style: str, image: bytes, *, size: int | None = None, fmt: ImageFormat = "jpeg",
        follow: str | None = None, compare: bool = False, upscale: bool = True,
    ) -> Stylized:
        """Translate one image with the style's packaged handler."""
        worker = await self._worker(style)
        answer = await worker.submit(image, request_headers(size, fmt, follow, compare, upscale))
        if answer.status == 200:
            return Stylized(answer.body, style, worker.archive.version, answer.content_type or "",
                            faces_drawn(answer.headers), answer.headers.get(FRAMES_HEADER))
        if 400 <= answer.status < 500:
            raise replies.rejection(answer.body)
        raise StylizeError(replies.FAILED)

    async def warm_up(self, first: str | None = None) -> None:
        """Load every style now (`first` first): choosing and compiling its inference path
        takes seconds, which no user request should wait for."""
        names = sorted((s.name for s in await self.styles()), key=lambda n: (n != first, n))
        for name in names:
            try:
                await self._worker(name)
            except Exception:  # one broken archive must not keep the others cold
                logger.exception("could not load style %s", name)

    async def _worker(self, style: str) -> _Worker:
        """The style's loaded worker; its first request loads the pinned archive.

        A loaded worker changes only through `make_default`, so requests that find
        one skip the model-store scan and the loading lock.
        """
        if (worker := self._workers.get(style)) is not None:
            return worker
        async with self._loading:
            if (worker := self._workers.get(style)) is not None:  # loaded while we waited
                return worker
            found = await asyncio.to_thread(scan, self.model_store)
            archive = self._pin(found[style]) if style in found else self._pinned.get(style)
            if archive is None:
                raise replies.unknown_style(style)
            self._workers[style] = worker = await self._load(archive)
            return worker

    async def _load(self, archive: Archive) -> _Worker:
        """Unpack the archive and start a worker on its initialised handler."""
        model_dir = await asyncio.to_thread(loader.unpack, archive, self.cache_dir)
        handler, service = await asyncio.to_thread(loader.load_service, archive, model_dir)
        logger.info("loaded %s %s from %s", archive.name, archive.version, archive.path)
        return _Worker(archive, handler, service, self.queue_size, self.lanes, self._idle)

    async def make_default(self, archive: Archive, sample: bytes, *, size: int = 64) -> None:
        """Load `archive` beside the version serving now, check it draws `sample`, and only then
        serve its style with it.

        Raises, changing nothing, when it fails to load (any exception of its handler) or
        to answer; the old version finishes what it has queued.
        """
        async with self._loading:
            worker = await self._load(archive)
            answer = await worker.submit(sample, request_headers(size, "png"))
            if answer.status != 200:
                await worker.close()
                raise StylizeError(f"it answered the sample image with {answer.status}: {answer.body[:200]!r}")
            previous = self._workers.get(archive.name)
            self._workers[archive.name], self._pinned[archive.name] = worker, archive
        if previous is not None:
            await previous.close()

    def queued(self) -> int:
        """Requests waiting in the styles' queues for a lane now (for the engine's queue-depth metric)."""
        return sum(worker.queue.qsize() for worker in list(self._workers.values()))

    async def health(self) -> bool:
        """True when the model store holds at least one style."""
        return bool(await self.styles())

    async def close(self) -> None:
        """Stop every worker thread."""
        workers, self._workers = list(self._workers.values()), {}
        await asyncio.gather(*(w.close() for w in workers))
