"""The device configuration document and where a client keeps it.

The provisioning server hands a device one JSON document (docs/internals.md,
"Device config document"): who the user is, the device's own credentials and
instance id, where to register (TLS outbound proxy), where the HTTP API is, and
the CA to trust.  ``DeviceConfig`` reads and checks it; ``ProfileStore`` keeps
one per profile name in the user's config directory, readable by the user only
(it holds the device password and bearer token).
"""

from __future__ import annotations

import json
import os
import re
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from sipim.sip.errors import SIPParseError
from sipim.sip.uri import SipURI, parse_uri

DEFAULT_PROFILE = "default"
DEFAULT_SIP_TLS_PORT = 5061  # RFC 3261 §26.2 / §19.1.2: sips default port
_PROFILE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


class ProfileError(ValueError):
    """A profile is missing, unreadable or not a usable device configuration."""


def new_instance_id() -> str:
    """RFC 5626 §4.1: a UUID URN made once per device and kept for good."""
    return f"urn:uuid:{uuid.uuid4()}"


@dataclass(frozen=True)
class DeviceConfig:
    user_id: str                 # the AOR, sip:alice@example.com
    username: str
    domain: str
    instance_id: str             # urn:uuid:...
    auth_username: str           # digest user name (the device credential, or the user's own)
    password: str
    sip_tls: str                 # sips:HOST:PORT;transport=tls
    api: str                     # https://HOST:PORT/api/v1
    realm: str
    display_name: str | None = None
    device_id: str | None = None
    device_name: str | None = None
    token: str | None = None     # bearer token for the HTTP API (None: HTTP digest)
    registrar: str | None = None
    sip_wss: str | None = None
    xcap_root: str | None = None
    ca_pem: str | None = None
    # The document as received, so fields this version does not know survive a save.
    document: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    # -- reading and writing --------------------------------------------------------
    @classmethod
    def from_document(cls, document: Any) -> "DeviceConfig":
        if not isinstance(document, dict):
            raise ProfileError("the device configuration is not a JSON object")
        device = _section(document, "device")
        sip = _section(document, "sip")
        proxy = sip.get("outbound_proxy") or {}
        if not isinstance(proxy, dict):
            raise ProfileError("sip.outbound_proxy must be an object")
        http = _section(document, "http")
        user_id = _text(document, "user_id")
        try:
            aor = parse_uri(user_id)
        except SIPParseError:
            raise ProfileError(f"user_id {user_id!r} is not a SIP URI") from None
        if not isinstance(aor, SipURI) or not aor.user:
            raise ProfileError(f"user_id {user_id!r} is not a SIP URI with a user part")
        domain = document.get("domain") or aor.host
        config = cls(
            user_id=user_id,
            username=document.get("username") or aor.user,
            domain=domain,
            instance_id=_text(device, "instance_id", "device.instance_id"),
            auth_username=device.get("auth_username") or document.get("username") or aor.user,
            password=_text(device, "password", "device.password"),
            sip_tls=_text(proxy, "tls", "sip.outbound_proxy.tls"),
            api=_text(http, "api", "http.api").rstrip("/"),
            realm=sip.get("realm") or domain,
            display_name=document.get("display_name") or None,
            device_id=device.get("id"),
            device_name=device.get("name"),
            token=device.get("token") or None,
            registrar=sip.get("registrar"),
            sip_wss=proxy.get("wss"),
            xcap_root=http.get("xcap_root"),
            ca_pem=document.get("ca_pem") or None,
            document=document,
        )
        config.sip_server()  # checks the outbound proxy URI
        if urlsplit(config.api).scheme != "https":
            raise ProfileError(f"http.api {config.api!r} is not an https URL")
        return config

    def to_document(self) -> dict[str, Any]:
        document = json.loads(json.dumps(self.document)) if self.document else {}
        document.update({"user_id": self.user_id, "username": self.username, "domain": self.domain,
                         "display_name": self.display_name})
        document.setdefault("device", {}).update({
            "id": self.device_id, "name": self.device_name, "instance_id": self.instance_id,
            "auth_username": self.auth_username, "password": self.password, "token": self.token})
        sip = document.setdefault("sip", {})
        sip.update({"realm": self.realm, "registrar": self.registrar or f"sip:{self.domain}"})
        sip.setdefault("outbound_proxy", {}).update({"tls": self.sip_tls, "wss": self.sip_wss})
        document.setdefault("http", {}).update({"api": self.api, "xcap_root": self.xcap_root})
        document["ca_pem"] = self.ca_pem
        return document

    # -- derived values ---------------------------------------------------------------
    def sip_server(self) -> tuple[str, int]:
        """Host and port of the TLS outbound proxy (RFC 5626 §4.2.1: the first hop)."""
        try:
            uri = parse_uri(self.sip_tls)
        except SIPParseError:
            raise ProfileError(f"outbound proxy {self.sip_tls!r} is not a SIP URI") from None
        if not isinstance(uri, SipURI):
            raise ProfileError(f"outbound proxy {self.sip_tls!r} is not a SIP URI")
        return uri.host.strip("[]"), uri.port or DEFAULT_SIP_TLS_PORT

    @property
    def api_base(self) -> str:
        """https://HOST:PORT (the API's origin; provisioning lives beside /api/v1)."""
        parts = urlsplit(self.api)
        return f"{parts.scheme}://{parts.netloc}"


