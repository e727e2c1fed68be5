"""Delivery receipts: parse them (TLVs or ``id:… stat:…`` text), map states, normalise ids, format.

A receipt is a deliver_sm (or data_sm) whose ``esm_class`` message type is 0x04 (SMSC delivery
receipt) or 0x20 (intermediate notification). Its facts come from the ``receipted_message_id``
and ``message_state`` TLVs when present — preferred, the text's ``id:`` may be truncated — and
else from the text of spec Appendix B (``id:… sub:… dlvrd:… submit date:… done date:… stat:…
err:… text:…``), read with a tolerant key:value scanner: any case, fields missing or reordered,
``text:`` absent, 10- or 12-digit dates (docs/protocols.md §1.10).

States map to our ``apiStatus`` as docs/protocols.md §5 recommends: DELIVRD → DELIVERED; UNDELIV,
REJECTD, DELETED → FAIL; EXPIRED → TIMEOUT; ENROUTE, SCHEDLD → WAITING; ACCEPTD and UNKNOWN →
WAITING by default, configurable per partner.

Message ids: SMSCs may give the id in hex in submit_sm_resp and in decimal in the receipt (or
the reverse), and may change case or leading zeros (Jasmin's ``dlr_msg_id_bases``, the main
cause of its lost receipts). :func:`normalise_id` gives one canonical form of an id written in
a known base; :func:`id_twins` lists the other readings to try when the base is unknown.

For the server front (we as SMSC), :func:`format_receipt` builds the receipt text and TLVs,
:func:`receipt_state` maps our states to SMPP ones (§1.13), and :func:`wants_receipt` applies
the client's ``registered_delivery``.
"""

from __future__ import annotations

import enum
import re
import string
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Final

from mta.contract import ApiStatus
from mta.smpp.pdu import EsmClass, RegisteredDelivery, Tag, tlv_cstr, tlv_int, u8

__all__ = [
    "IdBase",
    "MessageState",
    "Receipt",
    "api_status",
    "format_receipt",
    "id_twins",
    "is_receipt",
    "normalise_id",
    "parse_receipt",
    "parse_receipt_date",
    "parse_receipt_text",
    "receipt_state",
    "stat_name",
    "state_from_stat",
    "wants_receipt",
]


class MessageState(enum.IntEnum):
    """``message_state`` (query_sm_resp, TLV 0x0427), docs/protocols.md §1.9."""

    SCHEDULED = 0  # SMPP 5.0
    ENROUTE = 1
    DELIVERED = 2
    EXPIRED = 3
    DELETED = 4
    UNDELIVERABLE = 5
    ACCEPTED = 6
    UNKNOWN = 7
    REJECTED = 8
    SKIPPED = 9  # SMPP 5.0

    @property
    def final(self) -> bool:
        return self not in _NOT_FINAL


_NOT_FINAL: Final = frozenset({MessageState.SCHEDULED, MessageState.ENROUTE, MessageState.UNKNOWN})

_STAT: Final[dict[MessageState, str]] = {
    MessageState.SCHEDULED: "SCHEDLD",
    MessageState.ENROUTE: "ENROUTE",
    MessageState.DELIVERED: "DELIVRD",
    MessageState.EXPIRED: "EXPIRED",
    MessageState.DELETED: "DELETED",
    MessageState.UNDELIVERABLE: "UNDELIV",
    MessageState.ACCEPTED: "ACCEPTD",
    MessageState.UNKNOWN: "UNKNOWN",
    MessageState.REJECTED: "REJECTD",
    MessageState.SKIPPED: "SKIPPED",
}
_FROM_STAT: Final[dict[str, MessageState]] = {
    **{name: state for state, name in _STAT.items()},
    **{state.name: state for state in MessageState},  # DELIVERED, UNDELIVERABLE, ACCEPTED, …
}


def stat_name(state: int) -> str:
    """The 7-letter ``stat:`` of *state* (``DELIVRD`` for 2); ``UNKNOWN`` for other numbers."""
    try:
        return _STAT[MessageState(state)]
    except ValueError:
        return "UNKNOWN"


