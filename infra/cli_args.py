"""What every command line of the project shares: one-line usage errors, common value types.

Theory of operation: each console script (``door-controller``, ``door-cloud``,
``phone-bridge``, ``doorsim``, the radio hub) builds its parser from
:class:`OneLineParser`, so a usage error is one line on stderr and exit status 2, and
checks ports and broker URLs with the same argument types, so a bad value reads the same
everywhere.
"""

from __future__ import annotations

import argparse
from typing import NoReturn

from .broker import parse_mqtt_url

__all__ = ["OneLineParser", "mqtt_url", "port"]


class OneLineParser(argparse.ArgumentParser):
    """An argument parser whose usage errors are one line (exit status 2)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def port(text: str) -> int:
    """A TCP port number, 0-65535 (an ``argparse`` type)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"port out of range 0-65535: {value}")
    return value


def mqtt_url(text: str) -> str:
    """A broker URL such as ``mqtt://127.0.0.1:1883`` (an ``argparse`` type)."""
    try:
        parse_mqtt_url(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text
