"""Text made safe for HTML and SVG (and for XML parsers reading either).

Theory of operation: names come from scenario files and may hold anything TOML allows:
``<``, ``&``, quotes, control characters. :func:`esc` escapes the five markup characters
(so the result is safe in text and in quoted attribute values alike) and replaces the
characters XML 1.0 forbids (C0 controls other than tab, newline and carriage return,
lone surrogates, U+FFFE/U+FFFF) with U+FFFD, so every page we write is also well-formed
XML. :func:`num` writes a coordinate with a fixed number of decimals, so the same
figure is the same bytes on every run and platform.
"""

from __future__ import annotations

import html
import re
from typing import Final

__all__ = ["esc", "num"]

_NOT_XML: Final = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


def esc(text: str) -> str:
    """``text`` escaped for HTML/SVG text and attribute values."""
    return html.escape(_NOT_XML.sub("\ufffd", text), quote=True)


def num(value: float) -> str:
    """A coordinate or length: one decimal, no negative zero."""
    text = f"{value:.1f}"
    return "0.0" if text == "-0.0" else text
