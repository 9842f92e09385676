# evloop/endpoint.py
#
# The frame endpoint: the interface everything above the frame layer is
# written against. A Pipe (frames on a Conn) implements it; so do the
# in-process pipe pair (mempipe.py) and a session's endpoint, so request/
# reply, vanilla's patterns and a service graph's ports run unchanged over a
# socket, inside one process, or over a reconnecting session.
#
# The contract, for every implementation:
#   * write_frame(chan, *parts) never blocks and never delivers synchronously:
#     the frame reaches the peer's on_frame from a later loop callback, in
#     the order written. It raises ValueError/TypeError for a bad frame before
#     anything is queued, ConnClosedError once the endpoint is closing, and
#     BufferFullError past its hard cap; nothing half-written ever reaches the
#     peer.
#   * on_frame(chan, payload) receives every frame, each payload an
#     independent bytes/bytearray the receiver owns. None means nobody is
#     listening yet: frames wait (and count against back-pressure).
#   * `writable` is False while the endpoint asks producers to hold back
#     (above its high watermark); when_writable(fn) calls fn() once, from a
#     fresh loop callback, when it is writable again or closed.
#   * pause_reading()/resume_reading() stop and restart delivery to on_frame
#     (back-pressure towards the peer).
#   * on_close(exc) fires exactly once, after the last frame was delivered:
#     exc is None for an orderly close, else the error that ended it.
#
# ChannelMux splits one endpoint's frames by channel, so several users can
# share it (user traffic on channel 0, RPC on the control channel, a
# pattern on another): a frame on a channel nobody routed is handed to
# `on_unrouted`, by default reported to the loop's exception handler as an
# UnroutableFrame, never dropped silently.
"""The frame endpoint interface (FrameEndpoint) shared by Pipes, in-process pipes and sessions, and ChannelMux. The comment that opens the source file gives the design and its invariants."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, Protocol, runtime_checkable

from .errors import UnroutableFrame
from .loop import Handle, Loop

__all__ = ["Buffer", "Payload", "FrameHandler", "FrameEndpoint", "ChannelMux"]

Buffer = bytes | bytearray | memoryview
Payload = bytes | bytearray
FrameHandler = Callable[[int, Payload], Any]


@runtime_checkable
class FrameEndpoint(Protocol):
    """What a Pipe, an in-process pipe end and a session endpoint share. See
    the module header for the contract."""

    @property
    def loop(self) -> Loop: ...

    @property
    def on_frame(self) -> FrameHandler | None: ...

    @on_frame.setter
    def on_frame(self, fn: FrameHandler | None) -> None: ...

    on_close: Callable[[BaseException | None], Any] | None

    def write_frame(self, chan: int, data: Buffer, *more: Buffer) -> None: ...

    def write_frames(self, frames: Iterable[tuple[int, Buffer]]) -> None: ...

    def flush(self) -> None: ...

    @property
    def writable(self) -> bool: ...

    def when_writable(self, fn: Callable[[], Any]) -> Handle: ...

    def pause_reading(self) -> None: ...

    def resume_reading(self) -> None: ...

    def close(self) -> None: ...

    def abort(self) -> None: ...

    @property
    def closed(self) -> bool: ...


class ChannelMux:
    """Route an endpoint's frames by channel: `route(chan, handler)` sends
    frames on `chan` to handler(chan, payload); `default` (if given) takes
    every channel without a route. Frames nobody takes go to
    on_unrouted(chan, payload), which by default reports an UnroutableFrame
    to the loop's exception handler. The mux installs itself as the
    endpoint's on_frame."""

    __slots__ = ("endpoint", "default", "on_unrouted", "_routes", "unrouted")

    def __init__(
        self,
        endpoint: FrameEndpoint,
        default: FrameHandler | None = None,
        *,
        on_unrouted: FrameHandler | None = None,
    ):
        self.endpoint = endpoint
        self.default = default
        self.on_unrouted = on_unrouted
        self._routes: dict[int, FrameHandler] = {}
        self.unrouted = 0  # frames no route and no default took
        endpoint.on_frame = self._dispatch

    def route(self, chan: int, handler: FrameHandler) -> None:
        """Deliver frames on `chan` to handler; ValueError if taken."""
        if not 0 <= chan <= 0xFFFF:
            raise ValueError(f"channel {chan} is outside 0..65535")
        if chan in self._routes:
            raise ValueError(f"channel {chan} already has a route")
        self._routes[chan] = handler

    def unroute(self, chan: int) -> None:
        self._routes.pop(chan, None)

    def handler(self, chan: int) -> FrameHandler | None:
        return self._routes.get(chan, self.default)

    def _dispatch(self, chan: int, payload: Payload) -> None:
        h = self._routes.get(chan)
        if h is not None:
            h(chan, payload)
        elif self.default is not None:
            self.default(chan, payload)
        else:
            self.unrouted += 1
            if self.on_unrouted is not None:
                self.on_unrouted(chan, payload)
            else:
                raise UnroutableFrame(
                    f"frame of {len(payload)} bytes on channel {chan}: no route for it",
                    channel=chan,
                )
