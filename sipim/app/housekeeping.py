"""Jobs a server runs on a clock: expiry, pruning, the change feed, the collector.

Each job is a coroutine function run every so many seconds; one that fails is
logged and runs again next time.  Jobs that write the store for the whole data
directory (expiry of bindings and messages, pruning) run in one process only.
"""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import Awaitable, Callable

from sipim.config import Config

log = logging.getLogger("sipim")

Job = Callable[[], Awaitable[None]]


class Housekeeping:
    def __init__(self, config: Config) -> None:
        self._config = config
        self._jobs: list[tuple[str, float, Job]] = []
        self._tasks: list[asyncio.Task[None]] = []

    def every(self, name: str, interval: float, job: Job) -> None:
        self._jobs.append((name, interval, job))

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._collect_young(), name="gc")]
        self._tasks += [loop.create_task(self._every(interval, job), name=name)
                        for name, interval, job in self._jobs]

    def stop(self) -> None:
        for task in self._tasks:
            task.cancel()

    @staticmethod
    async def _every(interval: float, job: Job) -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                await job()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("periodic job %s failed", getattr(job, "__name__", job))

    @staticmethod
    def tune_collector() -> None:
        """Tens of thousands of live transactions (UDP keeps each 32 s, RFC 3261 §17.2.2
        timer J) make every full collection rescan them all.  Freeze what start-up
        made and collect young objects less often; reference cycles are rare here."""
        gc.collect()
        gc.freeze()
        gc.set_threshold(50_000, 50, 100)

    async def _collect_young(self) -> None:
        """Young (and now and then middle-generation) collections on a clock.

        Under a steady load the objects of expiring transactions are freed about as
        fast as new ones are made, so the collector's allocation count hardly grows:
        its own young collections come seldom and walk everything made since (in a
        bench, pauses of 0.9 s).  On a clock each walks ~0.1 s of work: the same total,
        pauses of ~10 ms (~100 ms for the middle generation)."""
        config = self._config
        middle_every = max(1, round(config.gc_middle_interval / config.gc_young_interval))
        count = 0
        while True:
            await asyncio.sleep(config.gc_young_interval)
            count += 1
            gc.collect(1 if count % middle_every == 0 else 0)
