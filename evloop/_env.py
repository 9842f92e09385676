# evloop/_env.py
#
# The one place that reads evloop's environment variables and knows how a C
# extension came to be missing. codec.py and launch.py each pick between a C
# extension and its pure-Python twin at import; both ask here.
#
#   EVLOOP_PURE_PYTHON=1  use the pure-Python twins even where C is built.
#   EVLOOP_REQUIRE_C=1    a C extension that fails to import is an ImportError
#                         (so CI cannot silently test the fallback); setup.py
#                         also reads it, and then fails a build without C.
#
# A flag is on when set to anything but "" or "0". The flags are read when
# asked, not cached, so a process that changes os.environ before the first
# import of evloop still gets what it asked for.
#
# setup.py reads the same flag through this file, and writes evloop/_buildinfo.py into a wheel it builds: for each C
# extension it tried to compile, None or why the compiler failed. That turns
# "No module named 'evloop._codec'" into the reason the wheel has no codec.
"""The EVLOOP_* environment flags, read in one place. The comment that opens the source file gives the design and its invariants."""

from __future__ import annotations

import importlib
import os

PURE_PYTHON = "EVLOOP_PURE_PYTHON"
REQUIRE_C = "EVLOOP_REQUIRE_C"

# What to do about a missing extension, said the same way everywhere (setup.py
# loads this file by path for its install-time message).
HOW_TO_GET_C = (
    "to get the C implementation, reinstall evloop from source where it can be "
    "compiled: a C compiler and the Python headers (Debian/Ubuntu: apt-get install "
    "gcc python3-dev), and cffi in the build environment; e.g. pip install "
    "--no-cache-dir --force-reinstall evloop-<version>.tar.gz, or pip install . in a checkout"
)


def flag(name: str) -> bool:
    """Whether the environment variable `name` is set to something other than
    "" or "0"."""
    return os.environ.get(name, "") not in ("", "0")


def pure_python() -> bool:
    return flag(PURE_PYTHON)


def require_c() -> bool:
    return flag(REQUIRE_C)


def build_error(module: str) -> str | None:
    """Why setup.py could not compile `module` ("evloop._codec") when this copy
    of evloop was built, or None if it was built, or if no build record exists
    (an editable or source-tree install)."""
    try:
        info = importlib.import_module("._buildinfo", __package__)
    except ImportError:
        return None
    errors = getattr(info, "C_BUILD_ERRORS", {})
    reason = errors.get(module) if isinstance(errors, dict) else None
    return reason if isinstance(reason, str) else None


def unavailable_reason(module: str, exc: ImportError) -> str:
    """One line saying why the extension `module` is not in use."""
    built = build_error(module)
    if built is not None:
        return f"{module} was not compiled when evloop was built ({built})"
    return f"{module} failed to import ({exc})"


def c_import_failed(module: str, what: str, exc: ImportError) -> None:
    """Called by codec.py and launch.py when importing their extension failed:
    raises ImportError, from `exc`, under EVLOOP_REQUIRE_C=1, else returns and
    the caller falls back to the pure-Python twin. `what` names the part, as
    in "the C codec"."""
    if require_c():
        raise ImportError(
            f"EVLOOP_REQUIRE_C=1 but {what} is unavailable: "
            f"{unavailable_reason(module, exc)}; {HOW_TO_GET_C}, or unset EVLOOP_REQUIRE_C "
            "to use the pure-Python implementation"
        ) from exc
