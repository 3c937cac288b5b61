"""The cluster's MetadataStore: versioned compare-and-set nodes, sessions, watches.

This module owns the *contract* every MetadataStore keeps (the in-memory one here, the
ZooKeeper one later) and :class:`InMemoryMetadataStore`, which implements it for embedded
clusters and the deterministic simulator.  The model is ZooKeeper's:

- A tree of **nodes** named by absolute paths (``"/brokers/ids/1"``).  The root ``"/"``
  always exists.  A path is ``/`` followed by non-empty components separated by ``/``;
  no trailing ``/``, no ``.`` or ``..`` component, no NUL.
- Each node holds **data**: any JSON value.  It is stored as JSON text (what ZooKeeper
  would hold as bytes), so :meth:`get` always returns a fresh copy, tuples come back as
  lists and non-string dict keys as strings.  At most :data:`MAX_NODE_DATA_BYTES` of it.
- Each node has a **version**: 0 when created, +1 per :meth:`~InMemoryMetadataStore.set`.
  ``set`` and ``delete`` take ``expected_version`` (-1 = any) and raise
  :class:`~pylog.errors.BadVersion` when it differs: compare-and-set.
- **Sessions** are created with a timeout; a session not heartbeaten for longer than
  its timeout (``now - last_heartbeat > timeout_ms``) expires at the next
  ``tick(now)`` or at its own ``heartbeat(now)``, whichever comes first.  An expired or
  closed session's **ephemeral** nodes are deleted.  Ephemeral nodes cannot have children.
- **Watches** are persistent and sans-I/O: ``watch(prefix, watcher_id)`` makes every
  create, set and delete at or below ``prefix`` (component-wise: ``/brokers`` covers
  ``/brokers/ids/1`` but not ``/brokersX``) append a :class:`WatchEvent` to that watcher's
  queue, in the order the changes happened; ``drain(watcher_id)`` takes them.

Errors: :class:`~pylog.errors.NoNode`, :class:`~pylog.errors.NodeExists`,
:class:`~pylog.errors.BadVersion`, :class:`~pylog.errors.SessionExpired`; a bad path,
non-JSON data, deleting a node that has children (without ``recursive=True``), or a child
under an ephemeral node raise :class:`~pylog.errors.InvalidArgument`.  A failed call
changes nothing.

The store reads no clock (every time-dependent call takes ``now`` in ms), does no I/O and
starts no thread.  It holds a lock so a threaded driver may share one instance.
"""
from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from typing import Any, Dict, Hashable, List, Optional, Set, Tuple

from pylog.errors import BadVersion, InvalidArgument, NodeExists, NoNode, SessionExpired
from pylog.util import check_int

__all__ = [
    "InMemoryMetadataStore",
    "WatchQueues",
    "WatchEvent",
    "NodeStat",
    "ANY_VERSION",
    "MAX_NODE_DATA_BYTES",
    "SEQUENCE_DIGITS",
    "validate_path",
    "parent_path",
    "join_path",
    "encode_data",
]

#: ``expected_version`` meaning "whatever the version is".
ANY_VERSION = -1
#: Largest node data, as JSON text in UTF-8 (ZooKeeper's default jute.maxbuffer, 1 MiB).
MAX_NODE_DATA_BYTES = 1 << 20
#: Width of the counter :meth:`InMemoryMetadataStore.create_sequential` appends (as ZooKeeper).
SEQUENCE_DIGITS = 10

_EVENT_KINDS = ("created", "changed", "deleted")


@dataclass(frozen=True)
class WatchEvent:
    """One change a watcher saw.

    ``version`` is the node's version after the change ("created": 0, "changed": the new
    version) or, for "deleted", the version the node had when it was deleted.
    """

    kind: str  #: "created" | "changed" | "deleted"
    path: str
    version: int


@dataclass(frozen=True)
class NodeStat:
    """What :meth:`InMemoryMetadataStore.stat` tells about a node."""

    version: int
    ephemeral_owner: Optional[int]  #: the owning session id, None for a persistent node
    num_children: int


class _Node:
    __slots__ = ("data_json", "version", "owner", "children", "next_sequence")

    def __init__(self, data_json: str, owner: Optional[int]) -> None:
        self.data_json = data_json
        self.version = 0
        self.owner = owner  # session id of an ephemeral node
        self.children: Set[str] = set()
        self.next_sequence = 0  # counter of create_sequential under this node


class _Session:
    __slots__ = ("timeout_ms", "last_heartbeat_ms", "ephemerals")

    def __init__(self, timeout_ms: int, now: int) -> None:
        self.timeout_ms = timeout_ms
        self.last_heartbeat_ms = now
        self.ephemerals: Set[str] = set()

    def expired_at(self, now: int) -> bool:
        return now - self.last_heartbeat_ms > self.timeout_ms


