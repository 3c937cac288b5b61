"""cffi (API mode) builder for pylog's native core, and the setuptools Extension of its
small CPython companion, pylog._native._records (csrc/pyrecords.c says why it exists).

The C declarations are read from csrc/pylog.h, between its CDEF-BEGIN and CDEF-END
markers; each ``#define NAME value`` there becomes ``#define NAME ...`` so that cffi
takes the value from the compiled header.  Nothing of the C surface is restated here.

Environment:
  PYLOG_SANITIZE=1   build with -fsanitize=address,undefined (see README, "ASan build")
  PYLOG_DEBUG=1      build with -O0 -g and assertions on
  PYLOG_ASSERT=1     the optimised build with assertions on: the test build (.ci/run);
                     the sanitizer and debug builds keep them too, only the release
                     build drops them

Python's own CFLAGS (sysconfig) already carry -DNDEBUG, so a build that keeps assert()
says -UNDEBUG (our flags come after Python's on the compiler's command line).
"""
from __future__ import annotations

import os
import re
import sys
from pathlib import Path
from typing import Any

from cffi import FFI

ROOT = Path(__file__).resolve().parents[2]
CSRC = ROOT / "csrc"
SOURCES = ["crc32c.c", "batch.c", "segment.c", "index.c", "bench.c", "hash.c"]


def read_cdef(header: Path) -> str:
    text = header.read_text()
    try:
        body = text.split("/* CDEF-BEGIN */", 1)[1].split("/* CDEF-END */", 1)[0]
    except IndexError as exc:  # pragma: no cover - header edited wrongly
        raise SystemExit(f"{header}: CDEF-BEGIN/CDEF-END markers missing") from exc
    body = re.sub(r"/\*.*?\*/", "", body, flags=re.S)
    body = re.sub(r"^\s*#define\s+(\w+)\s+.*$", r"#define \1 ...", body, flags=re.M)
    return body


def compile_args() -> list[str]:
    args = ["-std=c11", "-Wall", "-Wextra", "-Wno-unused-parameter"]
    if sys.platform.startswith("linux"):
        args.append("-D_GNU_SOURCE")
    if os.environ.get("PYLOG_SANITIZE"):
        args += ["-O1", "-g", "-fno-omit-frame-pointer", "-UNDEBUG",
                 "-fsanitize=address,undefined", "-fno-sanitize-recover=undefined"]
    elif os.environ.get("PYLOG_DEBUG"):
        args += ["-O0", "-g", "-UNDEBUG"]
    elif os.environ.get("PYLOG_ASSERT"):
        args += ["-O3", "-UNDEBUG"]
    else:
        args += ["-O3", "-DNDEBUG"]
    if os.environ.get("PYLOG_WERROR"):
        args.append("-Werror")
    return args


def link_args() -> list[str]:
    if os.environ.get("PYLOG_SANITIZE"):
        return ["-fsanitize=address,undefined"]
    return []


def _source_paths(names: list[str]) -> list[str]:
    """Sources relative to the project when building from it (as setuptools wants for
    an sdist), absolute otherwise."""
    return [str((CSRC / s).relative_to(ROOT)) if Path.cwd() == ROOT else str(CSRC / s)
            for s in names]


#: pylog._native._records is one translation unit: pyrecords.c includes batch.c's
#: record parsing (and crc32c.c, which batch.c calls) so that both modules check
#: bytes with the same code.
RECORDS_SOURCES = ["pyrecords.c"]
RECORDS_INCLUDED = ["batch.c", "crc32c.c", "hash.c", "pysend.c", "pylog.h", "internal.h"]
#: The limited API (abi3) of the oldest Python pylog supports, 3.11.
LIMITED_API = "0x030B0000"


def records_extension() -> Any:
    """The setuptools Extension of pylog._native._records, with the same flags as the
    cffi module (sanitizers, assertions, -Werror follow the same environment); only
    its module init function is exported."""
    from setuptools import Extension

    return Extension(
        "pylog._native._records",
        sources=_source_paths(RECORDS_SOURCES),
        include_dirs=[str(CSRC)],
        define_macros=[("Py_LIMITED_API", LIMITED_API)],
        py_limited_api=True,
        extra_compile_args=compile_args() + ["-fvisibility=hidden"],
        extra_link_args=link_args(),
        depends=_source_paths(RECORDS_INCLUDED),
    )


ffibuilder = FFI()
ffibuilder.cdef(read_cdef(CSRC / "pylog.h"))
ffibuilder.set_source(
    "pylog._native._pylog",
    '#include "pylog.h"\n',
    sources=_source_paths(SOURCES),
    include_dirs=[str(CSRC)],
    extra_compile_args=compile_args(),
    extra_link_args=link_args(),
)

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
