# vanilla's primitives: each one in-process and across an endpoint (a
# mempipe, a socket Pipe; real worker processes in test_patterns_procs.py),
# with the seed's five cases: an exception on the send side, on the receive
# side, the pipe wanting to stop, something else wanting it to stop, and the
# world stopping. Timeouts run on a virtual clock.
from __future__ import annotations

from typing import Any

import pytest

import evloop
import evloop.testing
from evloop import patterns as P
from evloop import tasks
from evloop.errors import (
    BrokenChannelError,
    ChannelFailed,
    ClosedChannelError,
    DeadlineExceeded,
    EndOfChannel,
    LoopClosedError,
    RemoteError,
    Unroutable,
    WouldBlock,
)
from evloop.mempipe import mempipe_pair
from evloop.tasks import TaskGroup, move_on_after, run_until_complete

WHERES = ["local", "mempipe", "socket"]


def endpoints(loop: evloop.Loop, where: str) -> tuple[Any, Any]:
    if where == "mempipe":
        return mempipe_pair(loop)
    ca, cb = evloop.conn_pair(loop)
    return evloop.Pipe(ca), evloop.Pipe(cb)


async def settle(n: int = 4) -> None:
    """Let frames travel a few hops (virtual clock: costs no real time)."""
    for _ in range(n):
        await tasks.sleep(0.001)


def cause_of(exc: BaseException, local: type[BaseException], where: str) -> None:
    """A failure crossed over: the original in-process, a RemoteError naming
    it across an endpoint."""
    assert isinstance(exc, ChannelFailed), exc
    if where == "local":
        assert isinstance(exc.cause, local), exc.cause
    else:
        assert isinstance(exc.cause, RemoteError), exc.cause
        assert exc.cause.remote_type == local.__name__


# -- the one-to-one family: Pipe, Queue, Channel, Dealer, Router, Gather -----------------


class Kit:
    """Builds (tx, rx, prim) for one primitive kind. `remote` says which
    side lives behind the endpoint: "rx" or "tx" (None: both local)."""

    kind: str = ""
    buffered = 0  # items a send may leave without a receiver
    remote_sides = ("rx", "tx")

    def prim(self, loop: evloop.Loop) -> Any:
        raise NotImplementedError

    def make(self, loop: evloop.Loop, where: str, remote: str | None) -> tuple[Any, Any, Any]:
        prim = self.prim(loop)
        if where == "local" or remote is None:
            return self.local_tx(prim), self.local_rx(prim), prim
        a, b = endpoints(loop, where)
        if remote == "rx":
            prim.attach(a, 5, role="receiver")
            return self.local_tx(prim), Rx(P.remote(b, 5)), prim
        prim.attach(a, 5, role="sender")
        return P.remote(b, 5), self.local_rx(prim), prim

    def local_tx(self, prim: Any) -> Any:
        return prim.sender()

    def local_rx(self, prim: Any) -> Any:
        return Rx(prim.receiver())


class Rx:
    """Normalizes what recv() returns to the item."""

    def __init__(self, inner: Any, unwrap: Any = None):
        self.inner = inner
        self.unwrap = unwrap

    async def recv(self, timeout: float | None = None) -> Any:
        v = await self.inner.recv(timeout)
        return self.unwrap(v) if self.unwrap else v

    def close(self, exc: BaseException | None = None) -> None:
        self.inner.close(exc)

    def close_recv(self, exc: BaseException | None = None) -> None:
        getattr(self.inner, "close_recv", self.inner.close)(exc)


class PipeKit(Kit):
    kind = "pipe"

    def prim(self, loop):
        return P.Pipe(loop=loop)


class QueueKit(Kit):
    kind = "queue"
    buffered = 2

    def prim(self, loop):
        return P.Queue(2, loop=loop)


class ChannelKit(Kit):
    kind = "channel"

    def prim(self, loop):
        return P.Channel(loop=loop)


class DealerKit(Kit):
    kind = "dealer"
    remote_sides = ("rx",)

    def prim(self, loop):
        return P.Dealer(loop=loop)


class RouterKit(Kit):
    kind = "router"
    remote_sides = ("tx",)

    def prim(self, loop):
        return P.Router(loop=loop)

    def local_rx(self, prim):
        return Rx(prim, unwrap=lambda pair: pair[1])


class GatherKit(Kit):
    kind = "gather"
    remote_sides = ("tx",)

    def prim(self, loop):
        return P.Gather(loop=loop)

    def local_tx(self, prim):
        return prim.source()

    def local_rx(self, prim):
        return Rx(prim, unwrap=lambda items: items[0])


