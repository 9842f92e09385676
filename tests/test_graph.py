# The service graph (evloop.graph): ports and their flags, the load-time
# checks of the Python API and the text form, in-process against worker
# placement, crashes, the TCP servlet's companion pairs and persist pool,
# and the stop order. Real processes and sockets; VirtualClock for TTLs and
# deadlines; no sleeps.
from __future__ import annotations

import os
import signal
import socket
from typing import Any

import pytest

from evloop import Loop
from evloop.errors import (
    FlowAborted,
    GraphError,
    GraphStopped,
    GraphSyntaxError,
    PortDefinitionError,
    PortError,
    PortFlagError,
    ServletCrashed,
    ServletError,
)
from evloop.future import Future
from evloop.graph import (
    INPUT,
    OUTPUT,
    PERSIST,
    Execution,
    Graph,
    RunningGraph,
    Servlet,
    TcpServlet,
    load_graph,
    parse_graph,
)
from evloop.loop import EVENT_READ
from tests.graph_servlets import KEEP, Flags, Hold, Shifty, Sink, Upper

WAIT = 20.0


def result(loop: Loop, fut: Future[Any]) -> Any:
    assert loop.run_until(fut.done, timeout=WAIT), "the flow never finished"
    return fut.result()


def failure(loop: Loop, fut: Future[Any]) -> BaseException:
    assert loop.run_until(fut.done, timeout=WAIT), "the flow never finished"
    exc = fut.exception()
    assert exc is not None, f"the flow succeeded: {fut.result()!r}"
    return exc


def stop(loop: Loop, graph: RunningGraph, deadline: float = 5.0) -> None:
    done: list[RunningGraph] = []
    graph.shutdown(deadline, done.append)
    assert loop.run_until(lambda: bool(done), timeout=WAIT), graph
    assert graph.closed


def reaped(pid: int) -> bool:
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return True
    return False


# -- ports: define --------------------------------------------------------------------------


def test_define_outside_init_is_refused() -> None:
    plan = Graph().add("u", Upper).input("u.input").output("u.output").check()
    servlet = plan.servlets["u"]
    assert set(servlet.ports) == {"input", "output"}
    with pytest.raises(PortDefinitionError, match="outside init") as info:
        servlet.define("late", INPUT)
    assert info.value.servlet == "u" and info.value.port == "late"


class _Defines(Servlet):
    def init(self, name: Any = "p", flags: Any = INPUT, companion: Any = None) -> None:
        self.define("first", INPUT)
        self.define(name, flags, companion=companion)


@pytest.mark.parametrize(
    "args, match",
    [
        ({"flags": 0x0004_0000}, "bits evloop reserves"),
        ({"flags": "INPUT"}, "must be an int"),
        ({"flags": True}, "must be an int"),
        ({"name": "a.b"}, "must be an identifier"),
        ({"name": "first"}, "defined twice"),
        ({"flags": INPUT, "companion": "first"}, "only an OUTPUT port has a companion"),
        ({"flags": OUTPUT, "companion": "nope"}, "not defined"),
    ],
)
def test_bad_definitions_are_refused_at_load_time(args: dict[str, Any], match: str) -> None:
    graph = Graph().add("d", _Defines, **args)
    with pytest.raises(PortDefinitionError, match=match) as info:
        graph.check()
    assert info.value.servlet == "d"


# -- flags at run time --------------------------------------------------------------------


class _Probe(Servlet):
    """Tries the forbidden flag changes and reports what each raised."""

    def init(self) -> None:
        self.kept: list[Execution] = []
        self.define("input", INPUT)
        self.define("output", OUTPUT, companion="input")

    def exec(self, ex: Execution) -> None:
        errors = []
        for port, op, bits in (
            ("input", ex.set_flags, OUTPUT),
            ("output", ex.clear_flags, OUTPUT),
            ("input", ex.set_flags, 0x0004_0000),
        ):
            try:
                op(port, bits)
            except PortFlagError as exc:
                errors.append(str(exc))
        self.kept.append(ex)
        ex.emit("output", "\n".join(errors).encode())


def test_the_direction_cannot_change_and_reserved_bits_are_refused(loop: Loop) -> None:
    graph = Graph().add("p", _Probe).input("p.input").output("p.output").start(loop)
    text = result(loop, graph.call(b"x")).decode()
    assert text.count("direction of a port cannot change") == 2
    assert "evloop reserves" in text
    # Once the execution returned, its flags are frozen.
    probe = graph.servlet("p")
    assert isinstance(probe, _Probe)
    with pytest.raises(PortFlagError, match="after the execution returned"):
        probe.kept[0].set_flags("input", PERSIST)
    stop(loop, graph)


