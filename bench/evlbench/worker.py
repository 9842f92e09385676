# bench/evlbench/worker.py
#
# Entry point of every child process a benchmark system spawns (see
# common.spawn_child):
#
#   python -m evlbench.worker MODULE ROLE FD PARAMS_JSON
#
# imports MODULE and calls MODULE.child(ROLE, FD, **PARAMS). The child owns FD
# (its end of a socketpair) and exits when its role is done: a sender after
# its duration, an echo worker at EOF. Any exception prints its traceback and
# exits non-zero, which the parent reports as a failed measurement.
from __future__ import annotations

import importlib
import json
import sys


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 4:
        raise SystemExit("usage: python -m evlbench.worker MODULE ROLE FD PARAMS_JSON")
    module, role, fd, params = args
    importlib.import_module(module).child(role, int(fd), **json.loads(params))


if __name__ == "__main__":
    main()
