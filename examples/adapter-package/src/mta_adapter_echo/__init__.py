"""mta-adapter-echo: an example sms-mta adapter package, found by the MTA through its entry point."""

from mta_adapter_echo.adapter import EchoAdapter

__all__ = ["EchoAdapter"]
