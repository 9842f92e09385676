# evloop/pool.py
#
# Pool: N supervised workers (spawn() targets) and request/response on top of
# their Pipes. Both ends live here: Pool and Request in the parent, serve()
# and Reply in a Python worker.
#
# Wire format. Pool traffic uses the reserved control channel 65535; the first
# payload byte says what the frame is, and the request id is a u64 big-endian
# chosen by the parent (unique per Pool, never reused):
#
#   "Q" (0x51) parent -> worker   id | request bytes       answer expected
#   "M" (0x4D) parent -> worker   message bytes            no answer
#   "R" (0x52) worker -> parent   id | reply bytes         success
#   "X" (0x58) worker -> parent   id | JSON error          the handler raised
#
# The JSON error is {"type", "message", "traceback"}, the same body spawn uses
# for a worker's fatal error report ("E"). User channels 0..65534 are left to
# the application (Pool.on_frame, serve(on_frame=...)).
#
# Invariants: every Request completes exactly once (reply, remote error,
# timeout, cancel, the crash of its worker, or the pool's shutdown), and its
# timer is cancelled when it does; a request is in exactly one place: the
# queue (no worker available yet) or one slot's in-flight table. Nothing
# waits forever: a worker's exit fails what it held at once, and a pool that
# cannot get a worker back fails what is queued.
from __future__ import annotations

import functools
import logging
import struct
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .conn import Buffer
from .errors import (
    BufferFullError,
    ConnClosedError,
    InvalidStateError,
    PoolClosedError,
    RemoteError,
    RequestCancelled,
    RequestTimeout,
    SpawnError,
    WorkerCrashed,
)
from .loop import Loop, TimerHandle
from .pipe import DEFAULT_MAX_LEN, Pipe
from .spawn import CONTROL_CHANNEL, Worker, decode_error, encode_error, spawn

__all__ = ["Pool", "Request", "PoolStatistics", "serve", "Reply", "STRATEGIES"]

log = logging.getLogger("evloop")

KIND_REQUEST = 0x51  # "Q"
KIND_MESSAGE = 0x4D  # "M"
KIND_REPLY = 0x52  # "R"
KIND_FAIL = 0x58  # "X"
_ID = struct.Struct(">Q")
# kind byte + id
_REQ_OVERHEAD = 1 + _ID.size

STRATEGIES = ("round_robin", "least_outstanding")
_DEFAULT: Any = object()


# -- the parent side ------------------------------------------------------------


class Request:
    """A request in flight: a small future completed on the Loop.

    `done()`, `cancelled()`; `result()` returns the reply bytes or raises the
    error (RemoteError, RequestTimeout, WorkerCrashed, PoolClosedError,
    RequestCancelled, BufferFullError); `exception()` returns that error or
    None. Both raise InvalidStateError while pending. Done callbacks get the
    Request, run when it completes (at once if it already has), and an
    exception escaping one goes to the Loop's exception handler.
    """

    __slots__ = (
        "id", "_pool", "_payload", "_done", "_result", "_exc", "_callbacks", "_timer", "_slot",
    )  # fmt: skip

    def __init__(self, pool: Pool, rid: int, payload: bytes):
        self.id = rid
        self._pool = pool
        self._payload: bytes | None = payload  # until it is written
        self._done = False
        self._result: bytes | None = None
        self._exc: BaseException | None = None
        self._callbacks: list[Callable[[Request], Any]] = []
        self._timer: TimerHandle | None = None
        self._slot: _Slot | None = None

    def done(self) -> bool:
        return self._done

    def cancelled(self) -> bool:
        return isinstance(self._exc, RequestCancelled)

    def result(self) -> bytes:
        if not self._done:
            raise InvalidStateError(f"request {self.id} is still pending")
        if self._exc is not None:
            raise self._exc
        assert self._result is not None
        return self._result

    def exception(self) -> BaseException | None:
        if not self._done:
            raise InvalidStateError(f"request {self.id} is still pending")
        return self._exc

    def add_done_callback(self, fn: Callable[[Request], Any]) -> None:
        if self._done:
            self._run_callback(fn)
        else:
            self._callbacks.append(fn)

    def cancel(self) -> bool:
        """Complete the request with RequestCancelled unless it is done. The
        worker is not told; its late reply is dropped. Returns whether it was
        cancelled."""
        if self._done:
            return False
        self._pool._forget(self)
        self._complete(None, RequestCancelled(f"request {self.id} was cancelled"))
        return True

    def _complete(self, result: bytes | None, exc: BaseException | None) -> None:
        if self._done:
            return
        self._done = True
        self._payload = None
        self._result = result
        self._exc = exc
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._slot = None
        self._pool._count(self)
        callbacks, self._callbacks = self._callbacks, []
        for fn in callbacks:
            self._run_callback(fn)
        self._pool._request_finished()

    def _run_callback(self, fn: Callable[[Request], Any]) -> None:
        try:
            fn(self)
        except Exception as exc:
            self._pool.loop.call_exception_handler(exc, fn)

    def __repr__(self) -> str:
        if not self._done:
            state = "pending"
        elif self._exc is not None:
            state = f"failed {type(self._exc).__name__}"
        else:
            state = "done"
        return f"<Request {self.id} {state}>"


