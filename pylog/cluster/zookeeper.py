"""ZooKeeperMetadataStore: the MetadataStore contract on a ZooKeeper ensemble (via kazoo).

The contract is the one :mod:`pylog.cluster.metadata` states for
:class:`~pylog.cluster.metadata.InMemoryMetadataStore`; this store keeps it wherever
ZooKeeper allows.  How it maps:

- **Nodes** are znodes holding compact JSON text in UTF-8 (parents made by
  ``make_parents`` hold ``null``; a node holding no bytes, such as a chroot made by another
  tool, reads as ``None``).  Paths are validated with
  :func:`~pylog.cluster.metadata.validate_path` and data sizes with
  :func:`~pylog.cluster.metadata.encode_data` before anything is sent.  A create whose
  parents are missing sends the parents and the node in one ZooKeeper transaction, and a
  recursive delete sends a version check and every delete in one transaction, so a failed
  call changes nothing (a subtree of more than :data:`MAX_OPS_PER_TRANSACTION` nodes is
  deleted in several transactions, deepest nodes first).
- **Sessions** are real ZooKeeper sessions: :meth:`create_session` opens a KazooClient of
  its own and returns ZooKeeper's 64-bit session id, which is what ``stat().
  ephemeral_owner`` shows in every process.  kazoo pings to keep a session alive, so
  :meth:`heartbeat` only reports whether it is still alive; the ``now`` arguments are
  checked but **ZooKeeper's clock governs expiry**, and the server may negotiate a
  different timeout than asked for (it clamps to 2..20 ticks).  A session is known to have
  expired when ZooKeeper tells its client so; :meth:`session_alive` turns False then, and
  :meth:`tick` reports it once (or :meth:`heartbeat` raises SessionExpired, which then
  counts as the report).  Only sessions created by this object are known to it: another
  process's session id is "unknown" (InvalidArgument) here.
- **Watches** are ZooKeeper 3.6+ persistent recursive watches (addWatch), one per prefix,
  on the main client.  kazoo 2.11 has no API for them, so this module sends the request
  itself and takes the events off kazoo's connection thread (see the kazoo glue below).
  Events of the main client's own writes are queued before the write returns; after an
  ephemeral write, a session's close or a reported expiry, the main client syncs, so their
  events are queued too by the time the call returns.  A ``WatchEvent``'s version is 0 for
  "created" and -1 (unknown) for "changed" and "deleted": ZooKeeper's events carry no
  version and pylog reads none.
- **Connection loss**: reads are retried until ``operation_timeout_s``; a write is sent
  only while connected and never re-sent, because ZooKeeper cannot tell whether a lost
  write was applied.  Either way the call then raises
  :class:`~pylog.errors.MetadataStoreUnavailable` (retriable), whose message says whether
  the write may have been applied.  Watches are re-added whenever the main client
  reconnects (kazoo drops every watch on a disconnect, and ZooKeeper itself replays no
  persistent-watch events), so **changes made while the main client was disconnected
  raise no event**: :attr:`reconnections` counts these gaps and the wakeup callback runs
  after each, so a driver can re-read what it watches.  If the main client's session
  expires, kazoo opens a new one and the watches are re-added the same way; the main
  client owns no ephemeral node, so nothing else is lost.

Deviations from the in-memory store, all forced by ZooKeeper: sequence numbers come from
the parent's child version, so they are unique and increasing but skip a number for every
other child created or deleted under the parent; expiry is real time (above); events carry
no version; a node may be changed by other processes at any time.
"""
from __future__ import annotations

import json
import logging
import re
import threading
import time
import warnings
from collections import namedtuple
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Any, Self

from kazoo.client import KazooClient, KazooState
from kazoo.exceptions import (
    BadVersionError,
    ConnectionClosedError,
    ConnectionLoss,
    NoAuthError,
    NoChildrenForEphemeralsError,
    NodeExistsError,
    NoNodeError,
    NotEmptyError,
    OperationTimeoutError,
    RolledBackError,
    RuntimeInconsistency,
    SessionExpiredError,
)
from kazoo.handlers.threading import KazooTimeoutError
from kazoo.protocol.serialization import Watch
from kazoo.retry import KazooRetry

from pylog.cluster.metadata import (
    ANY_VERSION,
    SEQUENCE_DIGITS,
    NodeStat,
    WatchEvent,
    WatchQueues,
    encode_data,
    join_path,
    parent_path,
    validate_path,
)
from pylog.cluster.zksecurity import ZkSecurity
from pylog.errors import (
    BadVersion,
    InvalidArgument,
    InvalidConfig,
    MetadataStoreNotAuthorized,
    MetadataStoreUnavailable,
    NodeExists,
    NoNode,
    SessionExpired,
)
from pylog.util import check_int

__all__ = [
    "DEFAULT_PORT",
    "MAX_OPS_PER_TRANSACTION",
    "ZooKeeperConnect",
    "ZooKeeperMetadataStore",
    "parse_connect_string",
]

log = logging.getLogger(__name__)

