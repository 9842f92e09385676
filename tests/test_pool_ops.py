# tests/test_pool_ops.py
#
# The Pool operations a daemon author expects from gunicorn: crash and
# restart logging, start/exit hooks, giving up on workers that cannot boot
# (with their real error, once), a target checked before anything starts,
# recycling after max_requests, hang detection (SIGSTOP) by heartbeat with
# its re-dispatch policy, back-pressure in the dispatcher, codecs, the
# context manager, and malformed replies (defect 6). Real processes; the
# timeouts run on a VirtualClock.
from __future__ import annotations

import logging
import os
import signal
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from evloop import (
    Loop,
    PayloadError,
    PoolClosedError,
    RemoteError,
    TargetError,
    WorkerBootError,
    WorkerCrashed,
    WorkerHung,
)
from evloop.pool import Pool, Request
from evloop.spawn import Worker
from evloop.testing import VirtualClock
from tests.spawn_helpers import fd_count, wait_until, zombie_children

WORKER = "tests.workers:pool_worker"


@pytest.fixture(autouse=True)
def no_zombies() -> Iterator[None]:
    yield
    assert zombie_children() == []


def wait_all(loop: Loop, reqs: list[Request], timeout: float = 20.0) -> None:
    assert wait_until(loop, lambda: all(r.done() for r in reqs), timeout)


def shut(loop: Loop, pool: Pool) -> None:
    done: list[Pool] = []
    pool.shutdown(5.0, done.append)
    assert wait_until(loop, lambda: bool(done))


def slow_loop(threshold: float) -> Loop:
    """A virtual-clock loop that waits `threshold` real seconds of idleness
    before it jumps: a healthy worker on a loaded machine answers a
    heartbeat long before that, so only a stopped one looks hung."""
    return Loop(clock=VirtualClock(autojump_threshold=threshold))


# -- logging and hooks ----------------------------------------------------------------


def test_crashes_and_restarts_are_logged_and_hooks_run(
    loop: Loop, caplog: pytest.LogCaptureFixture
) -> None:
    started: list[Worker] = []
    exited: list[Worker] = []
    pool = Pool(loop, WORKER, 2, on_worker_start=started.append, on_worker_exit=exited.append)
    assert started == pool.workers()
    assert wait_until(loop, lambda: all(w.ready for w in started))
    victim = pool.workers()[0]
    with caplog.at_level(logging.INFO, logger="evloop"):
        victim.kill()
        assert wait_until(loop, lambda: len(started) == 3 and pool.statistics().alive == 2)
    assert exited == [victim]
    text = caplog.text
    assert f"pid {victim.pid}) exited with status -9; restarting it in 0 s" in text
    assert f"restarted worker 0: pid {started[2].pid}" in text
    shut(loop, pool)
    assert sorted(w.pid for w in exited) == sorted(w.pid for w in started)


def test_a_typo_in_the_target_fails_at_once_with_a_suggestion(loop: Loop) -> None:
    before = fd_count()
    with pytest.raises(TargetError, match="did you mean 'pool_worker'"):
        Pool(loop, "tests.workers:pool_wroker", 4)
    with pytest.raises(TargetError, match="no module named 'tests.wrokers'"):
        Pool(loop, "tests.wrokers:pool_worker", 4)
    assert fd_count() == before and loop.statistics().fds == 0  # nothing was started


def test_boot_failures_stop_the_pool_and_report_the_real_error_once(
    vloop_slow: Loop, caplog: pytest.LogCaptureFixture
) -> None:
    loop = vloop_slow
    with caplog.at_level(logging.ERROR, logger="evloop"):
        pool = Pool(loop, "tests.workers:crash_at_start", 2, max_boot_failures=4)
        r = pool.request(b"pid")
        assert wait_until(loop, lambda: pool.closed)
    exc = r.exception()
    assert isinstance(exc, PoolClosedError) and isinstance(exc.__cause__, WorkerBootError)
    assert isinstance(exc.__cause__.error, RemoteError)
    assert "RuntimeError: this worker never starts" in str(exc.__cause__)
    assert pool.statistics().boot_failures == 4
    # The traceback is printed for the first failure and when giving up, not
    # once per crash.
    tracebacks = [rec for rec in caplog.records if "Traceback" in rec.getMessage()]
    assert len(tracebacks) == 2, [rec.getMessage()[:80] for rec in caplog.records]
    assert "(the same error again)" in caplog.text
    with pytest.raises(PoolClosedError, match="gave up"):
        pool.request(b"pid")


