# The asyncio bridge, both ways, in one thread: an evloop Loop driven from
# inside asyncio (real sockets, real worker processes), evloop awaitables
# awaited by asyncio code, asyncio awaitables awaited by evloop tasks, and
# cancellation crossing in both directions.
from __future__ import annotations

import asyncio
import pathlib
import subprocess
import sys
from typing import Any

import pytest

import evloop
from evloop import aio, streams, tasks


def run(coro: Any) -> Any:
    return asyncio.run(asyncio.wait_for(coro, 30))


def test_bridge_drives_timers_and_pipes(loop):
    ca, cb = evloop.conn_pair(loop)
    pa, pb = evloop.Pipe(ca), evloop.Pipe(cb)
    pb.on_frame = pb.write_frame  # echo, on evloop's callbacks

    async def main() -> Any:
        async with aio.Bridge(loop) as bridge:
            fired: asyncio.Future[float] = asyncio.get_running_loop().create_future()
            loop.call_later(0.01, lambda: fired.set_result(loop.time()))
            bridge.kick()  # a direct call into evloop from asyncio code
            await fired
            replies = []

            async def evloop_side() -> list[Any]:
                for i in range(20):
                    await streams.send(pa, 1, b"%d" % i)
                    replies.append(await streams.recv(pa))
                return replies

            got = await aio.wrap(evloop_side(), loop=loop)
            return got, bridge.turns

    got, turns = run(main())
    assert got == [(1, b"%d" % i) for i in range(20)] and turns > 0
    pa.close()
    pb.close()
    loop.run_until(lambda: ca.closed and cb.closed, timeout=5)


def test_wrap_carries_results_errors_and_cancellation(loop):
    async def fails() -> None:
        await tasks.checkpoint()
        raise KeyError("evloop side")

    async def forever() -> None:
        await evloop.Future(loop)

    async def main() -> Any:
        async with aio.Bridge(loop):
            f: evloop.Future[int] = evloop.Future(loop)
            loop.call_soon(f.set_result, 7)
            assert await aio.wrap(f) == 7
            with pytest.raises(KeyError):
                await aio.wrap(fails(), loop=loop)
            t = tasks.create_task(loop, forever())
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(aio.wrap(t), 0.05)
            await asyncio.sleep(0.01)
            return t

    t = run(main())
    assert t.cancelled()  # asyncio's cancellation reached the evloop task


def test_evloop_tasks_await_asyncio_libraries(loop):
    async def echo_server(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(await reader.readline())
        await writer.drain()
        writer.close()

    async def asyncio_client(port: int) -> bytes:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"through asyncio streams\n")
        line = await reader.readline()
        writer.close()
        await writer.wait_closed()
        return line

    async def evloop_task(port: int) -> bytes:
        # An evloop coroutine waits on an asyncio coroutine (run as an
        # asyncio Task) and on a bare asyncio future.
        await aio.from_asyncio(asyncio.sleep(0.001), loop)
        fut = asyncio.get_running_loop().create_future()
        asyncio.get_running_loop().call_soon(fut.set_result, b"!")
        bang = await fut
        return await aio.from_asyncio(asyncio_client(port), loop) + bang

    async def main() -> bytes:
        server = await asyncio.start_server(echo_server, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        async with server, aio.Bridge(loop):
            return await aio.wrap(evloop_task(port), loop=loop)  # type: ignore[no-any-return]

    assert run(main()) == b"through asyncio streams\n!"


def test_cancelling_an_evloop_wait_cancels_the_asyncio_task(loop):
    cancelled = []

    async def slow() -> None:
        try:
            await asyncio.sleep(100)
        except asyncio.CancelledError:
            cancelled.append(True)
            raise

    async def evloop_side() -> bool:
        with tasks.move_on_after(0.02) as scope:
            await aio.from_asyncio(slow(), loop)
        return scope.cancelled_caught

    async def main() -> bool:
        async with aio.Bridge(loop):
            r = await aio.wrap(evloop_side(), loop=loop)
            await asyncio.sleep(0.01)
            return r  # type: ignore[no-any-return]

    assert run(main()) is True
    assert cancelled == [True]


def test_pool_requests_from_asyncio(loop):
    async def main() -> list[bytes]:
        async with aio.Bridge(loop):
            pool = evloop.Pool(loop, "tests.workers:pool_sync", 2, "aio")
            out = await asyncio.gather(*(aio.wrap(pool.request(b"%d" % i)) for i in range(6)))
            done: evloop.Future[Any] = evloop.Future(loop)
            pool.shutdown(deadline=5, callback=done.set_result)
            await aio.wrap(done)
            return list(out)

    assert run(main()) == [b"aio:%d" % i for i in range(6)]


def test_bridge_misuse(loop):
    with pytest.raises(TypeError):
        aio.wrap(object())

    async def main() -> None:
        b = aio.Bridge(loop).start()
        with pytest.raises(RuntimeError):
            b.start()
        b.close()
        b.close()

    run(main())


def test_the_example_runs():
    example = pathlib.Path(__file__).resolve().parent.parent / "examples" / "asyncio_bridge.py"
    out = subprocess.run(
        [sys.executable, str(example), "--workers", "2", "--demo", "4"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.count(" -> ") == 4
