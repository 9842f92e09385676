# evloop/aio.py
#
# A bridge to asyncio, both ways, in one thread (docs/asyncio.md).
#
# Driving. An evloop Loop's fileno() is its epoll fd, and an epoll fd is
# itself pollable: it is readable whenever one of the fds it watches has an
# event. Bridge(loop) registers it with the running asyncio loop
# (add_reader) and runs one evloop turn, run_once(0), whenever it is
# readable, and again when loop.next_timeout() says a timer, a callback or
# a ready source is due (call_soon / call_later on the asyncio loop). Work
# that asyncio code hands to evloop from outside a turn (a task woken by an
# asyncio future) makes the evloop Loop write its eventfd (the task runner
# does this), so the epoll fd turns readable and a turn follows.
#
# Calls from asyncio code into evloop (pool.request(), pipe.write_frame())
# queue work that only a turn finishes (writes leave at the end of a turn),
# and nothing announces that to asyncio: wrap() and from_asyncio() kick
# every active Bridge (schedule a turn at once); code that calls evloop
# directly from asyncio without them calls bridge.kick().
#
# Converting. wrap(x) turns an evloop Future, Request, Task or coroutine
# into an asyncio Future on the running asyncio loop; from_asyncio(aw, loop)
# turns an asyncio coroutine or future into an evloop Future (the coroutine
# runs as an asyncio Task). Cancellation crosses both ways: cancelling the
# asyncio side cancels the evloop side (a Request is withdrawn, a Task is
# cancelled), and a cancelled evloop wait on from_asyncio() cancels the
# asyncio task.
#
# Rules: one thread. Both loops run in the thread that runs asyncio; never
# call the evloop Loop's run()/run_until() while it is bridged (that would
# block asyncio), and never touch either loop from another thread except
# through call_soon_threadsafe.
from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Coroutine
from types import TracebackType
from typing import Any

from .errors import CancelledError, LoopClosedError
from .future import Future
from .loop import Loop
from .tasks import Task, create_task

__all__ = ["Bridge", "wrap", "from_asyncio"]