#: ZooKeeper's client port when a ``zookeeper.connect`` entry names none.
DEFAULT_PORT = 2181
#: Largest ZooKeeper transaction a recursive delete sends (the request must stay well
#: under the server's jute.maxbuffer).
MAX_OPS_PER_TRANSACTION = 1000
#: How often a create or recursive delete re-reads and retries after racing another writer.
_MAX_RACE_ATTEMPTS = 20

_HOST_RE = re.compile(r"^(?:\[(?P<v6>[0-9A-Fa-f:.]+(?:%[\w.-]+)?)\]|(?P<name>[A-Za-z0-9._-]+))"
                      r"(?::(?P<port>[0-9]+))?$")


# ---------------------------------------------------------------------- connect string
@dataclass(frozen=True)
class ZooKeeperConnect:
    """A parsed ``zookeeper.connect``: ``host:port[,host:port...][/chroot]``."""

    hosts: tuple[tuple[str, int], ...]
    chroot: str | None  #: a valid absolute path, None for the real root

    @property
    def hosts_string(self) -> str:
        """``host:port,...`` without the chroot (IPv6 addresses in brackets)."""
        return ",".join(f"[{h}]:{p}" if ":" in h else f"{h}:{p}" for h, p in self.hosts)

    def __str__(self) -> str:
        return self.hosts_string + (self.chroot or "")


def parse_connect_string(connect: Any) -> ZooKeeperConnect:
    """Parse Kafka's ``zookeeper.connect`` syntax, ``host:port[,host:port...][/chroot]``.

    A missing port means :data:`DEFAULT_PORT`; IPv6 addresses go in brackets
    (``[::1]:2181``); a chroot of ``/`` alone means none.  Raises InvalidConfig naming the
    setting for anything else."""
    def bad(why: str) -> InvalidConfig:
        return InvalidConfig(f"zookeeper.connect {connect!r} is not host:port[,host:port...]"
                             f"[/chroot]: {why}")

    if not isinstance(connect, str):
        raise InvalidConfig(f"zookeeper.connect must be a string, got {type(connect).__name__}")
    text = connect.strip()
    if not text or any(c.isspace() for c in text):
        raise bad("it is empty or contains spaces")
    hosts_part, slash, chroot_part = text.partition("/")
    chroot: str | None = None
    if slash and chroot_part:
        chroot = "/" + chroot_part
        try:
            validate_path(chroot)
        except InvalidArgument as e:
            raise bad(f"bad chroot: {e}") from None
    hosts = []
    for entry in hosts_part.split(","):
        m = _HOST_RE.match(entry)
        if m is None:
            raise bad(f"bad host entry {entry!r}")
        port = int(m.group("port")) if m.group("port") is not None else DEFAULT_PORT
        if not 1 <= port <= 65535:
            raise bad(f"port {port} is out of range")
        hosts.append((m.group("v6") or m.group("name"), port))
    return ZooKeeperConnect(tuple(hosts), chroot)


# ---------------------------------------------------------------------- kazoo glue
# kazoo 2.11 (the newest release) cannot add ZooKeeper 3.6's persistent recursive watches,
# and it dispatches a watch event only to the one-shot watchers it registered itself.  So
# the store sends the addWatch request through the client's request queue (KazooClient.
# _call, which every kazoo request goes through) and wraps the connection's
# _read_watch_event to see every event first.  Both are private kazoo names: the tests in
# tests/cluster/test_zookeeper.py exercise them against a real server.

_OP_ADD_WATCH = 106  # ZooDefs.OpCode.addWatch
_MODE_PERSISTENT_RECURSIVE = 1  # AddWatchMode.PERSISTENT_RECURSIVE
_EVENT_KINDS = {1: "created", 2: "deleted", 3: "changed"}  # ZooKeeper's Watcher.Event.EventType


class _AddWatch(namedtuple("_AddWatch", "path mode")):
    """ZooKeeper's AddWatchRequest: a ustring path (server-side, chroot included), an int mode."""

    type = _OP_ADD_WATCH

    def serialize(self) -> bytearray:
        raw = self.path.encode("utf-8")
        out = bytearray(len(raw).to_bytes(4, "big"))
        out += raw
        out += self.mode.to_bytes(4, "big", signed=True)
        return out

    @classmethod
    def deserialize(cls, buffer: bytes, offset: int) -> bool:
        return True  # the reply has no body of interest (an ErrorResponse, already checked)


def _new_client(connect: ZooKeeperConnect, session_timeout_ms: int,
                security: ZkSecurity | None = None) -> KazooClient:
    # Reconnect forever, at most a second apart, so a restarted server is found quickly.
    retry = KazooRetry(max_tries=-1, delay=0.05, backoff=2, max_jitter=0.1, max_delay=1.0)
    return KazooClient(hosts=str(connect), timeout=session_timeout_ms / 1000.0,
                       connection_retry=retry, **(security.client_kwargs() if security else {}))


