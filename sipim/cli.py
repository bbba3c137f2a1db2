"""The ``sipim`` command: run the service and administer users, devices and the audit trail.

Bad arguments and operational errors end in one readable line on stderr and a
non-zero exit code, never a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import logging
import re
import secrets
import signal
import sys
import time
from pathlib import Path

from sipim import __version__
from sipim.config import Config, ConfigError
from sipim.net import format_host_port
from sipim.tomlconfig import read_toml

EXIT_USAGE = 2
EXIT_FAILURE = 1


class CommandError(Exception):
    """An error for the operator: printed as one line, exit status 1."""


# -- argument parsing -----------------------------------------------------------------
class _VersionAction(argparse.Action):
    """``--version``: imports the SIP layer only when asked (it says whether
    the mypyc build is in use, see sipim/sip/_accel.py)."""

    def __call__(self, parser, namespace, values, option_string=None):
        from sipim.sip import accel_summary

        print(f"sipim {__version__}\n{accel_summary()}")
        parser.exit()


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--data-dir", type=Path, default=None,
                        help="state directory (default ./sipim-data, env SIPIM_DATA_DIR)")
    common.add_argument("--database", default=None,
                        help="store URL: postgresql://user@host/db, or a SQLite file (default DATA_DIR/sipim.db)")
    common.add_argument("--config", type=Path, default=None, help="TOML config file with the same keys")
    common.add_argument("--domain", default=None, help="the SIP domain (also the digest realm)")

    parser = argparse.ArgumentParser(prog="sipim", description="Instant messaging over SIP: SIP/IP core and IM server.")
    parser.add_argument("--version", action=_VersionAction, nargs=0,
                        help="show the version and whether the compiled SIP layer is in use, then exit")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True

    serve = commands.add_parser("serve", parents=[common], help="run the service")
    serve.add_argument("--listen", action="append", metavar="PROTO:HOST:PORT",
                       help="listen address; PROTO is udp, tcp, tls, ws or wss; repeatable "
                            "(default tls:0.0.0.0:5061 and wss:0.0.0.0:8443)")
    serve.add_argument("--allow-insecure", action="store_true", default=None,
                       help="accept REGISTER over plain UDP/TCP/WS (labs and load tests only)")
    serve.add_argument("--tls-cert", type=Path, help="server certificate chain (PEM); default: a private CA in DATA_DIR/tls")
    serve.add_argument("--tls-key", type=Path, help="private key of --tls-cert (PEM)")
    serve.add_argument("--external-core", action="store_true", default=None,
                       help="run behind an external SIP/IP core (Kamailio): no digest here, identity from "
                            "P-Asserted-Identity, only --trusted-core peers accepted")
    serve.add_argument("--trusted-core", action="append", metavar="ADDRESS[/PREFIX]",
                       help="address or CIDR range of the core (repeat); config key trusted_cores")
    serve.add_argument("--core-uri", metavar="URI",
                       help="where deliveries go, e.g. sip:10.0.0.5:5070;transport=tcp; config key core_uri")
    serve.add_argument("--node-id", help="this node's name in the shared database (default HOST-PID)")
    serve.add_argument("--workers", metavar="N|auto",
                       help="worker processes sharing the listening ports and the data directory "
                            "(default 1; auto: one per CPU); config key workers")
    serve.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])

    user = commands.add_parser("user", help="manage users").add_subparsers(dest="action", metavar="ACTION")
    user.required = True
    add = user.add_parser("add", parents=[common], help="add a user (prints a generated password if none is given)")
    add.add_argument("name")
    add.add_argument("--password")
    add.add_argument("--phone", action="append", default=[], metavar="+E164")
    add.add_argument("--display-name")
    add.add_argument("--admin", action="store_true",
                     help="operator scope: manage every user's XDM documents and the directory over HTTPS")
    admin = user.add_parser("admin", parents=[common], help="give a user the admin scope (or take it with --revoke)")
    admin.add_argument("name")
    admin.add_argument("--revoke", action="store_true")
    phone = user.add_parser("phone", help="a user's phone numbers (the directory)").add_subparsers(
        dest="phone_action", metavar="ACTION")
    phone.required = True
    for action, text in (("add", "add a number (E.164, e.g. +4915112345678)"), ("remove", "remove a number")):
        parser_ = phone.add_parser(action, parents=[common], help=text)
        parser_.add_argument("name")
        parser_.add_argument("number")
    phone_list = phone.add_parser("list", parents=[common], help="a user's numbers")
    phone_list.add_argument("name")
    listing = user.add_parser("list", parents=[common], help="list users")
    listing.add_argument("--json", action="store_true")
    remove = user.add_parser("remove", parents=[common], help="remove a user and unregister its devices")
    remove.add_argument("name")
    passwd = user.add_parser("passwd", parents=[common], help="set a user's password")
    passwd.add_argument("name")
    passwd.add_argument("--password")

    device = commands.add_parser("device", help="registered devices").add_subparsers(dest="action", metavar="ACTION")
    device.required = True
    dlist = device.add_parser("list", parents=[common], help="list a user's device credentials and registrations")
    dlist.add_argument("name")
    dlist.add_argument("--json", action="store_true", help="the registrations as JSON (with --credentials: "
                                                           "the device credentials)")
    dlist.add_argument("--credentials", action="store_true", help="with --json: list the device credentials")
    revoke = device.add_parser("revoke", parents=[common],
                               help="revoke a device's credentials and end its registration at once")
    revoke.add_argument("name")
    revoke.add_argument("instance", metavar="DEVICE|INSTANCE",
                        help="the device id (d-...), its auth username, its instance id (+sip.instance) "
                             "or a binding key, as `device list` shows")

    history = commands.add_parser("history", parents=[common], help="a user's message history, newest first")
    history.add_argument("name")
    history.add_argument("--with", dest="peer", metavar="PEER", help="only the conversation with PEER")
    history.add_argument("--since", help="ISO time (2026-11-25T10:00) or an age: 30m, 12h, 7d")
    history.add_argument("--limit", type=int, default=50, help="entries per page (default 50)")
    history.add_argument("--before", metavar="CURSOR", help="the next_cursor a previous page printed")
    history.add_argument("--json", action="store_true")

    audit = commands.add_parser("audit", parents=[common], help="registration attempts")
    audit.add_argument("--user")
    audit.add_argument("--since", help="ISO time (2026-11-25T10:00) or an age: 30m, 12h, 7d")
    audit.add_argument("--result", help="e.g. registered, refreshed, removed, challenged, 'auth failed', locked, "
                                        "refused; provisioning: otp-sent, otp-not-sent, otp-failed, otp-expired, "
                                        "rate-limited, config-issued, config-refused, signin-failed, "
                                        "pairing-created, pairing-failed, user-signed-up, device-revoked; xdm: 'profile read', "
                                        "'rules changed', 'xdm refused', 'admin access', 'directory changed'")
    audit.add_argument("--limit", type=int, default=100)
    audit.add_argument("--json", action="store_true")
    client = commands.add_parser("client", help="a device: set up, send, listen, history, contacts, pair")
    from sipim.client.cli import add_client_arguments

    add_client_arguments(client)
    return parser


def load_config(args: argparse.Namespace) -> Config:
    config = Config()
    if getattr(args, "config", None):
        config.load_toml(args.config)
    if args.data_dir is not None:
        config.data_dir = args.data_dir
    if args.database:
        config.database = args.database
    origin = domain_origin(args, config.data_dir)
    if origin == DOMAIN_GIVEN:
        config.domain = args.domain
    elif origin == DOMAIN_REMEMBERED:
        config.domain = remembered_domain(config.data_dir) or config.domain
    if getattr(args, "listen", None):
        config.listen = tuple(args.listen)
    if getattr(args, "allow_insecure", None):
        config.allow_insecure = True
    if getattr(args, "tls_cert", None):
        config.tls_cert = args.tls_cert
    if getattr(args, "tls_key", None):
        config.tls_key = args.tls_key
    if getattr(args, "external_core", None):
        config.external_core = True
    if getattr(args, "trusted_core", None):
        config.trusted_cores = tuple(args.trusted_core)
    if getattr(args, "core_uri", None):
        config.core_uri = args.core_uri
    if getattr(args, "node_id", None):
        config.node_id = args.node_id
    if getattr(args, "workers", None):
        config.apply({"workers": args.workers if args.workers == "auto" else _count(args.workers)}, "--workers")
    config.validate()
    return config


# Where the SIP domain of a command comes from (domain_origin).
DOMAIN_GIVEN = "--domain"
DOMAIN_CONFIG_FILE = "config file"
DOMAIN_REMEMBERED = "data directory"
DOMAIN_DEFAULT = "default"


def remembered_domain(data_dir: Path) -> str | None:
    """The domain `sipim serve` last ran with in this data directory (app.prepare_data_dir writes it)."""
    try:
        return (data_dir / "domain").read_text().strip() or None
    except FileNotFoundError:
        return None


def domain_origin(args: argparse.Namespace, data_dir: Path) -> str:
    """Which source the command's domain comes from, first found: --domain, the --config
    file, the data directory (administration commands use the domain the server last
    ran with), else the default (this machine's name, or localhost)."""
    if args.domain:
        return DOMAIN_GIVEN
    if getattr(args, "config", None) and "domain" in read_toml(args.config):
        return DOMAIN_CONFIG_FILE
    if remembered_domain(data_dir) is not None:
        return DOMAIN_REMEMBERED
    return DOMAIN_DEFAULT


def explain_domain(args: argparse.Namespace, config: Config) -> str:
    """Why the command works in ``config.domain``, for the operator who gave no --domain."""
    origin = domain_origin(args, config.data_dir)
    if origin == DOMAIN_GIVEN:
        return f"domain {config.domain} (--domain)"
    if origin == DOMAIN_CONFIG_FILE:
        return f"domain {config.domain} (from the config file {args.config})"
    if origin == DOMAIN_REMEMBERED:
        return f"domain {config.domain} (from the data directory, where `sipim serve` last ran)"
    machine = "" if config.domain == "localhost" else "this machine's name; "
    return (f"domain {config.domain} ({machine}no --domain given and no server has run in this data "
            f"directory; use --domain D to add users of domain D)")


def _count(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise ConfigError(f'--workers {text!r}: give a number of processes or "auto"') from None


# -- helpers ---------------------------------------------------------------------------------
def split_user(name: str, domain: str) -> str:
    """``alice``, ``alice@example.com`` or ``sip:alice@example.com`` -> ``alice`` (in our domain)."""
    name = name.strip()
    if name.lower().startswith(("sip:", "sips:")):
        name = name.split(":", 1)[1]
    user, at, host = name.partition("@")
    if at and host.lower() != domain.lower():
        raise CommandError(f"{name!r} is not in this server's domain {domain!r}")
    if not user or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._~+-]{0,63}", user):
        raise CommandError(f"invalid user name {user!r}: use letters, digits and . _ ~ + - (at most 64)")
    return user


def normalise_phone(number: str) -> str:
    from sipim.phone import InvalidNumber, normalise_e164

    try:
        return normalise_e164(number)
    except InvalidNumber as exc:
        raise CommandError(str(exc)) from None


def parse_since(text: str) -> float:
    match = re.fullmatch(r"(\d+)\s*([smhdw])", text.strip())
    if match:
        seconds = int(match.group(1)) * {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}[match.group(2)]
        return time.time() - seconds
    try:
        moment = datetime.datetime.fromisoformat(text.strip())
    except ValueError:
        raise CommandError(f"--since {text!r}: give an ISO time (2026-11-25T10:00) or an age (30m, 12h, 7d)") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.timezone.utc)
    return moment.timestamp()


