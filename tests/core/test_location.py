"""The in-memory location service: keys, flows and expiry (RFC 3261 §10.3, RFC 5626 §6)."""

from sipim.core.location import LocationService
from sipim.store.models import Binding


def binding(key="k1", expires_at=100.0, flow_id=None, aor="sip:alice@example.test", instance=None):
    return Binding(aor=aor, binding_key=key, contact=f"<sip:{key}@192.0.2.1>", expires_at=expires_at,
                   flow_id=flow_id, instance_id=instance)


def test_put_with_same_key_replaces_and_moves_flow_index():
    location = LocationService()
    location.put(binding(flow_id="f1"))
    old = location.put(binding(flow_id="f2", expires_at=200))
    assert old.flow_id == "f1"
    assert location.bindings_on_flow("f1") == []
    assert [b.expires_at for b in location.bindings_on_flow("f2")] == [200]
    assert len(location) == 1


def test_pop_expired_skips_refreshed_bindings():
    location = LocationService()
    location.put(binding(expires_at=10))
    location.put(binding(expires_at=50))  # refresh
    location.put(binding(key="k2", expires_at=20))
    assert [b.binding_key for b in location.pop_expired(30)] == ["k2"]
    assert [b.binding_key for b in location.bindings("sip:alice@example.test")] == ["k1"]
    assert [b.binding_key for b in location.pop_expired(60)] == ["k1"]
    assert list(location.aors()) == []


def test_bindings_hides_expired_when_given_now_and_filters_instances():
    location = LocationService()
    location.put(binding("a", expires_at=10, instance="<urn:uuid:1>"))
    location.put(binding("b", expires_at=100, instance="<urn:uuid:2>"))
    assert [b.binding_key for b in location.bindings("sip:alice@example.test", now=50)] == ["b"]
    assert [b.binding_key for b in location.bindings_for_instance("sip:alice@example.test", "<urn:uuid:2>")] == ["b"]


def test_remove_all_clears_flow_index():
    location = LocationService()
    location.put(binding("a", flow_id="f"))
    location.put(binding("b", flow_id="f"))
    assert len(location.remove_all("sip:alice@example.test")) == 2
    assert location.bindings_on_flow("f") == []
