# csrc/build_spawn.py
#
# cffi build script (API mode, out of line) for evloop._spawn, the fork+exec
# helper behind evloop.spawn. setup.py names it in cffi_modules, and cffi runs
# it with the repository root as the working directory, so every path here is
# resolved from this file's own location. evl_spawn.h is read as the cdef and
# #included by evl_spawn.c, which the extension's source #includes in turn.
from __future__ import annotations

import os

from cffi import FFI

HERE = os.path.dirname(os.path.abspath(__file__))
HEADER = os.path.join(HERE, "evl_spawn.h")
SOURCE = os.path.join(HERE, "evl_spawn.c")

ffibuilder = FFI()

with open(HEADER, encoding="utf-8") as f:
    ffibuilder.cdef(f.read())

ffibuilder.set_source(
    "evloop._spawn",
    '#include "evl_spawn.c"\n',
    include_dirs=[HERE],
    # The .c is pulled in by #include, so tell setuptools to rebuild when it
    # or the header changes even though the generated wrapper did not.
    depends=[HEADER, SOURCE],
    extra_compile_args=["-O2", "-std=gnu11", "-Wall", "-Wextra"],
)

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
