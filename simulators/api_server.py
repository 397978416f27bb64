"""The cloud API under uvicorn on 127.0.0.1, in a thread beside an event loop.

Theory of operation: :class:`ApiServer` runs ``uvicorn.Server.run`` in a daemon thread
(the ASGI app and its database sessions live there; the caller's loop stays free for
brokers, radios and phones), waits on the caller's loop until uvicorn serves, and
remembers the port, so a stopped server starts again on the same URL (a cloud restart
in a simulated building). :func:`served` is the one-shot form.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator
from typing import Final

import uvicorn
from starlette.types import ASGIApp

__all__ = ["ApiServer", "ApiServerError", "served"]

_POLL_S: Final = 0.002


class ApiServerError(Exception):
    """uvicorn stopped before it served (e.g. the port is taken)."""


class ApiServer:
    """The cloud API under uvicorn on 127.0.0.1 in a thread; restartable on its port."""

    def __init__(self, app: ASGIApp, *, timeout_s: float) -> None:
        self.app, self.timeout_s, self.port = app, timeout_s, 0
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def running(self) -> bool:
        return self._server is not None

    async def start(self) -> str:
        """Serve (on a free port the first time, on the same port after); return the URL."""
        config = uvicorn.Config(
            self.app,
            host="127.0.0.1",
            port=self.port,
            log_level="warning",
            access_log=False,
            lifespan="off",
        )
        server = uvicorn.Server(config)
        thread = threading.Thread(target=server.run, name="doorsim-api", daemon=True)
        self._server, self._thread = server, thread
        thread.start()
        async with asyncio.timeout(self.timeout_s):
            while not server.started:
                if not thread.is_alive():
                    self._server = None
                    raise ApiServerError("the cloud API (uvicorn) stopped before it served")
                await asyncio.sleep(_POLL_S)
        self.port = server.servers[0].sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{self.port}"

    async def stop(self) -> None:
        server, thread = self._server, self._thread
        self._server = self._thread = None
        if server is not None and thread is not None:
            server.should_exit = True
            await asyncio.to_thread(thread.join, self.timeout_s)


@contextlib.asynccontextmanager
async def served(app: ASGIApp, *, timeout_s: float = 10.0) -> AsyncIterator[str]:
    """Serve ``app`` with uvicorn on 127.0.0.1 at a free port in a thread; yield its URL."""
    server = ApiServer(app, timeout_s=timeout_s)
    try:
        yield await server.start()
    finally:
        await server.stop()
