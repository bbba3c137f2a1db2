"""The location service: which devices are bound to an address-of-record.

Bindings live in memory (the hot path never waits on a database to route)
and are written through to the store by ``StoreWriter`` in batches.  Indexes:

- by AOR and binding key (RFC 3261 §10.3 step 7; the key is the RFC 5626 §6
  instance-id + reg-id pair, the instance-id alone, or the Contact URI);
- by flow, so a closed connection finds the bindings it carried
  (RFC 5626 §4.4 / §6);
- by expiry time, a heap swept periodically.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable

from sipim.sip.uri import SipURI
from sipim.store.models import Binding


def contact_key(uri: object) -> str:
    """The binding key of a contact without +sip.instance: the URI under RFC 3261
    §19.1.4 equality (host case-insensitive; user, ttl, method, maddr and transport
    parameters compared, the others not)."""
    if isinstance(uri, SipURI):
        params = ";".join(f"{k}={v}" if v is not None else k for k, v in sorted(uri.params.items())
                          if k in ("user", "ttl", "method", "maddr", "transport"))
        return f"{uri.scheme}:{uri.user or ''}@{uri.host.lower()}:{uri.port or ''};{params}"
    return str(uri)


class LocationService:
    def __init__(self) -> None:
        self._by_aor: dict[str, dict[str, Binding]] = {}
        self._by_flow: dict[str, set[tuple[str, str]]] = {}
        # (expires_at, aor, key); stale entries are skipped when popped.
        self._expiry_heap: list[tuple[float, str, str]] = []

    # -- reading ---------------------------------------------------------
    def bindings(self, aor: str, now: float | None = None) -> list[Binding]:
        found = self._by_aor.get(aor)
        if not found:
            return []
        if now is None:
            return list(found.values())
        return [b for b in found.values() if b.expires_at > now]

    def get(self, aor: str, key: str) -> Binding | None:
        found = self._by_aor.get(aor)
        return found.get(key) if found else None

    def bindings_for_instance(self, aor: str, instance_id: str, now: float | None = None) -> list[Binding]:
        return [b for b in self.bindings(aor, now) if b.instance_id == instance_id]

    def bindings_on_flow(self, flow_id: str) -> list[Binding]:
        keys = self._by_flow.get(flow_id, ())
        return [b for aor, key in keys if (b := self.get(aor, key)) is not None]

    def aors(self) -> Iterable[str]:
        return self._by_aor.keys()

    def __len__(self) -> int:
        return sum(len(v) for v in self._by_aor.values())

    # -- writing -----------------------------------------------------------
    def load(self, bindings: Iterable[Binding]) -> None:
        for binding in bindings:
            self.put(binding)

    def put(self, binding: Binding) -> Binding | None:
        """Insert or replace the binding with the same (aor, key); return the old one."""
        per_aor = self._by_aor.setdefault(binding.aor, {})
        old = per_aor.get(binding.binding_key)
        if old is not None and old.flow_id:
            self._unindex_flow(old)
        per_aor[binding.binding_key] = binding
        if binding.flow_id:
            self._by_flow.setdefault(binding.flow_id, set()).add((binding.aor, binding.binding_key))
        heapq.heappush(self._expiry_heap, (binding.expires_at, binding.aor, binding.binding_key))
        return old

    def remove(self, aor: str, key: str) -> Binding | None:
        per_aor = self._by_aor.get(aor)
        if not per_aor:
            return None
        old = per_aor.pop(key, None)
        if old is not None and old.flow_id:
            self._unindex_flow(old)
        if not per_aor:
            del self._by_aor[aor]
        return old

    def forget(self, aor: str, key: str) -> Binding | None:
        """Remove a binding every process of the server removes by itself (a change read
        from the feed); a worker's table (sipim/cluster) does not tell the others.  In a
        single process the same as `remove`."""
        return self.remove(aor, key)

    def remove_all(self, aor: str) -> list[Binding]:
        return [b for key in list(self._by_aor.get(aor, {})) if (b := self.remove(aor, key)) is not None]

    def pop_expired(self, now: float) -> list[Binding]:
        expired: list[Binding] = []
        heap = self._expiry_heap
        while heap and heap[0][0] <= now:
            expires_at, aor, key = heapq.heappop(heap)
            current = self.get(aor, key)
            # A refreshed binding left an older heap entry behind: skip it.
            if current is not None and current.expires_at <= now:
                self.remove(aor, key)
                expired.append(current)
        return expired

    def _unindex_flow(self, binding: Binding) -> None:
        keys = self._by_flow.get(binding.flow_id or "")
        if keys is not None:
            keys.discard((binding.aor, binding.binding_key))
            if not keys:
                del self._by_flow[binding.flow_id or ""]
