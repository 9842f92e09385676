# evloop/resp.py
#
# RESP2, the Redis protocol: an incremental request parser that works on a
# Conn's read buffer, reply encoders, and RespConnection, which ties a parser
# and a command function to one Conn (pipelining, protocol errors, ordering).
#
# Requests are arrays of bulk strings ("*2\r\n$3\r\nGET\r\n$1\r\nk\r\n") or
# inline lines ("PING\r\n", what telnet and redis-benchmark's PING_INLINE
# send). Between commands, the common case (whole multibulk commands already
# in the buffer, as a pipelining client sends them) goes to the C scanner,
# codec.scan_resp (csrc/evl_codec.c's evl_resp_scan): one call per batch of
# commands returns their arguments' offsets, the arguments are sliced as
# bytes from one copy of the buffer, and the batch is consumed at once. The
# scanner enforces the bounds below with the same checks in the same order
# and says which rule was broken, so its errors are the state machine's.
# Whatever it stops at (a partial command, an inline line, a large bulk, a
# command with more arguments than a batch) goes to the state machine for
# one command, then back to the scanner. Without the C codec the state
# machine does everything. The state machine keeps its place between calls:
# between commands; inside an array, with the arguments parsed so far and
# how many are left; waiting for a bulk body of known length. Bytes are
# consumed from the Conn as soon as they are parsed, so the next call starts
# exactly where the last one stopped: a header line is at most 32 bytes and
# is the only thing ever looked at twice; a bulk body is not looked at until
# all of it is there (the state says how many bytes it needs), and a large
# one (>= LARGE_BULK) is moved out of the Conn as it arrives, so it never
# meets the Conn's read_limit; an inline line goes through Conn.read_until,
# which remembers how far it scanned. A client trickling a request byte by
# byte therefore costs linear time, not quadratic.
#
# Bounds, like Redis' (proto-max-bulk-len, the 1M multibulk cap, the 64 KiB
# inline cap): a bulk longer than max_bulk_len, an array longer than
# max_multibulk_len, an inline line longer than max_inline_len, a count line
# longer than 32 bytes, a count that is not a plain decimal, or a missing
# CRLF after a bulk body are RespProtocolError with Redis' wording. Memory
# held per connection is therefore bounded by what the client actually sent
# of one command, never by what it announced.
#
# Invariant: parse() appends every complete command before the first error
# to `out`, then raises; Redis runs those commands, answers the error with
# "-ERR Protocol error: ..." and closes, and RespConnection does the same.
from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, ClassVar

from . import codec
from .conn import Conn
from .errors import ReadLimitError, RespProtocolError

__all__ = [
    "RespParser",
    "RespConnection",
    "RespCommand",
    "RespQuit",
    "split_inline",
    "command_name",
    "bulk",
    "integer",
    "simple",
    "error",
    "array",
    "NULL_BULK",
    "OK",
    "DEFAULT_MAX_BULK_LEN",
    "DEFAULT_MAX_MULTIBULK_LEN",
    "DEFAULT_MAX_INLINE_LEN",
    "LARGE_BULK",
]

DEFAULT_MAX_BULK_LEN = 512 * 1024 * 1024  # Redis' proto-max-bulk-len
DEFAULT_MAX_MULTIBULK_LEN = 1024 * 1024  # Redis' cap on an array's length
DEFAULT_MAX_INLINE_LEN = 64 * 1024  # Redis' PROTO_INLINE_MAX_SIZE
# Bulk bodies at least this long are copied out of the Conn as they arrive.
LARGE_BULK = 64 * 1024
# "*1048576\r\n" is 10 bytes; a count line this long without its CRLF is
# garbage, and waiting for more would let a client make us rescan it.
_COUNT_LINE_MAX = 32

RespCommand = list[bytes]

