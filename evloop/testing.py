# evloop/testing.py
#
# Tools for testing code that runs on a Loop, shipped with the library so
# users can test their own daemons the way evloop tests itself.
#
# VirtualClock makes time a variable: a Loop built with `Loop(clock=c)` reads
# c.time() wherever it needs "now", and when it would sleep waiting for a
# timer, the clock jumps forward to that timer instead (after
# `autojump_threshold` real seconds of idleness, 0 by default). A test of a
# 30-second keepalive then takes microseconds and never depends on how busy
# the machine is. Fds are still real: a virtual clock only decides what
# happens when nothing else does. (trio's MockClock(autojump_threshold=0) is
# the model.)
#
# With a peer in another process, give the peer time to answer before time
# jumps: autojump_threshold=0.05 waits 50 ms of real idleness first.
"""Tools for testing code that runs on a Loop: VirtualClock. The comment that opens the source file gives the design and its invariants."""

from __future__ import annotations

import math

__all__ = ["VirtualClock"]


class VirtualClock:
    """A controllable clock for `Loop(clock=...)`; see the module header.

    `time()` starts at `start` and moves only by `advance(dt)` or by an
    autojump to the next timer when the loop is idle. Implements
    evloop.loop.Clock."""

    def __init__(self, start: float = 0.0, *, autojump_threshold: float = 0.0):
        if not math.isfinite(start):
            raise ValueError(f"start must be finite, got {start!r}")
        if not (autojump_threshold >= 0 and math.isfinite(autojump_threshold)):
            raise ValueError(
                f"autojump_threshold must be a finite number >= 0, got {autojump_threshold!r}"
            )
        self._now = float(start)
        self.autojump_threshold = autojump_threshold
        self.jumps = 0  # how many times the clock jumped to a timer

    def time(self) -> float:
        return self._now

    def advance(self, dt: float) -> None:
        """Move the clock forward by dt >= 0 seconds (timers that become due
        run on the loop's next turn)."""
        if not (dt >= 0 and math.isfinite(dt)):
            raise ValueError(f"can only advance by a finite dt >= 0, got {dt!r}")
        self._now += dt

    # -- the Clock protocol -------------------------------------------------

    def real_timeout(self, timeout: float) -> float:
        return min(timeout, self.autojump_threshold)

    def idle(self, timeout: float) -> None:
        # Nothing happened for autojump_threshold real seconds: jump to the
        # timer the loop was going to wait for.
        self._now += timeout
        self.jumps += 1

    def __repr__(self) -> str:
        return f"<VirtualClock t={self._now:.6f} jumps={self.jumps}>"
