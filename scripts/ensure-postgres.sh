#!/usr/bin/env bash
# Make sure a PostgreSQL server answers on 127.0.0.1:5432 for the store tests.
#  1. already answering: nothing to do;
#  2. a Debian cluster exists but is down: start it with pg_ctlcluster (no systemd needed,
#     which matters in containers);
#  3. no server at all: install Debian's postgresql, start it, and configure it the way the
#     tests expect (trust auth on loopback, roles postgres and root, database `test`).
# An existing server's authentication is never changed; only a server installed here is.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

PG_HOST=127.0.0.1
PG_PORT=5432

answers() {
    if command -v pg_isready >/dev/null 2>&1; then
        pg_isready -q -h "$PG_HOST" -p "$PG_PORT"
    else
        (exec 3<>"/dev/tcp/$PG_HOST/$PG_PORT") 2>/dev/null
    fi
}

wait_until_answering() {
    local attempt
    for attempt in $(seq 1 30); do
        answers && return 0
        sleep 1
    done
    return 1
}

# Newest Debian cluster version directory, e.g. "15" (empty when there is none).
cluster_version() {
    ls /etc/postgresql 2>/dev/null | sort -V | tail -n 1
}

start_cluster() {
    local version
    version="$(cluster_version)"
    [ -n "$version" ] || return 1
    echo ">> starting PostgreSQL cluster $version/main" >&2
    as_root pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
    wait_until_answering
}

configure_fresh_server() {
    local version hba
    version="$(cluster_version)"
    hba="/etc/postgresql/$version/main/pg_hba.conf"
    echo ">> configuring the new cluster for the tests (trust on loopback, database test)" >&2
    # Trust rules first so they win over Debian's scram-sha-256 defaults (first match wins).
    as_root sed -i '1i local all all trust\nhost all all 127.0.0.1/32 trust\nhost all all ::1/128 trust' "$hba"
    as_root pg_ctlcluster --skip-systemctl-redirect "$version" main reload
    as_root runuser -u postgres -- psql -q -c "CREATE ROLE root SUPERUSER LOGIN" 2>/dev/null || true
}

ensure_test_database() {
    command -v psql >/dev/null 2>&1 || return 0
    if ! psql -h "$PG_HOST" -p "$PG_PORT" -U postgres -d test -Atqc 'select 1' >/dev/null 2>&1; then
        psql -h "$PG_HOST" -p "$PG_PORT" -U postgres -d postgres -qc 'CREATE DATABASE test' >/dev/null 2>&1 \
            || echo "warning: could not create database 'test' as user postgres on $PG_HOST:$PG_PORT" >&2
    fi
}

if answers; then
    ensure_test_database
    exit 0
fi

if [ -n "$(cluster_version)" ]; then
    if start_cluster; then
        ensure_test_database
        exit 0
    fi
    echo "error: PostgreSQL cluster $(cluster_version)/main did not come up on $PG_HOST:$PG_PORT" >&2
    exit 1
fi

apt_install_missing postgresql
if ! answers; then
    start_cluster || { echo "error: PostgreSQL did not come up after installation" >&2; exit 1; }
fi
configure_fresh_server
wait_until_answering
ensure_test_database
