"""The catalogue's bookkeeping: requirements, their metadata, and how a check fails.

Theory of operation: each requirement is one plain function decorated with
:func:`requirement`. Its name *is* the requirement's name (``bundle_rollback_is_refused``),
its docstring's first line the one-line statement, ``section`` the part of
``docs/protocol.md`` it checks, ``tags`` what ``--only`` / ``--skip`` select on, and
``needs`` the adapter capabilities it cannot run without. A check raises
:class:`CheckFailed` with an actionable message when the lock breaks the requirement,
or :class:`NotApplicable` when it cannot judge this lock; it returns an optional detail
line when the lock passes. Modules of checks register themselves on import
(:func:`catalogue` imports them all).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .session import Session

__all__ = ["CheckFailed", "NotApplicable", "Requirement", "catalogue", "requirement"]

CheckFunction = Callable[["Session"], "str | None"]


class CheckFailed(AssertionError):
    """The lock under test breaks the requirement; the message says how."""


class NotApplicable(Exception):
    """The requirement cannot be judged on this lock (a capability is missing)."""


@dataclass(frozen=True)
class Requirement:
    """One requirement of the catalogue and the check that judges it."""

    name: str
    title: str
    section: str
    tags: frozenset[str]
    needs: frozenset[str]
    check: CheckFunction


_REGISTRY: dict[str, Requirement] = {}


def requirement(
    *, section: str, tags: tuple[str, ...], needs: tuple[str, ...] = ()
) -> Callable[[CheckFunction], CheckFunction]:
    """Register the decorated function as the check of the requirement it is named after."""

    def register(check: CheckFunction) -> CheckFunction:
        name = check.__name__
        if name in _REGISTRY:
            raise ValueError(f"requirement {name} is registered twice")
        title = (check.__doc__ or name).strip().splitlines()[0]
        _REGISTRY[name] = Requirement(
            name, title, section, frozenset(tags), frozenset(needs), check
        )
        return check

    return register


def catalogue() -> tuple[Requirement, ...]:
    """Every registered requirement, in catalogue order (frame, bundle, access, control,
    transport; within a module, in the order written)."""
    from . import checks_frame, checks_bundle, checks_access, checks_control  # noqa: I001
    from . import checks_transport

    del checks_frame, checks_bundle, checks_access, checks_control, checks_transport
    return tuple(_REGISTRY.values())