def validate_path(path: Any) -> str:
    """Return ``path`` if it is a valid absolute node path, else raise InvalidArgument."""
    if not isinstance(path, str):
        raise InvalidArgument(f"a metadata path must be a string, got {type(path).__name__}")
    if path == "/":
        return path
    if not path.startswith("/"):
        raise InvalidArgument(f"metadata path {path!r} must start with '/'")
    if path.endswith("/"):
        raise InvalidArgument(f"metadata path {path!r} must not end with '/'")
    if "\x00" in path:
        raise InvalidArgument(f"metadata path {path!r} contains a NUL character")
    for part in path[1:].split("/"):
        if part in ("", ".", ".."):
            raise InvalidArgument(f"metadata path {path!r} has an empty, '.' or '..' component")
    return path


def parent_path(path: str) -> str:
    """The parent of a valid non-root path (``"/a/b"`` -> ``"/a"``, ``"/a"`` -> ``"/"``)."""
    i = path.rindex("/")
    return path[:i] if i > 0 else "/"


def join_path(parent: str, name: str) -> str:
    """``parent`` + ``/`` + ``name`` (the root has no trailing slash doubled)."""
    return ("" if parent == "/" else parent) + "/" + name


def _under(path: str, prefix: str) -> bool:
    return prefix == "/" or path == prefix or path.startswith(prefix + "/")


def encode_data(path: str, data: Any) -> str:
    """``data`` as compact JSON text, as every store holds it; InvalidArgument if it is not
    JSON-serialisable or larger than :data:`MAX_NODE_DATA_BYTES` in UTF-8."""
    try:
        text = json.dumps(data, allow_nan=False, separators=(",", ":"))
    except (TypeError, ValueError) as e:
        raise InvalidArgument(f"data for {path} is not JSON-serialisable: {e}") from None
    size = len(text.encode("utf-8"))
    if size > MAX_NODE_DATA_BYTES:
        raise InvalidArgument(f"data for {path} is {size} bytes as JSON; the limit is "
                              f"{MAX_NODE_DATA_BYTES}")
    return text


