"""Prometheus metrics of the photo requests, counted once, in the core, for every front end.

`observe` is called where the core writes a request's usage row (so the
metrics and the usage log never disagree); `ModelSlots` stands in for the
core's semaphore of model slots and times each photo's (or clip frame's) wait
for one apart from its drawing. Served at `/metrics` (`telemetry.probes`).
"""

from __future__ import annotations

import asyncio
import time
from typing import Literal

from prometheus_client import Counter, Gauge, Histogram

NO_STYLE = "-"  # the label of requests refused before a deployed style was chosen (keeps the label's values few)

REQUESTS = Counter(
    "toonbot_requests", "Photo and clip requests answered, by front end, style and outcome (the usage status)",
    ["front_end", "style", "outcome"],
)
REFUSALS = Counter(
    "toonbot_refusals", "Requests answered without a picture, by front end and reason", ["front_end", "reason"]
)
FACES = Counter("toonbot_faces_drawn", "Faces drawn (a clip counts its most at once)", ["front_end", "style"])
FRAMES = Counter("toonbot_clip_frames", "Frames of animated GIFs and videos drawn", ["front_end", "style"])
LATENCY = Histogram(
    "toonbot_request_seconds", "A request from its arrival to its answer (download, queue and drawing)",
    ["front_end", "outcome"], buckets=(0.1, 0.25, 0.5, 1, 2, 4, 8, 15, 30, 60, 120, 300),
)
QUEUE_WAIT = Histogram(
    "toonbot_queue_wait_seconds", "How long a photo or a clip frame waited for a model slot",
    buckets=(0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
DRAWING = Histogram(
    "toonbot_drawing_seconds", "How long the runtime took to draw one photo or one clip frame (a model slot held)",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 15, 30, 60),
)
QUEUE_DEPTH = Gauge("toonbot_queue_depth", "Photos and clip frames waiting for a model slot now")
ENGINE_QUEUE = Gauge(
    "toonbot_engine_queue_depth", "Requests in the embedded engine's queues, waiting for a lane (0 on TorchServe:"
    " its own metrics port says)",
)
DRAWING_NOW = Gauge("toonbot_drawing_now", "Photos and clip frames being drawn now (model slots held)")
UPSCALER_SKIPPED = Counter(
    "toonbot_upscaler_skipped", "Photos drawn without their style's learned upscaler (resized instead) because"
    " more than UPSCALE_BACKLOG photos were waiting", ["style"],
)


def observe(
    *, front_end: str, style: str | None, outcome: str, problem: str | None, seconds: float,
    faces: int | None, frames: int | None,
) -> None:
    """Count one answered request: `style` None when no deployed style was chosen; `problem`, the
    reason there is no picture (None: there is one)."""
    shown = style or NO_STYLE
    REQUESTS.labels(front_end, shown, outcome).inc()
    LATENCY.labels(front_end, outcome).observe(seconds)
    if problem is not None:
        REFUSALS.labels(front_end, problem).inc()
    if faces:
        FACES.labels(front_end, shown).inc(faces)
    if frames:
        FRAMES.labels(front_end, shown).inc(frames)


class ModelSlots(asyncio.Semaphore):
    """The core's model slots (`MAX_IN_FLIGHT`), timed: the wait for one, then how long it is held.

    A slot is taken and given back by the same task (`async with`), so the
    task tells whose drawing a `release` ends.
    """

    def __init__(self, value: int) -> None:
        super().__init__(value)
        self._taken: dict[asyncio.Task[object] | None, list[float]] = {}
        self.waiting = 0  # tasks in line for a slot now


    async def acquire(self) -> Literal[True]:
        """Wait for a slot, counted in the queue meanwhile."""
        started = time.perf_counter()
        QUEUE_DEPTH.inc()
        self.waiting += 1
        try:
            await super().acquire()
        finally:
            QUEUE_DEPTH.dec()
            self.waiting -= 1
        now = time.perf_counter()
        QUEUE_WAIT.observe(now - started)
        DRAWING_NOW.inc()
        self._taken.setdefault(asyncio.current_task(), []).append(now)
        return True

    def release(self) -> None:
        """Give the slot back; its holder's drawing time is observed."""
        super().release()
        DRAWING_NOW.dec()
        task = asyncio.current_task()
        taken = self._taken.get(task)
        if taken:
            DRAWING.observe(time.perf_counter() - taken.pop())
            if not taken:
                del self._taken[task]
