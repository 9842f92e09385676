# evloop/loop.py
#
# The Loop: one epoll set, a timer heap, a ready queue, a fair round-robin of
# "ready sources" (Pipes holding complete frames), and end-of-turn hooks that
# flush write buffers before the loop sleeps. It is the only module that
# touches select.epoll; everything else uses the public methods below.
#
# Facts about epoll that shape this file:
#
# * We use level-triggered mode. An fd with unread input keeps reporting
#   EPOLLIN, so a consumer may stop reading half-way (fairness, back-pressure)
#   without losing the wake-up. Edge-triggered mode would force every reader
#   to drain to EAGAIN, which is exactly what the one-frame-per-event rule
#   forbids.
# * EPOLLHUP and EPOLLERR are reported whether or not they were asked for,
#   even with an empty interest mask. A callback that receives them must act
#   (read the error, or unregister) or the loop would spin. Conn does this.
# * epoll tracks open file descriptions, not fd numbers. Closing an fd removes
#   it from the set only when no other fd (a dup, a forked child's copy)
#   refers to the same description. If one does, events keep arriving for a
#   number we can no longer unregister (epoll_ctl says EBADF). An event for an
#   fd we do not know is therefore answered with EPOLL_CTL_DEL, and if that
#   fails the whole epoll set is rebuilt from the registry, the only sure way
#   out of that state. Registration errors ENOENT/EEXIST from a number that
#   was closed and reused behind our back are resolved the same way.
#
# One turn of the loop, in order:
#   1. epoll_wait, with timeout 0 if work is pending, else until the next timer
#   2. timers that are due move to the ready queue
#   3. fd callbacks, for every event returned (a Pipe delivers its first run
#      of frames here, up to a quantum, in the callback that read them)
#   4. the ready callbacks that were queued before stage 3 run: what stages
#      3-6 schedule runs next turn, after this turn's writes have left
#   5. ready sources (Pipes still holding frames) are served round-robin, a
#      quantum each per round, until none has more or the turn's budget
#      (items and time) is spent
#   6. end-of-turn hooks (Conn flushes: everything written this turn leaves
#      before the loop can sleep again)
# Hooks also run when run()/run_until() start and return, so writes made
# outside the loop leave too. Signals and call_soon_threadsafe both arrive
# through fds, so they are just stage-2 events that queue stage-4 callbacks.
"""The Loop: a single-threaded epoll event loop with timers, a ready queue, fair ready sources and end-of-turn hooks. The comment that opens the source file gives the design and its invariants."""

from __future__ import annotations

import heapq
import logging
import math
import os
import select
import signal
import socket
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from .errors import LoopClosedError, LoopRunningError

__all__ = [
    "Loop",
    "Handle",
    "TimerHandle",
    "LoopStatistics",
    "ReadySource",
    "EVENT_READ",
    "EVENT_WRITE",
]

log = logging.getLogger("evloop")

EVENT_READ = select.EPOLLIN
EVENT_WRITE = select.EPOLLOUT
EVENT_HUP = select.EPOLLHUP
EVENT_ERR = select.EPOLLERR

_MAX_EVENTS = 1024
# epoll_wait takes an int of milliseconds: 2**31 ms is about 24.8 days, and
# a longer timeout raises OverflowError. Sleep at most a day at a time; a
# far timer just costs one extra wake-up a day.
_MAX_TIMEOUT = 86400.0
# close() runs at most this many queued callbacks (see there).
_CLOSE_DRAIN_MAX = 100_000
# Purge the timer heap when cancelled entries are both many and the majority.
_PURGE_MIN = 64


def _callback_name(fn: Any) -> str:
    name = getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None) or repr(fn)
    self_obj = getattr(fn, "__self__", None)
    if self_obj is not None and not isinstance(self_obj, type(os)):
        return f"{type(self_obj).__name__}.{getattr(fn, '__name__', name)}"
    mod = getattr(fn, "__module__", None)
    return f"{mod}.{name}" if mod else str(name)


