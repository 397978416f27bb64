"""Background checkpoints of a SQLite write-ahead log, off the committing thread.

Theory of operation: in WAL mode with ``synchronous=NORMAL`` a commit appends its pages
to the log without waiting for the disk; the disk is waited on at checkpoints, which sync
the log and copy it into the database file. By default SQLite runs a checkpoint inside
whichever commit finds the log over 1,000 pages, so every ~80th keycard change paid for
syncing ~4 MB of log (3 to 8 ms here), about a tenth of the cloud's time per change.

A :class:`Checkpointer` does that work on a thread of its own, with its own connection
(SQLite releases the interpreter lock while it syncs and copies, so a second core does
it): :meth:`Checkpointer.nudge` after a commit wakes it, and it runs passive checkpoints
(they never block readers or writers) at most every :data:`INTERVAL_S` while commits keep
coming, then closes its connection and ends after :data:`IDLE_S` without one; the next
nudge starts it again. Under a writer that never pauses a passive checkpoint can never
find the whole log copied, which SQLite needs to start the log over, so connections keep
an automatic checkpoint as a backstop at :data:`BACKSTOP_PAGES` (the log then stays
bounded; the backstop finds it already synced by this thread and is cheap).
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from pathlib import Path
from typing import Final

__all__ = ["BACKSTOP_PAGES", "IDLE_S", "INTERVAL_S", "Checkpointer"]

INTERVAL_S: Final = 0.1
"""At most this often while commits come. Each checkpoint syncs the disk twice; at 10 ms
the syncs and the thread's turns slowed a burst of 1,000 small transactions (an MQTT
fan-out's receipts) from 0.9 to 1.6-2.0 s; at 100 ms they cost nothing measurable there
and a keycard change is still ~4 % cheaper than with checkpoints inside commits."""
IDLE_S: Final = 1.0
"""Without a commit this long, the thread closes its connection and ends."""
BACKSTOP_PAGES: Final = 4000
"""``wal_autocheckpoint`` of the cloud's connections (SQLite's default is 1,000)."""

_log = logging.getLogger(__name__)


class Checkpointer:
    """Passive checkpoints of the database file at ``path``, on a thread while it is written."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._wake = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self.checkpoints = 0
        """Checkpoints run so far (for tests and curiosity)."""

    def nudge(self) -> None:
        """Say a commit happened: checkpoint soon, starting the thread if it ended."""
        self._wake.set()
        if self._thread is None:
            with self._lock:
                if self._thread is None:
                    self._thread = threading.Thread(
                        target=self._run, name=f"wal-checkpoint {self.path.name}", daemon=True
                    )
                    self._thread.start()

    def running(self) -> bool:
        """Whether the thread is alive (it ends after :data:`IDLE_S` without a nudge)."""
        thread = self._thread
        return thread is not None and thread.is_alive()

    def join(self, timeout: float | None = None) -> None:
        """Wait for the thread to end (it does once no commit came for :data:`IDLE_S`)."""
        thread = self._thread
        if thread is not None:
            thread.join(timeout)

    def _run(self) -> None:
        connection: sqlite3.Connection | None = None
        try:
            connection = sqlite3.connect(  # never creates the file: it must exist
                f"{self.path.resolve().as_uri()}?mode=rw", uri=True, isolation_level=None, timeout=0
            )
            connection.execute("PRAGMA synchronous=NORMAL")
            while self._wake.wait(IDLE_S):
                self._wake.clear()
                connection.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
                self.checkpoints += 1
                time.sleep(INTERVAL_S)  # one per interval at most, however many commits
        except sqlite3.Error as exc:  # the file went away, say: the backstop remains
            _log.warning("background checkpoints of %s stopped: %s", self.path, exc)
        finally:
            if connection is not None:
                connection.close()
            with self._lock:
                self._thread = None
            if self._wake.is_set():  # a nudge raced the ending
                self.nudge()
