"""Talk to a test server's provisioning endpoints over HTTPS (trusting its private CA),
and read the codes its outbox SMS gateway "sent"."""

from __future__ import annotations

import json
import ssl
import time
import urllib.error
import urllib.request
from dataclasses import dataclass

from sipim.sip.digest import build_authorization, ha1, parse_challenge


@dataclass
class HttpAnswer:
    status: int
    headers: dict
    body: object

    @property
    def json(self) -> dict:
        return self.body  # type: ignore[return-value]


def https(server, method: str, path: str, body: object = None, *, headers: dict | None = None,
          raw: bytes | None = None) -> HttpAnswer:
    context = ssl.create_default_context(cafile=str(server.ca_file))
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    request = urllib.request.Request(f"https://127.0.0.1:{server.ports['wss']}{path}", data=data, method=method,
                                     headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(request, context=context, timeout=10) as response:
            status, answer_headers, text = response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        status, answer_headers, text = error.code, dict(error.headers), error.read()
    try:
        parsed = json.loads(text) if text else None
    except ValueError:
        parsed = text.decode(errors="replace")
    return HttpAnswer(status, answer_headers, parsed)


def post(server, path: str, body: object = None, **kwargs) -> HttpAnswer:
    return https(server, "POST", f"/provisioning/v1/{path}", body, **kwargs)


def with_digest(server, method: str, path: str, user: str, password: str, body: object = None) -> HttpAnswer:
    """An HTTP request answering the server's RFC 7616 digest challenge once."""
    first = https(server, method, path, body)
    if first.status != 401:
        return first
    challenge = parse_challenge(first.headers["WWW-Authenticate"])
    authorization = build_authorization(challenge, method, path, user,
                                        ha1(user, challenge.realm, password, challenge.algorithm))
    return https(server, method, path, body, headers={"Authorization": authorization})


def outbox(server) -> list[dict]:
    path = server.data_dir / "sms-outbox.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def wait_for_code(server, phone: str, seen: int, timeout: float = 5.0) -> str:
    """The code of the first outbox message to ``phone`` after the first ``seen`` lines.

    The server answers 202 before the gateway has written (sending is in the
    background, so known and unknown numbers take equally long)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for message in outbox(server)[seen:]:
            if message["to"] == phone:
                return message["code"]
        time.sleep(0.02)
    raise TimeoutError(f"no SMS to {phone} in the outbox")
