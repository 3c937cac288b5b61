"""Where the ACLs live: a cluster's metadata store, or a single broker's data directory.

Both stores have one contract: :meth:`load` returns every ACL, :meth:`add` and
:meth:`remove` change them (read-modify-write, safe against a concurrent writer), and
:meth:`changed` says cheaply whether another writer changed them since the last load,
so a broker re-reads them within its poll interval (well under a second).

**Metadata store** (``pylog serve --zookeeper``): Kafka's ZooKeeper layout, one node per
resource pattern holding that pattern's entries::

    /kafka-acl/<ResourceType>/<name>                     LITERAL patterns
    /kafka-acl-extended/prefixed/<ResourceType>/<name>   PREFIXED patterns
    data: {"version": 1, "acls": [{"principal": "User:alice", "permissionType": "Allow",
                                   "operation": "Read", "host": "*"}, ...]}

A name is percent-encoded into its path component (a group name may hold ``/``; Kafka
writes names raw), so ``*`` is ``%2A``.  Each node is updated by compare-and-set on its
version.  Every broker keeps a persistent recursive watch on both roots: a change made
through any broker (or any ZooKeeper client) is an event the others drain at their next
poll, then they re-read the ACLs — no separate change-notification node
(Kafka's ``/kafka-acl-changes``) is needed with persistent watches.

**Data directory** (a single broker): ``acls.json`` in the broker's data directory,
``{"version": 1, "acls": [binding, ...]}`` with Kafka's names (see
:func:`~pylog.security.acl.binding_json`), replaced atomically (temp file, fsync,
rename, fsync of the directory) under an advisory lock (``acls.json.lock``), so
``pylog acls --data-dir`` can write it before the broker starts or while it runs; the
broker notices a new file by its inode, size and modification time.
"""
from __future__ import annotations

import fcntl
import json
import os
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple
from urllib.parse import quote, unquote

from pylog.errors import BadVersion, InvalidArgument, NodeExists, NoNode, StorageError
from pylog.security.acl import (AclBinding, AclBindingFilter, AclOperation, AclPermissionType, PatternType,
                                ResourceType, binding_json, bindings_of)
from pylog.storage.checkpoint import fsync_dir, write_atomically

__all__ = ["FileAclStore", "MetadataAclStore", "ACL_FILE", "LITERAL_ROOT", "PREFIXED_ROOT"]

ACL_FILE = "acls.json"
LITERAL_ROOT = "/kafka-acl"
PREFIXED_ROOT = "/kafka-acl-extended/prefixed"
#: Compare-and-set attempts on one node before giving up (another writer keeps winning).
_MAX_CAS_ATTEMPTS = 50


def _remove_matching(current: List[AclBinding], filters: Sequence[AclBindingFilter]
                     ) -> Tuple[List[AclBinding], List[List[AclBinding]]]:
    """(what is left, what each filter removed)."""
    removed: List[List[AclBinding]] = [[b for b in current if f.matches(b)] for f in filters]
    gone = {b for r in removed for b in r}
    return [b for b in current if b not in gone], removed


class FileAclStore:
    """The ACLs of a single broker, in ``<data_dir>/acls.json`` (see the module docstring)."""

    def __init__(self, data_dir: "os.PathLike[str] | str") -> None:
        self.dir = Path(data_dir)
        self.path = self.dir / ACL_FILE
        self._seen: Optional[Tuple[int, int, int]] = None

    def _signature(self) -> Optional[Tuple[int, int, int]]:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return None
        return (st.st_ino, st.st_size, st.st_mtime_ns)

    def changed(self) -> bool:
        return self._signature() != self._seen

    def load(self) -> List[AclBinding]:
        sig = self._signature()
        out = self._read()
        self._seen = sig
        return out

    def _read(self) -> List[AclBinding]:
        try:
            text = self.path.read_text("utf-8")
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise StorageError(f"cannot read {self.path}: {exc}") from exc
        except UnicodeDecodeError as exc:
            raise StorageError(f"{self.path} is not an ACL file: {exc}") from None
        try:
            doc = json.loads(text)
            if not isinstance(doc, dict) or doc.get("version") != 1 or not isinstance(doc.get("acls"), list):
                raise ValueError("not {\"version\": 1, \"acls\": [...]}")
            return bindings_of(doc["acls"])
        except (ValueError, KeyError, TypeError, AttributeError, InvalidArgument) as exc:
            raise StorageError(f"{self.path} is not an ACL file: {exc}") from None

    def _write(self, bindings: List[AclBinding]) -> None:
        doc = {"version": 1, "acls": [binding_json(b) for b in sorted(set(bindings))]}
        data = (json.dumps(doc, indent=1) + "\n").encode("utf-8")
        try:
            write_atomically(self.path, data, mode=0o600)
            fsync_dir(self.dir)
        except OSError as exc:
            raise StorageError(f"cannot write {self.path}: {exc}") from exc

    def _locked(self) -> int:
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.dir / (ACL_FILE + ".lock"), os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise StorageError(f"cannot lock the ACLs in {self.dir}: {exc}") from exc
        fcntl.flock(fd, fcntl.LOCK_EX)
        return fd

    def add(self, bindings: Sequence[AclBinding]) -> None:
        fd = self._locked()
        try:
            current = self._read()
            self._write(current + [b for b in bindings if b not in set(current)])
        finally:
            os.close(fd)

    def remove(self, filters: Sequence[AclBindingFilter]) -> List[List[AclBinding]]:
        """Remove the ACLs each filter matches; what each removed."""
        fd = self._locked()
        try:
            left, removed = _remove_matching(self._read(), filters)
            if any(removed):
                self._write(left)
            return removed
        finally:
            os.close(fd)

    def close(self) -> None:
        pass


