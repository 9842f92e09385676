# evloop/tasks.py
#
# Coroutines on the evloop Loop, with no asyncio underneath: tasks, sleep,
# cancel scopes with deadlines, and task groups in trio's spirit.
#
# The runner. A Task drives one coroutine. Whatever the coroutine's awaits
# yield to it must have add_done_callback() (evloop.Future and everything
# derived from it; also asyncio futures when the two loops are bridged, see
# aio.py) or be None (a bare "let the others run"). The task adds its wake-up
# as a done callback and is suspended; the completion puts it on the Loop's
# run queue. The run queue is one ReadySource per Loop (loop.add_ready_source),
# served in stage 5 of a turn like any ready Pipe: tasks and frames share the
# turn's budget fairly, and a task woken by a frame runs in the same turn.
# Nothing here wraps callbacks in Handles: one await costs one
# add_done_callback, one deque append and one coroutine send.
#
# Cancellation is level-triggered, as in trio. A CancelScope (a `with`
# block, usually made by move_on_after()/fail_after()) is cancelled by
# cancel() or by its deadline; from then on every await inside it that
# would suspend raises evloop.CancelledError (a BaseException), until the
# block is left: a coroutine that catches the error and awaits again is
# cancelled again, so nothing inside a cancelled scope can wait forever.
# The scope that was cancelled swallows the error when it exits
# (`cancelled_caught`). Scopes nest across tasks: a TaskGroup's children
# live inside the scope the group was opened in, so cancelling an outer
# scope cancels the whole tree below it. A `shield=True` scope stops
# cancellation from outside reaching in (for cleanup that must finish).
# Cancelling a task stops its *wait*; it never cancels the Future it was
# waiting for, which may have other waiters (`wait(fut, cancel=True)` opts
# in). An await on a Future that is already done does not suspend and is
# therefore not a cancellation point. The one exception: a Future with an
# `_evloop_abandon()` method is private to its waiter (the wait of a
# primitive's send or recv); the runner calls it the moment the wait is
# cancelled, before anything else can run, so an item can never be handed
# to a waiter that is about to see CancelledError.
#
# Structure. A TaskGroup (`async with TaskGroup() as tg: tg.create_task(c)`)
# does not exit before every task it started has finished. The first error
# (in a child or in the body) cancels the group's scope, so the siblings and
# the body are cancelled; when all are done the errors are raised together
# as TaskGroupError (an ExceptionGroup on Python 3.11+). Tasks started with
# create_task(loop, coro) outside any group have no parent: an error nobody
# awaits goes to the loop's exception handler when the task ends. Loop.close()
# cancels every task still alive and runs it to the end (its `finally`
# blocks run), so closing a loop leaves no coroutine suspended forever.
#
# Invariants: a task's step runs only from the run queue (never inside the
# code that completed what it waited for); a task is on the run queue at
# most once; `task._scope` is its innermost entered scope and `task._cancel`
# is the cancelled scope that applies to it (None when none does), kept
# current whenever a scope is entered, left or cancelled.
from __future__ import annotations

import math
import threading
from collections import deque
from collections.abc import Awaitable, Coroutine, Generator
from dataclasses import dataclass
from types import TracebackType
from typing import Any, TypeVar
from weakref import WeakKeyDictionary

from .errors import (
    CancelledError,
    DeadlineExceeded,
    LoopClosedError,
    LoopStoppedError,
    TaskGroupError,
)
from .future import Future
from .loop import Loop

__all__ = [
    "Task",
    "TaskGroup",
    "CancelScope",
    "create_task",
    "run",
    "run_until_complete",
    "sleep",
    "sleep_until",
    "checkpoint",
    "current_task",
    "current_loop",
    "wait",
    "move_on_after",
    "move_on_at",
    "fail_after",
    "fail_at",
    "statistics",
    "RunnerStatistics",
]

T = TypeVar("T")

# A coroutine that keeps catching CancelledError while the loop closes gets
# this many more throws before it is closed (GeneratorExit) and given up on.
_CLOSE_STEPS = 100

_state = threading.local()


def current_task() -> Task[Any]:
    """The Task running now; RuntimeError outside a task."""
    task = getattr(_state, "task", None)
    if task is None:
        raise RuntimeError("not inside an evloop task (use evloop.run() or create_task())")
    return task