def format_time(ts: float) -> str:
    return datetime.datetime.fromtimestamp(ts, datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


def make_user(username: str, domain: str, password: str, **fields):
    from sipim.sip.digest import ha1
    from sipim.store.models import User

    return User(username=username, domain=domain,
                ha1_md5=ha1(username, domain, password, "MD5"),
                ha1_sha256=ha1(username, domain, password, "SHA-256"), **fields)


# -- commands ----------------------------------------------------------------------------
async def with_store(config: Config, job):
    from sipim.store import open_store

    store = await open_store(config.database_url)
    try:
        return await job(store)
    finally:
        await store.close()


def cmd_user(args: argparse.Namespace, config: Config) -> int:
    from sipim.store import UserExists

    domain = config.domain
    if args.action == "list":
        users = asyncio.run(with_store(config, lambda s: s.list_users(domain)))
        if args.json:
            print(json.dumps([{"user": u.username, "domain": u.domain, "display_name": u.display_name,
                               "phones": list(u.phones), "disabled": u.disabled, "admin": u.admin}
                              for u in users], indent=2))
        else:
            for u in users:
                extra = " ".join(filter(None, [u.display_name and f'"{u.display_name}"', " ".join(u.phones),
                                               u.admin and "(admin)"]))
                print(f"sip:{u.username}@{u.domain}  {extra}".rstrip())
        return 0

    username = split_user(args.name, domain)
    if args.action == "add":
        password = args.password or secrets.token_urlsafe(12)
        phones = tuple(normalise_phone(p) for p in args.phone)
        user = make_user(username, domain, password, display_name=args.display_name,
                         phones=tuple(dict.fromkeys(phones)), created_at=time.time(), admin=args.admin)

        async def add(store):
            await store.add_user(user)

        try:
            asyncio.run(with_store(config, add))
        except UserExists:
            raise CommandError(f"user sip:{username}@{domain} already exists") from None
        print(f"added sip:{username}@{domain}")
        if not args.domain:
            print(explain_domain(args, config))
        if not args.password:
            print(f"password: {password}")
        return 0
    if args.action == "remove":
        # The store publishes the change; a running server then unregisters the devices.
        if not asyncio.run(with_store(config, lambda store: store.remove_user(username, domain))):
            raise CommandError(f"no user sip:{username}@{domain}")
        print(f"removed sip:{username}@{domain}")
        return 0
    if args.action == "passwd":
        password = args.password or secrets.token_urlsafe(12)

        async def passwd(store):
            old = await store.get_user(username, domain)
            if old is None:
                return False
            new = make_user(username, domain, password, display_name=old.display_name, phones=old.phones,
                            created_at=old.created_at, disabled=old.disabled, admin=old.admin)
            await store.update_user(new)
            return True

        if not asyncio.run(with_store(config, passwd)):
            raise CommandError(f"no user sip:{username}@{domain}")
        print(f"password changed for sip:{username}@{domain}")
        if not args.password:
            print(f"password: {password}")
        return 0
    if args.action in ("admin", "phone"):
        return _edit_user(args, config, username)
    raise CommandError(f"unknown action {args.action}")


def _edit_user(args: argparse.Namespace, config: Config, username: str) -> int:
    """user admin / user phone: read, change one field, write (the store publishes the change)."""
    from dataclasses import replace

    domain = config.domain
    aor = f"sip:{username}@{domain}"
    action = args.phone_action if args.action == "phone" else ("revoke" if args.revoke else "grant")
    number = normalise_phone(args.number) if action in ("add", "remove") else None

    async def edit(store):
        user = await store.get_user(username, domain)
        if user is None:
            raise CommandError(f"no user {aor}")
        if action == "list":
            return user
        if action == "add":
            if number in user.phones:
                raise CommandError(f"{aor} already has {number}")
            user = replace(user, phones=(*user.phones, number))
        elif action == "remove":
            if number not in user.phones:
                raise CommandError(f"{aor} has no number {number} (it has: {', '.join(user.phones) or 'none'})")
            user = replace(user, phones=tuple(p for p in user.phones if p != number))
        else:
            user = replace(user, admin=action == "grant")
        await store.update_user(user)
        return user

    user = asyncio.run(with_store(config, edit))
    if action == "list":
        print("\n".join(user.phones) if user.phones else f"{aor} has no phone numbers")
    elif action in ("add", "remove"):
        print(f"{aor}: {', '.join(user.phones) or 'no phone numbers'}")
    else:
        print(f"{aor} {'is now an administrator' if user.admin else 'is no longer an administrator'}")
    return 0


def cmd_device(args: argparse.Namespace, config: Config) -> int:
    from sipim.store.changes import CHANGE_BINDING_REMOVED

    username = split_user(args.name, config.domain)
    aor = f"sip:{username}@{config.domain}"

    async def bindings(store):
        return [b for b in await store.list_bindings(aor) if b.expires_at > time.time()]

    if args.action == "list":
        async def listing(store):
            return await store.list_devices(username, config.domain), await bindings(store)

        credentials, found = asyncio.run(with_store(config, listing))
        if args.json and args.credentials:
            print(json.dumps([{"device_id": d.device_id, "name": d.name, "instance": d.instance_id,
                               "auth_username": d.auth_username, "created_at": d.created_at,
                               "last_used_at": d.last_used_at, "revoked_at": d.revoked_at} for d in credentials],
                             indent=2))
            return 0
        if args.json:
            by_instance = {d.instance_id: d.device_id for d in credentials if not d.revoked}
            print(json.dumps([{"instance": b.instance_id, "binding_key": b.binding_key, "contact": b.contact,
                               "expires_at": b.expires_at, "transport": b.transport, "source": b.source,
                               "user_agent": b.user_agent, "registered_at": b.registered_at,
                               "device_id": by_instance.get((b.instance_id or "").strip("<>")),
                               "node_id": b.node_id} for b in found],
                             indent=2))
            return 0
        if credentials:
            print("credentials:")
            for d in credentials:
                state = f"revoked {format_time(d.revoked_at)}" if d.revoked_at is not None else (
                    f"last used {format_time(d.last_used_at)}" if d.last_used_at else "never used")
                print(f"  {d.device_id}  {d.auth_username}  {d.instance_id}  \"{d.name}\"  "
                      f"created {format_time(d.created_at)}  {state}")
            print("registrations:")
        if not found:
            print(f"{aor} has no registered devices")
        else:
            for b in found:
                left = int(b.expires_at - time.time())
                print(f"{b.instance_id or b.binding_key}  {b.transport} {b.source}  "
                      f"expires in {left}s  {b.user_agent}".rstrip())
        return 0

    wanted = args.instance.strip()

    async def revoke(store):
        from sipim.store.models import AuditRecord, WriteBatch

        now = time.time()
        revoked = []
        for d in await store.list_devices(username, config.domain):
            if not d.revoked and wanted.strip("<>") in (d.device_id, d.auth_username, d.instance_id):
                done = await store.revoke_device(d.device_id, now)
                if done is not None:
                    revoked.append(done)
        instances = {d.instance_id for d in revoked}
        matches = [b for b in await bindings(store)
                   if wanted in (b.instance_id, b.binding_key)
                   or (b.instance_id and b.instance_id.strip("<>") in instances | {wanted.strip("<>")})]
        audit = [AuditRecord(ts=now, aor=aor, username=d.auth_username, instance_id=d.instance_id, user_agent="",
                             source="cli", transport="cli", result="device-revoked",
                             reason=f"device {d.device_id} revoked") for d in revoked]
        if matches or audit:
            await store.write_batch(WriteBatch(deletes=[(b.aor, b.binding_key) for b in matches], audit=audit))
            for b in matches:
                await store.publish_change(CHANGE_BINDING_REMOVED, f"{b.aor} {b.binding_key}")
        return revoked, matches

    revoked, removed = asyncio.run(with_store(config, revoke))
    if not revoked and not removed:
        raise CommandError(f"{aor} has no registered device or device credentials {wanted!r} "
                           f"(see `sipim device list {username}`)")
    if revoked:
        print(f"revoked the credentials of {', '.join(d.device_id for d in revoked)} of {aor}")
    print(f"revoked {len(removed)} registration(s) of {aor}")
    return 0


def parse_cursor(text: str) -> tuple[float, int]:
    ts, sep, row = text.partition(":")
    try:
        if not sep:
            raise ValueError
        return float(ts), int(row)
    except ValueError:
        raise CommandError(f"--before {text!r}: give the cursor a previous page printed (TIME:ROW)") from None


def peer_aor(name: str, domain: str) -> str:
    return f"sip:{split_user(name, domain)}@{domain}"


def cmd_history(args: argparse.Namespace, config: Config) -> int:
    owner = peer_aor(args.name, config.domain)
    peer = peer_aor(args.peer, config.domain) if args.peer else None
    since = parse_since(args.since) if args.since else None
    before = parse_cursor(args.before) if args.before else None
    if not 1 <= args.limit <= 1000:
        raise CommandError("--limit must be from 1 to 1000")
    entries = asyncio.run(with_store(config, lambda s: s.query_history(
        owner, peer=peer, since=since, before=before, limit=args.limit)))
    cursor = f"{entries[-1].cursor[0]!r}:{entries[-1].cursor[1]}" if len(entries) == args.limit else None
    if args.json:
        print(json.dumps([{"time": e.ts, "direction": e.direction, "peer": e.peer, "message_id": e.message_id,
                           "imdn_message_id": e.imdn_message_id, "content_type": e.content_type,
                           "body": e.body.decode("utf-8", "replace"), "status": e.status} for e in entries],
                         indent=2))
        return 0
    for e in entries:
        arrow = "->" if e.direction == "out" else "<-"
        text = e.body.decode("utf-8", "replace").replace("\n", " ")
        if len(text) > 120:
            text = text[:117] + "..."
        print(f"{format_time(e.ts)}  {arrow} {e.peer}  [{e.content_type}] {text}  {e.status}".rstrip())
    if cursor:
        print(f"(more: --before {cursor})")
    return 0


def cmd_audit(args: argparse.Namespace, config: Config) -> int:
    since = parse_since(args.since) if args.since else None
    username = split_user(args.user, config.domain) if args.user else None
    if args.limit < 1:
        raise CommandError("--limit must be at least 1")
    records = asyncio.run(with_store(config, lambda s: s.query_audit(
        username=username, since=since, result=args.result, limit=args.limit)))
    if args.json:
        print(json.dumps([{"time": r.ts, "aor": r.aor, "user": r.username, "instance": r.instance_id,
                           "user_agent": r.user_agent, "source": r.source, "transport": r.transport,
                           "result": r.result, "reason": r.reason} for r in records], indent=2))
        return 0
    for r in records:
        print(f"{format_time(r.ts)}  {r.result:<11} {r.aor}  {r.transport} {r.source}  "
              f"{r.reason}  {r.user_agent}".rstrip())
    return 0


def cmd_serve(args: argparse.Namespace, config: Config) -> int:
    from sipim.app import SipimServer

    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    warn_if_no_user_in_domain(config)
    workers = config.worker_count()
    if workers > 1:
        from sipim.cluster.supervisor import serve_workers

        return serve_workers(config, workers, print_banner)
    try:
        import uvloop

        uvloop.install()
    except ImportError:  # pragma: no cover - uvloop is a dependency, but keep running without it
        pass

    async def run() -> None:
        server = SipimServer(config)
        await server.start()
        print_banner(server, config)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        logging.getLogger("sipim").info("stopping")
        await server.stop()

    asyncio.run(run())
    return 0


def users_elsewhere(config: Config, user_domains: dict[str, int]) -> list[str] | None:
    """The warning (its lines) to give when users exist but none in the served domain or
    its aliases: they were added under another domain and cannot register.  None if not."""
    if not user_domains or any(domain.lower() in config.served_domains() for domain in user_domains):
        return None
    found = ", ".join(f"{domain} ({count} user{'s' if count > 1 else ''})" for domain, count in user_domains.items())
    return [f"no user of domain {config.domain}; this store has users only in {found},",
            f"who cannot register while this server serves {config.domain}. Either serve their domain",
            f"(sipim serve --domain {next(iter(user_domains))}) or add users of {config.domain}",
            f"(sipim user add NAME --domain {config.domain} --data-dir {config.data_dir})."]


def warn_if_no_user_in_domain(config: Config) -> None:
    """Before serving: users_elsewhere()'s warning, in the log and on the console."""
    from sipim.store import StoreError, is_postgres_url
    from sipim.store.sqlite import sqlite_path_from_url

    try:
        if not is_postgres_url(config.database_url) and not Path(sqlite_path_from_url(config.database_url)).exists():
            return  # a first start: no store yet, so no users (serving creates it)
        user_domains = asyncio.run(with_store(config, lambda store: store.user_domains()))
    except StoreError:
        return  # the server's own start reports what is wrong with the store
    warning = users_elsewhere(config, user_domains)
    if warning is not None:
        logging.getLogger("sipim").warning("%s", " ".join(warning))
        print("WARNING: " + "\n         ".join(warning), flush=True)


def print_banner(server, config: Config) -> None:
    from sipim.sip import accel_summary

    log = logging.getLogger("sipim")
    log.info("%s", accel_summary())
    for spec in config.insecure_listeners():
        log.warning("plain transport %s is open: traffic on it is not encrypted", spec)
    lines = [f"sipim {__version__} serving domain {config.domain}  (data in {config.data_dir.resolve()})"]
    for transport, host, port in server.listening():
        lines.append(f"  listening on {transport}:{host}:{port}")
    if getattr(server, "workers", 1) > 1:
        lines.append(f"  {server.workers} worker processes share these ports and the data directory")
    if server.tls_files is not None:
        from sipim.web.app import CA_PATH

        lines.append(f"  TLS: private CA {server.tls_files.ca_cert} (clients must trust it)")
        lines.append(f"       CA SHA-256 fingerprint {server.tls_files.ca_fingerprint_sha256}")
        https = next(((host, port) for transport, host, port in server.listening() if transport == "wss"), None)
        if https is not None:
            host, port = https
            if host in ("0.0.0.0", "::"):  # every address: name the server as devices do
                host = config.provisioning_public_host or config.domain
            lines.append(f"       download: https://{format_host_port(host, port)}{CA_PATH}")
    if config.allow_insecure:
        lines.append("  --allow-insecure: REGISTER accepted over plain transports")
    if config.external_core:
        lines.append(f"  external core: trusting {', '.join(config.trusted_cores)}; deliveries via {config.core_uri}")
    lines.append(f"  add a user:  sipim user add alice --data-dir {config.data_dir}")
    print("\n".join(lines), flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "client":
        from sipim.client.cli import run as run_client

        return run_client(args)
    try:
        config = load_config(args)
        if args.command == "serve":
            return cmd_serve(args, config)
        if args.command == "user":
            return cmd_user(args, config)
        if args.command == "device":
            return cmd_device(args, config)
        if args.command == "audit":
            return cmd_audit(args, config)
        if args.command == "history":
            return cmd_history(args, config)
        parser.error(f"unknown command {args.command}")
    except ConfigError as exc:
        print(f"sipim: configuration error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except CommandError as exc:
        print(f"sipim: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        return 130
    except OSError as exc:
        print(f"sipim: {exc.strerror or exc}{f': {exc.filename}' if exc.filename else ''}", file=sys.stderr)
        return EXIT_FAILURE
    except Exception as exc:  # store errors and the like: one line, no traceback
        from sipim.store import StoreError

        if isinstance(exc, StoreError):
            print(f"sipim: storage error: {exc}", file=sys.stderr)
            return EXIT_FAILURE
        raise
    return 0


if __name__ == "__main__":
    sys.exit(main())
