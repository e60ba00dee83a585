"""SIGTERM as a request that long work honours at its next safe point.

The handler raises SystemExit at once, which unwinds through the writers (they remove their partial
files) in the usual case. When the signal lands where an exception is swallowed (inside a weakref
callback or a ``__del__``), Python prints it and carries on; so the handler also records the signal,
and :func:`check` (called by every progress bar on each advance) raises it again there.
"""

from __future__ import annotations

_received: int | None = None


def on_sigterm(signum, frame) -> None:  # noqa: ARG001 - the signal module's signature
    global _received
    _received = signum
    raise SystemExit(128 + signum)


def check() -> None:
    """Raise the SystemExit of a SIGTERM that arrived earlier and was swallowed."""
    if _received is not None:
        raise SystemExit(128 + _received)


def reset() -> None:
    """Forget a received signal (tests, and a library user who handled it)."""
    global _received
    _received = None
