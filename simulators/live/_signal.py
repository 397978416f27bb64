"""A phone's mobile signal: an HTTP transport that can be switched off.

Theory of operation: a live phone's :class:`~phone_bridge.cloud_client.CloudClient` talks
to the cloud through a :class:`Signal`, which wraps httpx's own transport. While
:attr:`Signal.online` is False every request fails as a refused connection would
(``httpx.ConnectError``), before any byte is sent; the phone then works as it does
without signal — it opens doors over BLE with the bundles it holds and keeps receipts
and audit batches in its store-and-forward queue, drained once the signal is back. The
phone code is not told about the fault; it sees only what a phone would.
"""

from __future__ import annotations

import httpx

__all__ = ["Signal"]


class Signal(httpx.AsyncBaseTransport):
    """An HTTP transport with an on/off switch (a phone's mobile data)."""

    def __init__(self) -> None:
        self.online = True
        self.refused = 0
        """Requests refused while offline."""
        self._inner = httpx.AsyncHTTPTransport()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if not self.online:
            self.refused += 1
            raise httpx.ConnectError("no mobile signal (phone_offline fault)", request=request)
        return await self._inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self._inner.aclose()
