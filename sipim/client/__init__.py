"""sipim's Python client: a device's SIP side (TLS, RFC 5626 outbound, pager messages
with CPIM and IMDN) and HTTPS side (provisioning, history, contacts).

    from sipim.client import ProfileStore, UserAgent

    device = ProfileStore().load("default")   # written by `sipim client setup`
    async with UserAgent(device) as agent:
        await agent.register()
        await agent.send_message("bob", "hello")
        event = await agent.next_event()

Protocol logic is sans-IO (``challenges``, ``signalling``, ``messaging``, ``profile``);
``flow``, ``agent`` and ``api`` are the thin asyncio layer; ``cli`` is ``sipim client``.
"""

from .agent import SendResult, UserAgent
from .api import ApiClient, ProvisioningClient
from .config import ClientConfig
from .errors import CertificateUntrusted, ClientError, FlowFailed, RequestFailed, RequestTimeout, ServerUnreachable
from .messaging import DispositionReport, IncomingMessage
from .profile import DeviceConfig, ProfileError, ProfileStore

__all__ = [
    "ApiClient",
    "CertificateUntrusted",
    "ClientConfig",
    "ClientError",
    "DeviceConfig",
    "DispositionReport",
    "FlowFailed",
    "IncomingMessage",
    "ProfileError",
    "ProfileStore",
    "ProvisioningClient",
    "RequestFailed",
    "RequestTimeout",
    "SendResult",
    "ServerUnreachable",
    "UserAgent",
]
