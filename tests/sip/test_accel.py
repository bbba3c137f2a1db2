"""The optional mypyc build of the SIP layer (sipim/sip/_accel.py): the guard
that keeps a stale build from shadowing the sources, and what must behave the
same compiled or not (pickling, copying)."""

from __future__ import annotations

import copy
import json
import os
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import sipim.sip
from sipim.sip import _accel
from sipim.sip.digest import DigestChallenge, parse_credentials
from sipim.sip.headers import CSeq, Headers, Via
from sipim.sip.message import make_response
from sipim.sip.parser import KeepAlive, ParserLimits, parse_message
from sipim.sip.uri import AbsoluteURI, NameAddr, SipURI, TelURI, parse_name_addr, parse_uri

ROOT = Path(__file__).resolve().parents[2]
SUFFIX = ".cpython-399-test.so"  # a fake interpreter: never importable

REGISTER = (
    b"REGISTER sip:example.com SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 192.0.2.1:5070;branch=z9hG4bK776asdhds;rport\r\n"
    b"Max-Forwards: 70\r\n"
    b"From: \"Alice\" <sip:alice@example.com>;tag=1928301774\r\n"
    b"To: <sip:alice@example.com>\r\n"
    b"Call-ID: a84b4c76e66710@pc33.example.com\r\n"
    b"CSeq: 1 REGISTER\r\n"
    b"Contact: <sip:alice@192.0.2.1:5070;transport=udp>;expires=3600;+sip.instance=\"<urn:uuid:1>\"\r\n"
    b"Content-Length: 0\r\n\r\n"
)


def _roundtrips(value):
    for clone in (pickle.loads(pickle.dumps(value)), copy.copy(value), copy.deepcopy(value)):
        assert type(clone) is type(value)
        assert clone == value


def test_value_objects_pickle_and_copy_compiled_or_not():
    # another process (or a cache) may receive these: pickling must not
    # depend on whether the classes are mypyc native classes
    for value in (
        Via("UDP", "192.0.2.1", 5060, {"branch": "z9hG4bK1", "rport": None}),
        CSeq(7, "MESSAGE"),
        parse_uri("sip:alice@example.com:5070;transport=tcp?subject=hi"),
        SipURI("sips", "example.com", user="bob", params={"lr": None}),
        parse_uri("tel:+1-415-555-0123;ext=7"),
        AbsoluteURI("urn", "uuid:1"),
        parse_name_addr('"Alice" <sip:alice@example.com>;tag=x'),
        ParserLimits(max_headers=12),
        KeepAlive(),
        DigestChallenge("example.com", "n0nce", "SHA-256", ("auth",), "op", True),
        parse_credentials('Digest username="a", realm="r", nonce="n", uri="sip:r", response="0a", '
                          'qop=auth, nc=00000001, cnonce="c"'),
    ):
        _roundtrips(value)
    # a parsed URI keeps writing its source text after the round trip
    uri = parse_uri("sip:Alice@EXAMPLE.com;Transport=TCP")
    assert str(pickle.loads(pickle.dumps(uri))) == "sip:Alice@EXAMPLE.com;Transport=TCP"
    assert isinstance(pickle.loads(pickle.dumps(parse_uri("tel:+14155550123"))), TelURI)
    assert isinstance(pickle.loads(pickle.dumps(parse_name_addr("<sip:a@b>"))), NameAddr)


def test_messages_pickle_with_their_parsed_views():
    request = parse_message(REGISTER)
    request.top_via, request.from_, request.contacts  # fill the typed-view cache
    clone = pickle.loads(pickle.dumps(request))
    assert clone == request and clone.to_bytes() == request.to_bytes()
    assert clone.from_ == request.from_ and clone.contacts == request.contacts
    response = make_response(request, 200, to_tag="t1", headers=[("Expires", "3600")])
    _roundtrips(response)
    assert pickle.loads(pickle.dumps(response)).to_bytes() == response.to_bytes()
    headers = Headers([("Via", "SIP/2.0/UDP h"), ("Subject", "x")])
    _roundtrips(headers)