def test_a_module_that_spawns_at_import_is_refused_in_the_worker(loop: Loop) -> None:
    # tests/recursive_worker.py has no __main__ guard: without the refusal
    # every worker would start another one.
    pool = Pool(loop, "tests.recursive_worker:work", 1, max_boot_failures=1)
    r = pool.request(b"x")
    assert loop.run_until(lambda: pool.closed, timeout=20)
    boot = r.exception().__cause__  # type: ignore[union-attr]
    assert isinstance(boot, WorkerBootError)
    err = boot.error
    assert isinstance(err, RemoteError) and err.remote_type == "evloop.errors.SpawnError"
    assert "still importing its target module" in err.remote_message
    assert 'if __name__ == "__main__":' in err.remote_message


# -- recycling --------------------------------------------------------------------------


def test_max_requests_recycles_a_worker_after_its_requests_finish(loop: Loop) -> None:
    pool = Pool(loop, WORKER, 1, max_requests=3)
    first = pool.workers()[0]
    reqs = [pool.request(b"later 0.05") for _ in range(3)] + [
        pool.request(b"pid") for _ in range(4)
    ]
    wait_all(loop, reqs)
    assert [r.result() for r in reqs[:3]] == [b"late"] * 3  # in flight when it was retired
    pids = [int(r.result()) for r in reqs[3:]]
    assert first.pid not in pids and pids[0] == pids[1] == pids[2] != pids[3]
    assert wait_until(loop, lambda: first.done)
    assert first.returncode == 0  # closed, not killed
    stats = pool.statistics()
    assert (stats.recycled, stats.crashes, stats.failed) == (2, 0, 0)
    shut(loop, pool)


# -- hangs ---------------------------------------------------------------------------------


def test_a_stopped_worker_is_found_its_requests_fail_and_idempotent_ones_move() -> None:
    before = fd_count()
    loop = slow_loop(0.3)
    try:
        pool = Pool(loop, WORKER, 2, hang_timeout=20.0)
        assert wait_until(loop, lambda: all(w.ready for w in pool.workers()))
        stopped, healthy = pool.workers()
        os.kill(stopped.pid, signal.SIGSTOP)
        plain = [pool.request(b"pid") for _ in range(4)]  # round robin: 2 each
        again = [pool.request(b"pid", idempotent=True) for _ in range(4)]
        wait_all(loop, plain + again, timeout=40)
        hung = [r for r in plain if r.exception() is not None]
        assert len(hung) == 2
        for r in hung:
            exc = r.exception()
            assert isinstance(exc, WorkerHung) and isinstance(exc, WorkerCrashed)
            assert f"pid {stopped.pid}" in str(exc) and "stopped answering" in str(exc)
        # The idempotent ones the stopped worker held were sent again.
        assert [int(r.result()) for r in again] == [healthy.pid] * 4
        stats = pool.statistics()
        assert (stats.hung, stats.resent) == (1, 2)
        assert wait_until(loop, lambda: stopped.done and pool.statistics().alive == 2)
        assert stopped.returncode == -signal.SIGKILL
        shut(loop, pool)
    finally:
        loop.close()
    assert fd_count() == before


def test_an_idle_stopped_worker_is_found_by_the_heartbeat() -> None:
    before = fd_count()
    loop = slow_loop(0.3)
    try:
        pool = Pool(loop, WORKER, 1, hang_timeout=10.0)
        (w,) = pool.workers()
        assert wait_until(loop, lambda: w.ready and w.answers_pings)
        # Heartbeats come and go while it is healthy: no false alarm.
        t0 = loop.time()
        assert wait_until(loop, lambda: loop.time() - t0 > 40)
        assert pool.statistics().hung == 0
        os.kill(w.pid, signal.SIGSTOP)
        assert wait_until(loop, lambda: pool.statistics().hung == 1, timeout=30)
        assert wait_until(loop, lambda: w.done and pool.statistics().alive == 1)
        r = pool.request(b"pid")
        wait_all(loop, [r])
        assert int(r.result()) != w.pid
        shut(loop, pool)
    finally:
        loop.close()
    assert fd_count() == before


# -- back-pressure ---------------------------------------------------------------------------


def test_a_worker_that_stops_reading_gets_no_more_work(loop: Loop) -> None:
    pool = Pool(loop, WORKER, 2)
    stall = pool.request(b"stall")  # worker 0 stops reading its Pipe
    wait_all(loop, [stall])
    slow, fast = pool.workers()
    big = b"echo " + bytes(64 * 1024)
    reqs = [pool.request(big) for _ in range(120)]

    def on_slow(r: Request) -> bool:
        return r._client is not None and r._client.worker is slow  # type: ignore[attr-defined]

    # Everything not held by the stalled worker completes (queued requests
    # go to the other one as its Pipe drains).
    assert wait_until(loop, lambda: all(r.done() or on_slow(r) for r in reqs))
    assert not slow.writable  # its Pipe is above the high watermark
    to_slow = [r for r in reqs if not r.done()]
    # Round robin until the stalled worker's buffer passed the watermark,
    # then everything went to the other one.
    assert 10 < len(to_slow) < 40, len(to_slow)
    assert all(r.result() == bytes(64 * 1024) for r in reqs if r.done())
    pool.abort()


