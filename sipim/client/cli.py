"""``sipim client ...`` (also ``sipim-client ...``): a device on the command line.

    sipim client setup +4915112345678 --server https://im.example.com:8443 --ca ca.pem
    sipim client send bob "hello"
    sipim client listen
    sipim client history --with bob
    sipim client contacts [add URI | remove URI]
    sipim client pair

The device configuration lives per profile (``--profile NAME``) in
``$XDG_CONFIG_HOME/sipim/profiles/NAME.json`` (``SIPIM_CLIENT_HOME`` overrides the
directory).  Every failure ends in one readable line on stderr and a non-zero
exit status, never a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import signal
import socket
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

from yarl import URL

from sipim.client.config import ClientConfig, ConfigError
from sipim.cpim import CPIMError, parse_cpim

from .agent import UserAgent
from .api import ApiClient, NotProvisioned, ProvisioningClient
from .errors import CertificateUntrusted, ClientError, RequestFailed
from .messaging import BadTarget, DispositionReport, IncomingMessage, message_target
from .profile import DEFAULT_PROFILE, DeviceConfig, ProfileError, ProfileStore, local_password_config, new_instance_id
from .trust import (
    check_issued_by,
    context_from_ca,
    fingerprint_of,
    format_fingerprint,
    parse_fingerprint,
    pinned,
    read_ca_file,
    server_certificate,
    verified_by,
)

EXIT_FAILURE = 1
EXIT_USAGE = 2
DEFAULT_SIP_TLS_PORT = 5061


# -- arguments ------------------------------------------------------------------------------
def add_client_arguments(client: argparse.ArgumentParser) -> None:
    """The ``client`` sub-commands, on ``client`` (``sipim client`` or ``sipim-client``)."""
    # Accepted before the action (`sipim client --profile work send ...`) and after it;
    # after the action they only count when given (SUPPRESS), so neither place wins by default.
    client.add_argument("--profile", default=DEFAULT_PROFILE, help="profile name (default: default)")
    client.add_argument("--config", type=Path, default=None, help="TOML file with client_* settings")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--profile", default=argparse.SUPPRESS, help="profile name (default: default)")
    common.add_argument("--config", type=Path, default=argparse.SUPPRESS, help="TOML file with client_* settings")

    actions = client.add_subparsers(dest="client_action", metavar="ACTION")
    actions.required = True

    setup = actions.add_parser("setup", parents=[common], help="configure this device (phone number and code, "
                                                                "trusted network, pairing or password)")
    setup.add_argument("number", nargs="?", metavar="+NUMBER", help="your phone number in international form")
    setup.add_argument("--code", help="the one-time code, if you already have it (else it is asked for)")
    setup.add_argument("--network", action="store_true",
                       help="zero-typing set-up from the operator's mobile network (no code)")
    setup.add_argument("--pair", metavar="CODE_OR_URL", help="pairing code or link shown by a signed-in device")
    setup.add_argument("--user", help="User ID or user name, for password sign-in")
    setup.add_argument("--password", help="password for --user (asked for when omitted)")
    setup.add_argument("--server", metavar="https://HOST:PORT", help="the server's HTTPS address")
    setup.add_argument("--ca", metavar="FILE", help="the server's CA certificate (PEM) to trust at first contact")
    setup.add_argument("--trust-fingerprint", metavar="SHA256",
                       help="trust the server certificate with this SHA-256 fingerprint (confirmed with the operator)")
    setup.add_argument("--sip", metavar="HOST:PORT",
                       help="SIP TLS address for servers without provisioning (default HOST:5061)")
    setup.add_argument("--domain", help="SIP domain for servers without provisioning (default: from --user or HOST)")
    setup.add_argument("--device-name", help="a name for this device (default: the host name)")
    setup.add_argument("--no-check", action="store_true", help="do not test-register after set-up")

    send = actions.add_parser("send", parents=[common], help="send a message to a user or phone number")
    send.add_argument("target", metavar="USER|+NUMBER|URI")
    send.add_argument("text", nargs="+")
    send.add_argument("--plain", action="store_true", help="send text/plain (no CPIM, no delivery reports)")
    send.add_argument("--no-reports", action="store_true", help="do not ask for delivery and display reports")
    send.add_argument("--json", action="store_true")

    listen = actions.add_parser("listen", parents=[common],
                                help="print incoming messages and reports until Ctrl-C")
    listen.add_argument("--no-display-reports", action="store_true",
                        help="do not tell senders their messages were displayed")
    listen.add_argument("--json", action="store_true", help="one JSON object per line")

    history = actions.add_parser("history", parents=[common], help="your messages, newest first")
    history.add_argument("--with", dest="peer", metavar="PEER")
    history.add_argument("--limit", type=int, default=50)
    history.add_argument("--before", metavar="CURSOR", help="the cursor printed at the end of the previous page")
    history.add_argument("--json", action="store_true")

    contacts = actions.add_parser("contacts", parents=[common], help="your contact list")
    contacts.add_argument("change", nargs="*", metavar="add URI | remove URI")
    contacts.add_argument("--name", help="display name for `contacts add`")
    contacts.add_argument("--json", action="store_true")

    pair = actions.add_parser("pair", parents=[common], help="show a pairing code, link and QR for another device")
    pair.add_argument("--json", action="store_true")

    actions.add_parser("show", parents=[common], help="the profile's identity, device and servers")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sipim-client", description="A sipim device on the command line.")
    add_client_arguments(parser)
    return parser


# -- running -----------------------------------------------------------------------------
def run(args: argparse.Namespace) -> int:
    """Run one ``client`` action; one readable line and status 1 on failure."""
    try:
        config = ClientConfig()
        if args.config is not None:
            config.load_toml(args.config)
        store = ProfileStore()
        action = ACTIONS[args.client_action]
        return asyncio.run(action(args, store, config))
    except (ClientError, ProfileError, BadTarget, ConfigError) as error:
        print(f"sipim client: {error}", file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        return 130
    except OSError as error:
        print(f"sipim client: {error.strerror or error}{f': {error.filename}' if error.filename else ''}",
              file=sys.stderr)
        return EXIT_FAILURE


def main(argv: list[str] | None = None) -> int:
    return run(build_parser().parse_args(argv))


def say(text: str = "") -> None:
    print(text, flush=True)


def note(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


# -- setup --------------------------------------------------------------------------------
def _server_url(text: str) -> URL:
    url = URL(text if "://" in text else f"https://{text}")
    if url.scheme != "https" or not url.host:
        raise ClientError(f"--server {text!r}: give the server's address as https://HOST:PORT")
    return url.with_path("/").with_query(None).with_fragment(None)


def _pair_code(text: str) -> tuple[str, URL | None]:
    """A pairing code, or the link ``https://HOST:PORT/#pair=CODE`` (code and server)."""
    if "://" not in text:
        return text.strip(), None
    url = URL(text)
    fragment = url.fragment or ""
    for part in fragment.split("&"):
        name, _, value = part.partition("=")
        if name == "pair" and value:
            return value, _server_url(str(url))
    code = url.query.get("pair") or url.query.get("code")
    if code:
        return code, _server_url(str(url))
    raise ClientError(f"{text!r} is not a pairing link (expected https://HOST:PORT/#pair=CODE)")


