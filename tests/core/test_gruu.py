"""RFC 5627 GRUUs: public GRUU form, temporary GRUUs that resolve and do not link."""

from sipim.core.gruu import TempGruuCodec, instance_urn, public_gruu


def test_rfc5627_appendix_a1_public_gruu_is_aor_with_gr_instance():
    assert public_gruu("sip:alice@example.com", '"<urn:uuid:f81d4fae-7dec-11d0-a765-00a0c91e6bf6>"') == \
        "sip:alice@example.com;gr=urn:uuid:f81d4fae-7dec-11d0-a765-00a0c91e6bf6"
    assert instance_urn("<urn:uuid:1>") == "urn:uuid:1"


def test_rfc5627_5_4_temporary_gruu_resolves_to_aor_and_instance():
    codec = TempGruuCodec(b"k" * 32, "example.com")
    gruu = codec.make("sip:alice@example.com", "<urn:uuid:1>", "call-1")
    assert gruu.endswith("@example.com;gr")
    user = gruu.split(":", 1)[1].split("@", 1)[0]
    target = codec.resolve(user)
    assert (target.aor, target.instance_id, target.call_id) == ("sip:alice@example.com", "<urn:uuid:1>", "call-1")


def test_rfc5627_5_1_temporary_gruus_do_not_reveal_they_share_a_user():
    codec = TempGruuCodec(b"k" * 32, "example.com")
    first = codec.make("sip:alice@example.com", "<urn:uuid:1>", "call-1")
    second = codec.make("sip:alice@example.com", "<urn:uuid:1>", "call-1")
    assert first != second
    assert "alice" not in first


def test_forged_or_foreign_temporary_gruu_does_not_resolve():
    codec = TempGruuCodec(b"k" * 32, "example.com")
    other = TempGruuCodec(b"x" * 32, "example.com")
    user = other.make("sip:alice@example.com", "<urn:uuid:1>", "c").split(":", 1)[1].split("@", 1)[0]
    assert codec.resolve(user) is None
    assert codec.resolve("tgruu.notbase32!!") is None
    assert codec.resolve("alice") is None
