# Real builds of the sdist and the wheel, installed into fresh virtual
# environments: what a user gets from `pip install`, with and without a C
# compiler. Nothing is mocked: "no compiler" is CC=/bin/false, "no cffi" is a
# build environment without it.
#
# To stay fast and work offline, the build requirements (setuptools, cffi,
# pycparser) are fetched once into a wheelhouse (build/test-wheelhouse, or
# $EVLOOP_TEST_WHEELHOUSE) and every venv is seeded from it with --no-index;
# builds run with --no-build-isolation in those venvs. Without the wheelhouse
# and without the package index the tests skip, saying so.
from __future__ import annotations

import os
import pathlib
import shlex
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import zipfile

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
WHEELHOUSE = pathlib.Path(
    os.environ.get("EVLOOP_TEST_WHEELHOUSE") or ROOT / "build" / "test-wheelhouse"
)
BUILD_REQUIREMENTS = ["setuptools>=77", "cffi>=1.16", "pycparser"]
MESSAGE = "evloop: a C extension could not be built"
ARCH = sysconfig.get_platform().split("-", 1)[1].replace("-", "_")  # x86_64, aarch64

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


def run(
    cmd: list[str], *, env: dict[str, str] | None = None, cwd: pathlib.Path | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        cmd, env=env, cwd=cwd, capture_output=True, text=True, timeout=240, stdin=subprocess.DEVNULL
    )


