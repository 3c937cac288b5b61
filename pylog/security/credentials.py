"""Where SCRAM credentials live: a cluster's metadata store, or a broker's data directory.

Both stores keep, per user and SCRAM mechanism, a :class:`~pylog.security.scram.ScramCredential`
(salt, iterations, StoredKey, ServerKey; never the password), in Kafka's form::

    {"version": 1, "config": {"SCRAM-SHA-512": "salt=...,stored_key=...,server_key=...,iterations=4096"}}

* :class:`MetadataCredentialStore`: one node per user at Kafka's path
  ``/config/users/<name>`` of a MetadataStore (ZooKeeper).  Every read goes to the
  store, so a user added through any broker is accepted by every broker at once.
* :class:`FileCredentialStore`: one JSON file ``{user: <the node's data>}`` in a single
  broker's data directory (:data:`CREDENTIALS_FILE`), written atomically (temp file,
  fsync, rename, fsync of the directory; changes serialised by an flock on
  :data:`CREDENTIALS_LOCK_FILE`) and read at each authentication, so ``pylog users`` run
  offline and a running broker agree.

Both have ``get(user)``, ``users()``, ``upsert(user, credential)`` and
``delete(user, mechanism)``; user names are checked by :func:`check_user_name`.
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
import threading
from pathlib import Path
from typing import Any, Dict, Iterator, Mapping

from pylog.errors import (BadVersion, InvalidArgument, NodeExists, NoNode, ResourceNotFound, StorageError,
                          UnacceptableCredential)
from pylog.security.scram import SCRAM_MECHANISMS, ScramCredential
from pylog.storage.checkpoint import fsync_dir, write_atomically

__all__ = ["FileCredentialStore", "MetadataCredentialStore", "CREDENTIALS_FILE", "CREDENTIALS_LOCK_FILE", "USERS_PATH",
           "check_user_name", "MAX_USER_NAME_CHARS"]

#: A single broker's credentials, in its data directory.
CREDENTIALS_FILE = "scram-credentials.json"
#: Taken (flock) around each change, so `pylog users` and a running broker do not lose
#: each other's changes.
CREDENTIALS_LOCK_FILE = "scram-credentials.lock"
#: Kafka's ZooKeeper path of user configs (SCRAM credentials among them).
USERS_PATH = "/config/users"
MAX_USER_NAME_CHARS = 255

Credentials = Dict[str, ScramCredential]


def check_user_name(name: Any) -> str:
    """A user name pylog stores: 1..255 characters, no '/', no control characters,
    not '.' or '..' (it is a ZooKeeper node name).  UnacceptableCredential otherwise."""
    if not isinstance(name, str) or not name or len(name) > MAX_USER_NAME_CHARS or "/" in name \
            or name in (".", "..") or any(ord(c) < 0x20 or ord(c) == 0x7F for c in name):
        raise UnacceptableCredential(f"user name {name!r} is not acceptable (1..{MAX_USER_NAME_CHARS} characters, "
                                     "no '/' or control characters)")
    return name


def _parse_entry(data: Any) -> Credentials:
    """The credentials of one user node's data (mechanisms pylog does not know are skipped)."""
    config = data.get("config") if isinstance(data, dict) else None
    out: Credentials = {}
    if isinstance(config, dict):
        for mech, text in config.items():
            if mech in SCRAM_MECHANISMS and isinstance(text, str):
                try:
                    out[mech] = ScramCredential.from_text(mech, text)
                except UnacceptableCredential:
                    continue
    return out


def _entry(data: Any, creds: Mapping[str, ScramCredential]) -> Dict[str, Any]:
    """A user node's data with its SCRAM credentials replaced by ``creds`` (other
    configs, such as quotas another tool wrote, are kept)."""
    config = dict(data.get("config") or {}) if isinstance(data, dict) else {}
    for mech in SCRAM_MECHANISMS:
        config.pop(mech, None)
    for mech, cred in sorted(creds.items()):
        config[mech] = cred.to_text()
    return {"version": 1, "config": config}


