# evloop/session: Ceph-grade messaging over TCP and Unix sockets.
#
#   wire.py       the session channel's control frames (the protocol module)
#   policy.py     Policy flags and presets, Throttle
#   link.py       _Link: one connection and its handshake
#   session.py    Session: priority out-queues, implicit sequence numbers,
#                 cumulative acks, replay across reconnects, keepalive
#   messenger.py  Messenger: addresses, sessions by peer, accept-side routing,
#                 simultaneous-dial resolution, local delivery
#
# Layering: this package uses only the public API of Loop, Conn, Pipe and
# server.py; nothing below it imports it. docs/session.md is the full
# description, wire format included.
from __future__ import annotations

from .messenger import Messenger, MessengerStatistics, parse_address
from .policy import Policy, Throttle, ThrottleStatistics
from .session import PRIO_DEFAULT, PRIO_HIGHEST, PRIO_LOWEST, Session, SessionStatistics
from .wire import SESSION_CHANNEL

__all__ = [
    "Messenger", "MessengerStatistics", "parse_address", "Policy", "Throttle",
    "ThrottleStatistics", "Session", "SessionStatistics", "PRIO_DEFAULT", "PRIO_HIGHEST",
    "PRIO_LOWEST", "SESSION_CHANNEL",
]  # fmt: skip
