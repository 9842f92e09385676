# csrc/build_codec.py
#
# cffi build script (API mode, out of line) for evloop._codec, the frame
# scanner behind evloop.codec. setup.py names it in cffi_modules, and cffi
# runs it with the repository root as the working directory, so paths are
# resolved from this file's own location. The flags and the header-as-cdef
# arrangement are build_common.py's, shared with build_spawn.py.
from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from build_common import make_ffibuilder  # noqa: E402

ffibuilder = make_ffibuilder(
    "evloop._codec",
    "evl_codec",
    std="c11",
    prelude="#include <stddef.h>\n#include <stdint.h>\n",
)

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
