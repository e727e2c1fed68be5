"""SMPP 3.4 numbers: command ids, command statuses and what each means, esm_class,
registered_delivery and TLV tags (docs/protocols.md §1.2-§1.8)."""

from __future__ import annotations

import enum
from typing import Final

RESPONSE_BIT: Final = 0x80000000


class CommandId(enum.IntEnum):
    """``command_id`` values (docs/protocols.md §1.2); response id = request id | 0x80000000."""

    GENERIC_NACK = 0x80000000
    BIND_RECEIVER = 0x00000001
    BIND_RECEIVER_RESP = 0x80000001
    BIND_TRANSMITTER = 0x00000002
    BIND_TRANSMITTER_RESP = 0x80000002
    QUERY_SM = 0x00000003
    QUERY_SM_RESP = 0x80000003
    SUBMIT_SM = 0x00000004
    SUBMIT_SM_RESP = 0x80000004
    DELIVER_SM = 0x00000005
    DELIVER_SM_RESP = 0x80000005
    UNBIND = 0x00000006
    UNBIND_RESP = 0x80000006
    REPLACE_SM = 0x00000007
    REPLACE_SM_RESP = 0x80000007
    CANCEL_SM = 0x00000008
    CANCEL_SM_RESP = 0x80000008
    BIND_TRANSCEIVER = 0x00000009
    BIND_TRANSCEIVER_RESP = 0x80000009
    OUTBIND = 0x0000000B
    ENQUIRE_LINK = 0x00000015
    ENQUIRE_LINK_RESP = 0x80000015
    SUBMIT_MULTI = 0x00000021
    SUBMIT_MULTI_RESP = 0x80000021
    ALERT_NOTIFICATION = 0x00000102
    DATA_SM = 0x00000103
    DATA_SM_RESP = 0x80000103


class CommandStatus(enum.IntEnum):
    """``command_status`` codes (docs/protocols.md §1.8; names without the ``SMPP_`` prefix)."""

    ESME_ROK = 0x00
    ESME_RINVMSGLEN = 0x01
    ESME_RINVCMDLEN = 0x02
    ESME_RINVCMDID = 0x03
    ESME_RINVBNDSTS = 0x04
    ESME_RALYBND = 0x05
    ESME_RINVPRTFLG = 0x06
    ESME_RINVREGDLVFLG = 0x07
    ESME_RSYSERR = 0x08
    ESME_RINVSRCADR = 0x0A
    ESME_RINVDSTADR = 0x0B
    ESME_RINVMSGID = 0x0C
    ESME_RBINDFAIL = 0x0D
    ESME_RINVPASWD = 0x0E
    ESME_RINVSYSID = 0x0F
    ESME_RCANCELFAIL = 0x11
    ESME_RREPLACEFAIL = 0x13
    ESME_RMSGQFUL = 0x14
    ESME_RINVSERTYP = 0x15
    ESME_RINVNUMDESTS = 0x33
    ESME_RINVDLNAME = 0x34
    ESME_RINVDESTFLAG = 0x40
    ESME_RINVSUBREP = 0x42
    ESME_RINVESMCLASS = 0x43
    ESME_RCNTSUBDL = 0x44
    ESME_RSUBMITFAIL = 0x45
    ESME_RINVSRCTON = 0x48
    ESME_RINVSRCNPI = 0x49
    ESME_RINVDSTTON = 0x50
    ESME_RINVDSTNPI = 0x51
    ESME_RINVSYSTYP = 0x53
    ESME_RINVREPFLAG = 0x54
    ESME_RINVNUMMSGS = 0x55
    ESME_RTHROTTLED = 0x58
    ESME_RINVSCHED = 0x61
    ESME_RINVEXPIRY = 0x62
    ESME_RINVDFTMSGID = 0x63
    ESME_RX_T_APPN = 0x64
    ESME_RX_P_APPN = 0x65
    ESME_RX_R_APPN = 0x66
    ESME_RQUERYFAIL = 0x67
    ESME_RINVOPTPARSTREAM = 0xC0
    ESME_ROPTPARNOTALLWD = 0xC1
    ESME_RINVPARLEN = 0xC2
    ESME_RMISSINGOPTPARAM = 0xC3
    ESME_RINVOPTPARAMVAL = 0xC4
    ESME_RDELIVERYFAILURE = 0xFE
    ESME_RUNKNOWNERR = 0xFF


