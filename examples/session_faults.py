#!/usr/bin/env python3
# examples/session_faults.py
#
# Two messengers in two processes over TCP on 127.0.0.1 with a lossless
# policy, a socket failure injected every K messages: does every message
# arrive exactly once, in order?
#
#   python examples/session_faults.py --frames 100000 --fail-every 1000
#
# prints one JSON line: delivered, lost, duplicated, reordered, reconnects,
# seconds (and the faults injected). The receiver is a child process
# (`--role receiver`) with the stateful_server policy; the sender dials it
# with lossless_client and `inject_socket_failures=K`. Each message carries
# its number; the receiver checks them and reports back over the session.
from __future__ import annotations

import argparse
import json
import os
import struct
import subprocess
import sys
import time

try:
    import evloop
except ImportError:  # run from a checkout without installing
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
    import evloop
from evloop.session import Messenger, Policy

DATA, REPORT, RESULT = 1, 2, 3
SEQ = struct.Struct(">Q")


def receiver(frames: int) -> int:
    loop = evloop.Loop()
    seen = bytearray(frames + 1)
    stats = {"delivered": 0, "duplicated": 0, "reordered": 0, "out_of_range": 0}
    last = 0

    def on_data(session, chan, payload):
        nonlocal last
        (n,) = SEQ.unpack_from(payload)
        if not 1 <= n <= frames:
            stats["out_of_range"] += 1
            return
        if seen[n]:
            stats["duplicated"] += 1
        else:
            seen[n] = 1
            stats["delivered"] += 1
        if n != last + 1:
            stats["reordered"] += 1
        last = n

    def on_report(session, chan, payload):
        session.send(RESULT, json.dumps(stats).encode())

    m = Messenger(loop, "tcp:127.0.0.1:0", type="server", policy=Policy.stateful_server())
    m.route(DATA, on_data)
    m.route(REPORT, on_report)
    done = []
    # The sender closes its messenger at the end: our session goes to standby.
    m.on_fault = lambda s, exc: None
    print(m.address, flush=True)
    # Run until stdin closes (the parent exits or closes it).
    stdin_fd = sys.stdin.fileno()
    loop.register(stdin_fd, evloop.EVENT_READ, lambda mask: done.append(os.read(stdin_fd, 1)))
    loop.run_until(lambda: done, timeout=600)
    loop.unregister(stdin_fd)
    m.close()
    loop.close()
    return 0


def sender(frames: int, fail_every: int, size: int) -> dict:
    child = subprocess.Popen(
        [sys.executable, os.path.abspath(__file__), "--role", "receiver", "--frames", str(frames)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None
        address = child.stdout.readline().strip()
        if not address:
            raise RuntimeError("the receiver process did not start")
        loop = evloop.Loop()
        m = Messenger(
            loop, None, type="client", policy=Policy.lossless_client(),
            inject_socket_failures=fail_every,
        )  # fmt: skip
        result: list[dict] = []
        m.route(RESULT, lambda s, c, p: result.append(json.loads(p)))
        pad = b"\0" * max(0, size - SEQ.size)
        session = m.connect(address)
        t0 = time.perf_counter()
        next_n = 1

        def produce() -> None:
            nonlocal next_n
            while next_n <= frames and session.writable:
                session.send(DATA, SEQ.pack(next_n) + pad)
                next_n += 1
            if next_n <= frames:
                session.when_writable(produce)

        produce()
        ok = loop.run_until(
            lambda: next_n > frames and session.statistics().pending_bytes == 0, timeout=300
        )
        if not ok:
            raise RuntimeError(f"not all messages acknowledged: {session.statistics()}")
        seconds = time.perf_counter() - t0
        session.send(REPORT, b"?")
        if not loop.run_until(lambda: result, timeout=60):
            raise RuntimeError("the receiver did not report")
        st = session.statistics()
        r = result[0]
        out = {
            "delivered": r["delivered"],
            "lost": frames - r["delivered"],
            "duplicated": r["duplicated"],
            "reordered": r["reordered"] + r["out_of_range"],
            "reconnects": st.reconnects,
            "seconds": round(seconds, 3),
            "faults_injected": m.injected,
            "frames": frames,
            "fail_every": fail_every,
        }
        m.close()
        loop.run_until(lambda: False, timeout=0.05)  # let the CLOSE leave
        loop.close()
        return out
    finally:
        if child.stdin is not None:
            child.stdin.close()
        try:
            child.wait(timeout=30)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--frames", type=int, default=100_000)
    ap.add_argument(
        "--fail-every", type=int, default=1000, help="inject a fault every K messages (0: never)"
    )
    ap.add_argument("--size", type=int, default=64, help="payload bytes per message (>= 8)")
    ap.add_argument("--role", choices=("sender", "receiver"), default="sender")
    args = ap.parse_args()
    if args.frames < 1 or args.size < SEQ.size or args.fail_every < 0:
        ap.error("need --frames >= 1, --size >= 8, --fail-every >= 0")
    if args.role == "receiver":
        return receiver(args.frames)
    out = sender(args.frames, args.fail_every, args.size)
    print(json.dumps(out))
    bad = out["lost"] or out["duplicated"] or out["reordered"]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
