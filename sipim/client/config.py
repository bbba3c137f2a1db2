"""Limits and timers of the Python client (``sipim client``, ``sipim.client``).

Separate from the server's ``Config`` because a device never runs the server; the
same TOML rules apply (``sipim client --config FILE``, tables only group keys), read
by the loader both share (sipim/tomlconfig.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from sipim.tomlconfig import ConfigError, TomlSettings

__all__ = ["ClientConfig", "ConfigError"]


@dataclass
class ClientConfig(TomlSettings):
    """The client's settings; ``client_*`` keys in its TOML file."""

    SETTING_KIND: ClassVar[str] = "client setting"

    # REGISTER expiry asked for (RFC 3261 §10.2.1); the registrar may shorten it.
    client_register_expires: int = 600
    # Refresh a registration this many seconds before it runs out, but not before
    # half its lifetime (a short grant would otherwise be refreshed at once).
    client_refresh_margin: int = 60
    # RFC 5626 §4.4.1: with no Flow-Timer from the registrar, ping every 95..120 s.
    client_keepalive_interval: float = 120.0
    # RFC 5626 §4.4.1: no pong within 10 s after a ping -> the flow has failed.
    client_keepalive_timeout: float = 10.0
    # RFC 5626 §4.5: flow recovery waits base * 2^failures (capped), randomised.
    client_recovery_base_all_failed: float = 30.0
    client_recovery_base_ok: float = 90.0
    client_recovery_max: float = 1800.0
    # RFC 3261 §17 T1 (Timer F = 64*T1 ends a request nobody answers).
    client_t1: float = 0.5
    # TCP/TLS connect and HTTP request limits.
    client_connect_timeout: float = 10.0
    client_http_timeout: float = 30.0
    client_max_message_size: int = 65536
