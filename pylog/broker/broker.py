"""The embedded broker: topics, partitions, produce/fetch, groups, housekeeping.

Data directory layout (Kafka's names where Kafka has one)::

    data/
      meta.properties          broker.id, cluster.id, version
      topics.json              topic -> id, partition count, config overrides (atomic rewrite)
      producer-id-block        next unallocated producer id block
      orders-0/ orders-1/ ...  one Log directory per partition (pylog.storage)
      __consumer_offsets-N/    committed offsets (compacted; created on first group use)

A topic exists exactly when it is in ``topics.json``: creating makes the partition
directories first and then rewrites ``topics.json``; deleting rewrites ``topics.json``
first and then removes the directories.  On open, partition directories that no topic
owns (a create or delete cut short by a crash) are removed, so a crash never leaves a
half-made topic.

Growing a topic (:meth:`Broker.create_partitions`) is made crash-safe the same way:
the new partition directories first, then ``topics.json`` with the new count; a crash
in between leaves the old count (the new directories are strays, removed at open).
A configuration change (:meth:`Broker.alter_topic_config`) rewrites ``topics.json``
and then applies the new settings to the open partitions.

:class:`Broker` implements :class:`~pylog.broker.interface.BrokerInterface`, whose
methods mirror Kafka's requests: the in-process Producer and Consumer call them, and the
network server maps the wire protocol onto them.  All methods are thread-safe.
"""
from __future__ import annotations

import fcntl
import json
import logging
import os
import re
import shutil
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

from pylog.broker.config import BrokerConfig, TopicConfig
from pylog.broker.interface import (DataListener, FetchResult, NodeInfo, PartitionInfo, ProduceCallback,
                                    TopicDescription)
from pylog.broker.maintenance import LogMaintenance
from pylog.broker.metrics import TrafficMetrics, group_metrics, partition_metrics
from pylog.broker.offsets_topic import offsets_topic_spec
from pylog.broker.partition import AppendResult, OfflinePartition, Partition
from pylog.errors import (
    BrokerClosed,
    InvalidConfig,
    InvalidPartitions,
    InvalidReplicaAssignment,
    InvalidReplicationFactor,
    InvalidRequiredAcks,
    InvalidTopic,
    PylogError,
    StorageError,
    TopicAlreadyExists,
    UnknownTopicOrPartition,
)
from pylog.storage.checkpoint import fsync_dir
from pylog.storage.log import CLEAN_SHUTDOWN_FILE, EARLIEST_TIMESTAMP, LATEST_TIMESTAMP
from pylog.storage.logdirs import LogDirs, is_dir_failure, parse_log_dirs
from pylog.util import check_int, now_ms

__all__ = ["Broker", "TopicDescription", "PartitionInfo", "FetchResult", "OFFSETS_TOPIC", "ZERO_TOPIC_ID",
           "INTERNAL_TOPICS", "validate_topic_name", "check_topic_is_new", "parse_acks", "call_data_listeners", "DataListeners"]

log = logging.getLogger("pylog.broker")

#: Kafka's internal topic of committed consumer-group offsets.
OFFSETS_TOPIC = "__consumer_offsets"
#: Topics pylog (as Kafka) makes and guards itself: not created, grown or deleted by hand.
INTERNAL_TOPICS = frozenset({OFFSETS_TOPIC, "__transaction_state"})
_INTERNAL_TOPICS = INTERNAL_TOPICS
_TOPIC_RE = re.compile(r"^[a-zA-Z0-9._-]+$")
_MAX_TOPIC_NAME = 249
_PARTITION_DIR_RE = re.compile(r"^(?P<topic>[a-zA-Z0-9._-]+)-(?P<p>\d+)$")
_PRODUCER_ID_BLOCK = 1000
#: Threads that open, create or close partitions together (as Kafka's
#: num.recovery.threads.per.data.dir): each partition is a few file creations or
#: fsyncs, whose waits overlap.
_PARTITION_IO_THREADS = 8
#: Kafka's zero UUID: the topic id reported for a topic that was only validated.
ZERO_TOPIC_ID = "0" * 32


def validate_topic_name(name: Any) -> str:
    """Kafka's rules: 1-249 of [a-zA-Z0-9._-], not "." or ".."; raises InvalidTopic."""
    if not isinstance(name, str):
        raise InvalidTopic(f"topic name must be a string, got {type(name).__name__}")
    if not name:
        raise InvalidTopic("topic name is empty")
    if name in (".", ".."):
        raise InvalidTopic(f"topic name cannot be {name!r}")
    if len(name) > _MAX_TOPIC_NAME:
        raise InvalidTopic(f"topic name is {len(name)} characters; the limit is {_MAX_TOPIC_NAME}")
    if not _TOPIC_RE.match(name):
        bad = sorted({c for c in name if not re.match(r"[a-zA-Z0-9._-]", c)})
        raise InvalidTopic(f"topic name {name!r} has characters Kafka does not allow: {bad}; "
                           "use ASCII letters, digits, '.', '_' and '-'")
    return name


def check_topic_is_new(name: str, existing: Iterable[str]) -> None:
    """Raise TopicAlreadyExists if ``name`` is among ``existing`` or collides with one of
    them after swapping '.' and '_' (Kafka's rule: the two are one in metric names)."""
    collide = name.replace(".", "_")
    for other in existing:
        if other == name:
            raise TopicAlreadyExists(f"topic {name!r} already exists")
        if other.replace(".", "_") == collide:
            raise TopicAlreadyExists(f"topic {name!r} collides with existing topic {other!r}: Kafka treats "
                                     "'.' and '_' as the same in metric names")


