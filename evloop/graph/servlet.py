# evloop/graph/servlet.py
#
# Servlets and executions: the code a service graph runs, and what one run
# of it on one message may do.
#
# A Servlet's life: the graph makes it with no arguments, runs its init
# step (`init(**args)`, the only place define() is allowed: Plumber's
# pipe_define), checks the ports it defined against the graph's edges, and
# only then binds it to a runtime (in this process, or in a worker process:
# the same class, the same code) and calls start(). From then on every
# message that reaches one of its input ports is one execution: exec(ex).
# drain() asks it to stop opening flows, stop() to let go of everything.
#
# init must only define ports and keep its arguments: the graph also runs
# it in the parent for a servlet placed in a worker, to check the wiring at
# load time without starting anything. Sockets, timers and files belong in
# start().
#
# An Execution (Plumber's task) owns the flags of the servlet's ports for
# the time it runs: they start from the declared flags, the input port adds
# the shared flags its message carried, and each output port whose
# companion is that input starts with those shared flags too. get_flags,
# set_flags and clear_flags (pipe_cntl) work on this copy only, so a change
# never outlives the execution; the direction bit is fixed. A change of a
# shared bit on the input is passed to its companion outputs, and a message
# emitted on an output carries that output's shared bits downstream, where
# they become the shared flags of the next servlet's input. Once exec()
# has returned, the flags are frozen: ex.emit() still works (a servlet that
# answers later, from a timer), flag changes raise PortFlagError.
#
# The binding (the runtime a servlet is bound to) is the one seam between a
# servlet and where it runs: runtime.py implements it in the parent,
# worker.py in a worker process. A servlet uses only the methods below.
"""Servlet (ports defined in init; exec per message) and Execution (run-time flags, emit). The comment that opens the source file gives the design and its invariants."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from ..errors import FlowAborted, PortDefinitionError, PortError, PortFlagError
from ..loop import Loop
from .ports import BYTES, OUTPUT, SHARED, PortSpec, check_change, check_define

__all__ = ["Servlet", "Execution", "Binding", "AbortHandler"]

AbortHandler = Callable[[FlowAborted], Any]


class Binding(Protocol):
    """What a bound servlet can ask of its runtime (runtime.py in the
    parent, worker.py in a worker process)."""

    loop: Loop
    resources: dict[str, Any]

    def emit(self, port: PortSpec, flow: int, flags: int, message: Any) -> None: ...

    def open_flow(self, on_abort: AbortHandler | None) -> int: ...

    def end_flow(self, flow: int) -> None: ...

    def abort_flow(self, flow: int, error: FlowAborted) -> None: ...


class Servlet:
    """Base class of a servlet; see the module header. Override init()
    (define the ports), exec() (one message), and if needed start(),
    drain(), stop() and the `drained` property."""

    name: str = "?"
    # A source or sink (it opens or ends flows) or a holder of in-process
    # resources: the graph refuses to place it in a worker, at load time.
    in_process_only: bool = False

    def __init__(self) -> None:
        self.ports: dict[str, PortSpec] = {}
        self._defining = False
        self._binding: Binding | None = None

    # -- the init step ----------------------------------------------------------

    def init(self, *args: Any, **kwargs: Any) -> None:
        """Define the ports (define()) and keep the arguments. Nothing else.
        A subclass gives it the keyword parameters it takes."""

    def define(
        self, name: str, flags: int, *, codec: object = None, companion: str | None = None
    ) -> PortSpec:
        """Declare a port: `flags` is INPUT or OUTPUT, optionally | PERSIST
        and user bits; `codec` says how its messages cross a process
        ("bytes" by default, "json", "pickle", "object"); an OUTPUT port's
        `companion` names the INPUT whose shared flags pass to it. Only in
        init: PortDefinitionError anywhere else."""
        if not self._defining:
            raise PortDefinitionError(
                f"servlet {self.name!r}: define({name!r}) outside init: ports are declared"
                " in the init step only",
                servlet=self.name,
                port=name if isinstance(name, str) else None,
            )
        spec = check_define(self.name, self.ports, name, flags, codec, companion)
        self.ports[spec.name] = spec
        return spec

    def _run_init(self, name: str, args: dict[str, Any]) -> None:
        """The graph's side of the init step."""
        self.name = name
        self._defining = True
        try:
            self.init(**args)
        finally:
            self._defining = False

    # -- run time -------------------------------------------------------------------

    def start(self) -> None:
        """Bound and wired: acquire resources (listen, arm timers)."""

    def exec(self, ex: Execution) -> None:
        """One message on one input port (ex.port, ex.message, ex.flow)."""
        raise NotImplementedError(f"servlet {self.name!r} has input ports but no exec()")

    def drain(self) -> None:
        """Open no more flows (a source stops accepting); finish the rest."""

    @property
    def drained(self) -> bool:
        """True when this servlet holds nothing that a stop would lose."""
        return True

    def stop(self) -> None:
        """Let go of everything (the graph is closing)."""

    @property
    def binding(self) -> Binding:
        if self._binding is None:
            raise PortError(f"servlet {self.name!r} is not running (not bound to a graph)")
        return self._binding

    @property
    def loop(self) -> Loop:
        return self.binding.loop

    @property
    def resources(self) -> dict[str, Any]:
        """A dict shared by the in-process servlets of one graph (a worker
        has its own): where companion resources, such as a TCP servlet's
        connections, are found by the servlets that write to them."""
        return self.binding.resources

    def port_spec(self, name: str) -> PortSpec:
        spec = self.ports.get(name)
        if spec is None:
            raise PortError(
                f"servlet {self.name!r} has no port {name!r} (it defined:"
                f" {', '.join(self.ports) or 'none'})",
                servlet=self.name,
                port=name,
            )
        return spec

    def emit(self, port: str, message: Any, *, flow: int, flags: int = 0) -> None:
        """Send `message` on output `port` for `flow` (0: no flow), carrying
        the shared bits of `flags`; for a servlet that answers outside an
        execution (use ex.emit inside one)."""
        spec = self.port_spec(port)
        _check_emit(self.name, spec, message)
        self.binding.emit(spec, flow, flags & SHARED, message)

    def open_flow(self, on_abort: AbortHandler | None = None) -> int:
        """A new flow's id (a source servlet: one per request); on_abort(exc)
        if the graph aborts it before this servlet ends it."""
        return self.binding.open_flow(on_abort)

    def end_flow(self, flow: int) -> None:
        """The flow is complete (a sink servlet delivered its answer)."""
        self.binding.end_flow(flow)

    def abort_flow(self, flow: int, error: BaseException) -> None:
        """Abort `flow`: its opener is told with a FlowAborted."""
        if not isinstance(error, FlowAborted):
            error = FlowAborted(
                f"servlet {self.name!r} aborted flow {flow}: {error!r}",
                flow=flow,
                servlet=self.name,
            )
        self.binding.abort_flow(flow, error)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r} ports={list(self.ports)}>"


