# evloop/dispatch.py
#
# Dispatcher: pick one target among several for the next piece of work (a
# Dealer, in vanilla's words). A target is anything with an `outstanding`
# attribute (an int: work sent to it and not answered yet), typically an
# rpc.Client on one endpoint.
#
# The dispatcher does not ask targets whether they can take work: their
# owner tells it, with suspend(target) when a target must get nothing
# (its endpoint is above its high watermark, it is hung, draining or gone)
# and resume(target) when it may again. pick() is then a few bytecodes, with
# no call per candidate, which matters: it runs once per request.
#
# Strategies:
#   round_robin        the next ready target after the last one picked
#   least_outstanding  the ready target with the fewest outstanding, ties
#                      broken in round-robin order (it stops at the first
#                      idle target it meets)
#
# Invariants: pick() returns only ready targets (added and not suspended),
# or None when there is none; ready targets are kept in the order of their
# `rank` (the order they were added in, unless given), so round-robin order
# is stable across suspensions.
"""Dispatcher: pick the target for the next request (round robin, least outstanding). See the comment header above for the invariants."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Generic, Protocol, TypeVar

__all__ = ["Dispatcher", "STRATEGIES", "Target"]

STRATEGIES = ("round_robin", "least_outstanding")


class Target(Protocol):
    outstanding: int


T = TypeVar("T", bound=Target)


class Dispatcher(Generic[T]):
    """Picks a ready target per the strategy; see the module header."""

    def __init__(self, strategy: str = "round_robin"):
        if strategy not in STRATEGIES:
            raise ValueError(f"strategy must be one of {STRATEGIES}, got {strategy!r}")
        self.strategy = strategy
        self._ready: list[T] = []
        self._rank: dict[int, float] = {}  # id(target) -> rank, for every known target
        self._n = 0
        self._rr = 0
        self._next_rank: float = 0
        self.pick = self._pick_rr if strategy == "round_robin" else self._pick_least

    def __len__(self) -> int:
        """How many targets are ready."""
        return self._n

    def __iter__(self) -> Iterator[T]:
        return iter(list(self._ready))

    def add(self, target: T, rank: float | None = None) -> None:
        """Know `target` and make it ready. `rank` orders the ready list
        (default: after everything added so far)."""
        if rank is None:
            rank = self._next_rank
        self._next_rank = max(self._next_rank, rank) + 1
        self._rank[id(target)] = rank
        self.resume(target)

    def remove(self, target: T) -> None:
        """Forget `target` (it gets nothing more)."""
        self.suspend(target)
        self._rank.pop(id(target), None)

    def suspend(self, target: T) -> None:
        """Give `target` nothing until resume(target)."""
        try:
            i = self._ready.index(target)
        except ValueError:
            return
        del self._ready[i]
        self._n -= 1
        if i < self._rr:
            self._rr -= 1  # keep the round-robin position on the same successor

    def resume(self, target: T) -> None:
        """Make a known `target` ready again (a no-op if it already is, or if
        it was removed)."""
        rank = self._rank.get(id(target))
        if rank is None or target in self._ready:
            return
        ready = self._ready
        i = 0
        while i < len(ready) and self._rank[id(ready[i])] <= rank:
            i += 1
        ready.insert(i, target)
        self._n += 1
        if i < self._rr:
            self._rr += 1

    def is_ready(self, target: T) -> bool:
        return target in self._ready

    def _pick_rr(self) -> T | None:
        n = self._n
        if not n:
            return None
        i = self._rr
        if i >= n:
            i = 0
        self._rr = i + 1
        return self._ready[i]

    def _pick_least(self) -> T | None:
        n = self._n
        if not n:
            return None
        ready = self._ready
        i = self._rr
        if i >= n:
            i = 0
        best_i = i
        best = ready[i]
        fewest = best.outstanding
        k = 1
        while fewest and k < n:
            j = i + k
            if j >= n:
                j -= n
            t = ready[j]
            c = t.outstanding
            if c < fewest:
                best, best_i, fewest = t, j, c
            k += 1
        self._rr = best_i + 1
        return best

    def __repr__(self) -> str:
        return f"<Dispatcher {self.strategy} ready={self._n}>"
