# evloop/supervise.py
#
# Supervisor: keep N worker processes running in N slots, the way gunicorn's
# arbiter does, for an owner (the Pool; later a service graph) that decides
# what the workers are for. It knows processes, not requests: the owner
# answers `busy(slot)` and is told when a worker is started, up, or lost.
#
# Per slot (SlotState):
#   STARTING -> UP          a Python worker reported ready (its function
#                           returned); an executable is UP when started
#   STARTING|UP -> HUNG     nothing came from it for hang_timeout while it
#                           owed an answer; it is SIGKILLed
#   any -> BACKOFF          its worker exited; a replacement starts after
#                           the backoff (at once the first time, then
#                           backoff_initial doubling to backoff_max while
#                           each replacement dies within reset_after)
#   any -> DOWN             no worker and none coming: restart=False, the
#                           supervisor is draining or stopping, or it gave up
# A slot's worker can also be retired (recycle(): max_requests): the old one
# is closed (and stopped like at shutdown if it lingers) and a replacement
# starts in the same slot at once.
#
# The supervisor itself (State): RUNNING -> DRAINING (shutdown() called: no
# restarts; the owner finishes its work, with a deadline) -> STOPPING (close
# every Pipe; SIGTERM after `grace`, SIGKILL `grace` later) -> CLOSED (every
# worker reaped; shutdown callbacks run). A run of max_boot_failures workers
# that died before they were up (a typo in the target, an import error)
# makes it give up: the owner gets a WorkerBootError carrying the worker's
# own report, and it stops as at shutdown.
#
# Hang detection is a heartbeat with no per-request cost: every
# hang_timeout/4 a tick compares each worker's Pipe frame count with the
# previous tick's. A worker that sent nothing is "quiet"; a quiet worker that
# answers heartbeats (serve() does) is sent a ping (control kind P). It is
# hung when it stayed quiet for hang_timeout while it owed something (a
# request in flight, or the ping). So a worker whose loop keeps turning is
# never hung, however slow its requests; a SIGSTOPped, deadlocked or
# spinning one is found within hang_timeout plus one tick.
"""Supervisor: keep N worker processes running (backoff, boot failures, hangs, recycling, stop). See the comment header above for the invariants."""

from __future__ import annotations

import enum
import logging
from collections.abc import Callable
from typing import Any

from .control import CONTROL_CHANNEL, KIND_PING
from .errors import ConnClosedError, RemoteError, SpawnError, WorkerBootError
from .loop import Loop, TimerHandle
from .spawn import Worker

__all__ = ["Supervisor", "Slot", "SlotState", "State"]

log = logging.getLogger("evloop")

_PING = bytes((KIND_PING,))


class SlotState(enum.Enum):
    STARTING = "starting"
    UP = "up"
    HUNG = "hung"
    BACKOFF = "backoff"
    DOWN = "down"


class State(enum.Enum):
    RUNNING = "running"
    DRAINING = "draining"
    STOPPING = "stopping"
    CLOSED = "closed"


# Legal moves of the supervisor's state; _set_state() asserts them.
_MOVES = {
    State.RUNNING: {State.DRAINING, State.STOPPING},
    State.DRAINING: {State.STOPPING},
    State.STOPPING: {State.CLOSED},
    State.CLOSED: set(),
}


class Slot:
    """One place for a worker. `worker` is the current one (None between
    two); `owner` is free for the supervisor's owner (the Pool keeps the
    worker's rpc Client there)."""

    __slots__ = (
        "index", "worker", "state", "owner", "crash_streak", "restart_timer",
        "frames_seen", "quiet_since", "ping_out",
    )  # fmt: skip

    def __init__(self, index: int):
        self.index = index
        self.worker: Worker | None = None
        self.state = SlotState.DOWN
        self.owner: Any = None
        self.crash_streak = 0
        self.restart_timer: TimerHandle | None = None
        self.frames_seen = -1
        self.quiet_since = 0.0
        self.ping_out = False

    def __repr__(self) -> str:
        pid = self.worker.pid if self.worker is not None else None
        return f"<Slot {self.index} {self.state.value} pid={pid}>"