def _section(document: dict, name: str) -> dict:
    value = document.get(name)
    if not isinstance(value, dict):
        raise ProfileError(f"the device configuration has no {name!r} section")
    return value


def _text(section: dict, key: str, label: str | None = None) -> str:
    value = section.get(key)
    if not isinstance(value, str) or not value:
        raise ProfileError(f"the device configuration has no {label or key}")
    return value


def local_password_config(*, user: str, password: str, domain: str, sip_host: str, sip_port: int,
                          https_base: str, ca_pem: str | None, instance_id: str | None = None) -> DeviceConfig:
    """A device configuration made on the device itself, for servers without
    provisioning: the user's own name and password are the digest credentials
    (the HTTP API then uses HTTP digest as well)."""
    host = f"[{sip_host}]" if ":" in sip_host else sip_host
    document = {
        "user_id": f"sip:{user}@{domain}", "username": user, "domain": domain, "display_name": None,
        "device": {"id": None, "name": None, "instance_id": instance_id or new_instance_id(),
                   "auth_username": user, "password": password, "token": None},
        "sip": {"realm": domain, "registrar": f"sip:{domain}",
                "outbound_proxy": {"tls": f"sips:{host}:{sip_port};transport=tls", "wss": None}},
        "http": {"api": f"{https_base.rstrip('/')}/api/v1", "xcap_root": f"{https_base.rstrip('/')}/xcap"},
        "ca_pem": ca_pem,
    }
    return DeviceConfig.from_document(document)


# ---------------------------------------------------------------------------------------
# storage


def client_home() -> Path:
    """``$SIPIM_CLIENT_HOME``, else ``$XDG_CONFIG_HOME/sipim``, else ``~/.config/sipim``."""
    override = os.environ.get("SIPIM_CLIENT_HOME")
    if override:
        return Path(override)
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "sipim"


class ProfileStore:
    def __init__(self, home: Path | None = None) -> None:
        self.home = home if home is not None else client_home()

    def path(self, name: str) -> Path:
        if not _PROFILE_NAME.match(name):
            raise ProfileError(f"profile name {name!r}: use letters, digits, '.', '_' and '-' (at most 64)")
        return self.home / "profiles" / f"{name}.json"

    def exists(self, name: str) -> bool:
        return self.path(name).exists()

    def load(self, name: str) -> DeviceConfig:
        path = self.path(name)
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            hint = "" if name == DEFAULT_PROFILE else f" --profile {name}"
            raise ProfileError(f"no profile {name!r} yet: run `sipim client setup{hint} ...` first") from None
        except OSError as error:
            raise ProfileError(f"cannot read {path}: {error.strerror}") from None
        try:
            document = json.loads(text)
        except json.JSONDecodeError as error:
            raise ProfileError(f"{path} is not valid JSON ({error.msg}, line {error.lineno})") from None
        return DeviceConfig.from_document(document)

    def save(self, name: str, config: DeviceConfig) -> Path:
        """Written 0600 from the start (it holds secrets) and renamed into place."""
        path = self.path(name)
        path.parent.mkdir(parents=True, exist_ok=True)
        os.chmod(path.parent, 0o700)
        temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        temporary.unlink(missing_ok=True)
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(config.to_document(), handle, indent=2)
            handle.write("\n")
        os.replace(temporary, path)
        return path

    def remove(self, name: str) -> bool:
        try:
            self.path(name).unlink()
            return True
        except FileNotFoundError:
            return False
