"""RFC 3339 timestamps, the syntax of the CPIM DateTime header (RFC 3862 §4.4)."""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone

# RFC 3339 §5.6 date-time.  "T" and "Z" may be lower case (§5.6 NOTE); the
# fraction has any number of digits.  re.ASCII keeps \d to 0-9.
_DATE_TIME = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(?:\.(\d+))?"
    r"(?:([Zz])|([+-])(\d{2}):(\d{2}))",
    re.ASCII,
)


def parse_rfc3339(text: str) -> datetime:
    """Parse an RFC 3339 date-time into an aware ``datetime``.

    Raises ValueError on anything else (no date-only forms, no missing offset,
    no ISO 8601 basic format).  A leap second (":60", §5.7) is folded into :59
    because ``datetime`` cannot represent it; "-00:00" (offset unknown, §4.3)
    is read as UTC.
    """
    match = _DATE_TIME.fullmatch(text)
    if match is None:
        raise ValueError(f"not an RFC 3339 date-time: {text!r}")
    year, month, day, hour, minute, second = (int(match.group(n)) for n in range(1, 7))
    fraction = match.group(7)
    microsecond = int((fraction + "00000")[:6]) if fraction else 0
    if second == 60:
        second = 59
    if match.group(8):
        tz = timezone.utc
    else:
        offset_hours, offset_minutes = int(match.group(10)), int(match.group(11))
        if offset_hours > 23 or offset_minutes > 59:
            raise ValueError(f"bad UTC offset in {text!r}")
        offset = timedelta(hours=offset_hours, minutes=offset_minutes)
        tz = timezone(-offset if match.group(9) == "-" else offset)
    return datetime(year, month, day, hour, minute, second, microsecond, tzinfo=tz)


def format_rfc3339(moment: datetime) -> str:
    """RFC 3339 text for an aware datetime: "Z" for UTC, else its offset;
    fractional seconds only when present."""
    offset = moment.utcoffset()
    if offset is None:
        raise ValueError("DateTime needs a timezone-aware datetime (RFC 3339 §4.3)")
    if offset.microseconds or offset.seconds % 60:
        raise ValueError("RFC 3339 offsets are whole minutes")
    timespec = "microseconds" if moment.microsecond else "seconds"
    text = moment.replace(tzinfo=None).isoformat(timespec=timespec)
    if offset == timedelta(0):
        return text + "Z"
    sign = "-" if offset < timedelta(0) else "+"
    minutes = abs(int(offset.total_seconds())) // 60
    return f"{text}{sign}{minutes // 60:02d}:{minutes % 60:02d}"
