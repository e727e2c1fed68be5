"""The MMP wire contract: send batches in, per-message results and reports out, and their checks.

Field names are exactly those of the MMP SMS interface, so the dataclasses below are encoded by
orjson as they are (no per-message renaming). Each message of a batch is validated on its own:
an invalid one becomes a FAIL result whose ``partnerDetail`` names the field and the problem,
and the rest of its batch goes on. Only a body that is not a batch at all is rejected whole
(:class:`BatchError`), and the worker sends it to ``<prefix>.dead`` with the reason.
"""

from __future__ import annotations

import enum
import functools
import time
from dataclasses import dataclass, field
from datetime import datetime, tzinfo
from typing import Any

import orjson

from mta import text as smstext


class ApiStatus(enum.StrEnum):
    """``apiStatus`` values: OK/FAIL from Send; DELIVERED/FAIL/TIMEOUT/WAITING from Report."""

    OK = "OK"
    FAIL = "FAIL"
    DELIVERED = "DELIVERED"
    TIMEOUT = "TIMEOUT"
    WAITING = "WAITING"

    @property
    def final(self) -> bool:
        return self in _FINAL


_FINAL = frozenset({ApiStatus.FAIL, ApiStatus.DELIVERED, ApiStatus.TIMEOUT})


class SmsType(enum.StrEnum):
    """The kinds of ``smsType``; the field may carry ``|correlation`` after the kind."""

    BULK = "BULK"
    OTP = "OTP"
    TCKN = "TCKN"
    TAXNO = "TAXNO"


@dataclass(slots=True)
class SmsMessage:
    """One message of a send batch, validated and normalised (number digits only)."""

    mobileNumber: str
    text: str
    sender: str = ""
    startTime: str = ""
    expireTime: str = ""
    priority: str = ""
    smsType: str = "BULK"
    brandCode: str = ""
    recipientType: str = ""
    messageType: str = ""
    accountId: int = 0
    senderId: int = 0


@dataclass(slots=True)
class SmsSendRequest:
    """What an adapter's Send receives: ``results[i]`` of its answer belongs to ``messages[i]``."""

    messages: list[SmsMessage]


@dataclass(slots=True)
class SmsReportRequest:
    """What an adapter's Report receives: the partner message ids to report on."""

    partnerPacketId: str
    messages: list[str]


@dataclass(slots=True)
class SmsResult:
    """One message's outcome as an adapter gives it (the MMP result shape).

    ``reason`` is not on the wire: an adapter sets it to :data:`REASON_SENDER` on a FAIL that
    the partner caused by rejecting the sender, so the worker can retry with the account's
    ``fallback_sender``, or to :data:`REASON_RETRY` on a FAIL for a message that was never
    accepted and may be sent again later.
    """

    partnerMessageId: str = ""
    partnerStatus: str = ""
    partnerDetail: str = ""
    apiStatus: ApiStatus = ApiStatus.FAIL
    sendAt: str = ""
    smsOperator: str = ""
    smsMessageCount: int = 0
    reason: str = ""


#: ``SmsResult.reason`` of a FAIL caused by the partner rejecting the sender (originator).
REASON_SENDER = "sender"
#: ``SmsResult.reason`` of a FAIL for a message the partner never accepted and that may be
#: sent again (e.g. unsent inside an SMPP batch whose other messages went): the worker sends
#: it through the delayed-retry queue instead of publishing the FAIL.
REASON_RETRY = "retry"


@dataclass(slots=True)
class SmsResponse:
    """An adapter's answer to Send or Report."""

    partnerPacketId: str = ""
    results: list[SmsResult] = field(default_factory=list)


@dataclass(slots=True)
class ReportResult:
    """A result on the report exchange: the MMP result plus the upstream's correlation fields."""

    messageId: str
    mobileNumber: str
    accountId: int
    senderId: int
    smsType: str
    apiStatus: ApiStatus
    partnerMessageId: str = ""
    partnerStatus: str = ""
    partnerDetail: str = ""
    sendAt: str = ""
    smsOperator: str = ""
    smsMessageCount: int = 0


def pack_result(result: SmsResult) -> bytes:
    """A partner result as stored (pushed receipts); :func:`unpack_result` reads it back."""
    return orjson.dumps(result)


def unpack_result(raw: bytes) -> SmsResult:
    doc = orjson.loads(raw)
    doc["apiStatus"] = ApiStatus(doc["apiStatus"])
    return SmsResult(**doc)


