"""The RESP server of examples/resp_server.py on uvloop: the same Store (the
same commands, the same replies, by import), an asyncio Protocol with the
leanest pure-Python request parser we could write (one bytes copy per read,
bytes.find for each line, slices for arguments; inline commands too), and
one transport.write per read. The peer for `make bench-daemons`.

    python bench/daemons/resp_uvloop.py --port N
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "examples"))
import uvloop  # noqa: E402
from resp_server import Store  # noqa: E402


class RespProtocol(asyncio.Protocol):
    def __init__(self, store: Store):
        self.execute = store.execute
        self.buf = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is not an asyncio.Transport subclass

    def data_received(self, data: bytes) -> None:
        buf = self.buf + data if self.buf else data
        pos, end, replies = 0, len(buf), []
        find, execute = buf.find, self.execute
        while pos < end:
            start = pos
            if buf[pos] != 42:  # inline
                i = find(b"\n", pos)
                if i < 0:
                    break
                args = buf[pos:i].split()
                pos = i + 1
                if args:
                    replies.append(execute(args))
                continue
            i = find(b"\r\n", pos)
            if i < 0:
                break
            try:
                n = int(buf[pos + 1 : i])
            except ValueError:
                self._fail(replies, "invalid multibulk length")
                return
            pos = i + 2
            args = []
            while n and pos < end:
                if buf[pos] != 36:
                    self._fail(replies, f"expected '$', got '{chr(buf[pos])}'")
                    return
                i = find(b"\r\n", pos)
                if i < 0:
                    break
                try:
                    blen = int(buf[pos + 1 : i])
                except ValueError:
                    self._fail(replies, "invalid bulk length")
                    return
                stop = i + 2 + blen
                if stop + 2 > end:
                    break
                args.append(buf[i + 2 : stop])
                pos = stop + 2
                n -= 1
            if n:
                pos = start  # incomplete: parse it again when more arrives
                break
            if args:
                replies.append(execute(args))
        self.buf = buf[pos:]
        if replies and self.transport is not None:
            self.transport.write(b"".join(replies))

    def _fail(self, replies: list[bytes], msg: str) -> None:
        assert self.transport is not None
        replies.append(b"-ERR Protocol error: %s\r\n" % msg.encode())
        self.transport.write(b"".join(replies))
        self.transport.close()


async def main(port: int) -> None:
    store = Store()
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: RespProtocol(store), "127.0.0.1", port)
    print(f"resp_uvloop: listening on 127.0.0.1:{server.sockets[0].getsockname()[1]}", flush=True)
    await server.serve_forever()


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, default=0)
    uvloop.run(main(ap.parse_args().port))
