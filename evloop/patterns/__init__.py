"""vanilla's message-passing primitives on evloop tasks, the same API in
one process and across processes (attach() / remote()). See
docs/patterns.md."""

from __future__ import annotations

from ._core import Primitive, RecvEnd, SendEnd, select
from .actions import connect, consume, filter, map, pipe, recv, send
from .primitives import (
    UNSET,
    Broadcast,
    Channel,
    Dealer,
    Gather,
    Pipe,
    Queue,
    Rendezvous,
    Router,
    RouterSender,
    Source,
    State,
    Subscription,
    Tee,
    Value,
)

__all__ = [
    "Primitive", "SendEnd", "RecvEnd", "select",
    "Pipe", "Rendezvous", "Queue", "Channel", "Dealer", "Router", "RouterSender",
    "Broadcast", "Tee", "Subscription", "Gather", "Source", "Value", "State", "UNSET",
    "send", "recv", "connect", "pipe", "map", "filter", "consume",
]  # fmt: skip

from .remote import JSON, PICKLE, RAW, Codec, RemoteEnd, attach, remote  # noqa: E402

__all__ += ["attach", "remote", "RemoteEnd", "Codec", "RAW", "JSON", "PICKLE"]
