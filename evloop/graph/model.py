# evloop/graph/model.py
#
# A service graph as a description: servlets by name (a Servlet class or
# its "module:Class" path, arguments, a placement) and edges from output
# ports to input ports; built with the Python API (Graph.add, connect) or
# parsed from the text form (parse_graph; the grammar is in docs/graph.md):
#
#     # comments run to the end of the line
#     servlet up   = tests.graph_servlets:Upper prefix=">" @worker
#     servlet tail = tests.graph_servlets:Tail
#     () -> up.input             # the graph's input: RunningGraph.call()
#     up.output -> tail.input
#     tail.output -> ()          # the graph's output: what call() returns
#
# check() is the load step, and every mistake is found there, never as a
# hang at run time: an unknown servlet or port (with a suggestion), an edge
# from an input or into an output, a port connected twice or not at all,
# codecs that differ, a target that cannot be imported or is not a Servlet,
# init arguments the class refuses, a worker servlet with arguments that
# are not JSON or ports that cannot cross a process, a servlet that runs
# in-process only (a source or sink) placed in a worker. Each error names the
# port as servlet.port and, for the text form, the line.
#
# check() runs every servlet's init step in this process, including the
# ones placed in a worker (init only defines ports: see servlet.py), so the
# wiring is known before any process starts.
"""Graph (the Python API), parse_graph/load_graph (the text form) and the load-time checks. The comment that opens the source file gives the design and its invariants."""

from __future__ import annotations

import difflib
import json
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..errors import GraphError, GraphSyntaxError, PortError, TargetError
from ..spawn import target_name
from .ports import OBJECT, OUTPUT, PortSpec, check_name
from .servlet import Servlet

if TYPE_CHECKING:
    from ..loop import Loop
    from .runtime import RunningGraph

__all__ = ["Graph", "ServletDecl", "Edge", "Plan", "parse_graph", "load_graph", "PLACEMENTS"]

PLACEMENTS = ("inprocess", "worker")
BOUNDARY = "()"  # the graph's own end of an edge (Plumber's `()`)


@dataclass
class ServletDecl:
    """One servlet of a graph: name, target (class or "module:Class"),
    init arguments, placement and the text line that declared it (0: API)."""

    name: str
    target: type[Servlet] | str
    args: dict[str, Any]
    placement: str = "inprocess"
    line: int = 0


@dataclass(frozen=True)
class Edge:
    """output -> input; None on either side is the graph's boundary."""

    src: tuple[str, str] | None
    dst: tuple[str, str] | None
    line: int = 0


@dataclass
class Plan:
    """A checked graph: the servlets with their init run (their `ports`
    known), the edges, and each servlet's importable target path."""

    decls: dict[str, ServletDecl]
    servlets: dict[str, Servlet]
    edges: list[Edge]
    targets: dict[str, str] = field(default_factory=dict)


def _at(line: int) -> str:
    return f"line {line}: " if line else ""


