"""A message's ``expireTime`` as the submit_sm ``validity_period`` (SMPP 3.4 §7.1.1).

SMPP 3.4 takes an absolute time ``YYMMDDhhmmsstnn+``/``-`` or a relative one
``YYMMDDhhmmss000R`` ("the period ... relative to the SMSC's current time"). We send the
relative form: it needs no agreement on clocks or time zones with the SMSC. The time left
until ``expireTime`` (read in the account's zone, ``AdapterContext.tz``) is written as days,
hours, minutes and seconds (years and months stay 00: their length is ambiguous), rounded up
to the second, at least 1 second (SMPP documents no minimum: a message with less left still
goes, with 1 s) and at most 99 days 23:59:59 (two digits of days). Without an expireTime the
field stays empty and the SMSC's default validity applies.
"""

from __future__ import annotations

import math
import time
from datetime import tzinfo
from typing import Final

from mta.sdk import seconds_until

#: Shortest and longest relative validity we write, in seconds (module docstring).
MIN_S = 1
MAX_S = 99 * 86400 + 23 * 3600 + 59 * 60 + 59


def relative_time(seconds: int) -> str:
    """``seconds`` (clamped to [MIN_S, MAX_S]) as an SMPP relative time ``0000DDhhmmss000R``."""
    seconds = max(MIN_S, min(MAX_S, seconds))
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    return f"0000{days:02d}{hours:02d}{minutes:02d}{secs:02d}000R"


def validity_period(expire_time: str, tz: tzinfo) -> str:
    """The ``validity_period`` of a message expiring at ``expire_time`` (MMP ``yyyyMMddHHmm``
    in ``tz``); ``""`` (the SMSC's default) when it has none."""
    if not expire_time:
        return ""
    key = (expire_time, tz)
    try:
        moment = _MOMENTS[key]
    except KeyError:
        if len(_MOMENTS) >= _CACHED:
            _MOMENTS.clear()
        moment = _MOMENTS[key] = seconds_until(expire_time, tz, 0.0)  # epoch s (or None)
    if moment is None:
        return ""
    seconds = math.ceil(moment - time.time())  # as seconds_until(expire_time, tz)
    text = _TEXTS.get(seconds)
    if text is None:
        if len(_TEXTS) >= _CACHED:
            _TEXTS.clear()
        text = _TEXTS[seconds] = relative_time(seconds)
    return text


# A batch's messages mostly share an expireTime, and a second's worth of them one validity:
# both steps are kept (bounded) instead of parsing and formatting per message.
_CACHED: Final = 4096
_MOMENTS: dict[tuple[str, tzinfo], float | None] = {}
_TEXTS: dict[int, str] = {}