#: A result's partnerDetail is cut to this many characters (a partner may answer with a whole
#: page), so report bodies stay bounded.
MAX_DETAIL = 1000


def with_note(detail: str, note: str) -> str:
    """A result's partnerDetail with what the MTA says of the Send first (the fallback sender
    it went with, the failover account), then the partner's own detail."""
    if not note:
        return detail
    return f"{note}; {detail}" if detail else note


def encode_report(partner_packet_id: str, results: list[ReportResult]) -> bytes:
    """Encode one report-exchange body (all results of one accountId and one apiStatus)."""
    return orjson.dumps({"partnerPacketId": partner_packet_id, "results": results})


class BatchError(ValueError):
    """The body is not a send batch at all; the whole AMQP message goes to ``<prefix>.dead``."""


def decode_batch(body: bytes, max_bytes: int = 0, max_messages: int = 0) -> list[Any]:
    """Decode a send batch body into its raw message list, or raise :class:`BatchError`.

    A body over ``max_bytes`` or a batch over ``max_messages`` (0 = no limit) is refused whole:
    one clear reason instead of thousands of results. A lone surrogate escape (``"\\ud800"``)
    does not refuse the batch: such a body is decoded by the standard library instead, and
    the message holding it FAILs alone (:func:`check_message`).
    """
    if max_bytes and len(body) > max_bytes:
        raise BatchError(
            f"body is {len(body)} bytes, over the limit of {max_bytes} (MTA_MAX_BATCH_BYTES); "
            "split the batch"
        )
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        doc = _decode_lenient(body, exc)
    if not isinstance(doc, dict):
        raise BatchError(f"body is JSON {type(doc).__name__}, expected an object with 'messages'")
    messages = doc.get("messages")
    if not isinstance(messages, list):
        raise BatchError("body has no 'messages' list")
    if max_messages and len(messages) > max_messages:
        raise BatchError(
            f"batch has {len(messages)} messages, over the limit of {max_messages} "
            "(MTA_MAX_BATCH); split the batch"
        )
    return messages


def _decode_lenient(body: bytes, error: orjson.JSONDecodeError) -> Any:
    """orjson refuses lone surrogate escapes; the standard library takes them, and the
    messages that hold one are refused one by one (:func:`has_surrogate`)."""
    import json

    try:
        return json.loads(body)
    except (ValueError, RecursionError):
        raise BatchError(f"body is not JSON: {error}") from None


def has_surrogate(value: Any) -> bool:
    """Whether a decoded JSON value holds a lone surrogate anywhere (not encodable as UTF-8)."""
    try:
        orjson.dumps(value)
    except orjson.JSONEncodeError:
        return True
    return False


class Invalid(ValueError):
    """One message is invalid; ``str(exc)`` is the ``partnerDetail`` (field and problem)."""


@dataclass(frozen=True, slots=True)
class Rules:
    """Contract settings: the zone of MMP times, number checks, and size limits."""

    tz: tzinfo
    strict_numbers: bool = False
    max_batch: int = 1000
    max_text: int = 1600


#: ``accountId`` and ``senderId`` are at most this (a signed 64-bit integer).
MAX_ID = (1 << 63) - 1
#: The longest ``smsType`` (kind plus the upstream's ``|correlation``).
MAX_SMS_TYPE = 128
#: The longest ``brandCode``, ``recipientType``, ``messageType`` and ``priority``.
MAX_FIELD = 64
#: Characters of an alphanumeric sender: letters, digits, space and ``. - _ & +``.
SENDER_CHARS = frozenset(
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789 .-_&+"
)
_FIELD_LIMITS = {"brandCode": MAX_FIELD, "recipientType": MAX_FIELD, "messageType": MAX_FIELD}


_STR_FIELDS = ("sender", "startTime", "expireTime", "brandCode", "recipientType", "messageType")
_NUMBER_JUNK = str.maketrans("", "", " -().")
_SMS_TYPES = frozenset(t.value for t in SmsType)
_BULK = SmsType.BULK.value


def _as_str(raw: dict[str, Any], name: str) -> str:
    value = raw.get(name)
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    raise Invalid(f"{name}: expected a string, got {type(value).__name__}")


def _as_int(raw: dict[str, Any], name: str) -> int:
    value = raw.get(name)
    if value is None or value == "":
        return 0
    if isinstance(value, bool):
        raise Invalid(f"{name}: expected an integer, got a boolean")
    if isinstance(value, int):
        if value < 0:
            raise Invalid(f"{name}: must not be negative, got {value}")
    elif isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 19:
        value = int(value)
    else:
        raise Invalid(f"{name}: expected a non-negative integer, got {_short(value)}")
    if value > MAX_ID:
        raise Invalid(f"{name}: {_short(value)} is over the largest id, {MAX_ID}")
    return value