S = CommandStatus  # short alias for the tables below


class StatusKind(enum.StrEnum):
    """What a non-OK ``command_status`` asks of the sender (docs/protocols.md §1.8, recommendation).

    ``THROTTLE``: slow the whole session down (pause), then retry the message.
    ``RETRY``: transient, retry the same message with backoff.
    ``RETRY_FEW``: transient but suspicious: retry a small number of times, then FAIL.
    ``RECONNECT``: the session state is broken: unbind/reconnect and retry what was in flight.
    ``BIND``: credentials or bind refused (Login NOK); reconnect only with a long backoff.
    ``PERMANENT``: retrying cannot help: FAIL the message with the status name.
    ``KEEP_STATE``: a query_sm/cancel_sm answer that must not change the message's state.
    """

    OK = "ok"
    THROTTLE = "throttle"
    RETRY = "retry"
    RETRY_FEW = "retry_few"
    RECONNECT = "reconnect"
    BIND = "bind"
    PERMANENT = "permanent"
    KEEP_STATE = "keep_state"


_STATUS_KIND: Final[dict[int, StatusKind]] = {
    S.ESME_ROK: StatusKind.OK,
    S.ESME_RTHROTTLED: StatusKind.THROTTLE,
    S.ESME_RMSGQFUL: StatusKind.THROTTLE,
    S.ESME_RSYSERR: StatusKind.RETRY,
    S.ESME_RX_T_APPN: StatusKind.RETRY,
    S.ESME_RSUBMITFAIL: StatusKind.RETRY_FEW,
    S.ESME_RUNKNOWNERR: StatusKind.RETRY_FEW,
    S.ESME_RINVSCHED: StatusKind.RETRY_FEW,
    S.ESME_RDELIVERYFAILURE: StatusKind.RETRY_FEW,
    S.ESME_RINVBNDSTS: StatusKind.RECONNECT,
    S.ESME_RINVCMDID: StatusKind.RECONNECT,
    S.ESME_RINVCMDLEN: StatusKind.RECONNECT,
    S.ESME_RALYBND: StatusKind.BIND,
    S.ESME_RBINDFAIL: StatusKind.BIND,
    S.ESME_RINVPASWD: StatusKind.BIND,
    S.ESME_RINVSYSID: StatusKind.BIND,
    S.ESME_RINVSYSTYP: StatusKind.BIND,
    S.ESME_RINVMSGID: StatusKind.KEEP_STATE,
    S.ESME_RQUERYFAIL: StatusKind.KEEP_STATE,
    S.ESME_RCANCELFAIL: StatusKind.KEEP_STATE,
    S.ESME_RREPLACEFAIL: StatusKind.KEEP_STATE,
}


def classify_status(status: int) -> StatusKind:
    """The kind of *status*: every code not listed as retryable, bind or query is PERMANENT,
    except codes outside the spec's table (vendor-specific 0x400+ or unknown), which are
    RETRY_FEW like ESME_RUNKNOWNERR."""
    kind = _STATUS_KIND.get(status)
    if kind is not None:
        return kind
    try:
        CommandStatus(status)
    except ValueError:
        return StatusKind.RETRY_FEW
    return StatusKind.PERMANENT


def status_name(status: int) -> str:
    """``ESME_RTHROTTLED`` for 0x58; ``0x00000401`` for a code outside the table."""
    try:
        return CommandStatus(status).name
    except ValueError:
        return f"0x{status:08X}"


def command_name(command_id: int) -> str:
    """``submit_sm`` for 0x00000004; ``0x...`` for an unknown id."""
    try:
        return CommandId(command_id).name.lower()
    except ValueError:
        return f"0x{command_id:08X}"


def is_response(command_id: int) -> bool:
    return bool(command_id & RESPONSE_BIT)


class EsmClass(enum.IntFlag):
    """``esm_class`` bits used here (docs/protocols.md §1.5)."""

    DEFAULT = 0x00
    DATAGRAM = 0x01
    FORWARD = 0x02
    STORE_AND_FORWARD = 0x03
    DELIVERY_RECEIPT = 0x04  # deliver_sm: SMSC delivery receipt
    SME_ACK = 0x08
    USER_ACK = 0x10
    INTERMEDIATE = 0x20  # deliver_sm: intermediate delivery notification
    TYPE_MASK = 0x3C
    UDHI = 0x40
    REPLY_PATH = 0x80


