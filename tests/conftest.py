# Shared fixtures. The `loop` fixture is the leak detector: it fails a test
# that leaves an fd open after Loop.close(), or whose callbacks raised into
# the loop's exception handler without the test claiming the error.
from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from hypothesis import settings

import evloop

# CI runs a fixed, derandomized set of property-test examples, so a submission
# cannot fail on a case no developer ever saw; local runs keep exploring new
# random examples (and HYPOTHESIS_PROFILE=ci reproduces CI's set).
settings.register_profile("ci", derandomize=True, deadline=None, print_blob=True)
settings.register_profile("dev", deadline=None, print_blob=True)
settings.load_profile(
    os.environ.get("HYPOTHESIS_PROFILE") or ("ci" if os.environ.get("CI") else "dev")
)


def open_fds() -> dict[int, str]:
    """fd -> what it points at, for this process (minus the listing's own fd)."""
    out = {}
    for name in os.listdir("/proc/self/fd"):
        try:
            out[int(name)] = os.readlink(f"/proc/self/fd/{name}")
        except FileNotFoundError:
            pass  # the fd of the directory listing itself, already gone
    return out


class LoopErrors(list):
    """Exceptions that reached the loop's handler; a test that expects some
    takes them with claim()."""

    def claim(self, kind: type[BaseException]) -> BaseException:
        for i, (exc, _cb) in enumerate(self):
            if isinstance(exc, kind):
                del self[i]
                return exc
        raise AssertionError(f"no {kind.__name__} reached the loop handler: {list(self)}")


def _checked_loop(**kwargs: object) -> Iterator[evloop.Loop]:
    before = open_fds()
    errors = LoopErrors()
    lp = evloop.Loop(**kwargs)  # type: ignore[arg-type]
    lp.set_exception_handler(lambda exc, cb: errors.append((exc, cb)))
    lp.errors = errors  # type: ignore[attr-defined]
    yield lp
    lp.close()
    leaked = {fd: what for fd, what in open_fds().items() if fd not in before}
    assert not leaked, f"fds left open after Loop.close(): {leaked}"
    assert not errors, f"unexpected exceptions in loop callbacks: {list(errors)}"


@pytest.fixture
def loop() -> Iterator[evloop.Loop]:
    yield from _checked_loop()


@pytest.fixture
def vloop() -> Iterator[evloop.Loop]:
    """The `loop` fixture on a VirtualClock that jumps to the next timer as
    soon as the loop is idle: timeouts take no real time."""
    from evloop.testing import VirtualClock

    yield from _checked_loop(clock=VirtualClock())


@pytest.fixture
def vloop_slow() -> Iterator[evloop.Loop]:
    """A VirtualClock loop that waits 50 ms of real idleness before jumping,
    for tests where another process must answer before time moves."""
    from evloop.testing import VirtualClock

    yield from _checked_loop(clock=VirtualClock(autojump_threshold=0.05))


def drain(conn: evloop.Conn, into: bytearray) -> None:
    """An on_data callback that takes everything."""
    view = conn.read()
    into += view
    n = len(view)
    view.release()
    conn.consume(n)
