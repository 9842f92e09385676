# The primitives with their far ends in real worker processes (spawned, a
# socketpair each): Dealer, Router, Tee, Broadcast, Value and a Pipe's
# stop/exception cases when the other process fails or dies.
from __future__ import annotations

from typing import Any

import pytest

import evloop
from evloop import patterns as P
from evloop import streams, tasks
from evloop.errors import ChannelFailed, EndOfChannel, RemoteError, Unroutable
from evloop.tasks import run_until_complete

W = "tests.pattern_workers"


def reports(worker: evloop.Worker, into: list[tuple[int, bytes]]) -> None:
    worker.on_frame = lambda w, chan, data: into.append((w.pid, bytes(data)))


async def until(pred: Any, seconds: float = 30.0) -> None:
    with tasks.fail_after(seconds):
        while not pred():
            await tasks.sleep(0.002)


def test_dealer_over_worker_processes(loop):
    dealer = P.Dealer(loop=loop)
    got: list[tuple[int, bytes]] = []
    workers = [evloop.spawn(loop, f"{W}:receiver", 5) for _ in range(2)]
    for w in workers:
        reports(w, got)
        dealer.attach(w.pipe, 5)

    async def main() -> None:
        # Both workers are up and waiting (their credit arrived) before dealing.
        await until(lambda: dealer.statistics().receivers_waiting == 2)
        for i in range(20):
            await dealer.send(b"job %d" % i)
        dealer.close_send()
        await until(lambda: sum(1 for _, d in got if d == b"end") == 2)
        for w in workers:
            w.close()
            assert await streams.exited(w) == 0

    run_until_complete(loop, main(), timeout=60)
    jobs = [d for _, d in got if d != b"end"]
    assert sorted(j.split(b":", 1)[1] for j in jobs) == sorted(b"job %d" % i for i in range(20))
    pids = {j.split(b":")[0] for j in jobs}
    assert len(pids) == 2  # both took work


def test_dealer_goes_on_when_a_worker_dies(loop):
    dealer = P.Dealer(loop=loop)
    got: list[tuple[int, bytes]] = []
    dying = evloop.spawn(loop, f"{W}:receiver", 5, 2)
    alive = evloop.spawn(loop, f"{W}:receiver", 5)
    for w in (dying, alive):
        reports(w, got)
        dealer.attach(w.pipe, 5)

    async def main() -> int:
        await until(lambda: dealer.statistics().receivers_waiting == 2)
        for i in range(10):
            await dealer.send(b"%d" % i)  # never hangs on the dead one
        status = await streams.exited(dying)
        await until(lambda: len(got) >= 10 - 1)
        alive.close()
        await streams.exited(alive)
        return status

    assert run_until_complete(loop, main(), timeout=60) == 3


def test_router_with_worker_clients_and_an_unroutable_reply(loop):
    router = P.Router(loop=loop)
    got: list[tuple[int, bytes]] = []
    workers = [evloop.spawn(loop, f"{W}:client", 9, 3) for _ in range(2)]
    for w in workers:
        reports(w, got)
        router.attach(w.pipe, 9)

    async def main() -> None:
        origins = {}
        for _ in range(6):
            origin, req = await router.recv()
            origins[req.split(b"-")[0]] = origin
            await router.reply(origin, b"re " + req)
        await until(lambda: sum(1 for _, d in got if d == b"done") == 2)
        w = workers[0]
        w.close()
        await streams.exited(w)
        with pytest.raises(Unroutable):
            await router.reply(origins[str(w.pid).encode()], b"to a dead worker")
        workers[1].close()
        await streams.exited(workers[1])

    run_until_complete(loop, main(), timeout=60)
    for w in workers:
        replies = [d for pid, d in got if pid == w.pid and d != b"done"]
        assert replies == [b"re %d-%d" % (w.pid, i) for i in range(3)]


def test_tee_and_broadcast_to_worker_subscribers(loop):
    tee = P.Tee(loop=loop)
    got: list[tuple[int, bytes]] = []
    workers = [evloop.spawn(loop, f"{W}:receiver", 4) for _ in range(2)]
    for w in workers:
        reports(w, got)
        tee.attach(w.pipe, 4)

    async def main() -> None:
        for i in range(5):
            await tee.send(b"t%d" % i)  # waits for both every time
        tee.close_send()
        await until(lambda: sum(1 for _, d in got if d == b"end") == 2)
        for w in workers:
            w.close()
            await streams.exited(w)

    run_until_complete(loop, main(), timeout=60)
    for w in workers:
        items = [d.split(b":")[1] for pid, d in got if pid == w.pid and d != b"end"]
        assert items == [b"t%d" % i for i in range(5)]


def test_value_updates_reach_a_worker(loop):
    v = P.Value(b"v0", loop=loop)
    got: list[tuple[int, bytes]] = []
    w = evloop.spawn(loop, f"{W}:value_watcher", 3, "v3")
    reports(w, got)
    v.attach(w.pipe, 3)

    async def main() -> None:
        await until(lambda: got)
        for i in (1, 2, 3):
            v.set(b"v%d" % i)
        await until(lambda: got[-1][1] == b"v3")
        w.close()
        assert await streams.exited(w) == 0

    run_until_complete(loop, main(), timeout=60)
    seen = [d for _, d in got]
    assert seen[0] == b"v0" and seen[-1] == b"v3" and seen == sorted(seen)


@pytest.mark.parametrize("fail", [False, True])
def test_a_worker_sender_ends_or_fails(loop, fail):
    q = P.Queue(4, loop=loop)
    w = evloop.spawn(loop, f"{W}:sender", 2, 3, fail)
    q.attach(w.pipe, 2, role="sender")

    async def main() -> BaseException:
        assert [await q.recv() for _ in range(3)] == [b"item 0", b"item 1", b"item 2"]
        with pytest.raises((EndOfChannel, ChannelFailed)) as info:
            await q.recv()
        w.close()
        await streams.exited(w)
        return info.value

    exc = run_until_complete(loop, main(), timeout=60)
    if fail:
        assert isinstance(exc, ChannelFailed) and isinstance(exc.cause, RemoteError)
        assert exc.cause.remote_type == "ValueError"
    else:
        assert isinstance(exc, EndOfChannel)


def test_a_dead_worker_fails_the_pipe_it_was_sending_on(loop):
    p = P.Pipe(loop=loop)
    w = evloop.spawn(loop, "tests.workers:idle")
    p.attach(w.pipe, 2, role="sender")

    async def main() -> BaseException:
        t = tasks.create_task(loop, p.recv())
        await tasks.checkpoint()
        w.kill()
        with pytest.raises(ChannelFailed) as info:
            await t
        return info.value

    exc = run_until_complete(loop, main(), timeout=60)
    assert isinstance(exc.cause, ConnectionError)
    run_until_complete(loop, streams.exited(w), timeout=30)