def test_messages_and_headers_stay_unhashable():
    with pytest.raises(TypeError):
        hash(parse_message(REGISTER))
    with pytest.raises(TypeError):
        hash(Headers())


# -- the guard -------------------------------------------------------------------


def _fake_build(directory: Path, suffix: str = SUFFIX) -> None:
    """A package directory with sources, 'extension' files and a matching stamp."""
    directory.mkdir(parents=True, exist_ok=True)
    for name in _accel.ACCEL_MODULES:
        (directory / f"{name}.py").write_text(f"# {name}\n")
    built = {}
    for path in _accel.built_files(directory, suffix):
        path.write_bytes(b"\x7fELF" + path.name.encode())
        info = path.stat()
        built[path.name] = [info.st_size, info.st_mtime_ns, _accel.file_sha256(path)]
    stamp = {
        "format": _accel.STAMP_FORMAT,
        "ext_suffix": suffix,
        "mypy": "test",
        "sources": {name: _accel.file_sha256(directory / f"{name}.py") for name in _accel.ACCEL_MODULES},
        "built": built,
    }
    (directory / _accel.BUILD_STAMP).write_text(json.dumps(stamp))


def _check(directory: Path, **environ: str) -> _accel.Status:
    return _accel.check(directory, environ=environ, suffix=SUFFIX)


def test_guard_uses_a_build_that_matches_its_sources(tmp_path):
    _fake_build(tmp_path)
    status = _check(tmp_path)
    assert status.active, status.reason


def test_guard_without_a_build_is_quietly_pure(tmp_path):
    for name in _accel.ACCEL_MODULES:
        (tmp_path / f"{name}.py").write_text("")
    status = _check(tmp_path)
    assert not status.active and not status.warn


def test_guard_refuses_a_build_older_than_a_source(tmp_path):
    _fake_build(tmp_path)
    with (tmp_path / "uri.py").open("a") as source:
        source.write("# edited after the build\n")
    status = _check(tmp_path)
    assert not status.active and status.warn
    assert "uri.py changed" in status.reason


def test_guard_refuses_extensions_without_a_stamp(tmp_path):
    _fake_build(tmp_path)
    (tmp_path / _accel.BUILD_STAMP).unlink()
    status = _check(tmp_path)
    assert not status.active and status.warn


def test_guard_refuses_a_replaced_or_missing_extension(tmp_path):
    _fake_build(tmp_path)
    (tmp_path / f"parser{SUFFIX}").write_bytes(b"\x7fELF something else entirely")
    status = _check(tmp_path)
    assert not status.active and status.warn and f"parser{SUFFIX}" in status.reason
    _fake_build(tmp_path)
    (tmp_path / f"_native__mypyc{SUFFIX}").unlink()
    status = _check(tmp_path)
    assert not status.active and status.warn and "missing" in status.reason


def test_guard_keeps_a_copied_build(tmp_path):
    # a copy changes every mtime but not the content
    _fake_build(tmp_path / "a")
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    for path in _accel.built_files(tmp_path / "b", SUFFIX):
        os.utime(path, ns=(1, 1))
    assert _check(tmp_path / "b").active


def test_guard_refuses_a_garbled_stamp_or_another_interpreter(tmp_path):
    _fake_build(tmp_path)
    (tmp_path / _accel.BUILD_STAMP).write_text("{not json")
    status = _check(tmp_path)
    assert not status.active and status.warn
    _fake_build(tmp_path / "other", suffix=".cpython-398-other.so")
    status = _check(tmp_path / "other")
    assert not status.active and "another interpreter" in status.reason


def test_sipim_pure_wins(tmp_path):
    _fake_build(tmp_path)
    assert not _check(tmp_path, SIPIM_PURE="1").active
    assert _check(tmp_path, SIPIM_PURE="0").active


