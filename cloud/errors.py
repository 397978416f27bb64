"""The cloud's errors: each names who must act and how (rendered as problem+json).

Theory of operation: every refusal is a :class:`CloudError` with an HTTP status, a
short title and a reason a person can act on. The service raises them before it
changes anything; the API turns them into ``application/problem+json``.

A refusal's transaction is rolled back, except for an error class marked
``commit_before_raise``: the request's transaction is committed, then the error
answered. Only :class:`WrongCodeError` is, so that a wrong activation code counts
against the rate limit; the service raises it having changed nothing but the rate
limit's own rows (the new attempt, and expired ones deleted).
"""

from __future__ import annotations

__all__ = [
    "CloudError",
    "ConflictError",
    "ForbiddenError",
    "InvalidInputError",
    "NotFoundError",
    "PortfolioRuleError",
    "RateLimitedError",
    "UnauthenticatedError",
    "WrongCodeError",
]


class CloudError(Exception):
    """Base of every refusal. ``status`` is the HTTP status to answer with."""

    status = 400
    title = "Bad request"
    commit_before_raise = False
    """True: the request's transaction is committed, not rolled back, before answering."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class InvalidInputError(CloudError):
    status, title = 422, "Invalid input"


class WrongCodeError(InvalidInputError):
    """A wrong activation code (or card number): the same answer whichever was wrong.

    Its transaction is committed: it holds the failed attempt the rate limit counts.
    """

    commit_before_raise = True


class UnauthenticatedError(CloudError):
    status, title = 401, "Not signed in"


class ForbiddenError(CloudError):
    status, title = 403, "Not allowed"


class PortfolioRuleError(ForbiddenError):
    """A manager acted for a person whose access reaches outside the manager's portfolios."""

    title = "Outside your portfolio"


class NotFoundError(CloudError):
    status, title = 404, "Not found"


class ConflictError(CloudError):
    status, title = 409, "Conflict"


class RateLimitedError(CloudError):
    status, title = 429, "Too many attempts"
