# tests/session_peer.py
#
# A peer messenger in its own process, for tests/test_session.py:
#
#   python tests/session_peer.py ADDRESS POLICY [KEY]
#
# listens on ADDRESS (tcp:127.0.0.1:0 picks a port), prints its canonical
# address on one line, echoes every message back to its sender on the same
# channel, and exits when its stdin closes (or it is killed).
from __future__ import annotations

import os
import sys

import evloop
from evloop.session import Messenger, Policy


def main() -> int:
    address, policy_name = sys.argv[1], sys.argv[2]
    key = sys.argv[3] if len(sys.argv) > 3 else None
    loop = evloop.Loop()
    m = Messenger(
        loop, address, type="peer", policy=getattr(Policy, policy_name)(), key=key,
        keepalive_interval=1.0,
    )  # fmt: skip
    m.on_message = lambda s, chan, payload: s.send(chan, payload)
    m.on_fault = lambda s, exc: None
    print(m.address, flush=True)
    done: list[bytes] = []
    fd = sys.stdin.fileno()
    loop.register(fd, evloop.EVENT_READ, lambda _mask: done.append(os.read(fd, 1)))
    loop.run_until(lambda: bool(done), timeout=300)
    loop.unregister(fd)
    m.close()
    loop.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