class Graph:
    """A service graph's description; see the module header. add() and
    connect() return the graph, so calls chain."""

    def __init__(self) -> None:
        self.decls: dict[str, ServletDecl] = {}
        self.edges: list[Edge] = []

    def add(
        self,
        name: str,
        target: type[Servlet] | str,
        /,
        *,
        placement: str = "inprocess",
        line: int = 0,
        **args: Any,
    ) -> Graph:
        """A servlet `name` running `target` (a Servlet subclass or its
        "module:Class" path) with init(**args), in this process
        ("inprocess", over mempipes) or in its own supervised worker
        process ("worker", over a Pipe)."""
        try:
            check_name("servlet", name)
        except PortError as exc:
            raise GraphError(f"{_at(line)}{exc}", line=line) from None
        if name in self.decls:
            first = self.decls[name].line
            raise GraphError(
                f"{_at(line)}servlet {name!r} is declared twice"
                + (f" (first at line {first})" if first else ""),
                line=line,
            )
        if placement not in PLACEMENTS:
            raise GraphError(
                f"{_at(line)}servlet {name!r}: placement must be 'inprocess' or 'worker',"
                f" not {placement!r}",
                line=line,
            )
        self.decls[name] = ServletDecl(name, target, dict(args), placement, line)
        return self

    def connect(self, src: str, dst: str, *, line: int = 0) -> Graph:
        """An edge from output port `src` ("servlet.port") to input port
        `dst`; "()" on either side is the graph's input or output."""
        a = _split_end(src, line)
        b = _split_end(dst, line)
        if a is None and b is None:
            raise PortError(f"{_at(line)}an edge needs a servlet on one side: () -> ()", line=line)
        self.edges.append(Edge(a, b, line))
        return self

    def input(self, dst: str) -> Graph:
        """`() -> dst`: call() sends its messages to input port `dst`."""
        return self.connect(BOUNDARY, dst)

    def output(self, src: str) -> Graph:
        """`src -> ()`: what reaches output port `src` answers call()."""
        return self.connect(src, BOUNDARY)

    def check(self) -> Plan:
        """The load step (see the module header): a Plan, or the first
        mistake as a GraphError / PortError naming the port and line."""
        servlets: dict[str, Servlet] = {}
        targets: dict[str, str] = {}
        for decl in self.decls.values():
            servlets[decl.name], targets[decl.name] = _instantiate(decl)
        used: dict[tuple[str, str], Edge] = {}
        for edge in self.edges:
            for end, want_output in ((edge.src, True), (edge.dst, False)):
                if end is None:
                    continue
                spec = _port(servlets, self.decls, end, edge.line)
                if bool(spec.flags & OUTPUT) != want_output:
                    side = "from" if want_output else "into"
                    need = "an OUTPUT" if want_output else "an INPUT"
                    raise PortError(
                        f"{_at(edge.line)}edge {_show(edge)}: {end[0]}.{end[1]} is"
                        f" {'an OUTPUT' if spec.flags & OUTPUT else 'an INPUT'} port; an edge"
                        f" goes {side} {need} port",
                        servlet=end[0], port=end[1], line=edge.line,
                    )  # fmt: skip
                if end in used:
                    prev = used[end].line
                    raise PortError(
                        f"{_at(edge.line)}port {end[0]}.{end[1]} is connected twice"
                        + (f" (first at line {prev})" if prev else "")
                        + ": each port has exactly one edge",
                        servlet=end[0], port=end[1], line=edge.line,
                    )  # fmt: skip
                used[end] = edge
            if edge.src is not None and edge.dst is not None:
                a = servlets[edge.src[0]].ports[edge.src[1]]
                b = servlets[edge.dst[0]].ports[edge.dst[1]]
                if a.codec_name != b.codec_name:
                    raise PortError(
                        f"{_at(edge.line)}edge {_show(edge)} joins a {a.codec_name!r} port to a"
                        f" {b.codec_name!r} port: both ends must use the same codec",
                        servlet=edge.dst[0], port=edge.dst[1], line=edge.line,
                    )  # fmt: skip
        for name, servlet in servlets.items():
            decl = self.decls[name]
            for spec in servlet.ports.values():
                if (name, spec.name) not in used:
                    raise PortError(
                        f"{_at(decl.line)}port {name}.{spec.name} ({spec.direction}) is not"
                        " connected: every port needs an edge (to another servlet, or to"
                        " () for the graph's input/output)",
                        servlet=name, port=spec.name, line=decl.line,
                    )  # fmt: skip
        return Plan(dict(self.decls), servlets, list(self.edges), targets)

    def start(self, loop: Loop) -> RunningGraph:
        """check(), then run the graph on `loop` (see runtime.py)."""
        from .runtime import RunningGraph

        return RunningGraph(loop, self.check())

    @classmethod
    def parse(cls, text: str) -> Graph:
        return parse_graph(text)


def _show(edge: Edge) -> str:
    def end(e: tuple[str, str] | None) -> str:
        return BOUNDARY if e is None else f"{e[0]}.{e[1]}"

    return f"{end(edge.src)} -> {end(edge.dst)}"


def _split_end(text: str, line: int) -> tuple[str, str] | None:
    text = text.strip()
    if text == BOUNDARY:
        return None
    servlet, dot, port = text.partition(".")
    if not dot or not servlet or not port or "." in port:
        raise PortError(
            f"{_at(line)}{text!r} is not a port: write servlet.port (or () for the graph's"
            " boundary)",
            line=line,
        )
    return servlet, port


def _suggest(word: str, choices: Any) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _port(
    servlets: dict[str, Servlet], decls: dict[str, ServletDecl], end: tuple[str, str], line: int
) -> PortSpec:
    name, port = end
    servlet = servlets.get(name)
    if servlet is None:
        raise PortError(
            f"{_at(line)}unknown servlet {name!r} in port {name}.{port}"
            + _suggest(name, servlets)
            + f"; declared: {', '.join(servlets) or 'none'}",
            servlet=name, port=port, line=line,
        )  # fmt: skip
    spec = servlet.ports.get(port)
    if spec is None:
        raise PortError(
            f"{_at(line)}servlet {name!r} has no port {port!r}" + _suggest(port, servlet.ports)
            + f"; its ports: {', '.join(servlet.ports) or 'none'}",
            servlet=name, port=port, line=line,
        )  # fmt: skip
    return spec