@dataclass(frozen=True)
class PoolStatistics:
    size: int
    alive: int  # workers running and taking work
    in_flight: int  # requests sent to a worker, not answered yet
    queued: int  # requests (and messages) waiting for a worker
    requests: int  # requests submitted
    completed: int  # answered with a reply
    failed: int  # completed with an error of any kind
    timeouts: int
    crashes: int  # workers that exited without being asked to
    restarts: int
    spawn_failures: int


class _Slot:
    __slots__ = ("index", "worker", "inflight", "crash_streak", "restart_timer")

    def __init__(self, index: int):
        self.index = index
        self.worker: Worker | None = None
        self.inflight: dict[int, Request] = {}
        self.crash_streak = 0
        self.restart_timer: TimerHandle | None = None

    def usable(self) -> bool:
        w = self.worker
        return w is not None and w.returncode is None and not w.pipe.conn.closing


class Pool:
    """N supervised workers taking messages and requests. See docs/spawn.md.

    `target` and `*args` are as for spawn(); a Python target answers requests
    with serve(). `strategy` picks the worker for send() and request():
    "round_robin", or "least_outstanding" (fewest requests in flight, ties in
    round-robin order). `request_timeout` is the default per-request timeout
    (None: no timeout). A worker that exits is replaced when `restart` is
    true: at once the first time, then after backoff_initial, doubling up to
    backoff_max while it keeps dying within `reset_after` seconds of its
    start. on_frame(worker, chan, payload) gets user-channel frames from any
    worker, on_error(worker, exc) their error reports. The remaining keyword
    arguments go to spawn() (env, cwd, pdeathsig, max_len, ...).
    """

    def __init__(
        self,
        loop: Loop,
        target: Any,
        size: int,
        *args: Any,
        strategy: str = "round_robin",
        request_timeout: float | None = None,
        restart: bool = True,
        backoff_initial: float = 0.05,
        backoff_max: float = 5.0,
        reset_after: float = 10.0,
        on_frame: Callable[[Worker, int, bytes | bytearray], Any] | None = None,
        on_error: Callable[[Worker, BaseException], Any] | None = None,
        **spawn_kwargs: Any,
    ):
        if size < 1:
            raise ValueError(f"size must be >= 1, got {size}")
        if strategy not in STRATEGIES:
            raise ValueError(f"strategy must be one of {STRATEGIES}, got {strategy!r}")
        if request_timeout is not None and request_timeout <= 0:
            raise ValueError(f"request_timeout must be > 0 or None, got {request_timeout}")
        if not 0 < backoff_initial <= backoff_max:
            raise ValueError(
                f"need 0 < backoff_initial ({backoff_initial}) <= backoff_max ({backoff_max})"
            )
        for bad in ("on_exit", "on_control"):
            if bad in spawn_kwargs:
                raise TypeError(f"Pool manages {bad} itself")
        self.loop = loop
        self.target = target
        self.args = args
        self.size = size
        self.strategy = strategy
        self.request_timeout = request_timeout
        self.restart = restart
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.reset_after = reset_after
        self.on_frame = on_frame
        self.on_error = on_error
        self._spawn_kwargs = spawn_kwargs
        self._max_payload = int(spawn_kwargs.get("max_len", DEFAULT_MAX_LEN)) - _REQ_OVERHEAD
        self._slots = [_Slot(i) for i in range(size)]
        self._rr = 0
        self._next_id = 1
        self._queue: deque[Request | bytes] = deque()
        self._closing = False  # shutdown() called: no new work
        self._stopping = False  # workers are being stopped
        self._closed = False
        self._shutdown_callbacks: list[Callable[[Pool], Any]] = []
        self._deadline_timer: TimerHandle | None = None
        self._term_timer: TimerHandle | None = None
        self._grace = 2.0
        self._requests = self._completed = self._failed = self._timeouts = 0
        self._crashes = self._restarts = self._spawn_failures = 0
        loop.adopt(self)
        try:
            for slot in self._slots:
                self._start(slot)
        except BaseException:
            self.abort()
            raise

    # -- workers ----------------------------------------------------------------

    def _start(self, slot: _Slot) -> None:
        worker = spawn(
            self.loop,
            self.target,
            *self.args,
            on_frame=self._on_user_frame,
            on_exit=functools.partial(self._on_worker_exit, slot),
            on_error=self._on_worker_error,
            **self._spawn_kwargs,
        )
        worker.on_control = functools.partial(self._on_control, slot)
        slot.worker = worker

    def _on_user_frame(self, worker: Worker, chan: int, payload: Any) -> None:
        if self.on_frame is not None:
            self.on_frame(worker, chan, payload)

    def _on_worker_error(self, worker: Worker, exc: BaseException) -> None:
        if self.on_error is not None:
            self.on_error(worker, exc)
        elif isinstance(exc, RemoteError):
            log.error(
                "evloop: pool worker %d failed: %s\n%s", worker.pid, exc, exc.remote_traceback
            )
        else:
            log.error("evloop: pool worker %d: %s", worker.pid, exc)

    def _on_worker_exit(self, slot: _Slot, worker: Worker) -> None:
        if slot.worker is not worker:
            return
        slot.worker = None
        status = worker.returncode
        name = f"worker {slot.index} (pid {worker.pid})"
        inflight, slot.inflight = slot.inflight, {}
        for req in inflight.values():
            exc = WorkerCrashed(
                f"{name} exited with status {status} while request {req.id} was outstanding",
                worker=name,
                status=status,
            )
            exc.__cause__ = worker.error
            req._complete(None, exc)
        if self._stopping:
            self._check_closed()
            return
        self._crashes += 1
        if not self.restart or self._closing:
            self._fail_queue_if_hopeless()
            self._check_drained()
            return
        started = worker.started
        ended = worker.exited_at if worker.exited_at is not None else self.loop.time()
        if ended - started >= self.reset_after:
            slot.crash_streak = 0
        self._schedule_restart(slot)

    def _schedule_restart(self, slot: _Slot) -> None:
        streak = slot.crash_streak
        delay = (
            0.0 if streak == 0 else min(self.backoff_initial * 2 ** (streak - 1), self.backoff_max)
        )
        slot.crash_streak = streak + 1
        slot.restart_timer = self.loop.call_later(delay, self._restart, slot)

    def _restart(self, slot: _Slot) -> None:
        slot.restart_timer = None
        if self._closing or slot.worker is not None:
            return
        try:
            self._start(slot)
        except (SpawnError, OSError) as exc:
            self._spawn_failures += 1
            log.error("evloop: pool could not restart worker %d: %s", slot.index, exc)
            self._schedule_restart(slot)
            if not any(s.usable() for s in self._slots):
                # Retrying goes on, but what waits now might wait for ever.
                self._fail_queue(f"no worker could be started: {exc}", exc)
            return
        self._restarts += 1
        self._drain_queue()

    def _pick(self) -> _Slot | None:
        # Per request, so: usable() is asked only of a slot that would win,
        # and least_outstanding stops at the first idle slot.
        slots = self._slots
        n = len(slots)
        rr = self._rr
        best: _Slot | None = None
        if self.strategy == "round_robin":
            for k in range(n):
                slot = slots[(rr + k) % n]
                if slot.usable():
                    best = slot
                    break
        else:
            fewest = -1
            for k in range(n):
                slot = slots[(rr + k) % n]
                count = len(slot.inflight)
                if (fewest < 0 or count < fewest) and slot.usable():
                    best, fewest = slot, count
                    if not count:
                        break
        if best is not None:
            self._rr = (best.index + 1) % n
        return best

    # -- submitting work ----------------------------------------------------------

    def _check_open(self) -> None:
        if self._closing:
            raise PoolClosedError(
                "the pool is shut down" if self._closed else "the pool is shutting down"
            )

    def _check_size(self, data: Buffer) -> bytes:
        b = bytes(data)
        if len(b) > self._max_payload:
            raise ValueError(
                f"payload of {len(b)} bytes exceeds the pool's limit {self._max_payload}"
            )
        return b

    def request(
        self,
        data: Buffer,
        callback: Callable[[Request], Any] | None = None,
        timeout: float | None = _DEFAULT,
    ) -> Request:
        """Send `data` to one worker (by strategy) and return the Request for
        its reply. `callback(request)` is added as a done callback; `timeout`
        defaults to the pool's request_timeout (None: none). Raises
        PoolClosedError once shutdown() was called."""
        self._check_open()
        payload = self._check_size(data)
        if timeout is _DEFAULT:
            timeout = self.request_timeout
        if timeout is not None and timeout < 0:
            raise ValueError(f"timeout must be >= 0 or None, got {timeout}")
        req = Request(self, self._next_id, payload)
        self._next_id += 1
        self._requests += 1
        if callback is not None:
            req.add_done_callback(callback)
        if timeout is not None:
            req._timer = self.loop.call_later(timeout, self._on_timeout, req, timeout)
        self._queue.append(req)
        self._drain_queue()
        if not req._done and req._slot is None:
            self._fail_queue_if_hopeless()
        return req

    def send(self, data: Buffer) -> None:
        """Send a message (no reply) to one worker, by strategy. It waits in
        the queue if no worker is up; it is dropped if the pool shuts down
        before one is."""
        self._check_open()
        self._queue.append(bytes((KIND_MESSAGE,)) + self._check_size(data))
        self._drain_queue()

    def broadcast(self, data: Buffer) -> int:
        """Send a message (no reply) to every worker that is up now. Returns
        how many got it."""
        self._check_open()
        frame = bytes((KIND_MESSAGE,)) + self._check_size(data)
        n = 0
        for slot in self._slots:
            if slot.usable():
                assert slot.worker is not None
                slot.worker.pipe.write_frame(CONTROL_CHANNEL, frame)
                n += 1
        return n

    def _drain_queue(self) -> None:
        queue = self._queue
        while queue:
            slot = self._pick()
            if slot is None:
                return
            item = queue.popleft()
            assert slot.worker is not None
            pipe = slot.worker.pipe
            if isinstance(item, bytes):
                self._write(pipe, item)
                continue
            assert item._payload is not None
            frame = bytes((KIND_REQUEST,)) + _ID.pack(item.id) + item._payload
            item._payload = None
            try:
                pipe.write_frame(CONTROL_CHANNEL, frame)
            except (BufferFullError, ConnClosedError) as exc:
                item._complete(None, exc)
                continue
            item._slot = slot
            slot.inflight[item.id] = item

    def _write(self, pipe: Pipe, frame: bytes) -> None:
        try:
            pipe.write_frame(CONTROL_CHANNEL, frame)
        except (BufferFullError, ConnClosedError) as exc:
            log.warning("evloop: pool message dropped: %s", exc)

    def _on_control(self, slot: _Slot, worker: Worker, payload: bytes) -> None:
        kind = payload[0]
        if kind not in (KIND_REPLY, KIND_FAIL) or len(payload) < _REQ_OVERHEAD:
            log.debug("evloop: pool: ignoring control message %r", payload[:16])
            return
        (rid,) = _ID.unpack_from(payload, 1)
        req = slot.inflight.pop(rid, None)
        if req is None:
            return  # timed out or cancelled already: the late answer is dropped
        if kind == KIND_REPLY:
            req._complete(payload[_REQ_OVERHEAD:], None)
        else:
            req._complete(None, decode_error(payload[_REQ_OVERHEAD:]))

    def _on_timeout(self, req: Request, timeout: float) -> None:
        req._timer = None
        if req._done:
            return
        self._forget(req)
        self._timeouts += 1
        req._complete(None, RequestTimeout(f"request {req.id} got no reply within {timeout} s"))

    def _forget(self, req: Request) -> None:
        slot = req._slot
        if slot is not None:
            slot.inflight.pop(req.id, None)
        else:
            try:
                self._queue.remove(req)
            except ValueError:
                pass

    def _count(self, req: Request) -> None:
        if req._exc is None:
            self._completed += 1
        else:
            self._failed += 1

    def _request_finished(self) -> None:
        if self._closing and not self._stopping:
            self._check_drained()

    def _hopeless(self) -> bool:
        """True when no worker is up and none will be started."""
        if any(s.usable() for s in self._slots):
            return False
        if self._closing or not self.restart:
            return True
        return False

    def _fail_queue_if_hopeless(self) -> None:
        if not self._queue or not self._hopeless():
            return
        why = "the pool is shutting down" if self._closing else "restart=False"
        self._fail_queue(f"no worker left to take it ({why})")

    def _fail_queue(self, msg: str, cause: BaseException | None = None) -> None:
        queue, self._queue = self._queue, deque()
        for item in queue:
            if isinstance(item, Request):
                exc = PoolClosedError(f"request {item.id}: {msg}")
                exc.__cause__ = cause
                item._complete(None, exc)

    def _fail_inflight(self, msg: str) -> None:
        for slot in self._slots:
            inflight, slot.inflight = slot.inflight, {}
            for req in inflight.values():
                req._complete(None, PoolClosedError(f"request {req.id}: {msg}"))

    # -- shutdown -------------------------------------------------------------------

    @property
    def closing(self) -> bool:
        """True once shutdown() was called (or the loop closed the pool)."""
        return self._closing

    @property
    def closed(self) -> bool:
        """True once every worker is gone after a shutdown."""
        return self._closed

    def workers(self) -> list[Worker]:
        """The workers currently running (in slot order)."""
        return [s.worker for s in self._slots if s.worker is not None]

    def shutdown(
        self,
        deadline: float = 10.0,
        callback: Callable[[Pool], Any] | None = None,
        *,
        grace: float = 2.0,
    ) -> None:
        """Stop taking work (PoolClosedError), let requests in flight or queued
        finish for up to `deadline` seconds, then fail what is left with
        PoolClosedError and stop the workers: close their Pipes (a Python
        worker exits on EOF), SIGTERM them after `grace` seconds and SIGKILL
        after `grace` more. callback(pool) runs once every worker is reaped."""
        if callback is not None:
            if self._closed:
                self.loop.call_soon(callback, self)
            else:
                self._shutdown_callbacks.append(callback)
        if self._closing:
            return
        self._closing = True
        self._grace = grace
        for slot in self._slots:
            if slot.restart_timer is not None:
                slot.restart_timer.cancel()
                slot.restart_timer = None
        self._deadline_timer = self.loop.call_later(deadline, self._deadline_expired, deadline)
        self._fail_queue_if_hopeless()
        self._check_drained()

    def _check_drained(self) -> None:
        if not self._closing or self._stopping:
            return
        if self._queue or any(s.inflight for s in self._slots):
            return
        self._stop_workers()

    def _deadline_expired(self, deadline: float) -> None:
        self._deadline_timer = None
        if self._stopping:
            return
        msg = f"the pool shut down before it completed (deadline {deadline} s)"
        self._fail_queue(msg)
        self._fail_inflight(msg)
        self._stop_workers()

    def _stop_workers(self) -> None:
        if self._stopping:
            return
        self._stopping = True
        grace = self._grace
        if self._deadline_timer is not None:
            self._deadline_timer.cancel()
            self._deadline_timer = None
        for worker in self.workers():
            worker.close()
        self._term_timer = self.loop.call_later(grace, self._terminate_all, grace)
        self._check_closed()

    def _terminate_all(self, grace: float) -> None:
        self._term_timer = None
        for worker in self.workers():
            worker.terminate(grace)

    def _check_closed(self) -> None:
        if self._closed or not self._stopping:
            return
        if any(s.worker is not None for s in self._slots):
            return
        self._closed = True
        if self._term_timer is not None:
            self._term_timer.cancel()
            self._term_timer = None
        self.loop.disown(self)
        callbacks, self._shutdown_callbacks = self._shutdown_callbacks, []
        for fn in callbacks:
            try:
                fn(self)
            except Exception as exc:
                self.loop.call_exception_handler(exc, fn)

    def abort(self) -> None:
        """Fail everything outstanding with PoolClosedError and kill the
        workers now. Loop.close() calls this."""
        self._closing = self._stopping = True
        for t in (self._deadline_timer, self._term_timer):
            if t is not None:
                t.cancel()
        self._deadline_timer = self._term_timer = None
        for slot in self._slots:
            if slot.restart_timer is not None:
                slot.restart_timer.cancel()
                slot.restart_timer = None
        self._fail_queue("the pool was aborted")
        self._fail_inflight("the pool was aborted")
        for worker in self.workers():
            worker.abort()
        self._check_closed()

    # -- introspection --------------------------------------------------------------

    def statistics(self) -> PoolStatistics:
        return PoolStatistics(
            size=self.size,
            alive=sum(1 for s in self._slots if s.usable()),
            in_flight=sum(len(s.inflight) for s in self._slots),
            queued=len(self._queue),
            requests=self._requests,
            completed=self._completed,
            failed=self._failed,
            timeouts=self._timeouts,
            crashes=self._crashes,
            restarts=self._restarts,
            spawn_failures=self._spawn_failures,
        )

    def __repr__(self) -> str:
        state = "closed" if self._closed else ("closing" if self._closing else "open")
        return f"<Pool {state} size={self.size} target={self.target!r}>"


