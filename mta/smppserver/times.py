"""SMPP times (docs/protocols.md §1.7) for the server front: parse absolute and relative times,
write MMP ``yyyyMMddHHmm`` times and query_sm's ``final_date``."""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime, timedelta, timezone, tzinfo

__all__ = ["TimeError", "final_date", "parse_smpp_time", "to_mmp_time"]


class TimeError(ValueError):
    """An SMPP time that is not ``YYMMDDhhmmsstnn[+-R]``."""


def _add_months(moment: datetime, months: int) -> datetime:
    if not months:
        return moment
    total = moment.month - 1 + months
    year, month = moment.year + total // 12, total % 12 + 1
    for day in (moment.day, 30, 29, 28):
        with contextlib.suppress(ValueError):
            return moment.replace(year=year, month=month, day=day)
    raise TimeError(f"cannot add {months} months to {moment}")  # pragma: no cover


def parse_smpp_time(value: str, now: datetime) -> datetime | None:
    """The moment an SMPP time stands for (docs/protocols.md §1.7): ``''`` → None; absolute
    ``YYMMDDhhmmsstnn+``/``-`` (local time ``nn`` quarter hours ahead of/behind UTC, years
    20YY); relative ``YYMMDDhhmmss000R`` added to *now* (an aware datetime)."""
    if not value:
        return None
    if len(value) != 16 or not value[:15].isascii() or not value[:15].isdigit():
        raise TimeError(f"{value!r}: expected 16 characters YYMMDDhhmmsstnn followed by +, - or R")
    yy, mo, dd, hh, mi, ss = (int(value[i : i + 2]) for i in range(0, 12, 2))
    tenths, quarters, sign = int(value[12]), int(value[13:15]), value[15]
    if sign == "R":
        moment = _add_months(now, yy * 12 + mo)
        return moment + timedelta(days=dd, hours=hh, minutes=mi, seconds=ss)
    if sign not in "+-":
        raise TimeError(f"{value!r}: the last character must be +, - or R")
    if quarters > 48:
        raise TimeError(f"{value!r}: offset {quarters} quarter hours is over 48")
    offset = timedelta(minutes=15 * quarters) * (1 if sign == "+" else -1)
    try:
        return datetime(2000 + yy, mo, dd, hh, mi, ss, tenths * 100_000, tzinfo=timezone(offset))
    except ValueError as exc:
        raise TimeError(f"{value!r}: {exc}") from None


def to_mmp_time(moment: datetime, tz: tzinfo) -> str:
    """``yyyyMMddHHmm`` in *tz*, rounded up to the next minute when seconds remain."""
    local = moment.astimezone(tz)
    if local.second or local.microsecond:
        local = local.replace(second=0, microsecond=0) + timedelta(minutes=1)
    return local.strftime("%Y%m%d%H%M")


def final_date(ms: int) -> str:
    """query_sm_resp ``final_date``: absolute SMPP time in UTC (``YYMMDDhhmmss000+``)."""
    if not ms:
        return ""
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%y%m%d%H%M%S") + "000+"
