"""Build script: compiles csrc/ into pylog._native._pylog through cffi."""
from setuptools import setup

setup(cffi_modules=["pylog/_native/build.py:ffibuilder"])
