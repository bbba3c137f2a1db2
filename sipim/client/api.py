"""The HTTPS side of a device: provisioning (first contact) and the user's API.

* ``ProvisioningClient`` -- unauthenticated calls that turn a phone number and a
  code, a trusted network, a pairing code or a password into a device
  configuration (docs/internals.md, "Provisioning").  It runs before the device
  knows the server's CA, so the caller decides how the TLS server is trusted
  (``--ca FILE``, the system store, or a pinned certificate fingerprint).
* ``ApiClient`` -- history, contacts, number look-up and pairing codes with the
  device's bearer token (RFC 6750 §2.1), or HTTP digest (RFC 7616) for a profile
  that only has the user's password.

Every failure is a ``ClientError`` with a readable message.
"""

from __future__ import annotations

import ssl
from typing import Any

import aiohttp
from yarl import URL

from sipim.client.config import ClientConfig

from .challenges import AuthenticationFailed, Credentials, answer_challenge
from .flow import describe_os_error
from .errors import CertificateUntrusted, ClientError, RequestFailed, ServerUnreachable
from .profile import DeviceConfig

SslSetting = ssl.SSLContext | aiohttp.Fingerprint


class NotProvisioned(RequestFailed):
    """The server has no such provisioning endpoint (404): an older server."""


def _error_text(data: Any, fallback: str) -> str:
    if isinstance(data, dict) and isinstance(data.get("error"), str):
        return data["error"]
    return fallback


async def _read(response: aiohttp.ClientResponse) -> Any:
    if response.content_type == "application/json":
        try:
            return await response.json()
        except (ValueError, aiohttp.ContentTypeError):
            return None
    text = await response.text(errors="replace")
    return text


class _Http:
    """One aiohttp session with the TLS trust decided by the caller, errors made readable."""

    def __init__(self, base: str, ssl_setting: SslSetting, config: ClientConfig) -> None:
        self.base = URL(base)
        self._ssl = ssl_setting
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=config.client_http_timeout))

    async def close(self) -> None:
        await self._session.close()

    async def __aenter__(self):
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def url(self, path: str, params: dict[str, str] | None = None) -> URL:
        url = self.base.with_path(self.base.path.rstrip("/") + path)
        return url.with_query(params) if params else url

    async def call(self, method: str, url: URL, *, json: Any = None,
                   headers: dict[str, str] | None = None) -> tuple[int, Any, aiohttp.ClientResponse]:
        where = f"{url.host}:{url.port}"
        try:
            async with self._session.request(method, url, json=json, headers=headers or {}, ssl=self._ssl) as response:
                return response.status, await _read(response), response
        except aiohttp.ServerFingerprintMismatch:
            raise CertificateUntrusted(
                f"the certificate of {where} does not have the fingerprint you confirmed") from None
        except aiohttp.ClientConnectorCertificateError as error:
            reason = getattr(error.certificate_error, "verify_message", None) or str(error.certificate_error)
            raise CertificateUntrusted(f"the certificate of {where} is not trusted ({reason})") from None
        except aiohttp.ClientConnectorSSLError as error:
            raise ServerUnreachable(f"TLS with {where} failed: {error}") from None
        except aiohttp.ClientConnectorError as error:
            raise ServerUnreachable(f"cannot reach {where}: {describe_os_error(error.os_error)}") from None
        except (aiohttp.ClientError, TimeoutError) as error:
            raise ServerUnreachable(f"{method} {url.path} on {where} failed: {error or type(error).__name__}") from None


# ---------------------------------------------------------------------------------------
# provisioning (first contact)


class ProvisioningClient:
    PREFIX = "/provisioning/v1"

    def __init__(self, base: str, ssl_setting: SslSetting, config: ClientConfig | None = None) -> None:
        self._http = _Http(base, ssl_setting, config or ClientConfig())

    async def close(self) -> None:
        await self._http.close()

    async def __aenter__(self) -> "ProvisioningClient":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _post(self, name: str, body: dict[str, Any], what: str, headers: dict[str, str] | None = None) -> Any:
        status, data, response = await self._http.call("POST", self._http.url(f"{self.PREFIX}/{name}"), json=body,
                                                       headers=headers)
        if 200 <= status < 300:
            return data
        text = _error_text(data, response.reason or "")
        if status == 404 and not isinstance(data, dict):
            raise NotProvisioned(404, "Not Found", f"the server does not offer {what} (no {self.PREFIX}/{name})")
        if status == 429:
            retry = response.headers.get("Retry-After")
            raise RequestFailed(429, "Too Many Requests",
                                f"too many attempts: {text}" + (f" (try again in {retry} s)" if retry else ""))
        raise RequestFailed(status, response.reason or "", f"{what} was refused ({status}): {text}")

    async def request_code(self, phone: str) -> dict[str, Any]:
        """Ask for a one-time code by SMS; the answer does not say whether the number is known."""
        return await self._post("otp", {"phone": phone}, "sending a code")

    async def config_with_code(self, phone: str, code: str, **device: str) -> dict[str, Any]:
        return await self._post("config", {"phone": phone, "code": code, **_present(device)}, "the one-time code")

    async def config_from_network(self, phone: str | None = None, **device: str) -> dict[str, Any]:
        body = _present({"phone": phone or "", **device})
        return await self._post("config", body, "zero-typing configuration from this network")

    async def signin(self, user: str, password: str, **device: str) -> dict[str, Any]:
        return await self._post("signin", {"user": user, "password": password, **_present(device)}, "sign-in")

    async def pair(self, code: str, **device: str) -> dict[str, Any]:
        return await self._post("pair", {"code": code, **_present(device)}, "the pairing code")