# -- codecs ----------------------------------------------------------------------------------


def test_json_codec_at_both_ends(loop: Loop) -> None:
    pool = Pool(loop, "tests.workers:pool_json", 2, codec="json")
    r = pool.request({"a": [1, 2, None], "s": "é"})
    wait_all(loop, [r])
    assert r.result() == {"echo": {"a": [1, 2, None], "s": "é"}}
    with pytest.raises(TypeError):
        pool.request({1, 2})  # not JSON
    assert pool.statistics().requests == 1
    shut(loop, pool)


def test_a_request_the_worker_cannot_decode_fails_alone(loop: Loop) -> None:
    pool = Pool(loop, "tests.workers:pool_json", 1)  # the pool sends raw bytes
    bad, good = pool.request(b"{not json"), pool.request(b'"fine"')
    wait_all(loop, [bad, good])
    assert isinstance(bad.exception(), RemoteError)
    assert bad.exception().remote_type == "json.decoder.JSONDecodeError"  # type: ignore[union-attr]
    assert good.result() == b'{"echo":"fine"}'
    shut(loop, pool)


_RAW_REPLY = r"""
import os, socket, struct
s = socket.socket(fileno=3)
while True:
    head = s.recv(6, socket.MSG_WAITALL)
    if len(head) < 6:
        break
    chan, n = struct.unpack(">HI", head)
    body = s.recv(n, socket.MSG_WAITALL)
    rid = body[1:9]
    what = body[9:]
    if what == b"nested":  # an error report nested 100,000 deep (defect 6)
        out = b"X" + rid + b"[" * 100000 + b"]" * 100000
    elif what == b"list":
        out = b"X" + rid + b'["a", "list"]'
    elif what == b"short":
        out = b"R" + rid[:3]  # too short to carry an id: dropped
    else:
        out = b"R" + rid + b"not json"
    s.sendall(struct.pack(">HI", 0xFFFF, len(out)) + out)
"""


def test_malformed_replies_fail_their_request_never_leave_it_pending(loop: Loop) -> None:
    pool = Pool(loop, [sys.executable, "-c", _RAW_REPLY], 1, restart=False)
    nested, lst = pool.request(b"nested"), pool.request(b"list")
    wait_all(loop, [nested, lst])
    for r in (nested, lst):
        exc = r.exception()
        assert isinstance(exc, RemoteError) and exc.remote_type == "?"
        assert "unreadable error report" in str(exc)
    # A reply too short to name its request is dropped; the request stays
    # tracked, so it fails with the worker instead of waiting for ever.
    short = pool.request(b"short")
    ok = pool.request(b"x")
    wait_all(loop, [ok])
    assert not short.done() and pool.statistics().in_flight == 1
    pool.workers()[0].kill()
    wait_all(loop, [short])
    assert isinstance(short.exception(), WorkerCrashed)
    pool.abort()


def test_an_undecodable_reply_is_a_payload_error(loop: Loop) -> None:
    pool = Pool(loop, [sys.executable, "-c", _RAW_REPLY], 1, codec="json")
    r = pool.request("anything")
    wait_all(loop, [r])
    exc = r.exception()
    assert isinstance(exc, PayloadError) and exc.__cause__ is not None
    pool.abort()


def test_pickle_codec_is_opt_in(loop: Loop) -> None:
    pool = Pool(loop, "tests.workers:pool_pickle", 1, codec="pickle")
    r = pool.request(frozenset({1, 2}))
    wait_all(loop, [r])
    assert r.result() == ("frozenset", frozenset({1, 2}))
    shut(loop, pool)


# -- consistency ------------------------------------------------------------------------------


def test_pool_is_a_context_manager(loop: Loop) -> None:
    with Pool(loop, "tests.workers:ctx_pool", 2) as pool:
        r = pool.request(b"hi")
        wait_all(loop, [r])
        workers = pool.workers()
    assert r.result() == b"ctx:hi"
    assert pool.closed and all(w.returncode == 0 for w in workers)


def test_requests_are_futures_with_their_old_api(loop: Loop) -> None:
    from evloop import Future

    pool = Pool(loop, WORKER, 1)
    seen: list[Any] = []
    r = pool.request(b"echo x", callback=seen.append)
    assert isinstance(r, Future) and hasattr(r, "__await__")
    wait_all(loop, [r])
    assert seen == [r] and r.result() == b"x" and not r.cancelled()
    shut(loop, pool)
