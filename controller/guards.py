"""Small timed guards of the access path: failure lockout and the keypad buffer.

Theory of operation: both are sans-IO and take ``now`` (seconds on the lock's
monotonic clock) as an argument. :class:`Lockout` counts failures per credential
in a sliding window and locks that credential out for a while once the count
reaches the threshold. :class:`KeypadBuffer` collects digits and forgets them
when the next key comes too late.
"""

from __future__ import annotations

from collections import deque

__all__ = ["KeypadBuffer", "Lockout"]


class Lockout:
    """After ``failures`` failed attempts within ``window`` seconds, refuse for ``duration``."""

    def __init__(self, *, failures: int, window: float, duration: float) -> None:
        self.failures, self.window, self.duration = failures, window, duration
        self._attempts: dict[bytes, deque[float]] = {}
        self._until: dict[bytes, float] = {}

    def is_locked(self, credential: bytes, now: float) -> bool:
        """True while ``credential`` is locked out."""
        until = self._until.get(credential)
        if until is None:
            return False
        if now < until:
            return True
        del self._until[credential]
        return False

    def record_failure(self, credential: bytes, now: float) -> bool:
        """Count a failure; return True when it starts a lockout."""
        attempts = self._attempts.setdefault(credential, deque())
        attempts.append(now)
        while attempts and attempts[0] <= now - self.window:
            attempts.popleft()
        if len(attempts) < self.failures:
            return False
        self._until[credential] = now + self.duration
        del self._attempts[credential]
        return True

    def record_success(self, credential: bytes) -> None:
        """A success clears the credential's failure history."""
        self._attempts.pop(credential, None)

    def next_deadline(self) -> float | None:
        """When the earliest lockout ends."""
        return min(self._until.values(), default=None)

    def expire(self, now: float) -> None:
        """Forget lockouts and failure windows that are over (bounds memory)."""
        if self._until:
            self._until = {k: t for k, t in self._until.items() if t > now}
        if self._attempts:
            self._attempts = {
                k: d for k, d in self._attempts.items() if d and d[-1] > now - self.window
            }


class KeypadBuffer:
    """Digits typed so far; forgotten ``timeout`` seconds after the last key."""

    def __init__(self, *, length: int, timeout: float) -> None:
        self.length, self.timeout = length, timeout
        self._digits = ""
        self._last = 0.0

    def press(self, key: str, now: float) -> str | None:
        """Add one key; return the whole code once ``length`` digits are in."""
        if self._digits and now - self._last >= self.timeout:
            self._digits = ""
        self._last = now
        self._digits += key
        if len(self._digits) < self.length:
            return None
        code, self._digits = self._digits, ""
        return code

    def next_deadline(self) -> float | None:
        """When the typed digits will be forgotten."""
        return self._last + self.timeout if self._digits else None

    def expire(self, now: float) -> None:
        """Forget the digits if the timeout passed."""
        if self._digits and now - self._last >= self.timeout:
            self._digits = ""
