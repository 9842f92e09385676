# Coroutines on the evloop Loop: the runner, sleep and timeouts on a virtual
# clock, level-triggered cancellation, task groups, and all of it over real
# sockets and real worker processes.
from __future__ import annotations

import sys
from typing import Any

import pytest

import evloop
from evloop import streams, tasks
from evloop.errors import (
    CancelledError,
    DeadlineExceeded,
    LoopStoppedError,
    TaskGroupError,
)
from evloop.tasks import (
    CancelScope,
    TaskGroup,
    checkpoint,
    create_task,
    fail_after,
    move_on_after,
    run_until_complete,
    sleep,
)

# -- the runner -----------------------------------------------------------------


def test_run_returns_the_result_and_closes_its_loop():
    seen: list[evloop.Loop] = []

    async def main() -> int:
        seen.append(tasks.current_loop())
        await checkpoint()
        return 42

    assert tasks.run(main()) == 42
    assert seen[0].closed


def test_run_raises_the_error_of_main():
    async def main() -> None:
        await checkpoint()
        raise KeyError("main failed")

    with pytest.raises(KeyError, match="main failed"):
        tasks.run(main())


def test_tasks_run_on_later_turns_in_order(loop):
    order: list[str] = []

    async def job(name: str) -> str:
        order.append(name)
        await checkpoint()
        order.append(name + "2")
        return name

    a = create_task(loop, job("a"))
    b = create_task(loop, job("b"))
    assert order == []  # nothing runs inside create_task
    assert run_until_complete(loop, b) == "b"
    assert a.result() == "a"
    assert order == ["a", "b", "a2", "b2"]


def test_awaiting_a_future_and_a_task(loop):
    fut: evloop.Future[str] = evloop.Future(loop)

    async def setter() -> None:
        await checkpoint()
        fut.set_result("value")

    async def main() -> tuple[str, None]:
        t = create_task(loop, setter())
        return await fut, await t

    assert run_until_complete(loop, main()) == ("value", None)


def test_run_until_complete_when_the_loop_is_stopped(loop):
    async def forever() -> None:
        await evloop.Future(loop)

    async def stopper() -> None:
        loop.stop()

    t = create_task(loop, forever())
    create_task(loop, stopper())
    with pytest.raises(LoopStoppedError):
        run_until_complete(loop, t)
    t.cancel()
    run_until_complete(loop, checkpoint())
    assert t.cancelled()


def test_awaiting_something_that_is_not_a_future_raises_in_the_coroutine(loop):
    class Bad:
        def __await__(self):
            yield 12

    async def main() -> str:
        try:
            await Bad()
        except TypeError as exc:
            return str(exc)
        return "no error"

    assert "not an evloop Future" in run_until_complete(loop, main())


def test_an_error_nobody_awaits_reaches_the_loop_handler(loop):
    async def fails() -> None:
        await checkpoint()
        raise ValueError("unobserved")

    t = create_task(loop, fails())
    loop.run_until(t.done, timeout=5)
    assert isinstance(loop.errors.claim(ValueError), ValueError)


def test_current_task_outside_a_task_is_an_error():
    with pytest.raises(RuntimeError, match="not inside an evloop task"):
        tasks.current_task()


def test_create_task_on_a_closed_loop_raises_and_does_not_warn():
    lp = evloop.Loop()
    lp.close()

    async def never() -> None:
        pass

    with pytest.raises(evloop.LoopClosedError):
        create_task(lp, never())


def test_statistics(loop):
    async def main() -> None:
        for _ in range(3):
            await checkpoint()

    run_until_complete(loop, main())
    st = tasks.statistics(loop)
    assert st.tasks == 0 and st.runnable == 0 and st.steps >= 4


# -- sleep and timeouts (virtual clock) ----------------------------------------------


def test_sleep_takes_loop_time(vloop):
    async def main() -> float:
        t0 = vloop.time()
        await sleep(30)
        await sleep(0)
        return vloop.time() - t0

    assert run_until_complete(vloop, main()) == 30


def test_sleep_rejects_bad_durations(vloop):
    async def main() -> None:
        await sleep(-1)

    with pytest.raises(ValueError):
        run_until_complete(vloop, main())


def test_move_on_after(vloop):
    async def main() -> tuple[bool, float]:
        with move_on_after(5) as scope:
            await sleep(100)
        return scope.cancelled_caught, vloop.time()

    assert run_until_complete(vloop, main()) == (True, 5)


def test_move_on_after_that_does_not_expire(vloop):
    async def main() -> bool:
        with move_on_after(5) as scope:
            await sleep(1)
        await sleep(10)  # the scope's timer is gone
        return scope.cancelled_caught

    assert run_until_complete(vloop, main()) is False
    assert vloop.statistics().timers == 0