async def _first_contact(server: URL, args: argparse.Namespace, config: ClientConfig):
    """How the server is trusted before the device has its CA (see sipim/client/trust.py).

    Returns (ssl setting for aiohttp, the pinned certificate or None, the CA PEM from --ca or None)."""
    host, port = server.host, server.port or 443
    timeout = config.client_connect_timeout
    if args.ca:
        ca_pem = read_ca_file(args.ca)
        return context_from_ca(ca_pem), None, ca_pem
    if args.trust_fingerprint:
        digest = parse_fingerprint(args.trust_fingerprint)
        der = await server_certificate(host, port, timeout)
        if fingerprint_of(der) != digest:
            raise CertificateUntrusted(
                f"the certificate of {host}:{port} has fingerprint {format_fingerprint(fingerprint_of(der))}, "
                "not the one given: do not continue, ask the operator")
        return pinned(digest), der, None
    system = context_from_ca(None)
    if await verified_by(host, port, system, timeout):
        return system, None, None
    der = await server_certificate(host, port, timeout)
    fingerprint = format_fingerprint(fingerprint_of(der))
    if sys.stdin.isatty():
        note(f"The certificate of {host}:{port} is not signed by a CA this computer trusts.\n"
             f"Its SHA-256 fingerprint is\n  {fingerprint}\n"
             "Compare it with the one the operator gives you "
             "(openssl x509 -in DATA_DIR/tls/server.pem -noout -fingerprint -sha256).")
        answer = input("Trust this server? [y/N] ").strip().lower()
        if answer in ("y", "yes"):
            return pinned(fingerprint_of(der)), der, None
    raise CertificateUntrusted(
        f"the certificate of {host}:{port} is not signed by a CA this computer trusts "
        f"(SHA-256 fingerprint {fingerprint}); pass --ca FILE (the server's tls/ca.pem) or, once the operator "
        f"has confirmed the fingerprint, --trust-fingerprint {fingerprint.replace(':', '')}")