KITS = [PipeKit(), QueueKit(), ChannelKit(), DealerKit(), RouterKit(), GatherKit()]


def cases():
    for kit in KITS:
        yield pytest.param(kit, "local", None, id=f"{kit.kind}-local")
        for where in ("mempipe", "socket"):
            for side in kit.remote_sides:
                yield pytest.param(kit, where, side, id=f"{kit.kind}-{where}-remote-{side}")


CASES = list(cases())


@pytest.mark.parametrize("kit,where,remote", CASES)
def test_items_arrive_in_order(vloop, kit, where, remote):
    tx, rx, prim = kit.make(vloop, where, remote)

    async def producer() -> None:
        for i in range(5):
            await tx.send(b"%d" % i)

    async def main() -> list[bytes]:
        async with TaskGroup() as tg:
            tg.create_task(producer())
            return [await rx.recv() for _ in range(5)]

    assert run_until_complete(vloop, main()) == [b"%d" % i for i in range(5)]


@pytest.mark.parametrize("kit,where,remote", CASES)
def test_case1_exception_on_the_send_side(vloop, kit, where, remote):
    tx, rx, prim = kit.make(vloop, where, remote)

    async def producer() -> None:
        await tx.send(b"before")
        tx.close(ValueError("the producer broke"))

    async def main() -> BaseException:
        async with TaskGroup() as tg:
            tg.create_task(producer())
            assert await rx.recv() == b"before"
            with pytest.raises((ChannelFailed, EndOfChannel)) as info:
                await rx.recv()
        return info.value

    exc = run_until_complete(vloop, main())
    if kit.kind == "router":
        # One sender failing is that sender's business; the Router ends
        # when its last sender is gone.
        assert isinstance(exc, EndOfChannel)
    else:
        cause_of(exc, ValueError, where)


@pytest.mark.parametrize("kit,where,remote", CASES)
def test_case2_exception_on_the_receive_side(vloop, kit, where, remote):
    tx, rx, prim = kit.make(vloop, where, remote)

    async def main() -> BaseException:
        rx.close_recv(KeyError("the consumer broke"))
        await settle()
        with pytest.raises(ChannelFailed) as info:
            for _ in range(kit.buffered + 3):
                await tx.send(b"x")
        return info.value

    exc = run_until_complete(vloop, main())
    cause_of(exc, KeyError, where)


@pytest.mark.parametrize("kit,where,remote", CASES)
def test_case3_the_pipe_stops_in_order(vloop, kit, where, remote):
    tx, rx, prim = kit.make(vloop, where, remote)

    async def producer() -> None:
        await tx.send(b"last")
        getattr(tx, "close_send", tx.close)()

    async def main() -> None:
        async with TaskGroup() as tg:
            tg.create_task(producer())
            assert await rx.recv() == b"last"
            with pytest.raises(EndOfChannel):
                await rx.recv()

    run_until_complete(vloop, main())


@pytest.mark.parametrize("kit,where,remote", CASES)
def test_case3_the_receiving_side_stops_in_order(vloop, kit, where, remote):
    tx, rx, prim = kit.make(vloop, where, remote)

    async def main() -> None:
        rx.close_recv()
        await settle()
        with pytest.raises(BrokenChannelError):
            for _ in range(kit.buffered + 3):
                await tx.send(b"x")

    run_until_complete(vloop, main())


@pytest.mark.parametrize("kit,where,remote", CASES)
def test_case4_a_cancelled_recv_takes_nothing(vloop, kit, where, remote):
    tx, rx, prim = kit.make(vloop, where, remote)

    async def main() -> bytes:
        with move_on_after(1) as scope:
            await rx.recv()
        assert scope.cancelled_caught
        async with TaskGroup() as tg:
            tg.create_task(tx.send(b"kept"))
            return await rx.recv()  # type: ignore[no-any-return]

    assert run_until_complete(vloop, main()) == b"kept"


@pytest.mark.parametrize("kit,where,remote", CASES)
def test_case4_a_cancelled_send_delivers_nothing(vloop, kit, where, remote):
    if kit.buffered:
        pytest.skip("a buffered send completes at once")
    tx, rx, prim = kit.make(vloop, where, remote)

    async def main() -> None:
        with move_on_after(1) as scope:
            await tx.send(b"withdrawn")
        assert scope.cancelled_caught
        with pytest.raises(DeadlineExceeded):
            await rx.recv(timeout=5)

    run_until_complete(vloop, main())


