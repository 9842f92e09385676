# evloop/graph/runtime.py
#
# A checked graph, running. Every edge is a mempipe pair in this process:
# an in-process servlet reads its inputs from mempipe ends and writes its
# outputs into them, as message objects (MemPipe.write_item: no copy, no
# codec), each item (flow, shared flags, message). A servlet placed in a
# worker is a supervised process (evloop.supervise, one slot) joined by a
# Pipe; here a node stands in for it: what arrives on its input mempipes is
# encoded with the port's codec and written to the worker on the port's
# channel, and what the worker writes on an output channel is decoded and
# put on that output's mempipe. So the servlet code is the same in both
# places, and the graph's wiring does not change with the placement.
#
# Flows. A flow is one request on its way through the graph, opened by a
# source (call(), a TCP servlet) and ended by a sink (the graph's output,
# the TCP servlet writing the answer). The books are kept here: each open
# flow has its opener's on_abort, and the worker nodes it has reached.
# Messages of a flow that is no longer open are dropped (counted). When a
# worker process exits, every open flow that reached it is aborted with
# ServletCrashed (the servlet may have held state for it: the graph cannot
# know it owed nothing), and the supervisor restarts the process; a flow
# that reaches a servlet with no worker at that moment (restarting, or
# given up on) is aborted the same way at once. No flow waits on a dead
# process.
#
# Stopping (shutdown(deadline, callback), run_daemon's shape): every node is
# drained in dependency order, sources first (breadth-first from the
# servlets that take nothing from another servlet); once no flow is open
# (or at the deadline, when the rest are aborted with GraphStopped) every
# node is stopped in the same order: in-process servlets' stop(), worker
# processes closed and reaped (their supervisor's shutdown); then the
# mempipes close and callback(graph) runs. `stop_log` records the order.
"""RunningGraph: a checked graph running on a Loop (mempipes, worker processes, flows, stop order). The comment that opens the source file gives the design and its invariants."""

from __future__ import annotations

import json
import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..control import (
    CONTROL_CHANNEL,
    KIND_DRAIN,
    KIND_FLOW_ABORT,
    KIND_PORTS,
    KIND_PORTS_BOUND,
    REQUEST_ID,
    decode_error,
)
from ..errors import (
    ConnClosedError,
    FlowAborted,
    GraphError,
    GraphStopped,
    PortError,
    ServletCrashed,
    ServletError,
    WorkerBootError,
)
from ..future import Future
from ..loop import Loop, TimerHandle
from ..mempipe import MemPipe, mempipe_pair
from ..spawn import Worker, spawn
from ..supervise import Slot, Supervisor
from .model import Plan, ServletDecl
from .ports import FRAME_HEADER, OUTPUT, SHARED, PortSpec
from .servlet import AbortHandler, Execution, Servlet

__all__ = ["RunningGraph", "GraphStatistics"]

log = logging.getLogger("evloop")

_WORKER_TARGET = "evloop.graph.worker:run_servlet"


@dataclass(frozen=True)
class GraphStatistics:
    state: str
    open_flows: int
    flows: int  # opened in all
    aborted: int
    dropped: int  # messages of flows no longer open
    crashes: int  # worker processes that exited while the graph ran


class _Flow:
    __slots__ = ("id", "on_abort", "nodes")

    def __init__(self, id: int, on_abort: AbortHandler | None):
        self.id = id
        self.on_abort = on_abort
        self.nodes: list[_WorkerNode] = []