def test_fail_after_raises_deadline_exceeded(vloop):
    async def main() -> None:
        with fail_after(2):
            await sleep(3)

    with pytest.raises(DeadlineExceeded) as info:
        run_until_complete(vloop, main())
    assert isinstance(info.value, TimeoutError)
    assert vloop.time() == 2


def test_cancellation_is_level_triggered(vloop):
    # Catching the CancelledError and waiting again is cancelled again.
    log: list[str] = []

    async def main() -> None:
        with move_on_after(1):
            for _ in range(3):
                try:
                    await sleep(10)
                except CancelledError:
                    log.append("cancelled")
        log.append("after")

    run_until_complete(vloop, main())
    assert log == ["cancelled"] * 3 + ["after"]
    assert vloop.time() == 1


def test_nested_scopes_inner_and_outer(vloop):
    async def main() -> list[Any]:
        out: list[Any] = []
        with move_on_after(10) as outer:
            with move_on_after(1) as inner:
                await sleep(5)
            out.append(("inner", inner.cancelled_caught, vloop.time()))
            with move_on_after(100) as inner2:
                await sleep(50)
            out.append(("inner2", inner2.cancelled_caught, vloop.time()))
        out.append(("outer", outer.cancelled_caught))
        return out

    assert run_until_complete(vloop, main()) == [
        ("inner", True, 1),
        ("outer", True),  # inner2 was not cancelled itself: it let the error through
    ]
    assert vloop.time() == 10


def test_shielded_scope_finishes_its_cleanup(vloop):
    log: list[Any] = []

    async def main() -> None:
        with move_on_after(1):
            try:
                await sleep(10)
            finally:
                with CancelScope(shield=True):
                    await sleep(3)  # cleanup that must finish
                    log.append(vloop.time())

    run_until_complete(vloop, main())
    assert log == [4]


def test_deadline_can_be_moved(vloop):
    async def main() -> float:
        with move_on_after(1) as scope:
            scope.deadline = vloop.time() + 7
            await sleep(100)
        return vloop.time()

    assert run_until_complete(vloop, main()) == 7


def test_task_cancel_and_cancelled_state(vloop):
    async def sleeper() -> None:
        await sleep(100)

    async def main() -> bool:
        t = create_task(vloop, sleeper())
        await sleep(1)
        assert t.cancel()
        with pytest.raises(CancelledError):
            await t
        return t.cancelled()

    assert run_until_complete(vloop, main())


def test_wait_with_cancel_withdraws_the_future(vloop):
    fut: evloop.Future[int] = evloop.Future(vloop)

    async def main() -> None:
        with move_on_after(1):
            await tasks.wait(fut, cancel=True)

    run_until_complete(vloop, main())
    assert fut.cancelled()


def test_a_cancelled_wait_leaves_a_shared_future_alone(vloop):
    fut: evloop.Future[int] = evloop.Future(vloop)

    async def impatient() -> None:
        with move_on_after(1):
            await fut

    async def patient() -> int:
        return await fut

    async def main() -> int:
        p = create_task(vloop, patient())
        await impatient()
        fut.set_result(5)
        return await p

    assert run_until_complete(vloop, main()) == 5


# -- task groups ----------------------------------------------------------------------


def test_group_waits_for_every_child(vloop):
    async def child(n: int, out: list[int]) -> int:
        await sleep(n)
        out.append(n)
        return n

    async def main() -> list[int]:
        out: list[int] = []
        async with TaskGroup() as tg:
            for n in (3, 1, 2):
                tg.create_task(child(n, out))
        return out

    assert run_until_complete(vloop, main()) == [1, 2, 3]


def test_a_child_error_cancels_siblings_and_the_body(vloop):
    log: list[str] = []

    async def fails() -> None:
        await sleep(1)
        raise ValueError("child failed")

    async def sibling() -> None:
        try:
            await sleep(100)
        finally:
            log.append("sibling cleaned up")

    async def main() -> None:
        async with TaskGroup() as tg:
            tg.create_task(fails())
            tg.create_task(sibling())
            try:
                await sleep(100)
            finally:
                log.append("body cancelled")

    with pytest.raises(TaskGroupError) as info:
        run_until_complete(vloop, main())
    assert [type(e) for e in info.value.exceptions] == [ValueError]
    assert sorted(log) == ["body cancelled", "sibling cleaned up"]
    assert vloop.time() == 1
    assert tasks.statistics(vloop).tasks == 0  # no orphan