@pytest.mark.parametrize("kit,where,remote", CASES)
def test_case4_a_third_party_closes_it(vloop, kit, where, remote):
    tx, rx, prim = kit.make(vloop, where, remote)
    if remote == "tx":
        pytest.skip("a remote sender is stopped by closing the primitive's receiving side")

    async def blocked() -> None:
        with pytest.raises(ChannelFailed) as info:
            await rx.recv()
        assert isinstance(info.value.cause, (OSError, RemoteError))

    async def main() -> None:
        async with TaskGroup() as tg:
            tg.create_task(blocked())
            await settle()
            prim.close(OSError("stopped by the supervisor"))

    run_until_complete(vloop, main())


@pytest.mark.parametrize("kit,where,remote", CASES)
def test_case5_the_world_stops(kit, where, remote):
    loop = evloop.Loop(clock=evloop.testing.VirtualClock())
    tx, rx, prim = kit.make(loop, where, remote)
    log: list[str] = []

    async def receiver() -> None:
        try:
            await rx.recv()
            await rx.recv()
        finally:
            log.append("receiver done")

    async def sender() -> None:
        try:
            await tx.send(b"one")
            await evloop.Future(loop)  # and then never anything again
        finally:
            log.append("sender done")

    t1 = tasks.create_task(loop, receiver())
    t2 = tasks.create_task(loop, sender())
    loop.run_until(lambda: False, timeout=0.05)
    loop.close()  # must not hang
    assert t1.done() and t2.done()
    assert sorted(log) == ["receiver done", "sender done"]
    coro = tx.send(b"after")
    with pytest.raises((ChannelFailed, ClosedChannelError, BrokenChannelError, LoopClosedError)):
        coro.send(None)
    coro.close()


# -- Router: replies ----------------------------------------------------------------------


@pytest.mark.parametrize("where", WHERES)
def test_router_routes_replies_back_to_each_sender(vloop, where):
    router = P.Router(loop=vloop)
    if where == "local":
        clients = [router.sender() for _ in range(3)]
    else:
        clients = []
        for _ in range(3):
            a, b = endpoints(vloop, where)
            router.attach(a, 9)
            clients.append(P.remote(b, 9))

    async def client(i: int, c: Any) -> bytes:
        await c.send(b"%d" % i)
        return await c.recv()  # type: ignore[no-any-return]

    async def server() -> None:
        for _ in range(3):
            origin, item = await router.recv()
            await router.reply(origin, b"re:" + item)

    async def main() -> list[bytes]:
        async with TaskGroup() as tg:
            ts = [tg.create_task(client(i, c)) for i, c in enumerate(clients)]
            tg.create_task(server())
        return [t.result() for t in ts]

    assert run_until_complete(vloop, main()) == [b"re:0", b"re:1", b"re:2"]


@pytest.mark.parametrize("where", WHERES)
def test_an_unroutable_reply_is_an_error_never_a_drop(vloop, where):
    router = P.Router(loop=vloop)
    if where == "local":
        c = router.sender()
        gone = c.close
    else:
        a, b = endpoints(vloop, where)
        router.attach(a, 9)
        c = P.remote(b, 9)
        gone = b.abort  # the peer's endpoint dies

    async def main() -> None:
        sent = tasks.create_task(vloop, c.send(b"q"))
        origin, _ = await router.recv()
        await sent
        gone()
        await settle()
        with pytest.raises(Unroutable) as info:
            await router.reply(origin, b"too late")
        assert info.value.origin is origin
        with pytest.raises(Unroutable):
            await router.reply("not a sender", b"x")

    run_until_complete(vloop, main())
    assert router.unroutable == 2


def test_router_send_must_go_through_an_end(vloop):
    async def main() -> None:
        await P.Router(loop=vloop).send(b"x")

    with pytest.raises(TypeError):
        run_until_complete(vloop, main())


# -- Dealer: round-robin over ready receivers -----------------------------------------------


