"""Reading the change feed: what another process changed in the store, applied here.

The CLI changes users and devices of a running server through the store, nodes
behind an external core record each other's third-party registrations there, and
worker processes share one store: each process reads the feed
(`Store.changes_since`, every `change_poll_interval`) and brings its caches up to
date.  The kinds are defined in sipim/store/changes.py.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from sipim.core.auth import UserCache
from sipim.core.location import LocationService
from sipim.core.registrar import Registrar
from sipim.im.pager import PagerService
from sipim.sip.clock import TimeSource
from sipim.store import Store
from sipim.store.changes import (CHANGE_BINDING, CHANGE_BINDING_REMOVED, CHANGE_DEVICE, CHANGE_USER,
                                 CHANGE_XCAP)
from sipim.net import Flow
from sipim.xdm.service import XdmService

log = logging.getLogger("sipim")


class ChangeFeed:
    def __init__(self, *, store: Store, users: UserCache, location: LocationService, registrar: Registrar,
                 pager: PagerService, xdm: XdmService, get_flow: Callable[[str], Flow | None],
                 wall: TimeSource, node_id: str, writes_store: bool, bindings_in_store: bool) -> None:
        self._store = store
        self._users = users
        self._location = location
        self._registrar = registrar
        self._pager = pager
        self._xdm = xdm
        self._get_flow = get_flow
        self._wall = wall
        self._node_id = node_id
        # The one process of a data directory that writes what follows from a change
        # (the first worker; every process of a single-process server).
        self._writes_store = writes_store
        # Behind an external core the bindings live in the store, written by any node.
        self._bindings_in_store = bindings_in_store
        self._last_id = 0
        self._lock = asyncio.Lock()  # one reader at a time, so no change is applied twice
        self._tasks: set[asyncio.Task[None]] = set()

    def start(self, after_id: int) -> None:
        """Apply the changes made after ``after_id`` (the latest one when the process
        started: what is older, it loaded from the store)."""
        self._last_id = after_id

    async def poll(self) -> None:
        async with self._lock:
            for change in await self._store.changes_since(self._last_id):
                self._last_id = max(self._last_id, change.id)
                await self.apply(change.kind, change.key)

    def take(self, kind: str, key: str) -> None:
        """Another worker process published this change (sipim/cluster): what is cached
        follows at once -- before the request that made it is even answered there --
        and the rest of the work goes as when the feed is read (which repeats it
        harmlessly at the next poll)."""
        if kind == CHANGE_USER:
            self._users.invalidate(key.rpartition("@")[0])
        elif kind == CHANGE_DEVICE:
            self._users.invalidate_device(key)
        task = asyncio.get_running_loop().create_task(self.apply(kind, key))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def apply(self, kind: str, key: str) -> None:
        if kind == CHANGE_USER:
            await self._user_changed(key)
        elif kind == CHANGE_DEVICE:
            await self._device_changed(key)
        elif kind == CHANGE_BINDING and self._bindings_in_store:
            await self._reload_bindings(key)
        elif kind == CHANGE_XCAP:
            await self._xdm.on_change(key)
        elif kind == CHANGE_BINDING_REMOVED:
            aor, _, binding_key = key.partition(" ")
            removed = self._location.forget(aor, binding_key)
            if removed is not None and removed.flow_id:
                self._close_flow(removed.flow_id)

    async def _user_changed(self, key: str) -> None:
        username, _, domain = key.rpartition("@")
        self._users.invalidate(username)
        if await self._store.get_user(username, domain) is None:
            # The user was removed: its devices are unregistered at once.
            aor = f"sip:{username}@{domain}"
            for binding in self._location.bindings(aor):
                self._location.forget(aor, binding.binding_key)

    async def _device_changed(self, auth_username: str) -> None:
        """A device was re-issued or revoked (here or by another process): its cached
        HA1s and token go; a revoked device's registrations end and its connection
        closes, so it must authenticate again -- and cannot."""
        self._users.invalidate_device(auth_username)
        device = await self._store.device_by_auth_username(auth_username)
        if device is None or not device.revoked:
            return
        aor = f"sip:{device.username}@{device.domain}"
        gone = [b for b in self._location.bindings(aor)
                if b.instance_id and b.instance_id.strip("<>") == device.instance_id]
        if self._writes_store:
            self._registrar.remove_bindings(gone, f"device {device.device_id} revoked", self._wall.now())
        else:  # the first worker writes the store and the audit trail
            for binding in gone:
                self._location.forget(binding.aor, binding.binding_key)
        for binding in gone:
            if binding.flow_id:
                self._close_flow(binding.flow_id)

    async def _reload_bindings(self, aor: str) -> None:
        """Another node (or this one) recorded a third-party REGISTER for ``aor``:
        take the devices from the store, and let the IM role catch up devices it
        stored messages for."""
        now = self._wall.now()
        stored = {b.binding_key: b for b in await self._store.list_bindings(aor) if b.expires_at > now}
        for binding in self._location.bindings(aor):
            if binding.binding_key not in stored:
                self._location.remove(aor, binding.binding_key)
        for binding in stored.values():
            known = self._location.get(aor, binding.binding_key)
            if known != binding:
                self._location.put(binding)
                if binding.node_id != self._node_id:
                    self._pager.on_registered_elsewhere(binding)

    def _close_flow(self, flow_id: str) -> None:
        flow = self._get_flow(flow_id)
        if flow is not None:
            flow.close()

    async def drain(self) -> Any:
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=2)