def _nothing(*_: Any) -> None:
    return None


class Supervisor:
    """Keeps `size` workers made by start(slot) running; see the header.

    Callbacks from the owner: on_start(slot, worker) right after a worker
    is spawned; on_up(slot, worker) when it is up; on_lost(slot, worker,
    why) when it leaves service for good, why being "exit", "boot" (it
    exited before it was up) or "hung" (called before the kill);
    busy(slot) -> whether its worker owes answers; on_give_up(exc) when it
    gave up on boot failures; on_exit(slot, worker) at every exit of a
    worker it started (retired ones included); on_spawn_failed(slot, exc)
    when a replacement could not even be spawned (it is retried). `name` labels log lines.
    """

    def __init__(
        self,
        loop: Loop,
        size: int,
        start: Callable[[Slot], Worker],
        *,
        restart: bool = True,
        backoff_initial: float = 0.05,
        backoff_max: float = 5.0,
        reset_after: float = 10.0,
        max_boot_failures: int | None = 5,
        hang_timeout: float | None = None,
        on_start: Callable[[Slot, Worker], Any] = _nothing,
        on_up: Callable[[Slot, Worker], Any] = _nothing,
        on_lost: Callable[[Slot, Worker, str], Any] = _nothing,
        busy: Callable[[Slot], bool] = lambda slot: False,
        on_give_up: Callable[[WorkerBootError], Any] = _nothing,
        on_exit: Callable[[Slot, Worker], Any] = _nothing,
        on_spawn_failed: Callable[[Slot, BaseException], Any] = _nothing,
        name: str = "pool",
    ):
        if size < 1:
            raise ValueError(f"size must be >= 1, got {size}")
        if not 0 < backoff_initial <= backoff_max:
            raise ValueError(
                f"need 0 < backoff_initial ({backoff_initial}) <= backoff_max ({backoff_max})"
            )
        if max_boot_failures is not None and max_boot_failures < 1:
            raise ValueError(f"max_boot_failures must be >= 1 or None, got {max_boot_failures}")
        if hang_timeout is not None and not hang_timeout > 0:
            raise ValueError(f"hang_timeout must be > 0 or None, got {hang_timeout}")
        self.loop = loop
        self.size = size
        self._start_fn = start
        self.restart = restart
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.reset_after = reset_after
        self.max_boot_failures = max_boot_failures
        self.hang_timeout = hang_timeout
        self.on_start = on_start
        self.on_up = on_up
        self.on_lost = on_lost
        self.busy = busy
        self.on_give_up = on_give_up
        self.on_exit = on_exit
        self.on_spawn_failed = on_spawn_failed
        self.name = name
        self.slots = [Slot(i) for i in range(size)]
        self.state = State.RUNNING
        self.failure: WorkerBootError | None = None
        self._retiring: dict[Worker, TimerHandle] = {}
        self._boot_failures = 0  # consecutive, over all slots
        self._last_boot_error: str | None = None
        self._grace = 2.0
        self._deadline_timer: TimerHandle | None = None
        self._term_timer: TimerHandle | None = None
        self._hang_timer: TimerHandle | None = None
        self._drained: Callable[[], bool] = lambda: True
        self._on_deadline: Callable[[float], Any] = _nothing
        self._closed_callbacks: list[Callable[[], Any]] = []
        self.crashes = self.restarts = self.spawn_failures = 0
        self.hung = self.recycled = self.boot_failures = 0

    # -- state -------------------------------------------------------------------

    def _set_state(self, new: State) -> None:
        assert new in _MOVES[self.state], f"{self.state} -> {new}"
        self.state = new

    def workers(self) -> list[Worker]:
        """The slots' current workers, in slot order."""
        return [s.worker for s in self.slots if s.worker is not None]

    # -- starting ---------------------------------------------------------------------

    def start(self) -> None:
        """Start every slot's first worker. A SpawnError (or a TargetError)
        propagates: nothing could be started, and the caller aborts."""
        for slot in self.slots:
            self._spawn(slot)
        self._arm_hang_watch()

    def _spawn(self, slot: Slot) -> None:
        worker = self._start_fn(slot)
        slot.worker = worker
        slot.state = SlotState.STARTING
        slot.frames_seen = -1
        slot.ping_out = False
        worker.on_exit = lambda w, slot=slot: self._on_exit(slot, w)
        worker.on_ready = lambda w, slot=slot: self._on_ready(slot, w)
        self.on_start(slot, worker)
        if worker.ready:
            self._on_ready(slot, worker)

    def _on_ready(self, slot: Slot, worker: Worker) -> None:
        if slot.worker is not worker or slot.state is not SlotState.STARTING:
            return
        slot.state = SlotState.UP
        self._boot_failures = 0
        self._last_boot_error = None
        self.on_up(slot, worker)

    # -- exits and restarts ----------------------------------------------------------

    def _on_exit(self, slot: Slot, worker: Worker) -> None:
        self.on_exit(slot, worker)
        if worker in self._retiring:
            self._retiring.pop(worker).cancel()
            self._check_closed()
            return
        if slot.worker is not worker:
            return
        slot.worker = None
        why = "hung" if slot.state is SlotState.HUNG else ("exit" if worker.ready else "boot")
        if why != "hung":
            self.on_lost(slot, worker, why)
        if self.state is State.STOPPING or self.state is State.CLOSED:
            slot.state = SlotState.DOWN
            self._check_closed()
            return
        self.crashes += 1
        label = f"{self.name} worker {slot.index} (pid {worker.pid})"
        if why == "boot":
            self.boot_failures += 1
            self._boot_failures += 1
            limit = self.max_boot_failures
            if limit is not None and self._boot_failures >= limit:
                self._give_up(label, worker)
                return
        if not self.restart or self.state is not State.RUNNING:
            log.warning("evloop: %s exited with status %s", label, worker.returncode)
            slot.state = SlotState.DOWN
            return
        ended = worker.exited_at if worker.exited_at is not None else self.loop.time()
        if why == "exit" and ended - worker.started >= self.reset_after:
            slot.crash_streak = 0
        delay = self._schedule_restart(slot)
        log.warning(
            "evloop: %s %s with status %s; restarting it in %.3g s",
            label, "failed to boot" if why == "boot" else "exited", worker.returncode, delay,
        )  # fmt: skip

    def _schedule_restart(self, slot: Slot) -> float:
        streak = slot.crash_streak
        delay = (
            0.0 if streak == 0 else min(self.backoff_initial * 2 ** (streak - 1), self.backoff_max)
        )
        slot.crash_streak = streak + 1
        slot.state = SlotState.BACKOFF
        slot.restart_timer = self.loop.call_later(delay, self._restart, slot)
        return delay

    def _restart(self, slot: Slot) -> None:
        slot.restart_timer = None
        if self.state is not State.RUNNING or slot.worker is not None:
            return
        try:
            self._spawn(slot)
        except (SpawnError, OSError) as exc:
            self.spawn_failures += 1
            self.boot_failures += 1
            self._boot_failures += 1
            limit = self.max_boot_failures
            if limit is not None and self._boot_failures >= limit:
                self._give_up(f"{self.name} worker {slot.index}", None, exc)
                return
            delay = self._schedule_restart(slot)
            log.error(
                "evloop: %s could not restart worker %d: %s; retrying in %.3g s",
                self.name, slot.index, exc, delay,
            )  # fmt: skip
            self.on_spawn_failed(slot, exc)
            return
        self.restarts += 1
        assert slot.worker is not None
        log.info("evloop: %s restarted worker %d: pid %d", self.name, slot.index, slot.worker.pid)

    def note_boot_error(self, worker: Worker, exc: BaseException) -> bool:
        """Called by the owner with a worker's error report: True if it is
        worth logging in full (the first of a run of identical boot errors),
        False for a repeat (logged in one line by the caller)."""
        if worker.ready:
            return True
        text = f"{type(exc).__name__}: {exc}"
        if text == self._last_boot_error:
            return False
        self._last_boot_error = text
        return True

    def _give_up(
        self, label: str, worker: Worker | None, cause: BaseException | None = None
    ) -> None:
        error = cause if cause is not None else (worker.error if worker is not None else None)
        n = self._boot_failures
        msg = f"{label} failed before it was up {n} times in a row; not restarting"
        if isinstance(error, RemoteError):
            msg += f": {error}"
            log.error("evloop: %s\n%s", msg, error.remote_traceback)
        else:
            if error is not None:
                msg += f": {error}"
            log.error("evloop: %s", msg)
        exc = WorkerBootError(msg, error=error)
        exc.__cause__ = error
        self.failure = exc
        for slot in self.slots:
            if slot.worker is None:
                slot.state = SlotState.DOWN
        self.on_give_up(exc)

    # -- recycling ---------------------------------------------------------------------

    def recycle(self, slot: Slot) -> None:
        """Retire the slot's worker (close its Pipe; stop it like at shutdown
        if it lingers) and start its replacement now."""
        worker = slot.worker
        if worker is None or self.state is not State.RUNNING:
            return
        self.recycled += 1
        slot.worker = None
        worker.close()
        # Stopped like at shutdown if it lingers (a no-op once it is reaped).
        self._retiring[worker] = self.loop.call_later(self._grace, worker.terminate, self._grace)
        log.info("evloop: %s recycling worker %d (pid %d)", self.name, slot.index, worker.pid)
        try:
            self._spawn(slot)
        except (SpawnError, OSError) as exc:
            self.spawn_failures += 1
            log.error("evloop: %s could not replace worker %d: %s", self.name, slot.index, exc)
            self._schedule_restart(slot)

    # -- hangs ---------------------------------------------------------------------------

    def _arm_hang_watch(self) -> None:
        if self.hang_timeout is not None and self._hang_timer is None:
            self._hang_timer = self.loop.call_later(self.hang_timeout / 4, self._hang_tick)

    def _hang_tick(self) -> None:
        self._hang_timer = None
        if self.state is State.STOPPING or self.state is State.CLOSED:
            return
        timeout = self.hang_timeout
        assert timeout is not None
        now = self.loop.time()
        for slot in self.slots:
            worker = slot.worker
            if worker is None or slot.state is not SlotState.UP:
                continue
            frames = worker.pipe.statistics().frames_in
            if frames != slot.frames_seen:  # heard from it since the last tick
                slot.frames_seen = frames
                slot.quiet_since = now
                slot.ping_out = False
                continue
            if not (slot.ping_out or self.busy(slot)):
                # Quiet and owing nothing: fine, but ask, so that a stopped
                # idle worker is found too (before work is sent to it).
                slot.quiet_since = now
                if worker.answers_pings:
                    self._ping(slot, worker)
                continue
            if now - slot.quiet_since >= timeout:
                self._hung(slot, worker, now - slot.quiet_since)
            elif worker.answers_pings and not slot.ping_out:
                self._ping(slot, worker)
        self._arm_hang_watch()

    def _ping(self, slot: Slot, worker: Worker) -> None:
        try:
            worker.pipe.write_frame(CONTROL_CHANNEL, _PING)
        except (ConnClosedError, ValueError):
            return
        except Exception:  # BufferFullError: it is not reading anyway
            pass
        slot.ping_out = True

    def _hung(self, slot: Slot, worker: Worker, quiet: float) -> None:
        self.hung += 1
        slot.state = SlotState.HUNG
        log.error(
            "evloop: %s worker %d (pid %d) hung: nothing from it for %.3g s while it owed"
            " an answer (hang_timeout %g s); killing it",
            self.name, slot.index, worker.pid, quiet, self.hang_timeout,
        )  # fmt: skip
        self.on_lost(slot, worker, "hung")
        worker.kill()  # SIGKILL: a SIGSTOPped process cannot act on anything else

    # -- shutdown --------------------------------------------------------------------------

    def shutdown(
        self,
        deadline: float,
        grace: float,
        drained: Callable[[], bool],
        on_deadline: Callable[[float], Any],
        callback: Callable[[], Any] | None = None,
    ) -> None:
        """Stop restarting; when drained() is true (the owner calls
        check_drained() when it may have become so) or `deadline` seconds
        have passed (on_deadline(deadline) first), stop the workers: close,
        then SIGTERM after `grace`, SIGKILL `grace` later. callback() runs
        once every worker is reaped."""
        if callback is not None:
            if self.state is State.CLOSED:
                self.loop.call_soon(callback)
            else:
                self._closed_callbacks.append(callback)
        if self.state is not State.RUNNING:
            return
        self._set_state(State.DRAINING)
        self._grace = grace
        self._drained = drained
        self._on_deadline = on_deadline
        self._cancel_restarts()
        self._deadline_timer = self.loop.call_later(deadline, self._deadline_expired, deadline)
        self.check_drained()

    def on_closed(self, callback: Callable[[], Any]) -> None:
        if self.state is State.CLOSED:
            self.loop.call_soon(callback)
        else:
            self._closed_callbacks.append(callback)

    def check_drained(self) -> None:
        if self.state is State.DRAINING and self._drained():
            self.stop()

    def _deadline_expired(self, deadline: float) -> None:
        self._deadline_timer = None
        if self.state is not State.DRAINING:
            return
        self._on_deadline(deadline)
        self.stop()

    def _cancel_restarts(self) -> None:
        for slot in self.slots:
            if slot.restart_timer is not None:
                slot.restart_timer.cancel()
                slot.restart_timer = None
            if slot.worker is None:
                slot.state = SlotState.DOWN

    def stop(self, grace: float | None = None) -> None:
        """Stop every worker now (close, SIGTERM after grace, SIGKILL after
        grace more); no more restarts."""
        if self.state is State.STOPPING or self.state is State.CLOSED:
            return
        if grace is not None:
            self._grace = grace
        self._set_state(State.STOPPING)
        self._cancel_restarts()
        for t in (self._deadline_timer, self._hang_timer):
            if t is not None:
                t.cancel()
        self._deadline_timer = self._hang_timer = None
        for worker in self.workers():
            worker.close()
        grace = self._grace
        self._term_timer = self.loop.call_later(grace, self._terminate_all, grace)
        self._check_closed()

    def _terminate_all(self, grace: float) -> None:
        self._term_timer = None
        for worker in [*self.workers(), *self._retiring]:
            worker.terminate(grace)

    def _check_closed(self) -> None:
        if self.state is not State.STOPPING:
            return
        if self._retiring or any(s.worker is not None for s in self.slots):
            return
        self._set_state(State.CLOSED)
        if self._term_timer is not None:
            self._term_timer.cancel()
            self._term_timer = None
        callbacks, self._closed_callbacks = self._closed_callbacks, []
        for fn in callbacks:
            try:
                fn()
            except Exception as exc:
                self.loop.call_exception_handler(exc, fn)

    def abort(self) -> None:
        """Kill every worker now and reap it (Loop.close() path)."""
        if self.state is State.RUNNING or self.state is State.DRAINING:
            self._set_state(State.STOPPING)
        self._cancel_restarts()
        for t in (self._deadline_timer, self._term_timer, self._hang_timer):
            if t is not None:
                t.cancel()
        self._deadline_timer = self._term_timer = self._hang_timer = None
        for worker in [*self.workers(), *self._retiring]:
            worker.abort()
        for t in self._retiring.values():
            t.cancel()
        self._retiring.clear()
        self._check_closed()
