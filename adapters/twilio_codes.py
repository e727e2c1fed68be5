"""Twilio's codes and formats, as its documentation gives them: Message statuses, the error
codes that refuse the sender, the ``ValidityPeriod`` bounds, the webhook signature.

Sources: Twilio "Message resource" (https://www.twilio.com/docs/messaging/api/message-resource:
statuses, ``ValidityPeriod``), Twilio error pages https://www.twilio.com/docs/api/errors/<code>,
"Webhooks security" (https://www.twilio.com/docs/usage/webhooks/webhooks-security), and
``docs/protocols.md`` §3.2.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import math
from collections.abc import Iterable, Mapping
from datetime import tzinfo
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from mta.sdk import ApiStatus, seconds_until

#: Twilio Message status → reporter status (docs/protocols.md §3.2 table).
STATUS_MAP: Mapping[str, ApiStatus] = {
    "accepted": ApiStatus.WAITING,
    "scheduled": ApiStatus.WAITING,
    "queued": ApiStatus.WAITING,
    "sending": ApiStatus.WAITING,
    "sent": ApiStatus.WAITING,
    "delivered": ApiStatus.DELIVERED,
    "read": ApiStatus.DELIVERED,
    "undelivered": ApiStatus.FAIL,
    "failed": ApiStatus.FAIL,
    "canceled": ApiStatus.FAIL,
    "partially_delivered": ApiStatus.FAIL,
}


def map_status(status: str) -> ApiStatus:
    """A Twilio message status as the reporter's status; unknown ones stay WAITING."""
    return STATUS_MAP.get(status.strip().lower(), ApiStatus.WAITING)


def signature(auth_token: str, url: str, params: Iterable[tuple[str, str]]) -> str:
    """Twilio's request signature: base64(HMAC-SHA1(auth_token, url + sorted key+value pairs)).

    Pairs are sorted by name, then value (a repeated name keeps all its values, in order).
    """
    data = url + "".join(key + value for key, value in sorted(params))
    digest = hmac.new(auth_token.encode(), data.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode("ascii")


def url_variants(url: str) -> list[str]:
    """``url`` and the same URL with the scheme's default port added or removed."""
    variants = [url]
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return variants
    default = {"https": 443, "http": 80}.get(parts.scheme)
    if default is None or not parts.netloc:
        return variants
    if port is None:
        variants.append(urlunsplit(parts._replace(netloc=f"{parts.netloc}:{default}")))
    elif port == default:
        variants.append(urlunsplit(parts._replace(netloc=parts.netloc.rsplit(":", 1)[0])))
    return variants


#: Most parts a concatenated SMS can have.
MAX_SEGMENTS = 255


def segments(value: Any) -> int:
    """``num_segments`` (Twilio sends it as a string) as an int; 0 when absent or odd (not a
    number, negative, or over 255: concatenated SMS have at most 255 parts, and a huge
    number from a webhook must not reach the stored receipt)."""
    try:
        count = int(value)
    except (TypeError, ValueError):
        return 0
    return count if 0 <= count <= MAX_SEGMENTS else 0


#: Twilio error codes (answered with HTTP 400 to a Message create) that refuse the ``From``:
#: the message is marked ``reason`` = sender, and the worker sends it once more with the
#: account's ``fallback_sender``. Each is documented at twilio.com/docs/api/errors/<code>:
SENDER_CODES: Mapping[int, str] = {
    21212: "Invalid 'From' Phone Number",
    21601: "Phone number is not a valid SMS-capable inbound phone number",
    21606: "The 'From' phone number provided is not a valid message-capable Twilio phone "
    "number for this destination/account",
    21616: "The 'From' number matches multiple numbers for your account",
    21657: "The Sender ID is invalid",
    21659: "'From' is not a Twilio phone number or Short Code country mismatch",
    21660: "Mismatch between the 'From' number and the account",
    21661: "'From' number is not SMS-capable",
}

#: ``ValidityPeriod`` bounds in seconds: "integers between 1 and 36,000 seconds (10 hours
#: max)" (Message resource; errors 21624 and 90007 "Invalid validity period value").
VALIDITY_MIN_S, VALIDITY_MAX_S = 1, 36_000


def validity_seconds(expire_time: str, tz: tzinfo) -> int | None:
    """``ValidityPeriod`` for a message expiring at ``expire_time`` (MMP, zone ``tz``): the
    seconds left, rounded up, within [1, 36000]; None without an expireTime."""
    left = seconds_until(expire_time, tz)
    if left is None:
        return None
    return max(VALIDITY_MIN_S, min(VALIDITY_MAX_S, math.ceil(left)))