_API_STATUS: Final[dict[MessageState, ApiStatus]] = {
    MessageState.DELIVERED: ApiStatus.DELIVERED,
    MessageState.EXPIRED: ApiStatus.TIMEOUT,
    MessageState.UNDELIVERABLE: ApiStatus.FAIL,
    MessageState.REJECTED: ApiStatus.FAIL,
    MessageState.DELETED: ApiStatus.FAIL,
    MessageState.SKIPPED: ApiStatus.FAIL,
}
_STATE_OF: Final[dict[int, MessageState]] = {int(m): m for m in MessageState}
_STATE_OF_OCTET: Final[dict[bytes, MessageState]] = {bytes((m,)): m for m in MessageState}
_RECEIPTED_MESSAGE_ID: Final = Tag.RECEIPTED_MESSAGE_ID
_MESSAGE_STATE: Final = Tag.MESSAGE_STATE


def state_from_stat(stat: str) -> MessageState | None:
    """The state of a ``stat:`` value, any case, 7-letter or full name; None if unknown."""
    return _FROM_STAT.get(stat.strip().upper())


def api_status(
    state: MessageState | int | None,
    accepted: ApiStatus = ApiStatus.WAITING,
    unknown: ApiStatus = ApiStatus.WAITING,
) -> ApiStatus:
    """Our ``apiStatus`` for an SMPP state (docs/protocols.md §5). ``accepted`` and ``unknown``
    are what ACCEPTD and UNKNOWN mean for this partner (default WAITING: many aggregators use
    ACCEPTD for "accepted by the operator", and UNKNOWN for a buffered message)."""
    if state is None:
        return ApiStatus.WAITING
    if type(state) is not MessageState:
        try:
            state = MessageState(state)
        except ValueError:
            return unknown
    fixed = _API_STATUS.get(state)
    if fixed is not None:
        return fixed
    if state is MessageState.ACCEPTED:
        return accepted
    if state is MessageState.UNKNOWN:
        return unknown
    return ApiStatus.WAITING


_TYPE_MASK: Final = int(EsmClass.TYPE_MASK)  # plain ints: IntFlag's & runs in Python
_RECEIPT_TYPES: Final = frozenset({int(EsmClass.DELIVERY_RECEIPT), int(EsmClass.INTERMEDIATE)})


def is_receipt(esm_class: int) -> bool:
    """True if a deliver_sm/data_sm with *esm_class* is an SMSC receipt or an intermediate
    notification (message type bits 5..2 = 0001 or 1000), not a mobile-originated message."""
    return esm_class & _TYPE_MASK in _RECEIPT_TYPES


# --- parsing -------------------------------------------------------------------------------

_KEY: Final = re.compile(
    r"(?:^|(?<=\s))(id|sub|dlvrd|submit[ _]?date|done[ _]?date|stat|err|text)\s*:", re.IGNORECASE
)


#: The Appendix B layout exactly (single spaces, no spaces inside values): one match, the same
#: fields as the general parse below gives it.
_STANDARD: Final = re.compile(
    r"id:(\S*) sub:(\S*) dlvrd:(\S*) submit date:(\S*) done date:(\S*) stat:(\S*)"
    r" err:(\S*)(?: text:(.*))?\Z",
    re.IGNORECASE | re.DOTALL,
)
#: The same in lower case only, as SMSCs write it: matched first (case-insensitive matching
#: costs a third more), with the same groups wherever it matches.
_STANDARD_LOWER: Final = re.compile(_STANDARD.pattern, re.DOTALL)
_STANDARD_KEYS: Final = ("id", "sub", "dlvrd", "submitdate", "donedate", "stat", "err", "text")


