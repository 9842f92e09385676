# tests/test_pool.py
#
# Pool on real worker processes: dispatch strategies, request/response,
# remote errors, timeouts, cancellation, crashes (SIGKILL in the middle of a
# frame) with replacement and backoff, graceful shutdown, and teardown by
# Loop.close(). Worker functions live in tests/workers.py.
from __future__ import annotations

import dataclasses
import os
import signal
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from evloop import (
    Loop,
    PoolClosedError,
    RemoteError,
    RequestTimeout,
    SpawnError,
    TruncatedFrameError,
    WorkerBootError,
    WorkerCrashed,
)
from evloop.errors import InvalidStateError, RequestCancelled
from evloop.pool import Pool, Request
from evloop.spawn import Worker
from evloop.testing import VirtualClock
from tests.spawn_helpers import fd_count, wait_until, zombie_children

WORKER = "tests.workers:pool_worker"


@pytest.fixture(autouse=True)
def no_zombies() -> Iterator[None]:
    yield
    assert zombie_children() == []


def wait_all(loop: Loop, reqs: list[Request], timeout: float = 10.0) -> None:
    assert loop.run_until(lambda: all(r.done() for r in reqs), timeout=timeout)


def shut(loop: Loop, pool: Pool, deadline: float = 5.0) -> None:
    done: list[Pool] = []
    pool.shutdown(deadline, done.append)
    assert loop.run_until(lambda: bool(done), timeout=deadline + 10)
    assert done == [pool] and pool.closed


def pids(pool: Pool) -> list[int]:
    return [w.pid for w in pool.workers()]


# -- dispatch and replies ---------------------------------------------------------


