# Every ```python block in README.md, taken as a user's program, passes
# mypy --strict against the evloop this test imports (the installed package,
# or the checkout behind an editable install).
#
# mypy cannot see through the import hook of an editable install, so it is
# pointed at the package directory through MYPYPATH (a folder holding only a
# link to it) with evloop's own modules followed silently: their types are
# used and their errors are not reported, as for any installed package. That
# the package also ships py.typed (which mypy needs for a real site-packages
# install) is checked here, and tests/test_packaging.py runs mypy --strict
# against a real non-editable install.
from __future__ import annotations

import os
import pathlib
import re
import subprocess
import sys

import pytest

import evloop

README = pathlib.Path(__file__).resolve().parent.parent / "README.md"
BLOCKS = re.findall(r"^```python\n(.*?)^```", README.read_text(), flags=re.S | re.M)

# Blocks that cannot pass without a change to the runtime, each with the
# reason (none today). Such a block is xfail(strict=True): it fails the suite
# once it starts passing, so the entry cannot go stale.
XFAIL: dict[int, str] = {}

MYPY_CONFIG = """\
[mypy]
strict = True
[mypy-evloop.*]
follow_imports = silent
"""

MYPY_LINE = re.compile(r"^readme_example_(\d+)\.py:(\d+): (error|note): (.*)$")


def _has_mypy() -> bool:
    try:
        import mypy  # noqa: F401
    except ImportError:
        return False
    return True


pytestmark = pytest.mark.skipif(
    not _has_mypy(),
    reason="mypy is not installed (it comes with the lint extra: pip install -e '.[lint]')",
)


@pytest.fixture(scope="module")
def mypy_report(tmp_path_factory: pytest.TempPathFactory) -> dict[int, list[str]]:
    """One mypy run over every block: block index -> what mypy said about it."""
    work = tmp_path_factory.mktemp("typing")
    for i, block in enumerate(BLOCKS):
        (work / f"readme_example_{i}.py").write_text(block)
    (work / "mypy.ini").write_text(MYPY_CONFIG)
    pkg = pathlib.Path(evloop.__file__).resolve().parent
    path = work / "path"
    path.mkdir()
    (path / "evloop").symlink_to(pkg, target_is_directory=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("MYPY")}
    env["MYPYPATH"] = str(path)
    out = subprocess.run(
        [
            sys.executable, "-m", "mypy",
            "--config-file", "mypy.ini",
            "--cache-dir", str(work / "cache"),
            "--no-error-summary", "--show-error-codes", "--no-pretty", "--no-color-output",
            *(f"readme_example_{i}.py" for i in range(len(BLOCKS))),
        ],
        cwd=work, env=env, capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    report: dict[int, list[str]] = {i: [] for i in range(len(BLOCKS))}
    stray = []
    for line in out.stdout.splitlines():
        m = MYPY_LINE.match(line)
        if m:
            report[int(m.group(1))].append(line)
        elif line.strip():
            stray.append(line)
    # Exit 1 is "type errors found"; anything else, or output that is not
    # about a block (a crash, a config error, an error inside evloop), is a
    # broken run, not a verdict on the README.
    assert out.returncode in (0, 1) and not stray, (
        f"mypy did not run cleanly (exit {out.returncode}):\n{out.stdout}\n{out.stderr}"
    )
    assert out.returncode == 0 or any(report.values()), out.stdout
    return report


def test_package_ships_py_typed() -> None:
    pkg = pathlib.Path(evloop.__file__).resolve().parent
    assert (pkg / "py.typed").is_file(), f"no py.typed in {pkg}"


@pytest.mark.timeout(240)
@pytest.mark.parametrize(
    "index",
    [
        pytest.param(i, marks=pytest.mark.xfail(strict=True, reason=XFAIL[i])) if i in XFAIL else i
        for i in range(len(BLOCKS))
    ],
)
def test_readme_example_passes_mypy_strict(index: int, mypy_report: dict[int, list[str]]) -> None:
    said = mypy_report[index]
    assert not any(": error: " in line for line in said), (
        f"README example {index} fails mypy --strict:\n"
        + "\n".join(said)
        + f"\n--- the block ---\n{BLOCKS[index]}"
    )
