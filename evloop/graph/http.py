# evloop/graph/http.py
#
# HTTP/1.1 as a service graph of three servlets (docs/http.md, "Running it
# as a service graph"; docs/graph.md):
#
#     http_in.requests -> handle.requests
#     handle.responses -> respond.responses
#
# http_in (HttpIn) listens; each accepted connection is a companion pair,
#   its read side parsed by HttpRequestParser and its write side owned by a
#   Responder, both in one HttpConnection (the pipelining window, header
#   timeout, 100 Continue, EOF and close: the glue evloop.http already has,
#   unchanged). Where that glue would call the handle stage, it emits on the
#   port `requests` instead: each message as (connection id, message). A
#   request is a flow, opened at its head; its head carries PERSIST when
#   the request allows keep-alive. The Responder's aborts (a response that
#   can no longer be sent) and the connection's close go the same way, so
#   handle hears of everything in the order it happened.
# handle (Handle) keeps one HandlerStage per connection, running the user's
#   handler unchanged. Its output `responses` is the companion of
#   `requests`: each response message carries its request's flow and the
#   shared flags the head brought (PERSIST, unless the servlet cleared it).
# respond (Respond) feeds each response message to the Responder of its
#   connection, found in http_in's table (the companion output of the
#   connection: a resource shared in-process, so these servlets run
#   in-process; their ports use the 'object' codec). A response whose
#   PERSIST flag is clear closes the connection after it; one that keeps it
#   leaves the connection open for the next request (the inactive pool is
#   the connection's idle_timeout). A flow ends once its request has been
#   read whole and its response has been sent whole.
#
# Stopping: http_in drains like Server.shutdown (stop accepting, close every
# connection after what it has queued); its flows are aborted if their
# connection closes first.
"""HttpIn, Handle, Respond: evloop.http's parse/handle/respond stages as servlets of a service graph, and http_graph() to wire them. The comment that opens the source file gives the design and its invariants."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..conn import Conn
from ..errors import FlowAborted, GraphError
from ..http import (
    DEFAULT_HEADER_TIMEOUT,
    DEFAULT_MAX_BODY,
    DEFAULT_MAX_HEADER,
    DEFAULT_MAX_PIPELINE,
    Handler,
    HandlerStage,
    HttpConnection,
    RequestAbort,
    RequestEnd,
    RequestHead,
    RequestMessage,
    ResponseAbort,
    ResponseEnd,
    ResponseHead,
)
from ..server import Server, listen_tcp
from .model import Graph
from .ports import INPUT, OUTPUT, PERSIST, SHARED
from .servlet import Execution, Servlet

__all__ = ["HttpIn", "Handle", "Respond", "Closed", "http_graph"]


class Closed:
    """http_in -> handle: connection `cid` is gone (`error` says how)."""

    __slots__ = ("error",)

    def __init__(self, error: BaseException):
        self.error = error


class _Peer(HttpConnection):
    """One accepted connection: HttpConnection's glue, with its handle stage
    reached over the graph (it is its own `stage`)."""

    __slots__ = ("servlet", "cid", "flows", "_request_done", "_response_done")

    def __init__(self, conn: Conn, servlet: HttpIn, cid: int, **options: Any):
        self.servlet = servlet
        self.cid = cid
        self.flows: dict[int, int] = {}  # seq -> flow
        self._request_done: set[int] = set()
        self._response_done: set[int] = set()
        super().__init__(conn, _no_handler, stage=self, **options)

    # -- HandleStage: what the glue tells the handle stage -----------------------------

    def feed(self, msg: RequestMessage | ResponseAbort) -> None:
        servlet = self.servlet
        seq = msg.seq
        t = type(msg)
        if t is RequestHead:
            assert isinstance(msg, RequestHead)
            flow = servlet.open_flow(None)
            self.flows[seq] = flow
            flags = PERSIST if msg.keep_alive else 0
            servlet.emit("requests", (self.cid, msg), flow=flow, flags=flags)
            if msg.body == "none":
                self.finished(seq, self._request_done)
            return
        flow = self.flows.get(seq, 0)
        servlet.emit("requests", (self.cid, msg), flow=flow)
        if t is RequestEnd or t is RequestAbort:
            self.finished(seq, self._request_done)
        elif t is ResponseAbort:
            self.finished(seq, self._request_done, self._response_done)

    def abort_all(self, error: BaseException) -> None:
        servlet = self.servlet
        servlet.peers.pop(self.cid, None)
        servlet.emit("requests", (self.cid, Closed(error)), flow=0)
        flows, self.flows = self.flows, {}
        for flow in flows.values():
            servlet.abort_flow(flow, FlowAborted(f"the HTTP connection closed: {error}", flow=flow))

    def finished(self, seq: int, *sides: set[int]) -> None:
        """One side of request `seq` is complete; both: its flow ends."""
        for side in sides:
            side.add(seq)
        if seq in self._request_done and seq in self._response_done:
            self._request_done.discard(seq)
            self._response_done.discard(seq)
            flow = self.flows.pop(seq, 0)
            if flow:
                self.servlet.end_flow(flow)


def _no_handler(_req: Any, _resp: Any) -> None:
    raise AssertionError("the graph's handle servlet serves requests, not HttpConnection")


class HttpIn(Servlet):
    """The listening servlet: connections in, request messages out on
    `requests` (see the module header). `port` after start."""

    in_process_only = True

    def init(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        reuse_port: bool = False,
        tls_cert: str | None = None,
        tls_key: str | None = None,
        idle_timeout: float | None = 60.0,
        max_header: int = DEFAULT_MAX_HEADER,
        max_body: int = DEFAULT_MAX_BODY,
        max_pipeline: int = DEFAULT_MAX_PIPELINE,
        header_timeout: float | None = DEFAULT_HEADER_TIMEOUT,
        drain_deadline: float = 10.0,
    ) -> None:
        self.host = host
        self.want_port = port
        self.reuse_port = reuse_port
        self.tls = (tls_cert, tls_key)
        self.idle_timeout = idle_timeout
        self.options = {
            "max_header": max_header, "max_body": max_body, "max_pipeline": max_pipeline,
            "header_timeout": header_timeout,
        }  # fmt: skip
        self.drain_deadline = drain_deadline
        self.define("requests", OUTPUT, codec="object")
        self.server: Server | None = None
        self.peers: dict[int, _Peer] = {}
        self._next = 0

    @property
    def port(self) -> int:
        assert self.server is not None, "not started"
        return self.server.port

    def start(self) -> None:
        kwargs: dict[str, Any] = {"conn_kwargs": {"idle_timeout": self.idle_timeout}}
        cert, key = self.tls
        if cert:
            from ..tls import server_context, tls_server

            kwargs["conn_factory"] = tls_server(server_context(cert, key))
        self.server = listen_tcp(
            self.loop, self.host, self.want_port, self._on_conn, reuse_port=self.reuse_port,
            **kwargs,
        )  # fmt: skip
        self.resources[f"http:{self.name}"] = self

    def _on_conn(self, conn: Conn) -> None:
        self._next += 1
        self.peers[self._next] = _Peer(conn, self, self._next, **self.options)

    def drain(self) -> None:
        if self.server is not None:
            self.server.shutdown(self.drain_deadline)

    @property
    def drained(self) -> bool:
        return self.server is None or not self.server.connections()

    def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            for conn in self.server.connections():
                conn.abort()


def _source(servlet: Servlet, source: str) -> HttpIn:
    # Found at start: the HttpIn servlet starts first (it is a source).
    http_in = servlet.resources.get(f"http:{source}")
    if not isinstance(http_in, HttpIn):
        raise GraphError(
            f"servlet {servlet.name!r}: source={source!r} names no HttpIn servlet of this graph"
        )
    return http_in


class Handle(Servlet):
    """The handle servlet: one HandlerStage per connection, running
    `handler(request, response)` (a callable, or "module:factory" called
    with the loop to make one)."""

    in_process_only = True

    def init(self, handler: Handler | str, source: str = "http_in") -> None:
        self.handler_spec = handler
        self.source = source
        self.define("requests", INPUT, codec="object")
        self.define("responses", OUTPUT, codec="object", companion="requests")
        self.stages: dict[int, HandlerStage] = {}
        self.flows: dict[tuple[int, int], tuple[int, int]] = {}  # (cid, seq) -> flow, flags

    def start(self) -> None:
        self.http_in = _source(self, self.source)
        spec = self.handler_spec
        if isinstance(spec, str):
            from ..worker import import_target

            self.handler: Handler = import_target(spec)(self.loop)
        else:
            self.handler = spec

    def exec(self, ex: Execution) -> None:
        cid, msg = ex.message
        if type(msg) is Closed:
            stage = self.stages.pop(cid, None)
            if stage is not None:
                stage.abort_all(msg.error)
            for key in [k for k in self.flows if k[0] == cid]:
                del self.flows[key]
            return
        stage = self.stages.get(cid)
        if stage is None:
            stage = self.stages[cid] = self._stage(cid)
        if type(msg) is RequestHead:
            self.flows[(cid, msg.seq)] = (ex.flow, ex.get_flags("responses") & SHARED)
        stage.feed(msg)

    def _stage(self, cid: int) -> HandlerStage:
        peer = self.http_in.peers.get(cid)
        conn = peer.conn if peer is not None else None

        def sink(msg: Any) -> None:
            key = (cid, msg.seq)
            t = type(msg)
            done = (
                t is ResponseEnd
                or t is ResponseAbort
                or (t is ResponseHead and msg.body is not None)
            )
            flow, flags = (self.flows.pop(key) if done else self.flows.get(key)) or (0, 0)
            self.emit("responses", (cid, msg), flow=flow, flags=flags)

        def writable() -> bool:
            return conn is None or conn.writable

        def when_writable(fn: Callable[[], Any]) -> Any:
            return conn.when_writable(fn) if conn is not None else self.loop.call_soon(fn)

        return HandlerStage(
            self.handler, sink, on_error=self.loop.call_exception_handler,
            writable=writable, when_writable=when_writable,
        )  # fmt: skip


class Respond(Servlet):
    """The respond servlet: response messages to the Responder of their
    connection; the PERSIST flag decides keep-alive (see the module header)."""

    in_process_only = True

    def init(self, source: str = "http_in") -> None:
        self.source = source
        self.define("responses", INPUT, codec="object")

    def start(self) -> None:
        self.http_in = _source(self, self.source)

    def exec(self, ex: Execution) -> None:
        cid, msg = ex.message
        peer = self.http_in.peers.get(cid)
        if peer is None:
            return  # the connection is gone; handle has been told
        t = type(msg)
        if t is ResponseHead and not ex.get_flags() & PERSIST:
            peer.responder.keep_alive(msg.seq, False)
        peer.responder.feed(msg)
        if t is ResponseEnd or t is ResponseAbort or (t is ResponseHead and msg.body is not None):
            peer.finished(msg.seq, peer._response_done)


def http_graph(handler: Handler | str, **http_in: Any) -> Graph:
    """The three servlets wired (http_in, handle, respond), all in-process;
    `http_in` are HttpIn's options (host, port, reuse_port, tls_cert...)."""
    return (
        Graph()
        .add("http_in", HttpIn, **http_in)
        .add("handle", Handle, handler=handler)
        .add("respond", Respond)
        .connect("http_in.requests", "handle.requests")
        .connect("handle.responses", "respond.responses")
    )
