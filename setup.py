# setup.py: the C extensions, built if they can be. Everything else about the
# package is in pyproject.toml.
#
# evloop._codec and evloop._spawn are cffi extensions (API mode, out of line)
# listed in cffi_modules. Each has a pure-Python twin, so a machine that
# cannot compile them (no C compiler, no Python headers, no usable cffi in the
# build environment) still gets a working install: an extension that fails to
# build is left out, and the build prints one message saying what failed,
# that the pure-Python implementation will be used, and how to get the fast
# one. EVLOOP_REQUIRE_C=1 turns that fallback into a failed build, so CI
# cannot ship it by accident.
#
# The wheel says what it holds: with an extension in it, it is tagged for the
# stable ABI (cp310-abi3-<platform>: cffi builds against the limited API);
# with none, it is py3-none-any. bdist_wheel decides purity before building,
# so the build runs first and the tag is settled on what came out of it.
#
# A wheel also gets evloop/_buildinfo.py, recording why each missing
# extension was not built; evloop.implementation() reports it at run time.
from __future__ import annotations

import importlib.util
import os
import re
import sys
import textwrap
import types

from setuptools import Extension, setup
from setuptools.command.bdist_wheel import bdist_wheel
from setuptools.command.build_ext import build_ext
from setuptools.command.build_py import build_py
from setuptools.errors import CCompilerError, CompileError, ExecError, PlatformError

CFFI_MODULES = ["csrc/build_codec.py:ffibuilder", "csrc/build_spawn.py:ffibuilder"]
# Each extension, and what its pure-Python twin costs.
EXTENSIONS = {
    "evloop._codec": "the frame codec; its twin is slower",
    "evloop._spawn": "spawn()'s launcher; its twin uses subprocess.Popen, not safe in threaded parents",
}


