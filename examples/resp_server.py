#!/usr/bin/env python3
"""A RESP (Redis protocol) server on evloop: PING, ECHO, SET, GET, DEL, INCR,
MGET, EXISTS (and QUIT, CONFIG GET for redis-benchmark), pipelined.

    python examples/resp_server.py --port 6380               # one process
    python examples/resp_server.py --port 6380 --workers 4   # 4 pre-forked workers
    redis-cli -p 6380 set greeting hello; redis-cli -p 6380 get greeting
    redis-benchmark -p 6380 -t ping,set,get -P 16 -q

With --workers K, K processes share the port (SO_REUSEPORT, see
evloop/prefork.py) and each has its own keyspace: a key set on one
connection is visible only to connections the kernel gave the same worker.
That is the sharded-cache model (K independent Redis instances behind one
port); a keyspace shared through the parent would add a process hop to
every command and serialize them all on the parent, which is the cost the
workers are there to avoid.

The protocol (parsing, limits, pipelining, errors) is evloop.resp; this
file is the command table and the command line.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from evloop import Conn, Loop, Server, listen_tcp, run_daemon
from evloop.prefork import serve_prefork
from evloop.resp import (
    NULL_BULK,
    OK,
    RespCommand,
    RespConnection,
    RespParser,
    RespQuit,
    array,
    error,
    integer,
)

_INT64 = (-(2**63), 2**63 - 1)
_CONFIG = {b"save": b"", b"appendonly": b"no"}


def _arity(name: str) -> bytes:
    return error(f"ERR wrong number of arguments for '{name}' command")


class Store:
    """The keyspace and the commands. `execute(args)` is the whole server
    as far as RESP is concerned: a list of bytes arguments in, reply bytes
    out. Values are kept as their bulk-string encoding ($n\\r\\n...\\r\\n),
    which is also the GET reply, so a GET costs a dict lookup."""

    def __init__(self) -> None:
        self.data: dict[bytes, bytes] = {}
        self.commands: dict[bytes, Callable[[RespCommand], bytes]] = {
            b"PING": self.ping,
            b"ECHO": self.echo,
            b"SET": self.set,
            b"GET": self.get,
            b"DEL": self.delete,
            b"INCR": self.incr,
            b"MGET": self.mget,
            b"EXISTS": self.exists,
            b"QUIT": self.quit,
            b"CONFIG": self.config,
        }
        # Lower-case spellings too, so the usual case costs one lookup.
        for name, fn in list(self.commands.items()):
            self.commands[name.lower()] = fn

    def execute(self, args: RespCommand) -> bytes:
        fn = self.commands.get(args[0])
        if fn is None:
            fn = self.commands.get(args[0].upper())
            if fn is None:
                shown = " ".join(f"'{a.decode('utf-8', 'replace')[:128]}'" for a in args[1:4])
                name = args[0].decode("utf-8", "replace")[:128]
                return error(f"ERR unknown command '{name}', with args beginning with: {shown}")
        return fn(args)

    def ping(self, args: RespCommand) -> bytes:
        if len(args) == 1:
            return b"+PONG\r\n"
        if len(args) == 2:
            return b"$%d\r\n%s\r\n" % (len(args[1]), args[1])
        return _arity("ping")

    def echo(self, args: RespCommand) -> bytes:
        if len(args) != 2:
            return _arity("echo")
        return b"$%d\r\n%s\r\n" % (len(args[1]), args[1])

    def set(self, args: RespCommand) -> bytes:
        if len(args) != 3:
            return _arity("set") if len(args) < 3 else error("ERR syntax error")
        v = args[2]
        self.data[args[1]] = b"$%d\r\n%s\r\n" % (len(v), v)
        return OK

    def get(self, args: RespCommand) -> bytes:
        if len(args) != 2:
            return _arity("get")
        return self.data.get(args[1], NULL_BULK)

    def delete(self, args: RespCommand) -> bytes:
        if len(args) < 2:
            return _arity("del")
        n = 0
        pop = self.data.pop
        for k in args[1:]:
            if pop(k, None) is not None:
                n += 1
        return integer(n)

    def exists(self, args: RespCommand) -> bytes:
        if len(args) < 2:
            return _arity("exists")
        data = self.data
        return integer(sum(1 for k in args[1:] if k in data))

    def mget(self, args: RespCommand) -> bytes:
        if len(args) < 2:
            return _arity("mget")
        get = self.data.get
        return b"*%d\r\n" % (len(args) - 1) + b"".join(get(k, NULL_BULK) for k in args[1:])

    def incr(self, args: RespCommand) -> bytes:
        if len(args) != 2:
            return _arity("incr")
        key = args[1]
        old = self.data.get(key)
        if old is None:
            n = 1
        else:
            text = old[old.index(b"\r\n") + 2 : -2]
            n = _as_int64(text)
            if n is None:
                return error("ERR value is not an integer or out of range")
            if n == _INT64[1]:
                return error("ERR increment or decrement would overflow")
            n += 1
        digits = b"%d" % n
        self.data[key] = b"$%d\r\n%s\r\n" % (len(digits), digits)
        return b":%s\r\n" % digits

    def quit(self, args: RespCommand) -> bytes:
        return RespQuit(OK)

    def config(self, args: RespCommand) -> bytes:
        # redis-benchmark asks CONFIG GET save / appendonly first: answer as
        # a server that never persists; any other parameter matches nothing.
        if len(args) >= 2 and args[1].upper() == b"GET":
            if len(args) != 3:
                return _arity("config|get")
            value = _CONFIG.get(args[2].lower())
            return array([args[2].lower(), value] if value is not None else [])
        return error("ERR unknown subcommand or wrong number of arguments for 'config'")


def _as_int64(text: bytes) -> int | None:
    # Redis' string2ll: the canonical decimal form only ("-0", "+1", " 1",
    # "01" and "1_0" are not integers).
    if not text or len(text) > 20:
        return None
    digits = text[1:] if text[:1] == b"-" else text
    if not digits.isdigit() or (digits[:1] == b"0" and (len(digits) > 1 or text[:1] == b"-")):
        return None
    n = int(text)
    return n if _INT64[0] <= n <= _INT64[1] else None


def serve(
    loop: Loop,
    host: str,
    port: int,
    max_bulk_len: int = 512 * 1024 * 1024,
    reuse_port: bool = False,
) -> Server:
    """Listen on host:port and serve a fresh Store; the prefork worker
    target too (reuse_port=True)."""
    store = Store()

    def on_conn(conn: Conn) -> None:
        RespConnection(conn, store.execute, parser=RespParser(max_bulk_len=max_bulk_len))

    return listen_tcp(loop, host, port, on_conn, reuse_port=reuse_port)


def worker(loop: Loop, host: str, port: int, max_bulk_len: int) -> Server:
    return serve(loop, host, port, max_bulk_len, reuse_port=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=6380, help="0 picks a free port")
    ap.add_argument("--workers", type=int, default=0, help="pre-forked workers (0: serve here)")
    ap.add_argument(
        "--max-bulk-len", type=int, default=512 * 1024 * 1024, help="longest bulk string accepted"
    )
    args = ap.parse_args(argv)
    loop = Loop()
    try:
        if args.workers > 0:
            module = "resp_server" if __name__ == "__main__" else __name__
            service: object = serve_prefork(
                loop, f"{module}:worker", args.max_bulk_len,
                workers=args.workers, host=args.host, port=args.port,
            )  # fmt: skip
            port = service.port  # type: ignore[attr-defined]
        else:
            service = serve(loop, args.host, args.port, args.max_bulk_len)
            port = service.port  # type: ignore[attr-defined]
        print(f"resp_server: listening on {args.host}:{port}", flush=True)
        return run_daemon(loop, service)
    finally:
        loop.close()


if __name__ == "__main__":
    sys.exit(main())
