from __future__ import annotations

import logging
import os
import signal
import socket
import threading

import pytest

import evloop
from tests.conftest import open_fds


def test_timers_fire_in_time_order_fifo_for_ties(loop):
    order = []
    now = loop.time()
    loop.call_at(now + 0.03, order.append, "c")
    loop.call_at(now + 0.01, order.append, "a1")
    loop.call_at(now + 0.01, order.append, "a2")
    loop.call_later(0.02, order.append, "b")
    loop.call_soon(order.append, "soon")
    assert loop.run_until(lambda: len(order) == 5, timeout=5)
    assert order == ["soon", "a1", "a2", "b", "c"]


def test_timer_never_fires_early(loop):
    fired = []
    t0 = loop.time()
    loop.call_later(0.05, lambda: fired.append(loop.time()))
    assert loop.run_until(lambda: fired, timeout=5)
    assert fired[0] - t0 >= 0.05


def test_cancelled_timers_do_not_run_and_are_purged(loop):
    ran = []
    handles = [loop.call_later(10 + i, ran.append, i) for i in range(1000)]
    keep = loop.call_later(0.01, ran.append, "kept")
    for h in handles:
        h.cancel()
    assert all(h.cancelled for h in handles)
    assert loop.statistics().timers == 1
    # The heap was rebuilt: cancelled entries do not pile up.
    assert len(loop._timers) < 100
    assert loop.run_until(lambda: ran, timeout=5)
    assert ran == ["kept"] and not keep.cancelled


def test_cancel_from_inside_a_callback(loop):
    ran = []
    later = loop.call_later(0.02, ran.append, "never")
    loop.call_soon(later.cancel)
    loop.call_later(0.05, ran.append, "done")
    assert loop.run_until(lambda: "done" in ran, timeout=5)
    assert ran == ["done"]


def test_call_soon_fifo_and_next_turn(loop):
    order = []

    def first():
        order.append(1)
        loop.call_soon(order.append, 3)  # runs in a later turn

    loop.call_soon(first)
    loop.call_soon(order.append, 2)
    assert loop.run_until(lambda: len(order) == 3, timeout=5)
    assert order == [1, 2, 3]


def test_threadsafe_wakeup_from_another_thread(loop):
    got = []
    started = threading.Event()

    def worker():
        started.wait(5)
        loop.call_soon_threadsafe(lambda: got.append(threading.get_ident()))

    t = threading.Thread(target=worker)
    t.start()
    loop.call_soon(started.set)
    # Nothing else is due for 5 s: only the eventfd can wake the loop.
    assert loop.run_until(lambda: got, timeout=5)
    t.join(5)
    assert got == [threading.get_ident()]  # ran on the loop's thread
    assert loop.statistics().iterations < 20


def test_idle_loop_does_not_spin(loop):
    fired = []
    loop.call_later(0.2, fired.append, 1)
    before = loop.statistics().iterations
    assert loop.run_until(lambda: fired, timeout=5)
    assert loop.statistics().iterations - before <= 5


def test_signal_handler_runs_on_the_loop(loop):
    got = []
    loop.add_signal_handler(signal.SIGUSR1, lambda tag: got.append((tag, loop.running)), "usr1")
    os.kill(os.getpid(), signal.SIGUSR1)
    assert loop.run_until(lambda: got, timeout=5)
    assert got == [("usr1", True)]
    assert loop.remove_signal_handler(signal.SIGUSR1)
    assert signal.getsignal(signal.SIGUSR1) is signal.SIG_DFL


def test_signal_handler_rejects_uncatchable(loop):
    with pytest.raises(ValueError, match="cannot be caught"):
        loop.add_signal_handler(signal.SIGKILL, print)


def test_sigpipe_is_ignored_write_to_closed_peer_is_an_error(loop):
    assert signal.getsignal(signal.SIGPIPE) is signal.SIG_IGN
    a, b = socket.socketpair()
    b.close()
    conn = evloop.Conn(loop, a)
    closed = []
    conn.on_close = closed.append
    conn.write(b"x" * 100)
    assert loop.run_until(lambda: closed, timeout=5)
    assert isinstance(closed[0], (BrokenPipeError, ConnectionResetError))


