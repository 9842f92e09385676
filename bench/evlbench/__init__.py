# bench/evlbench/__init__.py
#
# The end-to-end benchmark: `python -m evlbench` (or `evloop-bench`, or
# `make bench`) measures evloop against its peers on this machine in one run
# and prints evloop's ratio to each. The pieces:
#
#   common.py      wire format, result types, the system registry, child helpers
#   aio.py         the asyncio and uvloop peers (streams and protocols)
#   aio_frames.py  frame parsers for the protocol peers (Protocol, BufferedProtocol)
#   mp.py          the multiprocessing.connection peer
#   ceiling.py     the C ceiling (csrc/bench_ceiling.c), compiled on demand
#   evl.py         evloop's own runners
#   worker.py      entry point of every child process a system spawns
#   measure.py     entry point of the process that runs one measurement
#   report.py      table, targets, JSON and chart
#   __main__.py    the harness: options, the plan, timeouts, progress
#
# Only evl.py uses evloop's core, and the harness imports it lazily, so a
# broken runner costs its own rows, not the run. (Importing evloop.bench does
# run evloop/__init__.py, so that much of the package must import.)
