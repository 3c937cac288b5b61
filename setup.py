"""Build script: compiles csrc/ into pylog._native._pylog through cffi, and
csrc/pyrecords.c (with batch.c's parsing) into the CPython extension
pylog._native._records beside it."""
import importlib.util
from pathlib import Path

from setuptools import setup


def _native_build():
    """pylog/_native/build.py, loaded by path: importing the pylog package would need
    the very modules being built."""
    path = Path(__file__).resolve().parent / "pylog" / "_native" / "build.py"
    spec = importlib.util.spec_from_file_location("_pylog_native_build", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


setup(
    cffi_modules=["pylog/_native/build.py:ffibuilder"],
    ext_modules=[_native_build().records_extension()],
    # Both compiled modules use only the limited API of Python 3.11 (cffi builds its
    # module that way on CPython; _records defines Py_LIMITED_API): one cp311-abi3
    # wheel installs on every CPython from 3.11 on.
    options={"bdist_wheel": {"py_limited_api": "cp311"}},
)
