# evloop/patterns/actions.py
#
# vanilla's actions on primitives: send, recv, connect, pipe, map, filter,
# consume. The stages (connect, map, filter, consume) are tasks that move
# items from a source to a target and carry every way of stopping along:
#
#   * the source ends (EndOfChannel): the target's sending side is closed in
#     order, so the end travels downstream;
#   * the source fails (ChannelFailed), or the stage's own function raises:
#     the target is closed with that error (downstream receivers get
#     ChannelFailed after what was sent before), and the source's receiving
#     side too (upstream senders get ChannelFailed): an exception never
#     stops half a pipeline silently;
#   * the target stops receiving (BrokenChannelError): the source's
#     receiving side is closed, so the stop travels upstream;
#   * the stage is cancelled (something else wants it to stop): both
#     neighbours are closed with the CancelledError as the cause, then the
#     cancellation propagates.
# A stage started inside a TaskGroup (`group=tg`) belongs to it; without
# one it is a parentless task on the source's loop.
from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from ..errors import (
    BrokenChannelError,
    CancelledError,
    ChannelFailed,
    EndOfChannel,
)
from ..tasks import Task, TaskGroup, create_task
from .primitives import Channel

__all__ = ["send", "recv", "connect", "pipe", "map", "filter", "consume"]


async def send(target: Any, item: Any, timeout: float | None = None) -> Any:
    """target.send(item): a primitive, a sender end or a remote end."""
    return await target.send(item, timeout)


async def recv(source: Any, timeout: float | None = None) -> Any:
    """source.recv(): a primitive, a receiver end or a remote end."""
    return await source.recv(timeout)


def _close_send(target: Any, exc: BaseException | None) -> None:
    fn = getattr(target, "close_send", None)
    if fn is None:
        fn = target.close
    fn(exc)


def _close_recv(source: Any, exc: BaseException | None) -> None:
    fn = getattr(source, "close_recv", None)
    if fn is None:
        fn = source.close
    fn(exc)


async def _call(fn: Callable[[Any], Any], item: Any) -> Any:
    out = fn(item)
    if inspect.isawaitable(out):
        out = await out
    return out


async def _stage(
    source: Any,
    target: Any,
    fn: Callable[[Any], Any] | None,
    pred: Callable[[Any], Any] | None,
) -> None:
    try:
        while True:
            try:
                item = await source.recv()
            except EndOfChannel:
                _close_send(target, None)
                return
            except ChannelFailed as exc:
                _close_send(target, exc.cause or exc)
                return
            try:
                if pred is not None and not await _call(pred, item):
                    continue
                if fn is not None:
                    item = await _call(fn, item)
            except Exception as exc:
                _close_send(target, exc)
                _close_recv(source, exc)
                return
            try:
                await target.send(item)
            except BrokenChannelError:
                _close_recv(source, None)
                return
            except ChannelFailed as exc:
                _close_recv(source, exc.cause or exc)
                return
    except CancelledError as exc:
        _close_send(target, exc)
        _close_recv(source, exc)
        raise


def _start(source: Any, coro: Any, group: TaskGroup | None) -> Task[Any]:
    if group is not None:
        return group.create_task(coro)
    return create_task(source.loop, coro)


def connect(source: Any, target: Any, *, group: TaskGroup | None = None) -> Task[Any]:
    """Forward every item of `source` to `target` until one of them stops
    (see the module header). Returns the stage's task."""
    return _start(source, _stage(source, target, None, None), group)


def map(
    source: Any,
    fn: Callable[[Any], Any],
    *,
    size: int = 0,
    group: TaskGroup | None = None,
) -> Channel:
    """A new Channel(size) carrying fn(item) for each item of source (fn may
    be a coroutine function). fn raising fails the stream both ways."""
    out = Channel(size, loop=source.loop, name="map")
    _start(source, _stage(source, out, fn, None), group)
    return out


def filter(
    source: Any,
    pred: Callable[[Any], Any],
    *,
    size: int = 0,
    group: TaskGroup | None = None,
) -> Channel:
    """A new Channel(size) carrying the items of source for which pred(item)
    is true."""
    out = Channel(size, loop=source.loop, name="filter")
    _start(source, _stage(source, out, None, pred), group)
    return out


def pipe(source: Any, *stages: Any, group: TaskGroup | None = None) -> Any:
    """Chain stages after source: a callable becomes map(fn); anything with
    send() is connected to. Returns the last stage, to receive from."""
    cur = source
    for st in stages:
        if hasattr(st, "send") and hasattr(st, "recv"):
            connect(cur, st, group=group)
            cur = st
        elif callable(st):
            cur = map(cur, st, group=group)
        else:
            raise TypeError(f"a pipe stage is a primitive or a function, not {st!r}")
    return cur


async def _consume(source: Any, fn: Callable[[Any], Any]) -> int:
    n = 0
    while True:
        try:
            item = await source.recv()
        except EndOfChannel:
            return n
        try:
            await _call(fn, item)
        except BaseException as exc:
            _close_recv(source, exc if isinstance(exc, Exception) else None)
            raise
        n += 1


def consume(source: Any, fn: Callable[[Any], Any], *, group: TaskGroup | None = None) -> Task[int]:
    """Call fn(item) for every item of source until it ends; the task's
    result is the count. fn raising closes the source's receiving side with
    the error (upstream senders see ChannelFailed) and fails the task;
    ChannelFailed from the source fails the task."""
    return _start(source, _consume(source, fn), group)
