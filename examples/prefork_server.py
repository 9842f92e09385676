#!/usr/bin/env python3
"""A pre-fork TCP server on evloop.

The parent listens, accepts, and hands each connection's file descriptor to
one of N worker processes, round-robin, over the worker's Pipe (SCM_RIGHTS).
A worker answers one line on each connection with "worker <pid>: <line>" and
closes it.

    python examples/prefork_server.py --workers 4            # until Ctrl-C / SIGTERM
    python examples/prefork_server.py --workers 4 --demo 8   # 8 clients, then exit

The workers are fresh interpreters that import this file by module name. Run
as a script it is __main__, which they cannot import (their __main__ is
evloop.worker), so the target is named after the file instead; spawn() passes
the script's directory on through sys.path.
"""

from __future__ import annotations

import argparse
import itertools
import os
import signal
import socket
import sys
from typing import Any

from evloop import Conn, Loop, Pipe, connect_tcp, listen_tcp
from evloop.spawn import Worker, spawn

MODULE = os.path.splitext(os.path.basename(__file__))[0] if __name__ == "__main__" else __name__
FD_CHANNEL = 1


def worker_main(loop: Loop, pipe: Pipe) -> None:
    """Runs in each worker: take connections, answer one line on each."""

    def on_frame(chan: int, payload: Any) -> None:
        if chan == FD_CHANNEL:
            fd = pipe.conn.pop_fd()  # arrived with this frame
            assert fd is not None
            Conn(loop, socket.socket(fileno=fd), on_data=answer)

    def answer(conn: Conn) -> None:
        line = conn.readline()
        if line is not None:
            conn.write(f"worker {os.getpid()}: ".encode() + line)
            conn.close()

    pipe.on_frame = on_frame


def run_demo(loop: Loop, port: int, clients: int) -> list[bytes]:
    """Connect `clients` clients, send a line on each, collect the answers."""
    replies: list[bytes] = []

    def connected(conn: Conn | None, exc: BaseException | None, i: int) -> None:
        if conn is None:
            print(f"client {i}: {exc}", file=sys.stderr)
            replies.append(b"")
            return
        got = bytearray()

        def on_data(c: Conn) -> None:
            view = c.read()
            got.extend(view)
            n = len(view)
            view.release()
            c.consume(n)

        conn.on_data = on_data
        conn.on_close = lambda _exc: replies.append(bytes(got))
        conn.write(f"hello from client {i}\n".encode())

    for i in range(clients):
        connect_tcp(loop, "127.0.0.1", port, lambda c, e, i=i: connected(c, e, i))
    if not loop.run_until(lambda: len(replies) == clients, timeout=30):
        print("demo: timed out", file=sys.stderr)
    return replies


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0, help="0 picks a free port")
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--demo", type=int, default=0, metavar="N", help="run N clients, then exit")
    args = ap.parse_args(argv)

    loop = Loop()
    workers: list[Worker] = [spawn(loop, f"{MODULE}:worker_main") for _ in range(args.workers)]
    turn = itertools.cycle(workers)

    def on_conn(conn: Conn) -> None:
        next(turn).send_fd(conn.fd, chan=FD_CHANNEL)  # the worker gets its own copy
        conn.abort()

    # The parent never reads from a connection it hands over.
    server = listen_tcp(loop, args.host, args.port, on_conn, conn_kwargs={"start_reading": False})
    print(f"listening on {args.host}:{server.port}, workers {[w.pid for w in workers]}", flush=True)

    status = 0
    if args.demo:
        replies = run_demo(loop, server.port, args.demo)
        for r in replies:
            print(r.decode(errors="replace").rstrip())
        pids = {r.split(b":")[0] for r in replies if r}
        print(f"{len(replies)} answers from {len(pids)} workers", flush=True)
        status = 0 if len(replies) == args.demo and all(replies) else 1
    else:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, loop.stop)
        loop.run()

    # Shut down: stop accepting, close the Pipes (a worker exits on EOF).
    server.close()
    for w in workers:
        w.close()
    if not loop.run_until(lambda: all(w.done for w in workers), timeout=5):
        status = 1  # loop.close() below kills what is left
    loop.close()
    return status


if __name__ == "__main__":
    sys.exit(main())
