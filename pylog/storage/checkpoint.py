"""Offset checkpoint files in Kafka's text format, written atomically.

Format (as Kafka's ``recovery-point-offset-checkpoint`` and friends)::

    0                 <- version
    2                 <- number of entries
    orders 0 1234     <- topic partition offset
    orders 1 99

A write goes to ``<name>.tmp``, is fsynced, renamed over the file and the directory
is fsynced: a crash leaves either the old or the new checkpoint, never half of one.
A write that fails (a full disk) removes its ``.tmp`` and leaves the old checkpoint.
A file that cannot be parsed reads as empty (the caller then recovers conservatively).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Dict, Tuple

__all__ = ["OffsetCheckpointFile", "fsync_dir", "write_atomically"]

_VERSION = 0


def fsync_dir(path: "os.PathLike[str] | str") -> None:
    """fsync a directory so that file creations/renames/unlinks in it are durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class OffsetCheckpointFile:
    """A file mapping (topic, partition) to an offset."""

    __slots__ = ("path",)

    def __init__(self, path: "os.PathLike[str] | str") -> None:
        self.path = Path(path)

    def read(self) -> Dict[Tuple[str, int], int]:
        try:
            lines = self.path.read_text().splitlines()
        except FileNotFoundError:
            return {}
        except (OSError, UnicodeDecodeError):
            return {}
        try:
            if int(lines[0]) != _VERSION:
                return {}
            count = int(lines[1])
            out: Dict[Tuple[str, int], int] = {}
            for line in lines[2 : 2 + count]:
                topic, partition, offset = line.rsplit(" ", 2)
                out[(topic, int(partition))] = int(offset)
            if len(out) != count:
                return {}
            return out
        except (IndexError, ValueError):
            return {}

    def write(self, entries: Dict[Tuple[str, int], int]) -> None:
        """Replace the file's entries atomically.  Raises OSError (the old file, and no
        ``.tmp``, left in place) if the disk refuses."""
        body = [str(_VERSION), str(len(entries))]
        body += [f"{t} {p} {o}" for (t, p), o in sorted(entries.items())]
        data = ("\n".join(body) + "\n").encode()
        write_atomically(self.path, data)
        fsync_dir(self.path.parent)


def write_atomically(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Write ``data`` beside ``path`` (``<name>.tmp``, created with ``mode``), fsync it
    and rename it over ``path``.  Raises OSError if the disk refuses; the old file then
    stays, and no ``.tmp`` is left.  (The caller fsyncs the directory when the rename
    must last.)"""
    tmp = path.with_name(path.name + ".tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