def parse_acks(acks: Any) -> int:
    """"all"/-1 -> -1, 0, 1; anything else raises InvalidRequiredAcks."""
    if acks == "all" or (isinstance(acks, str) and acks.strip() == "-1"):
        return -1
    if isinstance(acks, str) and acks.strip() in ("0", "1"):
        return int(acks)
    if isinstance(acks, int) and not isinstance(acks, bool) and acks in (-1, 0, 1):
        return acks
    raise InvalidRequiredAcks(f"acks must be 0, 1, -1 or 'all', got {acks!r}")


def call_data_listeners(listeners: Iterable[DataListener], topic: str, partition: int) -> None:
    """Call each data listener with (topic, partition); one that raises is logged and the
    others still run (a listener must never break the produce that moved the data)."""
    for fn in listeners:
        try:
            fn(topic, partition)
        except Exception:
            log.exception("data listener %r failed for %s-%d", fn, topic, partition)


class DataListeners:
    """The data listeners of one broker implementation (BrokerInterface.add_data_listener):
    a copy-on-write tuple, so calling them takes no lock."""

    __slots__ = ("_lock", "listeners")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.listeners: Tuple[DataListener, ...] = ()

    def add(self, listener: DataListener) -> None:
        if not callable(listener):
            raise TypeError(f"listener must be callable(topic, partition), got {listener!r}")
        with self._lock:
            self.listeners = self.listeners + (listener,)

    def remove(self, listener: DataListener) -> None:
        """Nothing happens if ``listener`` was not added."""
        with self._lock:
            ls = list(self.listeners)
            if listener in ls:
                ls.remove(listener)
            self.listeners = tuple(ls)

    def __bool__(self) -> bool:
        return bool(self.listeners)

    def call(self, topic: str, partition: int) -> None:
        call_data_listeners(self.listeners, topic, partition)


class _Topic:
    __slots__ = ("name", "topic_id", "config", "partitions")

    def __init__(self, name: str, topic_id: str, config: TopicConfig, partitions: List[Partition]):
        self.name = name
        self.topic_id = topic_id
        self.config = config
        self.partitions = partitions