def clean_env(**extra: str) -> dict[str, str]:
    """The environment without anything that would change which evloop, or
    which implementation, a child sees."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("EVLOOP_", "PYTHON", "VIRTUAL_ENV", "CC", "CFLAGS", "MYPY"))
    }
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    env.update(extra)
    return env


def pip(python: pathlib.Path, *args: str, env: dict[str, str] | None = None):
    """This interpreter's pip acting on the venv of `python` (pip --python),
    so the venvs need no pip of their own."""
    return run(
        [sys.executable, "-m", "pip", "--python", str(python), *args], env=env or clean_env()
    )


def explain(r: subprocess.CompletedProcess[str]) -> str:
    cmd = shlex.join(r.args) if isinstance(r.args, list) else str(r.args)
    return f"$ {cmd}\nexit {r.returncode}\n--- stdout\n{r.stdout[-6000:]}\n--- stderr\n{r.stderr[-6000:]}"


@pytest.fixture(scope="module")
def wheelhouse() -> pathlib.Path:
    offline = ["--no-index", "--find-links", str(WHEELHOUSE)]
    fetch = [sys.executable, "-m", "pip", "download", "-q", "-d", str(WHEELHOUSE)]
    if WHEELHOUSE.is_dir() and run([*fetch, *offline, *BUILD_REQUIREMENTS]).returncode == 0:
        return WHEELHOUSE
    WHEELHOUSE.mkdir(parents=True, exist_ok=True)
    r = run([*fetch, *BUILD_REQUIREMENTS], env=clean_env())
    if r.returncode != 0:
        pytest.skip(
            f"cannot fetch the build requirements {BUILD_REQUIREMENTS} into {WHEELHOUSE} "
            f"(is the package index reachable?): {r.stderr.strip().splitlines()[-1:]}"
        )
    return WHEELHOUSE


@pytest.fixture(scope="module")
def make_venv(tmp_path_factory: pytest.TempPathFactory, wheelhouse: pathlib.Path):
    """make_venv(name, *requirements) -> the new venv's python, with the
    requirements installed from the wheelhouse."""

    def make(name: str, *requirements: str) -> pathlib.Path:
        where = tmp_path_factory.mktemp(name)
        r = run([sys.executable, "-m", "venv", "--without-pip", str(where / "venv")])
        assert r.returncode == 0, explain(r)
        python = where / "venv" / "bin" / "python"
        if requirements:
            r = pip(
                python, "install", "-q", "--no-index", "--find-links", str(wheelhouse),
                "--no-cache-dir", *requirements,
            )  # fmt: skip
            assert r.returncode == 0, explain(r)
        return python

    return make


@pytest.fixture(scope="module")
def builder(make_venv) -> pathlib.Path:
    """A venv with the build requirements: the build environment."""
    return make_venv("builder", *BUILD_REQUIREMENTS)


@pytest.fixture(scope="module")
def sdist(builder: pathlib.Path, tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    """The sdist, built through setuptools' PEP 517 hook (what python -m
    build calls) from a copy of the tree, so the checkout gets no egg-info."""
    tree = tmp_path_factory.mktemp("tree") / "evloop"
    junk = shutil.ignore_patterns(
        ".git", ".venv", "build", "dist", "*.egg-info", "__pycache__", "*.so", "*.pyc",
        ".hypothesis", ".mypy_cache", ".ruff_cache", ".benchmarks", "bench-results", "*.bin",
        "_buildinfo.py", "_codec.c", "_spawn.c",
    )  # fmt: skip
    shutil.copytree(ROOT, tree, ignore=junk, symlinks=True)
    out = tree.parent / "dist"
    code = f"from setuptools import build_meta; print(build_meta.build_sdist({str(out)!r}))"
    r = run([str(builder), "-c", code], cwd=tree, env=clean_env())
    assert r.returncode == 0, explain(r)
    return out / r.stdout.split()[-1]


def build_wheel(
    builder: pathlib.Path, sdist: pathlib.Path, out: pathlib.Path, **env: str
) -> subprocess.CompletedProcess[str]:
    return pip(
        builder, "wheel", "-v", "--no-build-isolation", "--no-deps", "--no-index",
        "--no-cache-dir", "-w", str(out), str(sdist), env=clean_env(**env),
    )  # fmt: skip


def only_wheel(out: pathlib.Path) -> pathlib.Path:
    wheels = sorted(out.glob("*.whl"))
    assert len(wheels) == 1, wheels
    return wheels[0]


def wheel_facts(wheel: pathlib.Path) -> tuple[list[str], dict[str, list[str]]]:
    """(names in the wheel, the WHEEL file as key -> values)."""
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
        meta = next(n for n in names if n.endswith(".dist-info/WHEEL"))
        fields: dict[str, list[str]] = {}
        for line in z.read(meta).decode().splitlines():
            if ": " in line:
                k, v = line.split(": ", 1)
                fields.setdefault(k, []).append(v)
    return names, fields


def assert_runtime_only(names: list[str]) -> None:
    assert "evloop/py.typed" in names, names
    assert "evloop/__init__.py" in names and "evloop/_pycodec.py" in names, names
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names), names
    stray = [n for n in names if n.startswith(("tests/", "bench/", "evloop/bench/", "csrc/"))]
    assert not stray, f"the wheel must ship the runtime only: {stray}"
    assert not [n for n in names if "__pycache__" in n or n.endswith((".pyc", ".c", ".o"))]


# What a user program does first: which implementation, then a frame through a
# Pipe and through a spawned worker.
SMOKE = """
import sys
import evloop
impl = evloop.implementation()
print(impl.codec.implementation, impl.spawn.implementation)
print(impl.codec.reason)
print(impl.spawn.reason)
print(evloop.__file__)
with evloop.Loop() as loop:
    a, b = evloop.conn_pair(loop)
    got: list[tuple[int, bytes]] = []
    evloop.Pipe(b, lambda chan, payload: got.append((chan, bytes(payload))))
    evloop.Pipe(a).write_frame(7, b"round trip")
    assert loop.run_until(lambda: bool(got), timeout=10), "no frame arrived"
    assert got == [(7, b"round trip")], got
    echoed: list[bytes] = []
    cat = evloop.spawn_worker(loop, ["sh", "-c", "exec cat <&3 >&3"],
                       on_frame=lambda w, chan, data: echoed.append(bytes(data)))
    cat.write_frame(3, b"through a worker")
    assert loop.run_until(lambda: bool(echoed), timeout=20), "the worker did not echo"
    assert echoed == [b"through a worker"], echoed
