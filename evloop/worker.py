# evloop/worker.py
#
# The child side of spawn() for Python targets:
#
#     python -m evloop.worker TARGET '<JSON list of args>'
#
# where TARGET is "package.module:function" or "/path/to/script.py:function",
# with its end of the socketpair on fd 3 (EVLOOP_FD) and the parent's
# sys.path in EVLOOP_SYS_PATH (JSON). It builds a Loop and a Pipe on fd 3,
# imports the function and calls it as the loop's first callback:
# function(loop, pipe, *args), or function(ctx, *args) with a WorkerContext
# when its first parameter is annotated `WorkerContext`. The function sets up
# handlers and returns; the runtime then tells the parent it is up (control
# kind U) and runs the loop until the Pipe closes (the parent closed its end
# or died) or the function's code calls loop.stop(), and the process exits 0.
#
# Any exception, at import, at setup or escaping a later callback, is fatal:
# it is sent to the parent on the control channel as an error report (kind
# E), flushed, and the process exits 1. A worker that keeps running after one
# of its callbacks failed would be in a state nobody designed for.
#
# Invariants: this module imports the protocol (control.py) and the frame
# layers, never the parent's supervisor (spawn.py). While the target's
# module is being imported, importing_target() is true and spawn() refuses
# to start workers (a module without a __main__ guard would otherwise start
# workers from every worker, recursively); the flag drops before the
# function is entered, so a worker may start workers of its own.
"""The child runtime of spawn() for Python targets (python -m evloop.worker) and WorkerContext. See the comment header above for the invariants."""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import json
import os
import socket
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .conn import Conn
from .control import CHILD_FD, CONTROL_CHANNEL, KIND_ERROR, KIND_READY, encode_error
from .loop import Loop
from .pipe import Pipe

__all__ = [
    "main", "WorkerContext", "current_context", "importing_target", "import_target", "MAIN_MODULE",
]  # fmt: skip

# How long a failing worker waits for its error report to leave.
_FLUSH_TIMEOUT = 5.0
# The module name a script target is imported under: anything but
# "__main__", so that its `if __name__ == "__main__":` block does not run.
MAIN_MODULE = "__evloop_main__"
# Flags of the ready (U) message.
READY_ANSWERS_PINGS = 0x01


@dataclass
class WorkerContext:
    """What a worker function is given when it asks for it (its first
    parameter annotated `WorkerContext`): the loop, the Pipe to the parent,
    the arguments, the target's name, and `endpoints`, the frame endpoints
    this worker owns by name ("parent" today; a service graph adds more)."""

    loop: Loop
    pipe: Pipe
    target: str
    args: list[Any]
    endpoints: Mapping[str, Pipe] = field(default_factory=dict)
    # Set by serve(): this worker answers heartbeats (control kind P).
    answers_pings: bool = False


_context: WorkerContext | None = None
_importing = False


def current_context() -> WorkerContext | None:
    """The running worker's context (None outside a worker runtime)."""
    return _context


def importing_target() -> bool:
    """True while this process is a worker still importing its target."""
    return _importing


def import_target(name: str) -> Any:
    """The object a target names: "package.module:attr.path", or
    "/path/to/script.py:attr" (imported as MAIN_MODULE, so its `__main__`
    block does not run). The one way evloop resolves targets: spawn's worker,
    prefork and the service graph all call it, and importing_target() is
    True while it runs. ImportError / AttributeError pass through."""
    global _importing
    mod_name, _, qual = name.rpartition(":")
    _importing = True
    try:
        if mod_name.endswith(".py") and os.sep in mod_name:
            spec = importlib.util.spec_from_file_location(MAIN_MODULE, mod_name)
            if spec is None or spec.loader is None:
                raise ImportError(f"cannot import the script {mod_name}")
            module = importlib.util.module_from_spec(spec)
            sys.modules[MAIN_MODULE] = module
            spec.loader.exec_module(module)
            obj: Any = module
        else:
            obj = importlib.import_module(mod_name)
    finally:
        _importing = False
    for part in qual.split("."):
        obj = getattr(obj, part)
    return obj


def _wants_context(func: Any) -> bool:
    try:
        params = list(inspect.signature(func).parameters.values())
    except (TypeError, ValueError):
        return False
    if not params:
        return False
    ann = params[0].annotation
    if ann is WorkerContext:
        return True
    return isinstance(ann, str) and ann.rpartition(".")[2] == "WorkerContext"


def main(argv: list[str] | None = None) -> int:
    global _context
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
        global _context
        func = import_target(argv[0])
        args = json.loads(argv[1]) if len(argv) > 1 else []
        ctx = _context = WorkerContext(loop, pipe, argv[0], args, {"parent": pipe})
        if _wants_context(func):
            func(ctx, *args)
        else:
            func(loop, pipe, *args)
        flags = READY_ANSWERS_PINGS if ctx.answers_pings else 0
        if not pipe.conn.closing:
            pipe.write_frame(CONTROL_CHANNEL, bytes((KIND_READY, flags)))
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
        _context = None
        loop.close()


def _report(loop: Loop, pipe: Pipe, exc: BaseException) -> None:
    if pipe.closed or pipe.conn.closing:
        return  # nobody to tell
    # The worker is ending: later callback failures must not cut the flush short.
    loop.set_exception_handler(lambda _exc, _cb: None)
    payload = bytes((KIND_ERROR,)) + encode_error(exc)
    try:
        pipe.write_frame(CONTROL_CHANNEL, payload[: pipe.max_len])
    except Exception:
        return
    loop.run_until(lambda: pipe.conn.write_buffered == 0 or pipe.closed, _FLUSH_TIMEOUT)


if __name__ == "__main__":
    # Run as `python -m evloop.worker`, this file is __main__; the runtime's
    # state (importing_target(), current_context()) must live in the module
    # that spawn() and serve() import, evloop.worker, so run that one.
    from evloop.worker import main as _main

    sys.exit(_main())