def _instantiate(decl: ServletDecl) -> tuple[Servlet, str]:
    at = _at(decl.line)
    target = decl.target
    if isinstance(target, str):
        from ..worker import import_target

        if ":" not in target:
            raise GraphError(
                f"{at}servlet {decl.name!r}: target {target!r} must be 'module:Class'",
                line=decl.line,
            )
        try:
            target = import_target(target)
        except Exception as exc:
            raise GraphError(
                f"{at}servlet {decl.name!r}: cannot import {decl.target!r}: {exc!r}",
                line=decl.line,
            ) from exc
    if not (isinstance(target, type) and issubclass(target, Servlet)):
        raise GraphError(
            f"{at}servlet {decl.name!r}: {decl.target!r} is not a Servlet subclass",
            line=decl.line,
        )
    path = decl.target if isinstance(decl.target, str) else ""
    if decl.placement == "worker":
        if target.in_process_only:
            raise GraphError(
                f"{at}servlet {decl.name!r} ({target.__name__}) runs in-process only: it"
                " opens or ends flows, or holds this process's resources",
                line=decl.line,
            )
        if not path:
            try:
                path = target_name(target)
            except TargetError as exc:
                raise GraphError(
                    f"{at}servlet {decl.name!r} cannot run in a worker: {exc}", line=decl.line
                ) from exc
        try:
            json.dumps(decl.args)
        except (TypeError, ValueError) as exc:
            raise GraphError(
                f"{at}servlet {decl.name!r}: a worker is given its arguments as JSON, and"
                f" these are not: {exc}",
                line=decl.line,
            ) from None
    servlet = target()
    try:
        servlet._run_init(decl.name, decl.args)
    except PortError as exc:
        if decl.line and not exc.line:
            exc.line = decl.line
            exc.args = (f"{at}{exc}",)
        raise
    except TypeError as exc:
        raise GraphError(
            f"{at}servlet {decl.name!r}: {target.__name__}.init() refused its arguments"
            f" {sorted(decl.args)}: {exc}",
            line=decl.line,
        ) from exc
    if decl.placement == "worker":
        for spec in servlet.ports.values():
            if spec.codec is OBJECT:
                raise PortError(
                    f"{at}port {decl.name}.{spec.name} uses the in-process 'object' codec, so"
                    f" servlet {decl.name!r} cannot be placed in a worker",
                    servlet=decl.name, port=spec.name, line=decl.line,
                )  # fmt: skip
    return servlet, path


# -- the text form -------------------------------------------------------------------

_TOKEN = re.compile(r'[^\s"#]*"(?:[^"\\]|\\.)*"|[^\s#]+|#.*')
_SERVLET = re.compile(r"servlet\s+(\S+)\s*=\s*(.*)\Z")


def parse_graph(text: str) -> Graph:
    """A Graph from the text form (see the module header and
    docs/graph.md); GraphSyntaxError for a line that is neither a servlet
    declaration nor an edge. The load-time checks (ports, edges) are
    check()'s, and name the lines too."""
    graph = Graph()
    for number, raw in enumerate(text.splitlines(), 1):
        tokens = _TOKEN.findall(raw)
        if tokens and tokens[-1].startswith("#"):
            tokens.pop()
        if not tokens:
            continue
        line = " ".join(tokens)
        if tokens[0] == "servlet":
            _parse_servlet(graph, line, number, raw)
        elif "->" in line:
            src, _, dst = line.partition("->")
            if "->" in dst or not src.strip() or not dst.strip():
                raise GraphSyntaxError(
                    f"line {number}: an edge is `servlet.output -> servlet.input`: {raw.strip()!r}",
                    line=number,
                )
            graph.connect(src, dst, line=number)
        else:
            raise GraphSyntaxError(
                f"line {number}: expected `servlet NAME = module:Class [key=value ...]"
                f" [@worker]` or `a.output -> b.input`, got {raw.strip()!r}",
                line=number,
            )
    return graph


def _parse_servlet(graph: Graph, line: str, number: int, raw: str) -> None:
    m = _SERVLET.match(line)
    if m is None or not m.group(2):
        raise GraphSyntaxError(
            f"line {number}: a servlet is `servlet NAME = module:Class [key=value ...]"
            f" [@worker]`: {raw.strip()!r}",
            line=number,
        )
    name = m.group(1)
    words = _TOKEN.findall(m.group(2))
    target = words[0]
    placement = "inprocess"
    args: dict[str, Any] = {}
    for word in words[1:]:
        if word.startswith("@"):
            placement = word[1:]
            if placement not in PLACEMENTS:
                raise GraphSyntaxError(
                    f"line {number}: unknown placement {word!r}: @inprocess or @worker",
                    line=number,
                )
            continue
        key, eq, value = word.partition("=")
        if not eq or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
            raise GraphSyntaxError(
                f"line {number}: servlet {name!r}: an argument is key=value, got {word!r}",
                line=number,
            )
        try:
            args[key] = json.loads(value)
        except ValueError:
            if value.startswith('"'):
                raise GraphSyntaxError(
                    f"line {number}: servlet {name!r}: bad quoted value in {word!r}", line=number
                ) from None
            args[key] = value  # a bare word is a string: host=127.0.0.1
    graph.add(name, target, placement=placement, line=number, **args)


def load_graph(path: str) -> Graph:
    """parse_graph() of a file."""
    with open(path, encoding="utf-8") as f:
        return parse_graph(f.read())
