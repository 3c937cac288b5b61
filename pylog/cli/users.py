"""`pylog users add|list|delete`: SCRAM credentials (Kafka's kafka-configs.sh --entity-type users).

* offline, ``--data-dir DIR``: a single node's credential file in its data directory
  (the first admin is made this way, before the broker starts; a running broker reads
  the file again when it changes);
* online, ``--bootstrap-server HOST:PORT``: DescribeUserScramCredentials and
  AlterUserScramCredentials, which every broker of a cluster serves.  As Kafka's
  AdminClient does, this command computes the salt and the salted password; only those
  travel.  A secured listener (SSL, SASL_SSL ...) needs ``--command-config FILE``:
  Kafka's client properties (see :mod:`pylog.cli.clientconfig`).

``add NAME --mechanism SCRAM-SHA-512 --password-file F [--iterations 4096]`` (the
password is F's first line; ``-`` reads stdin); ``delete NAME --mechanism M``;
``list [NAME]`` prints ``NAME MECHANISM iterations=N`` lines.
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import Any, Dict, List

from pylog.cli.clientconfig import add_where_arguments, load_command_config
from pylog.errors import error_for_code
from pylog.security.scram import (DEFAULT_ITERATIONS, SCRAM_MECHANISMS, check_iterations, mechanism_of_type,
                                  mechanism_type, new_credential, salted_password)

__all__ = ["add_users_parser", "run_users"]


def add_users_parser(sub: Any) -> None:
    u = sub.add_parser("users", help="add, list or delete SCRAM users (offline --data-dir, or --bootstrap-server)",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    u.add_argument("action", choices=("add", "list", "delete"))
    u.add_argument("name", nargs="?", default=None, help="the user name (list: only this user)")
    u.add_argument("--mechanism", type=str.upper, choices=tuple(SCRAM_MECHANISMS), default=None,
                   help="SCRAM-SHA-256 or SCRAM-SHA-512 (add, delete)")
    u.add_argument("--password-file", default=None, help="add: a file whose first line is the password ('-': stdin)")
    u.add_argument("--iterations", type=int, default=DEFAULT_ITERATIONS,
                   help=f"add: PBKDF2 iterations (default {DEFAULT_ITERATIONS}, at least 4096)")
    add_where_arguments(u, "offline: a single node's data directory")
    u.set_defaults(func=run_users)


def _password(path: str) -> str:
    if path == "-":
        text = sys.stdin.readline()
    else:
        with open(path, encoding="utf-8") as f:
            text = f.readline()
    pw = text.rstrip("\r\n")
    if not pw:
        raise ValueError(f"--password-file {path}: the first line (the password) is empty")
    return pw


def run_users(args: argparse.Namespace) -> int:
    if args.action in ("add", "delete"):
        if not args.name:
            raise ValueError(f"users {args.action} needs a user name")
        if args.mechanism is None:
            raise ValueError(f"users {args.action} needs --mechanism ({', '.join(SCRAM_MECHANISMS)})")
    if args.action == "add":
        if args.password_file is None:
            raise ValueError("users add needs --password-file FILE (or - for stdin)")
        check_iterations(args.iterations)
    if args.bootstrap_server:
        return _online(args)
    return _offline(args)


def _offline(args: argparse.Namespace) -> int:
    from pylog.security.credentials import FileCredentialStore

    data_dir = args.data_dir or "pylog-data"
    if args.action != "list" and not os.path.isdir(data_dir):
        os.makedirs(data_dir, exist_ok=True)
    store = FileCredentialStore(data_dir)
    if args.action == "add":
        store.upsert(args.name, new_credential(args.mechanism, _password(args.password_file), args.iterations))
        print(f"user {args.name}: {args.mechanism} credential set ({args.iterations} iterations)")
    elif args.action == "delete":
        store.delete(args.name, args.mechanism)
        print(f"user {args.name}: {args.mechanism} credential deleted")
    else:
        users = store.users()
        if args.name is not None:
            users = {args.name: users[args.name]} if args.name in users else {}
        for name, creds in users.items():
            for mech, cred in sorted(creds.items()):
                print(f"{name} {mech} iterations={cred.iterations}")
    return 0


def _online(args: argparse.Namespace) -> int:
    from pylog.client.network.admin import AdminClient
    from pylog.protocol.apis import ApiKey

    with AdminClient(args.bootstrap_server, client_id="pylog-users",
                     **load_command_config(args.command_config)) as admin:
        if args.action == "list":
            users = None if args.name is None else [{"name": args.name}]
            _, resp = admin.request_any(ApiKey.DESCRIBE_USER_SCRAM_CREDENTIALS, {"users": users},
                                        what="DescribeUserScramCredentials")
            if resp.error_code:
                raise error_for_code(int(resp.error_code))(resp.error_message or "describe failed")
            for r in resp.results:
                if r.error_code:
                    raise error_for_code(int(r.error_code))(f"user {r.user}: {r.error_message}")
                for info in r.credential_infos:
                    print(f"{r.user} {mechanism_of_type(int(info.mechanism))} iterations={int(info.iterations)}")
            return 0
        body: Dict[str, List[Dict[str, Any]]] = {"deletions": [], "upsertions": []}
        mtype = mechanism_type(args.mechanism)
        if args.action == "add":
            salt = os.urandom(32)
            body["upsertions"].append({
                "name": args.name, "mechanism": mtype, "iterations": args.iterations, "salt": salt,
                "salted_password": salted_password(args.mechanism, _password(args.password_file), salt,
                                                   args.iterations)})
        else:
            body["deletions"].append({"name": args.name, "mechanism": mtype})
        _, resp = admin.request_any(ApiKey.ALTER_USER_SCRAM_CREDENTIALS, body, what="AlterUserScramCredentials")
        for r in resp.results:
            if r.error_code:
                raise error_for_code(int(r.error_code))(f"user {r.user}: {r.error_message}")
        verb = "set" if args.action == "add" else "deleted"
        print(f"user {args.name}: {args.mechanism} credential {verb}")
    return 0