def _import_in_subprocess(package_root: Path, **environ: str) -> subprocess.CompletedProcess:
    code = (
        "import sipim.sip as sip, sipim.sip.parser as parser, sipim.sip.headers as headers;"
        "print(parser.__file__); print(headers.__file__); print(sip.accel_summary());"
        "print(sip.parse_message(%r).cseq)" % REGISTER
    )
    env = {k: v for k, v in os.environ.items() if k != "SIPIM_PURE"}
    env.update(environ, PYTHONPATH=str(package_root))
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                          cwd=package_root, check=True)


def test_sipim_pure_loads_the_sources():
    result = _import_in_subprocess(ROOT, SIPIM_PURE="1")
    parser_file, headers_file, summary, cseq = result.stdout.splitlines()
    assert parser_file.endswith("parser.py") and headers_file.endswith("headers.py")
    assert "pure Python" in summary and "SIPIM_PURE" in summary
    assert cseq == "1 REGISTER"


requires_build = pytest.mark.skipif(
    not _accel.check(environ={}).active, reason="no current mypyc build (make accel)")


@requires_build
def test_a_current_build_is_imported():
    result = _import_in_subprocess(ROOT)
    parser_file, headers_file, summary, _ = result.stdout.splitlines()
    assert parser_file.endswith(_accel.ext_suffix()) and headers_file.endswith(_accel.ext_suffix())
    assert "compiled with mypyc" in summary
    assert sipim.sip.ACCELERATED == (not _accel.pure_requested())


@requires_build
def test_a_stale_build_falls_back_to_the_sources_with_a_warning(tmp_path):
    # a copy of the package whose uri.py was edited after the build
    shutil.copytree(ROOT / "sipim", tmp_path / "sipim", ignore=shutil.ignore_patterns("__pycache__", "static*"))
    with (tmp_path / "sipim" / "sip" / "uri.py").open("a") as source:
        source.write("\nEDITED = True\n")
    result = _import_in_subprocess(tmp_path)
    parser_file, headers_file, summary, cseq = result.stdout.splitlines()
    assert parser_file == str(tmp_path / "sipim" / "sip" / "parser.py")
    assert headers_file == str(tmp_path / "sipim" / "sip" / "headers.py")
    assert "uri.py changed since the build" in summary
    assert "compiled SIP modules not used" in result.stderr
    assert cseq == "1 REGISTER"


def test_version_says_which_sip_layer_runs():
    sipim_command = Path(sys.executable).with_name("sipim")
    env = {**os.environ, "SIPIM_PURE": "1"}
    result = subprocess.run([str(sipim_command), "--version"], capture_output=True, text=True, env=env, check=True)
    assert "sipim " in result.stdout and "SIP layer: pure Python (SIPIM_PURE is set)" in result.stdout


def test_the_api_takes_the_same_arguments_compiled_or_not():
    # a compiled function refuses arguments whose type is not the annotated
    # one: the annotations must admit what the Python code handles
    from sipim.sip import Request, StreamFramer

    for data in (bytearray(REGISTER), memoryview(REGISTER)):
        assert parse_message(data).cseq.seq == 1
        assert [type(item).__name__ for item in StreamFramer().feed(data)] == ["Request"]
    request = Request("MESSAGE", "sip:bob@example.com", [["To", "<sip:bob@example.com>"]], bytearray(b"hi"))
    assert request.body == b"hi" and request.headers.get("To") == "<sip:bob@example.com>"
    assert Request("MESSAGE", "sip:bob@example.com", body=memoryview(b"yo")).body == b"yo"
    response = make_response(parse_message(REGISTER), 200, headers=[["Expires", "60"]], body=bytearray(b"x"))
    assert response.headers.get("Expires") == "60" and response.body == b"x"
    assert Headers((name, value) for name, value in [("Via", "SIP/2.0/UDP h")]).get("Via") == "SIP/2.0/UDP h"