class WatchQueues:
    """The watch half of the contract, for every store: which prefixes each watcher
    watches and the events queued for it.  Thread-safe (its own lock); :meth:`fire`
    keeps the order in which it is called."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._prefixes: Dict[Hashable, Set[str]] = {}
        self._queues: Dict[Hashable, List[WatchEvent]] = {}

    def add(self, prefix: str, watcher_id: Hashable) -> None:
        with self._lock:
            self._prefixes.setdefault(watcher_id, set()).add(prefix)
            self._queues.setdefault(watcher_id, [])

    def drain(self, watcher_id: Hashable) -> List[WatchEvent]:
        """Take the events queued for ``watcher_id`` (oldest first); InvalidArgument if it
        watches nothing."""
        with self._lock:
            queue = self._queues.get(watcher_id)
            if queue is None:
                raise InvalidArgument(f"no watcher {watcher_id!r}")
            self._queues[watcher_id] = []
            return queue

    def remove(self, watcher_id: Hashable) -> None:
        with self._lock:
            self._prefixes.pop(watcher_id, None)
            self._queues.pop(watcher_id, None)

    def fire(self, event: WatchEvent) -> bool:
        """Queue ``event`` once for every watcher of a prefix at or above its path;
        returns whether anyone got it."""
        queued = False
        with self._lock:
            for wid, prefixes in self._prefixes.items():
                if any(_under(event.path, p) for p in prefixes):
                    self._queues[wid].append(event)
                    queued = True
        return queued


class InMemoryMetadataStore:
    """The MetadataStore contract (see the module docstring), held in process memory."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._nodes: Dict[str, _Node] = {"/": _Node("null", None)}
        self._sessions: Dict[int, _Session] = {}
        self._next_session_id = 1
        self._watches = WatchQueues()

    # ------------------------------------------------------------------ sessions
    def create_session(self, timeout_ms: int, now: int) -> int:
        """Open a session that expires when not heartbeaten for more than ``timeout_ms``."""
        check_int("timeout_ms", timeout_ms, min=1)
        check_int("now", now, min=0)
        with self._lock:
            sid = self._next_session_id
            self._next_session_id += 1
            self._sessions[sid] = _Session(timeout_ms, now)
            return sid

    def heartbeat(self, session_id: int, now: int) -> None:
        """Keep a session alive.  Raises SessionExpired if it has expired (by ``now``, even
        if no tick noticed yet — its ephemeral nodes are then deleted here) or was closed."""
        check_int("now", now, min=0)
        with self._lock:
            s = self._live_session(session_id)
            if s.expired_at(now):
                self._end_session(session_id)
                raise SessionExpired(f"session {session_id} expired: last heartbeat at "
                                     f"{s.last_heartbeat_ms} ms, timeout {s.timeout_ms} ms, now {now} ms")
            s.last_heartbeat_ms = max(s.last_heartbeat_ms, now)

    def close_session(self, session_id: int, now: int) -> None:
        """End a session now, deleting its ephemeral nodes.  Closing a session that already
        expired or was closed does nothing; an id never handed out raises InvalidArgument."""
        check_int("now", now, min=0)
        with self._lock:
            self._check_session_id(session_id)
            if session_id in self._sessions:
                self._end_session(session_id)

    def session_alive(self, session_id: int) -> bool:
        """Whether the session exists and has not been expired by a tick/heartbeat or closed."""
        with self._lock:
            return session_id in self._sessions

    def tick(self, now: int) -> List[int]:
        """Expire every session whose last heartbeat is more than its timeout before ``now``
        (in session-id order); returns the ids expired."""
        check_int("now", now, min=0)
        with self._lock:
            expired = [sid for sid in sorted(self._sessions) if self._sessions[sid].expired_at(now)]
            for sid in expired:
                self._end_session(sid)
            return expired

    def _check_session_id(self, session_id: Any) -> None:
        if isinstance(session_id, bool) or not isinstance(session_id, int) \
                or not 1 <= session_id < self._next_session_id:
            raise InvalidArgument(f"unknown session id {session_id!r}")

    def _live_session(self, session_id: Any) -> _Session:
        self._check_session_id(session_id)
        s = self._sessions.get(session_id)
        if s is None:
            raise SessionExpired(f"session {session_id} has expired or was closed")
        return s

    def _end_session(self, session_id: int) -> None:
        s = self._sessions.pop(session_id)
        for path in sorted(s.ephemerals):
            self._remove(path)

    # ------------------------------------------------------------------ nodes
    def create(self, path: str, data: Any = None, *, ephemeral_session: Optional[int] = None,
               make_parents: bool = True) -> int:
        """Create a node holding ``data``; returns its version (0).

        Missing parents are created as persistent nodes holding ``null`` when
        ``make_parents`` (each fires a "created" event), else NoNode.  Raises NodeExists if
        ``path`` exists, SessionExpired if ``ephemeral_session`` is not live, and
        InvalidArgument if a parent is ephemeral.
        """
        validate_path(path)
        with self._lock:
            self._create(path, data, ephemeral_session, make_parents)
            return 0

    def create_sequential(self, prefix: str, data: Any = None, *,
                          ephemeral_session: Optional[int] = None,
                          make_parents: bool = True) -> str:
        """Create ``prefix`` + a counter of :data:`SEQUENCE_DIGITS` digits, unique under the
        parent and increasing (as ZooKeeper's SEQUENTIAL flag); returns the new path.

        ``prefix`` is a path whose last component may be empty (``"/loss_ledger/"``) or a
        name stem (``"/loss_ledger/entry-"``).
        """
        if not isinstance(prefix, str) or "/" not in prefix:
            raise InvalidArgument(f"sequential prefix {prefix!r} must be a path")
        i = prefix.rindex("/")
        parent, stem = (prefix[:i] or "/"), prefix[i + 1:]
        validate_path(parent)
        if stem in (".", ".."):
            raise InvalidArgument(f"sequential prefix {prefix!r} has a '.' or '..' stem")
        with self._lock:
            parent_node = self._nodes.get(parent)
            seq = parent_node.next_sequence if parent_node is not None else 0
            path = join_path(parent, f"{stem}{seq:0{SEQUENCE_DIGITS}d}")
            self._create(path, data, ephemeral_session, make_parents)
            self._nodes[parent].next_sequence = seq + 1
            return path

    def _create(self, path: str, data: Any, ephemeral_session: Optional[int],
                make_parents: bool) -> None:
        if path == "/" or path in self._nodes:
            raise NodeExists(f"{path} already exists")
        text = encode_data(path, data)
        if ephemeral_session is not None:
            self._live_session(ephemeral_session)
        missing: List[str] = []
        parent = parent_path(path)
        while parent not in self._nodes:
            missing.append(parent)
            parent = parent_path(parent)
        if missing and not make_parents:
            raise NoNode(f"cannot create {path}: parent {missing[0]} does not exist")
        if self._nodes[parent].owner is not None:
            raise InvalidArgument(f"cannot create {path}: {parent} is ephemeral and ephemeral "
                                  "nodes cannot have children")
        for p in reversed(missing):
            self._add(p, "null", None)
        self._add(path, text, ephemeral_session)

    def _add(self, path: str, text: str, owner: Optional[int]) -> None:
        self._nodes[path] = _Node(text, owner)
        parent = self._nodes[parent_path(path)]
        name = path.rsplit("/", 1)[1]
        parent.children.add(name)
        tail = name[-SEQUENCE_DIGITS:]
        if len(tail) == SEQUENCE_DIGITS and tail.isdigit():
            # A node named like a sequential one (a store restored from a copy, as
            # LocalCluster's): the counter goes past it, so create_sequential never
            # hands out a name that exists
            parent.next_sequence = max(parent.next_sequence, int(tail) + 1)
        if owner is not None:
            self._sessions[owner].ephemerals.add(path)
        self._fire("created", path, 0)

    def get(self, path: str) -> Tuple[Any, int]:
        """``(data, version)`` of a node (a fresh copy of the data); NoNode if absent."""
        validate_path(path)
        with self._lock:
            node = self._node(path)
            return json.loads(node.data_json), node.version

    def exists(self, path: str) -> bool:
        """Whether the node exists."""
        validate_path(path)
        with self._lock:
            return path in self._nodes

    def stat(self, path: str) -> NodeStat:
        """Version, ephemeral owner and number of children of a node; NoNode if absent."""
        validate_path(path)
        with self._lock:
            node = self._node(path)
            return NodeStat(node.version, node.owner, len(node.children))

    def set(self, path: str, data: Any, expected_version: int = ANY_VERSION) -> int:
        """Replace a node's data if its version is ``expected_version`` (-1: any); returns
        the new version.  Raises NoNode or BadVersion."""
        validate_path(path)
        check_int("expected_version", expected_version, min=ANY_VERSION)
        with self._lock:
            node = self._node(path)
            text = encode_data(path, data)
            self._check_version(path, node, expected_version)
            node.data_json = text
            node.version += 1
            self._fire("changed", path, node.version)
            return node.version

    def delete(self, path: str, expected_version: int = ANY_VERSION, *,
               recursive: bool = False) -> None:
        """Delete a node if its version is ``expected_version`` (-1: any).

        A node with children raises InvalidArgument unless ``recursive``, which deletes
        the whole subtree, deepest paths first (``expected_version`` applies to ``path``
        only).  The root cannot be deleted.  Raises NoNode or BadVersion.
        """
        validate_path(path)
        check_int("expected_version", expected_version, min=ANY_VERSION)
        if path == "/":
            raise InvalidArgument("the root node cannot be deleted")
        with self._lock:
            node = self._node(path)
            self._check_version(path, node, expected_version)
            if node.children and not recursive:
                raise InvalidArgument(f"cannot delete {path}: it has {len(node.children)} "
                                      f"children ({sorted(node.children)[:5]}...)")
            subtree = [p for p in self._nodes if _under(p, path)]
            for p in sorted(subtree, reverse=True):
                self._remove(p)

    def children(self, path: str) -> List[str]:
        """Names (not paths) of a node's children, sorted; NoNode if absent."""
        validate_path(path)
        with self._lock:
            return sorted(self._node(path).children)

    def _node(self, path: str) -> _Node:
        node = self._nodes.get(path)
        if node is None:
            raise NoNode(f"{path} does not exist")
        return node

    @staticmethod
    def _check_version(path: str, node: _Node, expected_version: int) -> None:
        if expected_version != ANY_VERSION and expected_version != node.version:
            raise BadVersion(f"{path} is at version {node.version}, not {expected_version}")

    def _remove(self, path: str) -> None:
        node = self._nodes.pop(path)
        assert not node.children, f"removing {path} before its children"
        self._nodes[parent_path(path)].children.discard(path.rsplit("/", 1)[1])
        if node.owner is not None:
            session = self._sessions.get(node.owner)
            if session is not None:
                session.ephemerals.discard(path)
        self._fire("deleted", path, node.version)

    # ------------------------------------------------------------------ watches
    def watch(self, prefix: str, watcher_id: Hashable) -> None:
        """Make ``watcher_id`` see every change at or below ``prefix`` from now on.  A
        watcher may watch several prefixes; a change is queued once even if several match."""
        validate_path(prefix)
        self._watches.add(prefix, watcher_id)

    def drain(self, watcher_id: Hashable) -> List[WatchEvent]:
        """Take the events queued for ``watcher_id`` (oldest first); InvalidArgument if it
        watches nothing."""
        return self._watches.drain(watcher_id)

    def unwatch(self, watcher_id: Hashable) -> None:
        """Remove every watch of ``watcher_id`` and drop its queued events (no-op if none)."""
        self._watches.remove(watcher_id)

    def _fire(self, kind: str, path: str, version: int) -> None:
        assert kind in _EVENT_KINDS
        self._watches.fire(WatchEvent(kind, path, version))

    # ------------------------------------------------------------------ tests, debugging
    def snapshot(self) -> Dict[str, Tuple[Any, int, Optional[int]]]:
        """Every node but the root: path -> (data, version, ephemeral owner), sorted by path."""
        with self._lock:
            return {p: (json.loads(n.data_json), n.version, n.owner)
                    for p, n in sorted(self._nodes.items()) if p != "/"}
