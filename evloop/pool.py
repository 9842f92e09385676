# evloop/pool.py
#
# Pool: N supervised workers taking requests and messages. It composes
# three pieces that each work on their own:
#   supervise.Supervisor  keeps the processes running (restart with backoff,
#                         boot-failure limit, hang detection, recycling,
#                         escalating stop, the shutdown state machine);
#   rpc.Client            one per worker: the request/reply wire on its Pipe;
#   dispatch.Dispatcher   picks the worker for each request among those
#                         that can take one.
# The worker side is rpc.serve() (re-exported here with Reply).
#
# Which workers take work: a worker is in the dispatcher from the moment it
# is spawned (frames wait in its socket while it imports) until it is lost
# (exit, hang), retired (max_requests) or its Pipe is above its high
# watermark (back-pressure: it is resumed when the Pipe drains). With none
# available, requests wait in the pool's queue, their timeouts running.
#
# What happens to a worker's requests when it is lost:
#   it died before it was up  they never reached the target (the runtime
#                             reads nothing before the function returned):
#                             sent again to another worker
#   it exited (a crash)       WorkerCrashed, unless the request was made
#                             with idempotent=True: then sent again, once
#   it hung (hang_timeout)    WorkerHung (a WorkerCrashed), idempotent ones
#                             sent again, once
# Every reply that arrived before the worker's Pipe closed completes its
# request: a worker's exit is handled only after its last frame.
#
# Invariants: every Request completes exactly once; a pending request is in
# exactly one place (the queue, or one Client's in-flight table); nothing
# waits forever: a lost worker's requests are failed or re-queued at once,
# and a pool that cannot get a worker back (restart=False, shutting down,
# given up after max_boot_failures) fails what is queued.
"""Pool: N supervised workers taking requests; supervise + dispatch + rpc composed. See the comment header above for the invariants."""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .control import ID_OVERHEAD
from .dispatch import STRATEGIES, Dispatcher
from .errors import (
    BufferFullError,
    ConnClosedError,
    PoolClosedError,
    RemoteError,
    RequestTimeout,
    WorkerBootError,
    WorkerCrashed,
    WorkerHung,
)
from .loop import Loop
from .pipe import DEFAULT_MAX_LEN
from .rpc import Client, Codec, Reply, Request, get_codec, serve
from .spawn import Worker, check_target, spawn, target_name
from .supervise import Slot, SlotState, State, Supervisor

__all__ = ["Pool", "Request", "PoolStatistics", "serve", "Reply", "STRATEGIES"]

log = logging.getLogger("evloop")

_DEFAULT: Any = object()
_RUNNING = State.RUNNING
# How many times an idempotent request may be sent in all.
MAX_ATTEMPTS = 2


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
    hung: int = 0  # workers killed by the hang timeout
    recycled: int = 0  # workers retired after max_requests
    boot_failures: int = 0  # workers that died before they were up
    resent: int = 0  # requests sent again after their worker was lost


class _WorkerClient(Client):
    """A Pool's rpc Client on one worker's Pipe."""

    def __init__(self, slot: Slot, worker: Worker, codec: Codec | None, on_idle: Any):
        super().__init__(worker.pipe, codec=codec, on_idle=on_idle)
        self.slot = slot
        self.worker = worker
        self.retiring = False