class _Node:
    """One servlet, in this process; also its Binding."""

    def __init__(self, graph: RunningGraph, decl: ServletDecl, servlet: Servlet):
        self.graph = graph
        self.loop = graph.loop
        self.resources = graph.resources
        self.name = decl.name
        self.decl = decl
        self.servlet = servlet
        self.outs: dict[str, MemPipe] = {}

    # -- Binding ---------------------------------------------------------------

    def emit(self, port: PortSpec, flow: int, flags: int, message: Any) -> None:
        if self.graph.state in ("stopping", "closed"):
            return  # a late timer, a connection closing in the stop: nowhere to go
        self.outs[port.name].write_item(0, (flow, flags, message))

    def open_flow(self, on_abort: AbortHandler | None) -> int:
        return self.graph._open_flow(on_abort)

    def end_flow(self, flow: int) -> None:
        self.graph._end_flow(flow)

    def abort_flow(self, flow: int, error: FlowAborted) -> None:
        self.graph._abort_flow(flow, error)

    # -- the node's life -----------------------------------------------------------

    def start(self) -> None:
        self.servlet._binding = self
        self.servlet.start()

    def deliver(self, port: str, item: Any) -> None:
        flow, flags, message = item
        graph = self.graph
        if (flow and flow not in graph._flows) or graph.state in ("stopping", "closed"):
            graph.dropped += 1  # its flow is over, or its servlet stopped
            return
        servlet = self.servlet
        ex = Execution(servlet, port, message, flow, flags)
        try:
            servlet.exec(ex)
        except Exception as exc:
            if not flow:
                self.loop.call_exception_handler(exc, servlet.exec)
                return
            err = ServletError(
                f"servlet {self.name!r} raised on flow {flow} ({port}): {exc!r}",
                flow=flow, servlet=self.name,
            )  # fmt: skip
            err.__cause__ = exc
            self.graph._abort_flow(flow, err)
        finally:
            ex._open = False

    def drain(self) -> None:
        self.servlet.drain()

    @property
    def drained(self) -> bool:
        return self.servlet.drained

    def stop(self) -> None:
        try:
            self.servlet.stop()
        except Exception as exc:
            self.loop.call_exception_handler(exc, self.servlet.stop)

    @property
    def stopped(self) -> bool:
        return True

    def abort(self) -> None:
        self.stop()


