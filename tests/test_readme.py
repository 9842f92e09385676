# Every ```python block in README.md is a runnable example: run each one.
from __future__ import annotations

import pathlib
import re
import subprocess
import sys

import pytest

README = pathlib.Path(__file__).resolve().parent.parent / "README.md"
BLOCKS = re.findall(r"^```python\n(.*?)^```", README.read_text(), flags=re.S | re.M)


def test_readme_has_examples():
    assert len(BLOCKS) >= 5


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_example_runs(index, tmp_path):
    # Run as a file, as a reader would: workers import their function by
    # the script's module name.
    script = tmp_path / f"readme_example_{index}.py"
    script.write_text(BLOCKS[index])
    out = subprocess.run(
        [sys.executable, str(script)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=50,
    )
    assert out.returncode == 0, f"README example {index} failed:\n{BLOCKS[index]}\n{out.stderr}"
