# evloop/daemon.py
#
# run_daemon(): what every daemon's main() ends with, in one call. Run the
# loop until SIGTERM or SIGINT (or loop.stop()), then shut every service down
# together: Servers stop accepting and drain their Conns, Pools finish or
# fail their requests and stop their workers, anything else is closed; all
# within one deadline. A second signal during the shutdown means "now":
# whatever is left is aborted. The return value is the process exit status.
#
# A service is anything with shutdown(deadline, callback) (Server, Pool) or
# with close() and a `closed` property (Conn, Pipe, Worker).
"""run_daemon(): run a loop until SIGTERM/SIGINT, then shut every service down within one deadline. The comment that opens the source file gives the design and its invariants."""

from __future__ import annotations

import logging
import signal
from collections.abc import Callable, Iterable
from typing import Any, Protocol

from .loop import Loop

__all__ = ["run_daemon", "Service"]

log = logging.getLogger("evloop")

# How long after the deadline the shutdown may still take (a Pool's escalating
# stop of its workers) before run_daemon gives up and aborts.
_GRACE = 5.0


class Service(Protocol):
    """What run_daemon can shut down: shutdown(deadline, callback), or
    close() plus a `closed` property."""

    def close(self) -> None: ...


def run_daemon(
    loop: Loop,
    *services: Any,
    signals: Iterable[int] = (signal.SIGTERM, signal.SIGINT),
    deadline: float = 10.0,
    on_signal: Callable[[int], Any] | None = None,
) -> int:
    """Run `loop` until one of `signals` arrives or loop.stop() is called,
    then shut `services` down within `deadline` seconds (see the module
    header) and return the exit status: 0 when everything finished, 1 when
    something had to be aborted after a second signal or did not finish
    even `_GRACE` seconds past the deadline. on_signal(signum) runs first,
    on the loop. Main thread only (signal handlers)."""
    if deadline <= 0:
        raise ValueError(f"deadline must be > 0, got {deadline}")
    sigs = tuple(signals)
    got: list[int] = []

    def on_sig(signum: int) -> None:
        got.append(signum)
        if len(got) == 1:
            log.info(
                "evloop: %s: shutting down (deadline %g s)", signal.Signals(signum).name, deadline
            )
            if on_signal is not None:
                on_signal(signum)
        else:
            log.warning("evloop: %s again: aborting what is left", signal.Signals(signum).name)
        loop.stop()

    for sig in sigs:
        loop.add_signal_handler(sig, on_sig, sig)
    try:
        loop.run()
        pending: set[int] = set()
        closables: list[Any] = []
        for i, svc in enumerate(services):
            if hasattr(svc, "shutdown"):
                pending.add(i)
                svc.shutdown(deadline, callback=lambda _svc, i=i: pending.discard(i))
            else:
                svc.close()
                closables.append(svc)
        # The signal that stopped the loop starts the shutdown; any other
        # (even one that came in the same turn) hurries it.
        hurry_at = 2 if got else 1

        def hurried() -> bool:
            return len(got) >= hurry_at

        def finished() -> bool:
            return hurried() or (not pending and all(s.closed for s in closables))

        done = loop.run_until(finished, timeout=deadline + _GRACE)
        if done and not hurried():
            return 0
        if not hurried():
            log.error("evloop: shutdown still not finished %g s past its deadline", _GRACE)
        for svc in services:
            abort = getattr(svc, "abort", None)
            if abort is not None:
                abort()
        loop.run_once(0)  # let the close callbacks run
        return 1
    finally:
        for sig in sigs:
            loop.remove_signal_handler(sig)
