# bench/evlbench/__init__.py
#
# The benchmark: `make bench` (or `PYTHONPATH=bench python -m evlbench` from
# the source tree) measures evloop against its peers on this machine in one
# run, every workload N times, and prints medians with their spread and
# evloop's ratio to each system. It is not part of the installed package:
# the wheel ships the runtime only. The pieces:
#
#   registry.py    the workloads and systems: adding either is an entry here
#   common.py      wire format, payloads, result types, the frame sink,
#                  child-process helpers
#   evl.py         evloop's own runners (public API only)
#   aio.py         the asyncio and uvloop peers (streams and protocols,
#                  batched and not); aio_frames.py their frame parsers
#   mp.py          the multiprocessing.connection peer
#   floor.py       no framework: the Python floor, the blocking socket, and
#                  the lean pool worker the asyncio peers use
#   ceiling.py     the C ceiling (bench/ceiling.c)
#   cpeer.py       the C writer and reader of the one-sided workloads
#                  (bench/cpeer.c); cbuild.py compiles both C programs
#   worker.py      entry point of every child process a system spawns
#   measure.py     entry point of the process that runs one measurement
#   report.py      tables, targets, JSON; chart.py the PNG
#   __main__.py    the harness: options, the plan, timeouts, progress
#
# Only evl.py and floor.py import evloop. The harness imports a system's
# module only once the system is selected, and a module that fails to
# import costs its own rows, not the run.