# The whole-command scanner: codec.scan_resp (C) when the C codec is in use.
# The pure-Python twin does per command what the state machine does, plus
# building its result lists, so without C the state machine alone is the
# faster parser and is used for everything.
_Scanner = Callable[[bytes, int, int, int, int, int, int, int], codec.RespScanResult]
_SCANNER: _Scanner | None = codec.scan_resp if codec.IMPLEMENTATION == "c" else None
# One scan stores at most this many commands and arguments (its output
# arrays are allocated once per thread); a command with more arguments than
# a batch holds goes through the state machine.
_BATCH_CMDS = 1024
_BATCH_ARGS = 4096
_U63 = (1 << 63) - 1
# The scanner's rules, in Redis' words.
_SCAN_ERRORS = {
    codec.RESP_E_MBULK_LINE: "too big mbulk count string",
    codec.RESP_E_MBULK_LEN: "invalid multibulk length",
    codec.RESP_E_BULK_LINE: "too big bulk count string",
    codec.RESP_E_BULK_LEN: "invalid bulk length",
    codec.RESP_E_CRLF: "expected CRLF after a bulk string",
}
# Where RespParser._run stopped.
_USED_UP = 0  # the buffer is used up, or ends in an incomplete part
_AT_INLINE = 1  # at an inline line it cannot finish (read_until's job)
_AT_LARGE = 2  # at a large bulk body (_read_big's job)
_ONE_DONE = 3  # one command finished, in `one` mode

NULL_BULK = b"$-1\r\n"
OK = b"+OK\r\n"


def bulk(data: bytes | bytearray | memoryview) -> bytes:
    """A bulk string reply."""
    return b"$%d\r\n%s\r\n" % (len(data), data)


def integer(n: int) -> bytes:
    """An integer reply."""
    return b":%d\r\n" % n


def simple(text: str | bytes) -> bytes:
    """A simple string reply (+OK); no CR or LF allowed."""
    raw = text.encode() if isinstance(text, str) else text
    if b"\r" in raw or b"\n" in raw:
        raise ValueError("a simple string cannot hold CR or LF")
    return b"+%s\r\n" % raw


def error(message: str) -> bytes:
    """An error reply; `message` starts with the error kind ("ERR ...").
    CR and LF are replaced by spaces, so a client's bytes echoed in a
    message cannot break the stream."""
    return b"-%s\r\n" % message.replace("\r", " ").replace("\n", " ").encode(errors="replace")


def array(items: Sequence[bytes | None]) -> bytes:
    """An array of bulk strings (None is a null bulk)."""
    parts = [b"*%d\r\n" % len(items)]
    for item in items:
        parts.append(NULL_BULK if item is None else b"$%d\r\n%s\r\n" % (len(item), item))
    return b"".join(parts)


# The canonical spellings of small counts, so the usual header costs one
# dict lookup instead of a validation and an int().
_SMALL = {b"%d" % i: i for i in range(-1, 4096)}


def _count(line: bytes, what: str) -> int:
    # Redis' string2ll: an optional '-', then digits without a leading zero,
    # nothing else (no '+', no spaces, no '_' that int() would take).
    n = _SMALL.get(line)
    if n is not None:
        return n
    digits = line[1:] if line[:1] == b"-" else line
    if not digits.isdigit() or len(digits) > 18 or digits[:1] == b"0":
        raise RespProtocolError(f"invalid {what} length")
    return int(line)


def split_inline(line: bytes) -> list[bytes]:
    """Split an inline command line into arguments, the way redis-cli and
    Redis do: whitespace separates, "double" quotes take \\n \\r \\t \\b \\a
    \\\\ \\" and \\xHH escapes, 'single' quotes only \\'. RespProtocolError for
    unbalanced quotes."""
    if b'"' not in line and b"'" not in line:
        return line.split()
    args: list[bytes] = []
    i, n = 0, len(line)
    while True:
        while i < n and line[i] in b" \t\r\n\v\f":
            i += 1
        if i == n:
            return args
        cur = bytearray()
        quote = 0
        while True:
            if i == n:
                if quote:
                    raise RespProtocolError("unbalanced quotes in request")
                break
            c = line[i]
            if quote == 0x22:  # "
                if c == 0x5C and i + 1 < n:  # backslash
                    e = line[i + 1]
                    hexd = line[i + 2 : i + 4]
                    if (
                        e == 0x78
                        and len(hexd) == 2
                        and all(h in b"0123456789abcdefABCDEF" for h in hexd)
                    ):
                        cur.append(int(hexd, 16))
                        i += 4
                        continue
                    cur.append({0x6E: 10, 0x72: 13, 0x74: 9, 0x62: 8, 0x61: 7}.get(e, e))
                    i += 2
                    continue
                if c == 0x22:
                    if i + 1 < n and line[i + 1] not in b" \t\r\n\v\f":
                        raise RespProtocolError("unbalanced quotes in request")
                    i += 1
                    break
                cur.append(c)
            elif quote == 0x27:  # '
                if c == 0x5C and i + 1 < n and line[i + 1] == 0x27:
                    cur.append(0x27)
                    i += 2
                    continue
                if c == 0x27:
                    if i + 1 < n and line[i + 1] not in b" \t\r\n\v\f":
                        raise RespProtocolError("unbalanced quotes in request")
                    i += 1
                    break
                cur.append(c)
            elif c in b" \t\r\n\v\f":
                break
            elif c in b"\"'":
                quote = c
            else:
                cur.append(c)
            i += 1
        args.append(bytes(cur))


