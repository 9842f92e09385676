# evloop/graph/__init__.py
#
# Named ports and a service graph, after Plumber: servlets declare ports in
# their init step, a graph wires output ports to input ports (Python API or
# text form), and each servlet runs in-process (over mempipes) or in its own
# supervised worker process (over a Pipe) with the same code. See
# docs/graph.md. Modules: ports (flags, codecs, the define/change rules),
# servlet (Servlet, Execution), model (Graph, the text form, the load-time
# checks), runtime (RunningGraph: flows, stop order), worker (the worker
# process side), tcp (the listening servlet: companion pairs, persist pool),
# http (evloop.http's stages as servlets; imported on its own).
"""Named ports and a service graph (Plumber's pipes on evloop): Servlet, Graph, parse_graph, RunningGraph, TcpServlet. See docs/graph.md."""

from __future__ import annotations

from .model import Graph, load_graph, parse_graph
from .ports import INPUT, OUTPUT, PERSIST, PRIVATE_USER, SHARED, SHARED_USER, PortFlags, PortSpec
from .runtime import GraphStatistics, RunningGraph
from .servlet import Execution, Servlet
from .tcp import TcpServlet, TcpStatistics

__all__ = [
    "Graph", "parse_graph", "load_graph", "RunningGraph", "GraphStatistics",
    "Servlet", "Execution", "PortFlags", "PortSpec", "TcpServlet", "TcpStatistics",
    "INPUT", "OUTPUT", "PERSIST", "PRIVATE_USER", "SHARED_USER", "SHARED",
]  # fmt: skip