def _check_emit(servlet: str, spec: PortSpec, message: Any) -> None:
    if not spec.flags & OUTPUT:
        raise PortError(
            f"{servlet}.{spec.name} is an INPUT port: emit on an OUTPUT",
            servlet=servlet,
            port=spec.name,
        )
    if spec.codec is BYTES and type(message) not in (bytes, bytearray, memoryview):
        raise PortError(
            f"{servlet}.{spec.name} is a bytes port and was given a {type(message).__name__}"
            " (define it with codec='json', 'pickle' or 'object')",
            servlet=servlet,
            port=spec.name,
        )


class Execution:
    """One run of a servlet on one message: `port` (the input's name),
    `message`, `flow`, and the ports' flags for this run (see the module
    header)."""

    __slots__ = ("servlet", "port", "message", "flow", "carried", "_flags", "_open")

    def __init__(self, servlet: Servlet, port: str, message: Any, flow: int, carried: int):
        self.servlet = servlet
        self.port = port
        self.message = message
        self.flow = flow
        self.carried = carried & SHARED  # the shared bits the message brought
        self._flags: dict[str, int] | None = None  # ports changed in this run
        self._open = True

    def _base(self, spec: PortSpec) -> int:
        if spec.name == self.port or spec.companion == self.port:
            return spec.flags | self.carried
        return spec.flags

    def get_flags(self, port: str | None = None) -> int:
        """The flags of `port` (default: the input) in this execution."""
        spec = self.servlet.port_spec(self.port if port is None else port)
        flags = self._flags
        if flags is not None and spec.name in flags:
            return flags[spec.name]
        return self._base(spec)

    def set_flags(self, port: str, bits: int) -> int:
        """Set `bits` on `port` for this execution (pipe_cntl SET_FLAG);
        shared bits set on an input reach its companion outputs. Returns
        the new flags."""
        return self._change(port, bits, True)

    def clear_flags(self, port: str, bits: int) -> int:
        """Clear `bits` on `port` for this execution (pipe_cntl CLR_FLAG)."""
        return self._change(port, bits, False)

    def _change(self, port: str, bits: int, on: bool) -> int:
        servlet = self.servlet
        spec = servlet.port_spec(port)
        verb = "set" if on else "clear"
        # A plain int: ~ of an IntFlag member keeps only the enum's own bits.
        bits = int(check_change(servlet.name, spec, bits, verb))
        if not self._open:
            raise PortFlagError(
                f"{servlet.name}.{port}: cannot {verb} flags after the execution returned"
                " (its flags are frozen; the next execution starts from the declared ones)",
                servlet=servlet.name,
                port=port,
            )
        if self._flags is None:
            self._flags = {}
        targets = [spec]
        shared = bits & SHARED
        if shared and not spec.flags & OUTPUT:
            targets += [p for p in servlet.ports.values() if p.companion == spec.name]
        for target in targets:
            b = bits if target is spec else shared
            old = self.get_flags(target.name)
            self._flags[target.name] = (old | b) if on else (old & ~b)
        return self._flags[spec.name]

    def emit(self, port: str, message: Any) -> None:
        """Send `message` on output `port` for this flow, carrying the
        port's shared flags as they are now."""
        servlet = self.servlet
        spec = servlet.port_spec(port)
        _check_emit(servlet.name, spec, message)
        servlet.binding.emit(spec, self.flow, self.get_flags(port) & SHARED, message)

    def abort(self, error: BaseException | str) -> None:
        """Abort this flow (its opener is told)."""
        if isinstance(error, str):
            error = FlowAborted(error, flow=self.flow, servlet=self.servlet.name)
        self.servlet.abort_flow(self.flow, error)

    def __repr__(self) -> str:
        return f"<Execution {self.servlet.name}.{self.port} flow={self.flow}>"