@pytest.mark.skipif(sys.version_info < (3, 11), reason="except* needs 3.11")
def test_group_error_is_an_exception_group_on_311(vloop):
    async def fails(n: int) -> None:
        await sleep(n)
        raise KeyError(n)

    async def main() -> None:
        async with TaskGroup() as tg:
            tg.create_task(fails(1))
            tg.create_task(fails(1))

    with pytest.raises(TaskGroupError) as info:
        run_until_complete(vloop, main())
    assert isinstance(info.value, ExceptionGroup)  # noqa: F821 - 3.11+
    keys, rest = info.value.split(KeyError)  # what `except* KeyError` does
    assert keys is not None and len(keys.exceptions) == 2 and rest is None


def test_body_error_cancels_children(vloop):
    log: list[str] = []

    async def child() -> None:
        try:
            await sleep(100)
        except CancelledError:
            log.append("child cancelled")
            raise

    async def main() -> None:
        async with TaskGroup() as tg:
            tg.create_task(child())
            await sleep(1)
            raise RuntimeError("body failed")

    with pytest.raises(TaskGroupError) as info:
        run_until_complete(vloop, main())
    assert isinstance(info.value.exceptions[0], RuntimeError)
    assert log == ["child cancelled"]


def test_group_cancel_is_quiet(vloop):
    async def main() -> float:
        async with TaskGroup() as tg:
            tg.create_task(sleep(100))
            tg.create_task(sleep(100))
            await sleep(2)
            tg.cancel()
        return vloop.time()

    assert run_until_complete(vloop, main()) == 2


def test_outer_timeout_cancels_the_whole_tree(vloop):
    log: list[str] = []

    async def grandchild() -> None:
        try:
            await sleep(100)
        finally:
            log.append("grandchild")

    async def child() -> None:
        async with TaskGroup() as tg:
            tg.create_task(grandchild())
            await sleep(100)

    async def main() -> bool:
        with move_on_after(3) as scope:
            async with TaskGroup() as tg:
                tg.create_task(child())
        return scope.cancelled_caught

    assert run_until_complete(vloop, main()) is True
    assert log == ["grandchild"] and vloop.time() == 3


def test_children_may_start_siblings_while_the_group_exits(vloop):
    out: list[str] = []

    async def later(tg: TaskGroup) -> None:
        await sleep(1)
        tg.create_task(last())

    async def last() -> None:
        await sleep(1)
        out.append("last")

    async def main() -> None:
        async with TaskGroup() as tg:
            tg.create_task(later(tg))
        with pytest.raises(RuntimeError):
            tg.create_task(last())

    run_until_complete(vloop, main())
    assert out == ["last"]


def test_loop_close_ends_every_task_and_runs_finally():
    lp = evloop.Loop()
    log: list[str] = []

    async def stubborn() -> None:
        try:
            await evloop.Future(lp)
        finally:
            log.append("finally")

    async def main() -> None:
        async with TaskGroup() as tg:
            tg.create_task(stubborn())
            tg.create_task(stubborn())

    t = create_task(lp, main())
    lp.run_until(lambda: False, timeout=0.01)
    lp.close()
    assert log == ["finally", "finally"]
    assert t.done()


# -- on real sockets ----------------------------------------------------------------------


def test_ping_pong_between_tasks_over_a_socket_pipe(loop):
    ca, cb = evloop.conn_pair(loop)
    pa, pb = evloop.Pipe(ca), evloop.Pipe(cb)

    async def pinger() -> int:
        for i in range(200):
            await streams.send(pa, 1, b"%d" % i)
            chan, payload = await streams.recv(pa)
            assert payload == b"%d" % (i + 1)
        pa.close()
        return i

    async def ponger() -> None:
        while True:
            try:
                chan, payload = await streams.recv(pb)
            except evloop.errors.EndOfChannel:
                return
            await streams.send(pb, chan, b"%d" % (int(payload) + 1))

    async def main() -> int:
        async with TaskGroup() as tg:
            t = tg.create_task(pinger())
            tg.create_task(ponger())
        return t.result()

    assert run_until_complete(loop, main()) == 199
    assert loop.run_until(lambda: ca.closed and cb.closed, timeout=5)


def test_cancel_a_task_blocked_on_a_real_socket(vloop):
    ca, cb = evloop.conn_pair(vloop)
    pa, pb = evloop.Pipe(ca), evloop.Pipe(cb)

    async def main() -> tuple[bool, Any]:
        with move_on_after(2) as scope:
            await streams.recv(pb)  # nobody writes
        pa.write_frame(3, b"after")
        return scope.cancelled_caught, await streams.recv(pb)

    assert run_until_complete(vloop, main()) == (True, (3, b"after"))
    pa.close()
    assert vloop.run_until(lambda: cb.closed, timeout=5)