def _setup_mode(args: argparse.Namespace) -> str:
    modes = [name for name, given in (("pair", args.pair), ("password", args.user), ("network", args.network))
             if given]
    if len(modes) > 1:
        raise ClientError("choose one of +NUMBER, --network, --pair and --user")
    if modes:
        if modes[0] != "network" and args.number:
            raise ClientError(f"a phone number does not go with --{modes[0] if modes[0] != 'password' else 'user'}")
        return modes[0]
    if not args.number:
        raise ClientError("give your phone number (+NUMBER), or --network, --pair CODE_OR_URL or --user NAME")
    if args.code and not args.code.strip():
        raise ClientError("--code is empty")
    return "code"


def _read_line(prompt: str) -> str:
    if sys.stdin.isatty():
        return input(prompt)
    note(prompt.rstrip())
    line = sys.stdin.readline()
    if not line:
        raise ClientError("no code given (standard input ended)")
    return line


async def cmd_setup(args: argparse.Namespace, store: ProfileStore, config: ClientConfig) -> int:
    mode = _setup_mode(args)
    store.path(args.profile)  # a bad profile name fails before any network traffic
    try:
        instance_id = store.load(args.profile).instance_id  # the same device again: keep its identity
    except ProfileError:
        instance_id = new_instance_id()
    device = {"device_name": args.device_name or socket.gethostname(), "instance_id": instance_id}
    code = None
    server = _server_url(args.server) if args.server else None
    if mode == "pair":
        code, from_link = _pair_code(args.pair)
        server = server or from_link
    if server is None:
        raise ClientError("give the server's address with --server https://HOST:PORT")
    ssl_setting, pinned_certificate, ca_pem = await _first_contact(server, args, config)

    document: dict[str, Any] | None = None
    async with ProvisioningClient(str(server), ssl_setting, config) as provisioning:
        if mode == "code":
            phone = _phone(args.number)
            code = args.code
            if not code:
                answer = await provisioning.request_code(phone)
                minutes = int(answer.get("expires_in", 300)) // 60 if isinstance(answer, dict) else 5
                code = _read_line(f"A code was sent to {phone} (valid {minutes} min). Code: ").strip()
                if not code:
                    raise ClientError("no code given")
            document = await provisioning.config_with_code(phone, code.strip(), **device)
        elif mode == "network":
            document = await provisioning.config_from_network(_phone(args.number) if args.number else None, **device)
        elif mode == "pair":
            document = await provisioning.pair(code, **device)
        else:
            password = args.password if args.password is not None else _ask_password(args.user)
            try:
                document = await provisioning.signin(args.user, password, **device)
            except NotProvisioned:
                profile = _local_profile(args, server, password, ca_pem, instance_id)
                note("this server has no provisioning: the profile uses your user name and password")
    if document is not None:
        profile = DeviceConfig.from_document(document)
    if profile.ca_pem is None and ca_pem is not None:
        profile = DeviceConfig.from_document({**profile.to_document(), "ca_pem": ca_pem})
    if pinned_certificate is not None:
        if profile.ca_pem is None:
            raise CertificateUntrusted("the configuration brought no CA certificate: run setup again with --ca FILE")
        check_issued_by(pinned_certificate, profile.ca_pem)
    if not args.no_check:
        async with UserAgent(profile, config=config) as agent:
            await agent.register(keep=False)
            await agent.unregister()
    path = store.save(args.profile, profile)
    say(f"set up {profile.user_id} on this device"
        + (f" ({profile.device_name})" if profile.device_name else "")
        + f"; profile {args.profile!r} saved in {path}")
    return 0


def _phone(number: str) -> str:
    from sipim.phone import InvalidNumber, normalise_e164

    try:
        return normalise_e164(number)
    except InvalidNumber as error:
        raise ClientError(str(error)) from None


def _ask_password(user: str) -> str:
    if not sys.stdin.isatty():
        line = sys.stdin.readline()
        if not line.strip():
            raise ClientError("give --password (standard input has none)")
        return line.rstrip("\r\n")
    return getpass.getpass(f"Password for {user}: ")