class FileCredentialStore:
    """A single broker's credentials in ``<data_dir>/scram-credentials.json``."""

    def __init__(self, data_dir: Any) -> None:
        self.path = Path(data_dir) / CREDENTIALS_FILE
        self._lock = threading.Lock()  # one change at a time in this process

    def _load(self) -> Dict[str, Any]:
        """The file's contents, read each time (a few hundred bytes per user, read once
        per authentication: a change by ``pylog users`` applies at the next one)."""
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return {}
        except OSError as exc:
            raise StorageError(f"cannot read {self.path}: {exc.strerror or exc}") from exc
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise StorageError(f"cannot read the SCRAM credentials in {self.path}: {exc}") from exc
        if not isinstance(data, dict):
            raise StorageError(f"{self.path} does not hold a JSON object of users")
        return data

    def _save(self, data: Dict[str, Any]) -> None:
        text = json.dumps(data, indent=1, sort_keys=True).encode("utf-8")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            write_atomically(self.path, text, mode=0o600)  # credentials: the owner's only
            fsync_dir(self.path.parent)
        except OSError as exc:
            raise StorageError(f"cannot write {self.path}: {exc.strerror or exc}") from exc

    def get(self, user: str) -> Credentials:
        """``user``'s credentials by mechanism ({} for an unknown user)."""
        with self._lock:
            return _parse_entry(self._load().get(user))

    def users(self) -> Dict[str, Credentials]:
        with self._lock:
            return {u: c for u, c in ((u, _parse_entry(d)) for u, d in sorted(self._load().items())) if c}

    @contextlib.contextmanager
    def _changing(self) -> Iterator[None]:
        """One change at a time: in this process (a lock) and across processes (flock)."""
        with self._lock:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                fd = os.open(self.path.with_name(CREDENTIALS_LOCK_FILE), os.O_RDWR | os.O_CREAT, 0o600)
            except OSError as exc:
                raise StorageError(f"cannot lock {self.path}: {exc.strerror or exc}") from exc
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                yield
            finally:
                os.close(fd)  # releases the flock

    def upsert(self, user: str, cred: ScramCredential) -> None:
        check_user_name(user)
        with self._changing():
            data = dict(self._load())
            creds = _parse_entry(data.get(user))
            creds[cred.mechanism] = cred
            data[user] = _entry(data.get(user), creds)
            self._save(data)

    def delete(self, user: str, mechanism: str) -> None:
        """Remove ``user``'s ``mechanism`` credential; ResourceNotFound if it has none."""
        with self._changing():
            data = dict(self._load())
            creds = _parse_entry(data.get(user))
            if mechanism not in creds:
                raise ResourceNotFound(f"user {user!r} has no {mechanism} credential")
            del creds[mechanism]
            if creds or (isinstance(data.get(user), dict) and len(data[user].get("config") or {}) > 1):
                data[user] = _entry(data.get(user), creds)
            else:
                data.pop(user, None)
            self._save(data)


class MetadataCredentialStore:
    """A cluster's credentials at ``/config/users/<name>`` of a MetadataStore (compare-
    and-set updates: concurrent changes through several brokers are not lost)."""

    def __init__(self, store: Any) -> None:
        self.store = store

    @staticmethod
    def path_of(user: str) -> str:
        return f"{USERS_PATH}/{user}"

    def get(self, user: str) -> Credentials:
        try:
            path = self.path_of(check_user_name(user))
        except UnacceptableCredential:
            return {}
        try:
            data, _ = self.store.get(path)
        except NoNode:
            return {}
        except InvalidArgument:  # a name ZooKeeper cannot hold: nobody
            return {}
        return _parse_entry(data)

    def users(self) -> Dict[str, Credentials]:
        try:
            names = self.store.children(USERS_PATH)
        except NoNode:
            return {}
        out = {}
        for name in sorted(names):
            creds = self.get(name)
            if creds:
                out[name] = creds
        return out

    def upsert(self, user: str, cred: ScramCredential) -> None:
        path = self.path_of(check_user_name(user))
        for _ in range(20):
            try:
                data, version = self.store.get(path)
            except NoNode:
                try:
                    self.store.create(path, _entry(None, {cred.mechanism: cred}))
                    return
                except NodeExists:
                    continue
            creds = _parse_entry(data)
            creds[cred.mechanism] = cred
            try:
                self.store.set(path, _entry(data, creds), version)
                return
            except (NoNode, BadVersion):
                continue
        raise StorageError(f"could not update {path}: it kept changing")

    def delete(self, user: str, mechanism: str) -> None:
        try:
            path = self.path_of(check_user_name(user))
        except UnacceptableCredential:
            raise ResourceNotFound(f"user {user!r} has no {mechanism} credential") from None
        for _ in range(20):
            try:
                data, version = self.store.get(path)
            except NoNode:
                raise ResourceNotFound(f"user {user!r} has no {mechanism} credential") from None
            creds = _parse_entry(data)
            if mechanism not in creds:
                raise ResourceNotFound(f"user {user!r} has no {mechanism} credential")
            del creds[mechanism]
            entry = _entry(data, creds)
            try:
                if entry["config"]:
                    self.store.set(path, entry, version)
                else:
                    self.store.delete(path, version)
                return
            except (NoNode, BadVersion):
                continue
        raise StorageError(f"could not update {path}: it kept changing")

