"""A broker's log directories (``log.dirs``, JBOD) and their failure (Kafka's KIP-112).

A broker may keep its partitions in several directories, typically one per disk.
:class:`LogDirs` decides where a partition lives and which directories are usable:

- **Placement.**  A partition lives in the directory that holds its
  ``<topic>-<partition>`` directory; a new one goes to the online directory with the
  fewest partitions (Kafka's rule), the first listed on a tie.  The same partition in
  two directories is refused (StorageError): which copy is right cannot be known.
- **Locking.**  Each directory is locked (``.lock``, flock) while the broker runs, so
  two brokers never share one.
- **Failure.**  An I/O error (EIO, EROFS and the like, see :func:`is_dir_failure`;
  not ENOSPC, which a full disk answers and which passes when space returns) takes
  the whole directory *offline*: it is logged at ERROR naming the directory, counted
  in ``offline_log_directories``, and the owner takes every partition in it offline
  (their requests answer KAFKA_STORAGE_ERROR; in a cluster their leadership moves to
  other replicas).  A directory stays offline until the broker restarts; one that
  cannot be opened at start is offline from the start, and partitions found in no
  online directory while one is offline are offline too (they may live in it).
- **The first directory** also holds the broker's own files (meta.properties,
  topics.json, ...), as Kafka's metadata log directory does: the broker cannot run
  without it, so a failure there is raised, not survived.

The module does no logging of its own besides the ERROR line of a failure and takes no
locks beyond its own; the owner (a Broker, a cluster node) serialises placement.
"""
from __future__ import annotations

import errno
import fcntl
import logging
import os
import re
import threading
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

from pylog.errors import InvalidConfig, StorageError

__all__ = ["LogDirs", "is_dir_failure", "parse_log_dirs", "DIR_FAILURE_ERRNOS", "LOCK_FILE"]

log = logging.getLogger("pylog.storage")

#: The lock file each log directory holds while a broker uses it.
LOCK_FILE = ".lock"

#: errno values that mean the directory's disk or file system failed (not "full").
DIR_FAILURE_ERRNOS = frozenset(e for e in (errno.EIO, errno.EROFS, errno.ENXIO, errno.ENODEV,
                                           getattr(errno, "EUCLEAN", None), getattr(errno, "EREMOTEIO", None),
                                           errno.ESTALE) if e is not None)

_PARTITION_DIR_RE = re.compile(r"^[a-zA-Z0-9._-]+-\d+$")


def is_dir_failure(exc: BaseException) -> bool:
    """Whether ``exc`` (an OSError or StorageError, or one it was raised from) is an I/O
    failure of the disk: EIO, EROFS, ENXIO, ENODEV, EUCLEAN, EREMOTEIO or ESTALE."""
    seen = 0
    e: Optional[BaseException] = exc
    while e is not None and seen < 8:
        if isinstance(e, OSError) and e.errno in DIR_FAILURE_ERRNOS:
            return True
        e = e.__cause__ or e.__context__
        seen += 1
    return False


def parse_log_dirs(value: Union[str, os.PathLike, Sequence[Union[str, os.PathLike]]]) -> List[Path]:
    """``log.dirs`` as paths: a comma-separated string, one path, or a sequence.
    InvalidConfig for an empty list or a directory named twice."""
    if isinstance(value, (str, os.PathLike)):
        text = os.fspath(value)
        parts = [p.strip() for p in text.split(",")] if isinstance(text, str) else [text]
    else:
        parts = [os.fspath(p) for p in value]
    dirs = [Path(p) for p in parts if p]
    if not dirs:
        raise InvalidConfig(f"log.dirs names no directory: {value!r}")
    seen: Dict[str, Path] = {}
    for d in dirs:
        key = os.path.abspath(d)
        if key in seen:
            raise InvalidConfig(f"log.dirs names {d} twice")
        seen[key] = d
    return dirs