class RespParser:
    """An incremental RESP request parser for one connection (see the module
    header). `parse(conn, out)` consumes every complete command buffered in
    `conn`, appending each (a list of bytes arguments) to `out`; a partial
    command's state is kept for the next call."""

    __slots__ = (
        "max_bulk_len", "max_multibulk_len", "max_inline_len",
        "_args", "_left", "_bulk", "_big", "_partial_line",
    )  # fmt: skip

    # The scanner parse() uses between commands, None for the state machine
    # alone; a class attribute, so a test can run the parser on either.
    _scanner: ClassVar[_Scanner | None] = _SCANNER

    def __init__(
        self,
        *,
        max_bulk_len: int = DEFAULT_MAX_BULK_LEN,
        max_multibulk_len: int = DEFAULT_MAX_MULTIBULK_LEN,
        max_inline_len: int = DEFAULT_MAX_INLINE_LEN,
    ):
        if max_bulk_len < 0 or max_multibulk_len < 1 or max_inline_len < 16:
            raise ValueError("need max_bulk_len >= 0, max_multibulk_len >= 1, max_inline_len >= 16")
        self.max_bulk_len = max_bulk_len
        self.max_multibulk_len = max_multibulk_len
        self.max_inline_len = max_inline_len
        self._args: list[bytes] = []  # the current command's arguments so far
        self._left = 0  # bulk strings still to come in the current command
        self._bulk = -1  # the length of the bulk body being read; -1: its header is next
        self._big: bytearray | None = None  # a large bulk body, as it arrives
        self._partial_line = False  # an inline line is being read by read_until

    @property
    def idle(self) -> bool:
        """True between commands (nothing of a command is pending)."""
        return self._left == 0

    def parse(self, conn: Conn, out: list[RespCommand]) -> None:
        """See the class docstring. Raises RespProtocolError (after appending
        the commands that came before the bad bytes)."""
        scanner = type(self)._scanner  # via the class: a plain function, not bound
        while conn.read_buffered:
            n = self._bulk
            data: bytes | None = None  # a copy of the buffer _scan made
            start = 0
            if n >= 0:
                # A bulk body of known length: nothing to scan until it is all here.
                if self._big is not None or n >= LARGE_BULK:
                    if not self._read_big(conn, out):
                        return
                    continue
                if conn.read_buffered < n + 2:
                    return
            elif self._partial_line:
                # An inline line without its newline yet: read_until carries
                # on from where it stopped looking.
                if not self._inline(conn, out):
                    return
                continue
            elif scanner is not None and self._left == 0:
                # Between commands: the whole ones go in batches through the
                # scanner; what it leaves goes to the state machine, on the
                # same copy of the buffer, for one command (and the inline
                # lines after it), and then back here.
                data, start = self._scan(conn, out, scanner)
                if start == len(data):
                    conn.consume(start)
                    return
            stopped = self._run(conn, out, scanner is not None, data, start)
            if stopped == _USED_UP:
                return
            if stopped == _AT_INLINE:
                # _run stopped at an inline line it could not finish.
                if not self._inline(conn, out):
                    return

    def _scan(self, conn: Conn, out: list[RespCommand], scanner: _Scanner) -> tuple[bytes, int]:
        """The common case: every whole multibulk command at the front of the
        buffer, found by the scanner in batches and sliced as bytes from one
        copy of the buffer. Stops at the first thing the state machine
        handles (a partial, inline or large command, or one with more
        arguments than a batch) and returns the copy and where that is,
        consuming nothing (the caller consumes once); at a protocol error it
        consumes the commands before it and raises."""
        data = conn.read().tobytes()
        end = len(data)
        pos = 0
        # A count has at most 18 digits, so clamping the bounds to the
        # scanner's 64-bit range changes nothing.
        max_bulk = min(self.max_bulk_len, _U63)
        max_mbulk = min(self.max_multibulk_len, _U63)
        while True:
            argcs, offs, lens, nxt, stop, err, at = scanner(
                data, pos, end, max_bulk, max_mbulk, LARGE_BULK, _BATCH_CMDS, _BATCH_ARGS
            )
            if argcs:
                if pos:
                    offs = [o + pos for o in offs]
                args = [data[o : o + n] for o, n in zip(offs, lens, strict=True)]
                if len(argcs) == 1:
                    out.append(args)
                else:
                    k = 0
                    for argc in argcs:
                        out.append(args[k : k + argc])
                        k += argc
            pos = nxt
            if stop != codec.RESP_LIMIT or not argcs:
                break
        if stop == codec.RESP_ERROR:
            conn.consume(pos)
            if err == codec.RESP_E_DOLLAR:
                raise RespProtocolError(f"expected '$', got '{chr(data[at])}'")
            raise RespProtocolError(_SCAN_ERRORS[err])
        return data, pos

    def _run(
        self, conn: Conn, out: list[RespCommand], one: bool, data: bytes | None, start: int
    ) -> int:
        """The state machine: parse from one copy of the buffered bytes
        (`data` if given, a copy _scan made, from `start`), commands and
        their parts, and consume what was parsed. Returns
        _USED_UP when the buffer is used up or ends in an incomplete part,
        _AT_INLINE or _AT_LARGE when it stopped at something parse() handles
        (an inline line it cannot finish, a large bulk), and, if `one`,
        _ONE_DONE at the first multibulk command after what it finished
        (inline lines it parses on), so that the scanner takes that one and
        those after it."""
        if data is None:
            data = conn.read().tobytes()
        end = len(data)
        pos = start
        args = self._args
        left = self._left
        blen = self._bulk
        find = data.find
        small = _SMALL
        stopped = _USED_UP
        try:
            while pos < end:
                if left == 0:
                    if data[pos] != 42:  # not '*': an inline command
                        i = find(b"\n", pos, end)
                        if i < 0 or i - pos >= self.max_inline_len:
                            stopped = _AT_INLINE  # parse() hands it to read_until
                            break
                        inline = split_inline(data[pos:i])
                        pos = i + 1
                        if inline:
                            out.append(inline)
                        continue
                    if one and pos != start:
                        # A multibulk command after what this call finished:
                        # the scanner takes it from here.
                        stopped = _ONE_DONE
                        break
                    i = find(b"\r\n", pos, pos + _COUNT_LINE_MAX)
                    if i < 0:
                        if end - pos >= _COUNT_LINE_MAX:
                            raise RespProtocolError("too big mbulk count string")
                        break
                    count = small.get(data[pos + 1 : i])
                    if count is None:
                        count = _count(data[pos + 1 : i], "multibulk")
                    pos = i + 2
                    if count <= 0:
                        continue  # "*0" and "*-1" are empty commands: skipped, as Redis does
                    if count > self.max_multibulk_len:
                        raise RespProtocolError("invalid multibulk length")
                    left = count
                    args = []
                    blen = -1
                if blen < 0:
                    if pos == end:
                        break
                    if data[pos] != 36:  # '$'
                        raise RespProtocolError(f"expected '$', got '{chr(data[pos])}'")
                    i = find(b"\r\n", pos, pos + _COUNT_LINE_MAX)
                    if i < 0:
                        if end - pos >= _COUNT_LINE_MAX:
                            raise RespProtocolError("too big bulk count string")
                        break
                    got = small.get(data[pos + 1 : i])
                    blen = _count(data[pos + 1 : i], "bulk") if got is None else got
                    if blen < 0 or blen > self.max_bulk_len:
                        raise RespProtocolError("invalid bulk length")
                    pos = i + 2
                    if blen >= LARGE_BULK:
                        stopped = _AT_LARGE  # parse() moves it out as it arrives
                        break
                stop = pos + blen
                if stop + 2 > end:
                    break
                if data[stop : stop + 2] != b"\r\n":
                    raise RespProtocolError("expected CRLF after a bulk string")
                args.append(data[pos:stop])
                pos = stop + 2
                blen = -1
                left -= 1
                if left == 0:
                    out.append(args)
        finally:
            self._args = args
            self._left = left
            self._bulk = blen
            conn.consume(pos)
        return stopped

    def _read_big(self, conn: Conn, out: list[RespCommand]) -> bool:
        # A large bulk body: move what has arrived out of the Conn. The memory
        # it takes is what the client sent, never more than max_bulk_len + 2.
        need = self._bulk + 2
        big = self._big
        if big is None:
            big = self._big = bytearray()
        view = conn.read()
        k = min(len(view), need - len(big))
        big += view[:k]
        view.release()
        conn.consume(k)
        if len(big) < need:
            return False
        if big[-2:] != b"\r\n":
            raise RespProtocolError("expected CRLF after a bulk string")
        del big[-2:]
        self._args.append(bytes(big))
        self._big = None
        self._bulk = -1
        self._left -= 1
        if self._left == 0:
            out.append(self._args)
            self._args = []
        return True

    def _inline(self, conn: Conn, out: list[RespCommand]) -> bool:
        limit = min(self.max_inline_len, conn.read_limit)
        try:
            line = conn.read_until(b"\n", limit)
        except ReadLimitError:
            raise RespProtocolError("too big inline request") from None
        if line is None:
            self._partial_line = True
            return False
        self._partial_line = False
        args = split_inline(line)
        if args:
            out.append(args)
        return True