def _flags_graph(placement: str) -> Graph:
    return (
        Graph()
        .add("f", Flags, placement=placement)
        .add("g", Flags)
        .add("s1", Sink)
        .add("s2", Sink)
        .input("f.input")
        .connect("f.output", "g.input")
        .connect("f.side", "s1.input")
        .connect("g.side", "s2.input")
        .output("g.output")
    )


@pytest.mark.parametrize("placement", ["inprocess", "worker"])
def test_flag_changes_do_not_outlive_the_execution_and_shared_bits_travel(
    loop: Loop, placement: str
) -> None:
    graph = _flags_graph(placement).start(loop)
    graph.wait_ready(WAIT)
    s1, s2 = graph.servlet("s1"), graph.servlet("s2")
    assert isinstance(s1, Sink) and isinstance(s2, Sink)
    msg, carried = result(loop, graph.call_with_flags(b"set"))
    assert msg == b"set"
    # f set PERSIST | KEEP (shared) | 0x1 (private) on its input; the shared
    # bits reached its companion output, travelled with the message, and g
    # saw them on its input (g's own private 0x1 is its own) and its
    # companion output, and they reached the graph's output.
    assert s1.got[-1] == [0, PERSIST | KEEP | 0x1, OUTPUT | PERSIST | KEEP]
    assert loop.run_until(lambda: len(s2.got) == 1, timeout=WAIT)
    assert s2.got[-1] == [PERSIST | KEEP, PERSIST | KEEP | 0x1, OUTPUT | PERSIST | KEEP]
    assert carried == PERSIST | KEEP
    # The next execution starts from the declared flags again.
    msg, carried = result(loop, graph.call_with_flags(b"none"))
    assert s1.got[-1] == [0, 0, OUTPUT] and carried == 0
    # Flags the flow brings in (call's) can be cleared on the way.
    msg, carried = result(loop, graph.call_with_flags(b"clear", flags=PERSIST | KEEP))
    assert s1.got[-1] == [PERSIST | KEEP, KEEP, OUTPUT | KEEP] and carried == KEEP
    stop(loop, graph)


# -- the load-time checks -----------------------------------------------------------------

GOOD = """\
# two servlets in a row
servlet up   = tests.graph_servlets:Upper prefix=">"
servlet down = tests.graph_servlets:Upper prefix="<" @inprocess

() -> up.input
up.output -> down.input     # a trailing comment
down.output -> ()
"""


def test_text_form_runs(loop: Loop) -> None:
    graph = parse_graph(GOOD).start(loop)
    assert result(loop, graph.call(b"hi")) == b"<>HI"
    stop(loop, graph)


@pytest.mark.parametrize(
    "text, error, line, match",
    [
        ("servlet up = x:Y\nnonsense here\n", GraphSyntaxError, 2, "expected `servlet NAME"),
        ("servlet = tests.graph_servlets:Upper\n", GraphSyntaxError, 1, "a servlet is"),
        ("servlet u = tests.graph_servlets:Upper prefix\n", GraphSyntaxError, 1, "key=value"),
        ("servlet u = tests.graph_servlets:Upper @cloud\n", GraphSyntaxError, 1, "placement"),
        ("a.x -> b.y -> c.z\n", GraphSyntaxError, 1, "an edge is"),
        ("servlet u = tests.graph_servlets:Upper\nservlet u = tests.graph_servlets:Upper\n",
         GraphError, 2, "declared twice"),
        ("() -> up.input\n", PortError, 1, "line 1: .*a servlet on one side|unknown servlet 'up'"),
        ("up.outptu -> ()\n", PortError, 1, "unknown servlet"),
    ],
)  # fmt: skip
def test_text_form_syntax_errors_name_the_line(
    text: str, error: type[Exception], line: int, match: str
) -> None:
    with pytest.raises(error, match=match) as info:
        parse_graph(text).check()
    assert getattr(info.value, "line", None) == line
    assert f"line {line}:" in str(info.value)


HEAD = "servlet up = tests.graph_servlets:Upper\nservlet dn = tests.graph_servlets:Upper\n"