@pytest.mark.parametrize("where", WHERES)
def test_dealer_deals_round_robin_to_ready_receivers(vloop, where):
    dealer = P.Dealer(loop=vloop)
    if where == "local":
        rxs = [dealer.receiver() for _ in range(3)]
    else:
        rxs = []
        for _ in range(3):
            a, b = endpoints(vloop, where)
            dealer.attach(a, 2)
            rxs.append(P.remote(b, 2))
    got: list[tuple[int, bytes]] = []

    async def worker(i: int, r: Any) -> None:
        async for item in r:
            got.append((i, item))

    async def main() -> None:
        async with TaskGroup() as tg:
            for i, r in enumerate(rxs):
                tg.create_task(worker(i, r))
            await settle()
            for n in range(9):
                await dealer.send(b"%d" % n)
            dealer.close_send()

    run_until_complete(vloop, main())
    counts = [sum(1 for i, _ in got if i == w) for w in range(3)]
    if where == "local":
        # In one process a receiver that just got an item is ready again
        # before the others have run: each still gets a share.
        assert min(counts) >= 1 and sum(counts) == 9, got
    else:
        assert counts == [3, 3, 3], got
    assert sorted(item for _, item in got) == sorted(b"%d" % n for n in range(9))


def test_dealer_reoffers_an_item_whose_remote_receiver_died(vloop):
    dealer = P.Dealer(loop=vloop)
    a1, b1 = endpoints(vloop, "socket")
    a2, b2 = endpoints(vloop, "socket")
    dealer.attach(a1, 2)
    dealer.attach(a2, 2)
    dying, alive = P.remote(b1, 2), P.remote(b2, 2)

    async def main() -> bytes:
        async with TaskGroup() as tg:
            t = tg.create_task(dying.recv())  # its credit reaches the dealer
            await settle()
            b1.conn.pause_reading()  # the item will never be read there
            send = tg.create_task(dealer.send(b"precious"))
            await settle()
            assert not send.done()  # strict: no ack yet
            t.cancel()
            b1.abort()  # the receiver's process dies with the item in flight
            got = await alive.recv()
        return got  # type: ignore[no-any-return]

    assert run_until_complete(vloop, main()) == b"precious"


# -- the one-to-many family ------------------------------------------------------------------------


def subscriber(loop: evloop.Loop, prim: Any, where: str) -> Any:
    if where == "local":
        return prim.subscribe()
    a, b = endpoints(loop, where)
    prim.attach(a, 4)
    return P.remote(b, 4)


@pytest.mark.parametrize("where", WHERES)
def test_broadcast_gives_to_ready_subscribers_and_counts_the_rest(vloop, where):
    bc = P.Broadcast(loop=vloop)
    ready = subscriber(vloop, bc, where)
    idle = bc.subscribe()

    async def main() -> tuple[int, bytes]:
        async with TaskGroup() as tg:
            t = tg.create_task(ready.recv())
            await settle()
            n = await bc.send(b"news")
        return n, t.result()

    assert run_until_complete(vloop, main()) == (1, b"news")
    assert idle.missed == 1 and bc.statistics().missed == 1


@pytest.mark.parametrize("where", WHERES)
def test_broadcast_five_cases(vloop, where):
    bc = P.Broadcast(loop=vloop)
    sub = subscriber(vloop, bc, where)

    async def main() -> None:
        # 4: a cancelled recv misses nothing it did not wait for.
        with move_on_after(1):
            await sub.recv()
        # 2: a subscriber failing only removes it; sends go on.
        other = bc.subscribe()
        other.close(KeyError("subscriber broke"))
        assert await bc.send(b"x") in (0, 1)
        # 1 and 3: the sender closing ends every subscriber's stream.
        async with TaskGroup() as tg:
            t = tg.create_task(sub.recv())
            await settle()
            await bc.send(b"y")
            await t
            bc.close_send(ValueError("sender broke"))
            with pytest.raises(ChannelFailed) as info:
                await sub.recv()
        cause_of(info.value, ValueError, where)

    run_until_complete(vloop, main())


@pytest.mark.parametrize("where", WHERES)
def test_tee_waits_for_every_subscriber(vloop, where):
    tee = P.Tee(loop=vloop)
    s1 = subscriber(vloop, tee, where)
    s2 = tee.subscribe()

    async def main() -> list[Any]:
        async with TaskGroup() as tg:
            send = tg.create_task(tee.send(b"all"))
            r1 = tg.create_task(s1.recv())
            await settle()
            assert not send.done()  # s2 is not ready yet
            r2 = tg.create_task(s2.recv())
        return [r1.result(), r2.result()]

    assert run_until_complete(vloop, main()) == [b"all", b"all"]


