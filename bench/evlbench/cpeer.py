# bench/evlbench/cpeer.py
#
# The C peers of the one-sided workloads (bench/cpeer.c): a writer that
# floods (or trickles into) socketpair ends so that the receiver under test
# is the bottleneck (recv, many), and a reader that drains one so that the
# sender under test is (send). Each is started with its socket ends passed
# down as open descriptors, which this process then closes; the program's
# one JSON line says what it wrote or read, and the workload checks its own
# count against it.
from __future__ import annotations

import json
import socket
import subprocess
from typing import Any

from .cbuild import CProgram
from .common import ChildFailed

PROGRAM = CProgram("cpeer", "cpeer.c")
EXIT_TIMEOUT = 60.0  # after the workload; the harness's timeout is the real bound


class _Peer:
    """A running cpeer process. Leaving the `with` block by an exception
    kills it; result() waits for it and returns its JSON line."""

    def __init__(self, args: list[str], socks: list[socket.socket]) -> None:
        fds = [s.fileno() for s in socks]
        argv = [str(PROGRAM.path()), *args, *map(str, fds)]
        self.proc = subprocess.Popen(
            argv,
            pass_fds=fds,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for s in socks:
            s.close()  # the child holds them now

    def result(self) -> dict[str, Any]:
        try:
            out, err = self.proc.communicate(timeout=EXIT_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.communicate()
            raise ChildFailed(f"cpeer did not exit within {EXIT_TIMEOUT:g} s") from None
        if self.proc.returncode != 0:
            raise ChildFailed(
                f"cpeer exited with status {self.proc.returncode}: "
                f"{err.decode(errors='replace').strip()}"
            )
        data: dict[str, Any] = json.loads(out.decode().strip().splitlines()[-1])
        return data

    def __enter__(self) -> _Peer:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if self.proc.poll() is None and exc_type is not None:
            self.proc.kill()
        if exc_type is not None:
            self.proc.communicate()


def writer(
    socks: list[socket.socket],
    size: int,
    duration: float,
    batch: int = 256,
    trickle: int = 0,
    pause_us: int = 0,
    rounds: int = 0,
) -> _Peer:
    """Start the C writer on `socks` (closed here once it has them): flood,
    `batch` frames per write per socket, or with trickle > 0 that many frames
    per socket and a pause of `pause_us` before the next one; for `duration`
    seconds or, if rounds > 0 and that comes first, `rounds` rounds."""
    args = ["write", str(size), repr(float(duration)), str(rounds), str(batch)]
    args += [str(trickle), str(pause_us)]
    return _Peer(args, socks)


def reader(sock: socket.socket, size: int, framing: str = "evl") -> _Peer:
    """Start the C reader draining `sock`; framing "mp" expects
    multiprocessing.connection's length prefix before each frame."""
    return _Peer(["read", framing, str(size)], [sock])


def many_writer(
    socks: list[socket.socket],
    mode: str,
    duration: float,
    frames: int,
    size: int,
    batch: int,
    trickle: int,
    pause_us: int,
) -> _Peer:
    """The writer of the many-connections workload. flood: as fast as the
    receiver drains, `batch` frames per write per socket, for as many rounds
    as make about `frames` frames in all (at least one round: every socket
    gets the same). trickle: `trickle` frames per socket then a pause, for
    `duration` seconds."""
    if mode == "flood":
        rounds = max(1, round(frames / (len(socks) * batch)))
        return writer(socks, size, FLOOD_CAP, batch, rounds=rounds)
    if mode == "trickle":
        return writer(socks, size, duration, batch, trickle, pause_us)
    raise ValueError(f"unknown mode {mode!r}")


FLOOD_CAP = 600.0  # seconds; a flood ends by its round count, the harness's timeout first