class Broker:
    """An embedded single-node broker over a data directory.

    Open with :meth:`open`; use as a context manager or call :meth:`close`.  It is the
    only node of its cluster: its own controller, the leader and only replica of every
    partition (so the high watermark is the log end offset), with no leader epochs.
    Implements :class:`~pylog.broker.interface.BrokerInterface`.
    """

    #: Produce requests are answered at once (the append is the acknowledgement): the
    #: Producer sends batch after batch rather than pipelining them.
    pipelined_produce = False

    def __init__(self, data_dir: Path, config: BrokerConfig, clock: Optional[Callable[[], int]],
                 background: bool, log_dirs: Optional[Sequence[Path]] = None) -> None:
        self.data_dir = data_dir
        #: The log directories (log.dirs): the first is data_dir, which also holds the
        #: broker's own files; partitions spread over all of them (see LogDirs).
        self.log_dirs = LogDirs(list(log_dirs or [data_dir]), broker_id=config.broker_id)
        #: set (under no lock) when a log directory fails; the partitions in it are
        #: swapped for OfflinePartitions by the next housekeeping run (or close)
        self._offline_pending = False
        #: log directory -> whether its clean-shutdown marker was there at open (one per
        #: directory, as Kafka's .kafka_cleanshutdown; see _load and close)
        self._dir_clean: Dict[Path, bool] = {}
        self.config = config
        self._clock = clock or now_ms
        self._lock = threading.RLock()
        self._data_cond = threading.Condition(threading.Lock())
        self._data_version = 0
        self._topics: Dict[str, _Topic] = {}
        self._closed = False
        self._lock_fd: Optional[int] = None
        self._groups: Any = None
        self._next_pid = 0
        self._pid_block_end = 0
        self._stop = threading.Event()
        self._threads: List[threading.Thread] = []
        self._maintenance = LogMaintenance(config, self._clock)
        self._maintenance.on_storage_error = self._on_storage_error
        #: Kafka's cluster.id, made at the first open and kept in meta.properties.
        self.cluster_id = ""
        self._data_listeners = DataListeners()
        self.traffic = TrafficMetrics(window_ms=config.partition_skew_window_ms,
                                      ratio=config.partition_skew_ratio,
                                      min_records=config.partition_skew_min_records)
        self._background = background

    # ================================================================ open/close
    @classmethod
    def open(cls, data_dir: Union[str, os.PathLike, Sequence[Union[str, os.PathLike]]],
             config: Optional[Mapping[str, Any]] = None, *,
             clock: Optional[Callable[[], int]] = None, background_threads: bool = True,
             **kwargs: Any) -> "Broker":
        """Open (creating if needed) the broker whose data lives in ``data_dir``.

        ``data_dir`` may list several directories (Kafka's ``log.dirs``, JBOD: a
        comma-separated string or a sequence): the partitions spread over them, the
        first also holds the broker's own files, and a directory whose disk fails
        (EIO, EROFS) goes offline with its partitions while the broker goes on with
        the others (see :mod:`pylog.storage.logdirs`).

        ``config`` takes Kafka's broker names (``{"num.partitions": 3,
        "log.retention.ms": 3600000}``); keywords take the same in snake_case.  ``clock``
        (ms) is for tests.  ``background_threads=False`` leaves retention, cleaning and
        group session expiry to explicit :meth:`run_housekeeping` calls.

        Raises InvalidConfig, StorageError (unreadable directory, or another broker has
        it open).
        """
        cfg = BrokerConfig.from_settings(config, **kwargs)
        dirs = parse_log_dirs(data_dir)
        path = dirs[0]
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StorageError(f"cannot create data directory {path}: {exc}") from exc
        b = cls(path, cfg, clock, background_threads, dirs)
        try:
            b._load()
        except BaseException:
            b._release()
            raise
        if background_threads:
            b._start_threads()
        return b

    def _load(self) -> None:
        self._take_lock()
        self.log_dirs.open()
        self._load_meta()
        topics = self._read_topics_file()
        owned = set()
        for name, meta in topics.items():
            for p in range(meta["partitions"]):
                owned.add(f"{name}-{p}")
        self._remove_strays(owned)
        self.log_dirs.scan()
        # One clean-shutdown marker per log directory: its logs skip recovery when it is
        # there.  It goes (durably) before anything can be appended.
        self._dir_clean = {d: (d / CLEAN_SHUTDOWN_FILE).exists() for d in self.log_dirs.online}
        for name, meta in sorted(topics.items()):
            tc = TopicConfig.build(meta.get("config", {}), self._topic_defaults(name))
            parts = self._open_partitions(name, range(meta["partitions"]), tc)
            self._topics[name] = _Topic(name, meta["id"], tc, parts)
        for d, clean in self._dir_clean.items():
            if clean and not self.log_dirs.is_offline(d):
                try:
                    (d / CLEAN_SHUTDOWN_FILE).unlink()
                    fsync_dir(d)
                except OSError as exc:
                    if d == self.data_dir or not is_dir_failure(exc):
                        raise StorageError(exc.errno or 0,
                                           f"removing {d / CLEAN_SHUTDOWN_FILE}: {exc.strerror}") from exc
                    self.log_dirs.mark_offline(d, exc)
                    self._offline_pending = True
        self._dir_clean = {}
        self._take_offline()
        if OFFSETS_TOPIC in self._topics:
            self._start_groups()

    def _open_partitions(self, name: str, indexes: Sequence[int], tc: TopicConfig, *,
                         fresh: bool = False) -> List[Partition]:
        """Open (``fresh``: create, removing a stray directory first) the partitions of
        a topic, on up to _PARTITION_IO_THREADS threads: each is a few file creations
        or fsyncs, which overlap.  If any fails, the opened ones are closed again and
        the first error is raised."""
        def one(p: int) -> Any:
            return self._open_partition(name, p, tc, fresh=fresh)

        if len(indexes) <= 1:
            return [one(p) for p in indexes]
        with ThreadPoolExecutor(min(_PARTITION_IO_THREADS, len(indexes)),
                                thread_name_prefix="pylog-open") as pool:
            futures = [pool.submit(one, p) for p in indexes]
        opened = [f.result() for f in futures if f.exception() is None]
        errors = [f.exception() for f in futures if f.exception() is not None]
        if errors:
            for part in opened:  # type: Any
                try:
                    part.close()
                except Exception:
                    pass
            raise errors[0]
        return opened

    def _open_partition(self, name: str, p: int, tc: TopicConfig, *, fresh: bool = False) -> Any:
        """Open partition ``p`` of ``name`` in its log directory (a new one: the online
        directory with the fewest partitions).  An OfflinePartition when its directory
        is offline, when it is in no online directory while one is offline (it may be
        there), or when opening it fails with an I/O error (which takes the directory
        offline).  ``fresh``: a new partition, a stray directory of its name removed."""
        key = f"{name}-{p}"
        dirs = self.log_dirs
        if not fresh and dirs.offline and dirs.locate(key) is None:
            return OfflinePartition(name, p, tc, None, "it is in no online log directory, and "
                                    + ", ".join(f"{d} failed" for d in dirs.offline))
        d = dirs.path_for(key)
        root = d.parent
        if dirs.is_offline(root):
            return OfflinePartition(name, p, tc, root, dirs.offline[root])
        try:
            if fresh and d.exists():  # a stray from an interrupted create
                shutil.rmtree(d)
            # The broker holds each directory's lock: no per-partition .lock (one descriptor each)
            part = Partition.open(name, p, d, tc, self.config.broker_id, self._clock, dir_lock=False,
                                  clean_shutdown=False if fresh else self._dir_clean.get(root, False))
        except OSError as exc:
            if fresh or not is_dir_failure(exc):
                raise
            dirs.mark_offline(root, exc)
            self._offline_pending = True
            return OfflinePartition(name, p, tc, root, str(exc))
        part.on_storage_error = self._on_storage_error
        return part

    def _on_storage_error(self, part: Partition, exc: BaseException) -> None:
        """A partition's disk refused a write: an I/O error takes its log directory
        offline (the partitions in it are swapped out at the next housekeeping run;
        until then :meth:`partition` refuses them)."""
        if not is_dir_failure(exc):
            return
        root = self.log_dirs.dir_of(part.log.dir)
        if root is not None and self.log_dirs.mark_offline(root, exc):
            self._offline_pending = True

    def _take_offline(self) -> None:
        """Swap the partitions of failed log directories for OfflinePartitions, letting
        go of their logs as a crash would (nothing more is written to a failing disk;
        the next start recovers them)."""
        if not self._offline_pending:
            return
        with self._lock:
            self._offline_pending = False
            gone: List[Partition] = []
            for t in self._topics.values():
                if not any(not p.offline and self._is_offline(p) for p in t.partitions):
                    continue
                new: List[Any] = []
                for p in t.partitions:
                    if not p.offline and self._is_offline(p):
                        root = self.log_dirs.dir_of(p.log.dir)
                        new.append(OfflinePartition(p.topic, p.index, p.config, root,
                                                    self.log_dirs.offline.get(root, "I/O error") if root else ""))
                        gone.append(p)
                    else:
                        new.append(p)
                t.partitions = new  # a new list: readers without the lock see old or new
        for p in gone:
            p.log.abandon()
        if gone:
            log.error("broker %d: %d partition(s) offline after their log directory failed: %s",
                      self.config.broker_id, len(gone), ", ".join(p.name for p in gone[:20])
                      + (", ..." if len(gone) > 20 else ""))

    def _is_offline(self, p: Any) -> bool:
        if p.offline:
            return True
        if not self.log_dirs.offline:
            return False
        return self.log_dirs.is_offline(self.log_dirs.dir_of(p.log.dir))

    def _take_lock(self) -> None:
        lock_path = self.data_dir / ".broker.lock"
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise StorageError(f"data directory {self.data_dir} is in use by another broker") from None
        self._lock_fd = fd

    def _load_meta(self) -> None:
        meta = self.data_dir / "meta.properties"
        props: Dict[str, str] = {}
        if meta.exists():
            for line in meta.read_text().splitlines():
                if "=" in line and not line.startswith("#"):
                    k, v = line.split("=", 1)
                    props[k.strip()] = v.strip()
            if props.get("broker.id") not in (None, str(self.config.broker_id)):
                raise InvalidConfig(f"{self.data_dir} belongs to broker.id {props['broker.id']}, "
                                    f"not {self.config.broker_id}")
            self.cluster_id = props.get("cluster.id", "")
        if not self.cluster_id:
            self.cluster_id = uuid.uuid4().hex
            self._atomic_write(meta, f"version=1\nbroker.id={self.config.broker_id}\n"
                                     f"cluster.id={self.cluster_id}\n")
        block = self.data_dir / "producer-id-block"
        try:
            self._next_pid = self._pid_block_end = int(block.read_text().strip() or 0)
        except FileNotFoundError:
            self._next_pid = self._pid_block_end = 0
        except ValueError as exc:
            raise StorageError(f"{block} is damaged: {exc}") from exc

    def _read_topics_file(self) -> Dict[str, Dict[str, Any]]:
        path = self.data_dir / "topics.json"
        if not path.exists():
            return {}
        try:
            data = json.loads(path.read_text())
            topics = data["topics"]
            for name, meta in topics.items():
                validate_topic_name(name)
                if not isinstance(meta["partitions"], int) or meta["partitions"] < 1:
                    raise ValueError(f"topic {name}: bad partition count")
            return topics
        except (ValueError, KeyError, TypeError, InvalidTopic) as exc:
            raise StorageError(f"{path} is damaged ({exc}); the topics cannot be known") from exc

    def _write_topics_file(self) -> None:
        data = {"version": 1, "topics": {
            t.name: {"id": t.topic_id, "partitions": len(t.partitions), "config": dict(t.config.overrides)}
            for t in self._topics.values()}}
        self._atomic_write(self.data_dir / "topics.json", json.dumps(data, indent=1, sort_keys=True))

    def _atomic_write(self, path: Path, text: str) -> None:
        tmp = path.with_name(path.name + ".tmp")
        try:
            with open(tmp, "w") as f:
                f.write(text)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
            dfd = os.open(self.data_dir, os.O_RDONLY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)
        except OSError as exc:
            try:  # a full disk: the old file stays, no .tmp beside it
                tmp.unlink()
            except OSError:
                pass
            raise StorageError(exc.errno or 0, f"writing {path}: {exc.strerror}") from exc

    def _remove_strays(self, owned: set) -> None:
        for root in self.log_dirs.online:
            try:
                entries = list(root.iterdir())
            except OSError as exc:
                if root != self.data_dir and is_dir_failure(exc):
                    self.log_dirs.mark_offline(root, exc)
                    continue
                raise StorageError(exc.errno or 0, f"cannot list log directory {root}: {exc.strerror}") from exc
            for entry in entries:
                if not entry.is_dir():
                    continue
                m = _PARTITION_DIR_RE.match(entry.name)
                if entry.name.endswith("-delete") or (m and entry.name not in owned):
                    log.warning("removing partition directory %s: no topic owns it (a create or delete "
                                "was interrupted)", entry)
                    shutil.rmtree(entry, ignore_errors=True)

    def _start_threads(self) -> None:
        t = threading.Thread(target=self._housekeeping_loop, name="pylog-housekeeping", daemon=True)
        t.start()
        self._threads.append(t)

    @property
    def closed(self) -> bool:
        return self._closed

    def _check_open(self) -> None:
        if self._closed:
            raise BrokerClosed(f"broker on {self.data_dir} is closed")

    def close(self) -> None:
        """Stop background work, close every partition (flushing it), release the directory."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._stop.set()
        with self._data_cond:
            self._data_version += 1
            self._data_cond.notify_all()
        for t in self._threads:
            t.join()
        if self._groups is not None:
            self._groups.close()
        self._take_offline()
        with self._lock:
            errors = []
            failed_dirs = set()

            def close_one(p: Partition) -> None:
                try:
                    p.close()
                except Exception as exc:  # keep closing the others
                    errors.append(exc)
                    failed_dirs.add(self.log_dirs.dir_of(p.log.dir))

            parts = [p for t in self._topics.values() for p in t.partitions if not p.offline]
            if len(parts) <= 1:
                for p in parts:
                    close_one(p)
            else:
                with ThreadPoolExecutor(min(_PARTITION_IO_THREADS, len(parts)),
                                        thread_name_prefix="pylog-close") as pool:
                    list(pool.map(close_one, parts))
            for d in self.log_dirs.online:  # every log in it closed cleanly: say so, once
                if d in failed_dirs:
                    continue
                try:
                    fd = os.open(d / CLEAN_SHUTDOWN_FILE, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
                    try:
                        os.fsync(fd)
                    finally:
                        os.close(fd)
                    fsync_dir(d)
                except OSError as exc:
                    errors.append(StorageError(exc.errno or 0, f"writing {d / CLEAN_SHUTDOWN_FILE}: {exc.strerror}"))
            self._release()
            if errors:
                raise errors[0]

    def _release(self) -> None:
        self.log_dirs.release()
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def __enter__(self) -> "Broker":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Broker({str(self.data_dir)!r}, topics={len(self._topics)}, closed={self._closed})"

    # =================================================================== identity
    @property
    def controller_id(self) -> int:
        """This broker's id: a single broker is its own controller."""
        return self.config.broker_id

    def nodes(self) -> List[NodeInfo]:
        """This broker (broker.id and broker.rack): the only node of its cluster."""
        return [NodeInfo(self.config.broker_id, self.config.broker_rack)]

    # ===================================================================== topics
    def create_topic(self, name: str, partitions: Optional[int] = None, replication_factor: int = 1,
                     config: Optional[Mapping[str, Any]] = None, *, validate_only: bool = False,
                     replica_assignment: Optional[Sequence[Sequence[int]]] = None) -> TopicDescription:
        """Create a topic of ``partitions`` partitions (default num.partitions).

        ``config`` overrides topic-level settings by Kafka name.  ``replica_assignment``
        (replica ids per partition) can only name this broker, once per partition; it
        sets the partition count.  Raises InvalidTopic, TopicAlreadyExists (also for a
        name that differs only by '.' vs '_', as Kafka), InvalidPartitions,
        InvalidReplicationFactor (a single broker holds one replica),
        InvalidReplicaAssignment, InvalidConfig.  ``validate_only`` checks all of that,
        creates nothing and returns the description the topic would have (topic id
        :data:`ZERO_TOPIC_ID`).
        """
        validate_topic_name(name)
        if name in _INTERNAL_TOPICS:
            raise InvalidTopic(f"{name} is an internal topic; pylog creates it when needed")
        if replica_assignment is not None:
            rows = [list(r) for r in replica_assignment]
            if not rows or any(r != [self.config.broker_id] for r in rows) \
                    or partitions not in (None, len(rows)):
                raise InvalidReplicaAssignment(f"a single broker's topic has one replica per partition, on broker "
                                               f"{self.config.broker_id}; got {rows}")
            partitions = len(rows)
        return self._create_topic(name, partitions, replication_factor, config, validate_only=validate_only)

    def _create_topic(self, name: str, partitions: Optional[int], replication_factor: int,
                      config: Optional[Mapping[str, Any]], defaults: Optional[Dict[str, Any]] = None,
                      *, validate_only: bool = False) -> TopicDescription:
        n = self.config.num_partitions if partitions is None else partitions
        check_int("partitions", n, min=1, max=self.config.max_partitions_per_topic, error=InvalidPartitions)
        check_int("replication_factor", replication_factor, min=1, error=InvalidReplicationFactor)
        if replication_factor > 1:
            raise InvalidReplicationFactor(
                f"replication factor {replication_factor} is larger than the number of brokers (1); "
                "use pylog.LocalCluster for replicated topics")
        tc = TopicConfig.build(config, defaults or self.config.topic_config_defaults())
        with self._lock:
            self._check_open()
            if name in self._topics:
                raise TopicAlreadyExists(f"topic {name!r} already exists")
            check_topic_is_new(name, self._topics)
            if validate_only:
                return TopicDescription(name, ZERO_TOPIC_ID, [self._new_partition_info(p) for p in range(n)],
                                        dict(tc.values), dict(tc.overrides), name in _INTERNAL_TOPICS)
            parts: List[Partition] = []
            try:
                parts = self._open_partitions(name, range(n), tc, fresh=True)
                topic = _Topic(name, uuid.uuid4().hex, tc, parts)
                self._topics[name] = topic
                self._write_topics_file()
            except BaseException:
                self._topics.pop(name, None)
                for part in parts:
                    try:
                        part.close()
                    except Exception:
                        pass
                for p in range(n):
                    where = self.log_dirs.locate(f"{name}-{p}")
                    if where is not None and not self.log_dirs.is_offline(where):
                        shutil.rmtree(where / f"{name}-{p}", ignore_errors=True)
                    self.log_dirs.forget(f"{name}-{p}")
                raise
            log.info("created topic %s with %d partitions", name, n)
            return self._describe(topic)

    def delete_topic(self, name: str) -> None:
        """Delete a topic and its data.  Raises UnknownTopicOrPartition, InvalidTopic
        (internal topics)."""
        if name in _INTERNAL_TOPICS:
            raise InvalidTopic(f"{name} is an internal topic and cannot be deleted")
        with self._lock:
            self._check_open()
            topic = self._topic(name)
            del self._topics[name]
            try:
                self._write_topics_file()
            except BaseException:
                self._topics[name] = topic
                raise
            for p in topic.partitions:
                self.log_dirs.forget(p.name)
                if p.offline:  # its directory failed: removed when the broker next starts
                    continue
                p.close()
                d = p.log.dir
                gone = d.with_name(f"{d.name}.{uuid.uuid4().hex[:8]}-delete")
                os.replace(d, gone)
                shutil.rmtree(gone, ignore_errors=True)
            self.traffic.forget_topic(name)
        log.info("deleted topic %s", name)

    def create_partitions(self, name: str, count: int, *, validate_only: bool = False) -> TopicDescription:
        """Grow topic ``name`` to ``count`` partitions (Kafka's CreatePartitions).

        The new partitions start empty; keyed records of the topic map to other
        partitions from now on (as in Kafka).  Raises UnknownTopicOrPartition,
        InvalidTopic (an internal topic), InvalidPartitions (``count`` not above today's
        count, or above max.partitions.per.topic).  ``validate_only`` checks and changes
        nothing.  Crash-safe: see the module docstring.
        """
        with self._lock:
            self._check_open()
            t = self._topic(name)
            if name in _INTERNAL_TOPICS:
                raise InvalidTopic(f"{name} is an internal topic; its partition count cannot change")
            old = t.partitions
            check_int(f"the new partition count of topic {name!r} (it has {len(old)})", count,
                      min=len(old) + 1, max=self.config.max_partitions_per_topic, error=InvalidPartitions)
            if validate_only:
                d = self._describe(t)
                extra = [self._new_partition_info(p) for p in range(len(old), count)]
                return TopicDescription(d.name, d.topic_id, d.partitions + extra, d.config, d.overrides, d.internal)
            new: List[Partition] = []
            try:
                for p in range(len(old), count):
                    new.append(self._open_partition(name, p, t.config, fresh=True))
                t.partitions = old + new  # a new list: readers without the lock see old or new
                self._write_topics_file()
            except BaseException:
                t.partitions = old
                for part in new:
                    try:
                        part.close()
                    except Exception:
                        pass
                for p in range(len(old), count):
                    where = self.log_dirs.locate(f"{name}-{p}")
                    if where is not None and not self.log_dirs.is_offline(where):
                        shutil.rmtree(where / f"{name}-{p}", ignore_errors=True)
                    self.log_dirs.forget(f"{name}-{p}")
                raise
            log.info("topic %s grew from %d to %d partitions", name, len(old), count)
            return self._describe(t)

    def alter_topic_config(self, name: str, changes: Mapping[str, Optional[Any]], *,
                           replace: bool = False, validate_only: bool = False) -> TopicDescription:
        """Change topic ``name``'s configuration overrides (Kafka's AlterConfigs).

        A value sets an override, None removes it (back to the broker default);
        ``replace=True`` makes the overrides exactly the non-None ``changes``.  The new
        configuration is validated first (InvalidConfig names the bad setting, and
        nothing changes), written to ``topics.json``, then applied to the open
        partitions at once (see :meth:`Partition.reconfigure`).  Returns the new
        description (with ``validate_only``, the one it would have: nothing changes).
        Raises UnknownTopicOrPartition, InvalidConfig, StorageError.
        """
        with self._lock:
            self._check_open()
            t = self._topic(name)
            tc = t.config.altered(changes, replace=replace, defaults=self._topic_defaults(name))
            if validate_only:
                d = self._describe(t)
                return TopicDescription(d.name, d.topic_id, d.partitions, dict(tc.values), dict(tc.overrides),
                                        d.internal)
            old = t.config
            t.config = tc
            try:
                self._write_topics_file()
            except BaseException:
                t.config = old
                raise
            for p in t.partitions:
                if not p.offline:
                    p.reconfigure(tc)
            log.info("topic %s configuration overrides are now %s", name, dict(tc.overrides))
            return self._describe(t)

    def list_topics(self, include_internal: bool = False) -> List[str]:
        """Names of the topics, sorted."""
        with self._lock:
            return sorted(t for t in self._topics if include_internal or t not in _INTERNAL_TOPICS)

    def describe_topic(self, name: str, *, offsets: bool = True) -> TopicDescription:
        """Partitions (leader, replicas, ISR, offsets, size) and configuration of a topic
        (``offsets`` is for cluster nodes: the offsets are always given here)."""
        with self._lock:
            self._check_open()
            return self._describe(self._topic(name))

    def _describe(self, t: _Topic) -> TopicDescription:
        b = self.config.broker_id
        infos = [PartitionInfo(p.index, -1, [b], [], 0, 0, 0, 0, offline=True) if self._is_offline(p) else
                 PartitionInfo(p.index, p.leader, p.replicas, p.isr, p.log_start_offset, p.log_end_offset,
                               p.high_watermark, p.log.size_bytes) for p in t.partitions]
        return TopicDescription(t.name, t.topic_id, infos, dict(t.config.values), dict(t.config.overrides),
                                t.name in _INTERNAL_TOPICS)

    def _new_partition_info(self, index: int) -> PartitionInfo:
        """What a partition about to be created would look like (validate_only)."""
        b = self.config.broker_id
        return PartitionInfo(index, b, [b], [b], 0, 0, 0, 0)

    def _topic_defaults(self, name: str) -> Dict[str, Any]:
        """The defaults a topic's overrides lie over: the broker's topic defaults, and for
        ``__consumer_offsets`` its own settings on top (kept as defaults, not overrides,
        so ``topics.json`` holds only what an operator set)."""
        d = self.config.topic_config_defaults()
        if name == OFFSETS_TOPIC:
            d.update(offsets_topic_spec(self.config).config)
        return d

    def topic_config(self, name: str) -> TopicConfig:
        with self._lock:
            return self._topic(name).config

    def _topic(self, name: str) -> _Topic:
        t = self._topics.get(name)
        if t is None:
            if not isinstance(name, str):
                raise InvalidTopic(f"topic name must be a string, got {type(name).__name__}")
            raise UnknownTopicOrPartition(f"unknown topic {name!r}")
        return t

    def partitions_for(self, topic: str) -> int:
        """Number of partitions of ``topic`` (creating it if auto.create.topics.enable)."""
        t = self._topics.get(topic)
        if t is not None:
            return len(t.partitions)
        with self._lock:
            self._check_open()
            if topic not in self._topics and self.config.auto_create_topics_enable \
                    and isinstance(topic, str) and topic not in _INTERNAL_TOPICS:
                self.create_topic(topic)
            return len(self._topic(topic).partitions)

    def partition(self, topic: str, partition: int) -> Partition:
        """The :class:`Partition` object (raises UnknownTopicOrPartition)."""
        t = self._topics.get(topic)
        if t is None:
            t = self._topic(topic)
        check_int(f"partition of topic {topic!r} (it has {len(t.partitions)})", partition, min=0,
                  max=len(t.partitions) - 1, error=UnknownTopicOrPartition)
        p = t.partitions[partition]
        if p.offline:
            raise p.error()
        if self.log_dirs.offline and self._is_offline(p):  # failed; swapped out at the next housekeeping
            root = self.log_dirs.dir_of(p.log.dir)
            raise OfflinePartition(topic, partition, p.config, root,
                                   self.log_dirs.offline.get(root, "I/O error") if root else "").error()
        return p

    # ================================================================ data plane
    def init_producer_id(self) -> Tuple[int, int]:
        """A new (producer id, epoch) for an idempotent producer; ids are never reused."""
        with self._lock:
            self._check_open()
            if self._next_pid >= self._pid_block_end:
                end = self._pid_block_end + _PRODUCER_ID_BLOCK
                self._atomic_write(self.data_dir / "producer-id-block", f"{end}\n")
                self._next_pid, self._pid_block_end = self._pid_block_end, end
            pid = self._next_pid
            self._next_pid += 1
            return pid, 0

    def produce(self, topic: str, partition: int, data: Any, *, acks: Union[int, str] = -1,
                timeout_ms: int = 30_000) -> AppendResult:
        """Append Kafka v2 record batches to a partition (one ProduceRequest partition).

        Raises UnknownTopicOrPartition, InvalidRequiredAcks, CorruptRecordError,
        RecordTooLarge, OutOfOrderSequence, InvalidProducerEpoch, BrokerClosed,
        StorageError.  Nothing is written when it raises.
        """
        required = parse_acks(acks)
        self._check_open()
        p = self.partition(topic, partition)
        res = p.append(data, required_acks=required)
        if res.records:
            self.traffic.record_in(topic, partition, res.records, res.bytes, self._clock())
            with self._data_cond:
                self._data_version += 1
                self._data_cond.notify_all()
            if self._data_listeners:
                self._data_listeners.call(topic, partition)
        return res

    def produce_many(self, topic: str, partition: int, payloads: Sequence[Any], *, acks: Union[int, str] = -1,
                     timeout_ms: int = 30_000) -> Tuple[List[AppendResult], Optional[PylogError]]:
        """:meth:`produce` of each of ``payloads`` (each what one produce takes) to one
        partition, in order, in one call: how an embedded producer ships the batches it
        has ready for a partition (the per-call work is done once, see
        :meth:`Partition.append_many`).

        Returns (results, None) when every payload was written, or (the results of the
        first k, the error of payload k), the payloads after k not tried.  Raises, with
        nothing written, what :meth:`produce` raises before it appends (an unknown
        partition, bad acks, a closed broker).
        """
        required = parse_acks(acks)
        self._check_open()
        p = self.partition(topic, partition)
        results, error = p.append_many(payloads, required_acks=required)
        records = sum(r.records for r in results)
        if records:
            self.traffic.record_in(topic, partition, records, sum(r.bytes for r in results), self._clock())
            with self._data_cond:
                self._data_version += 1
                self._data_cond.notify_all()
            if self._data_listeners:
                self._data_listeners.call(topic, partition)
        return results, error

    def produce_async(self, topic: str, partition: int, data: Any, *, acks: Union[int, str] = -1,
                      callback: ProduceCallback) -> None:
        """:meth:`produce` now, then ``callback(None, result)`` or ``callback(error, None)``
        before returning: one broker has no followers to wait for.  PylogErrors go to the
        callback, never out of this call; TypeError if ``callback`` is not callable."""
        if not callable(callback):
            raise TypeError(f"callback must be callable(error, result), got {callback!r}")
        try:
            res = self.produce(topic, partition, data, acks=acks)
        except PylogError as exc:
            callback(exc, None)
            return
        callback(None, res)

    def drive(self, done: Callable[[], bool], timeout_s: float) -> bool:
        """Nothing is ever pending on one broker (:meth:`produce_async` answers at once):
        returns ``done()`` without waiting."""
        return bool(done())

    def fetch(self, topic: str, partition: int, offset: int, *, max_bytes: int = 1 << 20,
              to_log_end: bool = False) -> FetchResult:
        """Batches of a partition from ``offset`` below the high watermark (zero-copy).

        The first batch may start below ``offset`` (a consumer skips those records).
        Raises UnknownTopicOrPartition, OffsetOutOfRange, BrokerClosed.
        """
        self._check_open()
        p = self.partition(topic, partition)
        batches = p.read(offset, max_bytes, to_log_end=to_log_end)
        if batches:
            n = batches[-1].next_offset - max(offset, batches[0].base_offset)
            self.traffic.record_out(topic, partition, n, sum(b.size_bytes for b in batches), self._clock())
        return FetchResult(batches, p.high_watermark, p.log_start_offset, p.log_end_offset)

    def list_offsets(self, topic: str, partition: int, timestamp: int) -> Tuple[Optional[int], int]:
        """Kafka's ListOffsets: -2 earliest, -1 latest (the HW), else the first offset with
        a timestamp >= ``timestamp``.  Returns (offset or None, record timestamp or -1)."""
        self._check_open()
        p = self.partition(topic, partition)
        if timestamp == LATEST_TIMESTAMP:
            return p.high_watermark, -1
        if timestamp == EARLIEST_TIMESTAMP:
            return p.log_start_offset, -1
        off = p.offset_for_timestamp(timestamp)
        if off is None:
            return None, -1
        return off, p.timestamp_at(off)

    def wait_for_data(self, version: int, timeout_s: float) -> int:
        """Block until something was produced after ``version`` (from :attr:`data_version`)
        or ``timeout_s`` passes; returns the current version.  Consumers long-poll on it."""
        with self._data_cond:
            if self._data_version == version and not self._closed and timeout_s > 0:
                self._data_cond.wait(timeout_s)
            return self._data_version

    @property
    def data_version(self) -> int:
        return self._data_version

    def add_data_listener(self, listener: DataListener) -> None:
        """Call ``listener(topic, partition)`` after every produce that made records of
        that partition readable, from the producing thread, holding no broker lock.  A
        listener that raises is logged; the produce succeeds all the same."""
        self._data_listeners.add(listener)

    def remove_data_listener(self, listener: DataListener) -> None:
        """Stop calling ``listener`` (nothing happens if it was not added)."""
        self._data_listeners.remove(listener)

    def offset_for_leader_epoch(self, topic: str, partition: int, leader_epoch: int) -> Tuple[int, int]:
        """Kafka's OffsetsForLeaderEpoch.  One broker never changes leader: its one epoch
        holds the whole log, so an epoch >= 0 answers (that epoch, the log end offset)
        and -1 answers (-1, -1) (see :meth:`Partition.offset_for_leader_epoch`).  Raises
        UnknownTopicOrPartition, InvalidArgument, BrokerClosed."""
        self._check_open()
        return self.partition(topic, partition).offset_for_leader_epoch(leader_epoch)

    def delete_records(self, topic: str, partition: int, before_offset: int) -> int:
        """Kafka's DeleteRecords: move the log start offset of a partition up to
        ``before_offset`` (-1: the high watermark); returns the new log start offset.
        Fetching below it then raises OffsetOutOfRange.  Raises OffsetOutOfRange
        (``before_offset`` above the high watermark or below -1),
        UnknownTopicOrPartition, BrokerClosed."""
        self._check_open()
        return self.partition(topic, partition).delete_records(before_offset)

    # ===================================================================== groups
    @property
    def groups(self) -> Any:
        """The group coordinator service (creates ``__consumer_offsets`` on first use)."""
        if self._groups is None:
            with self._lock:
                self._check_open()
                if self._groups is None:
                    if OFFSETS_TOPIC not in self._topics:
                        spec = offsets_topic_spec(self.config)
                        self._create_topic(OFFSETS_TOPIC, spec.partitions, spec.replication_factor, None,
                                           self._topic_defaults(OFFSETS_TOPIC))
                    self._start_groups()
        return self._groups

    def coordinator_id(self, group_id: str) -> int:
        """The broker coordinating ``group_id``: this one (it coordinates every group)."""
        self._check_open()
        return self.config.broker_id

    def _start_groups(self) -> None:
        from pylog.broker.group_service import GroupService

        topic = self._topics[OFFSETS_TOPIC]

        def append(partition: int, records: List[Tuple[bytes, Optional[bytes]]]) -> None:
            part = topic.partitions[partition]
            if part.offline:
                raise part.error()
            part.append_records([v for _, v in records], keys=[k for k, _ in records])

        service = GroupService(
            append=append, num_partitions=len(topic.partitions), clock=self._clock,
            tick_interval_ms=100 if self._background else 0,
            group_min_session_timeout_ms=self.config.group_min_session_timeout_ms,
            group_max_session_timeout_ms=self.config.group_max_session_timeout_ms,
            group_initial_rebalance_delay_ms=self.config.group_initial_rebalance_delay_ms)
        service.load(self._replay_offsets(topic))
        self._groups = service

    @staticmethod
    def _replay_offsets(topic: _Topic) -> Iterable[Tuple[bytes, Optional[bytes]]]:
        for p in topic.partitions:
            if p.offline:  # its directory failed: the groups it kept are not known here
                log.error("group coordinator: %s is offline; the groups whose offsets it keeps start empty",
                          p.name)
                continue
            for rec in p.log.records():
                if rec.key is not None:
                    yield rec.key, rec.value

    # =============================================================== housekeeping
    def _housekeeping_loop(self) -> None:
        while not self._stop.wait(0.2):
            try:
                self.run_housekeeping()
            except BrokerClosed:
                return
            except Exception:  # never let the thread die silently
                log.exception("housekeeping failed")

    def run_housekeeping(self, now_ms: Optional[int] = None, *, force: bool = False) -> None:
        """Retention, producer-id expiry, compaction and skew checks that are due (all of
        them with ``force``)."""
        now = self._clock() if now_ms is None else now_ms
        self._take_offline()
        self._maintenance.run(self._all_partitions(), now, force=force)
        for name, t in list(self._topics.items()):
            self.traffic.check_skew(name, len(t.partitions), now)
        if self._groups is not None and not self._background:
            self._groups.tick()

    def run_cleaner(self, now_ms: Optional[int] = None, *, force: bool = False) -> List[Any]:
        """Compact every topic whose cleanup.policy contains "compact" (when dirty enough,
        or always with ``force``); returns the cleaner's per-partition results."""
        now = self._clock() if now_ms is None else now_ms
        return self._maintenance.compact(self._all_partitions(), now, force=force)

    def _all_partitions(self) -> List[Partition]:
        """The partitions that are online."""
        with self._lock:
            return [p for t in self._topics.values() for p in t.partitions if not self._is_offline(p)]

    # ==================================================================== metrics
    def metrics(self) -> Dict[str, Any]:
        """Per-topic/partition traffic, sizes and offsets, and per-group lag (see
        :func:`pylog.broker.metrics.render_prometheus` for the text format)."""
        now = self._clock()
        snap = self.traffic.snapshot(now)
        topics: Dict[str, Any] = {}
        with self._lock:
            for name, t in self._topics.items():
                tsnap = snap.get("topics", {}).get(name, {}).get("partitions", {})
                topics[name] = {"partitions": {p.index: partition_metrics(
                    tsnap, p.index, log_size_bytes=p.log.size_bytes, log_start_offset=p.log_start_offset,
                    log_end_offset=p.log_end_offset, high_watermark=p.high_watermark)
                    for p in t.partitions if not self._is_offline(p)}}
            offline_parts = sum(1 for t in self._topics.values() for p in t.partitions if self._is_offline(p))

        def hw(topic: str, part: int) -> Optional[int]:
            t = self._topics.get(topic)
            if t is None or part >= len(t.partitions) or self._is_offline(t.partitions[part]):
                return None
            return t.partitions[part].high_watermark

        groups = {} if self._groups is None else group_metrics(self._groups, hw)
        return {"broker": {"id": self.config.broker_id}, "topics": topics, "groups": groups,
                "skew_warnings_total": snap.get("skew_warnings_total", 0),
                "log_scrub_damaged_partitions": len(self._maintenance.damaged),
                "offline_log_directories": self.log_dirs.offline_count,
                "offline_partitions": offline_parts,
                "log_dirs": self.log_dirs.describe()}
