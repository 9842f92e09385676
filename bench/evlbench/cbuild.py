# bench/evlbench/cbuild.py
#
# The benchmark's C programs (bench/ceiling.c, bench/cpeer.c), compiled with
# the system's `cc -O2` (or $CC) into build/bench/ of the source tree when the
# binary is missing or older than its source. A compile goes to a temporary
# name and is renamed into place, so concurrent runs never see a half-written
# binary. Without a compiler the programs' rows are Unsupported, not broken.
from __future__ import annotations

import os
import shlex
import shutil
import subprocess
from pathlib import Path

from .common import BENCH_ROOT, REPO_ROOT, Unsupported


def compiler() -> list[str] | None:
    cc = shlex.split(os.environ.get("CC", "cc"))
    if cc and shutil.which(cc[0]):
        return cc
    return None


class CProgram:
    """One C source in bench/ and the binary built from it."""

    def __init__(self, name: str, source: str) -> None:
        self.source = BENCH_ROOT / source
        self.binary = REPO_ROOT / "build" / "bench" / name

    def fresh(self) -> bool:
        try:
            return self.binary.stat().st_mtime >= self.source.stat().st_mtime
        except FileNotFoundError:
            return False

    def unavailable(self) -> str | None:
        if not self.source.exists():
            return f"{self.source} not found (not a source checkout)"
        if not self.fresh() and compiler() is None:
            return "no C compiler (cc) found — skipped"
        return None

    def path(self) -> Path:
        """The compiled program, built first if missing or stale."""
        reason = self.unavailable()
        if reason:
            raise Unsupported(reason)
        if self.fresh():
            return self.binary
        cc = compiler()
        assert cc is not None
        self.binary.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.binary.with_name(f"{self.binary.name}.{os.getpid()}.tmp")
        argv = [*cc, "-O2", "-Wall", "-o", str(tmp), str(self.source)]
        try:
            done = subprocess.run(argv, capture_output=True, text=True, timeout=120)
            if done.returncode != 0:
                raise RuntimeError(f"{shlex.join(argv)} failed:\n{done.stderr}")
            os.replace(tmp, self.binary)
        finally:
            tmp.unlink(missing_ok=True)
        return self.binary