print("round trips ok")
"""


def smoke(python: pathlib.Path, tmp_path: pathlib.Path) -> list[str]:
    script = tmp_path / "smoke.py"
    script.write_text(SMOKE)
    r = run([str(python), str(script)], cwd=tmp_path, env=clean_env())
    assert r.returncode == 0, explain(r)
    lines = r.stdout.splitlines()
    venv = python.parent.parent
    assert pathlib.Path(lines[3]).resolve().is_relative_to(venv.resolve()), (
        f"imported {lines[3]}, not the install in {venv}"
    )
    assert lines[-1] == "round trips ok", r.stdout
    return lines


# --- the sdist ---------------------------------------------------------------


def test_sdist_holds_what_its_tests_need(sdist: pathlib.Path) -> None:
    assert sdist.name == "evloop-0.1.0.tar.gz", sdist
    with tarfile.open(sdist) as t:
        names = {n.split("/", 1)[1] for n in t.getnames() if "/" in n}
    needed = {
        "setup.py", "pyproject.toml", "MANIFEST.in", "README.md", "LICENSE", "Makefile",
        "evloop/py.typed", "evloop/_env.py",
        "csrc/build_common.py", "csrc/build_codec.py", "csrc/build_spawn.py",
        "csrc/evl_codec.c", "csrc/evl_codec.h", "csrc/evl_spawn.c", "csrc/evl_spawn.h",
        "csrc/test_codec.c", "csrc/test_spawn.c", "csrc/Makefile",
        "tests/conftest.py", "tests/test_readme.py", "tests/test_typing.py",
        "tests/test_packaging.py", "tests/workers.py", "docs/spawn.md",
    }  # fmt: skip
    assert not needed - names, f"missing from the sdist: {sorted(needed - names)}"
    every_test = {f"tests/{p.name}" for p in (ROOT / "tests").glob("*.py")}
    assert not every_test - names, sorted(every_test - names)
    junk = [n for n in names if n.endswith((".so", ".pyc", ".o")) or "_buildinfo" in n]
    assert not junk, junk


# --- without a compiler --------------------------------------------------------


def test_pip_install_without_a_compiler_falls_back_to_pure_python(
    make_venv, sdist: pathlib.Path, tmp_path: pathlib.Path
) -> None:
    python = make_venv("nocc", "setuptools>=77", "cffi>=1.16")
    r = pip(
        python, "install", "-v", "--no-build-isolation", "--no-index", "--no-cache-dir",
        str(sdist), env=clean_env(CC="/bin/false"),
    )  # fmt: skip
    assert r.returncode == 0, explain(r)
    out = r.stdout + r.stderr
    # One message, naming both extensions, the fallback and the way out.
    assert out.count(MESSAGE) == 1, explain(r)
    message = out[out.index(MESSAGE) :].split("=" * 78)[0]
    words = " ".join(message.split())  # as printed, wrapped and indented by pip
    for part in (
        "evloop._codec",
        "evloop._spawn",
        "the C compiler (/bin/false) failed",
        "pure-Python implementation",
        "apt-get install gcc python3-dev",
        "evloop.implementation()",
        "EVLOOP_REQUIRE_C=1",
    ):
        assert part in words, f"{part!r} not in the install message:\n{message}"
    assert "py3-none-any.whl" in out, "the wheel pip built should be pure"

    lines = smoke(python, tmp_path)
    assert lines[0] == "python python", lines
    for reason in lines[1:3]:
        assert "not compiled when evloop was built" in reason and "/bin/false" in reason, lines

    r = run([str(python), "-c", "import evloop"], cwd=tmp_path, env=clean_env(EVLOOP_REQUIRE_C="1"))
    assert r.returncode != 0, explain(r)
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("ImportError: EVLOOP_REQUIRE_C=1 but the C"), explain(r)
    assert "not compiled when evloop was built" in last and "/bin/false" in last, last

    # The typed API as an installed package: py.typed in site-packages.
    prog = tmp_path / "user_program.py"
    prog.write_text(SMOKE)
    r = run(
        [sys.executable, "-m", "mypy", "--strict", "--no-incremental",
         "--python-executable", str(python), str(prog)],
        cwd=tmp_path, env=clean_env(),
    )  # fmt: skip
    if "No module named mypy" in r.stderr:
        pytest.skip("mypy is not installed (lint extra); the rest of this test passed")
    assert r.returncode == 0, explain(r)


def test_wheel_without_a_compiler_is_py3_none_any(
    builder: pathlib.Path, sdist: pathlib.Path, tmp_path: pathlib.Path
) -> None:
    r = build_wheel(builder, sdist, tmp_path, CC="/bin/false")
    assert r.returncode == 0, explain(r)
    assert (r.stdout + r.stderr).count(MESSAGE) == 1, explain(r)
    wheel = only_wheel(tmp_path)
    assert wheel.name == "evloop-0.1.0-py3-none-any.whl", wheel.name
    names, fields = wheel_facts(wheel)
    assert fields["Tag"] == ["py3-none-any"] and fields["Root-Is-Purelib"] == ["true"], fields
    assert not [n for n in names if n.endswith(".so")], names
    assert "evloop/_buildinfo.py" in names
    assert_runtime_only(names)


def test_require_c_makes_a_build_without_a_compiler_fail(
    builder: pathlib.Path, sdist: pathlib.Path, tmp_path: pathlib.Path
) -> None:
    r = build_wheel(builder, sdist, tmp_path, CC="/bin/false", EVLOOP_REQUIRE_C="1")
    assert r.returncode != 0, explain(r)
    out = r.stdout + r.stderr
    assert "EVLOOP_REQUIRE_C=1 but evloop._codec could not be built" in out, explain(r)
    assert "the C compiler (/bin/false) failed" in out, explain(r)
    assert not list(tmp_path.glob("*.whl"))


def test_build_environment_without_cffi_builds_the_pure_wheel(
    make_venv, sdist: pathlib.Path, tmp_path: pathlib.Path
) -> None:
    bare = make_venv("nocffi", "setuptools>=77")
    r = build_wheel(bare, sdist, tmp_path)
    assert r.returncode == 0, explain(r)
    out = r.stdout + r.stderr
    assert out.count(MESSAGE) == 1, explain(r)
    assert "cffi is not usable in the build environment" in out, explain(r)
    assert only_wheel(tmp_path).name == "evloop-0.1.0-py3-none-any.whl"


# --- with a compiler --------------------------------------------------------------


def _have_compiler() -> bool:
    cc = os.environ.get("CC") or sysconfig.get_config_var("CC") or "cc"
    return shutil.which(shlex.split(cc)[0]) is not None and os.path.exists(
        os.path.join(sysconfig.get_paths()["include"], "Python.h")
    )


@pytest.mark.skipif(not _have_compiler(), reason="no C compiler or no Python headers here")
def test_wheel_with_a_compiler_is_abi3_and_runs_c(
    builder: pathlib.Path, make_venv, sdist: pathlib.Path, tmp_path: pathlib.Path
) -> None:
    out = tmp_path / "wheel"
    r = build_wheel(builder, sdist, out, EVLOOP_REQUIRE_C="1")
    assert r.returncode == 0, explain(r)
    assert MESSAGE not in r.stdout + r.stderr
    wheel = only_wheel(out)
    tag = f"cp310-abi3-linux_{ARCH}"
    assert wheel.name == f"evloop-0.1.0-{tag}.whl", wheel.name
    names, fields = wheel_facts(wheel)
    assert fields["Tag"] == [tag] and fields["Root-Is-Purelib"] == ["false"], fields
    assert {"evloop/_codec.abi3.so", "evloop/_spawn.abi3.so"} <= set(names), names
    assert_runtime_only(names)

    python = make_venv("withcc", "cffi>=1.16")
    r = pip(python, "install", "-q", "--no-index", "--no-cache-dir", str(wheel))
    assert r.returncode == 0, explain(r)
    lines = smoke(python, tmp_path)
    assert lines[:3] == ["c c", "None", "None"], lines
