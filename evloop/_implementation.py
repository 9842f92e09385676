# evloop/_implementation.py
#
# evloop.implementation(): which of the two implementations each part with a
# C extension is using, and why not C when it is not. The choice itself is
# made at import by codec.py (the frame codec) and launch.py (the process
# launcher behind spawn); this only reports it, reading their public names
# at call time so it never disagrees with them.
"""evloop.implementation(): which implementation (C or pure Python) each part uses, and why. The comment that opens the source file gives the design and its invariants."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from . import _env


@dataclass(frozen=True)
class ComponentImplementation:
    """The implementation one part of evloop uses.

    `component` is "codec" or "spawn"; `module` the C extension's module
    ("evloop._codec", "evloop._spawn"); `implementation` "c" or "python";
    `c_available` whether the extension imported (it can be built and still
    unused, under EVLOOP_PURE_PYTHON=1); `reason` says why the pure-Python
    twin is in use, and is None when the C one is.
    """

    component: str
    module: str
    implementation: Literal["c", "python"]
    c_available: bool
    reason: str | None

    def __str__(self) -> str:
        if self.reason is None:
            return f"{self.component}: {self.implementation} ({self.module})"
        return f"{self.component}: {self.implementation} ({self.reason})"


@dataclass(frozen=True)
class Implementation:
    """What evloop.implementation() returns: one ComponentImplementation per
    part that has a C extension. str() gives one line per part."""

    codec: ComponentImplementation
    spawn: ComponentImplementation

    @property
    def all_c(self) -> bool:
        """True when every part runs its C implementation."""
        return self.codec.implementation == "c" and self.spawn.implementation == "c"

    def __str__(self) -> str:
        return f"{self.codec}\n{self.spawn}"


def _component(
    component: str, module: str, selected: str, c_available: bool, error: ImportError | None
) -> ComponentImplementation:
    reason: str | None = None
    if selected != "c":
        if not c_available:
            assert error is not None
            reason = f"{_env.unavailable_reason(module, error)}; {_env.HOW_TO_GET_C}"
        elif _env.pure_python():
            reason = f"{_env.PURE_PYTHON}=1 is set"
        else:
            reason = "the pure-Python implementation was selected explicitly"
    return ComponentImplementation(
        component=component,
        module=module,
        implementation="c" if selected == "c" else "python",
        c_available=c_available,
        reason=reason,
    )


def implementation() -> Implementation:
    """Which implementation evloop's codec and process launcher use.

    >>> import evloop
    >>> print(evloop.implementation())      # doctest: +SKIP
    codec: c (evloop._codec)
    spawn: c (evloop._spawn)

    Each part is a ComponentImplementation; a part on its pure-Python twin
    says why in `reason` (the extension was not compiled at install, failed
    to import, or EVLOOP_PURE_PYTHON=1 is set).
    """
    from . import codec, launch

    return Implementation(
        codec=_component(
            "codec",
            "evloop._codec",
            codec.IMPLEMENTATION,
            codec.c_impl is not None,
            codec.c_import_error,
        ),
        spawn=_component(
            "spawn",
            "evloop._spawn",
            launch.IMPLEMENTATION,
            launch.c_import_error is None,
            launch.c_import_error,
        ),
    )
