"""Instant Message Disposition Notification (RFC 5438), sans-IO.

* request side (§6, §7.1): ``requested_notifications``, ``message_id``,
  ``original_to``, ``imdn_record_routes``, ``imdn_routes``, ``is_notification``;
* the message/imdn+xml document (§11): ``IMDNNotification``,
  ``parse_imdn_xml`` (hardened: no DOCTYPE, no entities), ``build_imdn_xml``;
* server side (§7.2, §8, §12.2): ``build_notification_cpim``,
  ``intermediary_may_notify``, ``notification_destination``,
  ``next_notification_hop``, ``parse_notification``.
"""

from .document import (
    DEFAULT_MAX_IMDN_SIZE,
    DELIVERY,
    DISPLAY,
    IMDN_MEDIA_TYPE,
    IMDN_XML_NAMESPACE,
    PROCESSING,
    STATUSES,
    IMDNNotification,
    build_imdn_xml,
    parse_imdn_xml,
)
from .errors import IMDNError
from .headers import (
    DISPLAY_REQUEST,
    KNOWN_REQUESTS,
    NEGATIVE_DELIVERY,
    POSITIVE_DELIVERY,
    PROCESSING_REQUEST,
    imdn_record_routes,
    imdn_routes,
    is_notification,
    message_id,
    new_message_id,
    original_to,
    requested_notifications,
)
from .notification import (
    NOTIFICATION_DISPOSITION,
    build_notification_cpim,
    intermediary_may_notify,
    next_notification_hop,
    notification_destination,
    parse_notification,
)
from ..cpim.message import IMDN_NAMESPACE

__all__ = [
    "DEFAULT_MAX_IMDN_SIZE",
    "DELIVERY",
    "DISPLAY",
    "DISPLAY_REQUEST",
    "IMDN_MEDIA_TYPE",
    "IMDN_NAMESPACE",
    "IMDN_XML_NAMESPACE",
    "KNOWN_REQUESTS",
    "NEGATIVE_DELIVERY",
    "NOTIFICATION_DISPOSITION",
    "POSITIVE_DELIVERY",
    "PROCESSING",
    "PROCESSING_REQUEST",
    "STATUSES",
    "IMDNError",
    "IMDNNotification",
    "build_imdn_xml",
    "build_notification_cpim",
    "imdn_record_routes",
    "imdn_routes",
    "intermediary_may_notify",
    "is_notification",
    "message_id",
    "new_message_id",
    "next_notification_hop",
    "notification_destination",
    "original_to",
    "parse_imdn_xml",
    "parse_notification",
    "requested_notifications",
]
