"""The console of a broker whose only listener needs SASL, under ACLs (issue 14 point 1):
it asks for a user, refuses a wrong password, and shows each user only the topics and
groups that user may describe.  A real `pylog serve --console` (users and ACLs made
offline before the start), stopped by PID at the end, also when a test failed."""
from __future__ import annotations

import http.cookiejar
import json
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request
from typing import Any, Tuple

import pytest

from tests.server.serverproc import FAST, ServerProcess, server_env

PASSWORDS = {"alice": "alice-pw", "bob": "bob-pw", "admin": "admin-pw"}


def _pylog(*args: str) -> None:
    out = subprocess.run([sys.executable, "-m", "pylog", *args], env=server_env(), capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    d = tmp_path_factory.mktemp("console-sasl")
    data = str(d / "data")
    for user, pw in PASSWORDS.items():
        f = d / f"{user}.pw"
        f.write_text(pw + "\n")
        _pylog("users", "add", user, "--mechanism", "SCRAM-SHA-512", "--password-file", str(f), "--data-dir", data)
    _pylog("acls", "add", "--data-dir", data, "--allow-principal", "User:alice", "--operation", "All",
           "--topic", "alice.", "--resource-pattern-type", "prefixed")
    _pylog("acls", "add", "--data-dir", data, "--allow-principal", "User:alice", "--operation", "All",
           "--group", "alice.", "--resource-pattern-type", "prefixed")
    args = FAST + ["--listeners", "SASL_PLAINTEXT://127.0.0.1:0", "--console", "127.0.0.1:0",
                   "--override", "authorizer.class.name=pylog.security.AclAuthorizer",
                   "--override", "super.users=User:admin"]
    s = ServerProcess(d / "data", d / "server.log", args)
    try:
        s.start()
        from pylog.client.network.admin import AdminClient
        from pylog.client.network.connection import SaslLogin

        with AdminClient(s.address("SASL_PLAINTEXT"), sasl=SaslLogin("SCRAM-SHA-512", "admin", "admin-pw")) as a:
            for t in ("alice.orders", "secret.payroll"):
                a.create_topic(t, 2, 1)
                a.wait_for_topic(t)
        from confluent_kafka import Consumer, TopicPartition

        c = Consumer({"bootstrap.servers": s.address("SASL_PLAINTEXT"), "security.protocol": "SASL_PLAINTEXT",
                      "sasl.mechanism": "SCRAM-SHA-512", "sasl.username": "alice",
                      "sasl.password": PASSWORDS["alice"], "group.id": "alice.readers"})
        try:  # a group of alice's, with a committed offset
            c.commit(offsets=[TopicPartition("alice.orders", 0, 0)], asynchronous=False)
        finally:
            c.close()
        yield s
    finally:
        try:
            s.stop(timeout_s=20)
        finally:
            s.kill()


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kw: Any) -> None:
        return None


def _browser() -> urllib.request.OpenerDirector:
    return urllib.request.build_opener(urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()), _NoRedirect)


def _call(opener: urllib.request.OpenerDirector, url: str, form: dict = None) -> Tuple[int, dict, str]:
    data = urllib.parse.urlencode(form).encode() if form is not None else None
    try:
        with opener.open(url, data=data, timeout=30) as r:
            return r.status, dict(r.headers.items()), r.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers.items()), exc.read().decode()


def _login(srv: ServerProcess, user: str, password: str) -> Tuple[urllib.request.OpenerDirector, int, str]:
    b = _browser()
    status, headers, body = _call(b, srv.console_url + "login?next=/topics", {"username": user, "password": password})
    return b, status, body if status != 303 else headers.get("Location", "")


def test_pages_ask_for_a_login_first(srv):
    b = _browser()
    status, headers, _ = _call(b, srv.console_url + "topics/alice.orders")
    assert status == 303 and headers["Location"] == "/login?next=/topics/alice.orders"
    status, _, body = _call(b, srv.console_url + "login")
    assert status == 200 and '<form id="login"' in body and "SCRAM-SHA-512" in body
    assert _call(b, srv.console_url + "api/")[0] == 401
    assert _call(b, srv.console_url + "?fragment=live")[0] == 401


def test_a_wrong_password_is_refused(srv):
    _, status, body = _login(srv, "alice", "not-her-password")
    assert status == 401 and '<p class="error">wrong user or password</p>' in body
    _, status, body = _login(srv, "mallory", "x")
    assert status == 401 and "wrong user or password" in body


def test_each_user_sees_only_what_it_may_describe(srv):
    alice, status, where = _login(srv, "alice", PASSWORDS["alice"])
    assert status == 303 and where == "/topics"
    status, _, body = _call(alice, srv.console_url + "topics")
    assert status == 200 and 'data-topic="alice.orders"' in body
    assert "secret.payroll" not in body
    assert _call(alice, srv.console_url + "topics/alice.orders")[0] == 200
    status, _, body = _call(alice, srv.console_url + "topics/secret.payroll")
    assert status == 404 and "unknown topic &#x27;secret.payroll&#x27;" in body
    assert _call(alice, srv.console_url + "topics/secret.payroll/0")[0] == 404
    status, _, body = _call(alice, srv.console_url + "api/topics/secret.payroll")
    assert status == 404 and json.loads(body)["error"] == "unknown topic 'secret.payroll'"
    status, _, body = _call(alice, srv.console_url + "")
    assert 'id="count-topics">1<' in body  # the overview counts her topics only
    assert '<span class="user">alice <a href="/logout">' in body  # who is logged in, and the way out

    status, _, body = _call(alice, srv.console_url + "groups")
    assert 'data-group="alice.readers"' in body
    assert _call(alice, srv.console_url + "groups/alice.readers")[0] == 200

    bob, status, _ = _login(srv, "bob", PASSWORDS["bob"])
    assert status == 303
    status, _, body = _call(bob, srv.console_url + "topics")
    assert status == 200 and "alice.orders" not in body and "secret.payroll" not in body
    assert _call(bob, srv.console_url + "topics/alice.orders")[0] == 404
    status, _, body = _call(bob, srv.console_url + "groups")
    assert status == 200 and "alice.readers" not in body
    status, _, body = _call(bob, srv.console_url + "groups/alice.readers")
    assert status == 404 and "unknown group &#x27;alice.readers&#x27;" in body

    admin, status, _ = _login(srv, "admin", PASSWORDS["admin"])
    status, _, body = _call(admin, srv.console_url + "topics")
    assert 'data-topic="alice.orders"' in body and 'data-topic="secret.payroll"' in body

    # logging out ends the session
    status, headers, _ = _call(alice, srv.console_url + "logout")
    assert status == 303 and headers["Location"] == "/login"
    assert _call(alice, srv.console_url + "topics")[0] == 303
