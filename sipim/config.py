"""Every limit, timer and default of sipim in one object.

The CLI flags, the TOML config file (``--config``) and the environment feed one
``Config``; nothing else in the code base hard-codes a limit.  Keys in the TOML
file are the field names below; they may be grouped in tables (``[registrar]``,
``[auth]``...) purely for readability -- table names are not part of the key
(sipim/tomlconfig.py reads them, for the client's settings as well).
"""

from __future__ import annotations

import dataclasses
import os
import socket
from dataclasses import dataclass, field
from pathlib import Path

from sipim.net import SECURE_TRANSPORTS, ListenSpec
from sipim.tomlconfig import ConfigError, TomlSettings

DEFAULT_LISTEN = ("tls:0.0.0.0:5061", "wss:0.0.0.0:8443")


def default_domain() -> str:
    fqdn = socket.getfqdn().lower()
    return fqdn if "." in fqdn and not fqdn.endswith(".localdomain") else "localhost"


def default_data_dir() -> Path:
    return Path(os.environ.get("SIPIM_DATA_DIR", "./sipim-data"))


@dataclass(frozen=True)
class Listener:
    spec: ListenSpec
    digest_algorithms: tuple[str, ...]


@dataclass
class Config(TomlSettings):
    # -- where and what ---------------------------------------------------
    data_dir: Path = field(default_factory=default_data_dir)
    database: str | None = None  # None: SQLite file <data_dir>/sipim.db
    domain: str = field(default_factory=default_domain)
    # Extra host names that mean "this domain" in a Request-URI or To header
    # (e.g. the server's IP address, which simple clients put there).
    domain_aliases: tuple[str, ...] = ()
    listen: tuple[str, ...] = DEFAULT_LISTEN
    allow_insecure: bool = False
    tls_cert: Path | None = None
    tls_key: Path | None = None
    node_id: str = field(default_factory=lambda: f"{socket.gethostname()}-{os.getpid()}")

    # -- registrar (RFC 3261 §10.3, RFC 5626, RFC 5627) ---------------------
    min_expires: int = 60
    default_expires: int = 3600
    max_expires: int = 86400
    max_devices_per_user: int = 10
    # RFC 5626 §4.4.1 / §5.4: how long a connection-bound binding survives the
    # loss of its connection, and the Flow-Timer we tell outbound clients.
    flow_timer: int = 120
    expiry_sweep_interval: float = 1.0

    # -- authentication (RFC 7616, RFC 8760) --------------------------------
    nonce_lifetime: int = 300
    max_tracked_nonces: int = 100_000
    # Order of the WWW-Authenticate / Proxy-Authenticate challenges.  Browser
    # SIP stacks know only MD5 and keep one challenge: SIP.js the first, JsSIP
    # 3.13 the last (its parser overwrites each header with the next), so
    # WebSocket listeners offer MD5 alone; everything else prefers SHA-256
    # (RFC 8760 §2.4).
    auth_algorithms: tuple[str, ...] = ("SHA-256", "MD5")
    websocket_auth_algorithms: tuple[str, ...] = ("MD5",)

    # -- brute-force protection ---------------------------------------------
    lockout_threshold: int = 10
    lockout_window: int = 300
    lockout_duration: int = 900

    # -- instant messaging (RFC 3428 pager mode) -------------------------------
    # Bodies over stream transports larger than this get 413; over UDP a request
    # larger than im_max_udp_message_size gets 513 (RFC 3428 §8: 1300 bytes unless
    # the path MTU is known).
    im_max_message_size: int = 65536
    im_max_udp_message_size: int = 1300
    im_content_types: tuple[str, ...] = (
        "text/plain", "message/cpim", "message/imdn+xml", "application/im-iscomposing+xml")
    # Other content types are passed through unless this is true (then 415).
    im_refuse_other_types: bool = False
    # How long the sender's MESSAGE waits for a device to take it before the
    # server answers 202 (stored) instead of 200.
    im_delivery_wait: float = 4.0
    deferred_lifetime: int = 7 * 86400
    history_retention_days: int = 90
    im_expiry_sweep_interval: float = 30.0

    # -- audit ----------------------------------------------------------------
    audit_retention_days: int = 90

    # -- provisioning: device auto-configuration over HTTPS ----------------------
    # One-time codes sent by SMS (RFC 4226-style numeric codes): length, lifetime,
    # wrong guesses before the code is void.
    otp_length: int = 6
    otp_lifetime: int = 300
    otp_max_attempts: int = 5
    # Codes sent per number and per source address within otp_rate_window seconds.
    otp_rate_per_number: int = 3
    otp_rate_per_source: int = 10
    otp_rate_window: int = 900
    # Code checks (/config with a code, /pair) per source address in that window.
    provisioning_attempts_per_source: int = 30
    # Unknown numbers get a code (and an account once verified) only with self sign-up;
    # otherwise they get the same answer as known ones and no code.
    provisioning_self_signup: bool = False
    # SMS gateway: "outbox" (log + DATA_DIR/sms-outbox.jsonl), "webhook" (POST JSON), or
    # "package.module:factory" -- a callable taking the Config and returning an SmsGateway.
    sms_gateway: str = "outbox"
    sms_webhook_url: str = ""
    sms_webhook_authorization: str = ""  # sent as the Authorization header, if set
    sms_webhook_timeout: float = 10.0
    # Zero-typing configuration: requests from these CIDR ranges carrying the
    # network-asserted number header get their configuration without a code.
    provisioning_trusted_networks: tuple[str, ...] = ()
    provisioning_msisdn_header: str = "X-MSISDN"
    # Pairing codes shown as QR code / link by a signed-in device: length, lifetime.
    pairing_code_length: int = 8
    pairing_code_lifetime: int = 120
    pairing_codes_per_user: int = 10  # within otp_rate_window
    # What the device configuration names as the server (default: the host the
    # device reached, the first TLS listener's port, the HTTPS port it used).
    provisioning_public_host: str = ""
    provisioning_public_tls_port: int = 0
    provisioning_public_https_port: int = 0
    # Largest JSON body a provisioning request may carry.
    provisioning_max_body: int = 4096
    # How often devices' last-use times are written to the store.
    device_use_flush_interval: float = 60.0

    # -- XDM: XCAP documents, directory, privacy (RFC 4825, RFC 4826, RFC 4745) --
    xcap_max_document_size: int = 65536
    xcap_max_documents_per_user: int = 20  # resource-lists documents (other usages have one)
    directory_lookups_per_minute: int = 30  # per user: the directory is not for harvesting
    # What the sender of a MESSAGE the recipient's rules block gets: "silent" (the
    # 200/202 a delivered or stored message gets, so blocking is not revealed) or "403".
    im_blocked_answer: str = "silent"

    # -- transports and parser bounds ---------------------------------------
    max_message_size: int = 131072  # a whole SIP message; IM bodies have their own limit below
    max_headers: int = 128
    max_line_length: int = 8192
    max_uri_length: int = 4096
    max_connections_per_ip: int = 64
    connection_idle_timeout: float = 30.0

    # -- RFC 3261 §17 timers -----------------------------------------------
    t1: float = 0.5
    t2: float = 4.0
    t4: float = 5.0

    # -- garbage collection (sipim/app.py) ---------------------------------------
    # Seconds between collections of young objects, and of the middle generation,
    # run on a clock: at a steady load the collector's own trigger comes seldom and
    # each of its collections then walks hundreds of thousands of objects (pauses of
    # most of a second, longer than a UDP client's 500 ms retransmission timer).
    gc_young_interval: float = 0.1
    gc_middle_interval: float = 2.0

    # -- store write batching (group commit) ---------------------------------
    store_flush_interval: float = 0.003
    store_max_batch: int = 500
    change_poll_interval: float = 1.0

    # -- external SIP/IP core (Kamailio in front, several nodes on one PostgreSQL) --
    # sipim then does no digest authentication: it serves only requests coming
    # from trusted_cores (addresses or CIDR ranges; others get 403), takes the
    # sender from P-Asserted-Identity (RFC 3325 §9.1), learns devices from the
    # core's third-party REGISTERs and sends deliveries to core_uri.
    external_core: bool = False
    trusted_cores: tuple[str, ...] = ()
    core_uri: str = ""

    # -- worker processes (sipim/cluster): N copies of the core + IM server on one
    # machine, one data directory.  1 = one process (the default); 0 = one per CPU
    # (``--workers auto``, TOML ``workers = "auto"``).  See sipim/cluster/__init__.py.
    workers: int = 1
    # A worker that dies is started again; one that keeps dying waits longer each
    # time (doubling from 1 s up to this many seconds) so a crash loop does not spin.
    worker_restart_max_backoff: float = 30.0
    # Seconds a stopping worker gets to flush its writer before it is killed.
    worker_stop_timeout: float = 20.0
    # Slots of the shared UDP transaction-affinity table (8 bytes each): a slot holds
    # which worker took a request, for 64*T1, so a retransmission that the kernel
    # hands to another worker reaches the one holding its transaction.  Enough for
    # slots / (64*T1) UDP requests a second (32,000 with the defaults).
    cluster_affinity_slots: int = 1_048_576
    # Socket buffer of each end of the bus between two workers (bytes), and the
    # largest batch sent as one datagram.
    cluster_bus_buffer: int = 4 << 20
    cluster_bus_max_datagram: int = 65_536
    # Bytes a worker queues for a peer that does not read (dead, restarting) before
    # it drops the oldest (the peer reloads its state from the store when it starts).
    cluster_bus_backlog: int = 32 << 20

    # -- browser client (served at / on ws/wss ports) ---------------------------
    # The folder with the built bundle (index.html, app.js, app.css); None: the
    # one `make web` builds into the package (sipim/web/static).
    web_client_dir: Path | None = None

    # ------------------------------------------------------------------------
    @property
    def database_url(self) -> str:
        return self.database or str(self.data_dir / "sipim.db")

    def worker_count(self) -> int:
        """How many worker processes ``sipim serve`` runs (``workers``, 0 meaning one per CPU)."""
        return self.workers if self.workers > 0 else max(1, os.cpu_count() or 1)

    def served_domains(self) -> frozenset[str]:
        """The domain and its configured aliases: the domains users belong to."""
        return frozenset({self.domain.lower(), *(a.lower() for a in self.domain_aliases)})

    def local_domains(self) -> frozenset[str]:
        """Every host part that means this server in a request's URIs: the served
        domains and the addresses it listens on (simple clients address it by IP).
        Worked out once for the settings it depends on (roles ask per request)."""
        key = (self.domain, self.domain_aliases, self.listen)
        cached = self.__dict__.get("_local_domains")
        if cached is not None and cached[0] == key:
            return cached[1]
        hosts = {"localhost", "127.0.0.1", "::1", "[::1]"}
        hosts.update(listener.spec.host.lower() for listener in self.listeners())
        hosts -= {"0.0.0.0", "::"}
        domains = self.served_domains() | hosts
        self.__dict__["_local_domains"] = (key, domains)
        return domains

    def listeners(self) -> list[Listener]:
        """The listen addresses with their per-listener options.

        ``PROTO:HOST:PORT`` may end in ``?digest=MD5,SHA-256``: the order of the
        digest challenges on that listener.  Clients that read only the first
        challenge and know only MD5 (sipp, JsSIP, SIP.js) need MD5 first; others
        get SHA-256 first (RFC 8760 §2.4).  WebSocket listeners default to MD5 first.
        """
        found = []
        for text in self.listen:
            address, _, options = text.partition("?")
            try:
                spec = ListenSpec.parse(address)
            except ValueError as exc:
                raise ConfigError(str(exc)) from None
            algorithms = (self.websocket_auth_algorithms if spec.transport in ("ws", "wss")
                          else self.auth_algorithms)
            for option in filter(None, options.split("&")):
                name, _, value = option.partition("=")
                if name != "digest" or not value:
                    raise ConfigError(f"listen address {text!r}: unknown option {option!r} "
                                      f"(known: digest=MD5,SHA-256)")
                algorithms = tuple(a.strip().upper() for a in value.split(","))
                if not set(algorithms) <= {"MD5", "SHA-256"} or len(set(algorithms)) != len(algorithms):
                    raise ConfigError(f"listen address {text!r}: digest= takes MD5 and/or SHA-256")
            found.append(Listener(spec, algorithms))
        return found

    def validate(self) -> None:
        if not self.domain or any(c in self.domain for c in " @:;<>\"/"):
            raise ConfigError(f"invalid domain {self.domain!r}")
        if not 0 < self.gc_young_interval <= self.gc_middle_interval:
            raise ConfigError("gc_young_interval must be above 0 and at most gc_middle_interval")
        if not self.listen:
            raise ConfigError("nothing to listen on: give at least one --listen PROTO:HOST:PORT")
        self.listeners()
        if not 0 < self.min_expires <= self.default_expires <= self.max_expires:
            raise ConfigError("expires settings must satisfy 0 < min_expires <= default_expires <= max_expires")
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ConfigError("--tls-cert and --tls-key go together")
        for algorithm in (*self.auth_algorithms, *self.websocket_auth_algorithms):
            if algorithm not in ("MD5", "SHA-256"):
                raise ConfigError(f"unknown digest algorithm {algorithm!r} (use MD5 or SHA-256)")
        if self.max_devices_per_user < 1:
            raise ConfigError("max_devices_per_user must be at least 1")
        if self.workers < 0:
            raise ConfigError('workers must be a number of processes (1 = one process) or "auto"')
        if self.worker_count() > 1 and self.external_core:
            raise ConfigError("--workers is not supported with --external-core: run one node per core "
                              "behind the external core instead")
        if self.cluster_affinity_slots < 1024 or self.cluster_bus_max_datagram < 4096:
            raise ConfigError("cluster_affinity_slots must be at least 1024 and cluster_bus_max_datagram 4096")
        if self.im_blocked_answer not in ("silent", "403"):
            raise ConfigError('im_blocked_answer is "silent" or "403"')
        self.validate_provisioning()

    def validate_provisioning(self) -> None:
        import ipaddress

        for network in self.provisioning_trusted_networks:
            try:
                ipaddress.ip_network(network, strict=False)
            except ValueError:
                raise ConfigError(f"provisioning_trusted_networks: {network!r} is not a CIDR range") from None
        if self.sms_gateway not in ("outbox", "webhook") and ":" not in self.sms_gateway:
            raise ConfigError(f"sms_gateway {self.sms_gateway!r}: use outbox, webhook or module:factory")
        if self.sms_gateway == "webhook" and not self.sms_webhook_url.startswith(("http://", "https://")):
            raise ConfigError("sms_gateway = webhook needs sms_webhook_url = http(s)://...")
        if not 4 <= self.otp_length <= 10:
            raise ConfigError("otp_length must be from 4 to 10 digits")
        if not 6 <= self.pairing_code_length <= 16:
            raise ConfigError("pairing_code_length must be from 6 to 16 characters")
        for name in ("otp_lifetime", "otp_max_attempts", "otp_rate_per_number", "otp_rate_per_source",
                     "otp_rate_window", "provisioning_attempts_per_source", "pairing_code_lifetime",
                     "pairing_codes_per_user"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1")
        if not self.provisioning_msisdn_header.strip():
            raise ConfigError("provisioning_msisdn_header must name a header")
        if self.external_core:
            self.validate_external_core()

    def validate_external_core(self) -> None:
        import ipaddress

        if not self.trusted_cores:
            raise ConfigError("external_core needs trusted_cores (the core's addresses, e.g. 10.0.0.5 or 10.0.0.0/24)")
        for network in self.trusted_cores:
            try:
                ipaddress.ip_network(network, strict=False)
            except ValueError:
                raise ConfigError(f"trusted_cores: {network!r} is not an IP address or CIDR range") from None
        if not self.core_uri:
            raise ConfigError("external_core needs core_uri, where deliveries go (e.g. sip:10.0.0.5:5070;transport=tcp)")
        from sipim.sip.errors import SIPParseError
        from sipim.sip.uri import SipURI, parse_uri

        try:
            uri = parse_uri(self.core_uri)
        except SIPParseError as exc:
            raise ConfigError(f"core_uri {self.core_uri!r}: {exc.reason}") from None
        if not isinstance(uri, SipURI):
            raise ConfigError(f"core_uri {self.core_uri!r} must be a sip: URI")

    def insecure_listeners(self) -> list[str]:
        return [str(l.spec) for l in self.listeners() if l.spec.transport not in SECURE_TRANSPORTS]

    # ------------------------------------------------------------------------
    @classmethod
    def field_names(cls) -> set[str]:
        return {f.name for f in dataclasses.fields(cls)}

    def apply(self, values: dict[str, object], origin: str) -> None:
        """Set fields from a flat mapping, converting to each field's type."""
        super().apply({key: 0 if _is_auto_workers(key, value) else value  # 0: one worker per CPU
                       for key, value in values.items()}, origin)


def _is_auto_workers(key: str, value: object) -> bool:
    return key.replace("-", "_") == "workers" and isinstance(value, str) and value.strip().lower() == "auto"
