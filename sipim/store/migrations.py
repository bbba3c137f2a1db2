"""Versioned schema migrations, one list for both engines.

Each engine applies, in order and inside one transaction per migration, every migration
whose version is above the highest row of ``schema_version``. To evolve the schema,
APPEND a Migration with the next version number (never edit a released one): give the
statements for SQLite and for PostgreSQL. Statements are tuples, not scripts, because
sqlite3's executescript() would commit behind our back.

Column conventions: times are REAL / double precision POSIX seconds; lists are JSON text
in SQLite and text[] in PostgreSQL.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Migration:
    version: int
    description: str
    sqlite: tuple[str, ...]
    postgresql: tuple[str, ...]


# The schema_version table itself is created by the engines before any migration runs.
SQLITE_SCHEMA_VERSION_TABLE = """
CREATE TABLE IF NOT EXISTS schema_version (
    version     INTEGER PRIMARY KEY,
    description TEXT NOT NULL,
    applied_at  REAL NOT NULL
)"""

POSTGRESQL_SCHEMA_VERSION_TABLE = """
CREATE TABLE IF NOT EXISTS schema_version (
    version     integer PRIMARY KEY,
    description text NOT NULL,
    applied_at  double precision NOT NULL
)"""


MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        version=1,
        description="users, bindings, registration audit, change feed",
        sqlite=(
            # Column names username/domain/ha1 follow Kamailio's auth_db subscriber
            # table so a later migration can expose a view Kamailio reads directly.
            """CREATE TABLE users (
                username     TEXT NOT NULL,
                domain       TEXT NOT NULL,
                ha1          TEXT NOT NULL,
                ha1_sha256   TEXT NOT NULL DEFAULT '',
                display_name TEXT,
                phones       TEXT NOT NULL DEFAULT '[]',
                created_at   REAL NOT NULL DEFAULT 0,
                disabled     INTEGER NOT NULL DEFAULT 0,
                PRIMARY KEY (username, domain)
            )""",
            "CREATE INDEX users_domain ON users (domain)",
            """CREATE TABLE bindings (
                aor           TEXT NOT NULL,
                binding_key   TEXT NOT NULL,
                contact       TEXT NOT NULL,
                expires_at    REAL NOT NULL,
                instance_id   TEXT,
                reg_id        INTEGER,
                q             REAL,
                call_id       TEXT NOT NULL DEFAULT '',
                cseq          INTEGER NOT NULL DEFAULT 0,
                path          TEXT NOT NULL DEFAULT '[]',
                source        TEXT NOT NULL DEFAULT '',
                transport     TEXT NOT NULL DEFAULT '',
                flow_id       TEXT,
                node_id       TEXT NOT NULL DEFAULT '',
                gruu_tag      TEXT,
                user_agent    TEXT NOT NULL DEFAULT '',
                registered_at REAL NOT NULL DEFAULT 0,
                PRIMARY KEY (aor, binding_key)
            )""",
            "CREATE INDEX bindings_expires_at ON bindings (expires_at)",
            "CREATE INDEX bindings_gruu_tag ON bindings (gruu_tag) WHERE gruu_tag IS NOT NULL",
            "CREATE INDEX bindings_node_id ON bindings (node_id)",
            # aor_user is derived from aor at insert time so that a username filter can
            # also find attempts that carried no (or wrong) credentials.
            """CREATE TABLE audit (
                id          INTEGER PRIMARY KEY AUTOINCREMENT,
                ts          REAL NOT NULL,
                aor         TEXT NOT NULL,
                aor_user    TEXT NOT NULL,
                username    TEXT,
                instance_id TEXT,
                user_agent  TEXT NOT NULL,
                source      TEXT NOT NULL,
                transport   TEXT NOT NULL,
                result      TEXT NOT NULL,
                reason      TEXT NOT NULL
            )""",
            "CREATE INDEX audit_ts ON audit (ts)",
            "CREATE INDEX audit_username_ts ON audit (username, ts)",
            "CREATE INDEX audit_aor_user_ts ON audit (aor_user, ts)",
            # AUTOINCREMENT: ids are never reused, even after pruning every row, so a
            # reader's "last seen id" stays meaningful.
            """CREATE TABLE changes (
                id   INTEGER PRIMARY KEY AUTOINCREMENT,
                kind TEXT NOT NULL,
                key  TEXT NOT NULL,
                ts   REAL NOT NULL
            )""",
            "CREATE INDEX changes_ts ON changes (ts)",
        ),
        postgresql=(
            """CREATE TABLE users (
                username     text NOT NULL,
                domain       text NOT NULL,
                ha1          text NOT NULL,
                ha1_sha256   text NOT NULL DEFAULT '',
                display_name text,
                phones       text[] NOT NULL DEFAULT '{}',
                created_at   double precision NOT NULL DEFAULT 0,
                disabled     boolean NOT NULL DEFAULT false,
                PRIMARY KEY (username, domain)
            )""",
            "CREATE INDEX users_domain ON users (domain)",
            """CREATE TABLE bindings (
                aor           text NOT NULL,
                binding_key   text NOT NULL,
                contact       text NOT NULL,
                expires_at    double precision NOT NULL,
                instance_id   text,
                reg_id        bigint,
                q             double precision,
                call_id       text NOT NULL DEFAULT '',
                cseq          bigint NOT NULL DEFAULT 0,
                path          text[] NOT NULL DEFAULT '{}',
                source        text NOT NULL DEFAULT '',
                transport     text NOT NULL DEFAULT '',
                flow_id       text,
                node_id       text NOT NULL DEFAULT '',
                gruu_tag      text,
                user_agent    text NOT NULL DEFAULT '',
                registered_at double precision NOT NULL DEFAULT 0,
                PRIMARY KEY (aor, binding_key)
            )""",
            "CREATE INDEX bindings_expires_at ON bindings (expires_at)",
            "CREATE INDEX bindings_gruu_tag ON bindings (gruu_tag) WHERE gruu_tag IS NOT NULL",
            "CREATE INDEX bindings_node_id ON bindings (node_id)",
            """CREATE TABLE audit (
                id          bigserial PRIMARY KEY,
                ts          double precision NOT NULL,
                aor         text NOT NULL,
                aor_user    text NOT NULL,
                username    text,
                instance_id text,
                user_agent  text NOT NULL,
                source      text NOT NULL,
                transport   text NOT NULL,
                result      text NOT NULL,
                reason      text NOT NULL
            )""",
            "CREATE INDEX audit_ts ON audit (ts)",
            "CREATE INDEX audit_username_ts ON audit (username, ts)",
            "CREATE INDEX audit_aor_user_ts ON audit (aor_user, ts)",
            """CREATE TABLE changes (
                id   bigserial PRIMARY KEY,
                kind text NOT NULL,
                key  text NOT NULL,
                ts   double precision NOT NULL
            )""",
            "CREATE INDEX changes_ts ON changes (ts)",
        ),
    ),
    Migration(
        version=2,
        description="pager messages (store-and-forward), per-device deliveries, history",
        sqlite=(
            # seq: a monotonic row id (AUTOINCREMENT never reuses one) that orders
            # messages accepted within the same created_at.
            """CREATE TABLE messages (
                seq                      INTEGER PRIMARY KEY AUTOINCREMENT,
                id                       TEXT NOT NULL UNIQUE,
                sender                   TEXT NOT NULL,
                recipient                TEXT NOT NULL,
                target_instance          TEXT,
                call_id                  TEXT NOT NULL,
                cseq                     INTEGER NOT NULL,
                imdn_message_id          TEXT,
                content_type             TEXT NOT NULL,
                body                     BLOB NOT NULL,
                disposition_notification TEXT,
                created_at               REAL NOT NULL,
                expires_at               REAL NOT NULL,
                state                    TEXT NOT NULL
                    CHECK (state IN ('pending', 'delivered', 'expired'))
            )""",
            # Resent requests (write_batch skips them): RFC 3261 §8.2.2.2 merged-request
            # identity (Call-ID, CSeq) and the RFC 5438 §6.3 Message-ID.
            "CREATE UNIQUE INDEX messages_sender_call ON messages (sender, call_id, cseq)",
            "CREATE UNIQUE INDEX messages_sender_imdn ON messages (sender, imdn_message_id) "
            "WHERE imdn_message_id IS NOT NULL",
            # undelivered_for_device / messages_pending: one recipient, oldest first.
            "CREATE INDEX messages_recipient_created ON messages (recipient, created_at, seq)",
            # expire_messages / purge_messages.
            "CREATE INDEX messages_expires_at ON messages (expires_at)",
            # One row per (message, device): a claim (delivered_at NULL) or a delivery.
            """CREATE TABLE message_deliveries (
                message_id   TEXT NOT NULL,
                device_key   TEXT NOT NULL,
                node_id      TEXT NOT NULL,
                claimed_at   REAL NOT NULL,
                delivered_at REAL,
                PRIMARY KEY (message_id, device_key)
            )""",
            """CREATE TABLE history (
                seq             INTEGER PRIMARY KEY AUTOINCREMENT,
                owner           TEXT NOT NULL,
                peer            TEXT NOT NULL,
                direction       TEXT NOT NULL CHECK (direction IN ('in', 'out')),
                message_id      TEXT NOT NULL,
                imdn_message_id TEXT,
                content_type    TEXT NOT NULL,
                body            BLOB NOT NULL,
                ts              REAL NOT NULL,
                status          TEXT NOT NULL DEFAULT ''
            )""",
            # query_history pages by (ts, seq) descending, per owner or per conversation.
            "CREATE INDEX history_owner_ts ON history (owner, ts, seq)",
            "CREATE INDEX history_owner_peer_ts ON history (owner, peer, ts, seq)",
            # update_history_status, and one entry per (message, owner, direction).
            "CREATE UNIQUE INDEX history_message ON history (message_id, owner, direction)",
            "CREATE INDEX history_ts ON history (ts)",
        ),
        postgresql=(
            """CREATE TABLE messages (
                seq                      bigserial PRIMARY KEY,
                id                       text NOT NULL UNIQUE,
                sender                   text NOT NULL,
                recipient                text NOT NULL,
                target_instance          text,
                call_id                  text NOT NULL,
                cseq                     bigint NOT NULL,
                imdn_message_id          text,
                content_type             text NOT NULL,
                body                     bytea NOT NULL,
                disposition_notification text,
                created_at               double precision NOT NULL,
                expires_at               double precision NOT NULL,
                state                    text NOT NULL
                    CHECK (state IN ('pending', 'delivered', 'expired'))
            )""",
            "CREATE UNIQUE INDEX messages_sender_call ON messages (sender, call_id, cseq)",
            "CREATE UNIQUE INDEX messages_sender_imdn ON messages (sender, imdn_message_id) "
            "WHERE imdn_message_id IS NOT NULL",
            "CREATE INDEX messages_recipient_created ON messages (recipient, created_at, seq)",
            "CREATE INDEX messages_expires_at ON messages (expires_at)",
            """CREATE TABLE message_deliveries (
                message_id   text NOT NULL,
                device_key   text NOT NULL,
                node_id      text NOT NULL,
                claimed_at   double precision NOT NULL,
                delivered_at double precision,
                PRIMARY KEY (message_id, device_key)
            )""",
            """CREATE TABLE history (
                seq             bigserial PRIMARY KEY,
                owner           text NOT NULL,
                peer            text NOT NULL,
                direction       text NOT NULL CHECK (direction IN ('in', 'out')),
                message_id      text NOT NULL,
                imdn_message_id text,
                content_type    text NOT NULL,
                body            bytea NOT NULL,
                ts              double precision NOT NULL,
                status          text NOT NULL DEFAULT ''
            )""",
            "CREATE INDEX history_owner_ts ON history (owner, ts, seq)",
            "CREATE INDEX history_owner_peer_ts ON history (owner, peer, ts, seq)",
            "CREATE UNIQUE INDEX history_message ON history (message_id, owner, direction)",
            "CREATE INDEX history_ts ON history (ts)",
        ),
    ),
    Migration(
        version=3,
        description="messages owed to devices that register later (the sender was answered 202)",
        # A message a device took at once (the sender got 200) is not replayed to the
        # recipient's later devices -- they catch up through the history API.  One the
        # server stored for later (202) goes to every device as it registers.
        sqlite=(
            "ALTER TABLE messages ADD COLUMN for_late_devices INTEGER NOT NULL DEFAULT 1",
        ),
        postgresql=(
            "ALTER TABLE messages ADD COLUMN for_late_devices BOOLEAN NOT NULL DEFAULT TRUE",
        ),
    ),
    Migration(
        version=4,
        description="per-device credentials and bearer tokens; one-time provisioning codes",
        # Devices keep HA1 values and a token hash only, never a password or a token.
        # A user has at most one live device per instance id (re-provisioning the same
        # instance re-issues that device); revoked rows stay for the audit.
        sqlite=(
            """CREATE TABLE devices (
                device_id     TEXT PRIMARY KEY,
                username      TEXT NOT NULL,
                domain        TEXT NOT NULL,
                name          TEXT NOT NULL DEFAULT '',
                instance_id   TEXT NOT NULL,
                auth_username TEXT NOT NULL UNIQUE,
                ha1_md5       TEXT NOT NULL,
                ha1_sha256    TEXT NOT NULL,
                token_hash    TEXT NOT NULL UNIQUE,
                created_at    REAL NOT NULL,
                last_used_at  REAL,
                revoked_at    REAL
            )""",
            "CREATE INDEX devices_user ON devices (username, domain, created_at)",
            "CREATE UNIQUE INDEX devices_live_instance ON devices (username, domain, instance_id) "
            "WHERE revoked_at IS NULL",
            """CREATE TABLE provisioning_codes (
                purpose    TEXT NOT NULL,
                subject    TEXT NOT NULL,
                code_hash  TEXT NOT NULL,
                owner      TEXT NOT NULL DEFAULT '',
                created_at REAL NOT NULL,
                expires_at REAL NOT NULL,
                attempts   INTEGER NOT NULL DEFAULT 0,
                PRIMARY KEY (purpose, subject)
            )""",
            "CREATE INDEX provisioning_codes_expires_at ON provisioning_codes (expires_at)",
        ),
        postgresql=(
            """CREATE TABLE devices (
                device_id     text PRIMARY KEY,
                username      text NOT NULL,
                domain        text NOT NULL,
                name          text NOT NULL DEFAULT '',
                instance_id   text NOT NULL,
                auth_username text NOT NULL UNIQUE,
                ha1_md5       text NOT NULL,
                ha1_sha256    text NOT NULL,
                token_hash    text NOT NULL UNIQUE,
                created_at    double precision NOT NULL,
                last_used_at  double precision,
                revoked_at    double precision
            )""",
            "CREATE INDEX devices_user ON devices (username, domain, created_at)",
            "CREATE UNIQUE INDEX devices_live_instance ON devices (username, domain, instance_id) "
            "WHERE revoked_at IS NULL",
            """CREATE TABLE provisioning_codes (
                purpose    text NOT NULL,
                subject    text NOT NULL,
                code_hash  text NOT NULL,
                owner      text NOT NULL DEFAULT '',
                created_at double precision NOT NULL,
                expires_at double precision NOT NULL,
                attempts   integer NOT NULL DEFAULT 0,
                PRIMARY KEY (purpose, subject)
            )""",
            "CREATE INDEX provisioning_codes_expires_at ON provisioning_codes (expires_at)",
        ),
    ),
    Migration(
        version=5,
        description="kamailio_subscriber: the credentials view an external core's auth_db reads",
        # Kamailio's auth_db reads (user_column, domain_column, password_column) =
        # (username, domain, ha1) with calculate_ha1 = 0: the HA1 values themselves,
        # never a second copy of a password (deploy/kamailio/README.md).  "owner" is the
        # user whose address-of-record the credentials may register and send as (a
        # device credential acts for its owner); the core loads it with auth_db's
        # load_credentials and asserts sip:OWNER@DOMAIN.  Revoked devices and disabled
        # users are not in the view, so the core refuses them at once.
        sqlite=(
            "CREATE VIEW kamailio_subscriber AS "
            "SELECT username, domain, ha1, ha1_sha256, username AS owner FROM users WHERE NOT disabled "
            "UNION ALL "
            "SELECT d.auth_username, d.domain, d.ha1_md5, d.ha1_sha256, d.username FROM devices d "
            "JOIN users u ON u.username = d.username AND u.domain = d.domain "
            "WHERE d.revoked_at IS NULL AND NOT u.disabled",
        ),
        postgresql=(
            "CREATE VIEW kamailio_subscriber AS "
            "SELECT username, domain, ha1, ha1_sha256, username AS owner FROM users WHERE NOT disabled "
            "UNION ALL "
            "SELECT d.auth_username, d.domain, d.ha1_md5, d.ha1_sha256, d.username FROM devices d "
            "JOIN users u ON u.username = d.username AND u.domain = d.domain "
            "WHERE d.revoked_at IS NULL AND NOT u.disabled",
        ),
    ),
    Migration(
        version=6,
        description="XCAP documents (contact lists, privacy rules, profile) and the admin flag",
        # One row per XCAP document (RFC 4825 §6.2 document selector: AUID, XUI, name);
        # the etag changes with every write (§8.5) and guards conditional writes.
        sqlite=(
            """CREATE TABLE xcap_documents (
                auid       TEXT NOT NULL,
                owner      TEXT NOT NULL,
                filename   TEXT NOT NULL,
                content    BLOB NOT NULL,
                etag       TEXT NOT NULL,
                updated_at REAL NOT NULL,
                PRIMARY KEY (auid, owner, filename)
            )""",
            "CREATE INDEX xcap_documents_owner ON xcap_documents (owner)",
            "ALTER TABLE users ADD COLUMN admin INTEGER NOT NULL DEFAULT 0",
        ),
        postgresql=(
            """CREATE TABLE xcap_documents (
                auid       text NOT NULL,
                owner      text NOT NULL,
                filename   text NOT NULL,
                content    bytea NOT NULL,
                etag       text NOT NULL,
                updated_at double precision NOT NULL,
                PRIMARY KEY (auid, owner, filename)
            )""",
            "CREATE INDEX xcap_documents_owner ON xcap_documents (owner)",
            "ALTER TABLE users ADD COLUMN admin boolean NOT NULL DEFAULT false",
        ),
    ),
    Migration(
        version=7,
        description="SQLite: registration audit without per-user indexes",
        # In WAL mode every commit writes each page it changed whole.  An index keyed by
        # user puts every attempt on another page (one per user), so the two per-user
        # indexes made each audit row cost two 4 KiB page writes, ten times the row
        # itself: at thousands of REGISTERs a second that was the store's largest cost,
        # growing with the table.  Per-user audit queries (`sipim audit --user`) now
        # walk audit_ts from the newest row and stop at --limit.  PostgreSQL logs rows,
        # not pages, and keeps both indexes.
        sqlite=(
            "DROP INDEX IF EXISTS audit_username_ts",
            "DROP INDEX IF EXISTS audit_aor_user_ts",
        ),
        postgresql=(),
    ),
)


def latest_version() -> int:
    return MIGRATIONS[-1].version if MIGRATIONS else 0


def pending(current_version: int) -> list[Migration]:
    """Migrations to apply on a database at ``current_version``, in order.

    Raises ValueError when the database is newer than this code (a downgrade): running
    old code on a newer schema could silently drop data it does not know about.
    """
    if current_version > latest_version():
        raise ValueError(
            f"database schema version {current_version} is newer than this sipim "
            f"(knows up to {latest_version()}); upgrade sipim"
        )
    return [m for m in MIGRATIONS if m.version > current_version]


def _check_ordering() -> None:
    versions = [m.version for m in MIGRATIONS]
    if versions != list(range(1, len(versions) + 1)):
        raise AssertionError(f"migration versions must be 1..N without gaps, got {versions}")


_check_ordering()