class LogDirs:
    """The log directories of one broker (see the module docstring)."""

    def __init__(self, dirs: Sequence[Path], *, broker_id: int = 0) -> None:
        if not dirs:
            raise InvalidConfig("log.dirs names no directory")
        self.dirs: Tuple[Path, ...] = tuple(Path(d) for d in dirs)
        self.broker_id = broker_id
        #: directory -> why it is offline (the error's text)
        self.offline: Dict[Path, str] = {}
        #: partition directory name -> the log directory holding it
        self._where: Dict[str, Path] = {}
        #: log directory -> how many partitions _where places there
        self._counts: Dict[Path, int] = {d: 0 for d in self.dirs}
        self._locks: Dict[Path, int] = {}
        self._mutex = threading.Lock()

    @property
    def metadata_dir(self) -> Path:
        """The first directory: the broker's own files live there."""
        return self.dirs[0]

    @property
    def online(self) -> List[Path]:
        return [d for d in self.dirs if d not in self.offline]

    @property
    def offline_count(self) -> int:
        return len(self.offline)

    # ------------------------------------------------------------------ open/close
    def open(self) -> None:
        """Create and lock every directory.  A directory other than the first that
        fails with an I/O error is offline from the start (logged at ERROR); any other
        error, or any error on the first directory, is raised as StorageError (after
        releasing the locks taken)."""
        try:
            for d in self.dirs:
                try:
                    d.mkdir(parents=True, exist_ok=True)
                    fd = os.open(d / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
                except OSError as exc:
                    if d != self.metadata_dir and is_dir_failure(exc):
                        self.mark_offline(d, exc)
                        continue
                    raise StorageError(exc.errno or 0, f"cannot open log directory {d}: {exc.strerror}") from exc
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except OSError:
                    os.close(fd)
                    raise StorageError(f"log directory {d} is in use by another broker") from None
                self._locks[d] = fd
        except BaseException:
            self.release()
            raise

    def release(self) -> None:
        """Drop every directory lock (idempotent)."""
        for fd in self._locks.values():
            try:
                os.close(fd)
            except OSError:
                pass
        self._locks.clear()

    # ------------------------------------------------------------------ placement
    def scan(self) -> Dict[str, Path]:
        """Find the partition directories (``<topic>-<n>``, not being deleted) of every
        online directory: name -> log directory.  A directory whose listing fails with
        an I/O error goes offline.  StorageError if one name is in two directories."""
        found: Dict[str, Path] = {}
        for d in self.online:
            try:
                names = [e.name for e in os.scandir(d) if e.is_dir() and _PARTITION_DIR_RE.match(e.name)]
            except OSError as exc:
                if d != self.metadata_dir and is_dir_failure(exc):
                    self.mark_offline(d, exc)
                    continue
                raise StorageError(exc.errno or 0, f"cannot list log directory {d}: {exc.strerror}") from exc
            for name in names:
                if name in found:
                    raise StorageError(f"partition directory {name} is in both {found[name]} and {d}: "
                                       f"remove the stale copy before starting the broker")
                found[name] = d
        with self._mutex:
            self._where = dict(found)
            self._counts = {d: 0 for d in self.dirs}
            for d in found.values():
                self._counts[d] += 1
        return found

    def locate(self, name: str) -> Optional[Path]:
        """The log directory that holds partition directory ``name`` (None: none known)."""
        with self._mutex:
            return self._where.get(name)

    def path_for(self, name: str) -> Path:
        """Where partition directory ``name`` is or goes: its log directory if it has
        one (offline or not: the caller checks :meth:`is_offline`), otherwise the online
        directory with the fewest partitions, which is then noted as its place.
        StorageError (KAFKA_STORAGE_ERROR) when no directory is online."""
        with self._mutex:
            where = self._where.get(name)
            if where is None:
                online = [d for d in self.dirs if d not in self.offline]
                if not online:
                    raise StorageError(errno.EIO, f"no log directory is online ({', '.join(map(str, self.dirs))} "
                                                  f"failed); partition {name} cannot be placed")
                where = min(online, key=lambda d: (self._counts[d], self.dirs.index(d)))
                self._where[name] = where
                self._counts[where] += 1
            return where / name

    def forget(self, name: str) -> None:
        """Partition directory ``name`` was deleted."""
        with self._mutex:
            where = self._where.pop(name, None)
            if where is not None:
                self._counts[where] -= 1

    def counts(self) -> Dict[Path, int]:
        """Partitions per log directory (as placed)."""
        with self._mutex:
            return dict(self._counts)

    # ------------------------------------------------------------------ failure
    def dir_of(self, path: Union[str, os.PathLike]) -> Optional[Path]:
        """The log directory that ``path`` (a partition directory or a file in one) lies in."""
        p = Path(path)
        for d in self.dirs:
            if p == d or d in p.parents:
                return d
        return None

    def is_offline(self, directory: Optional[Path]) -> bool:
        return directory is not None and directory in self.offline

    def mark_offline(self, directory: Path, exc: BaseException) -> bool:
        """Take ``directory`` offline because of ``exc``; True if it was online until now.
        Logs at ERROR once.  The owner takes its partitions offline."""
        with self._mutex:
            if directory in self.offline:
                return False
            self.offline[directory] = str(exc)
            parts = sorted(n for n, d in self._where.items() if d == directory)
        fd = self._locks.pop(directory, None)
        if fd is not None:
            try:
                os.close(fd)
            except OSError:
                pass
        log.error("broker %d: log directory %s is OFFLINE after an I/O error (%s); its %d partition(s)%s are "
                  "offline on this broker until it restarts with the directory repaired or replaced (see "
                  "README: When the disk fails)", self.broker_id, directory, exc, len(parts),
                  f" ({', '.join(parts[:10])}{', ...' if len(parts) > 10 else ''})" if parts else "")
        return True

    def describe(self) -> List[Dict[str, object]]:
        """Per directory: path, online, error (the reason it is offline, or None), partitions."""
        counts = self.counts()
        return [{"path": str(d), "online": d not in self.offline, "error": self.offline.get(d),
                 "partitions": counts.get(d, 0)} for d in self.dirs]
