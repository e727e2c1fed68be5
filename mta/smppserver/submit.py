"""submit_sm → MMP message: the checks of the SMPP server front, and long-message parts.

``destination_addr`` must be an international number, digits only (one leading ``+`` is
dropped), else ESME_RINVDSTADR; ``source_addr`` becomes ``sender`` (alphanumeric ≤ 11, numeric
≤ 16, else ESME_RINVSRCADR). The text comes from ``short_message`` or the ``message_payload``
TLV (both at once: ESME_RINVMSGLEN), in data_coding 0 (GSM 03.38), 1 (IA5), 3 (Latin-1) or 8
(UCS-2); other codings are refused with ESME_RSUBMITFAIL. ``schedule_delivery_time`` /
``validity_period`` become ``startTime``/``expireTime`` (:mod:`mta.smppserver.times`). A part of a
long message goes to :class:`~mta.smppserver.reassembly.Reassembly`; the part that completes it
yields the whole message.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, tzinfo
from typing import Any, Final

from mta.config import SmppClient
from mta.contract import SmsType
from mta.smpp import pdu as P
from mta.smpp.coding import CodingError, concat_info, decode_text
from mta.smpp.receipt import MessageState
from mta.smppserver.reassembly import Reassembly, ReassemblyFull
from mta.smppserver.records import MessageRecord
from mta.smppserver.times import TimeError, parse_smpp_time, to_mmp_time

__all__ = ["MAX_TEXT", "NO_RECORD", "SubmitReader", "SubmitRefused"]

S = P.CommandStatus
MAX_TEXT: Final = 1600  # contract.Rules.max_text
TEXT_CODINGS: Final = frozenset({0x00, 0x01, 0x03, 0x08})
NO_RECORD: Final = MessageRecord(0, 0, "", 0, 0, 0, "", 0, 0, "", 0, "")
# plain ints of the enum members read per submit (an enum member costs a look-up each time)
_UDHI: Final = int(P.EsmClass.UDHI)
_PAYLOAD: Final = int(P.Tag.MESSAGE_PAYLOAD)
_SAR_TOTAL: Final = int(P.Tag.SAR_TOTAL_SEGMENTS)
_ENROUTE: Final = int(MessageState.ENROUTE)
_BULK: Final = SmsType.BULK.value


class SubmitRefused(Exception):
    """A submit_sm refused: ``status`` to answer, ``detail`` for the log."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


class SubmitReader:
    """Reads submit_sm PDUs into MMP messages (times in *tz*), long ones through *reassembly*."""

    def __init__(self, tz: tzinfo, reassembly: Reassembly) -> None:
        self.tz = tz
        self.reassembly = reassembly

    def read(
        self, client: SmppClient, pdu: P.SubmitSm
    ) -> tuple[dict[str, Any] | None, MessageRecord, list[str]]:
        """(MMP message, record, part ids) of an acceptable submit_sm — (None, an empty record,
        [its part id]) for a part of an incomplete long message; raises :class:`SubmitRefused` with
        the status to answer and what is wrong."""
        dest = pdu.destination_addr
        if dest.startswith("+"):
            dest = dest[1:]
        if not (7 <= len(dest) <= 15 and dest.isascii() and dest.isdigit() and dest[0] != "0"):
            raise SubmitRefused(
                S.ESME_RINVDSTADR,
                f"destination_addr {pdu.destination_addr!r}: international number, digits only",
            )
        sender = pdu.source_addr
        if sender and (len(sender) > (16 if sender.isdigit() else 11) or not sender.isprintable()):
            raise SubmitRefused(
                S.ESME_RINVSRCADR,
                f"source_addr {sender!r}: alphanumeric up to 11, numeric up to 16 characters",
            )
        if pdu.data_coding not in TEXT_CODINGS:
            raise SubmitRefused(
                S.ESME_RSUBMITFAIL, f"data_coding {pdu.data_coding}: only 0, 1, 3 and 8 are texts"
            )
        tlvs = pdu.tlvs
        payload = tlvs.get(_PAYLOAD) if tlvs else None
        if payload is not None and pdu.short_message:
            raise SubmitRefused(S.ESME_RINVMSGLEN, "short_message and message_payload both given")
        start = expire = ""
        if pdu.schedule_delivery_time or pdu.validity_period:
            now = datetime.now(UTC)
            submit_ms = int(now.timestamp() * 1000)
            start, expire = self._times(pdu, now)
        else:
            submit_ms = int(time.time() * 1000)
        parts: list[str] = []
        esm = pdu.esm_class
        if esm & _UDHI or (tlvs and _SAR_TOTAL in tlvs):
            try:
                info = concat_info(esm, pdu.short_message, tlvs)
            except CodingError as exc:
                raise SubmitRefused(S.ESME_RINVMSGLEN, str(exc)) from None
            data, coding = info.data, pdu.data_coding
            if info.total > 1:
                owner = client.system_id
                try:
                    done = self.reassembly.add(owner, (pdu.source_addr, dest), info, coding)
                except ReassemblyFull as exc:
                    raise SubmitRefused(S.ESME_RMSGQFUL, str(exc)) from None
                if isinstance(done, str):  # a part of an incomplete message: its own id
                    return None, NO_RECORD, [done]
                data, coding, parts = done.data, done.data_coding, done.part_ids
            text = decode_text(data, coding)
        else:
            data = pdu.short_message if payload is None else payload
            text = decode_text(data, pdu.data_coding)
        if not text:
            raise SubmitRefused(S.ESME_RINVMSGLEN, "empty message")
        if len(text) > MAX_TEXT:
            raise SubmitRefused(
                S.ESME_RINVMSGLEN, f"{len(text)} characters, the limit is {MAX_TEXT}"
            )
        message: dict[str, Any] = {
            "mobileNumber": dest,
            "text": text,
            "accountId": client.account_id,
            "smsType": _BULK,
        }
        if sender:
            message["sender"] = sender
        if start:
            message["startTime"] = start
        if expire:
            message["expireTime"] = expire
        record = MessageRecord(
            _ENROUTE,
            0,
            client.system_id,
            pdu.registered_delivery,
            pdu.source_addr_ton,
            pdu.source_addr_npi,
            pdu.source_addr,
            pdu.dest_addr_ton,
            pdu.dest_addr_npi,
            pdu.destination_addr,
            submit_ms,
            text[:20],
            0,
            parts,
            client.account_id,
        )
        return message, record, parts

    def _times(self, pdu: P.SubmitSm, now: datetime) -> tuple[str, str]:
        """(startTime, expireTime) of *pdu* — each ``""`` when not asked — or
        :class:`SubmitRefused`."""
        start = expire = ""
        try:
            start_at = parse_smpp_time(pdu.schedule_delivery_time, now)
        except TimeError as exc:
            raise SubmitRefused(S.ESME_RINVSCHED, f"schedule_delivery_time {exc}") from None
        try:
            expire_at = parse_smpp_time(pdu.validity_period, now)
        except TimeError as exc:
            raise SubmitRefused(S.ESME_RINVEXPIRY, f"validity_period {exc}") from None
        if start_at is not None and start_at > now:
            start = to_mmp_time(start_at, self.tz)
        if expire_at is not None:
            if expire_at <= now or (start_at is not None and expire_at <= start_at):
                raise SubmitRefused(
                    S.ESME_RINVEXPIRY, f"validity_period {pdu.validity_period} is over"
                )
            expire = to_mmp_time(expire_at, self.tz)
        return start, expire