class Handle:
    """A scheduled callback; `cancel()` makes it a no-op."""

    __slots__ = ("_fn", "_args", "_cancelled", "_loop")

    def __init__(self, loop: Loop, fn: Callable[..., Any], args: tuple[Any, ...]):
        self._loop = loop
        self._fn = fn
        self._args = args
        self._cancelled = False

    def cancel(self) -> None:
        if not self._cancelled:
            self._cancelled = True
            self._fn = _noop
            self._args = ()

    @property
    def cancelled(self) -> bool:
        return self._cancelled

    def __repr__(self) -> str:
        state = " cancelled" if self._cancelled else ""
        return f"<{type(self).__name__} {_callback_name(self._fn)}{state}>"


class TimerHandle(Handle):
    """A callback due at `when` (Loop.time() clock)."""

    __slots__ = ("when", "_in_heap")

    def __init__(self, loop: Loop, when: float, fn: Callable[..., Any], args: tuple[Any, ...]):
        super().__init__(loop, fn, args)
        self.when = when
        self._in_heap = True  # until it comes due (or the loop closes)

    def cancel(self) -> None:
        if not self._cancelled:
            super().cancel()
            if self._in_heap:  # a timer that already ran is not in the count
                self._loop._timer_cancelled()


def _noop(*_: Any) -> None:
    return None


class ReadySource(Protocol):
    """Something that holds work the loop should hand out fairly (a Pipe with
    complete frames). `serve(limit)` delivers between 1 and `limit` items and
    returns (delivered, more): whether it still holds work. The loop serves
    sources round-robin with limit=1; a source that is alone on the ready
    list gets a run of items in one call, which is the order round-robin
    would give anyway, for a fraction of the dispatch cost."""

    def serve(self, limit: int) -> tuple[int, bool]: ...


class Clock(Protocol):
    """Where a Loop gets its time from (`Loop(clock=...)`). The default is
    time.monotonic() and costs nothing extra; evloop.testing.VirtualClock
    implements this to make timeouts, keepalives and backoff deterministic.

    `time()` is the loop's notion of now. `real_timeout(t)` turns "the next
    timer is due in t loop-seconds" (t >= 0) into how many real seconds
    epoll may block (-1 means until an fd is ready). `idle(t)` is called
    when a poll that waited `real_timeout(t)` returned nothing: a virtual
    clock may jump ahead by t, so the timer becomes due."""

    def time(self) -> float: ...

    def real_timeout(self, timeout: float) -> float: ...

    def idle(self, timeout: float) -> None: ...


@dataclass(frozen=True)
class LoopStatistics:
    fds: int  # registered by users (the loop's own eventfd/signal fd excluded)
    timers: int
    ready: int
    ready_sources: int
    iterations: int
    epoll_rebuilds: int


class _FdEntry:
    __slots__ = ("events", "callback")

    def __init__(self, events: int, callback: Callable[[int], Any]):
        self.events = events
        self.callback = callback