def current_loop() -> Loop:
    """The Loop of the running task."""
    return current_task().loop


# -- the run queue ----------------------------------------------------------------


class _Runner:
    """The run queue of one Loop: a ReadySource whose items are task steps.
    The Loop adopts it, so Loop.close() ends every task (abort())."""

    __slots__ = ("loop", "_run", "_queued", "tasks", "steps", "__weakref__")

    def __init__(self, loop: Loop):
        self.loop = loop
        self._run: deque[Task[Any]] = deque()
        self._queued = False
        self.tasks: set[Task[Any]] = set()  # alive
        self.steps = 0
        loop.adopt(self)

    def schedule(self, task: Task[Any]) -> None:
        self._run.append(task)
        if not self._queued:
            self._queued = True
            loop = self.loop
            loop.add_ready_source(self)
            if not loop.running and not loop.closed:
                # Woken from outside a turn (an asyncio callback, when the
                # loops are bridged): make the epoll fd readable so a host
                # loop driving this one runs a turn.
                try:
                    loop.call_soon_threadsafe(_noop)
                except LoopClosedError:
                    pass  # close() is under way: abort() runs what is left

    def serve(self, limit: int) -> tuple[int, bool]:
        run = self._run
        n = 0
        try:
            while run and n < limit:
                n += 1
                run.popleft()._step()
        finally:
            self.steps += n
            if not run:
                self._queued = False
        return n, bool(run)

    def abort(self) -> None:
        # Loop.close(): cancel every live task and run it to its end. The
        # loop is still open here (close() aborts its adoptees first), so
        # what the tasks do on the way out (write, close) still works.
        for _ in range(_CLOSE_STEPS):
            alive = [t for t in self.tasks if not t.done()]
            if not alive:
                break
            for t in alive:
                t._root.cancel()
                # Shielded waits too: nothing can complete them any more.
                t._abort_wait()
            while self._run:
                self._run.popleft()._step()
        for t in list(self.tasks):
            if not t.done():
                t._kill()
        self._queued = False


_runners: WeakKeyDictionary[Loop, _Runner] = WeakKeyDictionary()


def _runner(loop: Loop) -> _Runner:
    r = _runners.get(loop)
    if r is None:
        if loop.closed:
            raise LoopClosedError("the loop is closed")
        r = _runners[loop] = _Runner(loop)
    return r


def _noop() -> None:
    return None


# -- cancel scopes ------------------------------------------------------------------