class RespQuit(bytes):
    """A reply after which RespConnection closes the connection (QUIT)."""


class RespConnection:
    """Serve RESP on one Conn: every complete command is passed to
    `execute(args) -> reply bytes` in order, and the replies of one read
    leave together, in order. A protocol error answers the commands before
    it, then "-ERR Protocol error: ..." and closes this Conn only. A reply
    that is a RespQuit closes after it is sent. An exception from `execute`
    is a bug in the command: it is reported to the loop's exception handler,
    the client gets "-ERR internal error", and the connection goes on."""

    __slots__ = ("conn", "execute", "parser", "commands")

    def __init__(
        self,
        conn: Conn,
        execute: Callable[[RespCommand], bytes],
        *,
        parser: RespParser | None = None,
    ):
        self.conn = conn
        self.execute = execute
        self.parser = parser or RespParser()
        self.commands = 0
        conn.on_data = self._on_data

    def _on_data(self, conn: Conn) -> None:
        cmds: list[RespCommand] = []
        failure: RespProtocolError | None = None
        try:
            self.parser.parse(conn, cmds)
        except RespProtocolError as exc:
            failure = exc
        if cmds:
            execute = self.execute
            replies = []
            for args in cmds:
                try:
                    reply = execute(args)
                except Exception as exc:
                    conn.loop.call_exception_handler(exc, execute)
                    reply = b"-ERR internal error\r\n"
                if type(reply) is RespQuit:
                    replies.append(bytes(reply))
                    failure = None
                    self._close(conn, replies)
                    return
                replies.append(reply)
            self.commands += len(cmds)
            if failure is None:
                if not conn.closing:
                    conn.write(replies[0] if len(replies) == 1 else b"".join(replies))
                return
        else:
            replies = []
        if failure is not None:
            replies.append(error(f"ERR Protocol error: {failure}"))
            self._close(conn, replies)

    def _close(self, conn: Conn, replies: list[bytes]) -> None:
        conn.on_data = None
        if not conn.closing:
            conn.write(b"".join(replies))
            conn.close()
        # Whatever else the client sent is not ours to parse any more.
        n = conn.read_buffered
        if n:
            conn.consume(n)


def command_name(args: Sequence[Any]) -> str:
    """The command's name for an error message, as the client spelled it."""
    return bytes(args[0]).decode("utf-8", "replace") if args else ""
