# evloop.graph.http: the HTTP stages as a service graph (what
# examples/http_server.py runs), checked at the graph's level: flows per
# request, PERSIST deciding keep-alive, the connection's close reaching the
# handle servlet, and the stop. tests/test_http.py drives the example itself
# with curl and Python clients.
from __future__ import annotations

import socket

import pytest

from evloop import Loop
from evloop.errors import GraphError
from evloop.graph import RunningGraph
from evloop.graph.http import Handle, HttpIn, http_graph
from evloop.http import Request, Response
from tests.test_graph import WAIT, Client, stop


def hello(req: Request, resp: Response) -> None:
    if req.target == b"/hold":
        return  # never answers: its flow stays open
    resp.send(200, b"hi " + req.target, [(b"content-type", b"text/plain")])


def start(loop: Loop) -> tuple[RunningGraph, HttpIn]:
    graph = http_graph(hello).start(loop)
    http_in = graph.servlet("http_in")
    assert isinstance(http_in, HttpIn)
    return graph, http_in


def test_keep_alive_requests_are_flows_and_the_connection_persists(loop: Loop) -> None:
    graph, http_in = start(loop)
    client = Client(loop, http_in.port)
    client.sock.sendall(b"GET /a HTTP/1.1\r\nhost: x\r\n\r\nGET /b HTTP/1.1\r\nhost: x\r\n\r\n")
    client.wait_for(b"hi /", 2)
    assert client.got.index(b"hi /a") < client.got.index(b"hi /b")
    assert not client.eof and len(http_in.peers) == 1  # PERSIST kept it open
    stats = graph.statistics()
    assert (stats.flows, stats.open_flows, stats.aborted) == (2, 0, 0)
    client.close()
    stop(loop, graph)


def test_a_request_without_keep_alive_closes_after_its_response(loop: Loop) -> None:
    graph, http_in = start(loop)
    client = Client(loop, http_in.port)
    client.sock.sendall(b"GET /c HTTP/1.0\r\n\r\n")
    client.wait_eof()
    assert b"hi /c" in client.got and b"connection: close" in client.got.lower()
    assert loop.run_until(lambda: not http_in.peers, timeout=WAIT)
    client.close()
    stop(loop, graph)


def test_a_client_gone_mid_body_ends_its_flow_and_reaches_handle(loop: Loop) -> None:
    graph, http_in = start(loop)
    handle = graph.servlet("handle")
    assert isinstance(handle, Handle)
    client = Client(loop, http_in.port)
    client.sock.sendall(b"POST /hold HTTP/1.1\r\nhost: x\r\ncontent-length: 10\r\n\r\nabc")
    assert loop.run_until(
        lambda: graph.statistics().open_flows == 1 and bool(handle.stages), timeout=WAIT
    )
    client.sock.shutdown(socket.SHUT_WR)  # gone mid-body: the request can never complete
    assert loop.run_until(lambda: not handle.stages, timeout=WAIT)  # Closed reached it
    assert graph.statistics().open_flows == 0 and not http_in.peers
    client.close()
    stop(loop, graph)


def test_shutdown_closes_idle_keep_alive_connections(loop: Loop) -> None:
    graph, http_in = start(loop)
    client = Client(loop, http_in.port)
    client.sock.sendall(b"GET /d HTTP/1.1\r\nhost: x\r\n\r\n")
    client.wait_for(b"hi /d")
    stop(loop, graph)
    client.wait_eof()
    assert graph.stop_log[0] == ("drain", "http_in")
    client.close()


def test_a_respond_servlet_without_its_source_fails_the_start(loop: Loop) -> None:
    graph = http_graph(hello)
    graph.decls["respond"].args["source"] = "nope"
    with pytest.raises(GraphError, match="source='nope' names no HttpIn"):
        graph.start(loop)