class _WorkerNode(_Node):
    """A servlet in its own worker process; this node relays its ports."""

    def __init__(self, graph: RunningGraph, decl: ServletDecl, servlet: Servlet, target: str):
        super().__init__(graph, decl, servlet)
        self.target = target
        self.by_chan = {spec.index: spec for spec in servlet.ports.values()}
        self.flows: set[int] = set()
        self.bound = False  # the current worker answered the port map (n)
        self.given_up: WorkerBootError | None = None
        self.crashes = 0
        self._map = (
            bytes((KIND_PORTS,))
            + json.dumps(
                {"servlet": self.name, "ports": [s.describe() for s in servlet.ports.values()]}
            ).encode()
        )
        self.sup = Supervisor(
            graph.loop, 1, self._spawn,
            on_start=self._on_start, on_lost=self._on_lost, on_give_up=self._on_give_up,
            name=f"graph servlet {self.name!r}",
        )  # fmt: skip

    @property
    def worker(self) -> Worker | None:
        return self.sup.slots[0].worker

    def start(self) -> None:
        self.sup.start()

    def _spawn(self, _slot: Slot) -> Worker:
        ports = [s.describe() for s in self.servlet.ports.values()]
        return spawn(
            self.loop, _WORKER_TARGET, self.target, self.name, self.decl.args, ports,
            on_frame=self._on_frame,
        )  # fmt: skip

    def _on_start(self, _slot: Slot, worker: Worker) -> None:
        self.bound = False
        worker.on_control = self._on_control
        # The port map goes first: the worker reads it before any data frame.
        worker.pipe.write_frame(CONTROL_CHANNEL, self._map)

    def deliver(self, port: str, item: Any) -> None:
        flow, flags, message = item
        graph = self.graph
        record = graph._flows.get(flow) if flow else None
        if flow and record is None:
            graph.dropped += 1
            return
        worker = self.worker
        if worker is None or not worker.alive:
            why = (
                f"it was given up on: {self.given_up}"
                if self.given_up is not None
                else "its worker is being restarted"
            )
            if flow:
                graph._abort_flow(
                    flow,
                    ServletCrashed(
                        f"servlet {self.name!r} has no worker process for flow {flow}: {why}",
                        flow=flow, servlet=self.name,
                    ),
                )  # fmt: skip
            return
        spec = self.servlet.ports[port]
        body = spec.codec.encode(message)
        if record is not None and flow not in self.flows:
            self.flows.add(flow)
            record.nodes.append(self)
        worker.pipe.write_frame(spec.index, FRAME_HEADER.pack(flow, flags & SHARED), body)

    def _on_frame(self, _worker: Worker, chan: int, payload: Any) -> None:
        spec = self.by_chan.get(chan)
        if spec is None or not spec.flags & OUTPUT or len(payload) < FRAME_HEADER.size:
            log.error("evloop: graph servlet %r sent a bad frame on channel %d", self.name, chan)
            return
        flow, flags = FRAME_HEADER.unpack_from(payload)
        if flow and flow not in self.graph._flows:
            self.graph.dropped += 1
            return
        message = spec.codec.decode(payload[FRAME_HEADER.size :])
        self.emit(spec, flow, flags & SHARED, message)

    def _on_control(self, _worker: Worker, payload: bytes) -> None:
        kind = payload[0]
        if kind == KIND_PORTS_BOUND:
            self.bound = True
        elif kind == KIND_FLOW_ABORT and len(payload) >= 9:
            flow = REQUEST_ID.unpack_from(payload, 1)[0]  # the K kind's u64
            cause = decode_error(payload[9:])
            err: FlowAborted
            if cause.remote_type == "evloop.errors.FlowAborted":  # ex.abort(): on purpose
                err = FlowAborted(cause.remote_message, flow=flow, servlet=self.name)
            else:
                err = ServletError(
                    f"servlet {self.name!r} (worker) raised on flow {flow}: {cause}",
                    flow=flow, servlet=self.name,
                )  # fmt: skip
                err.__cause__ = cause
            self.graph._abort_flow(flow, err)

    def _on_lost(self, _slot: Slot, worker: Worker, why: str) -> None:
        self.bound = False
        if self.graph.state in ("stopping", "closed"):
            return
        self.crashes += 1
        self.graph.crashes += 1
        status = worker.returncode
        what = "was found hung" if why == "hung" else f"exited with status {status}"
        for flow in sorted(self.flows):
            self.graph._abort_flow(
                flow,
                ServletCrashed(
                    f"servlet {self.name!r}: its worker process (pid {worker.pid}) {what}"
                    f" with flow {flow} in flight; it is being restarted",
                    flow=flow, servlet=self.name,
                ),
            )  # fmt: skip
        self.flows.clear()

    def _on_give_up(self, exc: WorkerBootError) -> None:
        self.given_up = exc

    def drain(self) -> None:
        worker = self.worker
        if worker is not None and not worker.pipe.closed:
            try:
                worker.pipe.write_frame(CONTROL_CHANNEL, bytes((KIND_DRAIN,)))
            except ConnClosedError:
                pass

    @property
    def drained(self) -> bool:
        return True  # its flows are the graph's books

    def stop(self) -> None:
        self.sup.shutdown(0.0, 2.0, lambda: True, lambda _d: None, self.graph._node_stopped)

    @property
    def stopped(self) -> bool:
        return self.sup.state.value == "closed"

    def abort(self) -> None:
        self.sup.abort()


