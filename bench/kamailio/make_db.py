#!/usr/bin/env python3
"""Write the SQLite database Kamailio's auth_db reads: users user0..user{N-1}.

Tables come from Kamailio's own schema files (Debian: /usr/share/kamailio/db_sqlite/),
so the `version` rows match what the modules check at start-up. Passwords follow the
benchmark convention pw0..pw{N-1}; only HA1 = MD5(user:realm:password) is stored
(RFC 2617 §3.2.2.2 / RFC 7616 §3.4.2), and Kamailio is told not to recompute it.

Usage: make_db.py DB_PATH --users N [--realm bench.example]
"""

from __future__ import annotations

import argparse
import hashlib
import sqlite3
from pathlib import Path

SCHEMA_DIR = Path("/usr/share/kamailio/db_sqlite")
SCHEMA_FILES = ("standard-create.sql", "auth_db-create.sql")


def ha1_md5(username: str, realm: str, password: str) -> str:
    return hashlib.md5(f"{username}:{realm}:{password}".encode()).hexdigest()


def write_database(db_path: Path, user_count: int, realm: str) -> None:
    if db_path.exists():
        db_path.unlink()
    connection = sqlite3.connect(db_path)
    try:
        for schema_file in SCHEMA_FILES:
            connection.executescript((SCHEMA_DIR / schema_file).read_text())
        connection.executemany(
            "INSERT INTO subscriber (username, domain, password, ha1, ha1b) VALUES (?, ?, '', ?, '')",
            (
                (f"user{index}", realm, ha1_md5(f"user{index}", realm, f"pw{index}"))
                for index in range(user_count)
            ),
        )
        connection.commit()
    finally:
        connection.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("db_path", type=Path)
    parser.add_argument("--users", type=int, required=True)
    parser.add_argument("--realm", default="bench.example")
    args = parser.parse_args()
    write_database(args.db_path, args.users, args.realm)


if __name__ == "__main__":
    main()
