"""The kinds of change on the change feed (`Store.publish_change` / `changes_since`).

Every process sharing a store reads the feed and brings what it caches up to date
(sipim/app/changes.py): the CLI changes a running server this way, nodes behind an
external core tell each other about devices, and worker processes hear of it sooner
over their bus.  Each kind is defined here only, with what its key is.
"""

from __future__ import annotations

# A user was added, changed or removed.  Key: "username@domain".
CHANGE_USER = "user"
# A device's credentials were issued again or revoked.  Key: its auth username.
CHANGE_DEVICE = "device"
# An XDM document was written or deleted.  Key: "auid owner filename" (models.xcap_key).
CHANGE_XCAP = "xcap"
# Bindings learnt from an external core's third-party REGISTER changed.  Key: the AOR.
CHANGE_BINDING = "binding"
# The CLI ended one registration (`sipim device revoke` ...).  Key: "aor binding-key".
CHANGE_BINDING_REMOVED = "binding-removed"

CHANGE_KINDS = frozenset({CHANGE_USER, CHANGE_DEVICE, CHANGE_XCAP, CHANGE_BINDING, CHANGE_BINDING_REMOVED})