@pytest.mark.parametrize("where", WHERES)
def test_tee_five_cases(vloop, where):
    tee = P.Tee(loop=vloop)
    s1 = subscriber(vloop, tee, where)
    s2 = tee.subscribe()

    async def main() -> None:
        # 4: a cancelled send delivers to nobody.
        with move_on_after(1):
            await tee.send(b"withdrawn")

        # 2: a subscriber failing fails the waiting send.
        async def failing_send() -> None:
            with pytest.raises(ChannelFailed):
                await tee.send(b"x")

        async with TaskGroup() as tg:
            tg.create_task(failing_send())
            await settle()
            s2.close(KeyError("subscriber broke"))
        # 1/3: the sender closes: subscribers see the end.
        tee.close_send()
        with pytest.raises(EndOfChannel):
            await s1.recv()

    run_until_complete(vloop, main())


@pytest.mark.parametrize("where", WHERES)
def test_value_new_subscribers_get_the_latest_and_updates_are_broadcast(vloop, where):
    v = P.Value(b"v1", loop=vloop)
    s = subscriber(vloop, v, where)

    async def main() -> list[bytes]:
        out = [await s.recv()]
        v.set(b"v2")
        out.append(await s.recv())
        with pytest.raises(DeadlineExceeded):
            await s.recv(timeout=1)  # nothing newer
        v.set(b"v3")
        v.close_send(ValueError("source broke"))
        out.append(await s.recv())  # the last value first, then the failure
        with pytest.raises(ChannelFailed) as info:
            await s.recv()
        cause_of(info.value, ValueError, where)
        return out

    assert run_until_complete(vloop, main()) == [b"v1", b"v2", b"v3"]
    assert v.get() == b"v3"


@pytest.mark.parametrize("where", WHERES)
def test_state_is_always_ready_while_set(vloop, where):
    st = P.State(loop=vloop)
    s = subscriber(vloop, st, where)

    async def main() -> list[bytes]:
        with pytest.raises(DeadlineExceeded):
            await s.recv(timeout=1)  # cleared: waits
        st.set(b"on")
        await settle()
        out = [await s.recv(), await s.recv()]  # at once, every time
        st.clear()
        await settle()
        async with TaskGroup() as tg:
            t = tg.create_task(s.recv())
            await settle()
            assert not t.done()
            st.set(b"again")
        out.append(t.result())
        st.close()
        await settle()
        with pytest.raises(EndOfChannel):
            await s.recv()
        return out

    assert run_until_complete(vloop, main()) == [b"on", b"on", b"again"]


def test_value_and_state_world_stop():
    loop = evloop.Loop(clock=evloop.testing.VirtualClock())
    v = P.Value(loop=loop)
    st = P.State(loop=loop)
    subs = [v.subscribe(), st.subscribe()]
    ts = [tasks.create_task(loop, s.recv()) for s in subs]
    loop.run_until(lambda: False, timeout=0.01)
    loop.close()
    assert all(t.done() for t in ts)
    with pytest.raises(ChannelFailed):
        v.set(1)


# -- Gather -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("where", WHERES)
def test_gather_waits_for_every_source(vloop, where):
    g = P.Gather(loop=vloop)
    local = g.source()
    if where == "local":
        far = g.source()
    else:
        a, b = endpoints(vloop, where)
        g.attach(a, 7)
        far = P.remote(b, 7)

    async def main() -> list[Any]:
        async with TaskGroup() as tg:
            r = tg.create_task(g.recv())
            tg.create_task(local.send(b"l"))
            await settle()
            assert not r.done()
            tg.create_task(far.send(b"f"))
        return r.result()  # type: ignore[no-any-return]

    assert run_until_complete(vloop, main()) == [b"l", b"f"]


# -- select and the selectable API ------------------------------------------------------------------------------


def test_select_takes_exactly_one(vloop):
    a, b = P.Channel(loop=vloop), P.Channel(loop=vloop)

    async def main() -> None:
        with pytest.raises(WouldBlock):
            await P.select(a, b, timeout=0)
        async with TaskGroup() as tg:
            tg.create_task(b.send(b"from b"))
            tg.create_task(a.send(b"from a"))
            case, value = await P.select(a, b)
            assert (case, value) in ((a, b"from a"), (b, b"from b"))
            other = b if case is a else a
            assert await other.recv() in (b"from a", b"from b")

    run_until_complete(vloop, main())


