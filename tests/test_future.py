from __future__ import annotations

import pytest

import evloop


def test_result_callbacks_in_order_and_late_callbacks_run_at_once(loop):
    f: evloop.Future[int] = evloop.Future(loop)
    seen: list[tuple[str, int]] = []
    f.add_done_callback(lambda fut: seen.append(("a", fut.result())))
    f.add_done_callback(lambda fut: seen.append(("b", fut.result())))
    with pytest.raises(evloop.InvalidStateError):
        f.result()
    f.set_result(7)
    f.add_done_callback(lambda fut: seen.append(("late", fut.result())))
    assert seen == [("a", 7), ("b", 7), ("late", 7)]
    with pytest.raises(evloop.InvalidStateError):
        f.set_result(8)
    assert not f.cancel() and f.result() == 7


def test_exception_and_cancel(loop):
    f: evloop.Future[int] = evloop.Future(loop)
    f.set_exception(ValueError("boom"))
    assert isinstance(f.exception(), ValueError)
    with pytest.raises(ValueError, match="boom"):
        f.result()
    g: evloop.Future[int] = evloop.Future(loop)
    assert g.cancel() and g.cancelled() and g.done()
    with pytest.raises(evloop.CancelledError):
        g.result()
    # Cancellation is not an Exception: `except Exception` cannot swallow it.
    assert not issubclass(evloop.CancelledError, Exception)


def test_a_raising_callback_goes_to_the_handler_and_the_rest_run(loop):
    f: evloop.Future[int] = evloop.Future(loop)
    seen: list[int] = []

    def bad(fut: evloop.Future[int]) -> None:
        raise RuntimeError("callback failed")

    f.add_done_callback(bad)
    f.add_done_callback(lambda fut: seen.append(fut.result()))
    f.set_result(1)
    assert seen == [1]
    loop.errors.claim(RuntimeError)


def test_remove_done_callback(loop):
    f: evloop.Future[None] = evloop.Future(loop)
    seen: list[str] = []

    def cb(fut: evloop.Future[None]) -> None:
        seen.append("cb")

    f.add_done_callback(cb)
    f.add_done_callback(cb)
    assert f.remove_done_callback(cb) == 2
    f.set_result(None)
    assert seen == []


def test_await_protocol_yields_itself_until_done(loop):
    f: evloop.Future[str] = evloop.Future(loop)
    gen = f.__await__()
    assert next(gen) is f
    f.set_result("x")
    with pytest.raises(StopIteration) as stop:
        next(gen)
    assert stop.value.value == "x"
