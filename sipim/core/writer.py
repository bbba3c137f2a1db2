"""Group commit: binding changes and audit records reach the store in batches.

A registration is answered only after its binding is committed (so a 200 OK
survives a crash), but hundreds of registrations share one transaction: each
caller gets a future that resolves when the batch holding its change commits.
Changes to the same binding within one batch collapse to the last one.
"""

from __future__ import annotations

import asyncio
import logging

from sipim.store.base import Store
from sipim.store.models import AuditRecord, Binding, HistoryEntry, StoredMessage, WriteBatch

log = logging.getLogger(__name__)


class StoreWriter:
    def __init__(self, store: Store, *, flush_interval: float, max_batch: int) -> None:
        self._store = store
        self._flush_interval = flush_interval
        self._max_batch = max_batch
        # (aor, key) -> Binding to upsert, or None to delete
        self._bindings: dict[tuple[str, str], Binding | None] = {}
        self._audit: list[AuditRecord] = []
        self._messages: list[StoredMessage] = []
        self._history: list[HistoryEntry] = []
        self._message_waiters: dict[str, asyncio.Future[bool]] = {}
        self._deliveries: list[tuple[str, str, float]] = []
        self._taken: list[str] = []
        self._history_status: list[tuple[str, str]] = []
        # One future for everything submitted before the next flush: every caller of
        # committed() in between shares it (a future per registration is not free).
        self._batch_committed: asyncio.Future[None] | None = None
        self._wakeup = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None
        self._closing = False

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The event loop the writer runs on (asked once: each asking costs a getpid)."""
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
        return self._loop

    def start(self) -> None:
        self._task = self.loop.create_task(self._run(), name="store-writer")

    async def stop(self) -> None:
        self._closing = True
        self._wakeup.set()
        if self._task is not None:
            await self._task
            self._task = None
        await self._flush()

    # -- submitting ---------------------------------------------------------
    def upsert(self, binding: Binding) -> None:
        self._bindings[(binding.aor, binding.binding_key)] = binding
        self._poke()

    def delete(self, aor: str, key: str) -> None:
        self._bindings[(aor, key)] = None
        self._poke()

    def audit(self, record: AuditRecord) -> None:
        self._audit.append(record)
        self._poke()

    def message(self, message: StoredMessage, history: list[HistoryEntry]) -> asyncio.Future[bool]:
        """Store an accepted message and its history entries; the future says True once
        committed, False when the store already had it (a re-sent message)."""
        future = self.loop.create_future()
        self._messages.append(message)
        self._history.extend(history)
        self._message_waiters[message.id] = future
        self._poke()
        return future

    def history(self, entries: list[HistoryEntry]) -> None:
        self._history.extend(entries)
        self._poke()

    def delivered(self, message_id: str, device_key: str, ts: float) -> None:
        """A device took a message (recorded with the next batch)."""
        self._deliveries.append((message_id, device_key, ts))
        self._poke()

    def taken_at_once(self, message_id: str) -> None:
        self._taken.append(message_id)
        self._poke()

    def history_status(self, message_id: str, status: str) -> None:
        self._history_status.append((message_id, status))
        self._poke()

    def committed(self) -> asyncio.Future[None]:
        """A future that resolves once everything submitted so far is committed.

        Shared by every caller until the next flush: add callbacks to it, do not
        cancel it or set its result."""
        future = self._batch_committed
        if future is None:
            future = self._batch_committed = self.loop.create_future()
            self._poke()
        return future

    def _poke(self) -> None:
        if not self._wakeup.is_set():
            self._wakeup.set()

    # -- flushing -------------------------------------------------------------
    async def _run(self) -> None:
        while not self._closing:
            await self._wakeup.wait()
            # Let more changes gather unless the batch is already large.
            if self._pending_count() < self._max_batch and not self._closing:
                await asyncio.sleep(self._flush_interval)
            self._wakeup.clear()
            await self._flush()

    def _pending_count(self) -> int:
        return (len(self._bindings) + len(self._audit) + len(self._messages) + len(self._history)
                + len(self._deliveries) + len(self._taken) + len(self._history_status))

    async def _flush(self) -> None:
        if not (self._pending_count() or self._batch_committed is not None):
            return
        bindings, self._bindings = self._bindings, {}
        audit, self._audit = self._audit, []
        messages, self._messages = self._messages, []
        history, self._history = self._history, []
        message_waiters, self._message_waiters = self._message_waiters, {}
        deliveries, self._deliveries = self._deliveries, []
        taken, self._taken = self._taken, []
        history_status, self._history_status = self._history_status, []
        batch_committed, self._batch_committed = self._batch_committed, None
        waiters = [batch_committed] if batch_committed is not None else []
        batch = WriteBatch(upserts=[b for b in bindings.values() if b is not None],
                           deletes=[key for key, b in bindings.items() if b is None],
                           audit=audit, messages=messages, history=history, deliveries=deliveries,
                           taken_at_once=taken, history_status=history_status)
        try:
            result = await self._store.write_batch(batch)
        except Exception as exc:  # the store is down: fail the waiters, keep serving
            log.error("store write of %d bindings, %d messages, %d audit records failed: %s",
                      len(batch.upserts) + len(batch.deletes), len(messages), len(audit), exc)
            for waiter in (*waiters, *message_waiters.values()):
                if not waiter.done():
                    waiter.set_exception(exc)
            return
        duplicates = result.duplicate_message_ids
        for message_id, waiter in message_waiters.items():
            if not waiter.done():
                waiter.set_result(message_id not in duplicates)
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)
