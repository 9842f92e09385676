# evloop/graph/tcp.py
#
# TcpServlet: Plumber's TCP input/output pipes as one listening servlet.
# Each accepted connection is a companion pair: its read side emits the
# requests on the output port `request`, its write side takes the answers
# on the input port `response`; a flow ties the two together (one flow per
# request), so the answer finds its connection whoever produced it.
#
# A request is one line (up to and including b"\n", at most max_line
# bytes). While a request's flow is open the next request waits in the
# connection's read buffer (reading goes on, so a client that goes away is
# seen at once), so answers leave in order.
# The answer is written, the flow ends, and then the flags the answer
# carried decide the connection's fate, as Plumber's TCP module does:
#
#   PERSIST set    the connection goes to the inactive pool: reading
#                  resumes, and if no request comes within `ttl` seconds it
#                  is closed (expired); a request that does come takes it
#                  out of the pool again (reused)
#   PERSIST clear  the connection is closed once the answer has left
#
# PERSIST is a shared flag: the servlet that handles the request sets it on
# its input port (keep-alive), the flag passes to its companion output and
# travels with the answer to `response`.
#
# A connection that closes with a request in flight aborts that flow
# (FlowAborted); a flow the graph aborts closes its connection. drain()
# stops accepting and closes the idle pooled connections; the active ones
# are closed after their answer. stop() closes everything.
"""TcpServlet: a listening servlet whose connections are companion port pairs, with a persist pool and TTL. The comment that opens the source file gives the design and its invariants."""

from __future__ import annotations

import functools
from dataclasses import dataclass

from ..conn import Conn
from ..errors import FlowAborted, ReadLimitError
from ..loop import TimerHandle
from ..server import Server, listen_tcp
from .ports import INPUT, OUTPUT, PERSIST
from .servlet import Execution, Servlet

__all__ = ["TcpServlet", "TcpStatistics"]


@dataclass(frozen=True)
class TcpStatistics:
    accepted: int
    requests: int
    pooled: int  # times a connection went to the inactive pool
    reused: int  # requests served on a connection taken from the pool
    expired: int  # pooled connections closed by the TTL
    closed: int  # connections closed after an answer without PERSIST
    live: int
    idle: int  # in the pool now


class _Peer:
    __slots__ = ("conn", "flow", "timer", "pooled")

    def __init__(self, conn: Conn):
        self.conn = conn
        self.flow = 0
        self.timer: TimerHandle | None = None
        self.pooled = False


class TcpServlet(Servlet):
    """Listens on host:port; see the module header. `port` (after start)
    is the port it listens on."""

    in_process_only = True

    def init(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        ttl: float = 30.0,
        max_line: int = 64 * 1024,
        reuse_port: bool = False,
    ) -> None:
        if not ttl > 0:
            raise ValueError(f"ttl must be > 0, got {ttl}")
        self.host = host
        self.want_port = port
        self.ttl = ttl
        self.max_line = max_line
        self.reuse_port = reuse_port
        self.define("request", OUTPUT)
        self.define("response", INPUT)
        self.server: Server | None = None
        self.peers: dict[Conn, _Peer] = {}
        self.flows: dict[int, _Peer] = {}
        self.draining = False
        self.accepted = self.requests = self.pooled = 0
        self.reused = self.expired = self.closed = 0

    @property
    def port(self) -> int:
        assert self.server is not None, "not started"
        return self.server.port

    def start(self) -> None:
        self.server = listen_tcp(
            self.loop, self.host, self.want_port, self._on_conn, reuse_port=self.reuse_port
        )

    def _on_conn(self, conn: Conn) -> None:
        if self.draining:
            conn.close()
            return
        self.accepted += 1
        peer = _Peer(conn)
        self.peers[conn] = peer
        conn.on_data = lambda c, peer=peer: self._on_data(peer)
        conn.on_close = lambda exc, peer=peer: self._on_close(peer, exc)

    def _on_data(self, peer: _Peer) -> None:
        conn = peer.conn
        if peer.flow or conn.closing:
            # One request at a time: the rest waits in the read buffer (still
            # reading, so that a client that goes away is seen at once).
            return
        try:
            line = conn.read_until(b"\n", min(self.max_line, conn.read_limit))
        except ReadLimitError:
            conn.abort()
            return
        if line is None:
            return
        if peer.pooled:
            self._unpool(peer)
            self.reused += 1
        self.requests += 1
        flow = self.open_flow(functools.partial(self._flow_aborted, peer))
        peer.flow = flow
        self.flows[flow] = peer
        self.emit("request", line, flow=flow)

    def exec(self, ex: Execution) -> None:
        peer = self.flows.pop(ex.flow, None)
        if peer is None:
            return  # its connection is gone
        peer.flow = 0
        self.end_flow(ex.flow)
        conn = peer.conn
        if conn.closing:
            return
        conn.write(ex.message)
        if ex.get_flags("response") & PERSIST and not self.draining:
            self.pooled += 1
            peer.pooled = True
            peer.timer = self.loop.call_later(self.ttl, self._expire, peer)
            if conn.read_buffered:  # the next request is here already
                self.loop.call_soon(self._on_data, peer)
        else:
            self.closed += 1
            conn.close()

    def _unpool(self, peer: _Peer) -> None:
        peer.pooled = False
        if peer.timer is not None:
            peer.timer.cancel()
            peer.timer = None

    def _expire(self, peer: _Peer) -> None:
        peer.timer = None
        if peer.pooled:
            self.expired += 1
            peer.pooled = False
            peer.conn.close()

    def _flow_aborted(self, peer: _Peer, exc: FlowAborted) -> None:
        self.flows.pop(peer.flow, None)
        peer.flow = 0
        peer.conn.abort()

    def _on_close(self, peer: _Peer, _exc: BaseException | None) -> None:
        self.peers.pop(peer.conn, None)
        self._unpool(peer)
        flow = peer.flow
        if flow:
            peer.flow = 0
            self.flows.pop(flow, None)
            self.abort_flow(
                flow,
                FlowAborted(
                    f"servlet {self.name!r}: the client closed the connection with flow"
                    f" {flow} in flight",
                    flow=flow, servlet=self.name,
                ),
            )  # fmt: skip

    def drain(self) -> None:
        self.draining = True
        if self.server is not None:
            self.server.close()
        for peer in list(self.peers.values()):
            if peer.pooled:
                self._unpool(peer)
                peer.conn.close()

    @property
    def drained(self) -> bool:
        return not self.flows

    def stop(self) -> None:
        self.draining = True
        if self.server is not None:
            self.server.close()
        for peer in list(self.peers.values()):
            self._unpool(peer)
            peer.conn.close()

    def statistics(self) -> TcpStatistics:
        idle = sum(1 for p in self.peers.values() if p.pooled)
        return TcpStatistics(
            self.accepted, self.requests, self.pooled, self.reused, self.expired, self.closed,
            len(self.peers), idle,
        )  # fmt: skip

    def __repr__(self) -> str:
        return f"<TcpServlet {self.name!r} live={len(self.peers)} flows={len(self.flows)}>"