def test_conn_read_until_and_read_exactly(loop):
    ca, cb = evloop.conn_pair(loop)

    async def main() -> list[bytes]:
        ca.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        ca.write(b"12345")
        ca.close()
        out = [await streams.read_until(cb, b"\r\n\r\n"), await streams.read_exactly(cb, 3)]
        with pytest.raises(evloop.errors.IncompleteReadError) as info:
            await streams.read_exactly(cb, 10)
        out.append(info.value.partial)
        return out

    assert run_until_complete(loop, main()) == [
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
        b"123",
        b"45",
    ]
    assert loop.run_until(lambda: cb.closed, timeout=5)


def test_read_until_limit(loop):
    ca, cb = evloop.conn_pair(loop)

    async def main() -> None:
        ca.write(b"x" * 100)
        await streams.read_until(cb, b"\n", limit=50)

    with pytest.raises(evloop.ReadLimitError):
        run_until_complete(loop, main())
    ca.close()
    cb.close()


def test_send_waits_while_the_pipe_is_above_its_high_watermark(loop):
    ca, cb = evloop.conn_pair(loop, high_water=32 * 1024)
    pa = evloop.Pipe(ca)
    pb = evloop.Pipe(cb)
    pb.pause_reading()
    waits = [0]

    async def producer() -> None:
        for _ in range(200):
            if not pa.writable:
                waits[0] += 1
            await streams.send(pa, 1, b"z" * 4096)

    t = create_task(loop, producer())
    loop.run_until(lambda: not pa.writable, timeout=5)
    assert not t.done()  # held back: the reader is paused
    got = [0]
    pb.on_frame = lambda c, p: got.__setitem__(0, got[0] + 1)
    pb.resume_reading()
    run_until_complete(loop, t)
    assert waits[0] >= 1
    assert loop.run_until(lambda: got[0] == 200, timeout=10)
    pa.close()
    assert loop.run_until(lambda: cb.closed, timeout=5)


# -- with real worker processes --------------------------------------------------------------


def test_await_a_worker_and_its_exit(loop):
    worker = evloop.spawn(loop, "tests.workers:echo", ">")
    stream = streams.frame_stream(worker.pipe)

    async def main() -> tuple[Any, int]:
        await stream.send(2, b"hi")
        reply = await stream.recv()
        worker.close()
        status = await streams.exited(worker)
        return reply, status

    assert run_until_complete(loop, main(), timeout=30) == ((2, b">hi"), 0)


def test_group_cancels_a_task_waiting_on_a_worker(vloop_slow):
    loop = vloop_slow
    worker = evloop.spawn(loop, "tests.workers:idle")

    async def waiter() -> None:
        await streams.recv(worker.pipe)  # the hello
        await streams.recv(worker.pipe)  # never comes

    async def fails() -> None:
        await sleep(1)
        raise OSError("something else broke")

    async def main() -> None:
        async with TaskGroup() as tg:
            tg.create_task(waiter())
            tg.create_task(fails())

    with pytest.raises(TaskGroupError):
        run_until_complete(loop, main(), timeout=30)
    worker.kill()
    assert run_until_complete(loop, streams.exited(worker), timeout=30) < 0


def test_await_pool_requests(loop):
    pool = evloop.Pool(loop, "tests.workers:pool_sync", 2, "t")

    async def one(i: int) -> bytes:
        return await tasks.wait(pool.request(b"%d" % i))  # type: ignore[no-any-return]

    async def main() -> list[bytes]:
        async with TaskGroup() as tg:
            ts = [tg.create_task(one(i)) for i in range(10)]
        return [t.result() for t in ts]

    assert run_until_complete(loop, main(), timeout=30) == [b"t:%d" % i for i in range(10)]
    done: list[Any] = []
    pool.shutdown(deadline=5, callback=done.append)
    assert loop.run_until(lambda: done, timeout=20)


def test_the_method_forms_on_pipe_and_conn(loop):
    # pipe.recv()/send() and conn.readuntil()/readexactly() are the streams
    # functions, reached from the objects as the examples write them.
    ca, cb = evloop.conn_pair(loop)
    pa, pb = evloop.Pipe(ca), evloop.Pipe(cb)
    c1, c2 = evloop.conn_pair(loop)

    async def main() -> tuple[Any, ...]:
        await pa.send(4, b"frame")
        got = await pb.recv()
        c1.write(b"line\r\nrest")
        line = await c2.readuntil(b"\r\n")
        rest = await c2.readexactly(4)
        return got, line, rest

    assert run_until_complete(loop, main()) == ((4, b"frame"), b"line\r\n", b"rest")
    for c in (ca, c1):
        c.close()
    assert loop.run_until(lambda: cb.closed and c2.closed, timeout=5)
