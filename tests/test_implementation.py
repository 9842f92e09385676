# evloop.implementation() and the environment flags behind it. `make test`
# runs this under EVLOOP_REQUIRE_C=1 and again under EVLOOP_PURE_PYTHON=1;
# the subprocess cases set their own environment. A real install without C
# (and the reason it records) is tests/test_packaging.py's.
from __future__ import annotations

import dataclasses
import os
import subprocess
import sys

import pytest

import evloop
from evloop import _env, codec, launch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(evloop.__file__)))


def test_reports_what_the_modules_chose() -> None:
    impl = evloop.implementation()
    assert impl.codec.implementation == codec.IMPLEMENTATION
    assert impl.spawn.implementation == launch.IMPLEMENTATION
    assert impl.codec.c_available == (codec.c_impl is not None)
    assert impl.spawn.c_available == (launch.c_import_error is None)
    for part in (impl.codec, impl.spawn):
        assert (part.reason is None) == (part.implementation == "c"), part
    assert impl.all_c == (impl.codec.implementation == impl.spawn.implementation == "c")
    assert str(impl).splitlines()[0].startswith(f"codec: {impl.codec.implementation}")
    with pytest.raises(dataclasses.FrozenInstanceError):
        impl.codec.implementation = "c"  # type: ignore[misc]


@pytest.mark.skipif(not _env.require_c(), reason="EVLOOP_REQUIRE_C is not set")
def test_require_c_means_both_parts_are_c_or_pure_on_request() -> None:
    impl = evloop.implementation()
    expected = "python" if _env.pure_python() else "c"
    assert impl.codec.implementation == impl.spawn.implementation == expected, impl
    assert impl.codec.c_available and impl.spawn.c_available


@pytest.mark.skipif(not _env.pure_python(), reason="EVLOOP_PURE_PYTHON is not set")
def test_pure_python_flag_is_the_reason() -> None:
    impl = evloop.implementation()
    for part in (impl.codec, impl.spawn):
        assert part.implementation == "python"
        if part.c_available:
            assert part.reason == "EVLOOP_PURE_PYTHON=1 is set", part


def test_follows_a_selection_changed_at_run_time(monkeypatch: pytest.MonkeyPatch) -> None:
    # tests/test_spawn.py switches launchers this way.
    monkeypatch.setattr(launch, "IMPLEMENTATION", "python")
    spawn = evloop.implementation().spawn
    assert spawn.implementation == "python" and spawn.reason


@pytest.mark.parametrize(
    ("value", "on"), [("", False), ("0", False), ("1", True), ("yes", True), (None, False)]
)
def test_flag_values(monkeypatch: pytest.MonkeyPatch, value: str | None, on: bool) -> None:
    if value is None:
        monkeypatch.delenv("EVLOOP_TEST_FLAG", raising=False)
    else:
        monkeypatch.setenv("EVLOOP_TEST_FLAG", value)
    assert _env.flag("EVLOOP_TEST_FLAG") is on


def _run(code: str, **env_extra: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EVLOOP_")}
    env.update(env_extra)
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    return subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=30
    )


@pytest.mark.timeout(60)
def test_a_missing_extension_is_reported_with_its_reason() -> None:
    # Blocking the module in sys.modules makes its import fail as if unbuilt.
    r = _run(
        "import sys; sys.modules['evloop._spawn'] = None\n"
        "import evloop; s = evloop.implementation().spawn\n"
        "print(s.implementation, s.c_available); print(s.reason)\n"
    )
    assert r.returncode == 0, r.stderr
    first, reason = r.stdout.splitlines()[:2]
    assert first == "python False"
    assert "evloop._spawn failed to import" in reason and "C compiler" in reason, reason


@pytest.mark.timeout(60)
def test_require_c_import_error_says_why_and_what_to_do() -> None:
    r = _run(
        "import sys; sys.modules['evloop._codec'] = None\nimport evloop\n", EVLOOP_REQUIRE_C="1"
    )
    assert r.returncode != 0
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("ImportError: EVLOOP_REQUIRE_C=1 but the C codec is unavailable:"), last
    assert "evloop._codec failed to import" in last and "unset EVLOOP_REQUIRE_C" in last, last


@pytest.mark.skipif(launch.c_import_error is not None, reason="C spawner not built")
def test_spawn_constants_come_from_the_c_header() -> None:
    # csrc/evl_spawn.h is the source of truth (architecture review 1.3 #9-10):
    # every stage the C enum has must have a name here, and the fd must agree.
    spawn_c = launch._c_spawn
    assert launch.CHILD_FD == spawn_c.lib.EVL_SPAWN_FD == 3
    stages = spawn_c.ffi.typeof("enum evl_spawn_stage").elements
    assert set(launch._STAGES) == {v for v, name in stages.items() if name != "EVL_SPAWN_OK"}