class RegisteredDelivery(enum.IntFlag):
    """``registered_delivery`` bits (docs/protocols.md §1.5)."""

    NONE = 0x00
    RECEIPT = 0x01  # receipt on final outcome, success or failure
    RECEIPT_ON_FAILURE = 0x02
    RECEIPT_MASK = 0x03
    INTERMEDIATE = 0x10


class Tag(enum.IntEnum):
    """Optional parameter (TLV) tags of SMPP 3.4 (docs/protocols.md §1.10-§1.11, smpplib consts)."""

    DEST_ADDR_SUBUNIT = 0x0005
    DEST_NETWORK_TYPE = 0x0006
    DEST_BEARER_TYPE = 0x0007
    DEST_TELEMATICS_ID = 0x0008
    SOURCE_ADDR_SUBUNIT = 0x000D
    SOURCE_NETWORK_TYPE = 0x000E
    SOURCE_BEARER_TYPE = 0x000F
    SOURCE_TELEMATICS_ID = 0x0010
    QOS_TIME_TO_LIVE = 0x0017
    PAYLOAD_TYPE = 0x0019
    ADDITIONAL_STATUS_INFO_TEXT = 0x001D
    RECEIPTED_MESSAGE_ID = 0x001E
    MS_MSG_WAIT_FACILITIES = 0x0030
    PRIVACY_INDICATOR = 0x0201
    SOURCE_SUBADDRESS = 0x0202
    DEST_SUBADDRESS = 0x0203
    USER_MESSAGE_REFERENCE = 0x0204
    USER_RESPONSE_CODE = 0x0205
    SOURCE_PORT = 0x020A
    DESTINATION_PORT = 0x020B
    SAR_MSG_REF_NUM = 0x020C
    LANGUAGE_INDICATOR = 0x020D
    SAR_TOTAL_SEGMENTS = 0x020E
    SAR_SEGMENT_SEQNUM = 0x020F
    SC_INTERFACE_VERSION = 0x0210
    CALLBACK_NUM_PRES_IND = 0x0302
    CALLBACK_NUM_ATAG = 0x0303
    NUMBER_OF_MESSAGES = 0x0304
    CALLBACK_NUM = 0x0381
    DPF_RESULT = 0x0420
    SET_DPF = 0x0421
    MS_AVAILABILITY_STATUS = 0x0422
    NETWORK_ERROR_CODE = 0x0423
    MESSAGE_PAYLOAD = 0x0424
    DELIVERY_FAILURE_REASON = 0x0425
    MORE_MESSAGES_TO_SEND = 0x0426
    MESSAGE_STATE = 0x0427
    USSD_SERVICE_OP = 0x0501
    DISPLAY_TIME = 0x1201
    SMS_SIGNAL = 0x1203
    MS_VALIDITY = 0x1204
    ALERT_ON_MESSAGE_DELIVERY = 0x130C
    ITS_REPLY_TYPE = 0x1380
    ITS_SESSION_INFO = 0x1383


# Allowed value lengths (min, max) of TLVs whose size the spec fixes; others are not checked.
TLV_SIZES: Final[dict[int, tuple[int, int]]] = {
    Tag.RECEIPTED_MESSAGE_ID: (0, 65),
    Tag.USER_MESSAGE_REFERENCE: (2, 2),
    Tag.SOURCE_PORT: (2, 2),
    Tag.DESTINATION_PORT: (2, 2),
    Tag.SAR_MSG_REF_NUM: (2, 2),
    Tag.SAR_TOTAL_SEGMENTS: (1, 1),
    Tag.SAR_SEGMENT_SEQNUM: (1, 1),
    Tag.SC_INTERFACE_VERSION: (1, 1),
    Tag.PAYLOAD_TYPE: (1, 1),
    Tag.NETWORK_ERROR_CODE: (3, 3),
    Tag.MESSAGE_STATE: (1, 1),
    Tag.MORE_MESSAGES_TO_SEND: (1, 1),
    Tag.DELIVERY_FAILURE_REASON: (1, 1),
    Tag.DPF_RESULT: (1, 1),
    Tag.SET_DPF: (1, 1),
    Tag.MS_AVAILABILITY_STATUS: (1, 1),
    Tag.QOS_TIME_TO_LIVE: (4, 4),
    Tag.ALERT_ON_MESSAGE_DELIVERY: (0, 0),
}
