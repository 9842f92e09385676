# tests/pattern_workers.py
#
# Worker functions for tests/test_patterns_procs.py: each runs in a fresh
# interpreter (evloop.spawn), holds the far end of a primitive the parent
# attached on `chan`, and reports what it saw on channel 1.
from __future__ import annotations

import os
from typing import Any

from evloop import patterns as P
from evloop import tasks
from evloop.loop import Loop
from evloop.pipe import Pipe


def _report(pipe: Pipe, text: bytes) -> None:
    pipe.write_frame(1, text)


def receiver(loop: Loop, pipe: Pipe, chan: int, crash_after: int = -1) -> None:
    """Receive items and report "<pid>:<item>"; exit(3) after crash_after."""
    end = P.remote(pipe, chan)

    async def main() -> None:
        n = 0
        async for item in end:
            _report(pipe, b"%d:" % os.getpid() + item)
            n += 1
            if n == crash_after:
                pipe.flush()
                os._exit(3)
        _report(pipe, b"end")

    tasks.create_task(loop, main())


def client(loop: Loop, pipe: Pipe, chan: int, n: int) -> None:
    """A Router client: n requests, report each reply."""
    end = P.remote(pipe, chan)

    async def main() -> None:
        for i in range(n):
            await end.send(b"%d-%d" % (os.getpid(), i))
            _report(pipe, await end.recv())
        _report(pipe, b"done")

    tasks.create_task(loop, main())


def sender(loop: Loop, pipe: Pipe, chan: int, n: int, fail: bool) -> None:
    """Send n items, then close in order or with an error."""
    end = P.remote(pipe, chan)

    async def main() -> None:
        for i in range(n):
            await end.send(b"item %d" % i)
        if fail:
            end.close_send(ValueError("the worker's producer broke"))
        else:
            end.close_send()
        _report(pipe, b"sent")

    tasks.create_task(loop, main())


def value_watcher(loop: Loop, pipe: Pipe, chan: int, until: str) -> None:
    """Report every value seen until `until`."""
    end = P.remote(pipe, chan)

    async def main() -> None:
        while True:
            v: Any = await end.recv()
            _report(pipe, v)
            if v == until.encode():
                return

    tasks.create_task(loop, main())
