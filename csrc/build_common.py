# csrc/build_common.py
#
# What the two cffi build scripts (build_codec.py, build_spawn.py) share: one
# way to turn csrc/<name>.h + csrc/<name>.c into an out-of-line API-mode
# extension, with one set of compiler flags, so the two cannot drift apart.
#
# The header is read as the cdef and #included by the .c, which the
# extension's generated source #includes in turn: one declaration, used by
# both sides. cffi marks the extension py_limited_api, so it builds against
# the stable ABI (an .abi3.so, one wheel for every CPython >= 3.10).
from __future__ import annotations

import os

from cffi import FFI

HERE = os.path.dirname(os.path.abspath(__file__))

# The warnings of csrc/Makefile's sanitizer build, less two: -Werror, since a
# newer compiler on a user's machine must not fail an install over a warning
# it invented (the sanitizer build keeps it, so the code stays clean), and
# -Wpedantic, which cffi's generated wrapper does not pass (it casts its
# export table's object pointers to function pointers). -std is per module:
# the codec is ISO C11, the spawner needs the GNU extensions (vfork, pipe2).
WARNINGS = ["-Wall", "-Wextra", "-Wshadow"]
OPTIMIZE = ["-O2"]


def make_ffibuilder(module: str, name: str, std: str, prelude: str = "") -> FFI:
    """An FFI for extension `module` ("evloop._codec") from csrc/<name>.h and
    csrc/<name>.c, compiled with -std=`std`. `prelude` goes before the
    #include of the .c in the generated source."""
    header = os.path.join(HERE, f"{name}.h")
    source = os.path.join(HERE, f"{name}.c")
    ffibuilder = FFI()
    with open(header, encoding="utf-8") as f:
        ffibuilder.cdef(f.read())
    ffibuilder.set_source(
        module,
        f'{prelude}#include "{name}.c"\n',
        include_dirs=[HERE],
        # The .c is pulled in by #include, so tell setuptools to rebuild when
        # it or the header changes even though the generated wrapper did not
        # (relative, as setuptools wants them; cffi runs this from the root).
        depends=[os.path.relpath(header), os.path.relpath(source)],
        extra_compile_args=[*OPTIMIZE, f"-std={std}", *WARNINGS],
    )
    return ffibuilder
