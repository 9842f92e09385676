# evloop/graph/worker.py
#
# The worker side of a servlet placed in its own process: the spawn()
# target run_servlet(ctx, target, name, args). It imports the servlet's
# class, runs its init step (the same one the parent ran to check the
# wiring), binds it to this process's Pipe and starts it. Then:
#
#   N (port map)  checked against the ports this init defined (as the
#                 spawn arguments were, before the worker said it is up: a
#                 mismatch, an init that depends on where it runs, is a boot
#                 failure); a match is answered with n, the ports as defined
#                 here
#   D (drain)     servlet.drain()
#   a data frame  on channel = a port's index: flow u64 | flags u32 | the
#                 message in the port's codec: one execution
#
# An exception in exec is the flow's, not the process's: it is sent to the
# parent as K (flow | error report) and the worker goes on serving. A
# servlet here cannot open or end flows (the flow books are the parent's,
# runtime.py): sources and sinks run in-process.
"""The worker-process side of a graph servlet: run_servlet, the spawn() target. The comment that opens the source file gives the design and its invariants."""

from __future__ import annotations

import json
from typing import Any

from ..control import (
    CONTROL_CHANNEL,
    KIND_DRAIN,
    KIND_FLOW_ABORT,
    KIND_PORTS,
    KIND_PORTS_BOUND,
    REQUEST_ID,
    encode_error,
)
from ..errors import GraphError
from ..worker import WorkerContext, import_target
from .ports import FRAME_HEADER, OUTPUT, SHARED, PortSpec
from .servlet import AbortHandler, Execution, Servlet

__all__ = ["run_servlet"]


class _ChildBinding:
    """The Binding of a servlet in a worker process: its ports are the
    Pipe's channels."""

    def __init__(self, ctx: WorkerContext, servlet: Servlet):
        self.loop = ctx.loop
        self.pipe = ctx.pipe
        self.resources: dict[str, Any] = {}
        self.servlet = servlet
        self.by_chan = {spec.index: spec for spec in servlet.ports.values()}

    def emit(self, port: PortSpec, flow: int, flags: int, message: Any) -> None:
        body = port.codec.encode(message)
        self.pipe.write_frame(port.index, FRAME_HEADER.pack(flow, flags & SHARED), body)

    def open_flow(self, on_abort: AbortHandler | None) -> int:
        raise GraphError(
            f"servlet {self.servlet.name!r} runs in a worker process and cannot open flows:"
            " place a source servlet in-process"
        )

    def end_flow(self, flow: int) -> None:
        raise GraphError(
            f"servlet {self.servlet.name!r} runs in a worker process and cannot end flows:"
            " place a sink servlet in-process"
        )

    def abort_flow(self, flow: int, error: BaseException) -> None:
        self.pipe.write_frame(
            CONTROL_CHANNEL, bytes((KIND_FLOW_ABORT,)) + REQUEST_ID.pack(flow), encode_error(error)
        )

    def on_frame(self, chan: int, payload: Any) -> None:
        if chan == CONTROL_CHANNEL:
            self._control(bytes(payload))
            return
        spec = self.by_chan.get(chan)
        if spec is None or spec.flags & OUTPUT or len(payload) < FRAME_HEADER.size:
            raise GraphError(f"servlet {self.servlet.name!r}: a bad data frame on channel {chan}")
        flow, flags = FRAME_HEADER.unpack_from(payload)
        message = spec.codec.decode(payload[FRAME_HEADER.size :])
        servlet = self.servlet
        ex = Execution(servlet, spec.name, message, flow, flags)
        try:
            servlet.exec(ex)
        except Exception as exc:
            self.abort_flow(flow, exc)
        finally:
            ex._open = False

    def _control(self, payload: bytes) -> None:
        kind = payload[0]
        if kind == KIND_PORTS:
            mine = _check_ports(self.servlet, json.loads(payload[1:])["ports"])
            reply = json.dumps({"servlet": self.servlet.name, "ports": mine}).encode()
            self.pipe.write_frame(CONTROL_CHANNEL, bytes((KIND_PORTS_BOUND,)) + reply)
        elif kind == KIND_DRAIN:
            self.servlet.drain()


def run_servlet(
    ctx: WorkerContext, target: str, name: str, args: dict[str, Any], expected: list[Any]
) -> None:
    """The spawn() target of a worker servlet (see the module header).
    `expected` is the parent's port list: checked here too, before the
    worker says it is up, so a mismatch is a boot failure (the supervisor
    gives up on it) rather than a crash that is restarted forever."""
    cls = import_target(target)
    servlet: Servlet = cls()
    servlet._run_init(name, args)
    _check_ports(servlet, expected)
    binding = _ChildBinding(ctx, servlet)
    servlet._binding = binding
    ctx.pipe.on_frame = binding.on_frame
    servlet.start()


def _check_ports(servlet: Servlet, theirs: list[Any]) -> list[Any]:
    mine = [spec.describe() for spec in servlet.ports.values()]
    if theirs != mine:
        raise GraphError(
            f"servlet {servlet.name!r}: the parent expects ports {theirs} but this process's"
            f" init defined {mine} (init must not depend on where it runs)"
        )
    return mine
