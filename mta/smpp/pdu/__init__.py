"""SMPP 3.4 PDU codec: command ids, status codes, TLV tags, PDU dataclasses, encode and decode.

A frame is one whole PDU, header included: ``command_length`` (4 octets, counting itself),
``command_id``, ``command_status``, ``sequence_number``, then the mandatory body fields in
spec order and the optional TLVs (tag, length, value). Integers are big-endian, C-octet strings
are NUL-terminated with a maximum size that includes the NUL (docs/protocols.md §1.1-§1.4).

Decoding is strict and never trusts a length: every C-octet string must end within its maximum
size, every length is checked against what is left of the frame, and a frame that cannot be
decoded raises :class:`PduError` carrying the ``command_status`` to answer with (in a
``generic_nack`` or the request's ``_resp``) and the sequence number. TLVs are kept generically
(``tag → value bytes``), unknown tags included; only the lengths of well-known fixed-size TLVs
are checked. A response with a non-zero status (or any response) may come without a body: its
fields then keep their defaults (``message_id == ""``), as some SMSCs omit it.

The codec is table-driven with precompiled :class:`struct.Struct` runs and no per-field objects,
so a ``submit_sm`` encodes and decodes in a few microseconds (``python -m mta.smpp.bench``).

The package: :mod:`~mta.smpp.pdu.base` (header, TLV helpers, field specs, the registry),
:mod:`~mta.smpp.pdu.commands` (one dataclass per command), :mod:`~mta.smpp.pdu.frames`
(encode, decode); the numbers are :mod:`mta.smpp.constants`. Import from here.
"""

from __future__ import annotations

from mta.smpp.constants import (
    RESPONSE_BIT,
    CommandId,
    CommandStatus,
    EsmClass,
    RegisteredDelivery,
    StatusKind,
    Tag,
    classify_status,
    command_name,
    is_response,
    status_name,
)
from mta.smpp.pdu.base import (
    HEADER,
    INTERFACE_VERSION,
    MAX_SEQUENCE,
    Pdu,
    PduEncodeError,
    PduError,
    cstr,
    tlv_cstr,
    tlv_int,
    u8,
    u16,
    u32,
)
from mta.smpp.pdu.commands import (
    AlertNotification,
    BindReceiver,
    BindReceiverResp,
    BindTransceiver,
    BindTransceiverResp,
    BindTransmitter,
    BindTransmitterResp,
    CancelSm,
    CancelSmResp,
    DataSm,
    DataSmResp,
    DeliverSm,
    DeliverSmResp,
    EnquireLink,
    EnquireLinkResp,
    GenericNack,
    Outbind,
    QuerySm,
    QuerySmResp,
    RawPdu,
    ReplaceSm,
    ReplaceSmResp,
    SubmitSm,
    SubmitSmResp,
    Unbind,
    UnbindResp,
    generic_nack,
    response_for,
)
from mta.smpp.pdu.frames import (
    decode,
    encode,
    response_frame,
)

__all__ = [
    "HEADER",
    "INTERFACE_VERSION",
    "MAX_SEQUENCE",
    "RESPONSE_BIT",
    "AlertNotification",
    "BindReceiver",
    "BindReceiverResp",
    "BindTransceiver",
    "BindTransceiverResp",
    "BindTransmitter",
    "BindTransmitterResp",
    "CancelSm",
    "CancelSmResp",
    "CommandId",
    "CommandStatus",
    "DataSm",
    "DataSmResp",
    "DeliverSm",
    "DeliverSmResp",
    "EnquireLink",
    "EnquireLinkResp",
    "EsmClass",
    "GenericNack",
    "Outbind",
    "Pdu",
    "PduEncodeError",
    "PduError",
    "QuerySm",
    "QuerySmResp",
    "RawPdu",
    "RegisteredDelivery",
    "ReplaceSm",
    "ReplaceSmResp",
    "StatusKind",
    "SubmitSm",
    "SubmitSmResp",
    "Tag",
    "Unbind",
    "UnbindResp",
    "classify_status",
    "command_name",
    "cstr",
    "decode",
    "encode",
    "generic_nack",
    "is_response",
    "response_for",
    "response_frame",
    "status_name",
    "tlv_cstr",
    "tlv_int",
    "u8",
    "u16",
    "u32",
]
