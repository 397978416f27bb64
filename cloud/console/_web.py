"""The console's plumbing: settings, templates, one transaction per request, bounded forms.

Theory of operation: :func:`transaction` is the API's own
:func:`cloud.auth.open_service` as a context manager — one transaction and one
:class:`~cloud.service.CloudService`, committed when the block ends, rolled back when
it raises (except a refusal marked ``commit_before_raise``: a wrong activation code
must count against the rate limit). :func:`render` fills a Jinja2 template
(autoescaped) and answers with the security headers every page carries (a strict
Content-Security-Policy: scripts and styles from the console only, no framing).

Forms are ``application/x-www-form-urlencoded`` only. :func:`read_form` reads at most
:attr:`ConsoleConfig.max_form_bytes`, at most :attr:`ConsoleConfig.max_form_fields`
fields, each at most once, UTF-8 only, and refuses anything else with a
:class:`FormError` before any transaction starts — so bad input never changes anything.
Field values are then checked by :func:`field` against a pattern from :data:`PATTERNS`.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

from fastapi import Request
from fastapi.responses import HTMLResponse
from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

from ..auth import open_read_service, open_service
from ..errors import InvalidInputError
from ..service import CloudService

__all__ = [
    "PATTERNS",
    "ConsoleConfig",
    "FormError",
    "FormTooLargeError",
    "base_path",
    "config_of",
    "field",
    "optional_field",
    "read_form",
    "render",
    "render_fragment",
    "transaction",
]


@dataclass(frozen=True, kw_only=True)
class ConsoleConfig:
    """The console's bounds and timings."""

    max_form_bytes: int = 8 * 1024
    max_form_fields: int = 8
    session_max_age_s: int = 12 * 3600
    """How long the browser keeps a sign-in cookie."""
    live_poll_s: float = 1.0
    """How often a live stream re-reads the database."""
    live_max_s: float = 600.0
    """A live stream ends after this long; the browser's EventSource reconnects."""
    live_keepalive_s: float = 15.0
    people_page_size: int = 50


class FormError(InvalidInputError):
    """A form that cannot be used as sent: nothing was changed."""


class FormTooLargeError(FormError):
    """A form over :attr:`ConsoleConfig.max_form_bytes`."""

    status, title = 413, "Form too large"


PATTERNS: dict[str, tuple[re.Pattern[str], str]] = {
    "uid": (re.compile(r"[0-9a-fA-F]{2,20}"), "a card number of 2 to 20 hex digits (0-9, A-F)"),
    "code": (re.compile(r"[\x20-\x7e]{1,64}"), "the code printed on the card (1 to 64 characters)"),
    "token": (re.compile(r"[\x21-\x7e]{1,256}"), "an access token (up to 256 characters)"),
    "csrf": (re.compile(r"[0-9a-f]{32,64}"), "the form's security token"),
}
"""Field kind → (full-match pattern, what a refusal says is expected)."""

_TEMPLATES = Environment(
    loader=FileSystemLoader(Path(__file__).parent / "templates"),
    autoescape=select_autoescape(["html"]),
    undefined=StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)

_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


def _when(value: datetime | None) -> str:
    if value is None:
        return "never"
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)  # SQLite keeps no zone; the cloud stores UTC
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


_TEMPLATES.filters["when"] = _when


def config_of(request: Request) -> ConsoleConfig:
    """The console's settings (kept on the console app's state)."""
    config: ConsoleConfig = request.app.state.console
    return config


def base_path(request: Request) -> str:
    """The console's URL prefix (``/console`` when mounted there)."""
    return str(request.scope.get("root_path", "")).rstrip("/")


def render_fragment(template: str, context: Mapping[str, Any]) -> str:
    """A template rendered to text (live fragments and whole pages)."""
    return _TEMPLATES.get_template(template).render(context)


def render(
    request: Request,
    template: str,
    *,
    status: int = 200,
    headers: Mapping[str, str] | None = None,
    **context: Any,
) -> HTMLResponse:
    """A page: ``template`` filled with ``context`` plus ``base`` and the signed-in user."""
    context.setdefault("user", None)
    context.setdefault("notice", None)
    context.setdefault("error", None)
    html = render_fragment(template, {"base": base_path(request), **context})
    return HTMLResponse(html, status_code=status, headers={**_HEADERS, **(headers or {})})


@contextmanager
def transaction(request: Request, *, read_only: bool = False) -> Iterator[CloudService]:
    """One transaction of the cloud for this request (see the module docstring);
    ``read_only`` for one that writes nothing (:func:`cloud.db.read_only_sessions`)."""
    with contextmanager(open_read_service if read_only else open_service)(request) as service:
        yield service


async def read_form(request: Request) -> dict[str, str]:
    """The request's form fields, bounded (see the module docstring)."""
    config = config_of(request)
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind != "application/x-www-form-urlencoded":
        raise FormError("send the form from the console page (an HTML form post)")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > config.max_form_bytes:
            raise _too_large(config)
    try:
        text = body.decode("utf-8")
        pairs = parse_qsl(
            text,
            keep_blank_values=True,
            strict_parsing=False,
            errors="strict",
            max_num_fields=config.max_form_fields,
        )
    except (UnicodeDecodeError, ValueError):
        raise FormError("the form could not be read: too many fields or not UTF-8") from None
    fields: dict[str, str] = {}
    for name, value in pairs:
        if name in fields:
            raise FormError(f"the field {name[:40]!r} was sent more than once")
        fields[name] = value
    return fields


def _too_large(config: ConsoleConfig) -> FormTooLargeError:
    return FormTooLargeError(
        f"the form is larger than {config.max_form_bytes} bytes; nothing was changed"
    )


def field(form: Mapping[str, str], name: str, kind: str, label: str) -> str:
    """A required field that fully matches its pattern (stripped of surrounding spaces)."""
    value = optional_field(form, name, kind, label)
    if value is None:
        raise FormError(f"{label}: this field is required")
    return value


def optional_field(form: Mapping[str, str], name: str, kind: str, label: str) -> str | None:
    """A field that may be left empty (None), else fully matches its pattern."""
    value = form.get(name, "").strip()
    if not value:
        return None
    pattern, expected = PATTERNS[kind]
    if not pattern.fullmatch(value):
        raise FormError(f"{label}: enter {expected}")
    return value
