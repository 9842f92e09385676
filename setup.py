# setup.py exists to declare the cffi extension (API mode, out of line).
# Everything else is in pyproject.toml.
from setuptools import setup

setup(cffi_modules=["csrc/build_codec.py:ffibuilder", "csrc/build_spawn.py:ffibuilder"])
