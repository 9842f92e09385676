#!/usr/bin/env python3
"""An HTTP/1.1 server on evloop: keep-alive, pipelining, streamed (chunked)
responses and request bodies, optional TLS and pre-forked workers.

    python examples/http_server.py --port 8080
    python examples/http_server.py --port 8443 --tls-cert cert.pem --tls-key key.pem
    python examples/http_server.py --port 8080 --workers 4   # SO_REUSEPORT workers
    curl http://127.0.0.1:8080/                     # hello
    curl -N http://127.0.0.1:8080/stream?n=5        # 5 chunks, 0.1 s apart (chunked)
    curl -T big.bin http://127.0.0.1:8080/upload    # byte count and sha256 of the body
    curl --data-binary @f -H 'Transfer-Encoding: chunked' http://127.0.0.1:8080/echo

Routes: GET / (a short text), GET /bytes?n=N (N bytes, Content-Length),
GET /stream?n=N&ms=M (N chunks, M ms apart, chunked, paced by the
connection's write back-pressure), GET /slow?ms=M (answers after M ms: shows
that pipelined responses keep their order), POST|PUT /upload (reads the body
as it streams in; answers its size and sha256), POST|PUT /echo (streams the
body straight back as it arrives). Anything else is 404.

The protocol (parse -> handle -> respond, limits, ordering, faults) is
evloop.http; the three stages run as a service graph of servlets
(evloop.graph.http: http_in.requests -> handle.requests, handle.responses
-> respond.responses); TLS is evloop.tls; this file is the handler and the
command line.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from typing import Any
from urllib.parse import parse_qs, urlsplit

from evloop import Loop, run_daemon
from evloop.graph import RunningGraph
from evloop.graph.http import HttpIn, http_graph
from evloop.http import Request, Response
from evloop.prefork import serve_prefork

TEXT = [(b"content-type", b"text/plain")]
HELLO = b"hello from evloop\n"


class App:
    """The handle stage's handler (`handle`, one call per request) and the
    loop its timers run on."""

    def __init__(self, loop: Loop):
        self.loop = loop

    def handle(self, req: Request, resp: Response) -> None:
        target = req.target
        if target == b"/" and req.method in (b"GET", b"HEAD"):
            resp.send(200, HELLO, TEXT)
            return
        url = urlsplit(target.decode("latin-1"))
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        path = url.path
        try:
            if path == "/bytes":
                n = min(int(query.get("n", "1024")), 1 << 30)
                resp.send(200, b"x" * n, [(b"content-type", b"application/octet-stream")])
            elif path == "/stream":
                self.stream(resp, int(query.get("n", "10")), int(query.get("ms", "100")) / 1000)
            elif path == "/slow":
                delay = int(query.get("ms", "100")) / 1000
                # send() returns False if the client went away meanwhile.
                self.loop.call_later(delay, resp.send, 200, b"slow\n", TEXT)
            elif path == "/upload" and req.method in (b"POST", b"PUT"):
                self.upload(req, resp)
            elif path == "/echo" and req.method in (b"POST", b"PUT"):
                resp.start(200, [(b"content-type", b"application/octet-stream")])
                req.on_body = resp.write  # each piece goes back as it arrives
                req.on_end = resp.end
            else:
                resp.send(404, b"not found\n", TEXT)
        except ValueError:
            resp.send(400, b"bad query\n", TEXT)

    def stream(self, resp: Response, n: int, interval: float) -> None:
        resp.start(200, TEXT)
        sent = [0]

        def tick() -> None:
            if resp.aborted is not None:
                return  # the client is gone: stop producing
            if not resp.writable:
                resp.when_writable(tick)  # back-pressure: wait for the socket
                return
            if sent[0] >= n:
                resp.end()
                return
            resp.write(b"chunk %d\n" % sent[0])
            sent[0] += 1
            self.loop.call_later(interval, tick)

        tick()

    def upload(self, req: Request, resp: Response) -> None:
        digest = hashlib.sha256()
        size = [0]

        def on_body(data: bytes) -> None:
            digest.update(data)
            size[0] += len(data)

        req.on_body = on_body
        req.on_end = lambda: resp.send(
            200, b"%d %s\n" % (size[0], digest.hexdigest().encode()), TEXT
        )


def serve(
    loop: Loop,
    host: str,
    port: int,
    tls_cert: str | None = None,
    tls_key: str | None = None,
    reuse_port: bool = False,
) -> RunningGraph:
    """Listen on host:port, as a service graph of three in-process servlets
    (evloop.graph.http: http_in -> handle -> respond; App.handle is the
    handle servlet's handler); also the prefork worker target."""
    graph = http_graph(
        App(loop).handle, host=host, port=port, reuse_port=reuse_port,
        tls_cert=tls_cert, tls_key=tls_key, idle_timeout=60.0,
    )  # fmt: skip
    return graph.start(loop)


def listening_port(service: Any) -> int:
    """The port a Prefork or a running HTTP graph listens on."""
    if isinstance(service, RunningGraph):
        http_in = service.servlet("http_in")
        assert isinstance(http_in, HttpIn)
        return http_in.port
    return int(service.port)


def worker(
    loop: Loop, host: str, port: int, tls_cert: str | None, tls_key: str | None
) -> RunningGraph:
    return serve(loop, host, port, tls_cert, tls_key, reuse_port=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8080, help="0 picks a free port")
    ap.add_argument("--workers", type=int, default=0, help="pre-forked workers (0: serve here)")
    ap.add_argument("--tls-cert", help="PEM certificate (chain): serve HTTPS")
    ap.add_argument("--tls-key", help="PEM private key (default: in the cert file)")
    args = ap.parse_args(argv)
    loop = Loop()
    try:
        service: Any
        if args.workers > 0:
            module = "http_server" if __name__ == "__main__" else __name__
            service = serve_prefork(
                loop, f"{module}:worker", args.tls_cert, args.tls_key,
                workers=args.workers, host=args.host, port=args.port,
            )  # fmt: skip
        else:
            service = serve(loop, args.host, args.port, args.tls_cert, args.tls_key)
        scheme = "https" if args.tls_cert else "http"
        print(
            f"http_server: listening on {scheme}://{args.host}:{listening_port(service)}/",
            flush=True,
        )
        return run_daemon(loop, service)
    finally:
        loop.close()


if __name__ == "__main__":
    sys.exit(main())
