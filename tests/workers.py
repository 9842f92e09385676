# tests/workers.py
#
# Worker functions for tests/test_spawn.py and tests/test_pool.py. They run in
# a fresh interpreter started by evloop.spawn, imported as tests.workers:NAME,
# and are called as NAME(loop, pipe, *args).
from __future__ import annotations

import json
import os
import signal
import socket
import struct
from typing import Any

from evloop.conn import Conn
from evloop.loop import Loop
from evloop.pipe import Pipe
from evloop.pool import Reply, serve
from evloop.worker import WorkerContext


def echo(loop: Loop, pipe: Pipe, prefix: str = "") -> None:
    """Send every frame back on its channel, with `prefix` in front."""
    pre = prefix.encode()

    def on_frame(chan: int, payload: Any) -> None:
        pipe.write_frame(chan, pre + bytes(payload))

    pipe.on_frame = on_frame


def hello(loop: Loop, pipe: Pipe, *args: Any) -> None:
    """Report the arguments, pid and environment, then stop the loop."""
    info = {"args": list(args), "pid": os.getpid(), "fd": os.environ.get("EVLOOP_FD")}
    pipe.write_frame(1, json.dumps(info).encode())
    loop.stop()


def fail_at_setup(loop: Loop, pipe: Pipe, message: str) -> None:
    raise ValueError(message)


class CustomError(Exception):
    pass


def fail_in_callback(loop: Loop, pipe: Pipe) -> None:
    """Raise from on_frame when told to; frames before that are echoed."""

    def on_frame(chan: int, payload: Any) -> None:
        if bytes(payload) == b"raise":
            raise CustomError("raised in on_frame")
        pipe.write_frame(chan, bytes(payload))

    pipe.on_frame = on_frame


def report_fds(loop: Loop, pipe: Pipe) -> None:
    """Report every open fd of this process and which are inheritable: only
    the standard three may be, since anything else inherited from the parent
    survived exec because it lacked close-on-exec."""
    fds = {}
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        try:
            fds[fd] = os.get_inheritable(fd)
        except OSError:
            pass  # listdir's own directory fd, closed by now
    pipe.write_frame(1, json.dumps(fds).encode())
    loop.stop()


def ignore_sigterm(loop: Loop, pipe: Pipe) -> None:
    """Ignore SIGTERM, then say so."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    pipe.write_frame(1, b"ignoring")


def idle(loop: Loop, pipe: Pipe) -> None:
    """Do nothing until the Pipe closes; say hello first."""
    pipe.write_frame(1, str(os.getpid()).encode())


def line_server(loop: Loop, pipe: Pipe, chan: int) -> None:
    """Take connection fds sent on `chan` and answer one line on each with
    "<pid> <line>"."""

    def on_frame(ch: int, payload: Any) -> None:
        if ch != chan:
            return
        fd = pipe.conn.pop_fd()
        assert fd is not None, "a frame on the fd channel came without its fd"
        sock = socket.socket(fileno=fd)

        def on_data(conn: Conn) -> None:
            line = conn.readline()
            if line is not None:
                conn.write(f"{os.getpid()} ".encode() + line)
                conn.close()

        Conn(loop, sock, on_data=on_data)

    pipe.on_frame = on_frame


def pool_worker(loop: Loop, pipe: Pipe) -> None:
    """Answer pool requests. The request is "<command> <argument>"."""

    def handler(data: bytes, reply: Reply) -> None:
        cmd, _, arg = data.partition(b" ")
        if cmd == b"echo":
            reply(arg)
        elif cmd == b"pid":
            reply(str(os.getpid()).encode())
        elif cmd == b"hold":
            pass  # never answers
        elif cmd == b"later":
            loop.call_later(float(arg), reply, b"late")
        elif cmd == b"raise":
            raise ValueError(arg.decode())
        elif cmd == b"exit":
            os._exit(int(arg))
        elif cmd == b"die-mid-frame":
            # Half a reply frame leaves with the next flush, then SIGKILL.
            pipe.conn.write(struct.pack(">HI", 0xFFFF, 1000) + b"R" + bytes(20))
            loop.call_soon(os.kill, os.getpid(), signal.SIGKILL)
        elif cmd == b"stall":
            pipe.pause_reading()  # reads nothing more: the parent's writes pile up
            reply(b"stalled")
        elif cmd == b"note":
            pipe.write_frame(2, arg or b"-")  # a message: no reply
        else:
            reply.fail(KeyError(cmd.decode()))

    serve(loop, pipe, handler, deferred=True)


def pool_sync(loop: Loop, pipe: Pipe, tag: str) -> None:
    """serve() with a plain handler: replies "<tag>:<data>"."""
    serve(loop, pipe, lambda data: tag.encode() + b":" + data)


def crash_at_start(loop: Loop, pipe: Pipe) -> None:
    raise RuntimeError("this worker never starts")


def pool_json(loop: Loop, pipe: Pipe) -> None:
    """serve() with the JSON codec: the reply wraps the request."""
    serve(loop, pipe, lambda value: {"echo": value}, codec="json")


def pool_pickle(loop: Loop, pipe: Pipe) -> None:
    """serve() with the pickle codec: the reply is (type name, value)."""
    serve(loop, pipe, lambda value: (type(value).__name__, value), codec="pickle")


def ctx_hello(ctx: WorkerContext, greeting: str) -> None:
    """A new-style target: it is given a WorkerContext."""
    info = {"greeting": greeting, "target": ctx.target, "args": ctx.args}
    info["endpoints"] = sorted(ctx.endpoints)
    ctx.pipe.write_frame(1, json.dumps(info).encode())


def ctx_pool(ctx: WorkerContext) -> None:
    """serve(ctx, handler): the new-style call."""
    serve(ctx, lambda data: b"ctx:" + data)


def flush_progress(loop: Loop, pipe: Pipe) -> None:
    """On any frame: write "progress", flush, then stay inside the callback
    until SIGUSR1 arrives; only then write "done". The parent can only see
    "progress" before it signals if flush() sent it from inside the callback."""
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR1})

    def on_frame(chan: int, data: bytes | bytearray) -> None:
        pipe.write_frame(1, b"progress")
        pipe.flush()
        signal.sigwait({signal.SIGUSR1})
        pipe.write_frame(1, b"done")

    pipe.on_frame = on_frame
