# A worker module WITHOUT a __main__ guard: importing it starts a worker.
# In a worker that imports it as its target, spawn() refuses (SpawnError),
# instead of every worker starting another one. Never imported by the tests
# themselves (the parent only names it).
from evloop import Loop
from evloop.spawn import spawn

_loop = Loop()
spawn(_loop, "tests.recursive_worker:work")


def work(loop, pipe):  # type: ignore[no-untyped-def]
    pipe.write_frame(1, b"never reached")
