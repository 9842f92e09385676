# evloop/future.py
#
# Future: a result that arrives later, completed on one Loop. It is the one
# waitable object of evloop: callback code adds done callbacks; coroutine
# code awaits it (the task runner in evloop.tasks suspends on whatever a
# `__await__` yields that has add_done_callback()); asyncio code converts it
# with evloop.aio. Requests (rpc) and Worker.exited() are Futures.
#
# Invariants: a Future completes exactly once (result, exception or
# cancellation); done callbacks run synchronously, in the order added, at
# the moment it completes (or at once, if added later), each exception they
# raise going to the loop's exception handler; nothing here is thread-safe
# (complete it from the loop's thread, or via call_soon_threadsafe).
"""Future: a result that arrives later on one Loop; awaitable, with done callbacks. The comment that opens the source file gives the design and its invariants."""

from __future__ import annotations

from collections.abc import Callable, Generator
from typing import Any, Generic, TypeVar

from .errors import CancelledError, InvalidStateError
from .loop import Loop

__all__ = ["Future"]

T = TypeVar("T")

# The values of Future._state. A subclass on a hot path (rpc.Request) may
# complete itself inline, as _finish() would: set _result or _exc, then
# _state, then run and clear _callbacks, in that order.
PENDING = 0
DONE = 1
CANCELLED = 2


class Future(Generic[T]):
    """A value (or error) that arrives later; see the module header.

    `result()` returns it or raises the error (CancelledError if cancelled;
    InvalidStateError while pending); `exception()` returns the error or
    None. `await fut` in an evloop coroutine waits for it."""

    __slots__ = ("loop", "_state", "_result", "_exc", "_callbacks", "__weakref__")

    def __init__(self, loop: Loop):
        self.loop = loop
        self._state = PENDING
        self._result: T | None = None
        self._exc: BaseException | None = None
        self._callbacks: list[Callable[[Future[T]], Any]] | None = None

    def done(self) -> bool:
        return self._state != PENDING

    def cancelled(self) -> bool:
        return self._state == CANCELLED

    def result(self) -> T:
        if self._state == PENDING:
            raise InvalidStateError(f"{self!r} is still pending")
        if self._exc is not None:
            raise self._exc
        return self._result  # type: ignore[return-value]

    def exception(self) -> BaseException | None:
        if self._state == PENDING:
            raise InvalidStateError(f"{self!r} is still pending")
        return self._exc

    def set_result(self, value: T) -> None:
        if self._state != PENDING:
            raise InvalidStateError(f"{self!r} is already done")
        self._result = value
        self._finish(DONE)

    def set_exception(self, exc: BaseException) -> None:
        if self._state != PENDING:
            raise InvalidStateError(f"{self!r} is already done")
        if isinstance(exc, type):
            exc = exc()
        self._exc = exc
        self._finish(DONE)

    def cancel(self, msg: str | None = None) -> bool:
        """Complete with CancelledError unless already done; returns whether
        it did."""
        if self._state != PENDING:
            return False
        self._exc = CancelledError(msg or f"{type(self).__name__} was cancelled")
        self._finish(CANCELLED)
        return True

    def add_done_callback(self, fn: Callable[[Future[T]], Any]) -> None:
        """fn(future) when it completes; at once if it already has."""
        if self._state != PENDING:
            self._run_callback(fn)
        elif self._callbacks is None:
            self._callbacks = [fn]
        else:
            self._callbacks.append(fn)

    def remove_done_callback(self, fn: Callable[[Future[T]], Any]) -> int:
        """Withdraw every registration of fn; returns how many there were."""
        cbs = self._callbacks
        if not cbs:
            return 0
        kept = [c for c in cbs if c != fn]
        self._callbacks = kept or None
        return len(cbs) - len(kept)

    def _finish(self, state: int) -> None:
        self._state = state
        cbs = self._callbacks
        if cbs is not None:
            self._callbacks = None
            for fn in cbs:
                self._run_callback(fn)

    def _run_callback(self, fn: Callable[[Future[T]], Any]) -> None:
        try:
            fn(self)
        except Exception as exc:
            self.loop.call_exception_handler(exc, fn)

    def __await__(self) -> Generator[Any, None, T]:
        if self._state == PENDING:
            yield self  # the task runner resumes us when we are done
        return self.result()

    def _state_name(self) -> str:
        if self._state == PENDING:
            return "pending"
        if self._state == CANCELLED:
            return "cancelled"
        if self._exc is not None:
            return f"failed {type(self._exc).__name__}"
        return "done"

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self._state_name()}>"
