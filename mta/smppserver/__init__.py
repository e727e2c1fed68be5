"""The SMPP server front (``mta smpp-server``): ESMEs bind, submit, query, cancel, get receipts."""

from mta.smppserver.auth import SmppLimits
from mta.smppserver.server import SmppServer, make_ssl_context
from mta.smppserver.times import TimeError, parse_smpp_time, to_mmp_time

__all__ = [
    "SmppLimits",
    "SmppServer",
    "TimeError",
    "make_ssl_context",
    "parse_smpp_time",
    "to_mmp_time",
]
