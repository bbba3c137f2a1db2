"""Errors raised by every Store engine.

Engines translate driver exceptions (sqlite3, asyncpg, OSError) into these, so callers
never import a driver to handle a failure.
"""

from __future__ import annotations


class StoreError(Exception):
    """Any failure of the storage layer (a bad row, an unknown schema version...)."""


class UserExists(StoreError):
    """add_user() for a (username, domain) that is already provisioned."""

    def __init__(self, username: str, domain: str) -> None:
        super().__init__(f"user {username}@{domain} already exists")
        self.username = username
        self.domain = domain


class StoreUnavailable(StoreError):
    """The database cannot be reached or opened (server down, file not writable, store closed)."""


class DeviceExists(StoreError):
    """add_device() for a device id, auth username or live instance id already in use."""