@pytest.mark.parametrize(
    "edges, line, servlet, port, match",
    [
        ("up.outptu -> dn.input\n", 3, "up", "outptu", "has no port 'outptu' \\(did you mean 'output'"),
        ("up.input -> dn.input\n", 3, "up", "input", "up.input is an INPUT port; an edge goes from an OUTPUT"),
        ("up.output -> dn.output\n", 3, "dn", "output", "goes into an INPUT"),
        ("up.output -> dn.input\nup.output -> ()\n", 4, "up", "output", "connected twice \\(first at line 3\\)"),
        ("upp.output -> dn.input\n", 3, "upp", "output", "unknown servlet 'upp' .*did you mean 'up'"),
        ("() -> up.input\nup.output -> dn.input\n", 2, "dn", "output", "port dn.output \\(OUTPUT\\) is not connected"),
    ],
)  # fmt: skip
def test_port_mistakes_are_load_time_errors_naming_the_port(
    edges: str, line: int, servlet: str, port: str, match: str
) -> None:
    with pytest.raises(PortError, match=match) as info:
        parse_graph(HEAD + edges).check()
    exc = info.value
    assert (exc.servlet, exc.port, exc.line) == (servlet, port, line)
    assert f"line {line}:" in str(exc)


def test_codec_mismatch_and_bad_targets_are_refused() -> None:
    with pytest.raises(PortError, match="'json' port to a 'bytes' port"):
        Graph().add("f", Flags).add("u", Upper).input("f.input").connect(
            "f.side", "u.input"
        ).connect("f.output", "u.output").check()
    with pytest.raises(GraphError, match="cannot import"):
        parse_graph("servlet x = tests.no_such_module:X\n").check()
    with pytest.raises(GraphError, match="not a Servlet subclass"):
        parse_graph("servlet x = tests.graph_servlets:KEEP\n").check()
    with pytest.raises(GraphError, match="refused its arguments"):
        Graph().add("u", Upper, colour="red").check()
    with pytest.raises(GraphError, match="placement must be"):
        Graph().add("u", Upper, placement="cloud")


class _Local(Servlet):
    def init(self) -> None:
        self.define("input", INPUT, codec="object")
        self.define("output", OUTPUT, codec="object")


def test_what_cannot_cross_a_process_is_refused_for_a_worker() -> None:
    with pytest.raises(PortError, match="'object' codec"):
        Graph().add("l", _Local, placement="worker").check()
    with pytest.raises(GraphError, match="as JSON"):
        Graph().add("u", Upper, placement="worker", prefix=object()).check()

    with pytest.raises(GraphError, match="line 1: .*runs in-process only"):
        parse_graph("servlet tcp = evloop.graph.tcp:TcpServlet @worker\n").check()

    class Nested(Upper):
        pass

    with pytest.raises(GraphError, match="cannot run in a worker"):
        Graph().add("n", Nested, placement="worker").check()


# -- placement ---------------------------------------------------------------------------------


def test_in_process_and_worker_give_the_same_results(loop: Loop) -> None:
    messages = [b"a", b"hello world", b"\x00\xff" * 100, b"x" * 100_000]
    results = {}
    for placement in ("inprocess", "worker"):
        graph = (
            Graph()
            .add("u", Upper, placement=placement, prefix="#")
            .input("u.input")
            .output("u.output")
            .start(loop)
        )
        graph.wait_ready(WAIT)
        futs = [graph.call(m) for m in messages]
        results[placement] = [result(loop, f) for f in futs]
        err = failure(loop, graph.call(b"raise"))
        assert isinstance(err, ServletError) and "asked to raise" in str(err)
        # The servlet goes on serving after a flow failed.
        assert result(loop, graph.call(b"z")) == b"#Z"
        stop(loop, graph)
    assert results["inprocess"] == results["worker"] == [b"#" + m.upper() for m in messages]


def test_two_worker_servlets_in_a_row_keep_each_flows_answer(loop: Loop) -> None:
    graph = (
        Graph()
        .add("a", Upper, placement="worker", prefix="a")
        .add("b", Upper, placement="worker", prefix="b")
        .input("a.input")
        .connect("a.output", "b.input")
        .output("b.output")
        .start(loop)
    )
    graph.wait_ready(WAIT)
    futs = [graph.call(b"m%d" % i) for i in range(200)]
    assert [result(loop, f) for f in futs] == [b"bAM%d" % i for i in range(200)]
    pids = {result(loop, graph.call(b"pid"))}
    # A servlet that aborts the flow on purpose: the caller gets FlowAborted.
    err = failure(loop, graph.call(b"abort"))
    assert type(err) is FlowAborted and "asked to abort" in str(err) and err.servlet == "a"
    stop(loop, graph)
    assert all(reaped(int(p[1:])) for p in pids)