class RunningGraph:
    """A Plan running on a Loop; see the module header. Made by
    Graph.start(loop)."""

    def __init__(self, loop: Loop, plan: Plan):
        self.loop = loop
        self.plan = plan
        self.resources: dict[str, Any] = {}
        self.state = "running"
        self.stop_log: list[tuple[str, str]] = []
        self._flows: dict[int, _Flow] = {}
        self._next_flow = 1
        self._calls: dict[int, tuple[Future[Any], bool]] = {}
        self._inputs: dict[str, MemPipe] = {}
        self._pipes: list[MemPipe] = []
        self._callbacks: list[Callable[[RunningGraph], Any]] = []
        self._deadline: TimerHandle | None = None
        self.flows_opened = self.aborted = self.dropped = self.crashes = 0
        self.nodes: dict[str, _Node] = {}
        for name, decl in plan.decls.items():
            servlet = plan.servlets[name]
            if decl.placement == "worker":
                self.nodes[name] = _WorkerNode(self, decl, servlet, plan.targets[name])
            else:
                self.nodes[name] = _Node(self, decl, servlet)
        for edge in plan.edges:
            up, down = mempipe_pair(loop)
            self._pipes += (up, down)
            if edge.src is None:
                assert edge.dst is not None
                self._inputs[f"{edge.dst[0]}.{edge.dst[1]}"] = up
            else:
                self.nodes[edge.src[0]].outs[edge.src[1]] = up
            if edge.dst is None:
                down.on_frame = self._on_output
            else:
                node = self.nodes[edge.dst[0]]
                port = edge.dst[1]
                down.on_frame = lambda _chan, item, node=node, port=port: node.deliver(port, item)
        self.order = self._dependency_order()
        try:
            for name in self.order:
                self.nodes[name].start()
        except BaseException:
            self.abort()
            raise

    def _dependency_order(self) -> list[str]:
        feeds: dict[str, list[str]] = {name: [] for name in self.nodes}
        fed: set[str] = set()
        for edge in self.plan.edges:
            if edge.src is not None and edge.dst is not None and edge.src[0] != edge.dst[0]:
                feeds[edge.src[0]].append(edge.dst[0])
                fed.add(edge.dst[0])
        order: list[str] = []
        seen: set[str] = set()
        for root in [n for n in self.nodes if n not in fed] + list(self.nodes):
            if root in seen:
                continue
            queue = deque([root])
            seen.add(root)
            while queue:
                name = queue.popleft()
                order.append(name)
                for nxt in feeds[name]:
                    if nxt not in seen:
                        seen.add(nxt)
                        queue.append(nxt)
        return order

    # -- readiness ------------------------------------------------------------------

    @property
    def ready(self) -> bool:
        """Every worker servlet's process is up and has bound its ports."""
        return all(n.bound for n in self.nodes.values() if isinstance(n, _WorkerNode))

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Run the loop until ready; GraphError if a worker servlet could
        not be started (its boot error) or the timeout passed."""

        def done() -> bool:
            return self.ready or any(
                n.given_up is not None for n in self.nodes.values() if isinstance(n, _WorkerNode)
            )

        if not self.loop.run_until(done, timeout=timeout):
            raise GraphError(f"the graph's worker servlets were not up within {timeout:g} s")
        for n in self.nodes.values():
            if isinstance(n, _WorkerNode) and n.given_up is not None:
                raise GraphError(f"servlet {n.name!r} could not start: {n.given_up}")

    def worker(self, name: str) -> Worker | None:
        """The current worker process of servlet `name` (None: in-process,
        or between a crash and its restart)."""
        node = self.nodes[name]
        return node.worker if isinstance(node, _WorkerNode) else None

    def servlet(self, name: str) -> Servlet:
        """The servlet object `name` (for a worker servlet: the parent's
        copy, which only knows its ports)."""
        return self.nodes[name].servlet

    # -- flows ----------------------------------------------------------------------

    def _open_flow(self, on_abort: AbortHandler | None) -> int:
        # Draining still opens flows: a source that is finishing (a keep-alive
        # connection's next request) may need some; stopping does not.
        if self.state not in ("running", "draining"):
            raise GraphError(f"the graph is {self.state}: it opens no more flows")
        flow = self._next_flow
        self._next_flow = flow + 1
        self._flows[flow] = _Flow(flow, on_abort)
        self.flows_opened += 1
        return flow

    def _forget(self, flow: int) -> _Flow | None:
        record = self._flows.pop(flow, None)
        if record is not None:
            for node in record.nodes:
                node.flows.discard(flow)
        return record

    def _end_flow(self, flow: int) -> None:
        if self._forget(flow) is not None:
            self._check_drained()

    def _abort_flow(self, flow: int, error: FlowAborted) -> None:
        record = self._forget(flow)
        if record is None:
            return
        self.aborted += 1
        error.flow = flow
        if record.on_abort is not None:
            try:
                record.on_abort(error)
            except Exception as exc:
                self.loop.call_exception_handler(exc, record.on_abort)
        self._check_drained()

    def call(self, message: Any, *, into: str | None = None, flags: int = 0) -> Future[Any]:
        """Send `message` into the graph's input port `into` (default: the
        only one) as a new flow; the Future gets the message that reaches
        the graph's output for it, or fails with the FlowAborted that ended
        the flow (ServletCrashed, ServletError, GraphStopped...)."""
        return self._call(message, into, flags, False)

    def call_with_flags(
        self, message: Any, *, into: str | None = None, flags: int = 0
    ) -> Future[Any]:
        """call(), whose Future gets (message, shared flags it carried)."""
        return self._call(message, into, flags, True)

    def _call(self, message: Any, into: str | None, flags: int, with_flags: bool) -> Future[Any]:
        if into is None:
            if len(self._inputs) != 1:
                raise PortError(
                    "call(into=...) must name the input port: the graph has"
                    f" {len(self._inputs)} inputs ({', '.join(self._inputs) or 'none'})"
                )
            into = next(iter(self._inputs))
        pipe = self._inputs.get(into)
        if pipe is None:
            raise PortError(
                f"{into!r} is not one of the graph's inputs ({', '.join(self._inputs) or 'none'})"
            )
        fut: Future[Any] = Future(self.loop)

        def failed(exc: FlowAborted) -> None:
            self._calls.pop(exc.flow, None)
            if not fut.done():
                fut.set_exception(exc)

        flow = self._open_flow(failed)
        self._calls[flow] = (fut, with_flags)
        pipe.write_item(0, (flow, flags & SHARED, message))
        return fut

    def _on_output(self, _chan: int, item: Any) -> None:
        flow, flags, message = item
        entry = self._calls.pop(flow, None)
        if entry is None:
            self.dropped += 1
            return
        fut, with_flags = entry
        self._end_flow(flow)
        if not fut.done():
            fut.set_result((message, flags) if with_flags else message)

    # -- stopping ---------------------------------------------------------------------

    def shutdown(
        self, deadline: float = 10.0, callback: Callable[[RunningGraph], Any] | None = None
    ) -> None:
        """Drain, then stop, in dependency order (see the module header);
        callback(graph) once everything is closed and reaped."""
        if callback is not None:
            if self.state == "closed":
                self.loop.call_soon(callback, self)
            else:
                self._callbacks.append(callback)
        if self.state != "running":
            return
        self.state = "draining"
        for name in self.order:
            self.stop_log.append(("drain", name))
            self.nodes[name].drain()
        self._deadline = self.loop.call_later(deadline, self._drain_expired)
        self._check_drained()

    def _check_drained(self) -> None:
        if self.state != "draining" or self._flows:
            return
        if all(node.drained for node in self.nodes.values()):
            self._stop_nodes()

    def _drain_expired(self) -> None:
        self._deadline = None
        if self.state != "draining":
            return
        self._abort_all("its shutdown deadline passed")
        self._stop_nodes()

    def _abort_all(self, why: str) -> None:
        for flow in list(self._flows):
            self._abort_flow(flow, GraphStopped(f"flow {flow} aborted: the graph stopped ({why})"))

    def _stop_nodes(self) -> None:
        if self.state != "draining":
            return
        self.state = "stopping"
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
        for name in self.order:
            self.stop_log.append(("stop", name))
            self.nodes[name].stop()
        for pipe in self._pipes:
            pipe.close()
        self._node_stopped()

    def _node_stopped(self) -> None:
        if self.state != "stopping" or not all(n.stopped for n in self.nodes.values()):
            return
        self.state = "closed"
        callbacks, self._callbacks = self._callbacks, []
        for fn in callbacks:
            self.loop.call_soon(fn, self)

    def abort(self) -> None:
        """Stop now: open flows fail with GraphStopped, worker processes are
        killed and reaped (run_daemon's second signal; Loop.close())."""
        if self.state == "closed":
            return
        self._abort_all("it was aborted")
        self.state = "stopping"
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
        for name in self.order:
            self.nodes[name].abort()
        for pipe in self._pipes:
            pipe.abort()
        self.state = "closed"
        callbacks, self._callbacks = self._callbacks, []
        for fn in callbacks:
            if not self.loop.closed:
                self.loop.call_soon(fn, self)

    @property
    def closed(self) -> bool:
        return self.state == "closed"

    def statistics(self) -> GraphStatistics:
        return GraphStatistics(
            self.state, len(self._flows), self.flows_opened, self.aborted, self.dropped,
            self.crashes,
        )  # fmt: skip

    def __repr__(self) -> str:
        return f"<RunningGraph {self.state} servlets={list(self.nodes)} flows={len(self._flows)}>"
