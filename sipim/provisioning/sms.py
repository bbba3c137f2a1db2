"""SMS gateways: how a one-time code reaches the phone.

Pluggable: anything with ``async send(message)``.  Built in:

- ``OutboxGateway`` (default, labs and tests): logs the code and appends one JSON
  line per message to ``DATA_DIR/sms-outbox.jsonl``;
- ``WebhookGateway``: POSTs ``{"to": "+E164", "text": "...", "code": "..."}`` as JSON to
  an operator's URL (an SMS provider or a small adapter in front of one); any 2xx is
  success.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import aiohttp

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class SmsMessage:
    to: str  # E.164
    text: str
    code: str


class SmsError(Exception):
    """The gateway did not take the message; the text says why (for the log and audit)."""


class SmsGateway(Protocol):
    async def send(self, message: SmsMessage) -> None: ...

    async def close(self) -> None: ...


class OutboxGateway:
    def __init__(self, path: Path) -> None:
        self.path = path

    async def send(self, message: SmsMessage) -> None:
        log.warning("SMS to %s (outbox gateway): %s", message.to, message.text)
        line = json.dumps({"ts": time.time(), "to": message.to, "text": message.text, "code": message.code}) + "\n"
        await asyncio.get_running_loop().run_in_executor(None, self._append, line)

    def _append(self, line: str) -> None:
        # The file holds live codes: only the server's user may read it.
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        with os.fdopen(fd, "a") as handle:
            handle.write(line)

    async def close(self) -> None:
        pass


class WebhookGateway:
    def __init__(self, url: str, *, timeout: float, authorization: str = "") -> None:
        self.url = url
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._headers = {"Authorization": authorization} if authorization else {}
        self._session: aiohttp.ClientSession | None = None

    async def send(self, message: SmsMessage) -> None:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self._timeout, headers=self._headers)
        try:
            async with self._session.post(self.url, json={"to": message.to, "text": message.text,
                                                          "code": message.code}) as response:
                if not 200 <= response.status < 300:
                    raise SmsError(f"SMS webhook answered {response.status} {response.reason}")
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            raise SmsError(f"SMS webhook {self.url} failed: {exc!r}") from exc

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


def make_gateway(config) -> SmsGateway:
    """The gateway the configuration names: ``outbox``, ``webhook`` or ``module:factory``
    (a callable taking the Config, for an operator's own driver)."""
    kind = config.sms_gateway
    if kind == "webhook":
        return WebhookGateway(config.sms_webhook_url, timeout=config.sms_webhook_timeout,
                              authorization=config.sms_webhook_authorization)
    if kind == "outbox":
        return OutboxGateway(config.data_dir / "sms-outbox.jsonl")
    import importlib

    from sipim.config import ConfigError

    module_name, _, factory_name = kind.partition(":")
    try:
        factory = getattr(importlib.import_module(module_name), factory_name)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"sms_gateway {kind!r}: cannot load it ({exc})") from None
    return factory(config)
