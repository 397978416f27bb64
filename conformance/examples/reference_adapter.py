"""A minimal adapter program: our reference controller behind the JSON-lines protocol.

Theory of operation: ``lock-conformance --adapter process --command "python -m
conformance.examples.reference_adapter"`` starts this program and talks to it on
stdin/stdout (``docs/conformance.md`` gives the messages). It wraps the in-process
reference lock in :func:`conformance.serve.serve`; an integrator replaces
:class:`~conformance.inprocess.InProcessLock` with a class that forwards each call to
their firmware (compiled for the host, or on a board over a serial line), or writes the
same read-a-line, answer-a-line loop in C. Logs go to stderr: stdout carries only
replies.
"""

from __future__ import annotations

import sys

from conformance.inprocess import InProcessLock
from conformance.serve import serve


def main() -> int:
    serve(InProcessLock(), sys.stdin, sys.stdout)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