class Bridge:
    """Run `loop` inside the running asyncio loop: `start()` (or
    `async with Bridge(loop):`) until `close()`. Counts the turns it ran
    (`turns`)."""

    def __init__(self, loop: Loop, aloop: asyncio.AbstractEventLoop | None = None):
        self.loop = loop
        self.aloop = aloop
        self.turns = 0
        self._fd = -1
        self._timer: asyncio.TimerHandle | asyncio.Handle | None = None
        self._timer_at = math.inf
        self._in_turn = False

    def kick(self) -> None:
        """Run a turn soon: after asyncio code called into evloop directly."""
        if self._fd >= 0 and not self._in_turn and self.aloop is not None:
            if self._timer is not None and self._timer_at <= self.aloop.time():
                return
            if self._timer is not None:
                self._timer.cancel()
            self._timer_at = self.aloop.time()
            self._timer = self.aloop.call_soon(self._turn)

    def start(self) -> Bridge:
        if self._fd >= 0:
            raise RuntimeError("this Bridge is already started")
        if self.loop.running:
            raise RuntimeError("the evloop Loop is running on its own: stop it before bridging")
        if any(b.loop is self.loop for b in _active):
            raise RuntimeError("this evloop Loop is already bridged")
        if self.aloop is None:
            self.aloop = asyncio.get_running_loop()
        self._fd = self.loop.fileno()
        self.aloop.add_reader(self._fd, self._turn)
        _active.add(self)
        self._schedule()
        return self

    def close(self) -> None:
        """Stop driving the loop (it is left open, to close or run again)."""
        _active.discard(self)
        if self._fd >= 0:
            assert self.aloop is not None
            if not self.aloop.is_closed():
                self.aloop.remove_reader(self._fd)
            self._fd = -1
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
            self._timer_at = math.inf

    def _turn(self) -> None:
        self._timer = None
        self._timer_at = math.inf
        if self._fd < 0 or self.loop.closed or self._in_turn:
            return
        self._in_turn = True
        try:
            self.loop.run_once(0)
            self.turns += 1
        finally:
            self._in_turn = False
        self._schedule()

    def _schedule(self) -> None:
        if self._fd < 0 or self.loop.closed:
            return
        delay = self.loop.next_timeout()
        if delay is None:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
                self._timer_at = math.inf
            return
        aloop = self.aloop
        assert aloop is not None
        at = aloop.time() + delay
        if self._timer is not None:
            if self._timer_at <= at:
                return  # an earlier turn is already booked
            self._timer.cancel()
        self._timer_at = at
        if delay <= 0:
            self._timer = aloop.call_soon(self._turn)
        else:
            self._timer = aloop.call_later(delay, self._turn)

    async def __aenter__(self) -> Bridge:
        return self.start()

    async def __aexit__(
        self, et: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


_active: set[Bridge] = set()


def _kick_all() -> None:
    for b in list(_active):
        b.kick()


def wrap(obj: Any, *, loop: Loop | None = None) -> asyncio.Future[Any]:
    """An asyncio Future (on the running asyncio loop) that completes with
    `obj`: an evloop Future, Task or pool Request, or a coroutine run as a
    Task on the evloop `loop`. Cancelling the asyncio Future cancels obj."""
    if asyncio.iscoroutine(obj):
        if loop is None:
            obj.close()
            raise TypeError("wrap(coroutine) needs loop=, the evloop Loop to run it on")
        obj = create_task(loop, obj)
    if not hasattr(obj, "add_done_callback") or not hasattr(obj, "result"):
        raise TypeError(f"cannot wrap {type(obj).__name__}: not an evloop Future, Task or Request")
    aloop = asyncio.get_running_loop()
    afut: asyncio.Future[Any] = aloop.create_future()
    if isinstance(obj, Task):
        obj._observed = True

    def copy(src: Any) -> None:
        if afut.done():
            return
        if src.cancelled():
            afut.cancel()
            return
        exc = src.exception()
        if exc is not None:
            if isinstance(exc, CancelledError):
                afut.cancel()
            else:
                afut.set_exception(exc)
        else:
            afut.set_result(src.result())

    def back(a: asyncio.Future[Any]) -> None:
        if a.cancelled() and not obj.done() and hasattr(obj, "cancel"):
            obj.cancel()

    afut.add_done_callback(back)
    obj.add_done_callback(copy)
    _kick_all()
    return afut


class _AioFuture(Future[Any]):
    """An evloop Future fed by an asyncio one; a cancelled evloop wait on it
    cancels the asyncio side."""

    __slots__ = ("_afut",)

    def __init__(self, loop: Loop, afut: asyncio.Future[Any] | None = None):
        super().__init__(loop)
        self._afut = afut

    def _evloop_abandon(self) -> None:
        afut = self._afut
        if afut is not None and not afut.done():
            afut.cancel()

    def cancel(self, msg: str | None = None) -> bool:
        self._evloop_abandon()
        return super().cancel(msg)


def from_asyncio(aw: Awaitable[Any] | Coroutine[Any, Any, Any], loop: Loop) -> Future[Any]:
    """An evloop Future of an asyncio awaitable: a coroutine is started as an
    asyncio Task on the running asyncio loop (it needs one: asyncio
    libraries look for their current task). `await` it from an evloop task
    while the loops are bridged."""
    if loop.closed:
        if asyncio.iscoroutine(aw):
            aw.close()
        raise LoopClosedError("the loop is closed")
    afut = asyncio.ensure_future(aw)
    fut = _AioFuture(loop, afut)

    def copy(a: asyncio.Future[Any]) -> None:
        fut._afut = None
        if fut.done() or loop.closed:
            return
        if a.cancelled():
            Future.cancel(fut, "the asyncio side was cancelled")
        elif a.exception() is not None:
            fut.set_exception(a.exception())  # type: ignore[arg-type]
        else:
            fut.set_result(a.result())
        if not loop.running:
            # Completed from an asyncio callback: make sure a turn follows.
            try:
                loop.call_soon_threadsafe(_noop)
            except LoopClosedError:
                pass

    afut.add_done_callback(copy)
    _kick_all()
    return fut


def _noop() -> None:
    return None
