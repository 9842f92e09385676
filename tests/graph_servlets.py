# Servlets the graph tests wire together, in-process and in worker
# processes (a worker imports them as tests.graph_servlets:Name).
from __future__ import annotations

import os
from typing import Any

from evloop.graph import INPUT, OUTPUT, PERSIST, Execution, Servlet

KEEP = 0x0100_0000  # a shared user bit


class Upper(Servlet):
    """input -> output: the message upper-cased, with a prefix; b"crash"
    kills the process, b"raise" raises."""

    def init(self, prefix: str = "") -> None:
        self.prefix = prefix.encode()
        self.define("input", INPUT)
        self.define("output", OUTPUT, companion="input")

    def exec(self, ex: Execution) -> None:
        msg = bytes(ex.message)
        if msg == b"crash":
            os._exit(3)
        if msg == b"raise":
            raise ValueError("asked to raise")
        if msg == b"pid":
            ex.emit("output", str(os.getpid()).encode())
            return
        if msg == b"abort":
            ex.abort("asked to abort")
            return
        ex.emit("output", self.prefix + msg.upper())


class Hold(Servlet):
    """input -> output, but only after `release` messages... it holds each
    message until a b"go" arrives (a flow in flight for the crash tests);
    b"die" while holding kills the process."""

    def init(self) -> None:
        self.held: list[tuple[int, bytes]] = []
        self.define("input", INPUT)
        self.define("output", OUTPUT)

    def exec(self, ex: Execution) -> None:
        msg = bytes(ex.message)
        if msg == b"die":
            os._exit(9)
        if msg == b"go":
            for flow, held in self.held:
                self.emit("output", held, flow=flow)
            self.held.clear()
            ex.emit("output", b"went")
            return
        self.held.append((ex.flow, msg))


class Flags(Servlet):
    """Shows the flags: answers a JSON-ish report of what it saw, and
    sets/clears bits as the message (b"set"/b"clear"/b"none") says."""

    def init(self) -> None:
        self.define("input", INPUT)
        self.define("output", OUTPUT, companion="input")
        self.define("side", OUTPUT, codec="json")

    def exec(self, ex: Execution) -> None:
        msg = bytes(ex.message)
        before = ex.get_flags()
        if msg == b"set":
            ex.set_flags("input", PERSIST | KEEP | 0x1)
        elif msg == b"clear":
            ex.clear_flags("input", PERSIST)
        ex.emit("side", [before, ex.get_flags("input"), ex.get_flags("output")])
        ex.emit("output", msg)


class Sink(Servlet):
    """Swallows a json side port (keeps what it got, in-process)."""

    def init(self) -> None:
        self.got: list[Any] = []
        self.define("input", INPUT, codec="json")

    def exec(self, ex: Execution) -> None:
        self.got.append(ex.message)


class KeepAlive(Servlet):
    """For the TCP servlet: answers each line with b"echo: " + line; sets
    PERSIST on its input (so on the companion output, so on the TCP
    response) unless the line is b"bye"."""

    def init(self) -> None:
        self.define("input", INPUT)
        self.define("output", OUTPUT, companion="input")

    def exec(self, ex: Execution) -> None:
        line = bytes(ex.message)
        if line.strip() != b"bye":
            ex.set_flags("input", PERSIST)
        ex.emit("output", b"echo: " + line)


class Shifty(Servlet):
    """An init that depends on where it runs (a mistake): in a worker it
    defines one more port than in the parent."""

    def init(self) -> None:
        from evloop.worker import current_context

        self.define("input", INPUT)
        self.define("output", OUTPUT)
        if current_context() is not None:
            self.define("extra", OUTPUT)
