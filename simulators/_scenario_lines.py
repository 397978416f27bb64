"""Where each key of a TOML document is: a map from a key path to its line number.

Theory of operation
-------------------
``tomllib`` parses TOML into plain dicts and lists and forgets where anything was, yet a
refused scenario must name the line of the offending key. :func:`index_lines` scans the
text once more, after ``tomllib`` accepted it (so the text is known to be valid TOML),
and records the 1-based line of every

* table header ``[a.b]`` — under the path ``("a", "b")``;
* array-of-tables header ``[[a.b]]`` — under ``("a", "b", i)``, ``i`` counting the
  headers of that array within its parent table, as TOML does;
* key ``k = v`` (dotted keys too) — under the current table's path plus the key;
* element of an array value and key of an inline table — under the value's path plus
  the element's index or the key.

A path is a tuple of ``str`` (table keys) and ``int`` (array indexes), the same path the
validator walks in the parsed dicts. :meth:`LineIndex.line_of` answers with the line of
the longest recorded prefix of a path, so a question about a value deep inside an
inline table still lands on the line of its key. The scanner never raises on valid
TOML; on anything else it stops early and keeps what it found.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

__all__ = ["LineIndex", "Path", "index_lines"]

Path = tuple[str | int, ...]

_BARE_KEY_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-")
_SCALAR_END = frozenset(",]}#\n")


@dataclass
class LineIndex:
    """Lines of the key paths of one TOML document (1-based)."""

    lines: dict[Path, int] = field(default_factory=dict)

    def line_of(self, path: Path) -> int:
        """The line of ``path``, else of its longest recorded prefix, else 1."""
        for end in range(len(path), 0, -1):
            line = self.lines.get(path[:end])
            if line is not None:
                return line
        return 1

    def record(self, path: Path, line: int) -> None:
        """Remember ``path`` at ``line`` unless it was seen first elsewhere."""
        self.lines.setdefault(path, line)


class _Scanner:
    """A cursor over valid TOML text that records key lines into a :class:`LineIndex`."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0
        self.line = 1
        self.index = LineIndex()
        self.table: Path = ()
        self.array_counts: dict[Path, int] = {}
        """Headers seen of each array of tables (by its concrete path)."""

    # --- characters -------------------------------------------------------------------------

    def peek(self, offset: int = 0) -> str:
        i = self.pos + offset
        return self.text[i] if i < len(self.text) else ""

    def advance(self, count: int = 1) -> None:
        for _ in range(count):
            if self.pos < len(self.text):
                if self.text[self.pos] == "\n":
                    self.line += 1
                self.pos += 1

    def at_end(self) -> bool:
        return self.pos >= len(self.text)

    def skip_blank(self, *, newlines: bool) -> None:
        """Skip spaces, tabs, comments and (if ``newlines``) line breaks."""
        while not self.at_end():
            char = self.peek()
            if char in " \t\r" or (newlines and char == "\n"):
                self.advance()
            elif char == "#":
                while not self.at_end() and self.peek() != "\n":
                    self.advance()
            else:
                return

    # --- keys ---------------------------------------------------------------------------

    def key_part(self) -> str:
        """One bare or quoted key segment."""
        char = self.peek()
        if char in "\"'":
            return self.quoted(char)
        start = self.pos
        while self.peek() in _BARE_KEY_CHARS and not self.at_end():
            self.advance()
        if self.pos == start:
            raise ValueError("expected a key")
        return self.text[start : self.pos]

    def quoted(self, quote: str) -> str:
        """A one-line basic (``"``) or literal (``'``) string; returns its raw content."""
        self.advance()
        start = self.pos
        while not self.at_end() and self.peek() != quote:
            if quote == '"' and self.peek() == "\\":
                self.advance()
            self.advance()
        raw = self.text[start : self.pos]
        self.advance()
        if quote == '"' and "\\" in raw:
            return raw.encode("latin-1", "backslashreplace").decode("unicode_escape")
        return raw

    def dotted_key(self) -> tuple[str, ...]:
        parts = [self.key_part()]
        self.skip_blank(newlines=False)
        while self.peek() == ".":
            self.advance()
            self.skip_blank(newlines=False)
            parts.append(self.key_part())
            self.skip_blank(newlines=False)
        return tuple(parts)

    # --- values -------------------------------------------------------------------------

    def value(self, path: Path) -> None:
        """Skip one value, recording the lines of what is inside it."""
        char = self.peek()
        if self.text.startswith('"""', self.pos) or self.text.startswith("'''", self.pos):
            self.multiline_string(char)
        elif char in "\"'":
            self.quoted(char)
        elif char == "[":
            self.array(path)
        elif char == "{":
            self.inline_table(path)
        else:
            while not self.at_end() and self.peek() not in _SCALAR_END:
                self.advance()

    def multiline_string(self, quote: str) -> None:
        delimiter = quote * 3
        self.advance(3)
        while not self.at_end() and not self.text.startswith(delimiter, self.pos):
            if quote == '"' and self.peek() == "\\":
                self.advance()
            self.advance()
        self.advance(3)
        while self.peek() == quote:  # up to two quotes may end the content
            self.advance()

    def array(self, path: Path) -> None:
        self.advance()
        count = 0
        while True:
            self.skip_blank(newlines=True)
            if self.at_end() or self.peek() == "]":
                self.advance()
                return
            self.index.record((*path, count), self.line)
            self.value((*path, count))
            count += 1
            self.skip_blank(newlines=True)
            if self.peek() == ",":
                self.advance()

    def inline_table(self, path: Path) -> None:
        self.advance()
        while True:
            self.skip_blank(newlines=True)
            if self.at_end() or self.peek() == "}":
                self.advance()
                return
            self.key_value(path)
            self.skip_blank(newlines=True)
            if self.peek() == ",":
                self.advance()

    def key_value(self, table: Path) -> None:
        """``key = value`` inside ``table``: record the key (and its dotted prefixes)."""
        line = self.line
        keys = self.dotted_key()
        for end in range(1, len(keys) + 1):
            self.index.record((*table, *keys[:end]), line)
        self.skip_blank(newlines=False)
        self.advance()  # "="
        self.skip_blank(newlines=False)
        self.value((*table, *keys))

    # --- tables -------------------------------------------------------------------------

    def concrete(self, keys: tuple[str, ...]) -> Path:
        """The path of a header's keys, with the current index of each array of tables."""
        path: Path = ()
        for key in keys:
            path = (*path, key)
            if path in self.array_counts:
                path = (*path, self.array_counts[path] - 1)
        return path

    def header(self) -> None:
        line = self.line
        is_array = self.text.startswith("[[", self.pos)
        self.advance(2 if is_array else 1)
        self.skip_blank(newlines=False)
        keys = self.dotted_key()
        self.advance(2 if is_array else 1)
        parent = self.concrete(keys[:-1])
        path: Path = (*parent, keys[-1])
        if is_array:
            count = self.array_counts.get(path, 0)
            self.array_counts[path] = count + 1
            self.index.record(path, line)
            path = (*path, count)
        self.index.record(path, line)
        self.table = path

    def document(self) -> None:
        while True:
            self.skip_blank(newlines=True)
            if self.at_end():
                return
            if self.peek() == "[":
                self.header()
            else:
                self.key_value(self.table)


def index_lines(text: str) -> LineIndex:
    """The line of every key path of ``text``, which ``tomllib`` already accepted."""
    scanner = _Scanner(text)
    # On text that is not valid TOML after all, keep the lines found so far.
    with contextlib.suppress(ValueError, RecursionError, UnicodeError):
        scanner.document()
    return scanner.index