def parse_receipt_text(text: str) -> dict[str, str]:
    """The fields of a receipt text, keys lower-case without spaces (``id``, ``sub``,
    ``dlvrd``, ``submitdate``, ``donedate``, ``stat``, ``err``, ``text``); each value runs up
    to the next key, and ``text`` runs to the end."""
    standard = _STANDARD.match(text)
    if standard is not None:
        values = standard.groups()
        if values[7] is None:
            return dict(zip(_STANDARD_KEYS[:7], values[:7], strict=True))
        return dict(zip(_STANDARD_KEYS, values, strict=True))
    matches = list(_KEY.finditer(text))
    fields: dict[str, str] = {}
    for i, match in enumerate(matches):
        key = match.group(1).lower().replace(" ", "").replace("_", "")
        if key == "text":
            fields[key] = text[match.end() :]
            break
        end = matches[i + 1].start() if i + 1 < len(matches) else len(text)
        fields.setdefault(key, text[match.end() : end].strip())
    return fields


@dataclass(frozen=True, slots=True)
class Receipt:
    """One delivery receipt. ``message_id`` is the TLV's id when present, else the text's
    (``text_id``); ``state`` is the TLV's state, else the state of ``stat``."""

    message_id: str
    state: MessageState | None
    stat: str = ""
    err: str = ""
    submitted: int | None = None
    delivered: int | None = None
    submit_date: str = ""
    done_date: str = ""
    text: str = ""
    text_id: str = ""
    network_error: bytes | None = None

    @property
    def final(self) -> bool:
        return self.state is not None and self.state.final

    def api_status(
        self, accepted: ApiStatus = ApiStatus.WAITING, unknown: ApiStatus = ApiStatus.WAITING
    ) -> ApiStatus:
        return api_status(self.state, accepted, unknown)


def _int_or_none(value: str | None) -> int | None:
    if value is None:
        return None
    digits = value.strip()
    return int(digits) if digits.isascii() and digits.isdigit() else None


def parse_receipt(
    short_message: bytes | str, tlvs: Mapping[int, bytes] | None = None
) -> Receipt | None:
    """The receipt in a deliver_sm's short_message (or message_payload) and TLVs; None when
    neither a ``receipted_message_id`` TLV nor an ``id:`` field is there."""
    tlvs = tlvs or {}
    if isinstance(short_message, bytes):
        if not short_message:
            short_message = tlvs.get(Tag.MESSAGE_PAYLOAD, b"")
        text = short_message.decode("latin-1")
    else:
        text = short_message
    fields = parse_receipt_text(text) if text else {}
    text_id = fields.get("id", "").strip()
    tlv_id = tlv_cstr(tlvs, Tag.RECEIPTED_MESSAGE_ID)
    message_id = (tlv_id or "").strip() or text_id
    if not message_id:
        return None
    state: MessageState | None = None
    raw_state = tlv_int(tlvs, Tag.MESSAGE_STATE)
    if raw_state is not None:
        state = _STATE_OF.get(raw_state)
    stat = fields.get("stat", "").strip().upper()
    if state is None and stat:
        state = state_from_stat(stat)
    if not stat and state is not None:
        stat = _STAT[state]
    network_error = tlvs.get(Tag.NETWORK_ERROR_CODE)
    err = fields.get("err", "").strip()
    if not err and network_error is not None and len(network_error) == 3:
        err = str(int.from_bytes(network_error[1:], "big"))
    return Receipt(
        message_id=message_id,
        state=state,
        stat=stat,
        err=err,
        submitted=_int_or_none(fields.get("sub")),
        delivered=_int_or_none(fields.get("dlvrd")),
        submit_date=fields.get("submitdate", ""),
        done_date=fields.get("donedate", ""),
        text=fields.get("text", ""),
        text_id=text_id,
        network_error=network_error,
    )