def _local_profile(args: argparse.Namespace, server: URL, password: str, ca_pem: str | None,
                   instance_id: str) -> DeviceConfig:
    user = args.user
    if user.startswith(("sip:", "sips:")):
        user = user.split(":", 1)[1]
    name, _, domain = user.partition("@")
    domain = domain or args.domain or server.host
    if args.sip:
        host, _, port_text = args.sip.rpartition(":")
        if not host or not port_text.isdigit():
            raise ClientError(f"--sip {args.sip!r}: give HOST:PORT")
        sip_host, sip_port = host.strip("[]"), int(port_text)
    else:
        sip_host, sip_port = server.host, DEFAULT_SIP_TLS_PORT
    return local_password_config(user=name, password=password, domain=domain, sip_host=sip_host, sip_port=sip_port,
                                 https_base=str(server).rstrip("/"), ca_pem=ca_pem, instance_id=instance_id)


# -- send / listen ----------------------------------------------------------------------------
async def cmd_send(args: argparse.Namespace, store: ProfileStore, config: ClientConfig) -> int:
    profile = store.load(args.profile)
    text = " ".join(args.text)
    message_target(args.target, profile.domain)  # a bad target fails before connecting
    async with UserAgent(profile, config=config) as agent:
        result = await agent.send_message(args.target, text, cpim=not args.plain,
                                          notifications=() if args.no_reports else None)
    if args.json:
        say(json.dumps({"status": result.status, "reason": result.reason, "to": result.uri,
                        "message_id": result.message_id}))
    elif result.stored:
        say(f"stored for {result.uri} ({result.status} {result.reason}): delivered when a device of theirs "
            "comes online" + (f"; message id {result.message_id}" if result.message_id else ""))
    else:
        say(f"delivered to {result.uri} ({result.status} {result.reason})"
            + (f"; message id {result.message_id}" if result.message_id else ""))
    return 0


def _time(value: datetime | None = None) -> str:
    return (value.astimezone() if value else datetime.now().astimezone()).strftime("%Y-%m-%d %H:%M:%S")


def _event_json(event: IncomingMessage | DispositionReport) -> dict[str, Any]:
    if isinstance(event, IncomingMessage):
        return {"type": "message", "from": event.sender, "from_name": event.sender_name, "to": event.recipient,
                "text": event.text, "message_id": event.message_id,
                "sent_at": event.sent_at.isoformat() if event.sent_at else None,
                "copy_of_sent": event.outgoing_copy}
    return {"type": "report", "kind": event.kind, "status": event.status, "message_id": event.message_id,
            "by": event.reporter, "recipient": event.recipient}


def _event_line(event: IncomingMessage | DispositionReport) -> str:
    if isinstance(event, IncomingMessage):
        if event.outgoing_copy:
            return f"{_time(event.sent_at)}  you -> {event.recipient}: {event.text}"
        who = f"{event.sender_name} <{event.sender}>" if event.sender_name else event.sender
        return f"{_time(event.sent_at)}  {who}: {event.text}"
    who = event.recipient or event.reporter
    return f"{_time()}  {event.status}: your message {event.message_id} to {who}"


async def cmd_listen(args: argparse.Namespace, store: ProfileStore, config: ClientConfig) -> int:
    profile = store.load(args.profile)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    agent = UserAgent(profile, config=config)
    agent.on_flow_lost = lambda reason, delay: note(f"connection lost ({reason}); reconnecting in {delay:.0f} s")
    agent.on_flow_recovered = lambda: note("connected and registered again")
    try:
        await agent.connect()
        await agent.register()
        say(f"listening as {profile.user_id} (Ctrl-C to stop)")
        stopping = asyncio.ensure_future(stop.wait())
        while True:
            next_event = asyncio.ensure_future(agent.next_event())
            done, _ = await asyncio.wait({next_event, stopping}, return_when=asyncio.FIRST_COMPLETED)
            if stopping in done:
                next_event.cancel()
                break
            event = next_event.result()
            say(json.dumps(_event_json(event)) if args.json else _event_line(event))
            if isinstance(event, IncomingMessage) and not args.no_display_reports:
                # Printed on the terminal: displayed (RFC 5438 §7.2.1.2), if the sender asked.
                await agent.send_displayed(event)
    finally:
        await agent.close()
    return 0


# -- history, contacts, pairing ------------------------------------------------------------------
def _history_text(entry: dict[str, Any]) -> str:
    body = entry.get("body") or ""
    if (entry.get("content_type") or "").split(";")[0].strip().lower() == "message/cpim":
        try:
            cpim = parse_cpim(body.encode("utf-8"))
            return cpim.body.decode("utf-8", "replace")
        except CPIMError:
            return body
    return body


