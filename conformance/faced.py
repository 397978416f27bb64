"""The reference lock reached through one of its faces, with a side channel to the rest.

Theory of operation: the BLE and MQTT adapters (:mod:`conformance.ble`,
:mod:`conformance.mqtt`) drive the reference lock through a real face on an event loop
that runs in a thread of its own, so the suite's synchronous calls block on
:meth:`FacedLock._run` (bounded by ``timeout``; a face's own errors become
:class:`~conformance.lut.AdapterError` through :meth:`FacedLock._face_error`). What the
face cannot carry — cards, keypad, the clock, observation — goes straight to the
in-process lock it serves (:meth:`FacedLock._inner_call`), on that same loop, so it
never races the face.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from .inprocess import InProcessLock
from .lut import AdapterError, LockUnderTest, Observed, Outputs

__all__ = ["FacedLock"]

_T = TypeVar("_T")


class FacedLock(LockUnderTest):
    """Base of the adapters that reach the reference lock through a face (see above)."""

    face = "face"
    """Named in timeout errors: ``the BLE step took over 10 s``."""

    def __init__(self, inner: InProcessLock | None, *, timeout: float) -> None:
        self._inner = inner or InProcessLock()
        self._timeout = timeout
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()

    def _face_error(self, exc: Exception) -> AdapterError | None:
        """The face library's error as an adapter error (None: not the face's)."""
        return None

    def _run(self, work: Coroutine[Any, Any, _T], timeout: float | None = None) -> _T:
        future = asyncio.run_coroutine_threadsafe(work, self._loop)
        limit = self._timeout if timeout is None else timeout
        try:
            return future.result(timeout=limit)
        except TimeoutError:
            future.cancel()
            raise AdapterError(f"the {self.face} step took over {limit:g} s") from None
        except Exception as exc:
            error = self._face_error(exc)
            if error is None:
                raise
            raise error from exc

    def _inner_call(self, call: Callable[[], _T]) -> _T:
        async def on_loop() -> _T:
            return call()

        return self._run(on_loop())

    # --- the side channel ----------------------------------------------------------------

    def tap_card(self, uid: bytes) -> Outputs:
        return self._inner_call(lambda: self._inner.tap_card(uid))

    def answer_card(self, uid: bytes, response: bytes) -> Outputs:
        return self._inner_call(lambda: self._inner.answer_card(uid, response))

    def press_keys(self, keys: str) -> Outputs:
        return self._inner_call(lambda: self._inner.press_keys(keys))

    def advance(self, seconds: float) -> Outputs:
        return self._inner_call(lambda: self._inner.advance(seconds))

    def observe(self) -> Observed:
        return self._inner_call(self._inner.observe)