def quick_receipt(
    short_message: bytes, tlvs: Mapping[int, bytes]
) -> tuple[str, MessageState, str, str, str] | None:
    """(message_id, state, stat, err, done_date) of the usual receipt — ``receipted_message_id``
    and ``message_state`` TLVs, the Appendix B text exactly, an ``err:`` value — the same as
    :func:`parse_receipt` gives it, without building a :class:`Receipt`; None for any other
    receipt (then use :func:`parse_receipt`)."""
    raw_id = tlvs.get(_RECEIPTED_MESSAGE_ID)
    raw_state = tlvs.get(_MESSAGE_STATE)
    if not raw_id or not raw_state or not short_message:
        return None
    state = _STATE_OF_OCTET.get(raw_state) or _STATE_OF.get(int.from_bytes(raw_state, "big"))
    text = short_message.decode("latin-1")
    match = _STANDARD_LOWER.match(text) or _STANDARD.match(text)
    if state is None or match is None:
        return None
    done, stat, err = match.group(5, 6, 7)
    if not err:
        return None
    end = raw_id.find(0)
    message_id = (raw_id[:end] if end >= 0 else raw_id).decode("latin-1").strip()
    if not message_id:
        return None
    return message_id, state, stat.upper() or _STAT[state], err, done


def parse_receipt_date(value: str) -> datetime | None:
    """``YYMMDDhhmm`` or ``YYMMDDhhmmss`` as a naive datetime (the spec gives no time zone);
    None when it is neither."""
    value = value.strip()
    if not value.isascii() or not value.isdigit():
        return None
    try:
        if len(value) == 10:
            return datetime.strptime(value, "%y%m%d%H%M")
        if len(value) == 12:
            return datetime.strptime(value, "%y%m%d%H%M%S")
    except ValueError:
        return None
    return None


# --- message ids ---------------------------------------------------------------------------


class IdBase(enum.StrEnum):
    """How an SMSC writes a message id (the account option ``receipt_id_base``)."""

    AUTO = "auto"  # as given; numeric ids compared without case or leading zeros
    HEX = "hex"  # a hexadecimal number
    DEC = "dec"  # a decimal number


_HEX: Final = frozenset(string.hexdigits)
_AUTO: Final = IdBase.AUTO


def _is_hex(value: str) -> bool:
    return bool(value) and _HEX.issuperset(value)


def _is_dec(value: str) -> bool:
    return bool(value) and value.isascii() and value.isdigit()


def normalise_id(message_id: str, base: IdBase | str = IdBase.AUTO) -> str:
    """The canonical form of an SMSC message id written in *base*.

    ``hex``: the decimal value of the hex id (``"1A"``, ``"001a"`` → ``"26"``); ``dec``: the
    decimal value (``"0026"`` → ``"26"``); so an id given in hex by submit_sm_resp and in
    decimal by the receipt has one form when each is normalised with its own base. ``auto``:
    a hex-looking id lower-cased without leading zeros (``"00AB"`` → ``"ab"``), any other id
    as given. An id that is not a number in *base* is returned stripped, unchanged.
    Whitespace and NULs around the id are dropped in every base.
    """
    value = message_id.strip().strip("\0")
    if base is _AUTO or base == "auto":  # the usual base first, without the enum's lookups
        if value and _HEX.issuperset(value):
            return value.lower().lstrip("0") or "0"
        return value
    if type(base) is not IdBase:
        base = IdBase(base)
    if base is IdBase.DEC and _is_dec(value):
        return str(int(value))
    if base is IdBase.HEX and _is_hex(value):
        return str(int(value, 16))
    return value


def id_twins(message_id: str) -> tuple[str, ...]:
    """The other readings of an id whose base is unknown, in ``auto`` form, to try after the
    id itself (docs/protocols.md §1.10): a decimal id's hex rendering and its value read as hex
    in decimal; a hex id's decimal value. ``"26"`` → ``("1a", "38")``; ``"1a"`` → ``("26",)``."""
    value = message_id.strip().strip("\0")
    own = normalise_id(value)
    twins: list[str] = []
    if _is_dec(value):
        twins.append(format(int(value), "x"))
    if _is_hex(value):
        twins.append(str(int(value, 16)))
    return tuple(dict.fromkeys(t for t in twins if t != own))


# --- formatting (server side) --------------------------------------------------------------


