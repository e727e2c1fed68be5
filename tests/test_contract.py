"""Unit tests of the MMP wire contract: numbers, message checks, batch decoding, report encoding."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import orjson
import phonenumbers
import pytest

from mta.contract import (
    ApiStatus,
    BatchError,
    Invalid,
    ReportResult,
    Rules,
    SmsMessage,
    check_message,
    decode_batch,
    encode_report,
    format_time,
    normalise_number,
    parse_time,
)

UTC_RULES = Rules(tz=ZoneInfo("UTC"))
ISTANBUL = ZoneInfo("Europe/Istanbul")

VALID_TR = "905332141354"  # a valid Turkish mobile number
INVALID_PLAN = "9099999999999"  # country code 90, but no such range in Turkey's plan
# Full-width digits: str.isdigit() is true for them, but they are not ASCII digits.
FULLWIDTH_NUMBER = "".join(chr(0xFF10 + int(d)) for d in VALID_TR)
FULLWIDTH_TIME = "".join(chr(0xFF10 + int(d)) for d in "202611221030")


def msg(**fields: Any) -> dict[str, Any]:
    return {"mobileNumber": VALID_TR, "text": "hello", **fields}


# --- normalise_number ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("905332141354", "905332141354"),
        ("+905332141354", "905332141354"),
        ("00905332141354", "905332141354"),
        ("+90 533 214 13 54", "905332141354"),
        ("90-533-214-13-54", "905332141354"),
        ("+90 (533) 214.13.54", "905332141354"),
        (905332141354, "905332141354"),
        ("1234567", "1234567"),  # 7 digits: the shortest E.164 allows
        ("123456789012345", "123456789012345"),  # 15 digits: the longest
    ],
)
def test_normalise_number_accepts_international_forms(value: Any, expected: str) -> None:
    assert normalise_number(value, strict=False) == expected


@pytest.mark.parametrize(
    ("value", "words"),
    [
        ("05332141354", "national"),
        ("0 533 214 13 54", "national"),
        ("123456", "6 digits"),
        ("1234567890123456", "16 digits"),
        ("+90 533 ABC 13 54", "not a number"),
        ("90533214135x", "not a number"),
        (FULLWIDTH_NUMBER, "not a number"),
        ("", "required"),
        (None, "required"),
        (True, "required"),
        (905.5, "required"),
    ],
)
def test_normalise_number_rejects_with_field_name(value: Any, words: str) -> None:
    with pytest.raises(Invalid) as info:
        normalise_number(value, strict=False)
    assert str(info.value).startswith("mobileNumber:")
    assert words in str(info.value)


def test_strict_numbers_follow_the_numbering_plan() -> None:
    # The premise, checked with phonenumbers itself.
    assert phonenumbers.is_valid_number(phonenumbers.parse("+" + VALID_TR, None))
    assert not phonenumbers.is_valid_number(phonenumbers.parse("+" + INVALID_PLAN, None))
    assert normalise_number(VALID_TR, strict=True) == VALID_TR
    assert normalise_number("+90 533 214 13 54", strict=True) == VALID_TR
    assert normalise_number(INVALID_PLAN, strict=False) == INVALID_PLAN
    with pytest.raises(Invalid) as info:
        normalise_number(INVALID_PLAN, strict=True)
    assert str(info.value).startswith("mobileNumber:") and "numbering plan" in str(info.value)
    # An unknown country code cannot even be parsed: still a clear Invalid, never a crash.
    assert normalise_number("999999999", strict=False) == "999999999"
    with pytest.raises(Invalid) as info:
        normalise_number("999999999", strict=True)
    assert str(info.value).startswith("mobileNumber:")


def test_strict_rules_apply_in_check_message() -> None:
    strict = Rules(tz=ZoneInfo("UTC"), strict_numbers=True)
    assert check_message(msg(), strict).message.mobileNumber == VALID_TR
    assert check_message(msg(mobileNumber=INVALID_PLAN), UTC_RULES).message.mobileNumber
    with pytest.raises(Invalid, match=r"^mobileNumber:"):
        check_message(msg(mobileNumber=INVALID_PLAN), strict)


# --- check_message --------------------------------------------------------------------------


def test_check_message_normalises_and_defaults() -> None:
    checked = check_message(
        {"mobileNumber": "+90 533 214 13 54", "text": "hello", "accountId": 12, "senderId": 3},
        UTC_RULES,
    )
    assert checked.message == SmsMessage(
        mobileNumber=VALID_TR, text="hello", accountId=12, senderId=3, smsType="BULK"
    )
    assert checked.start_at is None and checked.expire_at is None
    assert checked.segments == 1


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        ("not an object", "message"),
        (["905332141354", "hi"], "message"),
        ({"text": "no number"}, "mobileNumber"),
        (msg(mobileNumber="12345"), "mobileNumber"),
        (msg(text=""), "text"),
        (msg(text=None), "text"),
        (msg(text=42), "text"),
        (msg(text="x" * 1601), "text"),
        (msg(sender=7), "sender"),
        (msg(sender="ABCDEFGHIJKL"), "sender"),  # 12 characters, alphanumeric limit 11
        (msg(sender="12345678901234567"), "sender"),  # 17 digits, numeric limit 16
        (msg(startTime="2026-11-22"), "startTime"),
        (msg(startTime="202613011030"), "startTime"),  # month 13
        (msg(startTime=202611221030), "startTime"),
        (msg(expireTime="20261122103"), "expireTime"),
        (msg(expireTime=FULLWIDTH_TIME), "expireTime"),
        (msg(brandCode=1), "brandCode"),
        (msg(recipientType=["x"]), "recipientType"),
        (msg(messageType={"a": 1}), "messageType"),
        (msg(smsType="PROMO"), "smsType"),
        (msg(smsType="PROMO|12-1-2-3"), "smsType"),
        (msg(smsType=3), "smsType"),
        (msg(priority=1), "priority"),
        (msg(priority=["yes"]), "priority"),
        (msg(accountId=-1), "accountId"),
        (msg(accountId="-1"), "accountId"),
        (msg(accountId="12a"), "accountId"),
        (msg(accountId=1.5), "accountId"),
        (msg(accountId=True), "accountId"),
        (msg(senderId=-3), "senderId"),
        (msg(senderId="three"), "senderId"),
    ],
)
def test_every_error_starts_with_its_field_name(raw: Any, field: str) -> None:
    with pytest.raises(Invalid) as info:
        check_message(raw, UTC_RULES)
    assert str(info.value).startswith(f"{field}:"), str(info.value)


@pytest.mark.parametrize("digits", ["²", "١٢", "٣"])
def test_unicode_digit_account_id_is_invalid_or_accepted_never_a_crash(digits: str) -> None:
    """``str.isdigit()`` is true for '²' but ``int('²')`` raises: it must be an Invalid.

    Any exception other than Invalid escapes the worker's per-message check and sends the
    whole batch to the dead queue instead of failing this one message.
    """
    for field in ("accountId", "senderId"):
        try:
            checked = check_message(msg(**{field: digits}), UTC_RULES)
        except Invalid as exc:
            assert str(exc).startswith(f"{field}:")
        else:
            assert isinstance(getattr(checked.message, field), int)


def test_times_are_read_in_the_configured_zone() -> None:
    rules = Rules(tz=ISTANBUL)
    checked = check_message(msg(startTime="202611221030", expireTime="202611221230"), rules)
    # Istanbul is UTC+3 all year: 10:30 there is 07:30 UTC.
    assert checked.start_at == datetime(2026, 11, 22, 7, 30, tzinfo=UTC).timestamp()
    assert checked.expire_at == datetime(2026, 11, 22, 9, 30, tzinfo=UTC).timestamp()
    assert checked.message.startTime == "202611221030"  # the wire value is kept as it came
    in_utc = check_message(msg(startTime="202611221030"), UTC_RULES)
    assert in_utc.start_at is not None and checked.start_at is not None
    assert in_utc.start_at - checked.start_at == 3 * 3600


@pytest.mark.parametrize(
    "sms_type",
    ["BULK|12-9001-77-1", "OTP|a-b-c-d", "TCKN", "TAXNO|x|y", "otp|lower-kept"],
)
def test_sms_type_with_correlation_is_kept_unchanged(sms_type: str) -> None:
    assert check_message(msg(smsType=sms_type), UTC_RULES).message.smsType == sms_type


def test_sms_type_defaults_to_bulk() -> None:
    assert check_message(msg(), UTC_RULES).message.smsType == "BULK"
    assert check_message(msg(smsType=""), UTC_RULES).message.smsType == "BULK"
    assert check_message(msg(smsType=None), UTC_RULES).message.smsType == "BULK"


@pytest.mark.parametrize(
    ("given", "expected"), [(True, "yes"), (False, "no"), ("yes", "yes"), (None, "")]
)
def test_priority_booleans_become_yes_no(given: Any, expected: str) -> None:
    assert check_message(msg(priority=given), UTC_RULES).message.priority == expected


@pytest.mark.parametrize(
    ("given", "expected"), [("12", 12), (12, 12), ("", 0), (None, 0), (0, 0), ("007", 7)]
)
def test_account_id_numeric_strings_are_accepted(given: Any, expected: int) -> None:
    checked = check_message(msg(accountId=given, senderId=given), UTC_RULES)
    assert checked.message.accountId == expected and checked.message.senderId == expected


def test_negative_account_id_is_rejected_with_detail() -> None:
    with pytest.raises(Invalid) as info:
        check_message(msg(accountId=-5), UTC_RULES)
    assert str(info.value).startswith("accountId:") and "negative" in str(info.value)


@pytest.mark.parametrize(
    ("text", "segments"),
    [
        ("a", 1),
        ("a" * 160, 1),
        ("a" * 161, 2),
        ("a" * 306, 2),
        ("a" * 307, 3),
        ("€" * 80, 1),  # extension characters cost two septets: 160
        ("€" * 81, 2),
        ("ş" * 70, 1),  # not GSM-7: UCS-2, 70 per single SMS
        ("ş" * 71, 2),
        ("ş" * 134, 2),  # 67 per part
        ("ş" * 135, 3),
        ("Siparişiniz 🚚", 1),
    ],
)
def test_segments_are_counted_for_gsm_and_ucs2(text: str, segments: int) -> None:
    assert check_message(msg(text=text), UTC_RULES).segments == segments


def test_text_limit_follows_rules() -> None:
    rules = Rules(tz=ZoneInfo("UTC"), max_text=10)
    assert check_message(msg(text="x" * 10), rules).message.text == "x" * 10
    with pytest.raises(Invalid, match=r"^text: 11 characters, the limit is 10"):
        check_message(msg(text="x" * 11), rules)


# --- decode_batch ----------------------------------------------------------------------------


def test_decode_batch_returns_the_raw_messages() -> None:
    body = orjson.dumps({"messages": [msg(), "junk"], "extra": 1})
    assert decode_batch(body) == [msg(), "junk"]
    assert decode_batch(b'{"messages": []}') == []


@pytest.mark.parametrize(
    ("body", "words"),
    [
        (b"this is not json", "not JSON"),
        (b"", "not JSON"),
        (b'{"messages": [', "not JSON"),
        (b"[1, 2, 3]", "JSON list"),
        (b'"messages"', "JSON str"),
        (b"null", "JSON NoneType"),
        (b'{"no": "messages"}', "no 'messages' list"),
        (b'{"messages": {"0": {}}}', "no 'messages' list"),
        (b'{"messages": "x"}', "no 'messages' list"),
    ],
)
def test_decode_batch_rejects_non_batches(body: bytes, words: str) -> None:
    with pytest.raises(BatchError) as info:
        decode_batch(body)
    assert words in str(info.value)


# --- encode_report ---------------------------------------------------------------------------

RESULT_KEYS = {
    "messageId",
    "mobileNumber",
    "accountId",
    "senderId",
    "smsType",
    "apiStatus",
    "partnerMessageId",
    "partnerStatus",
    "partnerDetail",
    "sendAt",
    "smsOperator",
    "smsMessageCount",
}


def test_encode_report_uses_exactly_the_wire_field_names() -> None:
    results = [
        ReportResult(
            messageId="b-1:0",
            mobileNumber=VALID_TR,
            accountId=12,
            senderId=3,
            smsType="BULK|12-9001-77-1",
            apiStatus=ApiStatus.DELIVERED,
            partnerMessageId="p-1",
            partnerStatus="DELIVRD",
            sendAt="202611221031",
            smsMessageCount=2,
        ),
        ReportResult(
            messageId="b-1:1",
            mobileNumber="447700900123",
            accountId=0,
            senderId=0,
            smsType="OTP",
            apiStatus=ApiStatus.FAIL,
            partnerDetail="text: required",
        ),
    ]
    doc = orjson.loads(encode_report("pkt-7", results))
    assert set(doc) == {"partnerPacketId", "results"}
    assert doc["partnerPacketId"] == "pkt-7"
    assert len(doc["results"]) == 2
    for result in doc["results"]:
        assert set(result) == RESULT_KEYS
    first, second = doc["results"]
    assert first == {
        "messageId": "b-1:0",
        "mobileNumber": VALID_TR,
        "accountId": 12,
        "senderId": 3,
        "smsType": "BULK|12-9001-77-1",
        "apiStatus": "DELIVERED",
        "partnerMessageId": "p-1",
        "partnerStatus": "DELIVRD",
        "partnerDetail": "",
        "sendAt": "202611221031",
        "smsOperator": "",
        "smsMessageCount": 2,
    }
    assert second["apiStatus"] == "FAIL" and second["partnerDetail"] == "text: required"
    assert isinstance(second["accountId"], int) and isinstance(second["smsMessageCount"], int)


def test_encode_report_of_no_results() -> None:
    assert orjson.loads(encode_report("", [])) == {"partnerPacketId": "", "results": []}


def test_api_status_finality() -> None:
    assert {s for s in ApiStatus if s.final} == {
        ApiStatus.DELIVERED,
        ApiStatus.FAIL,
        ApiStatus.TIMEOUT,
    }


# --- times -----------------------------------------------------------------------------------


@pytest.mark.parametrize("zone", ["UTC", "Europe/Istanbul", "America/New_York", "Asia/Kolkata"])
@pytest.mark.parametrize("value", ["202611221030", "202601010000", "202412312359", "202607150945"])
def test_format_time_and_parse_time_round_trip(zone: str, value: str) -> None:
    tz = ZoneInfo(zone)
    assert format_time(parse_time(value, tz), tz) == value


def test_parse_time_gives_the_epoch_of_the_zone() -> None:
    epoch = datetime(2026, 11, 22, 7, 30, tzinfo=UTC).timestamp()
    assert parse_time("202611221030", ISTANBUL) == epoch
    assert parse_time("202611220730", ZoneInfo("UTC")) == epoch
    assert format_time(epoch, ISTANBUL) == "202611221030"
    assert format_time(epoch, ZoneInfo("UTC")) == "202611220730"
    # Minutes only: seconds are dropped on the way out.
    assert format_time(epoch + 59, ISTANBUL) == "202611221030"


@pytest.mark.parametrize(
    "value", ["2026112210", "2026112210300", "20261122103a", "202613011030", "202611321030", ""]
)
def test_parse_time_rejects_malformed_values(value: str) -> None:
    with pytest.raises(ValueError):
        parse_time(value, ZoneInfo("UTC"))