def _start(client: KazooClient, timeout_s: float, connect: ZooKeeperConnect) -> None:
    try:
        with warnings.catch_warnings():  # kazoo warns when the chroot is missing: we make it
            warnings.simplefilter("ignore", UserWarning)
            client.start(timeout=timeout_s)
    except KazooTimeoutError:
        raise MetadataStoreUnavailable(f"could not connect to ZooKeeper at {connect} within "
                                       f"{timeout_s} s") from None


@dataclass(eq=False)
class _Conn:
    """One KazooClient and whether it is connected (set by its state listener)."""

    client: KazooClient
    name: str
    connected: threading.Event = field(default_factory=threading.Event)


@dataclass(eq=False)
class _Session:
    conn: _Conn
    id: int | None = None
    lost: bool = False  #: ZooKeeper said it expired (or its client died)
    closing: bool = False  #: close_session() or close() is stopping the client
    synced: bool = False  #: the main client synced since the loss was noticed


def _covers(prefix: str, path: str) -> bool:
    return prefix == "/" or path == prefix or path.startswith(prefix + "/")


class ZooKeeperMetadataStore:
    """The MetadataStore contract (see :mod:`pylog.cluster.metadata`) on ZooKeeper.

    ``connect`` is Kafka's ``zookeeper.connect``: ``host:port[,host:port...][/chroot]``;
    the chroot node is created if it is missing.  ``connection_timeout_s`` bounds the
    first connection of each client, ``operation_timeout_s`` each call (waiting for a
    reconnection included), and ``session_timeout_ms`` is the main client's session
    timeout (it owns no ephemeral node).  Thread-safe; :meth:`close` (or ``with``) ends
    every session this store opened.
    """

    def __init__(self, connect: str, *, connection_timeout_s: float = 10.0,
                 operation_timeout_s: float = 5.0, session_timeout_ms: int = 18000,
                 security: ZkSecurity | None = None) -> None:
        self._connect = parse_connect_string(connect)
        #: TLS, digest authentication and znode ACLs (pylog.cluster.zksecurity); None: none
        self._security = security if security is not None and security.enabled else None
        for name, value in (("connection_timeout_s", connection_timeout_s),
                            ("operation_timeout_s", operation_timeout_s)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
                raise InvalidConfig(f"{name} must be a positive number of seconds, got {value!r}")
        check_int("session_timeout_ms", session_timeout_ms, min=1)
        self._connection_timeout_s = float(connection_timeout_s)
        self._operation_timeout_s = float(operation_timeout_s)
        self._lock = threading.RLock()  # sessions; never held while waiting on ZooKeeper
        self._sessions: dict[int, _Session] = {}
        self._ended: set[int] = set()  # closed, or expired and reported
        self._unreported: set[int] = set()  # lost, not yet reported by tick/heartbeat
        self._reapers: list[threading.Thread] = []
        self._watch_lock = threading.Lock()  # watches; taken on kazoo's connection thread
        self._watches = WatchQueues()
        self._server_watches: set[str] = set()  # prefixes with a watch on the server
        self._wakeup: Callable[[], None] | None = None
        self._reconnections = 0
        self._ever_connected = False
        self._closed = False
        self._main = _Conn(_new_client(self._connect, session_timeout_ms, self._security), "main")
        self._hook_events(self._main.client)
        self._main.client.add_listener(self._main_state)
        _start(self._main.client, self._connection_timeout_s, self._connect)
        try:
            if self._connect.chroot is not None:
                self._run(self._main, f"create the chroot {self._connect.chroot}",
                          lambda: self._main.client.ensure_path_async("/"), write=False)
        except BaseException:
            self._stop_client(self._main.client)
            raise

    # ------------------------------------------------------------------ lifecycle
    @property
    def connect_string(self) -> str:
        """The normalised ``zookeeper.connect`` this store uses."""
        return str(self._connect)

    @property
    def reconnections(self) -> int:
        """How often the main client reconnected after losing its connection: each time,
        changes made while it was away raised no watch event."""
        return self._reconnections

    @property
    def connected(self) -> bool:
        """Whether the main client is connected now (a driver skips its store work while
        not, rather than wait out the operation timeout under its lock)."""
        return self._main.connected.is_set()

    def set_wakeup(self, callback: Callable[[], None] | None) -> None:
        """Call ``callback()`` after every watch event is queued and after every
        reconnection of the main client.  It runs on kazoo's connection thread, so it
        must be quick and must not call this store (set an Event, write to a pipe)."""
        self._wakeup = callback

    def close(self) -> None:
        """End every session this store opened (their ephemeral nodes go) and disconnect.
        Later calls raise SessionExpired.  Closing twice does nothing."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            sessions = [s for s in self._sessions.values() if not s.closing]
            for s in sessions:
                s.closing = True
            reapers = list(self._reapers)
        for s in sessions:
            self._stop_client(s.conn.client)
        self._stop_client(self._main.client)
        for t in reapers:
            t.join(timeout=30)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _check_open(self) -> None:
        if self._closed:
            raise SessionExpired("the ZooKeeper metadata store was closed")

    @staticmethod
    def _stop_client(client: KazooClient) -> None:
        try:
            client.stop()
            client.close()
        except Exception:  # a client already dead; nothing else to free
            log.debug("stopping a kazoo client failed", exc_info=True)

    # ------------------------------------------------------------------ calls
    def _run(self, conn: _Conn, what: str, start: Callable[[], Any], *, write: bool) -> Any:
        """Send one request (``start()`` returns kazoo's async result) and wait for it.

        Waits for ``conn`` to be connected first; a read is re-sent after a connection
        loss, a write is not.  Raises MetadataStoreUnavailable past the deadline."""
        deadline = time.monotonic() + self._operation_timeout_s
        while True:
            self._check_open()
            if not conn.connected.wait(max(0.0, deadline - time.monotonic())):
                raise MetadataStoreUnavailable(
                    f"{what}: no connection to ZooKeeper at {self._connect} for "
                    f"{self._operation_timeout_s} s (nothing was sent)")
            try:
                return start().get(timeout=max(0.001, deadline - time.monotonic()))
            except NoAuthError:
                raise MetadataStoreNotAuthorized(
                    f"{what}: ZooKeeper refused it (NOAUTH): the znode's ACL does not allow this "
                    "session's identity (zookeeper.auth.digest, or the client certificate); with "
                    "zookeeper.set.acl every broker must authenticate as the same identity") from None
            except (ConnectionLoss, OperationTimeoutError, KazooTimeoutError, ConnectionClosedError,
                    SessionExpiredError) as e:
                if isinstance(e, (ConnectionClosedError, SessionExpiredError)):
                    self._check_open()
                    if conn is not self._main:
                        raise  # the caller maps a session client's end
                if write:
                    raise MetadataStoreUnavailable(
                        f"{what}: the connection to ZooKeeper was lost or timed out after the "
                        f"request was sent ({type(e).__name__}); it may or may not have been "
                        "applied") from None
                if time.monotonic() >= deadline:
                    raise MetadataStoreUnavailable(
                        f"{what}: ZooKeeper at {self._connect} did not answer within "
                        f"{self._operation_timeout_s} s ({type(e).__name__})") from None

    def _read(self, what: str, start: Callable[[], Any]) -> Any:
        return self._run(self._main, what, start, write=False)

    def _sync(self) -> None:
        """Make the main client see every write committed before now (and queue the events
        of writes made through session clients)."""
        self._read("sync", lambda: self._main.client.sync_async("/"))

    def _sync_quietly(self) -> None:
        try:
            self._sync()
        except (MetadataStoreUnavailable, SessionExpired):
            log.debug("sync after a session's end failed", exc_info=True)

    # ------------------------------------------------------------------ sessions
    def create_session(self, timeout_ms: int, now: int) -> int:
        """Open a ZooKeeper session asking for ``timeout_ms`` (the server may clamp it);
        returns ZooKeeper's session id.  ``now`` is checked and otherwise unused."""
        check_int("timeout_ms", timeout_ms, min=1)
        check_int("now", now, min=0)
        self._check_open()
        conn = _Conn(_new_client(self._connect, timeout_ms, self._security), "session")
        session = _Session(conn)
        conn.client.add_listener(lambda state: self._session_state(session, state))
        _start(conn.client, self._connection_timeout_s, self._connect)
        client_id = conn.client.client_id
        with self._lock:
            if client_id is None or self._closed:
                session.closing = True
            else:
                session.id = client_id[0]
                self._sessions[session.id] = session
                if session.lost:
                    self._unreported.add(session.id)
        if session.id is None:
            self._stop_client(conn.client)
            self._check_open()
            raise MetadataStoreUnavailable(f"the new ZooKeeper session at {self._connect} was "
                                           "lost at once")
        return session.id

    def heartbeat(self, session_id: int, now: int) -> None:
        """Raise SessionExpired if the session expired or was closed; else nothing (kazoo
        keeps the session alive by itself).  ``now`` is checked and otherwise unused."""
        check_int("now", now, min=0)
        with self._lock:
            session = self._known(session_id)
            if session is None:
                raise SessionExpired(f"session {session_id:#x} has expired or was closed")
            if not session.lost:
                return
            self._end(session)
        self._sync_quietly()
        raise SessionExpired(f"session {session_id:#x} expired (ZooKeeper ended it)")

    def close_session(self, session_id: int, now: int) -> None:
        """End a session now: ZooKeeper deletes its ephemeral nodes before this returns
        (when it can be reached; else they go when the session times out).  Closing a
        session that already ended does nothing; an unknown id raises InvalidArgument."""
        check_int("now", now, min=0)
        with self._lock:
            session = self._known(session_id)
            if session is None:
                return
            lost = session.lost
            session.closing = True
            self._end(session)
        if not lost:
            self._stop_client(session.conn.client)
        self._sync_quietly()

    def session_alive(self, session_id: int) -> bool:
        """Whether the session was created here and has neither expired nor been closed."""
        with self._lock:
            session = self._sessions.get(session_id) if isinstance(session_id, int) else None
            if session is None:
                return False
            need_sync = session.lost and not session.synced
            session.synced = session.synced or session.lost
        if need_sync:
            self._sync_quietly()
        return not session.lost

    def tick(self, now: int) -> list[int]:
        """The sessions of this store that ZooKeeper expired since the last tick (sorted),
        each reported once.  ``now`` is checked and otherwise unused."""
        check_int("now", now, min=0)
        with self._lock:
            expired = sorted(self._unreported)
            for sid in expired:
                self._end(self._sessions[sid])
        if expired:
            self._sync_quietly()
        return expired

    def _known(self, session_id: Any) -> _Session | None:
        """The live (possibly lost) session, None if it ended; InvalidArgument if unknown."""
        if isinstance(session_id, bool) or not isinstance(session_id, int):
            raise InvalidArgument(f"unknown session id {session_id!r}")
        session = self._sessions.get(session_id)
        if session is None and session_id not in self._ended:
            raise InvalidArgument(f"unknown session id {session_id!r}")
        return session

    def _end(self, session: _Session) -> None:
        assert session.id is not None
        self._sessions.pop(session.id, None)
        self._unreported.discard(session.id)
        self._ended.add(session.id)

    def _session_state(self, session: _Session, state: str) -> None:
        """A session client's state listener (kazoo's connection thread: must not block)."""
        if state == KazooState.CONNECTED:
            session.conn.connected.set()
            return
        session.conn.connected.clear()
        if state != KazooState.LOST:
            return
        with self._lock:
            if session.closing or session.lost:
                return
            session.lost = True
            if session.id is not None and session.id in self._sessions:
                self._unreported.add(session.id)
            # kazoo would open a new session on this client: stop it, from another thread
            # (stopping joins the thread this runs on).
            reaper = threading.Thread(target=self._stop_client, args=(session.conn.client,),
                                      name="pylog-zk-session-reaper", daemon=True)
            self._reapers = [t for t in self._reapers if t.is_alive()] + [reaper]
        reaper.start()
        log.info("ZooKeeper session %s expired", f"{session.id:#x}" if session.id else "(new)")
        self._wake()

    def _session_for_write(self, session_id: Any) -> _Session:
        with self._lock:
            session = self._known(session_id)
            if session is None or session.lost:
                raise SessionExpired(f"session {session_id:#x} has expired or was closed")
            return session

    # ------------------------------------------------------------------ nodes
    def create(self, path: str, data: Any = None, *, ephemeral_session: int | None = None,
               make_parents: bool = True) -> int:
        """Create a node holding ``data``; returns its version (0).

        Missing parents are created as persistent nodes holding ``null`` when
        ``make_parents`` (in the same transaction), else NoNode.  Raises NodeExists if
        ``path`` exists, SessionExpired if ``ephemeral_session`` is not live, and
        InvalidArgument if a parent is ephemeral."""
        validate_path(path)
        if path == "/":
            raise NodeExists("/ already exists")
        value = encode_data(path, data).encode("utf-8")
        self._check_open()
        self._create(path, value, ephemeral_session, make_parents, sequence=False)
        return 0

    def create_sequential(self, prefix: str, data: Any = None, *,
                          ephemeral_session: int | None = None,
                          make_parents: bool = True) -> str:
        """Create ``prefix`` + ZooKeeper's counter of :data:`SEQUENCE_DIGITS` digits (unique
        under the parent and increasing, but it also counts other children created or
        deleted under the parent); returns the new path."""
        if not isinstance(prefix, str) or "/" not in prefix:
            raise InvalidArgument(f"sequential prefix {prefix!r} must be a path")
        i = prefix.rindex("/")
        parent, stem = (prefix[:i] or "/"), prefix[i + 1:]
        validate_path(parent)
        if stem in (".", ".."):
            raise InvalidArgument(f"sequential prefix {prefix!r} has a '.' or '..' stem")
        validate_path(join_path(parent, stem + "0" * SEQUENCE_DIGITS))
        value = encode_data(prefix, data).encode("utf-8")
        self._check_open()
        return self._create(join_path(parent, stem), value, ephemeral_session, make_parents,
                            sequence=True)

    def _create(self, path: str, value: bytes, ephemeral_session: int | None,
                make_parents: bool, *, sequence: bool) -> str:
        session = None if ephemeral_session is None else self._session_for_write(ephemeral_session)
        conn = self._main if session is None else session.conn
        ephemeral = session is not None
        what = f"create {path}"
        for _ in range(_MAX_RACE_ATTEMPTS):
            try:
                created, stat = self._run(conn, what, lambda: conn.client.create_async(
                    path, value, acl=self._acl(path), ephemeral=ephemeral, sequence=sequence,
                    include_data=True), write=True)
            except NoNodeError:
                if not make_parents:
                    raise NoNode(f"cannot create {path}: parent {parent_path(path)} does not "
                                 "exist") from None
                made = self._create_with_parents(conn, path, value, ephemeral, sequence)
                if made is None:
                    continue  # raced another writer: look again
                created, stat = made, None
            except (NodeExistsError, NoChildrenForEphemeralsError) as e:
                raise self._create_error(e, path) from None
            except (SessionExpiredError, ConnectionClosedError):
                raise self._session_lost(session, ephemeral_session) from None
            if session is not None:
                self._check_owner(session, created, stat)
                self._sync()
            return created
        raise MetadataStoreUnavailable(f"{what}: kept racing other writers over its parents")

    def _create_with_parents(self, conn: _Conn, path: str, value: bytes, ephemeral: bool,
                             sequence: bool) -> str | None:
        """Create the missing ancestors of ``path`` and ``path`` in one transaction; None
        if another writer changed an ancestor meanwhile (the caller retries)."""
        missing = []
        parent = parent_path(path)
        while parent != "/" and not self._exists(parent):
            missing.append(parent)
            parent = parent_path(parent)
        if not missing:
            return None
        missing.reverse()
        txn = conn.client.transaction()
        for p in missing:
            txn.create(p, b"null", acl=self._acl(p))
        txn.create(path, value, acl=self._acl(path), ephemeral=ephemeral, sequence=sequence)
        try:
            results = self._run(conn, f"create {path} with its parents", txn.commit_async,
                                write=True)
        except (SessionExpiredError, ConnectionClosedError):
            raise SessionExpired(f"cannot create {path}: its session has expired") from None
        for i, result in enumerate(results):
            if not isinstance(result, Exception) or isinstance(result, (RolledBackError,
                                                                        RuntimeInconsistency)):
                continue
            op_path = missing[i] if i < len(missing) else path
            if isinstance(result, (NodeExistsError, NoNodeError)) and i < len(missing):
                return None  # an ancestor appeared or its parent went
            raise self._create_error(result, path, op_path)
        return results[-1]

    def _acl(self, path: str) -> Any:
        """The ACL a new znode at ``path`` gets (None: the client's default)."""
        return None if self._security is None else self._security.acl_for(path)

    @staticmethod
    def _create_error(e: Exception, path: str, op_path: str | None = None) -> Exception:
        op_path = op_path or path
        if isinstance(e, NodeExistsError):
            return NodeExists(f"{path} already exists")
        if isinstance(e, NoChildrenForEphemeralsError):
            return InvalidArgument(f"cannot create {path}: {parent_path(op_path)} is ephemeral "
                                   "and ephemeral nodes cannot have children")
        if isinstance(e, NoNodeError):
            return NoNode(f"cannot create {path}: parent {parent_path(op_path)} does not exist")
        if isinstance(e, NoAuthError):
            return MetadataStoreNotAuthorized(f"cannot create {path}: ZooKeeper refused it (NOAUTH) for "
                                              f"the ACL of {parent_path(op_path)}")
        return e

    def _session_lost(self, session: _Session | None, session_id: int | None) -> Exception:
        if session is None:  # the main client: only close() ends it
            return SessionExpired("the ZooKeeper metadata store was closed")
        with self._lock:
            if not session.lost and not session.closing:
                session.lost = True
                if session.id in self._sessions:
                    self._unreported.add(session.id)
        return SessionExpired(f"session {session_id:#x} has expired")

    def _check_owner(self, session: _Session, path: str, stat: Any) -> None:
        """An ephemeral create racing its session's expiry may run on the new session kazoo
        opens before it is stopped: undo that and report the expiry."""
        owner = stat.ephemeralOwner if stat is not None else None
        if owner is None:
            st = self._read(f"stat {path}", lambda: self._main.client.exists_async(path))
            owner = st.ephemeralOwner if st is not None else session.id
        if owner == session.id:
            return
        try:
            self._run(self._main, f"delete {path}", lambda: self._main.client.delete_async(path),
                      write=True)
        except NoNodeError:
            pass
        raise self._session_lost(session, session.id)

    def get(self, path: str) -> tuple[Any, int]:
        """``(data, version)`` of a node; NoNode if absent."""
        validate_path(path)
        try:
            raw, stat = self._read(f"get {path}", lambda: self._main.client.get_async(path))
        except NoNodeError:
            raise NoNode(f"{path} does not exist") from None
        return _decode(path, raw), stat.version

    def get_many(self, paths: list[str]) -> list[tuple[Any, NodeStat] | None]:
        """``(data, stat)`` of every path (what :meth:`get` and :meth:`stat` tell), the
        requests pipelined: about one round trip for all instead of two each.  None for a
        path that does not exist.  Not atomic: each answer is of its own moment.  A
        request that meets a connection loss is sent again as :meth:`get` does (raising
        MetadataStoreUnavailable past the timeout)."""
        for path in paths:
            validate_path(path)
        self._check_open()
        results = [self._main.client.get_async(path) for path in paths]
        out: list[tuple[Any, int] | None] = []
        for path, result in zip(paths, results):
            try:
                raw, stat = result.get(timeout=self._operation_timeout_s)
            except NoNodeError:
                out.append(None)
                continue
            except (ConnectionLoss, OperationTimeoutError, KazooTimeoutError, ConnectionClosedError,
                    SessionExpiredError):
                try:
                    raw, stat = self._read(f"get {path}", lambda path=path: self._main.client.get_async(path))
                except NoNodeError:
                    out.append(None)
                    continue
            hidden = 1 if path == "/" and self._connect.chroot is None else 0  # /zookeeper
            out.append((_decode(path, raw), NodeStat(stat.version, stat.ephemeralOwner or None,
                                                     stat.numChildren - hidden)))
        return out

    def exists(self, path: str) -> bool:
        """Whether the node exists."""
        validate_path(path)
        return self._exists(path)

    def _exists(self, path: str) -> bool:
        return self._read(f"exists {path}", lambda: self._main.client.exists_async(path)) is not None

    def stat(self, path: str) -> NodeStat:
        """Version, ephemeral owner (ZooKeeper's session id) and number of children."""
        validate_path(path)
        st = self._read(f"stat {path}", lambda: self._main.client.exists_async(path))
        if st is None:
            raise NoNode(f"{path} does not exist")
        hidden = 1 if path == "/" and self._connect.chroot is None else 0  # /zookeeper
        return NodeStat(st.version, st.ephemeralOwner or None, st.numChildren - hidden)

    def set(self, path: str, data: Any, expected_version: int = ANY_VERSION) -> int:
        """Replace a node's data if its version is ``expected_version`` (-1: any); returns
        the new version.  Raises NoNode or BadVersion."""
        validate_path(path)
        check_int("expected_version", expected_version, min=ANY_VERSION)
        value = encode_data(path, data).encode("utf-8")
        try:
            stat = self._run(self._main, f"set {path}", lambda: self._main.client.set_async(
                path, value, expected_version), write=True)
        except NoNodeError:
            raise NoNode(f"{path} does not exist") from None
        except BadVersionError:
            raise BadVersion(f"{path} is not at version {expected_version}") from None
        return stat.version

    def delete(self, path: str, expected_version: int = ANY_VERSION, *,
               recursive: bool = False) -> None:
        """Delete a node if its version is ``expected_version`` (-1: any).

        A node with children raises InvalidArgument unless ``recursive``, which deletes
        the whole subtree, deepest paths first, in one transaction (``expected_version``
        applies to ``path`` only).  The root cannot be deleted.  Raises NoNode or BadVersion."""
        validate_path(path)
        check_int("expected_version", expected_version, min=ANY_VERSION)
        if path == "/":
            raise InvalidArgument("the root node cannot be deleted")
        self._check_open()
        for _ in range(_MAX_RACE_ATTEMPTS):
            try:
                if recursive and self.children(path):
                    if self._delete_tree(path, expected_version):
                        return
                    continue
                self._run(self._main, f"delete {path}", lambda: self._main.client.delete_async(
                    path, expected_version), write=True)
                return
            except NoNodeError:
                raise NoNode(f"{path} does not exist") from None
            except BadVersionError:
                raise BadVersion(f"{path} is not at version {expected_version}") from None
            except NotEmptyError:
                if recursive:
                    continue  # a child appeared since children(): look again
                try:
                    names = self.children(path)
                except NoNode:
                    names = []
                raise InvalidArgument(f"cannot delete {path}: it has {len(names)} children "
                                      f"({names[:5]}...)") from None
        raise MetadataStoreUnavailable(f"delete {path}: kept racing writers in its subtree")

    def _delete_tree(self, path: str, expected_version: int) -> bool:
        """Delete ``path`` and its subtree (check and deletes in one transaction per
        :data:`MAX_OPS_PER_TRANSACTION` nodes); False if the subtree changed meanwhile."""
        tree = sorted(self._subtree(path), reverse=True)  # descendants before ancestors
        first = True
        while tree:
            chunk, tree = tree[:MAX_OPS_PER_TRANSACTION], tree[MAX_OPS_PER_TRANSACTION:]
            txn = self._main.client.transaction()
            if first and expected_version != ANY_VERSION:
                txn.check(path, expected_version)
            for p in chunk:
                txn.delete(p)
            first = False
            results = self._run(self._main, f"delete {path} recursively", txn.commit_async,
                                write=True)
            errors = [r for r in results if isinstance(r, Exception)
                      and not isinstance(r, (RolledBackError, RuntimeInconsistency))]
            if errors:
                if isinstance(errors[0], (NotEmptyError, NoNodeError)) and self._exists(path):
                    return False
                raise errors[0]
        return True

    def _subtree(self, path: str) -> list[str]:
        out, todo = [], [path]
        while todo:
            p = todo.pop()
            try:
                names = self._read(f"children of {p}",
                                   lambda p=p: self._main.client.get_children_async(p))
            except NoNodeError:
                if p == path:
                    raise
                continue
            out.append(p)
            todo.extend(join_path(p, n) for n in names)
        return out

    def children(self, path: str) -> list[str]:
        """Names (not paths) of a node's children, sorted; NoNode if absent."""
        validate_path(path)
        try:
            names = self._read(f"children of {path}",
                               lambda: self._main.client.get_children_async(path))
        except NoNodeError:
            raise NoNode(f"{path} does not exist") from None
        if path == "/" and self._connect.chroot is None:
            names = [n for n in names if n != "zookeeper"]
        return sorted(names)

    # ------------------------------------------------------------------ watches
    def watch(self, prefix: str, watcher_id: Hashable) -> None:
        """Make ``watcher_id`` see every change at or below ``prefix`` from now on (a
        persistent recursive ZooKeeper watch).  A change is queued once even if several
        prefixes of the watcher match."""
        validate_path(prefix)
        self._check_open()
        with self._watch_lock:
            on_server = prefix in self._server_watches
        if not on_server:
            self._read(f"watch {prefix}", lambda: self._add_watch(prefix))
            with self._watch_lock:
                self._server_watches.add(prefix)
        self._watches.add(prefix, watcher_id)

    def drain(self, watcher_id: Hashable) -> list[WatchEvent]:
        """Take the events queued for ``watcher_id`` (oldest first); InvalidArgument if it
        watches nothing."""
        return self._watches.drain(watcher_id)

    def unwatch(self, watcher_id: Hashable) -> None:
        """Remove every watch of ``watcher_id`` and drop its queued events (no-op if none).
        The server keeps its watch on the prefix; events nobody watches are dropped here."""
        self._watches.remove(watcher_id)

    def _add_watch(self, prefix: str) -> Any:
        client = self._main.client
        server_path = (client.chroot or "") + prefix if prefix != "/" else (client.chroot or "/")
        result = client.handler.async_result()
        client._call(_AddWatch(server_path, _MODE_PERSISTENT_RECURSIVE), result)
        return result

    def _hook_events(self, client: KazooClient) -> None:
        connection = client._connection
        dispatch = connection._read_watch_event

        def read_watch_event(buffer: bytes, offset: int) -> None:
            watch, _ = Watch.deserialize(buffer, offset)
            kind = _EVENT_KINDS.get(watch.type)
            if kind is not None:
                self._on_event(kind, client.unchroot(watch.path))
            dispatch(buffer, offset)

        connection._read_watch_event = read_watch_event

    def _on_event(self, kind: str, path: str) -> None:
        """Queue an event (kazoo's connection thread, before any later reply is read)."""
        if self._connect.chroot is None and _covers("/zookeeper", path):
            return  # ZooKeeper's own nodes
        if self._watches.fire(WatchEvent(kind, path, 0 if kind == "created" else -1)):
            self._wake()

    def _main_state(self, state: str) -> None:
        """The main client's state listener (kazoo's connection thread: must not block)."""
        if state != KazooState.CONNECTED:
            self._main.connected.clear()
            return
        with self._watch_lock:
            prefixes = sorted(self._server_watches)
        for prefix in prefixes:  # queued ahead of any request sent after connected is set
            self._add_watch(prefix).rawlink(self._check_rewatch)
        if self._ever_connected:
            self._reconnections += 1
            log.info("reconnected to ZooKeeper at %s; re-added %d watches", self._connect,
                     len(prefixes))
        self._ever_connected = True
        self._main.connected.set()
        if prefixes or self._reconnections:
            self._wake()

    @staticmethod
    def _check_rewatch(result: Any) -> None:
        exc = result.exception
        if exc is not None and not isinstance(exc, (ConnectionLoss, SessionExpiredError,
                                                     ConnectionClosedError)):
            log.error("re-adding a ZooKeeper watch failed: %r", exc)

    def _wake(self) -> None:
        callback = self._wakeup
        if callback is not None:
            try:
                callback()
            except Exception:
                log.exception("the metadata store's wakeup callback failed")

    # ------------------------------------------------------------------ tests, debugging
    def snapshot(self) -> dict[str, tuple[Any, int, int | None]]:
        """Every node but the root (and ZooKeeper's own ``/zookeeper``): path -> (data,
        version, ephemeral owner), sorted by path.  Read node by node, not atomically."""
        out: dict[str, tuple[Any, int, int | None]] = {}
        todo = ["/"]
        while todo:
            p = todo.pop()
            try:
                names = self.children(p)
                if p != "/":
                    raw, st = self._read(f"get {p}", lambda p=p: self._main.client.get_async(p))
                    out[p] = (_decode(p, raw), st.version, st.ephemeralOwner or None)
            except (NoNode, NoNodeError):
                continue  # deleted while we walked
            todo.extend(join_path(p, n) for n in names)
        return dict(sorted(out.items()))


def _decode(path: str, raw: bytes) -> Any:
    if not raw:
        return None
    try:
        return json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise InvalidArgument(f"{path} holds {len(raw)} bytes that are not JSON text: it was "
                              "not written by pylog") from None

