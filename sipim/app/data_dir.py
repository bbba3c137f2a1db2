"""What must exist in the data directory before serving: made once, kept across runs."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from sipim.config import Config
from sipim.transport.tls import TLSFiles, ensure_certificates


def load_secret(data_dir: Path) -> bytes:
    """The server secret (nonces, temporary GRUUs): 32 random bytes, mode 0600, made once."""
    path = data_dir / "secret.key"
    try:
        data = path.read_bytes()
        if len(data) >= 32:
            return data
    except FileNotFoundError:
        pass
    data_dir.mkdir(parents=True, exist_ok=True)
    data = secrets.token_bytes(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    return data


def prepare_data_dir(config: Config) -> TLSFiles | None:
    """What must exist before serving, made once: the data directory (and the domain the
    administration commands default to), the secret, the private CA and server
    certificate when TLS is served without --tls-cert.  Returns those TLS files (or None)."""
    config.data_dir.mkdir(parents=True, exist_ok=True)
    (config.data_dir / "domain").write_text(config.domain + "\n")
    load_secret(config.data_dir)
    if config.tls_cert is None and any(l.spec.transport in ("tls", "wss") for l in config.listeners()):
        hosts = {"localhost", "127.0.0.1", "::1"}
        hosts.update(l.spec.host for l in config.listeners())
        hosts -= {"0.0.0.0", "::"}
        return ensure_certificates(config.data_dir, config.domain, sorted(hosts))
    return None