def test_callback_exception_is_logged_with_its_name_and_loop_goes_on(caplog):
    ran = []

    def boom():
        raise RuntimeError("kaboom")

    with evloop.Loop() as lp, caplog.at_level(logging.ERROR, logger="evloop"):
        lp.call_soon(boom)
        lp.call_soon(ran.append, "after")
        assert lp.run_until(lambda: ran, timeout=5)
    assert ran == ["after"]
    assert "boom" in caplog.text and "kaboom" in caplog.text


def test_exception_handler_receives_the_callback(loop):
    def boom():
        raise ValueError("x")

    loop.call_soon(boom)
    loop.run_until(lambda: loop.errors, timeout=5)
    exc = loop.errors.claim(ValueError)
    assert str(exc) == "x"


def test_keyboard_interrupt_propagates(loop):
    def interrupt():
        raise KeyboardInterrupt

    loop.call_soon(interrupt)
    with pytest.raises(KeyboardInterrupt):
        loop.run()
    # The loop is still usable afterwards.
    ran = []
    loop.call_soon(ran.append, 1)
    assert loop.run_until(lambda: ran, timeout=5)


def test_debug_reports_slow_callbacks(caplog):
    import time

    def slow():
        t = time.monotonic() + 0.02
        while time.monotonic() < t:  # busy on purpose: the thing to report
            pass

    with evloop.Loop(debug=True, slow_callback=0.01) as lp, caplog.at_level(logging.WARNING):
        lp.call_soon(slow)
        lp.call_soon(lp.stop)
        lp.run()
    assert "slow callback" in caplog.text and "slow" in caplog.text


def test_run_until_timeout_and_stop(loop):
    assert loop.run_until(lambda: False, timeout=0.05) is False
    loop.call_later(0.01, loop.stop)
    loop.run()  # returns because of stop()
    nested = []

    def try_nested_run():
        try:
            loop.run()
        except evloop.LoopRunningError as exc:
            nested.append(exc)

    loop.call_soon(try_nested_run)
    assert loop.run_until(lambda: nested, timeout=5)
    with pytest.raises(evloop.LoopRunningError):
        loop.call_soon(loop.close)
        loop.run_until(lambda: False, timeout=0.05)
        raise loop.errors.claim(evloop.LoopRunningError)


def test_statistics_counts(loop):
    r, w = os.pipe()
    try:
        loop.register(r, evloop.EVENT_READ, lambda mask: None)
        loop.call_later(5, print)
        loop.call_soon(print)
        st = loop.statistics()
        assert (st.fds, st.timers, st.ready) == (1, 1, 1)
        loop.unregister(r)
        assert loop.statistics().fds == 0
    finally:
        os.close(r)
        os.close(w)


def test_register_modify_unregister(loop):
    a, b = socket.socketpair()
    seen = []
    try:
        loop.register(a.fileno(), evloop.EVENT_WRITE, seen.append)
        assert loop.run_until(lambda: seen, timeout=5)
        assert seen[0] & evloop.EVENT_WRITE
        seen.clear()
        loop.modify(a.fileno(), evloop.EVENT_READ)
        b.send(b"x")
        assert loop.run_until(lambda: seen, timeout=5)
        assert seen[0] & evloop.EVENT_READ
        with pytest.raises(ValueError, match="already registered"):
            loop.register(a.fileno(), evloop.EVENT_READ, seen.append)
        loop.unregister(a.fileno())
        loop.unregister(a.fileno())  # idempotent
    finally:
        a.close()
        b.close()


def test_fd_closed_behind_the_loops_back_with_a_live_dup(loop):
    # epoll watches descriptions, not numbers: with a dup alive, closing the
    # registered number leaves an entry we can no longer remove by number.
    a, b = socket.socketpair()
    dup = os.dup(a.fileno())
    try:
        fd = a.fileno()
        loop.register(fd, evloop.EVENT_READ, lambda mask: None)
        a.close()
        loop.unregister(fd)  # EBADF inside: tolerated
        b.send(b"wake")  # the description is readable, forever
        ticks = []
        loop.call_later(0.1, ticks.append, 1)
        before = loop.statistics().iterations
        assert loop.run_until(lambda: ticks, timeout=5)
        assert loop.statistics().epoll_rebuilds == 1
        assert loop.statistics().iterations - before < 10  # no busy loop
    finally:
        os.close(dup)
        b.close()