async def cmd_history(args: argparse.Namespace, store: ProfileStore, config: ClientConfig) -> int:
    profile = store.load(args.profile)
    async with ApiClient(profile, config=config) as api:
        peer = await _contact_uri(api, args.peer, profile) if args.peer else None
        page = await api.history(peer=peer, limit=args.limit, before=args.before)
    entries = page.get("entries") or []
    if args.json:
        say(json.dumps({"entries": [{**e, "text": _history_text(e)} for e in entries],
                        "next_cursor": page.get("next_cursor")}))
        return 0
    if not entries:
        say("no messages")
    for entry in entries:
        arrow = "->" if entry.get("direction") == "out" else "<-"
        stamp = datetime.fromtimestamp(float(entry.get("time", 0))).strftime("%Y-%m-%d %H:%M:%S")
        status = f"  [{entry['status']}]" if entry.get("status") else ""
        say(f"{stamp}  {arrow} {entry.get('peer')}: {_history_text(entry)}{status}")
    if page.get("next_cursor"):
        say(f"more: --before {page['next_cursor']}")
    return 0


async def cmd_contacts(args: argparse.Namespace, store: ProfileStore, config: ClientConfig) -> int:
    profile = store.load(args.profile)
    change = args.change
    async with ApiClient(profile, config=config) as api:
        if not change:
            contacts = await api.contacts()
            if args.json:
                say(json.dumps(contacts))
            elif not contacts:
                say("no contacts")
            for contact in contacts if not args.json else []:
                name = f"  {contact['display_name']}" if contact.get("display_name") else ""
                listed = f"  ({contact['list']})" if contact.get("list") not in (None, "default") else ""
                say(f"{contact.get('uri')}{name}{listed}")
            return 0
        if len(change) != 2 or change[0] not in ("add", "remove"):
            raise ClientError("use `contacts`, `contacts add URI` or `contacts remove URI`")
        verb, target = change
        uri = await _contact_uri(api, target, profile)
        if verb == "add":
            await api.add_contact(uri, display_name=args.name)
            say(f"added {uri}")
        else:
            await api.remove_contact(uri)
            say(f"removed {uri}")
    return 0


async def _contact_uri(api: ApiClient, target: str, profile: DeviceConfig) -> str:
    """A user name or URI as a User ID; a phone number is looked up first (the
    contact list holds User IDs, never bare numbers)."""
    text = target.strip()
    number = None
    if text.startswith("+"):
        number = _phone(text)
    elif text.lower().startswith("tel:"):
        number = _phone(text[4:].split(";", 1)[0])
    if number is not None:
        return await api.lookup(number)
    uri = message_target(text, profile.domain)
    if ";user=phone" in uri:
        return await api.lookup(_phone(uri.split(":", 1)[1].split("@", 1)[0]))
    return uri


async def cmd_pair(args: argparse.Namespace, store: ProfileStore, config: ClientConfig) -> int:
    profile = store.load(args.profile)
    async with ApiClient(profile, config=config) as api:
        pairing = await api.create_pairing()
    if args.json:
        say(json.dumps({key: pairing.get(key) for key in ("code", "url", "expires_in")}))
        return 0
    code, url = pairing.get("code"), pairing.get("url")
    minutes = max(1, int(pairing.get("expires_in", 120)) // 60)
    say(f"Pairing code: {code}   (single use, valid {minutes} min)")
    if url:
        say(f"Link: {url}")
        say("Scan with the new device, or there: sipim client setup --pair CODE_OR_LINK")
        try:
            import segno

            segno.make(url, error="m").terminal(out=sys.stdout, compact=True)
        except ImportError:  # pragma: no cover - segno is a dependency
            pass
    return 0


async def cmd_show(args: argparse.Namespace, store: ProfileStore, config: ClientConfig) -> int:
    profile = store.load(args.profile)
    host, port = profile.sip_server()
    say(f"profile {args.profile}: {profile.user_id}" + (f" ({profile.display_name})" if profile.display_name else ""))
    say(f"  device {profile.device_id or '-'} {profile.device_name or ''} instance {profile.instance_id}")
    say(f"  SIP over TLS {host}:{port}; API {profile.api}; "
        + ("bearer token" if profile.token else "password digest"))
    return 0


ACTIONS = {"setup": cmd_setup, "send": cmd_send, "listen": cmd_listen, "history": cmd_history,
           "contacts": cmd_contacts, "pair": cmd_pair, "show": cmd_show}

__all__ = ["add_client_arguments", "build_parser", "main", "run", "RequestFailed"]

if __name__ == "__main__":
    sys.exit(main())