def receipt_state(status: ApiStatus | str, rejected: bool = False) -> MessageState:
    """The SMPP state of one of our states (docs/protocols.md §1.13): DELIVERED → DELIVERED;
    FAIL → UNDELIVERABLE (REJECTED when the partner refused it); TIMEOUT → EXPIRED; OK and
    WAITING → ENROUTE."""
    status = ApiStatus(status)
    if status is ApiStatus.DELIVERED:
        return MessageState.DELIVERED
    if status is ApiStatus.FAIL:
        return MessageState.REJECTED if rejected else MessageState.UNDELIVERABLE
    if status is ApiStatus.TIMEOUT:
        return MessageState.EXPIRED
    return MessageState.ENROUTE


def wants_receipt(registered_delivery: int, state: MessageState) -> bool:
    """Whether a client that asked *registered_delivery* gets a receipt for *state*: 0x01
    every final state, 0x02 failures only (not DELIVRD), 0x10 also intermediate ones."""
    if not state.final:
        return bool(registered_delivery & RegisteredDelivery.INTERMEDIATE)
    mode = registered_delivery & RegisteredDelivery.RECEIPT_MASK
    if mode == RegisteredDelivery.RECEIPT:
        return True
    if mode == RegisteredDelivery.RECEIPT_ON_FAILURE:
        return state is not MessageState.DELIVERED
    return False


_PRINTABLE: Final = frozenset(string.ascii_letters + string.digits + " .,;:!?'-+/()#%&*=<>")
_STATE_TLV: Final = {state: u8(state) for state in MessageState}
_DATES: dict[tuple[datetime, object], str] = {}  # (date, its UTC offset) → yyMMddhhmm
_DATES_MAX: Final = 4096


def _receipt_date(when: datetime) -> str:
    """``when`` as ``yyMMddhhmm`` (``%y%m%d%H%M``); one instant at one offset is one wall time,
    so the text is kept per (date, offset)."""
    key = (when, when.utcoffset())
    text = _DATES.get(key)
    if text is None:
        if len(_DATES) >= _DATES_MAX:
            _DATES.clear()
        text = _DATES[key] = (
            f"{when.year % 100:02d}{when.month:02d}{when.day:02d}{when.hour:02d}{when.minute:02d}"
        )
    return text


def format_receipt(
    message_id: str,
    state: MessageState,
    *,
    submit_date: datetime,
    done_date: datetime,
    err: int = 0,
    text: str = "",
    submitted: int = 1,
    delivered: int | None = None,
    network_error: bytes | None = None,
) -> tuple[bytes, dict[int, bytes]]:
    """(short_message, TLVs) of a receipt for a deliver_sm with esm_class 0x04: the Appendix B
    text (``text:`` holds the first 20 characters of the message, reduced to ASCII that reads
    the same in GSM 03.38) and the ``receipted_message_id`` / ``message_state`` TLVs, plus
    ``network_error_code`` when given (3 octets: network type, error code)."""
    if delivered is None:
        delivered = submitted if state is MessageState.DELIVERED else 0
    safe = text[:20]
    if not _PRINTABLE.issuperset(safe):
        safe = "".join(c if c in _PRINTABLE else "?" for c in safe)
    submit_text = _receipt_date(submit_date)
    done_text = _receipt_date(done_date)
    body = (
        f"id:{message_id} sub:{submitted:03d} dlvrd:{delivered:03d} submit date:{submit_text}"
        f" done date:{done_text} stat:{_STAT[state]} err:{err:03d} text:{safe}"
    )
    tlvs: dict[int, bytes] = {
        _RECEIPTED_MESSAGE_ID: message_id.encode("latin-1") + b"\0",  # cstr()
        _MESSAGE_STATE: _STATE_TLV.get(state) or u8(state),
    }
    if network_error is not None:
        if len(network_error) != 3:
            raise ValueError("network_error_code is 3 octets: network type, error code")
        tlvs[Tag.NETWORK_ERROR_CODE] = network_error
    return body.encode("ascii"), tlvs
