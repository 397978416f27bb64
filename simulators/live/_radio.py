"""A BLE face whose links can be made to drop in the middle of a transfer.

Theory of operation: a ``ble_link_loss`` fault makes every phone's link to one door drop
part-way through a visit (DESIGN.md, "a dropped link resumes without applying anything
twice"). :class:`LossyBleDoor` is the lock's ordinary
:class:`~controller.ble_door.BleDoor` with one change on the air: while :attr:`lossy` is
set, the first segment a phone writes after the connection's first complete frame (the
AUTH, so the lock has decided and opened) is lost and the link drops there — the bundle
or audit ack that segment began never reaches the lock whole. The lock applies nothing
from a cut transfer; the phone keeps what it carried and delivers it at its next visit.
"""

from __future__ import annotations

import asyncio
import logging

from bumble.core import BaseBumbleError
from bumble.device import Connection

from controller.ble_door import BleDoor
from controller.events import Connected, Event, FrameReceived

__all__ = ["LossyBleDoor"]

log = logging.getLogger(__name__)


class LossyBleDoor(BleDoor):
    """A :class:`BleDoor` whose links drop mid-visit while :attr:`lossy` is set."""

    lossy: bool = False
    drops: int = 0
    """Links dropped by the fault."""

    def _on_rx_write(self, connection: Connection, value: bytes) -> None:
        frames = self._frames_seen()
        seen = frames.get(connection.handle, 0)
        if seen < 0:
            return  # the link is dropping: nothing more crosses it
        if self.lossy and seen >= 1:
            frames[connection.handle] = -1
            self.drops += 1
            asyncio.get_running_loop().create_task(self._drop(connection))
            return
        super()._on_rx_write(connection, value)

    def _feed(self, event: Event) -> None:
        frames = self._frames_seen()
        if isinstance(event, Connected):
            frames[event.channel.number] = 0  # handles are reused: a new link starts at 0
        elif isinstance(event, FrameReceived) and event.channel.transport == "ble":
            number = event.channel.number
            frames[number] = frames.get(number, 0) + 1
        super()._feed(event)

    def _frames_seen(self) -> dict[int, int]:
        """Complete frames per connection handle (-1: dropped by the fault)."""
        frames: dict[int, int] | None = getattr(self, "_live_frames", None)
        if frames is None:
            frames = {}
            self._live_frames = frames
        return frames

    async def _drop(self, connection: Connection) -> None:
        try:
            await connection.disconnect()
        except BaseBumbleError as error:
            log.debug("link loss: the link was gone already: %s", error)