def test_conn_whose_fd_was_closed_behind_its_back_reports_an_error(loop):
    a, b = socket.socketpair()
    conn = evloop.Conn(loop, a)
    closed = []
    conn.on_close = closed.append
    os.close(a.fileno())  # behind the Conn's back
    a.detach()
    conn.write(b"x")
    assert loop.run_until(lambda: closed, timeout=5)
    assert isinstance(closed[0], OSError)
    b.close()


def test_close_releases_every_fd_and_timer():
    before = open_fds()
    lp = evloop.Loop()
    lp.add_signal_handler(signal.SIGUSR2, print)
    a, b = evloop.conn_pair(lp)
    server = evloop.listen_tcp(lp, "127.0.0.1", 0, lambda c: None)
    h = lp.call_later(100, print)
    assert len(open_fds()) > len(before)
    lp.close()
    lp.close()  # idempotent
    assert open_fds().keys() == before.keys()
    assert a.closed and b.closed and server.closed and a.fd == -1
    assert lp.closed and lp.statistics().timers == 0
    h.cancel()
    assert signal.getsignal(signal.SIGUSR2) is signal.SIG_DFL
    with pytest.raises(evloop.LoopClosedError):
        lp.call_soon(print)
    with pytest.raises(evloop.LoopClosedError):
        lp.run()


def test_context_manager_closes():
    with evloop.Loop() as lp:
        assert not lp.closed
    assert lp.closed


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="budget"):
        evloop.Loop(budget=0)
    with pytest.raises(ValueError, match="time_budget"):
        evloop.Loop(time_budget=0)


def test_stop_before_run_still_runs_one_turn(loop):
    ran = []
    loop.call_soon(ran.append, 1)
    loop.stop()
    loop.run()  # returns after one turn instead of forgetting the stop()
    assert ran == [1]
    loop.stop()
    assert loop.run_until(lambda: False, timeout=5) is False


