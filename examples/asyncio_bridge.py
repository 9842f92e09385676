#!/usr/bin/env python3
"""An asyncio HTTP server next to an evloop Pool, in one thread.

asyncio owns the program: its stdlib streams serve HTTP on 127.0.0.1. Each
POST body is hashed by one of N evloop worker processes (an evloop.Pool);
the asyncio handler awaits the pool's Request through evloop.aio.wrap().
The evloop Loop is driven from inside asyncio by aio.Bridge (its epoll fd
is registered with asyncio's add_reader). A GET /stats is answered by an
evloop coroutine awaited from asyncio the same way.

    python examples/asyncio_bridge.py --workers 2            # serve until Ctrl-C
    python examples/asyncio_bridge.py --workers 2 --demo 8   # 8 requests from an asyncio client, then exit

Rules (docs/asyncio.md): one thread; never call the evloop Loop's run()
while it is bridged; convert with aio.wrap() / aio.from_asyncio().
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os

import evloop
from evloop import aio, tasks
from evloop.pool import serve

MODULE = os.path.splitext(os.path.basename(__file__))[0] if __name__ == "__main__" else __name__


def hasher(loop: evloop.Loop, pipe: evloop.Pipe) -> None:
    """Runs in each worker process: reply with the SHA-256 of the request."""
    serve(loop, pipe, lambda data: hashlib.sha256(data).hexdigest().encode())


async def evloop_stats(pool: evloop.Pool) -> bytes:
    """An evloop coroutine: a little evloop-side work, awaited from asyncio."""
    await tasks.sleep(0)
    st = pool.statistics()
    return f"requests={st.requests} completed={st.completed}\n".encode()


async def handle(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, loop: evloop.Loop, pool: evloop.Pool
) -> None:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
        method, path, _ = head.split(b" ", 2)
        length = 0
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":", 1)[1])
        body = await reader.readexactly(length)
        if method == b"POST":
            answer = await aio.wrap(pool.request(body, timeout=10.0))  # an evloop Request
        elif path == b"/stats":
            answer = await aio.wrap(evloop_stats(pool), loop=loop)  # an evloop coroutine
        else:
            answer = b"POST a body to hash it, or GET /stats\n"
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s"
            % (len(answer), answer)
        )
        await writer.drain()
    finally:
        writer.close()


async def client(port: int, body: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"POST / HTTP/1.1\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
    await writer.drain()
    response = await reader.read()
    writer.close()
    await writer.wait_closed()
    return response.split(b"\r\n\r\n", 1)[1]


async def main(workers: int, demo: int, port: int) -> None:
    loop = evloop.Loop()
    try:
        async with aio.Bridge(loop):
            pool = evloop.Pool(loop, f"{MODULE}:hasher", workers, request_timeout=10.0)
            server = await asyncio.start_server(
                lambda r, w: handle(r, w, loop, pool), "127.0.0.1", port
            )
            bound = server.sockets[0].getsockname()[1]
            print(f"serving on http://127.0.0.1:{bound} with {workers} evloop workers", flush=True)
            async with server:
                if demo:
                    bodies = [b"item %d" % i for i in range(demo)]
                    answers = await asyncio.gather(*(client(bound, b) for b in bodies))
                    for b, a in zip(bodies, answers, strict=True):
                        assert a == hashlib.sha256(b).hexdigest().encode(), (b, a)
                        print(b.decode(), "->", a.decode()[:16], "...")
                    print(pool.statistics())
                else:
                    await server.serve_forever()
            # Shut the pool down through the bridge, then leave.
            done: evloop.Future[object] = evloop.Future(loop)
            pool.shutdown(deadline=5.0, callback=done.set_result)
            await aio.wrap(done)
    finally:
        loop.close()


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--demo", type=int, default=0, help="send N requests, check them, exit")
    ap.add_argument("--port", type=int, default=0)
    args = ap.parse_args()
    try:
        asyncio.run(main(args.workers, args.demo, args.port))
    except KeyboardInterrupt:
        pass