def test_round_robin_request_reply(loop: Loop) -> None:
    pool = Pool(loop, WORKER, 3)
    seen: list[Request] = []
    reqs = [pool.request(b"pid", callback=seen.append) for _ in range(9)]
    wait_all(loop, reqs)
    assert sorted(map(id, seen)) == sorted(map(id, reqs))  # each callback once
    got = [int(r.result()) for r in reqs]
    assert got == pids(pool) * 3
    assert all(r.exception() is None for r in reqs)
    echo = pool.request(b"echo \x00\xff binary \x00")
    wait_all(loop, [echo])
    assert echo.result() == b"\x00\xff binary \x00"
    stats = pool.statistics()
    assert (stats.requests, stats.completed, stats.failed, stats.in_flight) == (10, 10, 0, 0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        stats.alive = 0  # type: ignore[misc]
    shut(loop, pool)


def test_least_outstanding(loop: Loop) -> None:
    pool = Pool(loop, WORKER, 3, strategy="least_outstanding")
    _p0, _p1, p2 = pids(pool)
    holds = [pool.request(b"hold"), pool.request(b"hold")]  # one each on p0, p1
    for _ in range(3):
        r = pool.request(b"pid")
        wait_all(loop, [r])
        assert int(r.result()) == p2  # the only worker with nothing in flight
    assert pool.statistics().in_flight == 2
    for h in holds:
        assert h.cancel()
    shut(loop, pool)


def test_plain_handler_and_sizes(loop: Loop) -> None:
    pool = Pool(loop, "tests.workers:pool_sync", 2, "T")
    big = bytes(range(256)) * 4096  # 1 MiB
    reqs = [pool.request(b""), pool.request(b"x"), pool.request(big)]
    wait_all(loop, reqs)
    assert [r.result() for r in reqs] == [b"T:", b"T:x", b"T:" + big]
    with pytest.raises(ValueError, match="exceeds"):
        pool.request(bytes(64 << 20))
    shut(loop, pool)


def test_send_and_broadcast(loop: Loop) -> None:
    notes: list[tuple[int, bytes]] = []
    pool = Pool(loop, WORKER, 3, on_frame=lambda w, chan, p: notes.append((w.pid, bytes(p))))
    assert pool.broadcast(b"note all") == 3
    assert loop.run_until(lambda: len(notes) == 3, timeout=10)
    assert sorted(notes) == sorted((pid, b"all") for pid in pids(pool))
    pool.send(b"note one")
    assert loop.run_until(lambda: len(notes) == 4, timeout=10)
    assert notes[3][1] == b"one"
    shut(loop, pool)
    with pytest.raises(PoolClosedError):
        pool.send(b"note late")
    with pytest.raises(PoolClosedError):
        pool.broadcast(b"note late")


# -- errors, timeouts, cancellation ---------------------------------------------------


def test_remote_error_fails_only_that_request(loop: Loop) -> None:
    pool = Pool(loop, WORKER, 1)
    pid = pids(pool)[0]
    bad = pool.request(b"raise no good")
    unknown = pool.request(b"frobnicate")
    wait_all(loop, [bad, unknown])
    err = bad.exception()
    assert isinstance(err, RemoteError)
    assert (err.remote_type, err.remote_message) == ("ValueError", "no good")
    assert "pool_worker" in err.remote_traceback or "handler" in err.remote_traceback
    with pytest.raises(RemoteError):
        bad.result()
    assert isinstance(unknown.exception(), RemoteError)
    assert unknown.exception().remote_type == "KeyError"  # type: ignore[union-attr]
    ok = pool.request(b"pid")
    wait_all(loop, [ok])
    assert int(ok.result()) == pid  # the same worker lives on
    assert pool.statistics().crashes == 0
    shut(loop, pool)


def test_timeouts_and_late_replies(loop: Loop) -> None:
    pool = Pool(loop, WORKER, 1, request_timeout=0.2)
    held = pool.request(b"hold")  # the pool's default timeout
    late = pool.request(b"later 0.3", timeout=0.1)
    no_timeout = pool.request(b"later 0.4", timeout=None)
    wait_all(loop, [held, late])
    for r in (held, late):
        assert isinstance(r.exception(), RequestTimeout)
    wait_all(loop, [no_timeout])
    assert no_timeout.result() == b"late"  # the reply to `late` came and was dropped
    stats = pool.statistics()
    assert (stats.timeouts, stats.in_flight, stats.completed) == (2, 0, 1)
    shut(loop, pool)


def test_cancel_and_pending_state(loop: Loop) -> None:
    pool = Pool(loop, WORKER, 1)
    calls: list[Request] = []
    r = pool.request(b"hold", callback=calls.append)
    assert not r.done()
    with pytest.raises(InvalidStateError):
        r.result()
    with pytest.raises(InvalidStateError):
        r.exception()
    assert r.cancel() and r.cancelled() and r.done()
    assert not r.cancel()
    assert calls == [r]
    with pytest.raises(RequestCancelled):
        r.result()
    late: list[Request] = []
    r.add_done_callback(late.append)  # already done: called at once
    assert late == [r]
    assert pool.statistics().in_flight == 0
    shut(loop, pool)


# -- crashes and supervision ----------------------------------------------------------


def test_sigkill_mid_frame_fails_outstanding_and_replaces(loop: Loop) -> None:
    errors: list[tuple[int, BaseException]] = []
    pool = Pool(loop, WORKER, 2, on_error=lambda w, e: errors.append((w.pid, e)))
    p0, p1 = pids(pool)
    holds = [pool.request(b"hold") for _ in range(4)]  # p0, p1, p0, p1
    die = pool.request(b"die-mid-frame")  # p0: half a frame, then SIGKILL
    wait_all(loop, [die, holds[0], holds[2]])
    for r in (die, holds[0], holds[2]):
        exc = r.exception()
        assert isinstance(exc, WorkerCrashed)
        assert exc.status == -signal.SIGKILL
        assert str(p0) in exc.worker and str(p0) in str(exc)
    assert not holds[1].done() and not holds[3].done()  # p1 is untouched
    assert [type(e) for pid, e in errors] == [TruncatedFrameError]
    assert errors[0][0] == p0
    assert loop.run_until(lambda: pool.statistics().alive == 2, timeout=10)
    new = [p for p in pids(pool) if p != p1]
    assert len(new) == 1 and new[0] != p0
    reqs = [pool.request(b"pid") for _ in range(4)]
    wait_all(loop, reqs)
    assert sorted(int(r.result()) for r in reqs) == sorted([new[0], p1] * 2)
    stats = pool.statistics()
    assert (stats.crashes, stats.restarts) == (1, 1)
    for h in holds[1::2]:
        h.cancel()
    shut(loop, pool)


def test_external_sigkill_with_requests_outstanding(loop: Loop) -> None:
    pool = Pool(loop, WORKER, 1)
    (pid,) = pids(pool)
    holds = [pool.request(b"hold") for _ in range(5)]
    ok = pool.request(b"pid")
    wait_all(loop, [ok])
    os.kill(pid, signal.SIGKILL)
    wait_all(loop, holds)
    assert all(isinstance(h.exception(), WorkerCrashed) for h in holds)
    assert all(h.exception().status == -signal.SIGKILL for h in holds)  # type: ignore[union-attr]
    # No worker is up until the replacement starts: this one waits for it.
    queued = pool.request(b"pid")
    wait_all(loop, [queued])
    assert int(queued.result()) != pid
    shut(loop, pool)


def test_backoff_grows_while_crashing(vloop_slow: Loop) -> None:
    loop = vloop_slow
    crashed: list[Worker] = []
    pool = Pool(
        loop,
        "tests.workers:crash_at_start",
        1,
        backoff_initial=0.1,
        backoff_max=0.2,
        max_boot_failures=5,
        on_error=lambda w, e: crashed.append(w),
    )
    # Every worker dies before it is up, so the request is never lost with
    # one of them: it waits for a worker until the pool gives up.
    r = pool.request(b"pid")
    assert wait_until(loop, r.done, timeout=30)
    exc = r.exception()
    assert isinstance(exc, PoolClosedError)
    boot = exc.__cause__
    assert isinstance(boot, WorkerBootError) and "5 times" in str(boot)
    assert isinstance(boot.error, RemoteError) and boot.error.remote_type == "RuntimeError"
    assert "this worker never starts" in boot.error.remote_traceback
    stats = pool.statistics()
    assert (stats.crashes, stats.boot_failures, stats.restarts) == (5, 5, 4)
    # From one worker's exit to the next one's start, in the loop's virtual
    # time (exact, whatever the machine's load): 0, 0.1, 0.2, 0.2 (capped).
    gaps = [crashed[i + 1].started - crashed[i].exited_at for i in range(4)]  # type: ignore[operator]
    assert gaps == pytest.approx([0.0, 0.1, 0.2, 0.2], abs=1e-9), gaps
    assert pool.closing
    with pytest.raises(PoolClosedError) as info:
        pool.request(b"pid")
    assert info.value.__cause__ is boot
    assert wait_until(loop, lambda: pool.closed)


def test_backoff_resets_after_staying_up(vloop_slow: Loop) -> None:
    loop = vloop_slow
    # reset_after is far above the virtual seconds the clock may jump (to a
    # Worker's linger timers) while a real worker boots.
    pool = Pool(loop, WORKER, 1, backoff_initial=0.5, backoff_max=1.0, reset_after=30.0)
    gaps: list[float] = []

    def crash_and_measure() -> None:
        (w,) = pool.workers()
        assert wait_until(loop, lambda: w.ready)  # a crash, not a boot failure
        pool.request(b"exit 1")
        assert wait_until(loop, lambda: pool.workers() and pool.workers()[0] is not w)
        assert w.exited_at is not None
        gaps.append(pool.workers()[0].started - w.exited_at)

    crash_and_measure()  # the first crash: restarted at once
    crash_and_measure()  # again within reset_after: backoff_initial
    w = pool.workers()[0]
    up: list[bool] = []
    loop.call_at(w.started + 31.0, up.append, True)
    assert wait_until(loop, lambda: bool(up))
    crash_and_measure()  # it stayed up: at once again
    assert gaps == pytest.approx([0.0, 0.5, 0.0], abs=1e-9), gaps
    done: list[Pool] = []
    pool.shutdown(5, done.append)
    assert wait_until(loop, lambda: bool(done))


def test_no_restart(loop: Loop) -> None:
    pool = Pool(loop, WORKER, 1, restart=False)
    held = pool.request(b"hold")
    pool.request(b"exit 3")
    wait_all(loop, [held])
    exc = held.exception()
    assert isinstance(exc, WorkerCrashed) and exc.status == 3
    assert loop.run_until(lambda: pool.statistics().alive == 0, timeout=5)
    after = pool.request(b"pid")
    assert after.done() and isinstance(after.exception(), PoolClosedError)
    shut(loop, pool)


def test_replacement_that_cannot_start(loop: Loop, tmp_path: Any) -> None:
    script = tmp_path / "echo-worker"
    script.write_text("#!/bin/sh\nexec cat <&3 >&3\n")
    script.chmod(0o755)
    pool = Pool(loop, [str(script)], 1, backoff_initial=0.05, backoff_max=0.1)
    script.unlink()
    pool.workers()[0].kill()
    assert loop.run_until(lambda: pool.statistics().spawn_failures >= 1, timeout=10)
    r = pool.request(b"anyone?")  # queued: no worker, and none can be started
    wait_all(loop, [r])
    exc = r.exception()
    assert isinstance(exc, PoolClosedError) and isinstance(exc.__cause__, SpawnError)
    shut(loop, pool)


def test_spawn_failure_at_start(loop: Loop) -> None:
    before = fd_count()
    with pytest.raises(SpawnError):
        Pool(loop, ["/nonexistent/evloop-worker"], 2)
    assert fd_count() == before


def test_bad_arguments(loop: Loop) -> None:
    with pytest.raises(ValueError):
        Pool(loop, WORKER, 0)
    with pytest.raises(ValueError):
        Pool(loop, WORKER, 1, strategy="random")
    with pytest.raises(ValueError):
        Pool(loop, WORKER, 1, backoff_initial=2.0, backoff_max=1.0)
    with pytest.raises(ValueError, match="package.module:function"):
        Pool(loop, "not a target", 1)


# -- shutdown ---------------------------------------------------------------------------


def test_graceful_shutdown_lets_requests_finish(loop: Loop) -> None:
    pool = Pool(loop, WORKER, 2)
    workers: list[Worker] = pool.workers()
    reqs = [pool.request(b"later 0.2") for _ in range(4)]
    done: list[Pool] = []
    pool.shutdown(deadline=10, callback=done.append)
    with pytest.raises(PoolClosedError):
        pool.request(b"pid")
    assert loop.run_until(lambda: bool(done), timeout=15)
    assert [r.result() for r in reqs] == [b"late"] * 4
    assert [w.returncode for w in workers] == [0, 0]  # EOF, not a signal
    stats = pool.statistics()
    assert (stats.alive, stats.in_flight, stats.crashes) == (0, 0, 0)
    pool.shutdown(callback=done.append)  # already closed: called soon
    assert loop.run_until(lambda: len(done) == 2, timeout=5)


def test_shutdown_deadline_fails_the_rest() -> None:
    # The deadline is virtual and moved by hand, only once the quick request
    # is known to be answered: no timing assumption about how fast a fresh
    # worker answers on a busy machine (this test failed under load before).
    before = fd_count()
    clock = VirtualClock(autojump_threshold=60.0)
    lp = Loop(clock=clock)
    try:
        pool = Pool(lp, WORKER, 2)
        held = [pool.request(b"hold") for _ in range(3)]
        quick = pool.request(b"pid")
        t0 = lp.time()
        done: list[Pool] = []
        pool.shutdown(deadline=30.0, callback=done.append)
        assert lp.run_until(quick.done, timeout=50)
        assert int(quick.result()) in pids(pool)
        assert not any(r.done() for r in held) and not done
        clock.advance(30.0)
        assert lp.run_until(lambda: bool(done), timeout=50)
        assert lp.time() - t0 >= 30.0
        for r in held:
            assert isinstance(r.exception(), PoolClosedError)
            assert "deadline 30.0 s" in str(r.exception())
    finally:
        lp.close()
    assert fd_count() == before


def test_shutdown_escalates_for_a_stubborn_worker(loop: Loop) -> None:
    # sleep ignores EOF, and the SIGTERM it inherited as ignored.
    pool = Pool(loop, ["sh", "-c", "trap '' TERM; exec sleep 60"], 1)
    (w,) = pool.workers()
    done: list[Pool] = []
    pool.shutdown(deadline=1, callback=done.append, grace=0.2)
    assert loop.run_until(lambda: bool(done), timeout=10)
    assert w.returncode == -signal.SIGKILL


def test_loop_close_fails_everything() -> None:
    before = fd_count()
    lp = Loop()
    pool = Pool(lp, WORKER, 2)
    outcomes: list[Any] = []
    reqs = [
        pool.request(b"hold", callback=lambda r: outcomes.append(r.exception())) for _ in range(4)
    ]
    assert lp.run_until(lambda: pool.statistics().in_flight == 4, timeout=5)
    workers = pool.workers()
    lp.close()
    assert all(r.done() for r in reqs) and len(outcomes) == 4
    assert all(isinstance(e, (WorkerCrashed, PoolClosedError)) for e in outcomes)
    assert [w.returncode for w in workers] == [-signal.SIGKILL] * 2
    assert fd_count() == before


_ANSWER_THEN_EXIT = r"""
import os, socket, struct
s = socket.socket(fileno=3)
chan, n = struct.unpack(">HI", s.recv(6, socket.MSG_WAITALL))
body = s.recv(n, socket.MSG_WAITALL)
# Wait (without reading it) until the second request is here: it must be
# in this socket, unread, when the worker exits.
while len(s.recv(6, socket.MSG_PEEK | socket.MSG_WAITALL)) < 6:
    pass
notes = b"".join(struct.pack(">HI", 2, 50) + b"n" * 50 for _ in range(20000))
reply = b"R" + body[1:9] + b"answer"
s.sendall(notes + struct.pack(">HI", 0xFFFF, len(reply)) + reply)
os._exit(0)
"""


def test_a_reply_sent_before_the_worker_exits_is_not_lost(loop: Loop) -> None:
    notes: list[int] = []
    pool = Pool(
        loop, [sys.executable, "-c", _ANSWER_THEN_EXIT], 1, restart=False,
        on_frame=lambda w, c, p: notes.append(1),
    )  # fmt: skip
    r1, r2 = pool.request(b"one"), pool.request(b"two")
    wait_all(loop, [r1, r2])
    assert len(notes) == 20000
    assert r1.result() == b"answer"
    assert isinstance(r2.exception(), WorkerCrashed)
    pool.abort()


_ANSWER_3000_THEN_DIE = r"""
import os, socket, struct
s = socket.socket(fileno=3)
buf = b""
replies = []
while len(replies) < 3000:
    data = s.recv(1 << 20)
    if not data:
        break
    buf += data
    while len(buf) >= 6:
        chan, n = struct.unpack_from(">HI", buf)
        if len(buf) < 6 + n:
            break
        body, buf = buf[6 : 6 + n], buf[6 + n :]
        if body[:1] == b"Q":
            r = b"R" + body[1:9] + b"ok" + body[9:13]
            replies.append(struct.pack(">HI", 0xFFFF, len(r)) + r)
s.sendall(b"".join(replies))
os._exit(0)  # dies without reading what else the parent sends
"""


def test_requests_answered_before_the_worker_died_complete(loop: Loop) -> None:
    # Defect 2: the worker answered 3,000 requests and died while the parent
    # was still writing to it. Every answered request completes with its
    # reply (none is a WorkerCrashed); only those sent after are failed.
    pool = Pool(loop, [sys.executable, "-c", _ANSWER_3000_THEN_DIE], 1, restart=False)
    reqs = [pool.request(i.to_bytes(4, "big") + bytes(60)) for i in range(3000)]
    later: list[Request] = []

    def keep_writing() -> None:
        if pool.statistics().alive and not pool.closing:
            later.append(pool.request(bytes(8192)))
            loop.call_soon(keep_writing)

    keep_writing()
    wait_all(loop, reqs, timeout=30)
    assert loop.run_until(lambda: pool.statistics().alive == 0, timeout=10)
    wait_all(loop, later)  # keep_writing has stopped: the list is complete
    failed = [r for r in reqs if r.exception() is not None]
    assert not failed, f"{len(failed)} answered requests failed: {failed[0].exception()!r}"
    assert [r.result() for r in reqs] == [b"ok" + i.to_bytes(4, "big") for i in range(3000)]
    # Sent while the worker was still reading (answered) or after (failed).
    for r in later:
        assert r.exception() is None or isinstance(r.exception(), (WorkerCrashed, PoolClosedError))
    pool.abort()


def test_closing_the_loop_fails_requests_with_pool_closed() -> None:
    lp = Loop()
    pool = Pool(lp, WORKER, 2)
    reqs = [pool.request(b"hold") for _ in range(2)]  # never answered
    assert lp.run_until(lambda: pool.statistics().in_flight == 2, timeout=20)
    lp.close()
    assert [type(r.exception()).__name__ for r in reqs] == ["PoolClosedError"] * 2
    assert pool.statistics().crashes == 0