def test_a_killed_worker_servlet_fails_its_flows_and_is_restarted(loop: Loop) -> None:
    graph = (
        Graph().add("h", Hold, placement="worker").input("h.input").output("h.output").start(loop)
    )
    graph.wait_ready(WAIT)
    first = graph.worker("h")
    assert first is not None
    held = [graph.call(b"one"), graph.call(b"two")]
    # The frames reached the worker (it holds them): kill it.
    assert loop.run_until(lambda: first.pipe.statistics().frames_out >= 3, timeout=WAIT)
    os.kill(first.pid, signal.SIGKILL)
    for fut in held:
        err = failure(loop, fut)
        assert isinstance(err, ServletCrashed), err
        assert f"pid {first.pid}" in str(err) and "'h'" in str(err)
        assert "in flight" in str(err)
    # The supervision restarts it; the next flows go to the new process.
    assert loop.run_until(
        lambda: graph.worker("h") not in (None, first) and graph.ready, timeout=WAIT
    )
    later = graph.call(b"three")
    assert result(loop, graph.call(b"go")) == b"went"
    assert result(loop, later) == b"three"
    assert graph.statistics().crashes == 1 and graph.statistics().open_flows == 0
    second = graph.worker("h")
    assert second is not None
    stop(loop, graph)
    assert reaped(first.pid) and reaped(second.pid)


def test_a_flow_into_a_worker_that_dies_mid_flow_never_hangs(loop: Loop) -> None:
    graph = Graph().add("h", Hold, placement="worker").input("h.input").output("h.output")
    running = graph.start(loop)
    running.wait_ready(WAIT)
    held = running.call(b"kept")
    assert isinstance(failure(loop, running.call(b"die")), ServletCrashed)
    assert isinstance(failure(loop, held), ServletCrashed)
    stop(loop, running)


def test_a_worker_whose_ports_differ_from_the_parents_is_given_up_on(loop: Loop) -> None:
    graph = Graph().add("s", Shifty, placement="worker").input("s.input").output("s.output")
    running = graph.start(loop)
    with pytest.raises(GraphError, match="could not start.*init defined.*extra"):
        running.wait_ready(WAIT)
    assert isinstance(failure(loop, running.call(b"x")), ServletCrashed)
    stop(loop, running)


def test_load_graph_reads_a_file(loop: Loop, tmp_path: Any) -> None:
    path = tmp_path / "service.graph"
    path.write_text(GOOD)
    graph = load_graph(str(path)).start(loop)
    assert result(loop, graph.call(b"file")) == b"<>FILE"
    stop(loop, graph)


# -- stopping ------------------------------------------------------------------------------------


def test_stop_drains_then_closes_in_dependency_order(loop: Loop) -> None:
    text = """
    servlet tail = tests.graph_servlets:Upper
    servlet mid  = tests.graph_servlets:Upper @worker
    servlet head = tests.graph_servlets:Upper
    () -> head.input
    head.output -> mid.input
    mid.output -> tail.input
    tail.output -> ()
    """
    graph = parse_graph(text).start(loop)
    graph.wait_ready(WAIT)
    assert result(loop, graph.call(b"x")) == b"X"
    worker = graph.worker("mid")
    assert worker is not None
    pid = worker.pid
    stop(loop, graph)
    order = ["head", "mid", "tail"]
    assert graph.stop_log == [("drain", n) for n in order] + [("stop", n) for n in order]
    assert reaped(pid)
    with pytest.raises(GraphError, match="opens no more flows"):
        graph.call(b"late")


def test_a_flow_in_flight_is_waited_for_then_aborted_at_the_deadline(vloop: Loop) -> None:
    graph = Graph().add("h", Hold).input("h.input").output("h.output").start(vloop)
    held = graph.call(b"kept")
    vloop.run_once(0)
    done: list[RunningGraph] = []
    graph.shutdown(10.0, done.append)
    assert graph.state == "draining"  # the held flow keeps it open...
    err = failure(vloop, held)  # ...until the (virtual) deadline
    assert isinstance(err, GraphStopped) and "deadline" in str(err)
    assert vloop.run_until(lambda: bool(done), timeout=WAIT)
    assert vloop.time() >= 10.0


# -- the TCP servlet ------------------------------------------------------------------------------


