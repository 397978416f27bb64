"""The adapter-process client: a lock under test behind a program's stdin/stdout.

Theory of operation: :class:`ProcessLock` starts the integrator's adapter command once
and sends it one JSON-lines request per :class:`~conformance.lut.LockUnderTest` call
(:mod:`conformance.jsonlines` encodes the values). Replies are read by a thread into a
queue, so a hung adapter is a timeout (:class:`~conformance.lut.AdapterError`), not a
hung suite; stderr is kept (the last lines) to explain a crash. The adapter must answer
requests in order and echo their ``id``; anything else is an AdapterError that names
the offending line.
"""

from __future__ import annotations

import collections
import contextlib
import json
import queue
import shlex
import subprocess
import threading
from collections.abc import Callable, Sequence
from typing import IO, Any

from .jsonlines import (
    ProtocolViolation,
    observed_from,
    outputs_from,
    provision_to,
    registration_from,
)
from .lut import AdapterError, Channel, LockUnderTest, Observed, Outputs, ProvisionRequest
from .lut import Registration as LutRegistration

__all__ = ["ProcessLock"]

_EOF = object()


class ProcessLock(LockUnderTest):
    """A lock reached through an adapter program speaking JSON lines."""

    def __init__(self, command: str | Sequence[str], *, timeout: float = 30.0) -> None:
        argv = shlex.split(command) if isinstance(command, str) else list(command)
        if not argv:
            raise AdapterError("the adapter command is empty")
        self.timeout = timeout
        try:
            self._process = subprocess.Popen(
                argv,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                encoding="utf-8",
                bufsize=1,
            )
        except OSError as exc:
            raise AdapterError(f"cannot start the adapter {argv[0]!r}: {exc.strerror}") from None
        self._lines: queue.Queue[object] = queue.Queue()
        self._stderr: collections.deque[str] = collections.deque(maxlen=20)
        self._ids = 0
        self._broken: str | None = None
        """Why the adapter can no longer be trusted to answer in turn (e.g. a timeout)."""
        assert self._process.stdout is not None and self._process.stderr is not None
        self._threads = (
            _reader(self._process.stdout, self._lines.put, lambda: self._lines.put(_EOF)),
            _reader(self._process.stderr, self._stderr.append, lambda: None),
        )

    # --- the protocol --------------------------------------------------------------------

    def _call(self, op: str, **fields: Any) -> dict[str, Any]:
        if self._broken is not None:
            raise AdapterError(f"{op}: not sent; the adapter broke down earlier ({self._broken})")
        self._ids += 1
        request = {"id": self._ids, "op": op, **fields}
        stdin = self._process.stdin
        try:
            assert stdin is not None
            stdin.write(json.dumps(request) + "\n")
            stdin.flush()
        except (OSError, ValueError):
            raise AdapterError(f"the adapter is gone ({self._exit()}){self._tail()}") from None
        reply = self._reply(op)
        if reply.get("id") != self._ids:
            self._broken = "its replies are out of turn"
            raise AdapterError(f"{op}: reply id {reply.get('id')!r}, expected {self._ids}")
        if "ok" not in reply:
            self._broken = "it answers with something that is not a reply"
            raise AdapterError(f"{op}: the adapter's line has no 'ok' field: {str(reply)[:80]}")
        if reply["ok"] is not True:
            raise AdapterError(f"{op}: {reply.get('error', 'failed without a message')}")
        return reply

    def _reply(self, op: str) -> dict[str, Any]:
        try:
            line = self._lines.get(timeout=self.timeout)
        except queue.Empty:
            self._broken = f"no reply to {op} within {self.timeout} s"
            raise AdapterError(f"{op}: no reply within {self.timeout} s{self._tail()}") from None
        if line is _EOF:
            raise AdapterError(f"{op}: the adapter exited ({self._exit()}){self._tail()}")
        try:
            reply = json.loads(str(line))
        except ValueError:
            reply = None
        if not isinstance(reply, dict):
            self._broken = f"it wrote {str(line)[:80]!r}"
            raise AdapterError(f"{op}: the adapter wrote a non-JSON line: {str(line)[:80]!r}")
        return reply

    def _exit(self) -> str:
        code = self._process.poll()
        return "still running" if code is None else f"exit status {code}"

    def _tail(self) -> str:
        if not self._stderr:
            return ""
        return f"; its stderr ends: {' | '.join(s.strip() for s in self._stderr)}"

    def _outputs(self, op: str, **fields: Any) -> Outputs:
        reply = self._call(op, **fields)
        try:
            return outputs_from(reply)
        except ProtocolViolation as exc:
            raise AdapterError(f"{op}: {exc}") from None

    # --- LockUnderTest -------------------------------------------------------------------

    def provision(self, request: ProvisionRequest) -> LutRegistration:
        reply = self._call("provision", **provision_to(request))
        try:
            return registration_from(reply)
        except ProtocolViolation as exc:
            raise AdapterError(f"provision: {exc}") from None

    def connect(self, channel: Channel) -> Outputs:
        return self._outputs("connect", channel=str(channel))

    def disconnect(self, channel: Channel) -> Outputs:
        return self._outputs("disconnect", channel=str(channel))

    def deliver(self, channel: Channel, frame: bytes) -> Outputs:
        return self._outputs("deliver", channel=str(channel), frame=frame.hex())

    def deliver_segment(self, channel: Channel, segment: bytes) -> Outputs:
        return self._outputs("deliver_segment", channel=str(channel), segment=segment.hex())

    def tap_card(self, uid: bytes) -> Outputs:
        return self._outputs("tap_card", uid=uid.hex())

    def answer_card(self, uid: bytes, response: bytes) -> Outputs:
        return self._outputs("answer_card", uid=uid.hex(), response=response.hex())

    def press_keys(self, keys: str) -> Outputs:
        return self._outputs("press_keys", keys=keys)

    def advance(self, seconds: float) -> Outputs:
        return self._outputs("advance", seconds=seconds)

    def observe(self) -> Observed:
        reply = self._call("observe")
        try:
            return observed_from(reply)
        except ProtocolViolation as exc:
            raise AdapterError(f"observe: {exc}") from None

    def power_cut(self) -> None:
        self._call("power_cut")

    def arm_power_cut(self, at_write: int, landed: float = 0.5) -> None:
        self._call("arm_power_cut", at_write=at_write, landed=landed)

    def restart(self) -> Outputs:
        return self._outputs("restart")

    def close(self) -> None:
        """Say ``bye``, then wait briefly; end the adapter if it does not exit."""
        if self._process.poll() is None and self._broken is None:
            with contextlib.suppress(AdapterError):
                self._call("bye")
        if self._process.poll() is None:
            try:
                self._process.wait(timeout=0 if self._broken else 5)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        for thread in self._threads:
            thread.join(timeout=5)
        for stream in (self._process.stdin, self._process.stdout, self._process.stderr):
            if stream is not None:
                stream.close()


def _reader(
    stream: IO[str], on_line: Callable[[str], object], on_end: Callable[[], object]
) -> threading.Thread:
    """Pump ``stream`` line by line on a daemon thread until end of file."""

    def pump() -> None:
        for line in stream:
            on_line(line)
        on_end()

    thread = threading.Thread(target=pump, daemon=True)
    thread.start()
    return thread
