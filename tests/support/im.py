"""Instant-message bodies for tests: CPIM with IMDN requests, and waiting for IMDNs."""

from __future__ import annotations


def cpim_message(sender: str, recipient: str, text: str, requests: str) -> tuple[bytes, str]:
    from datetime import datetime, timezone

    from sipim.cpim import build_cpim
    from sipim.imdn import new_message_id

    imdn_id = new_message_id()
    message = build_cpim(f"<sip:{sender}@example.test>", f"<sip:{recipient}@example.test>",
                         datetime.now(timezone.utc), "text/plain", text.encode(),
                         extra_headers=[("imdn.Message-ID", imdn_id), ("imdn.Disposition-Notification", requests)])
    return message.serialize(), imdn_id


def imdn_of(request):
    from sipim.cpim import parse_cpim
    from sipim.imdn import parse_notification

    return parse_notification(parse_cpim(request.body))


def wait_imdn(agent, imdn_id, timeout=5.0):
    """The next IMDN about message ``imdn_id`` (other messages are skipped)."""
    import time

    deadline = time.monotonic() + timeout
    while True:
        request = agent.wait_request("MESSAGE", timeout=max(0.1, deadline - time.monotonic()))
        if request.headers.get("Content-Type") == "message/cpim":
            try:
                notification = imdn_of(request)
            except ValueError:
                continue
            if notification.message_id == imdn_id:
                return request, notification