def _short(value: Any, limit: int = 40) -> str:
    """``repr`` of an upstream value for a detail, cut to ``limit`` characters."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def normalise_number(value: Any, strict: bool) -> str:
    """International number as digits only (``+``, spaces, dashes, dots, brackets removed)."""
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str) or not value:
        raise Invalid("mobileNumber: required, a string of digits in international format")
    if len(value) > 32:
        raise Invalid(f"mobileNumber: {_short(value)} is longer than 32 characters")
    digits = value.translate(_NUMBER_JUNK)
    if digits.startswith("+"):
        digits = digits[1:]
    elif digits.startswith("00"):
        digits = digits[2:]
    if not digits.isdigit() or not digits.isascii():
        raise Invalid(
            f"mobileNumber: {value!r} is not a number (digits only, international format)"
        )
    if digits[0] == "0":
        raise Invalid(
            f"mobileNumber: {value!r} is national, not international (country code first)"
        )
    if not 7 <= len(digits) <= 15:
        raise Invalid(f"mobileNumber: {value!r} has {len(digits)} digits, E.164 allows 7 to 15")
    if strict:
        _check_numbering_plan(value, digits)
    return digits


def _check_numbering_plan(value: str, digits: str) -> None:
    try:  # imported lazily: its metadata costs memory and start-up time
        import phonenumbers
    except ImportError as exc:  # an optional extra; Settings refuses strict mode without it
        raise RuntimeError(
            "strict numbers need the phonenumbers package: install sms-mta[strict-numbers]"
        ) from exc

    try:
        parsed = phonenumbers.parse("+" + digits, None)
    except phonenumbers.NumberParseException as exc:
        raise Invalid(f"mobileNumber: {value!r} cannot be parsed: {exc}") from None
    if not phonenumbers.is_valid_number(parsed):
        raise Invalid(f"mobileNumber: {value!r} is not valid in its country's numbering plan")


def _check_sender(sender: str) -> None:
    if not sender:
        return
    if sender.isascii() and sender.isdigit():
        if len(sender) > 16:
            raise Invalid(f"sender: numeric sender {_short(sender)} is longer than 16 digits")
    elif len(sender) > 11:
        raise Invalid(
            f"sender: alphanumeric sender {_short(sender)} is longer than 11 characters"
        )
    elif not SENDER_CHARS.issuperset(sender):
        raise Invalid(
            f"sender: {sender!r} may hold only letters, digits, space and . - _ & + "
            "(ASCII)"
        )


@functools.lru_cache(maxsize=4096)
def parse_time(value: str, tz: tzinfo) -> float:
    """``yyyyMMddHHmm`` in ``tz`` → epoch seconds; raises :class:`ValueError` when malformed."""
    if len(value) != 12 or not value.isdigit() or not value.isascii():
        raise ValueError("expected yyyyMMddHHmm (12 digits)")
    moment = datetime(
        int(value[0:4]),
        int(value[4:6]),
        int(value[6:8]),
        int(value[8:10]),
        int(value[10:12]),
        tzinfo=tz,
    )
    return moment.timestamp()


def seconds_until(value: str, tz: tzinfo, now: float | None = None) -> float | None:
    """Seconds from ``now`` (epoch seconds; default the current time) until the MMP time
    ``value`` (``yyyyMMddHHmm`` in ``tz``), negative once it passed; None when ``value`` is
    empty or malformed. Adapters turn a message's ``expireTime`` into the partner's validity."""
    if not value:
        return None
    try:
        moment = parse_time(value, tz)
    except ValueError:
        return None
    return moment - (time.time() if now is None else now)


def format_time(epoch_s: float, tz: tzinfo) -> str:
    """Epoch seconds → ``yyyyMMddHHmm`` in ``tz`` (the MMP ``sendAt`` form)."""
    return datetime.fromtimestamp(epoch_s, tz).strftime("%Y%m%d%H%M")


def _time(raw: dict[str, Any], name: str, tz: tzinfo) -> tuple[str, float | None]:
    value = _as_str(raw, name)
    if not value:
        return "", None
    try:
        return value, parse_time(value, tz)
    except ValueError as exc:
        raise Invalid(f"{name}: {value!r} is not a time: {exc}") from None


@dataclass(slots=True)
class ValidMessage:
    """A valid message with what the worker derives from it once."""

    message: SmsMessage
    start_at: float | None
    expire_at: float | None
    segments: int


def check_message(raw: Any, rules: Rules) -> ValidMessage:
    """Validate one raw message of a batch; raises :class:`Invalid` naming field and problem.

    Written for the hot path (every message goes through it): the common shapes — a digits-only
    number, absent optional fields — are checked inline and the general helpers run only for
    the rest.
    """
    if type(raw) is not dict:
        raise Invalid(f"message: expected an object, got {type(raw).__name__}")
    get = raw.get
    number = get("mobileNumber")
    if not (
        type(number) is str
        and 7 <= len(number) <= 15
        and number.isdigit()
        and number.isascii()
        and number[0] != "0"
        and not rules.strict_numbers
    ):
        number = normalise_number(number, rules.strict_numbers)
    body = get("text")
    if type(body) is not str or not body:
        raise Invalid("text: required, a non-empty string")
    if len(body) > rules.max_text:
        raise Invalid(f"text: {len(body)} characters, the limit is {rules.max_text}")
    if not body.isascii() and _has_lone_surrogate(body):
        raise Invalid("text: holds a lone surrogate (not valid Unicode text)")
    sender = brand = recipient = mtype = start_s = expire_s = priority = ""
    start_at = expire_at = None
    sms_type = _BULK
    account_id = sender_id = 0
    if len(raw) > 2:  # anything beyond mobileNumber and text
        strs = [_as_str(raw, name) if name in raw else "" for name in _STR_FIELDS]
        sender, _, _, brand, recipient, mtype = strs
        _check_sender(sender)
        for name, limit in _FIELD_LIMITS.items():
            value = get(name)
            if type(value) is str and len(value) > limit:
                raise Invalid(f"{name}: {len(value)} characters, the limit is {limit}")
        start_s, start_at = _time(raw, "startTime", rules.tz)
        expire_s, expire_at = _time(raw, "expireTime", rules.tz)
        sms_type = _as_str(raw, "smsType") or sms_type
        if len(sms_type) > MAX_SMS_TYPE:
            raise Invalid(f"smsType: {len(sms_type)} characters, the limit is {MAX_SMS_TYPE}")
        if sms_type not in _SMS_TYPES and sms_type.split("|", 1)[0].upper() not in _SMS_TYPES:
            raise Invalid(f"smsType: {sms_type!r}, expected one of BULK, OTP, TCKN, TAXNO")
        given = get("priority")
        if isinstance(given, bool):
            priority = "yes" if given else "no"
        elif isinstance(given, str):
            if len(given) > MAX_FIELD:
                raise Invalid(f"priority: {len(given)} characters, the limit is {MAX_FIELD}")
            priority = given
        elif given is not None:
            raise Invalid(f"priority: expected 'yes' or 'no', got {given!r}")
        account_id = _as_int(raw, "accountId")
        sender_id = _as_int(raw, "senderId")
        if not all(x.isascii() for x in strs) and any(_has_lone_surrogate(x) for x in strs):
            raise Invalid("message: a field holds a lone surrogate (not valid Unicode text)")
        if not sms_type.isascii() and _has_lone_surrogate(sms_type):
            raise Invalid("smsType: holds a lone surrogate (not valid Unicode text)")
    message = SmsMessage(
        number, body, sender, start_s, expire_s, priority, sms_type, brand, recipient, mtype,
        account_id, sender_id,
    )
    return ValidMessage(message, start_at, expire_at, smstext.segment_count(body))


def _has_lone_surrogate(value: str) -> bool:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _clean(value: Any, limit: int) -> str:
    """An upstream string fit to echo in a result: bounded, and valid Unicode."""
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str):
        return ""
    cut: str = value[:limit]
    return cut if cut.isascii() else cut.encode("utf-8", "replace").decode("utf-8")


def _clean_id(value: Any) -> int:
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_ID:
        return value
    return 0


def raw_correlation(raw: Any) -> tuple[str, int, int, str]:
    """Best-effort correlation fields of a message that failed validation, for its FAIL result:
    always encodable and bounded, whatever the upstream sent."""
    if not isinstance(raw, dict):
        return "", 0, 0, ""
    return (
        _clean(raw.get("mobileNumber"), 32),
        _clean_id(raw.get("accountId")),
        _clean_id(raw.get("senderId")),
        _clean(raw.get("smsType"), MAX_SMS_TYPE),
    )
