"""The cffi extension built from csrc/, and the one place that turns its status codes
into pylog exceptions.

``ffi`` and ``lib`` are the raw binding (declarations from csrc/pylog.h).  Other layers
call :func:`check` on every status a C function returns.
"""
from __future__ import annotations

import os

from pylog.errors import (
    CorruptRecordError,
    InvalidArgument,
    OffsetOutOfRange,
    PylogError,
    RecordTooLarge,
    StorageError,
)

try:
    from pylog._native._pylog import ffi, lib
except ImportError as exc:  # pragma: no cover - only without a build
    raise ImportError(
        "pylog's native extension is not built; install pylog with `pip install .` "
        "(it compiles csrc/ through cffi)"
    ) from exc

__all__ = ["ffi", "lib", "check", "strerror", "STATUS_EXCEPTIONS"]

#: Which exception each C status becomes (statuses not listed: PylogError).
STATUS_EXCEPTIONS: dict[int, type[PylogError]] = {
    lib.PL_E_ARG: InvalidArgument,
    lib.PL_E_TRUNCATED: CorruptRecordError,
    lib.PL_E_BATCH_LENGTH: CorruptRecordError,
    lib.PL_E_MAGIC: CorruptRecordError,
    lib.PL_E_CRC: CorruptRecordError,
    lib.PL_E_RECORD_COUNT: CorruptRecordError,
    lib.PL_E_OFFSET_DELTA: CorruptRecordError,
    lib.PL_E_RECORD: CorruptRecordError,
    lib.PL_E_TIMESTAMP: CorruptRecordError,
    lib.PL_E_TOO_LARGE: RecordTooLarge,
    lib.PL_E_OFFSET_RANGE: OffsetOutOfRange,
    lib.PL_E_INDEX: CorruptRecordError,
    lib.PL_E_TILING: CorruptRecordError,
}


def strerror(status: int) -> str:
    """The C core's description of a status code."""
    return ffi.string(lib.pl_strerror(status)).decode()


def check(status: int, what: str) -> int:
    """Return ``status`` if it is not an error, else raise the matching exception.

    ``what`` says what was being done ("validating batch at position 40", ...) and
    starts the message.
    """
    if status >= 0:
        return status
    if status == lib.PL_E_IO:
        err = ffi.errno
        raise StorageError(err, f"{what}: {os.strerror(err)}")
    cls = STATUS_EXCEPTIONS.get(status, PylogError)
    raise cls(f"{what}: {strerror(status)}")
