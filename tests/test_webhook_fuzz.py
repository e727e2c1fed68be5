"""Property-based fuzzing of every adapter's webhook parser (hypothesis).

Whatever arrives — arbitrary bytes, arbitrary JSON, arbitrary forms and queries, and bodies
shaped like each partner's callbacks with arbitrary values inside (signed or tokened when the
adapter checks that, so the fuzz reaches the parser behind the check) — ``webhook()`` either
returns results that ``mta http`` can store (``pack_result`` works, ids and statuses have the
right types) or raises :class:`WebhookError` with a 4xx status: its only documented error.
Anything else would surface as a 400 "adapter bug" (or a 500 when storing) in ``mta http``.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any
from urllib.parse import urlencode

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mta.adapters.clickatell import ClickatellAdapter
from mta.adapters.infobip import InfobipAdapter
from mta.adapters.smpp import SmppAdapter
from mta.adapters.twilio import TwilioAdapter
from mta.adapters.twilio import signature as twilio_signature
from mta.adapters.vonage import VonageAdapter
from mta.adapters.vonage import signature as vonage_signature

from mta.adapter import AdapterContext, WebhookError, WebhookRequest
from mta.contract import ApiStatus, SmsResult, pack_result
from mta.registry import discover

URL = "https://mta.example.com/webhooks/acct"
TOKEN = "fuzz-token-5b0c2d9e"
TWILIO_SID = "AC" + "0" * 32
TWILIO_TOKEN = "twilio-auth-token-fuzz"
VONAGE_KEY = "vk-fuzz"
VONAGE_SIG = "vonage-signature-secret"

FUZZ = settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def _options(cls: type, **values: Any) -> dict[str, Any]:
    options = {o.name: o.default for o in cls.meta.options}  # type: ignore[attr-defined]
    options.update(values)
    return options


def make(name: str, variant: str = "") -> Any:
    """An adapter instance whose webhook is reachable (token, signature secret set)."""
    context = AdapterContext("acct", 1)
    if name == "infobip":
        return InfobipAdapter(_options(InfobipAdapter, api_key="k", webhook_token=TOKEN), context)
    if name == "clickatell":
        return ClickatellAdapter(
            _options(ClickatellAdapter, api_key="k", webhook_token=TOKEN), context
        )
    if name == "twilio":
        options = _options(TwilioAdapter, account_sid=TWILIO_SID, auth_token=TWILIO_TOKEN)
        return TwilioAdapter(options | {"callback_base_url": "https://mta.example.com"}, context)
    if name == "vonage":
        secret = VONAGE_SIG if variant == "signed" else ""
        options = _options(
            VonageAdapter, api_key=VONAGE_KEY, api_secret="s", signature_secret=secret
        )
        return VonageAdapter(options, context)
    if name == "smpp":
        return SmppAdapter({"host": "127.0.0.1", "system_id": "fuzz"}, context)
    raise AssertionError(
        f"no fuzz factory for adapter {name!r}: add one to tests/test_webhook_fuzz.py"
    )


FUZZED = ("infobip", "clickatell", "twilio", "vonage", "smpp")


def test_every_adapter_with_a_webhook_is_fuzzed() -> None:
    with_webhook = {name for name, cls in discover().items() if hasattr(cls, "webhook")}
    assert with_webhook <= set(FUZZED), f"not fuzzed: {sorted(with_webhook - set(FUZZED))}"
    for name in FUZZED:
        make(name)


# --- strategies ---------------------------------------------------------------------------------

texts = st.text(max_size=40)
header_text = st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=255), max_size=40)
scalars = (
    st.none()
    | st.booleans()
    | st.integers()  # beyond 64 bits too: json.dumps writes them, parsers must cope
    | st.floats(allow_nan=False, allow_infinity=False)
    | texts
)
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(texts, inner, max_size=4),
    max_leaves=12,
)
maybe_int = st.integers(min_value=-(2**70), max_value=2**70) | json_values
content_types = (
    st.sampled_from(["application/json", "application/x-www-form-urlencoded", "text/plain", ""])
    | header_text
)


def dumps(doc: Any) -> bytes:
    return json.dumps(doc).encode()


@st.composite
def requests(draw: st.DrawFn, body: st.SearchStrategy[bytes] | None = None) -> WebhookRequest:
    """Anything an HTTP client could send, as mta http hands it to the adapter."""
    raw = draw(
        body
        if body is not None
        else st.one_of(
            st.binary(max_size=300),
            json_values.map(dumps),
            st.dictionaries(texts, texts, max_size=5).map(lambda d: urlencode(d).encode()),
        )
    )
    form = draw(st.dictionaries(texts, texts, max_size=4) | st.just({}))
    query = draw(st.dictionaries(texts, texts, max_size=4) | st.just({}))
    if draw(st.booleans()):
        query = {**query, "token": TOKEN}
    headers = draw(st.dictionaries(header_text.map(str.lower), header_text, max_size=4))
    headers["content-type"] = draw(content_types)
    return WebhookRequest(
        method=draw(st.sampled_from(["POST", "GET", "PUT"]) | header_text),
        url=draw(st.just(URL) | texts),
        headers=headers,
        query=query,
        body=raw,
        form=form,
    )


def tokened(doc: st.SearchStrategy[Any], content_type: str = "application/json") -> Any:
    """Partner-shaped JSON with the right token: the fuzz reaches the parser."""
    return doc.map(
        lambda d: WebhookRequest(
            method="POST",
            url=URL,
            headers={"content-type": content_type},
            query={"token": TOKEN},
            body=dumps(d),
            form={},
        )
    )


infobip_docs = st.fixed_dictionaries(
    {
        "results": st.lists(
            st.fixed_dictionaries(
                {
                    "messageId": texts | json_values,
                    "status": st.fixed_dictionaries(
                        {"groupId": maybe_int, "id": maybe_int},
                        optional={
                            "name": texts | json_values,
                            "groupName": json_values,
                            "description": json_values,
                        },
                    )
                    | json_values,
                },
                optional={
                    "error": st.fixed_dictionaries(
                        {"id": maybe_int},
                        optional={"name": json_values, "description": json_values},
                    )
                    | json_values,
                    "smsCount": maybe_int,
                    "mccMnc": json_values,
                    "mccmnc": json_values,
                },
            )
            | json_values,
            max_size=4,
        )
        | json_values
    }
)

clickatell_item = st.fixed_dictionaries(
    {"messageId": texts | json_values, "statusCode": maybe_int | st.sampled_from(["5", " 23 "])},
    optional={
        "apiMessageId": json_values,
        "status": json_values,
        "statusDescription": json_values,
    },
)
clickatell_docs = clickatell_item | st.lists(clickatell_item | json_values, max_size=4)


#: Integers as partners send them in forms: small, near and beyond 64 bits, or not numbers.
numbers = (
    st.integers()
    | st.integers(min_value=2**62, max_value=2**80).flatmap(lambda n: st.sampled_from([n, -n]))
).map(str) | texts
twilio_fields = st.fixed_dictionaries(
    {
        "MessageSid": texts,
        "MessageStatus": st.sampled_from(
            ["delivered", "undelivered", "failed", "sent", "queued", "partially_delivered"]
        )
        | texts,
        "AccountSid": st.just(TWILIO_SID) | texts,
    },
    optional={
        "SmsSid": texts,
        "SmsStatus": texts,
        "ErrorCode": numbers,
        "ErrorMessage": texts,
        "NumSegments": numbers,
    },
)


@st.composite
def twilio_requests(draw: st.DrawFn) -> WebhookRequest:
    """A correctly signed status callback with arbitrary values (and extra fields)."""
    pairs = list(draw(twilio_fields).items())
    pairs += draw(st.lists(st.tuples(texts, texts), max_size=3))
    body = urlencode(pairs).encode()
    signed_pairs = _parse_pairs(body)
    sig = twilio_signature(TWILIO_TOKEN, URL, signed_pairs)
    return WebhookRequest(
        method="POST",
        url=URL,
        headers={"content-type": "application/x-www-form-urlencoded", "x-twilio-signature": sig},
        query={},
        body=body,
        form=dict(signed_pairs),
    )


def _parse_pairs(body: bytes) -> list[tuple[str, str]]:
    from urllib.parse import parse_qsl

    return parse_qsl(body.decode(), keep_blank_values=True)


@st.composite
def vonage_requests(draw: st.DrawFn) -> tuple[str, WebhookRequest]:
    """A DLR that passes the api-key check (and, signed, the signature check), with arbitrary
    fields, as JSON, form or query."""
    params = draw(
        st.fixed_dictionaries(
            {"messageId": texts, "status": st.sampled_from(["delivered", "failed"]) | texts},
            optional={"err-code": numbers, "network-code": texts, "msisdn": texts},
        )
    )
    params.update(draw(st.dictionaries(texts, texts, max_size=3)))
    params["api-key"] = VONAGE_KEY
    variant = draw(st.sampled_from(["", "signed"]))
    if variant == "signed":
        params["sig"] = vonage_signature(params, VONAGE_SIG)
    where = draw(st.sampled_from(["json", "form", "query"]))
    if where == "json":
        request = WebhookRequest(
            "POST", URL, {"content-type": "application/json"}, {}, dumps(params), {}
        )
    elif where == "form":
        request = WebhookRequest(
            "POST",
            URL,
            {"content-type": "application/x-www-form-urlencoded"},
            {},
            urlencode(params).encode(),
            params,
        )
    else:
        request = WebhookRequest("GET", URL, {}, params, b"", {})
    return variant, request


# --- the property -------------------------------------------------------------------------------


def check(adapter: Any, request: WebhookRequest) -> list[SmsResult]:
    """Call the webhook; only results or a 4xx WebhookError may come out."""
    try:
        results = asyncio.run(adapter.webhook(request))
    except WebhookError as exc:
        assert 400 <= exc.status < 500, exc.status
        assert isinstance(exc.detail, str) and exc.detail
        return []
    assert isinstance(results, list)
    for result in results:
        assert isinstance(result, SmsResult)
        assert isinstance(result.partnerMessageId, str) and result.partnerMessageId
        assert isinstance(result.apiStatus, ApiStatus)
        for name in ("partnerStatus", "partnerDetail", "smsOperator", "sendAt"):
            assert isinstance(getattr(result, name), str), name
        assert isinstance(result.smsMessageCount, int) and result.smsMessageCount >= 0
        pack_result(result)  # what mta http stores must be storable
    return results


@FUZZ
@given(request=requests())
def test_any_request_infobip(request: WebhookRequest) -> None:
    check(make("infobip"), request)


@FUZZ
@given(request=tokened(infobip_docs))
def test_infobip_shaped_bodies(request: WebhookRequest) -> None:
    check(make("infobip"), request)


@FUZZ
@given(request=requests())
def test_any_request_clickatell(request: WebhookRequest) -> None:
    check(make("clickatell"), request)


@FUZZ
@given(request=tokened(clickatell_docs))
def test_clickatell_shaped_bodies(request: WebhookRequest) -> None:
    check(make("clickatell"), request)


@FUZZ
@given(request=requests())
def test_any_request_twilio(request: WebhookRequest) -> None:
    check(make("twilio"), request)


@FUZZ
@given(request=twilio_requests())
def test_twilio_signed_callbacks(request: WebhookRequest) -> None:
    check(make("twilio"), request)


@FUZZ
@given(request=requests(), variant=st.sampled_from(["", "signed"]))
def test_any_request_vonage(request: WebhookRequest, variant: str) -> None:
    check(make("vonage", variant), request)


@FUZZ
@given(case=vonage_requests())
def test_vonage_authenticated_dlrs(case: tuple[str, WebhookRequest]) -> None:
    variant, request = case
    check(make("vonage", variant), request)


@FUZZ
@given(request=requests())
def test_any_request_smpp(request: WebhookRequest) -> None:
    try:
        asyncio.run(make("smpp").webhook(request))
    except WebhookError as exc:
        assert exc.status == 404
    else:
        raise AssertionError("an SMPP account takes no receipts over HTTP")


def test_the_fuzz_reaches_the_parsers() -> None:
    """Guard against a fuzz that only ever hits the authentication refusals: well-formed
    partner-shaped calls built the same way do produce results."""
    ib = check(
        make("infobip"),
        WebhookRequest(
            "POST",
            URL,
            {"content-type": "application/json"},
            {"token": TOKEN},
            dumps({"results": [{"messageId": "m1", "status": {"groupId": 3, "id": 5}}]}),
            {},
        ),
    )
    assert [r.apiStatus for r in ib] == [ApiStatus.DELIVERED]
    ck = check(
        make("clickatell"),
        WebhookRequest(
            "POST", URL, {}, {"token": TOKEN}, dumps({"messageId": "c1", "statusCode": 5}), {}
        ),
    )
    assert [r.apiStatus for r in ck] == [ApiStatus.DELIVERED]
    body = urlencode(
        {"MessageSid": "SM1", "MessageStatus": "delivered", "AccountSid": TWILIO_SID}
    ).encode()
    pairs = _parse_pairs(body)
    tw = check(
        make("twilio"),
        WebhookRequest(
            "POST",
            URL,
            {
                "content-type": "application/x-www-form-urlencoded",
                "x-twilio-signature": twilio_signature(TWILIO_TOKEN, URL, pairs),
            },
            {},
            body,
            dict(pairs),
        ),
    )
    assert [r.apiStatus for r in tw] == [ApiStatus.DELIVERED]
    params = {"messageId": "v1", "status": "delivered", "api-key": VONAGE_KEY}
    params["sig"] = vonage_signature(params, VONAGE_SIG)
    vn = check(make("vonage", "signed"), WebhookRequest("GET", URL, {}, params, b"", {}))
    assert [r.apiStatus for r in vn] == [ApiStatus.DELIVERED]