def test_select_with_send_cases_and_timeout(vloop):
    full = P.Queue(1, loop=vloop)
    out = P.Channel(loop=vloop)

    async def main() -> None:
        await full.send(b"x")
        with pytest.raises(DeadlineExceeded):
            await P.select((full, b"y"), (out, b"z"), timeout=3)
        assert vloop.time() == 3
        async with TaskGroup() as tg:
            r = tg.create_task(out.recv())
            case, value = await P.select((full, b"y"), (out, b"z"))
        assert case == (out, b"z") and value is None and r.result() == b"z"
        assert await full.recv() == b"x"
        with pytest.raises(WouldBlock):
            await full.recv(timeout=0)  # the losing send was dequeued

    run_until_complete(vloop, main())


@pytest.mark.parametrize("where", ["mempipe", "socket"])
def test_select_over_remote_ends(vloop, where):
    q1, q2 = P.Queue(4, loop=vloop), P.Queue(4, loop=vloop)
    a1, b1 = endpoints(vloop, where)
    a2, b2 = endpoints(vloop, where)
    q1.attach(a1, 1, role="receiver")
    q2.attach(a2, 1, role="receiver")
    r1, r2 = P.remote(b1, 1), P.remote(b2, 1)

    async def main() -> list[Any]:
        await q2.send(b"two")
        case, value = await P.select(r1, r2)
        assert case is r2
        await q1.send(b"one")
        return [value, await r1.recv()]

    assert run_until_complete(vloop, main()) == [b"two", b"one"]


# -- the actions ----------------------------------------------------------------------------------------------------


def test_pipe_map_filter_consume(vloop):
    src = P.Queue(8, loop=vloop)
    got: list[int] = []

    async def main() -> int:
        async with TaskGroup() as tg:
            evens = P.filter(src, lambda x: x % 2 == 0, group=tg)
            out = P.pipe(evens, lambda x: x * 10, group=tg)
            done = P.consume(out, got.append, group=tg)
            for i in range(6):
                await P.send(src, i)
            src.close_send()
        return done.result()

    assert run_until_complete(vloop, main()) == 3
    assert got == [0, 20, 40]


def test_a_failing_stage_fails_both_directions(vloop):
    src = P.Queue(4, loop=vloop)

    def boom(x: int) -> int:
        if x == 2:
            raise ValueError("bad item")
        return x

    async def main() -> list[Any]:
        out = P.map(src, boom)
        seen = []
        await src.send(1)
        seen.append(await out.recv())
        await src.send(2)
        with pytest.raises(ChannelFailed) as down:
            await out.recv()  # downstream sees the stage's error
        seen.append(type(down.value.cause))
        await tasks.sleep(0)
        with pytest.raises(ChannelFailed) as up:
            for _ in range(6):
                await src.send(3)  # upstream senders see it too
        seen.append(type(up.value.cause))
        return seen

    assert run_until_complete(vloop, main()) == [1, ValueError, ValueError]


def test_connect_carries_the_end_and_upstream_stops(vloop):
    a, b = P.Channel(loop=vloop), P.Channel(2, loop=vloop)

    async def main() -> None:
        P.connect(a, b)
        await a.send(b"1")
        assert await b.recv() == b"1"
        b.close_recv()
        await tasks.sleep(0)
        with pytest.raises(BrokenChannelError):
            for _ in range(4):
                await a.send(b"2")  # the stop travelled upstream

    run_until_complete(vloop, main())


def test_cross_process_items_are_bytes_unless_a_codec_is_chosen(vloop):
    q = P.Queue(2, loop=vloop)
    a, b = endpoints(vloop, "mempipe")
    q.attach(a, 1, role="sender")
    far = P.remote(b, 1)
    j = P.Queue(2, loop=vloop)
    c, d = endpoints(vloop, "mempipe")
    j.attach(c, 1, role="sender", codec="json")
    farj = P.remote(d, 1, codec="json")

    async def main() -> list[Any]:
        with pytest.raises(TypeError):
            await far.send({"not": "bytes"})
        await farj.send({"now": ["it", "is", 1]})
        return [await j.recv()]

    assert run_until_complete(vloop, main()) == [{"now": ["it", "is", 1]}]


def test_a_bad_frame_fails_the_link(vloop):
    q = P.Queue(2, loop=vloop)
    a, b = endpoints(vloop, "mempipe")
    q.attach(a, 1, role="receiver")

    async def main() -> None:
        b.write_frame(1, b"Z garbage")
        await settle()
        with pytest.raises(ChannelFailed) as info:
            for _ in range(4):
                await q.send(b"x")
        assert isinstance(info.value.cause, evloop.errors.LinkProtocolError)

    run_until_complete(vloop, main())