class Pool:
    """N supervised workers taking messages and requests. See docs/spawn.md.

    `target` and `*args` are as for spawn(); a Python target answers
    requests with serve(). `strategy` picks the worker for send() and
    request(): "round_robin", or "least_outstanding" (fewest requests in
    flight, ties in round-robin order). `request_timeout` is the default
    per-request timeout (None: none). `codec` ("bytes", "json", "pickle" or
    a Codec) encodes request values and decodes replies; give the workers'
    serve() the same one.

    Supervision: a worker that exits is replaced when `restart` is true: at
    once the first time, then after backoff_initial, doubling up to
    backoff_max while it keeps dying within `reset_after` seconds of its
    start. After `max_boot_failures` workers in a row died before they were
    up (None: never), the pool gives up and closes, failing what it holds
    with a PoolClosedError caused by a WorkerBootError that carries the
    worker's own error. `hang_timeout` (None: off) kills a worker that sent
    nothing for that long while it owed an answer (see evloop/supervise.py).
    `max_requests` (None: no limit) retires a worker after that many
    requests: it gets no more, finishes those in flight and is replaced.

    Callbacks: on_frame(worker, chan, payload) gets user-channel frames from
    any worker, on_error(worker, exc) their error reports (logged on the
    "evloop" logger without it), on_worker_start(worker) and
    on_worker_exit(worker) every worker's start and exit. The remaining
    keyword arguments go to spawn() (env, cwd, pdeathsig, max_len, ...).
    `with Pool(...) as pool:` shuts the pool down on leaving the block.
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
        max_boot_failures: int | None = 5,
        hang_timeout: float | None = None,
        max_requests: int | None = None,
        codec: str | Codec | None = None,
        on_frame: Callable[[Worker, int, bytes | bytearray], Any] | None = None,
        on_error: Callable[[Worker, BaseException], Any] | None = None,
        on_worker_start: Callable[[Worker], Any] | None = None,
        on_worker_exit: Callable[[Worker], Any] | None = None,
        **spawn_kwargs: Any,
    ):
        if size < 1:
            raise ValueError(f"size must be >= 1, got {size}")
        if request_timeout is not None and request_timeout <= 0:
            raise ValueError(f"request_timeout must be > 0 or None, got {request_timeout}")
        if max_requests is not None and max_requests < 1:
            raise ValueError(f"max_requests must be >= 1 or None, got {max_requests}")
        for bad in ("on_exit", "on_control"):
            if bad in spawn_kwargs:
                raise TypeError(f"Pool manages {bad} itself")
        self._dispatcher: Dispatcher[_WorkerClient] = Dispatcher(strategy)
        if not isinstance(target, (list, tuple)):
            # A typo in the target fails here, once, not in a crash loop.
            target = target_name(target)
            check_target(target)
        self.loop = loop
        self.target = target
        self.args = args
        self.size = size
        self.strategy = strategy
        self.request_timeout = request_timeout
        self.max_requests = max_requests
        self.codec = get_codec(codec)
        self.on_frame = on_frame
        self.on_error = on_error
        self.on_worker_start = on_worker_start
        self.on_worker_exit = on_worker_exit
        self._spawn_kwargs = spawn_kwargs
        self._max_payload = int(spawn_kwargs.get("max_len", DEFAULT_MAX_LEN)) - ID_OVERHEAD
        self._max_req = max_requests if max_requests is not None else 1 << 62
        self._pick = self._dispatcher.pick
        self._next_id = 1
        self._queue: deque[Request | bytes] = deque()
        self._closed_callbacks: list[Callable[[Pool], Any]] = []
        self.requests = self.completed = self.failed = self.timeouts = self.resent = 0
        self._sup = Supervisor(
            loop,
            size,
            self._spawn,
            restart=restart,
            backoff_initial=backoff_initial,
            backoff_max=backoff_max,
            reset_after=reset_after,
            max_boot_failures=max_boot_failures,
            hang_timeout=hang_timeout,
            on_start=self._on_start,
            on_lost=self._on_lost,
            on_exit=self._on_exit,
            busy=self._busy,
            on_give_up=self._on_give_up,
            on_spawn_failed=self._on_spawn_failed,
        )
        self._sup.on_closed(self._on_closed)
        loop.adopt(self)
        try:
            self._sup.start()
        except BaseException:
            self.abort()
            raise

    @property
    def restart(self) -> bool:
        return self._sup.restart

    # -- workers ----------------------------------------------------------------

    def _spawn(self, slot: Slot) -> Worker:
        return spawn(
            self.loop,
            self.target,
            *self.args,
            on_frame=self._on_user_frame,
            on_error=self._on_worker_error,
            **self._spawn_kwargs,
        )

    def _on_start(self, slot: Slot, worker: Worker) -> None:
        client = _WorkerClient(slot, worker, self.codec, self._on_idle)
        slot.owner = client
        worker.on_writable = lambda w, c=client: self._on_writable(c)
        self._dispatcher.add(client, rank=slot.index)
        if self.on_worker_start is not None:
            try:
                self.on_worker_start(worker)
            except Exception as exc:
                self.loop.call_exception_handler(exc, self.on_worker_start)
        self._drain_queue()

    def _on_exit(self, slot: Slot, worker: Worker) -> None:
        if self.on_worker_exit is not None:
            try:
                self.on_worker_exit(worker)
            except Exception as exc:
                self.loop.call_exception_handler(exc, self.on_worker_exit)

    def _busy(self, slot: Slot) -> bool:
        client = slot.owner
        return client is not None and client.outstanding > 0

    def _on_user_frame(self, worker: Worker, chan: int, payload: Any) -> None:
        if self.on_frame is not None:
            self.on_frame(worker, chan, payload)

    def _on_worker_error(self, worker: Worker, exc: BaseException) -> None:
        if self.on_error is not None:
            self.on_error(worker, exc)
        elif not isinstance(exc, RemoteError):
            log.error("evloop: pool worker %d: %s", worker.pid, exc)
        elif self._sup.note_boot_error(worker, exc):
            log.error(
                "evloop: pool worker %d failed: %s\n%s", worker.pid, exc, exc.remote_traceback
            )
        else:
            log.error("evloop: pool worker %d failed: %s (the same error again)", worker.pid, exc)

    def _on_writable(self, client: _WorkerClient) -> None:
        if client.slot.owner is not client:
            return
        if (
            client.worker.writable
            and not client.retiring
            and client.slot.state
            in (
                SlotState.STARTING,
                SlotState.UP,
            )
        ):
            self._dispatcher.resume(client)
            self._drain_queue()
        else:
            self._dispatcher.suspend(client)

    def _on_lost(self, slot: Slot, worker: Worker, why: str) -> None:
        client: _WorkerClient = slot.owner
        self._dispatcher.remove(client)
        reqs = client.take_all()
        name = f"worker {slot.index} (pid {worker.pid})"
        again: list[Request] = []
        for req in reqs:
            if why == "boot" or (req.idempotent and req.attempts < MAX_ATTEMPTS):
                again.append(req)
                continue
            status = worker.returncode
            exc: WorkerCrashed
            if why == "hung":
                exc = WorkerHung(
                    f"{name} stopped answering while request {req.id} was outstanding",
                    worker=name,
                    status=None,
                )
            else:
                exc = WorkerCrashed(
                    f"{name} exited with status {status} while request {req.id} was outstanding",
                    worker=name,
                    status=status,
                )
                exc.__cause__ = worker.error
            req._fail(exc)
        if again:
            self.resent += len(again)
            self._queue.extendleft(reversed(again))
        self._drain_queue()
        self._fail_queue_if_hopeless()
        self._sup.check_drained()

    def _on_idle(self, client: Client) -> None:
        assert isinstance(client, _WorkerClient)
        if client.retiring and client.slot.owner is client:
            self._sup.recycle(client.slot)
        if self._sup.state is State.DRAINING:
            self._sup.check_drained()

    def _retire(self, client: _WorkerClient) -> None:
        client.retiring = True
        self._dispatcher.remove(client)
        if not client.outstanding:
            self._sup.recycle(client.slot)

    def _on_spawn_failed(self, slot: Slot, exc: BaseException) -> None:
        if not self._usable():
            # Retrying goes on, but what waits now might wait for ever.
            self._fail_queue(f"no worker could be started: {exc}", exc)

    def _on_give_up(self, exc: WorkerBootError) -> None:
        self._fail_all(f"the pool gave up: {exc}", exc)
        self._sup.stop()

    # -- submitting work ----------------------------------------------------------

    def _closed_error(self) -> PoolClosedError:
        failure = self._sup.failure
        if failure is not None:
            err = PoolClosedError(f"the pool gave up: {failure}")
            err.__cause__ = failure
            return err
        return PoolClosedError(
            "the pool is shut down"
            if self._sup.state is State.CLOSED
            else "the pool is shutting down"
        )

    def _payload(self, data: Any) -> bytes:
        codec = self.codec
        if codec is not None:
            data = codec.encode(data)
        elif type(data) is not bytes:
            if not isinstance(data, (bytearray, memoryview)):
                try:
                    data = memoryview(data)
                except TypeError:
                    raise TypeError(
                        f"a request payload must be bytes-like, not {type(data).__name__}"
                        " (or give the Pool a codec)"
                    ) from None
            data = bytes(data)  # ours now: the caller may reuse its buffer
        if len(data) > self._max_payload:
            raise ValueError(
                f"payload of {len(data)} bytes exceeds the pool's limit {self._max_payload}"
            )
        return data

    def request(
        self,
        data: Any,
        callback: Callable[[Request], Any] | None = None,
        timeout: float | None = _DEFAULT,
        *,
        idempotent: bool = False,
    ) -> Request:
        """Send `data` to one worker (by strategy) and return the Request for
        its reply. `callback(request)` is added as a done callback; `timeout`
        defaults to the pool's request_timeout (None: none). `idempotent`:
        the request may be sent again (once) to another worker if its worker
        is lost. Raises PoolClosedError once shutdown() was called."""
        if self._sup.state is not _RUNNING:
            raise self._closed_error()
        if type(data) is not bytes or self.codec is not None:
            data = self._payload(data)
        rid = self._next_id
        self._next_id = rid + 1
        req = Request(self.loop, rid, self)
        self.requests += 1
        if callback is not None:
            req._callbacks = [callback]  # type: ignore[list-item]  # it gets the Request
        if timeout is _DEFAULT:
            timeout = self.request_timeout
        if timeout is not None:
            if timeout < 0:
                raise ValueError(f"timeout must be >= 0 or None, got {timeout}")
            req._timer = self.loop.call_later(timeout, self._on_timeout, req, timeout)
        # Kept until it completes (a reference, not a copy): a worker that
        # dies before it is up never read it, and it is sent again.
        req._payload = data
        if idempotent:
            req.idempotent = True
        if not self._queue:
            client = self._pick()
            if client is not None:
                try:
                    client._submit(req, data)
                except ConnClosedError:
                    # Its worker is going away: nothing was written, so the
                    # request waits for another one.
                    self._dispatcher.remove(client)
                    self._queue.append(req)
                    self._drain_queue()
                    self._fail_queue_if_hopeless()
                    return req
                except BufferFullError as exc:
                    req._fail(exc)
                    return req
                except ValueError:
                    # Too large for the Pipe (its check costs no call here);
                    # nothing was written: undo the request.
                    self._undo(req)
                    self._payload(data)  # raises the pool's own ValueError
                    raise
                if client.sent >= self._max_req:
                    self._retire(client)
                return req
        if len(data) > self._max_payload:
            self._undo(req)
            self._payload(data)  # raises
        self._queue.append(req)
        self._fail_queue_if_hopeless()
        return req

    def _undo(self, req: Request) -> None:
        """Forget a request refused before it was sent anywhere."""
        self.requests -= 1
        self._next_id -= 1
        if req._timer is not None:
            req._timer.cancel()
            req._timer = None

    def send(self, data: Any) -> None:
        """Send a message (no reply) to one worker, by strategy. It waits in
        the queue if no worker can take it; it is dropped if the pool shuts
        down before one can."""
        if self._sup.state is not _RUNNING:
            raise self._closed_error()
        self._queue.append(self._payload(data))
        self._drain_queue()

    def broadcast(self, data: Any) -> int:
        """Send a message (no reply) to every worker that is up now and can
        take it. Returns how many got it; a worker whose Pipe refuses it
        (closing, or full: BufferFullError) is skipped."""
        if self._sup.state is not _RUNNING:
            raise self._closed_error()
        payload = self._payload(data)
        n = 0
        for client in self._dispatcher:
            try:
                client._write(0xFFFF, b"M", payload)
            except (BufferFullError, ConnClosedError) as exc:
                log.warning("evloop: pool broadcast skipped worker %d: %s", client.worker.pid, exc)
                continue
            n += 1
        return n

    def _drain_queue(self) -> None:
        queue = self._queue
        while queue:
            client = self._pick()
            if client is None:
                return
            item = queue.popleft()
            if type(item) is bytes:
                try:
                    client._write(0xFFFF, b"M", item)
                except (BufferFullError, ConnClosedError) as exc:
                    log.warning("evloop: pool message dropped: %s", exc)
                continue
            assert isinstance(item, Request)
            payload = item._payload
            assert payload is not None
            try:
                client._submit(item, payload)
            except ConnClosedError:
                self._dispatcher.remove(client)
                queue.appendleft(item)
                continue
            except BufferFullError as exc:
                item._fail(exc)
                continue
            if client.sent >= self._max_req:
                self._retire(client)

    def _on_timeout(self, req: Request, timeout: float) -> None:
        req._timer = None
        if req.done():
            return
        client = req._client
        if client is not None:
            client._discard(req)
        else:
            self._forget(req)
        self.timeouts += 1
        req._fail(RequestTimeout(f"request {req.id} got no reply within {timeout} s"))

    def _forget(self, req: Request) -> None:
        try:
            self._queue.remove(req)
        except ValueError:
            pass
        if self._sup.state is State.DRAINING:
            self._sup.check_drained()

    def _usable(self) -> bool:
        return any(
            s.worker is not None and s.state in (SlotState.STARTING, SlotState.UP)
            for s in self._sup.slots
        )

    def _fail_queue_if_hopeless(self) -> None:
        if not self._queue or self._usable():
            return
        state = self._sup.state
        if state is _RUNNING and self._sup.restart:
            return  # a replacement is coming
        why = "the pool is shutting down" if state is not _RUNNING else "restart=False"
        self._fail_queue(f"no worker left to take it ({why})")

    def _fail_queue(self, msg: str, cause: BaseException | None = None) -> None:
        queue, self._queue = self._queue, deque()
        for item in queue:
            if isinstance(item, Request):
                exc = PoolClosedError(f"request {item.id}: {msg}")
                exc.__cause__ = cause
                item._fail(exc)

    def _fail_all(self, msg: str, cause: BaseException | None = None) -> None:
        self._fail_queue(msg, cause)
        for slot in self._sup.slots:
            client = slot.owner
            if client is not None:

                def failure(req: Request) -> BaseException:
                    exc = PoolClosedError(f"request {req.id}: {msg}")
                    exc.__cause__ = cause
                    return exc

                client.fail_all(failure)

    # -- shutdown -------------------------------------------------------------------

    @property
    def closing(self) -> bool:
        """True once shutdown() was called (or the pool gave up, or the loop
        closed it)."""
        return self._sup.state is not _RUNNING

    @property
    def closed(self) -> bool:
        """True once every worker is gone after a shutdown."""
        return self._sup.state is State.CLOSED

    def workers(self) -> list[Worker]:
        """The workers currently running (in slot order)."""
        return self._sup.workers()

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
            if self.closed:
                self.loop.call_soon(callback, self)
            else:
                self._closed_callbacks.append(callback)
        if self._sup.state is not _RUNNING:
            return
        self._sup.shutdown(deadline, grace, self._drained, self._deadline_expired)
        self._fail_queue_if_hopeless()

    def _drained(self) -> bool:
        if self._queue:
            return False
        return not any(s.owner is not None and s.owner.outstanding for s in self._sup.slots)

    def _deadline_expired(self, deadline: float) -> None:
        self._fail_all(f"the pool shut down before it completed (deadline {deadline} s)")

    def _on_closed(self) -> None:
        self.loop.disown(self)
        callbacks, self._closed_callbacks = self._closed_callbacks, []
        for fn in callbacks:
            try:
                fn(self)
            except Exception as exc:
                self.loop.call_exception_handler(exc, fn)

    def abort(self) -> None:
        """Fail everything outstanding with PoolClosedError and kill the
        workers now. Loop.close() calls this."""
        self._fail_all("the pool was aborted")
        self._sup.abort()

    def __enter__(self) -> Pool:
        return self

    def __exit__(self, *exc_info: object) -> None:
        """Shut down (default deadline and grace); when the loop is not
        running, run it until the pool is closed (aborting it if that takes
        longer than the deadline and both graces)."""
        self.shutdown()
        if not self.loop.running and not self.loop.closed:
            if not self.loop.run_until(lambda: self.closed, timeout=10.0 + 4 * 2.0 + 1.0):
                self.abort()

    # -- introspection --------------------------------------------------------------

    def statistics(self) -> PoolStatistics:
        sup = self._sup
        live = [s for s in sup.slots if s.worker is not None]
        return PoolStatistics(
            size=self.size,
            alive=sum(
                1
                for s in live
                if s.state in (SlotState.STARTING, SlotState.UP)
                and s.worker is not None
                and s.worker.returncode is None
                and not s.worker.pipe.conn.closing
            ),
            in_flight=sum(s.owner.outstanding for s in live if s.owner is not None),
            queued=len(self._queue),
            requests=self.requests,
            completed=self.completed,
            failed=self.failed,
            timeouts=self.timeouts,
            crashes=sup.crashes,
            restarts=sup.restarts,
            spawn_failures=sup.spawn_failures,
            hung=sup.hung,
            recycled=sup.recycled,
            boot_failures=sup.boot_failures,
            resent=self.resent,
        )

    def __repr__(self) -> str:
        return f"<Pool {self._sup.state.value} size={self.size} target={self.target!r}>"