class Loop:
    """A single-threaded epoll event loop.

    Every method except `call_soon_threadsafe` must be called from the thread
    running the loop (or before it runs). See the module header for the order
    of one turn.

    Stage 5 (see the module header) serves ready sources (Pipes holding
    frames) round-robin, `quantum` items per source per round, until none
    has more, `budget` items were served in the turn, or `time_budget`
    seconds passed; then epoll is polled again. A source that is alone on
    the ready list runs to the budget. `quantum=1` is the seed's rule of one
    frame per ready Pipe per round; `budget=1` serves one frame per turn in
    all (stricter than the seed: N ready Pipes then pay N polls).

    `busy_poll` (seconds, default 0: off) keeps polling epoll with a zero
    timeout for that long after a turn that sent something, before the loop
    sleeps: a peer's quick answer is then picked up without a wake-up from
    sleep, at the price of burning CPU while waiting. For latency-bound
    request/response; measure before you turn it on.
    """

    def __init__(
        self,
        *,
        budget: int = 1024,
        quantum: int = 256,
        time_budget: float = 0.002,
        busy_poll: float = 0.0,
        debug: bool = False,
        slow_callback: float = 0.1,
        clock: Clock | None = None,
    ):
        if budget < 1:
            raise ValueError(f"budget must be >= 1, got {budget}")
        if quantum < 1:
            raise ValueError(f"quantum must be >= 1, got {quantum}")
        if time_budget <= 0:
            raise ValueError(f"time_budget must be > 0, got {time_budget}")
        if not (busy_poll >= 0 and math.isfinite(busy_poll)):
            raise ValueError(f"busy_poll must be a finite number >= 0, got {busy_poll!r}")
        self.budget = budget
        self.quantum = quantum
        self.busy_poll = busy_poll
        self.time_budget = time_budget
        self.debug = debug
        self.slow_callback = slow_callback
        # The clock: _now() on every path that needs the time; _clock is set
        # only for a non-default clock, whose sleep the loop must negotiate.
        self._clock = clock
        self._now: Callable[[], float] = time.monotonic if clock is None else clock.time
        self._epoll: select.epoll | None = select.epoll()
        self._fds: dict[int, _FdEntry] = {}
        # fds unregistered while a batch of events is being dispatched: their
        # remaining events in the batch are stale (the number may even have
        # been reused by a new registration) and are skipped.
        self._dropped: set[int] = set()
        self._dispatching = False
        self._timers: list[tuple[float, int, TimerHandle]] = []
        self._timer_seq = 0
        self._cancelled_timers = 0
        self._ready: deque[Handle] = deque()
        self._sources: deque[ReadySource] = deque()
        self._before_poll: list[Callable[[], Any]] = []
        self._adopted: dict[int, Any] = {}
        self._running = False
        self._stopping = False
        self._closed = False
        self._iterations = 0
        self._rebuilds = 0
        self._wrote = False
        self._thread_id: int | None = None
        self._exception_handler: Callable[[BaseException, Any], Any] | None = None
        # Thread-safe wake-up: an eventfd, read in full on every wake. The
        # lock orders posts from other threads against close(): a post either
        # lands (its callback will run, at the latest during close()) or
        # raises LoopClosedError; it never writes to an eventfd number that
        # close() released and the process may have reused.
        self._post_lock = threading.Lock()
        self._posts_open = True
        self._wakeup_fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self.register(self._wakeup_fd, EVENT_READ, self._on_wakeup)
        # Signals: lazily set up on the first add_signal_handler().
        self._sig_handlers: dict[int, Handle] = {}
        self._sig_prev: dict[int, Any] = {}
        self._sig_socks: tuple[socket.socket, socket.socket] | None = None
        self._sig_prev_wakeup = -1
        _ignore_sigpipe()

    # -- clock and scheduling -------------------------------------------------

    def time(self) -> float:
        """The loop's clock: time.monotonic(), or the `clock` it was given."""
        return self._now()

    def call_soon(self, fn: Callable[..., Any], *args: Any) -> Handle:
        """Run fn(*args) on the next turn (FIFO with other call_soon)."""
        self._check_open()
        _check_callable(fn)
        h = Handle(self, fn, args)
        self._ready.append(h)
        return h

    def call_soon_threadsafe(self, fn: Callable[..., Any], *args: Any) -> Handle:
        """call_soon from any thread; wakes the loop if it is sleeping.

        A callback this accepts (returns a handle for) is run: by the loop,
        or at the latest by close(), which runs what was posted before it
        began. Once close() has begun it raises LoopClosedError instead."""
        _check_callable(fn)
        h = Handle(self, fn, args)
        with self._post_lock:
            if not self._posts_open:
                raise LoopClosedError("the loop is closed (or closing)")
            self._ready.append(h)
            try:
                os.eventfd_write(self._wakeup_fd, 1)
            except BlockingIOError:
                pass  # the counter is saturated: a wake-up is pending anyway
        return h

    def call_later(self, delay: float, fn: Callable[..., Any], *args: Any) -> TimerHandle:
        """Run fn(*args) after `delay` seconds (negative counts as 0)."""
        if not math.isfinite(delay):
            raise ValueError(f"delay must be a finite number of seconds, got {delay!r}")
        return self.call_at(self._now() + max(0.0, delay), fn, *args)

    def call_at(self, when: float, fn: Callable[..., Any], *args: Any) -> TimerHandle:
        """Run fn(*args) at Loop.time() `when`; equal times run in call order."""
        self._check_open()
        if not math.isfinite(when):
            # A NaN would break the heap's ordering, an infinity the timeout.
            raise ValueError(f"when must be a finite time, got {when!r}")
        _check_callable(fn)
        h = TimerHandle(self, when, fn, args)
        self._timer_seq += 1
        heapq.heappush(self._timers, (when, self._timer_seq, h))
        return h

    def _timer_cancelled(self) -> None:
        self._cancelled_timers += 1
        n = len(self._timers)
        if self._cancelled_timers > _PURGE_MIN and self._cancelled_timers * 2 > n:
            self._timers = [t for t in self._timers if not t[2]._cancelled]
            heapq.heapify(self._timers)
            self._cancelled_timers = 0

    def add_ready_source(self, source: ReadySource) -> None:
        """Queue a source to be served round-robin in stage 5. The caller
        avoids double-queuing (a Pipe keeps a flag)."""
        self._sources.append(source)

    def call_before_poll(self, fn: Callable[[], Any]) -> None:
        """Run fn() once, at the end of this turn, before epoll is polled
        again (stage 6). Conn uses it to flush writes made during the turn."""
        self._before_poll.append(fn)

    # -- file descriptors -----------------------------------------------------

    def register(self, fd: int, events: int, callback: Callable[[int], Any]) -> None:
        """Watch `fd` for `events` (EVENT_READ | EVENT_WRITE, may be 0) and call
        callback(mask) with the ready mask. EVENT_HUP/EVENT_ERR are always
        reported and the callback must deal with them. The loop does not take
        ownership of fd."""
        self._check_open()
        # A bad callback would fail on every event of a level-triggered fd.
        _check_callable(callback)
        if fd in self._fds:
            raise ValueError(f"fd {fd} is already registered with this loop")
        assert self._epoll is not None
        try:
            self._epoll.register(fd, events)
        except FileExistsError:
            # A number we knew was closed and reused before we noticed: the
            # stale registration belongs to a dead description. Rebuild.
            self._fds[fd] = _FdEntry(events, callback)
            self._rebuild_epoll()
            return
        self._fds[fd] = _FdEntry(events, callback)

    def modify(self, fd: int, events: int, callback: Callable[[int], Any] | None = None) -> None:
        """Change the interest mask of a registered fd, and its callback if
        one is given (a Conn uses a leaner one while it only reads)."""
        entry = self._fds.get(fd)
        if entry is None:
            raise KeyError(f"fd {fd} is not registered with this loop")
        if callback is not None:
            _check_callable(callback)
            entry.callback = callback
        if entry.events == events:
            return
        entry.events = events
        assert self._epoll is not None
        try:
            self._epoll.modify(fd, events)
        except FileNotFoundError:
            # Closed and reused behind our back: register the new description.
            self._epoll.register(fd, events)

    def unregister(self, fd: int) -> None:
        """Stop watching fd. Safe if fd was already closed (EBADF/ENOENT)."""
        if self._fds.pop(fd, None) is None:
            return
        if self._dispatching:
            self._dropped.add(fd)
        if self._epoll is None:
            return
        try:
            self._epoll.unregister(fd)
        except OSError:
            # EBADF: the fd was closed first. If a dup keeps the description
            # alive, its events will show up unknown and trigger a rebuild.
            pass

    def is_registered(self, fd: int) -> bool:
        return fd in self._fds

    def _rebuild_epoll(self) -> None:
        self._rebuilds += 1
        old = self._epoll
        self._epoll = select.epoll()
        if old is not None:
            old.close()
        for fd, entry in list(self._fds.items()):
            try:
                self._epoll.register(fd, entry.events)
            except OSError as exc:
                log.warning("evloop: dropping fd %d during epoll rebuild: %s", fd, exc)
                del self._fds[fd]
                self.call_soon(entry.callback, EVENT_ERR)

    # -- ownership ------------------------------------------------------------

    def adopt(self, obj: Any) -> None:
        """Make the loop responsible for `obj`: Loop.close() calls obj.abort().
        Conns, servers and workers adopt themselves."""
        self._adopted[id(obj)] = obj

    def disown(self, obj: Any) -> None:
        self._adopted.pop(id(obj), None)

    # -- signals --------------------------------------------------------------

    def add_signal_handler(self, sig: int, fn: Callable[..., Any], *args: Any) -> None:
        """Run fn(*args) on the loop whenever `sig` arrives. Only the main
        thread may install signal handlers (a CPython rule)."""
        self._check_open()
        if sig in (signal.SIGKILL, signal.SIGSTOP):
            raise ValueError(f"signal {sig} cannot be caught")
        if threading.current_thread() is not threading.main_thread():
            raise RuntimeError("signal handlers can only be added from the main thread")
        if self._sig_socks is None:
            rsock, wsock = socket.socketpair()
            rsock.setblocking(False)
            wsock.setblocking(False)
            self._sig_prev_wakeup = signal.set_wakeup_fd(wsock.fileno(), warn_on_full_buffer=False)
            self._sig_socks = (rsock, wsock)
            self.register(rsock.fileno(), EVENT_READ, self._on_signal_fd)
        if sig not in self._sig_prev:
            # The Python-level handler does nothing: the C-level handler has
            # already written the signal number to the wake-up fd, and the
            # user's callback runs later from the loop, not in this frame.
            self._sig_prev[sig] = signal.signal(sig, _noop)
        self._sig_handlers[sig] = Handle(self, fn, args)

    def remove_signal_handler(self, sig: int) -> bool:
        if self._sig_handlers.pop(sig, None) is None:
            return False
        prev = self._sig_prev.pop(sig)
        signal.signal(sig, prev if prev is not None else signal.SIG_DFL)
        if not self._sig_handlers:
            self._teardown_signals()
        return True

    def _teardown_signals(self) -> None:
        for sig, prev in list(self._sig_prev.items()):
            signal.signal(sig, prev if prev is not None else signal.SIG_DFL)
        self._sig_prev.clear()
        self._sig_handlers.clear()
        if self._sig_socks is not None:
            rsock, wsock = self._sig_socks
            self._sig_socks = None
            signal.set_wakeup_fd(self._sig_prev_wakeup)
            self.unregister(rsock.fileno())
            rsock.close()
            wsock.close()

    def _on_signal_fd(self, _mask: int) -> None:
        assert self._sig_socks is not None
        try:
            data = self._sig_socks[0].recv(4096)
        except BlockingIOError:
            return
        for signum in data:
            h = self._sig_handlers.get(signum)
            if h is not None and not h._cancelled:
                self._ready.append(Handle(self, h._fn, h._args))

    def _on_wakeup(self, _mask: int) -> None:
        try:
            os.eventfd_read(self._wakeup_fd)
        except BlockingIOError:
            pass

    # -- running --------------------------------------------------------------

    def set_exception_handler(self, handler: Callable[[BaseException, Any], Any] | None) -> None:
        """handler(exc, callback) is called for an exception escaping a user
        callback; None restores the default (log through `logging`)."""
        self._exception_handler = handler

    def call_exception_handler(self, exc: BaseException, callback: Any) -> None:
        if self._exception_handler is not None:
            try:
                self._exception_handler(exc, callback)
                return
            except Exception as inner:  # the handler itself failed: log both
                log.error("evloop: exception handler failed", exc_info=inner)
        log.error("evloop: exception in callback %s", _callback_name(callback), exc_info=exc)

    def stop(self) -> None:
        """Make run() return after the current turn."""
        self._stopping = True

    def run(self) -> None:
        """Run turns until stop()."""
        self._enter()
        try:
            # At least one turn, so a stop() made before run() still lets
            # what is already due run, as asyncio does.
            self._run_once()
            while not self._stopping:
                self._run_once()
        finally:
            self._leave()

    def run_until(
        self, predicate: Callable[[], object] | None = None, timeout: float | None = None
    ) -> bool:
        """Run turns until predicate() is true (checked after every turn),
        stop() is called, or `timeout` seconds pass. Returns whether the
        predicate held (True also when no predicate was given and the run
        ended by stop() or the timeout)."""
        self._check_open()
        if self._running:
            # Before the deadline timer exists, so a refused call leaves
            # nothing behind.
            raise LoopRunningError("this loop is already running")
        if predicate is not None and predicate():
            return True
        deadline_handle = None
        timed_out = False

        def _expire() -> None:
            nonlocal timed_out
            timed_out = True

        if timeout is not None:
            deadline_handle = self.call_later(timeout, _expire)
        ran = False
        self._enter()
        try:
            while True:
                # Checked before every sleep, including right after _enter()
                # flushed writes made outside the loop.
                if predicate is not None and predicate():
                    return True
                if timed_out or (self._stopping and ran):
                    break
                ran = True
                self._run_once()
        finally:
            self._leave()
            if deadline_handle is not None:
                deadline_handle.cancel()
        return predicate is None

    def _enter(self) -> None:
        self._check_open()
        if self._running:
            raise LoopRunningError("this loop is already running")
        self._running = True
        self._thread_id = threading.get_ident()
        if self._before_poll:
            self._run_before_poll()

    def _leave(self) -> None:
        self._running = False
        self._stopping = False
        self._thread_id = None
        if not self._closed:
            self._run_before_poll()

    def _run_before_poll(self) -> None:
        hooks = self._before_poll
        self._wrote = True  # end-of-turn hooks are flushes: busy_poll keys on them
        while hooks:
            self._before_poll = []
            for fn in hooks:
                try:
                    fn()
                except (KeyboardInterrupt, SystemExit):
                    raise
                except BaseException as exc:
                    self.call_exception_handler(exc, fn)
            hooks = self._before_poll

    def run_once(self, timeout: float | None = None) -> None:
        """Run one turn, blocking in epoll for at most `timeout` seconds
        (None: until there is something to do). For embedding the loop in
        another one: register fileno() for reading with the host loop, call
        run_once(0) when it is readable, and again after next_timeout()
        seconds (see docs/asyncio.md)."""
        if timeout is not None and not (timeout >= 0 and math.isfinite(timeout)):
            raise ValueError(f"timeout must be a finite number >= 0 or None, got {timeout!r}")
        self._enter()
        try:
            self._run_once(-1.0 if timeout is None else timeout)
        finally:
            self._leave()

    def next_timeout(self) -> float | None:
        """Seconds until this loop has work that no fd event will announce:
        0.0 if callbacks, ready sources or end-of-turn hooks are pending, the
        time to the next timer, or None if there is nothing but fds."""
        if self._ready or self._sources or self._before_poll:
            return 0.0
        if self._timers:
            return max(0.0, self._timers[0][0] - self._now())
        return None

    def fileno(self) -> int:
        """The epoll fd: it is readable whenever a registered fd has an
        event, so a host event loop can watch it."""
        if self._epoll is None:
            raise LoopClosedError("the loop is closed")
        return self._epoll.fileno()

    def _busy_poll(self, epoll: select.epoll) -> list[tuple[int, int]]:
        # Spin with zero timeouts for up to busy_poll seconds: an answer that
        # arrives meanwhile costs no sleep and no wake-up.
        self._wrote = False
        poll = epoll.poll
        now = time.monotonic
        deadline = now() + self.busy_poll
        while True:
            events = poll(0, _MAX_EVENTS)
            if events or now() >= deadline:
                return events

    def _run_once(self, max_timeout: float = -1.0) -> None:
        self._iterations += 1
        # Stage 1: how long may we sleep?
        if self._ready or self._sources or self._stopping or self._before_poll:
            timeout = 0.0
        elif self._timers:
            timeout = self._timers[0][0] - self._now()
            if timeout <= 0.0:
                timeout = 0.0
            elif timeout > _MAX_TIMEOUT:
                timeout = _MAX_TIMEOUT
        else:
            timeout = -1.0
        if max_timeout >= 0.0 and (timeout < 0.0 or timeout > max_timeout):
            timeout = max_timeout
        epoll = self._epoll
        assert epoll is not None
        clock = self._clock
        if timeout != 0.0 and self._wrote and self.busy_poll:
            events = self._busy_poll(epoll)
            if not events:
                events = epoll.poll(timeout, _MAX_EVENTS)
        elif timeout <= 0.0:
            events = epoll.poll(timeout, _MAX_EVENTS)
        elif clock is None:
            # Round up to the millisecond epoll counts in, so we never wake
            # before the timer is due and spin on a zero timeout.
            events = epoll.poll(-(-timeout // 0.001) * 0.001, _MAX_EVENTS)
        else:
            events = epoll.poll(clock.real_timeout(timeout), _MAX_EVENTS)
            if not events and self._timers:
                clock.idle(timeout)

        # Stage 2: due timers join the ready queue.
        timers = self._timers
        if timers:
            now = self._now()
            ready = self._ready
            while timers and timers[0][0] <= now:
                th = heapq.heappop(timers)[2]
                th._in_heap = False
                if th._cancelled:
                    self._cancelled_timers -= 1
                else:
                    ready.append(th)

        # Stage 3: fd callbacks. What they schedule with call_soon runs next
        # turn, after this turn's writes have been flushed (stage 6).
        ready = self._ready
        n = len(ready)
        if events:
            fds = self._fds
            dropped = self._dropped
            self._dispatching = True
            try:
                for fd, mask in events:
                    if dropped and fd in dropped:
                        continue  # unregistered earlier in this batch
                    entry = fds.get(fd)
                    if entry is None:
                        self._unknown_fd(fd)
                        continue
                    try:
                        entry.callback(mask)
                    except (KeyboardInterrupt, SystemExit):
                        raise
                    except BaseException as exc:
                        self.call_exception_handler(exc, entry.callback)
            finally:
                self._dispatching = False
                if dropped:
                    dropped.clear()

        # Stage 4: the callbacks that were queued before stage 3.
        if n:
            debug = self.debug
            while n:
                n -= 1
                h = ready.popleft()
                if h._cancelled:
                    continue
                try:
                    if debug:
                        self._run_timed(h._fn, h._args)
                    else:
                        h._fn(*h._args)
                except (KeyboardInterrupt, SystemExit):
                    raise
                except BaseException as exc:
                    self.call_exception_handler(exc, h._fn)

        # Stage 5: ready sources, round-robin, a quantum per source per round.
        sources = self._sources
        if sources:
            self._serve_sources(sources)

        # Stage 6: flush what this turn wrote before we can sleep again.
        if self._before_poll:
            self._run_before_poll()

    def _serve_sources(self, sources: deque[ReadySource]) -> None:
        left = self.budget
        quantum = self.quantum
        deadline = 0.0  # the clock is read only if a second call is needed
        popleft = sources.popleft
        append = sources.append
        while True:
            alone = len(sources) == 1
            if alone:
                # Nobody to be fair to: the lone source runs to the budget.
                src = sources[0]
                limit = left
            else:
                src = popleft()
                limit = quantum if quantum < left else left
            try:
                n, more = src.serve(limit)
            except (KeyboardInterrupt, SystemExit):
                if not alone:
                    append(src)  # it may still hold work: keep it queued
                raise
            except BaseException as exc:
                self.call_exception_handler(exc, src.serve)
                n, more = 1, False
            if not n:
                more = False  # it could not deliver: it re-queues itself when it can
            if alone:
                if not more:
                    popleft()
            elif more:
                append(src)
            left -= n
            if not sources or left <= 0:
                return
            # The time budget is real time, whatever clock the timers use.
            if not deadline:
                deadline = time.monotonic() + self.time_budget
            elif time.monotonic() >= deadline:
                return

    def _run_timed(self, fn: Callable[..., Any], args: tuple[Any, ...]) -> None:
        t0 = time.perf_counter()
        try:
            fn(*args)
        finally:
            dt = time.perf_counter() - t0
            if dt >= self.slow_callback:
                log.warning("evloop: slow callback %s took %.3f s", _callback_name(fn), dt)

    def _unknown_fd(self, fd: int) -> None:
        assert self._epoll is not None
        try:
            self._epoll.unregister(fd)
        except OSError:
            # The number is closed but its description lives on elsewhere:
            # it can no longer be removed by number. Start a fresh epoll set.
            self._rebuild_epoll()

    # -- introspection and teardown -------------------------------------------

    def statistics(self) -> LoopStatistics:
        internal = 1 + (self._sig_socks is not None)  # eventfd, signal socket
        return LoopStatistics(
            fds=len(self._fds) - internal,
            timers=len(self._timers) - self._cancelled_timers,
            ready=len(self._ready),
            ready_sources=len(self._sources),
            iterations=self._iterations,
            epoll_rebuilds=self._rebuilds,
        )

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def running(self) -> bool:
        return self._running

    def _check_open(self) -> None:
        if self._closed:
            raise LoopClosedError("the loop is closed")

    def close(self) -> None:
        """Abort everything the loop adopted (Conns, servers, workers), run
        the callbacks that produced and every callback already accepted
        (including those posted from other threads before close() began),
        drop every timer, release the epoll fd and the fds the loop created
        itself. From the moment it begins, call_soon_threadsafe() raises
        LoopClosedError. Idempotent."""
        if self._closed:
            return
        if self._running:
            raise LoopRunningError("cannot close a running loop; stop() it first")
        with self._post_lock:
            self._posts_open = False
        while self._adopted:
            # Oldest first: an owner (a Pool) goes before what it adopted
            # later (its Workers), so it can end them on its own terms.
            obj = self._adopted.pop(next(iter(self._adopted)))
            try:
                obj.abort()
            except Exception as exc:
                self.call_exception_handler(exc, obj.abort)
        # Run what is queued: close callbacks queued by those aborts, and
        # callbacks accepted before posting closed. What they schedule in
        # turn runs too, up to a bound that stops a callback re-queuing
        # itself from hanging close().
        ready = self._ready
        for _ in range(_CLOSE_DRAIN_MAX):
            if not ready:
                break
            h = ready.popleft()
            if not h._cancelled:
                try:
                    h._fn(*h._args)
                except Exception as exc:
                    self.call_exception_handler(exc, h._fn)
        else:
            log.warning("evloop: close() dropped %d callbacks that kept re-queuing", len(ready))
        if self._sig_socks is not None or self._sig_prev:
            self._teardown_signals()
        self._closed = True
        for _, _, h in self._timers:
            h._fn = _noop
            h._args = ()
            h._in_heap = False
        self._timers.clear()
        self._ready.clear()
        self._sources.clear()
        self._before_poll.clear()
        self._fds.clear()
        if self._epoll is not None:
            self._epoll.close()
            self._epoll = None
        with self._post_lock:
            fd, self._wakeup_fd = self._wakeup_fd, -1
            os.close(fd)

    def __enter__(self) -> Loop:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else ("running" if self._running else "idle")
        return f"<Loop {state} fds={len(self._fds)} timers={len(self._timers)}>"


def _check_callable(fn: Any) -> None:
    if not callable(fn):
        raise TypeError(f"a callback must be callable, got {type(fn).__name__}: {fn!r}")


def _ignore_sigpipe() -> None:
    # A write to a closed peer must fail with EPIPE, never kill the process.
    # CPython ignores SIGPIPE at start-up; an embedding program may not have.
    if threading.current_thread() is threading.main_thread():
        if signal.getsignal(signal.SIGPIPE) is not signal.SIG_IGN:
            signal.signal(signal.SIGPIPE, signal.SIG_IGN)