@pytest.mark.parametrize("when", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_times_are_refused(loop, when):
    with pytest.raises(ValueError, match="finite"):
        loop.call_at(when, print)
    with pytest.raises(ValueError, match="finite"):
        loop.call_later(when, print)
    assert loop.statistics().timers == 0


def test_non_callables_are_refused_up_front(loop):
    r, w = os.pipe()
    try:
        for schedule in (loop.call_soon, loop.call_soon_threadsafe):
            with pytest.raises(TypeError, match="callable"):
                schedule(None)
        with pytest.raises(TypeError, match="callable"):
            loop.call_later(1, "not a function")
        with pytest.raises(TypeError, match="callable"):
            loop.register(r, evloop.EVENT_READ, 42)
        assert not loop.is_registered(r)
    finally:
        os.close(r)
        os.close(w)


# -- regression tests: issue 9 defects 3, 4 and 9 -------------------------------


@pytest.mark.parametrize("days", [25, 30, 365 * 100])
def test_a_timer_weeks_away_does_not_kill_the_loop(loop, days):
    # Defect 3: a timer more than ~24.8 days away overflowed epoll_wait's
    # millisecond int once it was the next timer. The far timer is the only
    # one, so it sets the first poll's timeout; the input already waiting on
    # the socket makes that poll return at once.
    a, b = socket.socketpair()
    a.send(b"x")
    got = []
    loop.register(b.fileno(), evloop.EVENT_READ, lambda mask: got.append(b.recv(1)))
    far = loop.call_later(days * 86400, lambda: None)
    try:
        assert loop.run_until(lambda: got)
    finally:
        far.cancel()
        loop.unregister(b.fileno())
        a.close()
        b.close()


def test_run_until_with_a_timeout_of_a_month(loop):
    a, b = socket.socketpair()
    a.send(b"x")
    got = []
    loop.register(b.fileno(), evloop.EVENT_READ, lambda mask: got.append(b.recv(1)))
    try:
        assert loop.run_until(lambda: got, timeout=30 * 86400)
    finally:
        loop.unregister(b.fileno())
        a.close()
        b.close()
    assert loop.statistics().timers == 0  # the deadline timer is gone


def test_a_far_timer_fires_on_a_virtual_clock():
    from evloop.testing import VirtualClock

    clock = VirtualClock()
    with evloop.Loop(clock=clock) as lp:
        fired = []
        lp.call_later(40 * 86400, lambda: fired.append(lp.time()))
        assert lp.run_until(lambda: fired, timeout=50 * 86400)
        assert fired[0] >= 40 * 86400


def test_refused_reentrant_run_until_leaves_no_timer(loop):
    # Defect 9: the deadline timer was scheduled before the re-entry check.
    errors = []

    def inner():
        try:
            loop.run_until(lambda: False, timeout=100)
        except evloop.LoopRunningError as exc:
            errors.append(exc)

    loop.call_soon(inner)
    loop.run_until(lambda: errors, timeout=5)
    assert len(errors) == 1
    assert loop.statistics().timers == 0


def test_threadsafe_post_after_close_raises(loop):
    loop.close()
    with pytest.raises(evloop.LoopClosedError):
        loop.call_soon_threadsafe(print, "late")


def test_a_post_racing_close_never_writes_into_a_reused_fd(monkeypatch):
    # Defect 4: a post that passed the closed check, then lost the CPU while
    # close() released the eventfd and a socket took its number, wrote its
    # 8-byte wake-up into that socket. The interleaving is forced: the
    # poster's eventfd write waits until close() has finished (or, when
    # close() rightly waits for the poster, gives up after a deadline).
    lp = evloop.Loop()
    wake_fd = lp._wakeup_fd
    closed = threading.Event()
    entered = threading.Event()
    real_write = os.eventfd_write
    errors = []

    def slow_write(fd, value):
        entered.set()
        closed.wait(1.0)
        return real_write(fd, value)

    monkeypatch.setattr(os, "eventfd_write", slow_write)

    def poster():
        try:
            lp.call_soon_threadsafe(print, "raced")
        except evloop.LoopClosedError:
            pass
        except BaseException as exc:  # noqa: BLE001 - the test is that none escape
            errors.append(exc)

    t = threading.Thread(target=poster)
    t.start()
    assert entered.wait(10)  # the poster is about to write its wake-up
    lp.close()
    a, b = socket.socketpair()
    extra = None
    try:
        # A socket end takes the eventfd's old number, as in a busy process.
        if b.fileno() == wake_fd:
            a, b = b, a
        elif a.fileno() != wake_fd:
            extra = os.dup2(a.fileno(), wake_fd)
        closed.set()
        t.join(10)
        assert not errors
        b.setblocking(False)
        with pytest.raises(BlockingIOError):
            b.recv(64)  # nothing was written into the socket
    finally:
        if extra is not None:
            os.close(extra)
        a.close()
        b.close()


def _poster(lp, start, tag, ran, accepted, other):
    start.wait()
    for i in range(2000):
        try:
            lp.call_soon_threadsafe(ran.append, (tag, i))
        except evloop.LoopClosedError:
            return
        except BaseException as exc:  # noqa: BLE001 - the test is that none happen
            other.append(exc)
            return
        accepted.append((tag, i))


def test_threads_racing_close_lose_no_accepted_callback():
    # Every post either raises LoopClosedError or its callback runs (by the
    # loop, or by close()); nothing else escapes into the posting threads.
    for _round in range(20):
        lp = evloop.Loop()
        ran: list[tuple[int, int]] = []
        accepted: list[tuple[int, int]] = []
        other: list[BaseException] = []
        start = threading.Barrier(5)
        threads = [
            threading.Thread(target=_poster, args=(lp, start, t, ran, accepted, other))
            for t in range(4)
        ]
        for t in threads:
            t.start()
        start.wait()
        lp.run_until(lambda lp=lp, ran=ran: len(ran) > 100, timeout=5)
        lp.close()
        for t in threads:
            t.join(10)
        assert not other
        assert sorted(ran) == sorted(accepted)


def test_cancelling_a_timer_that_already_ran_changes_no_count(loop):
    ran = []
    h = loop.call_later(0, ran.append, 1)
    assert loop.run_until(lambda: ran, timeout=5)
    h.cancel()
    h.cancel()
    assert loop.statistics().timers == 0
    later = loop.call_later(100, ran.append, 2)
    assert loop.statistics().timers == 1
    later.cancel()
    assert loop.statistics().timers == 0
