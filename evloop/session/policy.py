# evloop/session/policy.py
#
# What a session does when things go wrong, as four plain flags (Ceph's
# Messenger::Policy), and the throttle that bounds what a peer may have in
# flight towards our dispatcher.
#
#   lossy       on a fault, drop the session and every message queued or in
#               flight on it (on_reset says how many); never replay
#   server      never dial the peer: wait for it to reconnect
#   standby     after a fault with nothing to send, wait (do not reconnect)
#               until something is sent
#   resetcheck  when the peer turns out to have restarted (its cookie
#               changed), discard what was queued for its old incarnation;
#               without it those messages are replayed to the new one
#
# A Throttle is shared by every session of the policy that made it (as
# Ceph's policy throttlers are per peer type). Invariant: a session whose
# delivery made the throttle exhausted stops reading (pause_reading on its
# connection: the kernel buffers, then the peer's sender, back up) and is
# resumed only when the messages it holds were released.
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

__all__ = ["Policy", "Throttle", "ThrottleStatistics"]


@dataclass(frozen=True)
class Policy:
    """Session policy flags and throttle limits (see the module header).
    Build one with a preset (`Policy.lossless_peer()`) and adjust it with
    `with_throttle()`, or spell the flags out."""

    lossy: bool = False
    server: bool = False
    standby: bool = False
    resetcheck: bool = False
    throttle_bytes: int | None = None  # payload bytes in flight to the dispatcher
    throttle_messages: int | None = None  # messages in flight to the dispatcher

    def __post_init__(self) -> None:
        for name in ("throttle_bytes", "throttle_messages"):
            v = getattr(self, name)
            if v is not None and (type(v) is not int or v < 1):
                raise ValueError(f"{name} must be None or an int >= 1, got {v!r}")

    def with_throttle(self, *, bytes: int | None = None, messages: int | None = None) -> Policy:
        return replace(self, throttle_bytes=bytes, throttle_messages=messages)

    # Ceph's presets: (lossy, server, standby, resetcheck).
    @classmethod
    def stateful_server(cls) -> Policy:
        """F T T T: keep sessions of clients that may reconnect; never dial."""
        return cls(lossy=False, server=True, standby=True, resetcheck=True)

    @classmethod
    def stateless_server(cls) -> Policy:
        """T T F F: forget a client the moment its connection fails."""
        return cls(lossy=True, server=True, standby=False, resetcheck=False)

    @classmethod
    def lossless_peer(cls) -> Policy:
        """F F T F: two peers that both dial; replay across faults."""
        return cls(lossy=False, server=False, standby=True, resetcheck=False)

    @classmethod
    def lossless_peer_reuse(cls) -> Policy:
        """F F T T: lossless_peer that also detects peer restarts."""
        return cls(lossy=False, server=False, standby=True, resetcheck=True)

    @classmethod
    def lossy_client(cls) -> Policy:
        """T F F F: dial, drop what is in flight on a fault."""
        return cls(lossy=True, server=False, standby=False, resetcheck=False)

    @classmethod
    def lossless_client(cls) -> Policy:
        """F F F T: dial and reconnect at once, replay, detect server restarts."""
        return cls(lossy=False, server=False, standby=False, resetcheck=True)


@dataclass(frozen=True)
class ThrottleStatistics:
    bytes: int  # in flight now
    messages: int
    max_bytes: int | None
    max_messages: int | None
    paused: int  # sessions waiting for it
    exhausted: int  # how many times it became exhausted


class Throttle:
    """Counts the payload bytes and messages delivered to the dispatcher and
    not yet released. A message is released when its handler returns, or,
    if the handler returned a Future, when that Future is done."""

    __slots__ = ("max_bytes", "max_messages", "bytes", "messages", "_waiters", "exhaustions")

    def __init__(self, max_bytes: int | None, max_messages: int | None):
        self.max_bytes = max_bytes
        self.max_messages = max_messages
        self.bytes = 0
        self.messages = 0
        self._waiters: list[Callable[[], Any]] = []
        self.exhaustions = 0

    @property
    def exhausted(self) -> bool:
        return (self.max_messages is not None and self.messages >= self.max_messages) or (
            self.max_bytes is not None and self.bytes >= self.max_bytes
        )

    def take(self, n: int) -> bool:
        """Count one message of n bytes; True if the throttle is now
        exhausted (the caller pauses and calls wait())."""
        self.messages += 1
        self.bytes += n
        if self.exhausted:
            self.exhaustions += 1
            return True
        return False

    def put(self, n: int) -> None:
        self.messages -= 1
        self.bytes -= n
        if self._waiters and not self.exhausted:
            waiters, self._waiters = self._waiters, []
            for fn in waiters:
                fn()

    def wait(self, fn: Callable[[], Any]) -> None:
        """fn() once the throttle is no longer exhausted."""
        self._waiters.append(fn)

    def forget(self, fn: Callable[[], Any]) -> None:
        try:
            self._waiters.remove(fn)
        except ValueError:
            pass

    def statistics(self) -> ThrottleStatistics:
        return ThrottleStatistics(
            self.bytes, self.messages, self.max_bytes, self.max_messages,
            len(self._waiters), self.exhaustions,
        )  # fmt: skip