class CancelScope:
    """A block that can be cancelled, by cancel() or at `deadline` (loop
    time). Use as `with CancelScope() as scope:` inside a task. While it is
    cancelled, every await in it that would suspend raises CancelledError;
    leaving the block swallows that error (`cancelled_caught` says so).
    `shield=True` keeps cancellation from outside out of the block."""

    __slots__ = (
        "_deadline", "_shield", "cancel_called", "cancelled_caught", "_task", "_parent",
        "_children", "_timer", "_entered", "_exited",
    )  # fmt: skip

    def __init__(self, *, deadline: float = math.inf, shield: bool = False):
        if math.isnan(deadline):
            raise ValueError("deadline must be a number, not NaN")
        self._deadline = deadline
        self._shield = shield
        self.cancel_called = False
        self.cancelled_caught = False
        self._task: Task[Any] | None = None
        self._parent: CancelScope | None = None
        self._children: list[CancelScope] = []
        self._timer: Any = None
        self._entered = False
        self._exited = False

    # -- entering and leaving ---------------------------------------------------

    def __enter__(self) -> CancelScope:
        self._attach(current_task(), None)
        return self

    def _attach(self, task: Task[Any], parent: CancelScope | None) -> None:
        if self._entered:
            raise RuntimeError("a CancelScope can be entered only once")
        self._entered = True
        self._task = task
        if parent is None:
            parent = task._scope
        self._parent = parent
        if parent is not None:
            parent._children.append(self)
        task._scope = self
        self._arm()
        task._update_cancel()

    def __exit__(
        self,
        et: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        task = self._task
        assert task is not None
        if task._scope is not self:
            raise RuntimeError("CancelScopes must be left in the reverse order they were entered")
        self._detach()
        task._scope = (
            self._parent if self._parent is not None and self._parent._task is task else None
        )
        task._update_cancel()
        if isinstance(exc, CancelledError) and self.cancel_called:
            self.cancelled_caught = True
            return True
        return False

    def _detach(self) -> None:
        self._exited = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        parent = self._parent
        if parent is not None:
            try:
                parent._children.remove(self)
            except ValueError:
                pass

    # -- cancelling -------------------------------------------------------------

    def cancel(self) -> None:
        """Cancel the block (idempotent): every task inside it is woken with
        CancelledError at its current or next wait."""
        if self.cancel_called:
            return
        self.cancel_called = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not self._entered or self._exited:
            return
        # Every task below this scope, except behind a shield, is affected.
        tasks: list[Task[Any]] = []
        stack = [self]
        while stack:
            s = stack.pop()
            if s._task is not None:
                tasks.append(s._task)
            stack.extend(c for c in s._children if not c._shield)
        for t in tasks:
            t._update_cancel()
            if t._cancel is not None and t._waiting is not None:
                t._abort_wait()

    def _expire(self) -> None:
        # The timer ran: it must not be cancelled any more (a TimerHandle
        # cancelled after it ran still counts as a cancelled timer).
        self._timer = None
        self.cancel()

    @property
    def deadline(self) -> float:
        return self._deadline

    @deadline.setter
    def deadline(self, when: float) -> None:
        if math.isnan(when):
            raise ValueError("deadline must be a number, not NaN")
        self._deadline = when
        if self._entered and not self._exited and not self.cancel_called:
            self._arm()

    @property
    def shield(self) -> bool:
        return self._shield

    @shield.setter
    def shield(self, value: bool) -> None:
        self._shield = bool(value)
        if self._entered and not self._exited:
            # The tasks inside may have gained or lost an outer cancellation.
            stack = [self]
            while stack:
                s = stack.pop()
                if s._task is not None:
                    t = s._task
                    t._update_cancel()
                    if t._cancel is not None and t._waiting is not None:
                        t._abort_wait()
                stack.extend(s._children)

    def _arm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._deadline != math.inf and self._task is not None:
            loop = self._task.loop
            if self._deadline <= loop.time():
                self.cancel()
            else:
                self._timer = loop.call_at(self._deadline, self._expire)

    def __repr__(self) -> str:
        state = "cancelled" if self.cancel_called else "active"
        dl = "" if self._deadline == math.inf else f" deadline={self._deadline:.6f}"
        return f"<CancelScope {state}{dl}{' shielded' if self._shield else ''}>"


class _FailScope(CancelScope):
    """A CancelScope that turns its own expiry into DeadlineExceeded."""

    __slots__ = ("_seconds",)

    def __init__(self, deadline: float, seconds: float | None):
        super().__init__(deadline=deadline)
        self._seconds = seconds

    def __enter__(self) -> _FailScope:
        super().__enter__()
        return self

    def __exit__(
        self,
        et: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        swallowed = super().__exit__(et, exc, tb)
        if self.cancelled_caught:
            what = f"{self._seconds} s" if self._seconds is not None else f"{self._deadline}"
            raise DeadlineExceeded(f"deadline passed ({what})") from exc
        return swallowed


def _check_seconds(seconds: float) -> float:
    if not (seconds >= 0 and not math.isnan(seconds)):
        raise ValueError(f"seconds must be >= 0, got {seconds!r}")
    return seconds


def move_on_at(deadline: float) -> CancelScope:
    """A scope cancelled at loop time `deadline`: the block is abandoned and
    execution moves on after it (check `cancelled_caught`)."""
    return CancelScope(deadline=deadline)


def move_on_after(seconds: float) -> CancelScope:
    """move_on_at(now + seconds). Must be called inside a task."""
    return CancelScope(deadline=current_loop().time() + _check_seconds(seconds))


def fail_at(deadline: float) -> CancelScope:
    """A scope that raises DeadlineExceeded if loop time `deadline` passes
    before the block finished."""
    return _FailScope(deadline, None)


def fail_after(seconds: float) -> CancelScope:
    """fail_at(now + seconds). Must be called inside a task."""
    return _FailScope(current_loop().time() + _check_seconds(seconds), seconds)


# -- tasks ----------------------------------------------------------------------------


class Task(Future[T]):
    """A coroutine running on a Loop; a Future of its return value. Made by
    create_task(), TaskGroup.create_task() or run(). `cancel()` cancels the
    task (level-triggered: every later wait raises CancelledError until the
    coroutine ends). A task ended by cancellation is `cancelled()`."""

    __slots__ = (
        "_coro", "_runner", "_waiting", "_throw", "_scope", "_root", "_cancel", "_observed",
        "name", "_wake_cb",
    )  # fmt: skip

    def __init__(
        self,
        loop: Loop,
        coro: Coroutine[Any, Any, T],
        *,
        name: str | None = None,
        parent: CancelScope | None = None,
    ):
        if not hasattr(coro, "send") or not hasattr(coro, "throw"):
            raise TypeError(f"a task runs a coroutine, not {type(coro).__name__}: {coro!r}")
        super().__init__(loop)
        try:
            self._runner = _runner(loop)
            if loop.closed:
                raise LoopClosedError("the loop is closed")
        except BaseException:
            coro.close()  # never started: no "never awaited" warning
            raise
        self._coro = coro
        self._waiting: Any = None  # what the coroutine is suspended on
        self._throw: BaseException | None = None  # to throw in at the next step
        self._scope: CancelScope | None = None
        self._cancel: CancelScope | None = None
        self._observed = False
        self.name = name or getattr(coro, "__qualname__", "task")
        self._wake_cb = self._wake
        self._root = CancelScope()
        self._root._attach(self, parent)
        self._runner.tasks.add(self)
        self._runner.schedule(self)

    # -- cancellation -------------------------------------------------------------

    def cancel(self, msg: str | None = None) -> bool:
        """Cancel the task (not the Future it waits for). Returns False if it
        is already done."""
        if self.done():
            return False
        self._root.cancel()
        return True

    def _update_cancel(self) -> None:
        s = self._scope
        while s is not None:
            if s.cancel_called:
                self._cancel = s
                return
            if s._shield:
                break
            s = s._parent
        self._cancel = None

    def _abort_wait(self) -> None:
        fut = self._waiting
        if fut is None or self.done():
            return
        if fut.done():
            return  # its callbacks are running: our wake-up is on the way
        self._waiting = None
        fut.remove_done_callback(self._wake_cb)
        abandon = getattr(fut, "_evloop_abandon", None)
        if abandon is not None:
            abandon()  # a private wait (a primitive's op): withdraw it now
        self._throw = CancelledError(f"{self.name} was cancelled")
        self._runner.schedule(self)

    # -- running --------------------------------------------------------------------

    def _wake(self, fut: Any) -> None:
        if self._waiting is fut:
            self._waiting = None
            self._runner.schedule(self)

    def _step(self) -> None:
        if self.done():
            return
        coro = self._coro
        exc = self._throw
        self._throw = None
        _state.task = self  # steps never nest: a running loop cannot be re-entered
        try:
            while True:
                if exc is None:
                    yielded = coro.send(None)
                else:
                    yielded = coro.throw(exc)
                    exc = None
                if self._cancel is not None:
                    # Level-triggered: a wait inside a cancelled scope fails
                    # at once instead of suspending.
                    if yielded is not None and not _done(yielded):
                        exc = CancelledError(f"{self.name} was cancelled")
                        continue
                if yielded is None:
                    self._runner.schedule(self)
                    return
                add = getattr(yielded, "add_done_callback", None)
                if add is None:
                    exc = TypeError(
                        f"task {self.name} awaited {yielded!r}, which is not an evloop"
                        " Future (nothing with add_done_callback)"
                    )
                    continue
                if getattr(yielded, "_asyncio_future_blocking", None):
                    yielded._asyncio_future_blocking = False  # as asyncio's Task does
                self._waiting = yielded
                add(self._wake_cb)
                return
        except StopIteration as stop:
            self._end()
            self.set_result(stop.value)
        except CancelledError as err:
            self._end()
            Future.cancel(self, str(err) or None)
        except (KeyboardInterrupt, SystemExit) as err:
            self._end()
            self.set_exception(err)
            raise
        except BaseException as err:
            self._end()
            self.set_exception(err)
            if not self._observed:
                self.loop.call_exception_handler(err, self)
        finally:
            _state.task = None

    def _end(self) -> None:
        self._waiting = None
        root = self._root
        root._detach()
        self._scope = None
        self._cancel = None
        self._runner.tasks.discard(self)

    def _kill(self) -> None:
        # A coroutine that refused to end while the loop closed.
        try:
            self._coro.close()
        except BaseException as exc:  # noqa: B036 - it is reported, not swallowed
            self.loop.call_exception_handler(exc, self)
        if not self.done():
            self._end()
            Future.cancel(self, f"{self.name} was closed with the loop")

    def add_done_callback(self, fn: Any) -> None:
        self._observed = True
        super().add_done_callback(fn)

    def __repr__(self) -> str:
        return f"<Task {self.name} {self._state_name()}>"


def _done(obj: Any) -> bool:
    done = getattr(obj, "done", None)
    return bool(done()) if done is not None else False


def create_task(loop: Loop, coro: Coroutine[Any, Any, T], *, name: str | None = None) -> Task[T]:
    """Start `coro` as a task on `loop` (it first runs on the loop's next
    turn). A task made here has no parent: prefer a TaskGroup, and await
    the task or add a done callback, or its error goes to the loop's
    exception handler."""
    return Task(loop, coro, name=name)


class TaskGroup:
    """`async with TaskGroup() as tg:` then `tg.create_task(coro)`. The
    block does not end before every task started in it has ended. The first
    error in a task or the body cancels the rest; all errors are raised
    together as TaskGroupError. `cancel()` cancels the body and every task
    quietly."""

    def __init__(self) -> None:
        self._scope = CancelScope()
        self._children: set[Task[Any]] = set()
        self._errors: list[BaseException] = []
        self._waiter: Future[None] | None = None
        self._state = 0  # 0 new, 1 open, 2 exiting, 3 closed
        self._loop: Loop | None = None
        self._base_exc: BaseException | None = None

    async def __aenter__(self) -> TaskGroup:
        if self._state:
            raise RuntimeError("a TaskGroup can be used only once")
        self._loop = current_loop()
        self._scope.__enter__()
        self._state = 1
        return self

    def create_task(self, coro: Coroutine[Any, Any, T], *, name: str | None = None) -> Task[T]:
        """Start `coro` as a child of this group."""
        if self._state not in (1, 2):
            coro.close()
            raise RuntimeError("this TaskGroup is not open (enter it with `async with`)")
        assert self._loop is not None
        task = Task(self._loop, coro, name=name, parent=self._scope)
        self._children.add(task)
        task.add_done_callback(self._child_done)
        return task

    def cancel(self) -> None:
        self._scope.cancel()

    @property
    def cancel_scope(self) -> CancelScope:
        return self._scope

    def _child_done(self, task: Task[Any]) -> None:
        self._children.discard(task)
        if not task.cancelled():
            exc = task.exception()
            if exc is not None:
                self._fail(exc)
        if not self._children and self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def _fail(self, exc: BaseException) -> None:
        if isinstance(exc, Exception):
            self._errors.append(exc)
        elif self._base_exc is None:
            self._base_exc = exc
        self._scope.cancel()

    async def __aexit__(
        self,
        et: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        self._state = 2
        if exc is not None and not isinstance(exc, CancelledError):
            self._fail(exc)
        # Wait for every child. The wait is shielded: the children are
        # cancelled through the scope tree if an outer scope is, and the
        # group must not end before they have.
        while self._children:
            assert self._loop is not None
            self._waiter = Future(self._loop)
            with CancelScope(shield=True):
                await self._waiter
        self._waiter = None
        self._state = 3
        swallowed = self._scope.__exit__(et, exc, tb)
        if self._base_exc is not None:
            raise self._base_exc
        if self._errors:
            errors, self._errors = self._errors, []
            raise TaskGroupError("errors in a TaskGroup", errors) from None
        if exc is not None and not isinstance(exc, CancelledError):
            return False
        if exc is None and current_task()._cancel is not None:
            # Cancelled from outside while waiting for the children: the end
            # of the group is a cancellation point, so the scope that was
            # cancelled sees it (move_on_after sets cancelled_caught).
            raise CancelledError("cancelled while waiting for a TaskGroup")
        return swallowed


# -- waiting ------------------------------------------------------------------------------


class _Yield:
    """Awaitable that yields None once: the runner reschedules the task."""

    __slots__ = ()

    def __await__(self) -> Generator[None, None, None]:
        yield None


_YIELD = _Yield()


async def checkpoint() -> None:
    """Let every other ready task and Pipe run, then continue; raises
    CancelledError if the task is inside a cancelled scope."""
    task = current_task()
    if task._cancel is not None:
        raise CancelledError(f"{task.name} was cancelled")
    await _YIELD


async def sleep(seconds: float) -> None:
    """Suspend for `seconds` of loop time (0: checkpoint())."""
    _check_seconds(seconds)
    if seconds == 0:
        await checkpoint()
        return
    loop = current_loop()
    await sleep_until(loop.time() + seconds)


async def sleep_until(deadline: float) -> None:
    """Suspend until loop time `deadline`."""
    loop = current_loop()
    fut: Future[None] = Future(loop)
    timer = loop.call_at(deadline, _set_none, fut)
    try:
        await fut
    finally:
        if not fut.done():
            timer.cancel()  # not after it ran: see CancelScope._expire


def _set_none(fut: Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


async def wait(fut: Any, *, cancel: bool = False) -> Any:
    """Await anything with add_done_callback() and result() (a Future, a
    pool Request) and return its result. With cancel=True, a cancellation
    of the waiting task also cancels `fut` (a Request nobody waits for any
    more is withdrawn)."""
    if not hasattr(fut, "add_done_callback"):
        raise TypeError(f"cannot wait for {type(fut).__name__}: it has no add_done_callback()")
    if not fut.done():
        try:
            await _Suspend(fut)
        except CancelledError:
            if cancel and not fut.done():
                fut.cancel()
            raise
    return fut.result()


class _Suspend:
    __slots__ = ("fut",)

    def __init__(self, fut: Any):
        self.fut = fut

    def __await__(self) -> Generator[Any, None, None]:
        if not self.fut.done():
            yield self.fut


# -- running a loop to completion ---------------------------------------------------------------


def run_until_complete(loop: Loop, aw: Awaitable[T] | Any, *, timeout: float | None = None) -> T:
    """Run `loop` until `aw` (a coroutine, Task or Future) is done and return
    its result or raise its error. A coroutine becomes a task. Raises
    LoopStoppedError if loop.stop() ends the run first, DeadlineExceeded if
    `timeout` (loop seconds) passes first (the awaitable keeps going)."""
    if hasattr(aw, "send") and hasattr(aw, "throw"):
        fut: Any = Task(loop, aw)  # type: ignore[arg-type]
        fut._observed = True
    elif hasattr(aw, "add_done_callback"):
        fut = aw
    else:
        raise TypeError(f"cannot run {type(aw).__name__}: need a coroutine, Task or Future")
    done = fut.done
    start = loop.time()
    if not loop.run_until(done, timeout=timeout):
        if timeout is not None and loop.time() - start >= timeout:
            raise DeadlineExceeded(f"{fut!r} not done after {timeout} s")
        raise LoopStoppedError(f"the loop stopped before {fut!r} completed")
    return fut.result()  # type: ignore[no-any-return,unused-ignore]


def run(main: Coroutine[Any, Any, T], *, loop: Loop | None = None, **loop_kwargs: Any) -> T:
    """Run the coroutine `main` on a new Loop (Loop(**loop_kwargs)) and
    return its result. When it ends, every task still alive is cancelled and
    run to its end, then the loop is closed. With `loop=`, that loop is used
    and left open."""
    own = loop is None
    lp = Loop(**loop_kwargs) if loop is None else loop
    try:
        return run_until_complete(lp, main)
    finally:
        if not lp.closed:
            _cancel_all(lp)
            if own:
                lp.close()


def _cancel_all(loop: Loop) -> None:
    r = _runners.get(loop)
    if r is None or not r.tasks:
        return
    left = [t for t in r.tasks if not t.done()]
    for t in left:
        t.cancel()
    if not loop.running:
        loop.run_until(lambda: all(t.done() for t in left), timeout=5.0)


# -- introspection ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class RunnerStatistics:
    tasks: int  # alive
    runnable: int  # waiting for their next step
    steps: int  # run so far


def statistics(loop: Loop) -> RunnerStatistics:
    """Live tasks, tasks waiting to run, and steps run so far on `loop`."""
    r = _runners.get(loop)
    if r is None:
        return RunnerStatistics(0, 0, 0)
    return RunnerStatistics(len(r.tasks), len(r._run), r.steps)