def _present(values: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in values.items() if value}


# ---------------------------------------------------------------------------------------
# the user's API


class ApiClient:
    def __init__(self, device: DeviceConfig, *, config: ClientConfig | None = None,
                 context: ssl.SSLContext | None = None) -> None:
        from .agent import ssl_context_for

        self.device = device
        self._http = _Http(device.api_base, context or ssl_context_for(device), config or ClientConfig())
        self._credentials = Credentials(device.auth_username, device.password, device.realm)
        self._api_path = URL(device.api).path.rstrip("/")

    async def close(self) -> None:
        await self._http.close()

    async def __aenter__(self) -> "ApiClient":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def request(self, method: str, path: str, *, params: dict[str, str] | None = None,
                      json: Any = None, base_path: str | None = None) -> tuple[int, Any]:
        """``path`` under the API (``/history``), or under ``base_path`` (``/provisioning/v1``)."""
        prefix = self._api_path if base_path is None else base_path
        url = self._http.url(prefix + path, params)
        headers: dict[str, str] = {}
        if self.device.token:
            headers["Authorization"] = f"Bearer {self.device.token}"
        status, data, response = await self._http.call(method, url, json=json, headers=headers)
        if status == 401 and not self.device.token:
            # RFC 7616 §3.4: digest over the request-target; answered once.
            try:
                name, value = answer_challenge(401, response.headers.getall("WWW-Authenticate", []), method,
                                               url.raw_path_qs, self._credentials, already_answered=False)
            except AuthenticationFailed as error:
                raise RequestFailed(401, "Unauthorized", f"the API refused this device: {error}") from None
            status, data, response = await self._http.call(method, url, json=json, headers={name: value})
        if status in (401, 403):
            raise RequestFailed(status, response.reason or "",
                                f"the API refused this device ({status}): "
                                f"{_error_text(data, 'wrong or revoked credentials')}")
        return status, data

    def _fail(self, status: int, data: Any, what: str) -> RequestFailed:
        return RequestFailed(status, "", f"{what} failed ({status}): {_error_text(data, 'unexpected answer')}")

    # -- history ---------------------------------------------------------------------------
    async def history(self, *, peer: str | None = None, limit: int = 50, before: str | None = None,
                      since: float | None = None) -> dict[str, Any]:
        params = {"limit": str(limit)}
        if peer:
            params["with"] = peer
        if before:
            params["before"] = before
        if since is not None:
            params["since"] = repr(since)
        status, data = await self.request("GET", "/history", params=params)
        if status != 200 or not isinstance(data, dict):
            raise self._fail(status, data, "reading the history")
        return data

    # -- contacts (XDM JSON API) --------------------------------------------------------------
    async def contacts(self) -> list[dict[str, Any]]:
        status, data = await self.request("GET", "/contacts")
        if status == 404 and not isinstance(data, dict):
            raise RequestFailed(404, "Not Found", "this server has no contact list API")
        if status != 200 or not isinstance(data, dict):
            raise self._fail(status, data, "reading the contacts")
        return list(data.get("contacts") or [])

    async def add_contact(self, uri: str, *, display_name: str | None = None, list_name: str | None = None) -> None:
        body: dict[str, Any] = {"uri": uri}
        if display_name:
            body["display_name"] = display_name
        if list_name:
            body["list"] = list_name
        status, data = await self.request("POST", "/contacts", json=body)
        if status == 404 and not isinstance(data, dict):
            raise RequestFailed(404, "Not Found", "this server has no contact list API")
        if status not in (200, 201, 204):
            raise self._fail(status, data, f"adding {uri}")

    async def remove_contact(self, uri: str) -> None:
        status, data = await self.request("DELETE", "/contacts", params={"uri": uri})
        if status == 404 and isinstance(data, dict):
            raise RequestFailed(404, "Not Found", f"{uri} is not in the contact list")
        if status == 404:
            raise RequestFailed(404, "Not Found", "this server has no contact list API")
        if status not in (200, 204):
            raise self._fail(status, data, f"removing {uri}")

    async def lookup(self, number: str) -> str:
        """The User ID behind a phone number (404 unknown or hidden, 409 ambiguous)."""
        status, data = await self.request("GET", "/lookup", params={"number": number})
        if status == 200 and isinstance(data, dict) and data.get("user_id"):
            return str(data["user_id"])
        if status == 404 and isinstance(data, dict):
            raise RequestFailed(404, "Not Found", f"{number}: no user with this number")
        if status == 409:
            raise RequestFailed(409, "Conflict", f"{number}: the number belongs to several users")
        if status == 404:
            raise RequestFailed(404, "Not Found", "this server has no number look-up API")
        raise self._fail(status, data, f"looking up {number}")

    # -- pairing an extra device ------------------------------------------------------------
    async def create_pairing(self) -> dict[str, Any]:
        status, data = await self.request("POST", "/pairing", base_path=ProvisioningClient.PREFIX)
        if status == 404 and not isinstance(data, dict):
            raise RequestFailed(404, "Not Found", "this server does not offer device pairing")
        if status not in (200, 201) or not isinstance(data, dict) or not data.get("code"):
            raise self._fail(status, data, "creating a pairing code")
        return data


__all__ = ["ApiClient", "NotProvisioned", "ProvisioningClient", "ClientError"]
