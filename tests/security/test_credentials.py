"""pylog.security.credentials: the file store of a single broker and the metadata-store
one of a cluster keep salted credentials (never the password), in Kafka's form."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from pylog.cluster.metadata import InMemoryMetadataStore
from pylog.errors import ResourceNotFound, UnacceptableCredential
from pylog.security.credentials import (CREDENTIALS_FILE, CREDENTIALS_LOCK_FILE, FileCredentialStore,
                                        MetadataCredentialStore)
from pylog.security.scram import new_credential
from tests.server.serverproc import server_env


def _stores(tmp_path):
    return [FileCredentialStore(tmp_path), MetadataCredentialStore(InMemoryMetadataStore())]


@pytest.mark.parametrize("kind", [0, 1], ids=["file", "metadata"])
def test_upsert_get_list_delete(tmp_path, kind):
    store = _stores(tmp_path)[kind]
    assert store.get("alice") == {} and store.users() == {}
    c512 = new_credential("SCRAM-SHA-512", "s3cret-pw", 4096)
    c256 = new_credential("SCRAM-SHA-256", "s3cret-pw", 8192)
    store.upsert("alice", c512)
    store.upsert("alice", c256)
    store.upsert("bob", new_credential("SCRAM-SHA-256", "other", 4096))
    assert store.get("alice") == {"SCRAM-SHA-512": c512, "SCRAM-SHA-256": c256}
    assert sorted(store.users()) == ["alice", "bob"]
    newer = new_credential("SCRAM-SHA-512", "changed", 4096)
    store.upsert("alice", newer)
    assert store.get("alice")["SCRAM-SHA-512"] == newer
    store.delete("alice", "SCRAM-SHA-512")
    assert list(store.get("alice")) == ["SCRAM-SHA-256"]
    store.delete("alice", "SCRAM-SHA-256")
    assert store.get("alice") == {} and list(store.users()) == ["bob"]
    with pytest.raises(ResourceNotFound):
        store.delete("alice", "SCRAM-SHA-256")
    for bad in ("", "a/b", "x\n", ".."):
        with pytest.raises(UnacceptableCredential):
            store.upsert(bad, newer)
        assert store.get(bad) == {}


def test_metadata_store_uses_kafkas_path_and_form():
    md = InMemoryMetadataStore()
    store = MetadataCredentialStore(md)
    cred = new_credential("SCRAM-SHA-256", "pw-not-stored", 4096)
    store.upsert("alice", cred)
    data, _ = md.get("/config/users/alice")
    assert data == {"version": 1, "config": {"SCRAM-SHA-256": cred.to_text()}}
    assert "pw-not-stored" not in json.dumps(data)
    # another tool's user config (a quota) is kept when the credential changes or goes
    md.set("/config/users/alice", {"version": 1, "config": dict(data["config"], producer_byte_rate="1024")})
    store.delete("alice", "SCRAM-SHA-256")
    assert md.get("/config/users/alice")[0] == {"version": 1, "config": {"producer_byte_rate": "1024"}}
    assert store.get("alice") == {} and store.users() == {}
    # a second store over the same metadata (another broker) sees a change at once
    store.upsert("bob", cred)
    assert MetadataCredentialStore(md).get("bob") == {"SCRAM-SHA-256": cred}
    store.delete("bob", "SCRAM-SHA-256")
    assert not md.exists("/config/users/bob")


def test_file_store_is_written_atomically_and_reread_when_changed(tmp_path):
    a = FileCredentialStore(tmp_path)
    b = FileCredentialStore(tmp_path)  # a running broker's view
    assert b.get("alice") == {}
    cred = new_credential("SCRAM-SHA-512", "pw-not-stored", 4096)
    a.upsert("alice", cred)
    assert b.get("alice") == {"SCRAM-SHA-512": cred}
    path = tmp_path / CREDENTIALS_FILE
    assert sorted(os.listdir(tmp_path)) == [CREDENTIALS_FILE, CREDENTIALS_LOCK_FILE]  # no temp file left
    assert "pw-not-stored" not in path.read_text()
    assert path.stat().st_mode & 0o077 == 0
    a.delete("alice", "SCRAM-SHA-512")
    assert b.get("alice") == {} and json.loads(path.read_text()) == {}


def test_file_store_changes_from_several_processes_are_all_kept(tmp_path):
    # what `pylog users add` run while a broker changes credentials (AlterUserScramCredentials) does
    script = (
        "import sys\n"
        "from pylog.security.credentials import FileCredentialStore\n"
        "from pylog.security.scram import new_credential\n"
        "s = FileCredentialStore(sys.argv[1])\n"
        "for i in range(15):\n"
        "    s.upsert(f'{sys.argv[2]}-{i}', new_credential('SCRAM-SHA-256', 'pw', 4096, salt=b'fixed'))\n")
    procs = [subprocess.Popen([sys.executable, "-c", script, str(tmp_path), f"p{n}"], env=server_env())
             for n in range(3)]
    try:
        assert [p.wait(timeout=120) for p in procs] == [0, 0, 0]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    assert sorted(FileCredentialStore(tmp_path).users()) == sorted(f"p{n}-{i}" for n in range(3) for i in range(15))