class Client:
    """A plain socket client whose fd the loop watches, so that the loop
    wakes when an answer arrives while a test waits for it."""

    def __init__(self, loop: Loop, port: int):
        self.loop = loop
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.sock.setblocking(False)
        self.got = bytearray()
        self.eof = False
        loop.register(self.sock.fileno(), EVENT_READ, lambda _mask: self._pump())

    def _pump(self) -> None:
        try:
            while not self.eof:
                data = self.sock.recv(65536)
                if not data:
                    self.eof = True
                    self.loop.unregister(self.sock.fileno())
                    return
                self.got += data
        except BlockingIOError:
            pass

    def lines(self, n: int) -> list[bytes]:
        def have() -> bool:
            self._pump()
            return self.got.count(b"\n") >= n or self.eof

        assert self.loop.run_until(have, timeout=WAIT)
        return bytes(self.got).splitlines(keepends=True)

    def wait_for(self, data: bytes, count: int = 1) -> None:
        def have() -> bool:
            self._pump()
            return self.got.count(data) >= count or self.eof

        assert self.loop.run_until(have, timeout=WAIT)

    def wait_eof(self) -> None:
        def closed() -> bool:
            self._pump()
            return self.eof

        assert self.loop.run_until(closed, timeout=WAIT)

    def close(self) -> None:
        if not self.eof:
            self.loop.unregister(self.sock.fileno())
        self.sock.close()


TCP = """
servlet tcp = evloop.graph.tcp:TcpServlet ttl={ttl}
servlet ka  = tests.graph_servlets:KeepAlive {placement}
tcp.request -> ka.input
ka.output -> tcp.response
"""


@pytest.mark.parametrize("placement", ["@inprocess", "@worker"])
def test_tcp_persist_returns_the_connection_to_the_pool(loop: Loop, placement: str) -> None:
    graph = parse_graph(TCP.format(placement=placement, ttl=30)).start(loop)
    graph.wait_ready(WAIT)
    tcp = graph.servlet("tcp")
    assert isinstance(tcp, TcpServlet)
    client = Client(loop, tcp.port)
    client.sock.sendall(b"one\n")
    assert client.lines(1) == [b"echo: one\n"]
    assert tcp.statistics().idle == 1  # PERSIST: back to the pool, not closed
    client.sock.sendall(b"two\nthree\n")  # pipelined: answered in order
    assert client.lines(3)[1:] == [b"echo: two\n", b"echo: three\n"]
    stats = tcp.statistics()
    assert (stats.accepted, stats.reused, stats.pooled) == (1, 2, 3)
    client.sock.sendall(b"bye\n")  # no PERSIST: closed after the answer
    client.wait_eof()
    assert client.lines(4)[-1] == b"echo: bye\n"
    assert tcp.statistics().closed == 1
    client.close()
    stop(loop, graph)


def test_tcp_pooled_connection_expires_after_its_ttl(vloop: Loop) -> None:
    # The TTL is virtual time: 10 s pass in no real time (WAIT is virtual too).
    graph = parse_graph(TCP.format(placement="", ttl=10)).start(vloop)
    tcp = graph.servlet("tcp")
    assert isinstance(tcp, TcpServlet)
    client = Client(vloop, tcp.port)
    client.sock.sendall(b"one\n")
    assert client.lines(1) == [b"echo: one\n"]
    start = vloop.time()
    client.wait_eof()  # nothing more is sent: the virtual clock reaches the TTL
    assert vloop.time() - start >= 10.0
    assert vloop.run_until(lambda: tcp.statistics().live == 0, timeout=WAIT)
    assert tcp.statistics().expired == 1
    client.close()
    stop(vloop, graph)


def test_tcp_client_gone_mid_flow_aborts_the_flow(loop: Loop) -> None:
    text = """
    servlet tcp = evloop.graph.tcp:TcpServlet
    servlet h   = tests.graph_servlets:Hold
    tcp.request -> h.input
    h.output -> tcp.response
    """
    graph = parse_graph(text).start(loop)
    tcp = graph.servlet("tcp")
    assert isinstance(tcp, TcpServlet)
    client = Client(loop, tcp.port)
    client.sock.sendall(b"held\n")
    assert loop.run_until(lambda: graph.statistics().open_flows == 1, timeout=WAIT)
    client.close()
    assert loop.run_until(lambda: graph.statistics().open_flows == 0, timeout=WAIT)
    assert graph.statistics().aborted == 1
    stop(loop, graph)


def test_abort_fails_open_flows_and_kills_workers(loop: Loop) -> None:
    graph = Graph().add("h", Hold, placement="worker").input("h.input").output("h.output")
    running = graph.start(loop)
    running.wait_ready(WAIT)
    held = running.call(b"x")
    worker = running.worker("h")
    assert worker is not None
    pid = worker.pid
    running.abort()
    assert isinstance(failure(loop, held), GraphStopped)
    assert running.closed
    assert loop.run_until(lambda: reaped(pid), timeout=WAIT)


def test_flow_aborted_is_the_root_of_flow_failures() -> None:
    for cls in (ServletCrashed, ServletError, GraphStopped):
        assert issubclass(cls, FlowAborted) and issubclass(cls, GraphError)
