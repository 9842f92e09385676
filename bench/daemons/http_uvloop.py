"""The HTTP server of examples/http_server.py's GET / route on uvloop with
httptools (llhttp, in C): keep-alive, pipelining (responses in order, since
each is written as soon as its request completes), the same response bytes
and headers. The peer for `make bench-daemons`.

    python bench/daemons/http_uvloop.py --port N
"""

from __future__ import annotations

import argparse
import asyncio

import httptools
import uvloop

HELLO = b"hello from evloop\n"


class HttpProtocol(asyncio.Protocol):
    def __init__(self) -> None:
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.url = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is not an asyncio.Transport subclass

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            assert self.transport is not None
            self.transport.write(
                b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
            )
            self.transport.close()

    def on_url(self, url: bytes) -> None:
        self.url = url

    def on_message_complete(self) -> None:
        assert self.transport is not None
        keep = self.parser.should_keep_alive()
        version = self.parser.get_http_version()
        if self.url == b"/":
            status, body = b"200 OK", HELLO
        else:
            status, body = b"404 Not Found", b"not found\n"
        head = b"HTTP/%s %s\r\ncontent-type: text/plain\r\ncontent-length: %d\r\n" % (
            version.encode(),
            status,
            len(body),
        )
        if not keep:
            head += b"connection: close\r\n"
        elif version == "1.0":
            head += b"connection: keep-alive\r\n"
        self.transport.write(head + b"\r\n" + body)
        if not keep:
            self.transport.close()


async def main(port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(HttpProtocol, "127.0.0.1", port)
    print(
        f"http_uvloop: listening on http://127.0.0.1:{server.sockets[0].getsockname()[1]}/",
        flush=True,
    )
    await server.serve_forever()


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, default=0)
    uvloop.run(main(ap.parse_args().port))
