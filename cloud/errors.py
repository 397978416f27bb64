"""The cloud's errors: each names who must act and how (rendered as problem+json).

Theory of operation: every refusal is a :class:`CloudError` with an HTTP status, a
short title and a reason a person can act on. The service raises them before it
changes anything; the API turns them into ``application/problem+json``.
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
]


class CloudError(Exception):
    """Base of every refusal. ``status`` is the HTTP status to answer with."""

    status = 400
    title = "Bad request"

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class InvalidInputError(CloudError):
    status, title = 422, "Invalid input"


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