def _component(name: str) -> str:
    c = quote(name, safe="")
    return c.replace(".", "%2E") if c in (".", "..") else c


class MetadataAclStore:
    """The ACLs of a cluster, in its metadata store (see the module docstring).
    ``store`` is a MetadataStore (ZooKeeper's or the in-memory one)."""

    def __init__(self, store: Any) -> None:
        self.store = store
        self.watcher = f"acls-{id(self):x}"
        for root in (LITERAL_ROOT, PREFIXED_ROOT):
            self._ensure(root)
            store.watch(root, self.watcher)

    def _ensure(self, path: str) -> None:
        parts = path.strip("/").split("/")
        for i in range(1, len(parts) + 1):
            p = "/" + "/".join(parts[:i])
            if not self.store.exists(p):
                try:
                    self.store.create(p, None)
                except NodeExists:
                    pass

    @staticmethod
    def path_of(rtype: ResourceType, pattern: PatternType, name: str) -> str:
        root = LITERAL_ROOT if pattern == PatternType.LITERAL else PREFIXED_ROOT
        return f"{root}/{rtype.title}/{_component(name)}"

    def changed(self) -> bool:
        return bool(self.store.drain(self.watcher))

    def load(self) -> List[AclBinding]:
        out: List[AclBinding] = []
        for root, pattern in ((LITERAL_ROOT, PatternType.LITERAL), (PREFIXED_ROOT, PatternType.PREFIXED)):
            for tname in self._children(root):
                try:
                    rtype = ResourceType.parse(tname)
                except InvalidArgument:
                    continue  # a resource type pylog does not know (Kafka's DelegationToken ...)
                for comp in self._children(f"{root}/{tname}"):
                    try:
                        data, _ = self.store.get(f"{root}/{tname}/{comp}")
                    except NoNode:
                        continue
                    out.extend(self._entries(rtype, pattern, unquote(comp), data))
        return out

    def _children(self, path: str) -> List[str]:
        try:
            return list(self.store.children(path))
        except NoNode:
            return []

    @staticmethod
    def _entries(rtype: ResourceType, pattern: PatternType, name: str, data: Any) -> List[AclBinding]:
        out: List[AclBinding] = []
        acls = data.get("acls") if isinstance(data, dict) else None
        for e in acls if isinstance(acls, list) else []:
            try:
                out.append(AclBinding.create(rtype, name, pattern, str(e["principal"]), str(e["host"]),
                                             AclOperation.parse(str(e["operation"])),
                                             AclPermissionType.parse(str(e["permissionType"]))))
            except (KeyError, TypeError, InvalidArgument):
                continue  # an entry this version cannot use: skip it, keep the others
        return out

    @staticmethod
    def _data(entries: List[AclBinding]) -> Dict[str, Any]:
        return {"version": 1, "acls": [{"principal": b.principal, "permissionType": b.permission.title,
                                        "operation": b.operation.title, "host": b.host}
                                       for b in sorted(set(entries))]}

    def _update(self, rtype: ResourceType, pattern: PatternType, name: str, change: Any) -> None:
        """Compare-and-set ``change(current entries) -> new entries`` on one node."""
        path = self.path_of(rtype, pattern, name)
        for _ in range(_MAX_CAS_ATTEMPTS):
            try:
                data, version = self.store.get(path)
            except NoNode:
                data, version = None, None
            current = self._entries(rtype, pattern, name, data)
            new = change(current)
            if set(new) == set(current):
                return
            try:
                if version is None:
                    self._ensure(path.rsplit("/", 1)[0])
                    self.store.create(path, self._data(new))
                elif new:
                    self.store.set(path, self._data(new), version)
                else:
                    self.store.delete(path, version)
                return
            except (BadVersion, NodeExists, NoNode):
                continue  # another writer was first: read again
        raise StorageError(f"{path}: gave up after {_MAX_CAS_ATTEMPTS} concurrent updates")

    def add(self, bindings: Sequence[AclBinding]) -> None:
        groups: Dict[Tuple[ResourceType, PatternType, str], List[AclBinding]] = {}
        for b in bindings:
            groups.setdefault((b.resource_type, b.pattern_type, b.name), []).append(b)
        for (rtype, pattern, name), new in groups.items():
            self._update(rtype, pattern, name, lambda cur, new=new: cur + [b for b in new if b not in cur])

    def remove(self, filters: Sequence[AclBindingFilter]) -> List[List[AclBinding]]:
        _, removed = _remove_matching(self.load(), filters)
        gone: Dict[Tuple[ResourceType, PatternType, str], set] = {}
        for r in removed:
            for b in r:
                gone.setdefault((b.resource_type, b.pattern_type, b.name), set()).add(b)
        for (rtype, pattern, name), bs in gone.items():
            self._update(rtype, pattern, name, lambda cur, bs=bs: [b for b in cur if b not in bs])
        return removed

    def close(self) -> None:
        try:
            self.store.unwatch(self.watcher)
        except Exception:  # a closed store: nothing to undo
            pass
