# evloop/worker.py
#
# The child side of spawn() for Python targets:
#
#     python -m evloop.worker package.module:function '<JSON list of args>'
#
# with its end of the socketpair on fd 3 (EVLOOP_FD) and the parent's sys.path
# in EVLOOP_SYS_PATH (JSON). It builds a Loop and a Pipe on fd 3, imports the
# function and calls function(loop, pipe, *args) as the loop's first callback.
# The function sets up handlers and returns; the loop runs on until the Pipe
# closes (the parent closed its end or died) or the function's code calls
# loop.stop(), and the process exits 0.
#
# Any exception, at setup or escaping a later callback, is fatal: it is sent
# to the parent on the control channel as {"type", "message", "traceback"},
# flushed, and the process exits 1. A worker that keeps running after one of
# its callbacks failed would be in a state nobody designed for.
from __future__ import annotations

import json
import os
import socket
import sys
from typing import Any

from .conn import Conn
from .loop import Loop
from .pipe import Pipe
from .spawn import CHILD_FD, CONTROL_CHANNEL, CTL_ERROR, encode_error

__all__ = ["main"]

# How long a failing worker waits for its error report to leave.
_FLUSH_TIMEOUT = 5.0


def _import_target(name: str) -> Any:
    import importlib

    mod_name, _, qual = name.partition(":")
    obj: Any = importlib.import_module(mod_name)
    for part in qual.split("."):
        obj = getattr(obj, part)
    return obj


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) not in (1, 2):
        print("usage: python -m evloop.worker package.module:function [JSON-args]", file=sys.stderr)
        return 2
    extra = os.environ.pop("EVLOOP_SYS_PATH", None)
    if extra:
        for p in json.loads(extra):
            if p not in sys.path:
                sys.path.append(p)
    fd = int(os.environ.get("EVLOOP_FD", CHILD_FD))
    # Our own children must not inherit the parent's socket.
    os.set_inheritable(fd, False)
    sock = socket.socket(fileno=fd)

    loop = Loop()
    failure: list[BaseException] = []

    def on_callback_error(exc: BaseException, _callback: Any) -> None:
        if not failure:
            failure.append(exc)
        loop.stop()

    loop.set_exception_handler(on_callback_error)
    # Nothing is read before the function has set its handlers: a frame
    # scanned while pipe.on_frame was still None would wait for the next one.
    pipe = Pipe(Conn(loop, sock, receive_fds=True, start_reading=False))

    def setup() -> None:
        func = _import_target(argv[0])
        args = json.loads(argv[1]) if len(argv) > 1 else []
        func(loop, pipe, *args)
        pipe.conn.resume_reading()

    try:
        # The function runs as the loop's first callback, so that a
        # loop.stop() it calls ends this run, and an exception it raises
        # reaches on_callback_error like any later one.
        loop.call_soon(setup)
        loop.run_until(lambda: pipe.closed or bool(failure))
        if failure:
            _report(loop, pipe, failure[0])
            return 1
        # Let whatever the function wrote before stopping reach the parent.
        if not pipe.closed:
            loop.run_until(lambda: pipe.conn.write_buffered == 0 or pipe.closed, _FLUSH_TIMEOUT)
        return 0
    except KeyboardInterrupt:
        return 130
    finally:
        loop.close()


def _report(loop: Loop, pipe: Pipe, exc: BaseException) -> None:
    if pipe.closed or pipe.conn.closing:
        return  # nobody to tell
    # The worker is ending: later callback failures must not cut the flush short.
    loop.set_exception_handler(lambda _exc, _cb: None)
    payload = bytes((CTL_ERROR,)) + encode_error(exc)
    try:
        pipe.write_frame(CONTROL_CHANNEL, payload[: pipe.max_len])
    except Exception:
        return
    loop.run_until(lambda: pipe.conn.write_buffered == 0 or pipe.closed, _FLUSH_TIMEOUT)


if __name__ == "__main__":
    sys.exit(main())