# -- the worker side ------------------------------------------------------------


class Reply:
    """Answers one request from inside a worker: `reply(data)` or
    `reply.fail(exc)`, exactly once. For a message (send/broadcast) it does
    nothing. Answers to a parent that has gone away are dropped."""

    __slots__ = ("_pipe", "id", "_done")

    def __init__(self, pipe: Pipe, rid: int | None):
        self._pipe = pipe
        self.id = rid
        self._done = False

    @property
    def done(self) -> bool:
        return self._done

    def __call__(self, data: Buffer | None = b"") -> None:
        if data is None:
            data = b""
        self._send(KIND_REPLY, bytes(data))

    def fail(self, exc: BaseException) -> None:
        self._send(KIND_FAIL, encode_error(exc))

    def _send(self, kind: int, body: bytes) -> None:
        if self._done:
            raise RuntimeError(f"request {self.id} was already answered")
        self._done = True
        if self.id is None:
            return
        try:
            self._pipe.write_frame(CONTROL_CHANNEL, bytes((kind,)) + _ID.pack(self.id) + body)
        except ConnClosedError:
            pass


def serve(
    loop: Loop,
    pipe: Pipe,
    handler: Callable[..., Any],
    *,
    deferred: bool = False,
    on_frame: Callable[[int, bytes | bytearray], Any] | None = None,
) -> None:
    """Answer a Pool's requests in a Python worker: call this from the
    worker function. handler(data) -> bytes | None is called for every
    request and message, and its return value is the reply. With
    deferred=True it is called as handler(data, reply) and answers later by
    calling reply(data) or reply.fail(exc) (see Reply). A handler that raises
    fails only that request (the parent gets a RemoteError); an exception
    from a message handler, which has nobody to answer, ends the worker.
    Frames on user channels go to on_frame(chan, payload)."""

    def dispatch(chan: int, payload: Any) -> None:
        if chan != CONTROL_CHANNEL:
            if on_frame is not None:
                on_frame(chan, payload)
            return
        kind = payload[0]
        if kind == KIND_REQUEST and len(payload) >= _REQ_OVERHEAD:
            (rid,) = _ID.unpack_from(payload, 1)
            data = bytes(payload[_REQ_OVERHEAD:])
            reply = Reply(pipe, rid)
            try:
                if deferred:
                    handler(data, reply)
                else:
                    reply(handler(data))
            except Exception as exc:
                if reply.done:
                    raise  # answered already: a plain bug, fatal like any other
                reply.fail(exc)
        elif kind == KIND_MESSAGE:
            data = bytes(payload[1:])
            if deferred:
                handler(data, Reply(pipe, None))
            else:
                handler(data)

    pipe.on_frame = dispatch
