# A worker module whose import fails inside the child (a missing dependency):
# the parent's static check finds `work` here, so this is reported by the
# worker as a RemoteError. Used by tests/test_spawn.py.
import a_dependency_that_is_not_installed  # noqa: F401


def work(loop, pipe):  # type: ignore[no-untyped-def]
    pass