def _load_env() -> types.ModuleType:
    """evloop/_env.py (stdlib only), loaded by path: evloop itself cannot be
    imported before its extensions are built."""
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "evloop", "_env.py")
    spec = importlib.util.spec_from_file_location("_evloop_env_for_setup", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_env = _load_env()
REQUIRE_C = _env.require_c()
# What a failed compile or link raises; anything else is a bug here, not a
# missing compiler, and fails the build.
BUILD_ERRORS = (CCompilerError, CompileError, ExecError, PlatformError, OSError)


def _cffi_problem() -> str | None:
    """Why cffi cannot build extensions here, or None if it can."""
    try:
        from cffi import FFI

        FFI().cdef("int evl__probe(int);")  # needs pycparser as well
    except Exception as exc:  # noqa: BLE001 - any failure means no C build
        return f"cffi is not usable in the build environment ({type(exc).__name__}: {exc})"
    return None


CFFI_PROBLEM = _cffi_problem()


def _failures(dist: object) -> dict[str, str]:
    """module -> why it was not built, kept on the Distribution so that every
    command of one build sees the same record."""
    failures: dict[str, str] | None = getattr(dist, "_evloop_c_failures", None)
    if failures is None:
        failures = dict.fromkeys(EXTENSIONS, CFFI_PROBLEM) if CFFI_PROBLEM else {}
        dist._evloop_c_failures = failures
    return failures


def _report(dist: object) -> None:
    """Print the one message about what is missing, once per build."""
    failures = _failures(dist)
    if not failures or getattr(dist, "_evloop_c_reported", False):
        return
    dist._evloop_c_reported = True
    missing = "\n".join(f"  {m} ({EXTENSIONS[m]}):\n    {failures[m]}" for m in sorted(failures))
    rule = "=" * 78
    how = _env.HOW_TO_GET_C[0].upper() + _env.HOW_TO_GET_C[1:] + "."
    how = textwrap.fill(how, 78, break_on_hyphens=False)
    sys.stderr.write(
        f"\n{rule}\n"
        "evloop: a C extension could not be built, so this install uses the\n"
        "pure-Python implementation in its place, which behaves the same:\n"
        f"{missing}\n"
        f"{how}\n"
        "At run time, evloop.implementation() says which implementation is in use.\n"
        "Set EVLOOP_REQUIRE_C=1 to make a build without C fail instead.\n"
        f"{rule}\n\n"
    )
    sys.stderr.flush()


def _describe(exc: BaseException) -> str:
    """A compiler failure in a line: distutils quotes the whole command line."""
    text = str(exc) or type(exc).__name__
    cmd = re.match(r"[Cc]ommand '\[?'?([^',\]]+)", text)
    status = re.search(r"exit (?:status|code) (-?\d+)", text)
    if cmd and status:
        return f"the C compiler ({cmd.group(1)}) failed with exit status {status.group(1)}"
    return text


def _write_buildinfo(build_lib: str, failures: dict[str, str]) -> None:
    path = os.path.join(build_lib, "evloop", "_buildinfo.py")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        f.write(
            "# Written by evloop's setup.py when this copy was built; read by\n"
            "# evloop._env. For each C extension that could not be compiled, why.\n"
            f"C_BUILD_ERRORS: dict[str, str] = {dict(sorted(failures.items()))!r}\n"
        )


class evloop_build_py(build_py):
    def run(self) -> None:
        if CFFI_PROBLEM is not None and REQUIRE_C:
            raise PlatformError(
                f"EVLOOP_REQUIRE_C=1 but no C extension can be built: {CFFI_PROBLEM}"
            )
        super().run()
        if not self.editable_mode:
            # The record for a build that compiles nothing (no usable cffi);
            # build_ext, which runs after this, rewrites it when it runs.
            _write_buildinfo(self.build_lib, _failures(self.distribution))
            _report(self.distribution)


class optional_build_ext(build_ext):
    """build_ext where an extension that fails to compile is left out (and
    recorded) instead of failing the build, unless EVLOOP_REQUIRE_C=1."""

    def run(self) -> None:
        failures = _failures(self.distribution)
        # A later run in the same build (install_lib runs build_ext again)
        # must not try, and report, the same failure twice.
        self.extensions = [e for e in self.extensions if e.name not in failures]
        super().run()
        if not self.inplace:
            _write_buildinfo(self.build_lib, failures)
        _report(self.distribution)

    def build_extensions(self) -> None:
        super().build_extensions()
        # What failed is no output: an in-place (editable) build must not copy
        # it into the tree, nor bdist_wheel count it.
        failures = _failures(self.distribution)
        self.extensions = [e for e in self.extensions if e.name not in failures]
        self.distribution.ext_modules = list(self.extensions)

    def build_extension(self, ext: Extension) -> None:
        try:
            super().build_extension(ext)
        except BUILD_ERRORS as exc:
            if REQUIRE_C:
                raise CompileError(
                    f"EVLOOP_REQUIRE_C=1 but {ext.name} could not be built: {_describe(exc)}"
                ) from exc
            _failures(self.distribution)[ext.name] = _describe(exc)


class evloop_bdist_wheel(bdist_wheel):
    """bdist_wheel tagged by what the build produced: an extension-less
    wheel is py3-none-any, not a platform wheel holding only Python."""

    def run(self) -> None:
        if not self.skip_build:
            # As bdist_wheel.run() does, then once more it finds build done.
            self.reinitialize_command("build_ext").inplace = False
            self.run_command("build")
        if not self.distribution.has_ext_modules():
            self.root_is_pure = True
            self.py_limited_api = False
        super().run()


# Without a usable cffi the cffi_modules keyword is not even known to setuptools.
extra = {"cffi_modules": CFFI_MODULES} if CFFI_PROBLEM is None else {}

setup(
    **extra,
    cmdclass={
        "build_py": evloop_build_py,
        "build_ext": optional_build_ext,
        "bdist_wheel": evloop_bdist_wheel,
    },
    # cffi compiles against the limited API (Py_LIMITED_API, the 3.2 stable
    # ABI), so one wheel serves every CPython from requires-python's 3.10 on.
    options={"bdist_wheel": {"py_limited_api": "cp310"}},
)
