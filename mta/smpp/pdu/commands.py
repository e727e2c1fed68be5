"""One dataclass per SMPP 3.4 command, in spec field order, registered by command id; and the
empty response to a request."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from mta.smpp.constants import (
    RESPONSE_BIT,
    CommandId,
    command_name,
)
from mta.smpp.constants import CommandStatus as S
from mta.smpp.pdu.base import (
    _RESPONSE_OF,
    INTERFACE_VERSION,
    Pdu,
    _c,
    _i,
    _register,
    _sm,
)


@dataclass(slots=True)
class _Bind(Pdu):
    system_id: str = _c(16, S.ESME_RINVSYSID)
    password: str = _c(9, S.ESME_RINVPASWD)
    system_type: str = _c(13, S.ESME_RINVSYSTYP)
    interface_version: int = _i("B", INTERFACE_VERSION)
    addr_ton: int = _i()
    addr_npi: int = _i()
    address_range: str = _c(41)


@_register(CommandId.BIND_RECEIVER)
@dataclass(slots=True)
class BindReceiver(_Bind):
    pass


@_register(CommandId.BIND_TRANSMITTER)
@dataclass(slots=True)
class BindTransmitter(_Bind):
    pass


@_register(CommandId.BIND_TRANSCEIVER)
@dataclass(slots=True)
class BindTransceiver(_Bind):
    pass


@dataclass(slots=True)
class _BindResp(Pdu):
    """``system_id`` of the SMSC; ``sc_interface_version`` (0x0210) travels as a TLV."""

    system_id: str = _c(16, S.ESME_RINVSYSID)


@_register(CommandId.BIND_RECEIVER_RESP)
@dataclass(slots=True)
class BindReceiverResp(_BindResp):
    pass


@_register(CommandId.BIND_TRANSMITTER_RESP)
@dataclass(slots=True)
class BindTransmitterResp(_BindResp):
    pass


@_register(CommandId.BIND_TRANSCEIVER_RESP)
@dataclass(slots=True)
class BindTransceiverResp(_BindResp):
    pass


@_register(CommandId.OUTBIND)
@dataclass(slots=True)
class Outbind(Pdu):
    system_id: str = _c(16, S.ESME_RINVSYSID)
    password: str = _c(9, S.ESME_RINVPASWD)


@_register(CommandId.UNBIND)
@dataclass(slots=True)
class Unbind(Pdu):
    pass


@_register(CommandId.UNBIND_RESP)
@dataclass(slots=True)
class UnbindResp(Pdu):
    pass


@_register(CommandId.ENQUIRE_LINK)
@dataclass(slots=True)
class EnquireLink(Pdu):
    pass


@_register(CommandId.ENQUIRE_LINK_RESP)
@dataclass(slots=True)
class EnquireLinkResp(Pdu):
    pass


@_register(CommandId.GENERIC_NACK)
@dataclass(slots=True)
class GenericNack(Pdu):
    pass


@dataclass(slots=True)
class _ShortMessage(Pdu):
    """The body shared by submit_sm and deliver_sm (docs/protocols.md §1.4)."""

    service_type: str = _c(6, S.ESME_RINVSERTYP)
    source_addr_ton: int = _i()
    source_addr_npi: int = _i()
    source_addr: str = _c(21, S.ESME_RINVSRCADR)
    dest_addr_ton: int = _i()
    dest_addr_npi: int = _i()
    destination_addr: str = _c(21, S.ESME_RINVDSTADR)
    esm_class: int = _i()
    protocol_id: int = _i()
    priority_flag: int = _i()
    schedule_delivery_time: str = _c(17, S.ESME_RINVSCHED)
    validity_period: str = _c(17, S.ESME_RINVEXPIRY)
    registered_delivery: int = _i()
    replace_if_present_flag: int = _i()
    data_coding: int = _i()
    sm_default_msg_id: int = _i()
    short_message: bytes = _sm()


@_register(CommandId.SUBMIT_SM)
@dataclass(slots=True)
class SubmitSm(_ShortMessage):
    pass


@_register(CommandId.DELIVER_SM)
@dataclass(slots=True)
class DeliverSm(_ShortMessage):
    pass


@dataclass(slots=True)
class _MessageIdResp(Pdu):
    message_id: str = _c(65, S.ESME_RINVMSGID)


@_register(CommandId.SUBMIT_SM_RESP)
@dataclass(slots=True)
class SubmitSmResp(_MessageIdResp):
    pass


@_register(CommandId.DELIVER_SM_RESP)
@dataclass(slots=True)
class DeliverSmResp(_MessageIdResp):
    """``message_id`` is unused (empty) in deliver_sm_resp."""


@_register(CommandId.DATA_SM)
@dataclass(slots=True)
class DataSm(Pdu):
    service_type: str = _c(6, S.ESME_RINVSERTYP)
    source_addr_ton: int = _i()
    source_addr_npi: int = _i()
    source_addr: str = _c(65, S.ESME_RINVSRCADR)
    dest_addr_ton: int = _i()
    dest_addr_npi: int = _i()
    destination_addr: str = _c(65, S.ESME_RINVDSTADR)
    esm_class: int = _i()
    registered_delivery: int = _i()
    data_coding: int = _i()


@_register(CommandId.DATA_SM_RESP)
@dataclass(slots=True)
class DataSmResp(_MessageIdResp):
    pass


@_register(CommandId.QUERY_SM)
@dataclass(slots=True)
class QuerySm(Pdu):
    message_id: str = _c(65, S.ESME_RINVMSGID)
    source_addr_ton: int = _i()
    source_addr_npi: int = _i()
    source_addr: str = _c(21, S.ESME_RINVSRCADR)


@_register(CommandId.QUERY_SM_RESP)
@dataclass(slots=True)
class QuerySmResp(Pdu):
    """``final_date`` is empty while the message is not final; ``error_code`` is the network
    error; ``message_state`` as in :class:`mta.smpp.receipt.MessageState`."""

    message_id: str = _c(65, S.ESME_RINVMSGID)
    final_date: str = _c(17)
    message_state: int = _i()
    error_code: int = _i()


@_register(CommandId.CANCEL_SM)
@dataclass(slots=True)
class CancelSm(Pdu):
    service_type: str = _c(6, S.ESME_RINVSERTYP)
    message_id: str = _c(65, S.ESME_RINVMSGID)
    source_addr_ton: int = _i()
    source_addr_npi: int = _i()
    source_addr: str = _c(21, S.ESME_RINVSRCADR)
    dest_addr_ton: int = _i()
    dest_addr_npi: int = _i()
    destination_addr: str = _c(21, S.ESME_RINVDSTADR)


@_register(CommandId.CANCEL_SM_RESP)
@dataclass(slots=True)
class CancelSmResp(Pdu):
    pass


@_register(CommandId.REPLACE_SM)
@dataclass(slots=True)
class ReplaceSm(Pdu):
    message_id: str = _c(65, S.ESME_RINVMSGID)
    source_addr_ton: int = _i()
    source_addr_npi: int = _i()
    source_addr: str = _c(21, S.ESME_RINVSRCADR)
    schedule_delivery_time: str = _c(17, S.ESME_RINVSCHED)
    validity_period: str = _c(17, S.ESME_RINVEXPIRY)
    registered_delivery: int = _i()
    sm_default_msg_id: int = _i()
    short_message: bytes = _sm()


@_register(CommandId.REPLACE_SM_RESP)
@dataclass(slots=True)
class ReplaceSmResp(Pdu):
    pass


@_register(CommandId.ALERT_NOTIFICATION)
@dataclass(slots=True)
class AlertNotification(Pdu):
    source_addr_ton: int = _i()
    source_addr_npi: int = _i()
    source_addr: str = _c(65, S.ESME_RINVSRCADR)
    esme_addr_ton: int = _i()
    esme_addr_npi: int = _i()
    esme_addr: str = _c(65, S.ESME_RINVDSTADR)


@dataclass(slots=True)
class RawPdu(Pdu):
    """A PDU whose command id is known but whose body is not modelled (submit_multi and its
    response): the body is kept as bytes, so the owner can still answer it."""

    raw_id: int = 0
    body: bytes = b""

    @property
    def name(self) -> str:
        return command_name(self.raw_id)

    @property
    def is_response(self) -> bool:
        return bool(self.raw_id & RESPONSE_BIT)


_RAW_IDS: Final = frozenset({CommandId.SUBMIT_MULTI, CommandId.SUBMIT_MULTI_RESP})


def response_for(request: Pdu, status: int = 0) -> Pdu:
    """An empty response to *request* (same sequence) with *status*; a request without a
    response type (generic_nack, outbind, alert_notification) gets a generic_nack."""
    if isinstance(request, RawPdu):
        if request.raw_id & RESPONSE_BIT:
            return generic_nack(status, request.sequence)
        raw_id = request.raw_id | RESPONSE_BIT
        return RawPdu(raw_id=raw_id, sequence=request.sequence, status=status)
    cls = _RESPONSE_OF.get(type(request))
    if cls is None:
        return generic_nack(status, request.sequence)
    return cls(sequence=request.sequence, status=status)


def generic_nack(status: int, sequence: int | None) -> GenericNack:
    return GenericNack(sequence=sequence or 0, status=status)


