"""The console's web server: routing, sessions and the login, static files.

:class:`Console` binds an HTTP server (loopback by default) on a thread of its own and
starts the :class:`~pylog.console.collector.Collector`.  :meth:`Console.handle` is the
whole request logic as a function of (method, path, query, headers, body), so it is
tested without sockets as well as through them.

Security.  Every answer carries a Content-Security-Policy that allows only the
console's own script and stylesheet (no inline script runs, whatever a record holds),
and every value from the cluster is escaped when rendered.  When the cluster's
listener needs SASL (``login_mechanism``), each visitor logs in with a user of the
cluster: the console opens a connection *as that user* and shows only what the
brokers let that principal describe (Metadata hides topics, ListGroups hides groups;
events naming a hidden topic are hidden too).  The session is a random cookie
(HttpOnly, SameSite=Strict) and ends at logout, after ``session_idle_s`` without a
request, or when the console stops.  The sampler uses ``sasl`` (a service login from
``--command-config``) when given, else the login of the newest session.
"""
from __future__ import annotations

import http.server
import json
import logging
import secrets
import ssl
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from importlib import resources
from typing import Any, Dict, List, Mapping, Optional, Tuple

from pylog.client.network.admin import AdminClient
from pylog.client.network.connection import SaslLogin
from pylog.console import views
from pylog.console.collector import Collector
from pylog.console.records import NotFound
from pylog.errors import InvalidConfig, PylogError, SaslAuthenticationFailed

__all__ = ["Console", "Response"]

log = logging.getLogger("pylog.console")

_CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
        "form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
_STATIC = {"console.js": "text/javascript; charset=utf-8", "console.css": "text/css; charset=utf-8"}
_COOKIE = "pylog_console"
_MAX_FORM = 8192
_VISIBLE_TTL_S = 2.0
#: a page asks the cluster with these (a stopped broker costs a page seconds, not half a minute)
_PAGE_TIMEOUTS = {"request_timeout_ms": 5000, "connect_timeout_ms": 3000}


@dataclass
class Response:
    status: int
    content_type: str
    body: bytes
    headers: List[Tuple[str, str]] = field(default_factory=list)


@dataclass
class _Session:
    user: Optional[str]
    admin: Optional[AdminClient]
    login: Optional[SaslLogin] = None
    last_used: float = field(default_factory=time.monotonic)
    visible_at: float = -1e9
    #: the topics this principal's Metadata shows (None until first asked)
    topics: Optional[Dict[str, Any]] = None
    lock: threading.Lock = field(default_factory=threading.Lock)


class Console:
    """The console of the cluster at ``bootstrap`` (see the module docstring).

    ``ssl_context``/``sasl``: how to reach a secured listener (as AdminClient's);
    ``login_mechanism``: the SASL mechanism visitors log in with (None: no login; the
    listener needs no user, or ``sasl`` is everyone's)."""

    def __init__(self, bootstrap: str, *, host: str = "127.0.0.1", port: int = 8080,
                 ssl_context: Optional[ssl.SSLContext] = None, sasl: Optional[SaslLogin] = None,
                 login_mechanism: Optional[str] = None, interval_s: float = 1.0,
                 session_idle_s: float = 8 * 3600.0) -> None:
        self.bootstrap = bootstrap
        self.host = host
        self.port = port
        self.ssl_context = ssl_context
        self.sasl = sasl
        self.login_mechanism = login_mechanism.upper() if login_mechanism else None
        self.session_idle_s = session_idle_s
        self._sessions: Dict[str, _Session] = {}
        self._lock = threading.Lock()
        self._sampler_login: Optional[SaslLogin] = sasl
        self._shared: Optional[_Session] = None
        self.collector = Collector(self._sampler_admin, interval_s=interval_s)
        self._httpd: Optional[http.server.ThreadingHTTPServer] = None
        self._thread: Optional[threading.Thread] = None

    # ------------------------------------------------------------------ lifecycle
    def _sampler_admin(self) -> AdminClient:
        if self.login_mechanism is not None and self._sampler_login is None:
            raise PylogError("nobody has logged in to the console yet (the cluster needs a SASL login)")
        # short timeouts: a broker that does not answer (stopped, paused) must not hold
        # up the once-a-second sample; the next broker is asked instead
        return AdminClient(self.bootstrap, client_id="pylog-console-sampler", ssl_context=self.ssl_context,
                           sasl=self._sampler_login, request_timeout_ms=3000, connect_timeout_ms=2000)

    def start(self) -> "Console":
        """Bind and serve on a thread; OSError when the address cannot be bound."""
        console = self

        class Handler(http.server.BaseHTTPRequestHandler):
            server_version = "pylog-console"
            protocol_version = "HTTP/1.1"

            def _serve(self, method: str) -> None:
                url = urllib.parse.urlsplit(self.path)
                body = b""
                if method == "POST":
                    try:
                        n = int(self.headers.get("Content-Length") or 0)
                    except ValueError:
                        n = -1
                    if n < 0 or n > _MAX_FORM:
                        self._send(Response(413, "text/plain; charset=utf-8", b"form too large\n"))
                        return
                    body = self.rfile.read(n)
                try:
                    resp = console.handle(method, url.path, url.query, dict(self.headers.items()), body)
                except Exception:  # a bug must not kill the thread or show a traceback
                    log.exception("console: %s %s failed", method, self.path)
                    resp = Response(500, "text/plain; charset=utf-8", b"internal error (see the console's log)\n")
                self._send(resp)

            def _send(self, resp: Response) -> None:
                self.send_response(resp.status)
                self.send_header("Content-Type", resp.content_type)
                self.send_header("Content-Length", str(len(resp.body)))
                self.send_header("Content-Security-Policy", _CSP)
                self.send_header("X-Content-Type-Options", "nosniff")
                self.send_header("Referrer-Policy", "same-origin")
                for k, v in resp.headers:
                    self.send_header(k, v)
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(resp.body)

            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                self._serve("GET")

            def do_HEAD(self) -> None:  # noqa: N802
                self._serve("GET")

            def do_POST(self) -> None:  # noqa: N802
                self._serve("POST")

            def log_message(self, fmt: str, *args: Any) -> None:
                log.debug("console %s: " + fmt, self.address_string(), *args)

        httpd = http.server.ThreadingHTTPServer((self.host, self.port), Handler)
        httpd.daemon_threads = True
        self._httpd = httpd
        self.port = httpd.server_address[1]
        self.collector.start()
        self._thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.2},
                                        name="pylog-console-http", daemon=True)
        self._thread.start()
        return self

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/"

    def close(self) -> None:
        """Stop serving and sampling; close every session's connections.  Idempotent."""
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None
        self.collector.close()
        with self._lock:
            sessions = list(self._sessions.values()) + ([self._shared] if self._shared else [])
            self._sessions = {}
            self._shared = None
        for s in sessions:
            if s.admin is not None:
                s.admin.close()

    def __enter__(self) -> "Console":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ sessions
    def _session(self, headers: Mapping[str, str]) -> Optional[_Session]:
        if self.login_mechanism is None:
            with self._lock:
                if self._shared is None:
                    self._shared = _Session(None, None)
                s = self._shared
            with s.lock:
                if s.admin is None:
                    try:
                        s.admin = AdminClient(self.bootstrap, client_id="pylog-console",
                                              ssl_context=self.ssl_context, sasl=self.sasl, **_PAGE_TIMEOUTS)
                    except PylogError as exc:
                        log.info("console: cannot reach the cluster: %s", exc)
            return s
        token = _cookie(headers, _COOKIE)
        if token is None:
            return None
        now = time.monotonic()
        with self._lock:
            s = self._sessions.get(token)
            if s is not None and now - s.last_used > self.session_idle_s:
                del self._sessions[token]
                if s.admin is not None:
                    s.admin.close()
                return None
            if s is not None:
                s.last_used = now
            return s

    def _principal_topics(self, s: _Session) -> Optional[Dict[str, Any]]:
        """The topics the session's principal may describe, from its own Metadata (asked
        again after _VISIBLE_TTL_S); None without logins (everyone sees everything)."""
        if self.login_mechanism is None or s.admin is None:
            return None
        with s.lock:
            if time.monotonic() - s.visible_at > _VISIBLE_TTL_S:
                try:
                    s.topics = s.admin.describe_topics(None, include_internal=True)
                    s.visible_at = time.monotonic()
                except PylogError as exc:
                    log.info("console: topics of %s: %s", s.user, exc)
                    if s.topics is None:
                        s.topics = {}
            return s.topics

    def _login(self, body: bytes) -> Tuple[Optional[str], List[Tuple[str, str]]]:
        """Check a login form: (error text or None, headers to send)."""
        form = urllib.parse.parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True)
        user = (form.get("username") or [""])[0]
        password = (form.get("password") or [""])[0]
        if not user or not password:
            return "user and password are both needed", []
        login = SaslLogin(self.login_mechanism or "PLAIN", user, password)
        try:
            admin = AdminClient(self.bootstrap, client_id="pylog-console", ssl_context=self.ssl_context, sasl=login,
                                **_PAGE_TIMEOUTS)
        except SaslAuthenticationFailed:
            return "wrong user or password", []
        except PylogError as exc:
            return f"cannot log in: {exc}", []
        token = secrets.token_urlsafe(32)
        with self._lock:
            self._sessions[token] = _Session(user, admin, login)
            if self.sasl is None:
                self._sampler_login = login
        log.info("console: %s logged in", user)
        return None, [("Set-Cookie", f"{_COOKIE}={token}; HttpOnly; SameSite=Strict; Path=/")]

    # ------------------------------------------------------------------ requests
    def handle(self, method: str, path: str, query: str, headers: Mapping[str, str], body: bytes = b"") -> Response:
        """One request (module docstring)."""
        headers = {k.lower(): v for k, v in headers.items()}
        params = {k: v[-1] for k, v in urllib.parse.parse_qs(query, keep_blank_values=True).items()}
        if path.startswith("/static/"):
            return _static(path[len("/static/"):])
        if path == "/favicon.ico":
            return Response(204, "image/x-icon", b"")
        if path == "/login" and self.login_mechanism is not None:
            return self._login_page(method, body, params)
        if path == "/logout":
            return self._logout(headers)
        if method != "GET":
            return Response(405, "text/plain; charset=utf-8", b"method not allowed\n", [("Allow", "GET")])
        session = self._session(headers)
        api = path == "/api" or path.startswith("/api/")
        if session is None:
            if api or params.get("fragment"):
                return Response(401, "text/plain; charset=utf-8", b"log in first\n")
            nxt = urllib.parse.quote(path + ("?" + query if query else ""), safe="/")
            return Response(303, "text/plain; charset=utf-8", b"", [("Location", f"/login?next={nxt}")])
        page_path = path[len("/api"):] or "/" if api else path
        self.collector.wait_first(5.0)
        topics = self._principal_topics(session)
        view = views.View(self.collector.snapshot, self.collector.history, self.collector.events(), session.admin,
                          None if topics is None else set(topics), session.user, topics)
        try:
            page, active = self._route(view, page_path, params)
        except NotFound as exc:
            if api:
                return _json(404, {"error": str(exc)})
            return Response(404, "text/html; charset=utf-8", views.not_found_page(str(exc), session.user).encode())
        except PylogError as exc:
            msg = f"the cluster did not answer: {exc}"
            if api:
                return _json(503, {"error": msg})
            return Response(503, "text/html; charset=utf-8",
                            views.layout("Cluster unreachable", f'<p class="warning">{views.e(msg)}</p>',
                                         user=session.user).encode())
        if api:
            doc = {"time_ms": view.snapshot.time_ms, "charts": page.charts()}
            doc.update(page.data())
            return _json(200, doc)
        own = path + ("?" + query if query else "")
        own = _without_fragment(own)
        live = views.live_section(own, page.live)
        if params.get("fragment") == "live":
            return Response(200, "text/html; charset=utf-8", live.encode(), [("Cache-Control", "no-store")])
        after = page.after() if callable(page.after) else page.after
        main = page.before + live + after
        doc = views.layout(page.title, main, active=active, user=session.user, cluster=view.snapshot.cluster_id,
                           status=views.status_banner(view.snapshot))
        return Response(200, "text/html; charset=utf-8", doc.encode(), [("Cache-Control", "no-store")])

    def _route(self, v: views.View, path: str, params: Mapping[str, str]) -> Tuple[views.Page, str]:
        if path in ("", "/"):
            return views.overview(v), "/"
        raw = path.split("/")[1:]
        if raw and raw[-1] == "":
            raw = raw[:-1]
        parts = [urllib.parse.unquote(x) for x in raw]
        if parts == ["topics"]:
            return views.topics(v), "/topics"
        if len(parts) == 2 and parts[0] == "topics":
            return views.topic(v, parts[1]), "/topics"
        if len(parts) == 3 and parts[0] == "topics":
            return views.records(v, parts[1], parts[2], params), "/topics"
        if parts == ["groups"]:
            return views.groups(v), "/groups"
        if len(parts) == 2 and parts[0] == "groups":
            return views.group(v, parts[1]), "/groups"
        if parts == ["events"]:
            return views.events(v, params), "/events"
        raise NotFound(f"no page at {path}")

    def _login_page(self, method: str, body: bytes, params: Mapping[str, str]) -> Response:
        nxt = params.get("next") or "/"
        if not nxt.startswith("/") or nxt.startswith("//"):
            nxt = "/"
        error = None
        if method == "POST":
            error, cookie = self._login(body)
            if error is None:
                return Response(303, "text/plain; charset=utf-8", b"", cookie + [("Location", nxt)])
        msg = f'<p class="error">{views.e(error)}</p>' if error else ""
        form = (f'<form id="login" method="post" action="/login?next={views.e(urllib.parse.quote(nxt, safe="/"))}">'
                f'{msg}<p>The cluster asks for a {views.e(self.login_mechanism)} login; you see what that user may '
                'describe.</p><label>User <input name="username" autocomplete="username" required></label>'
                '<label>Password <input name="password" type="password" autocomplete="current-password" required>'
                '</label><button type="submit">Log in</button></form>')
        return Response(401 if error else 200, "text/html; charset=utf-8",
                        views.layout("Log in", form).encode(), [("Cache-Control", "no-store")])

    def _logout(self, headers: Mapping[str, str]) -> Response:
        token = _cookie({k.lower(): v for k, v in headers.items()}, _COOKIE)
        if token is not None:
            with self._lock:
                s = self._sessions.pop(token, None)
            if s is not None and s.admin is not None:
                s.admin.close()
        return Response(303, "text/plain; charset=utf-8", b"",
                        [("Location", "/login" if self.login_mechanism else "/"),
                         ("Set-Cookie", f"{_COOKIE}=; Max-Age=0; HttpOnly; SameSite=Strict; Path=/")])


def _without_fragment(path: str) -> str:
    url = urllib.parse.urlsplit(path)
    q = [(k, v) for k, v in urllib.parse.parse_qsl(url.query, keep_blank_values=True) if k != "fragment"]
    return url.path + ("?" + urllib.parse.urlencode(q) if q else "")


def _cookie(headers: Mapping[str, str], name: str) -> Optional[str]:
    raw = headers.get("cookie")
    if not raw:
        return None
    for part in raw.split(";"):
        k, _, v = part.strip().partition("=")
        if k == name and v:
            return v
    return None


def _json(status: int, doc: Any) -> Response:
    return Response(status, "application/json", json.dumps(doc, separators=(",", ":"), allow_nan=False).encode(),
                    [("Cache-Control", "no-store")])


def _static(name: str) -> Response:
    ctype = _STATIC.get(name)
    if ctype is None:
        return Response(404, "text/plain; charset=utf-8", f"no static file {name!r}\n".encode())
    try:
        data = resources.files("pylog.console").joinpath("static", name).read_bytes()
    except (FileNotFoundError, OSError):
        return Response(404, "text/plain; charset=utf-8", f"no static file {name!r}\n".encode())
    return Response(200, ctype, data, [("Cache-Control", "max-age=60")])


def parse_address(text: str, what: str = "--console") -> Tuple[str, int]:
    """``HOST:PORT`` (``[v6]:PORT``) -> (host, port); InvalidConfig naming ``what``."""
    t = text.strip()
    host, sep, port = t.rpartition(":")
    if not sep or not port.isdigit() or not host or int(port) > 65535:
        raise InvalidConfig(f"{what} must be HOST:PORT, got {text!r}")
    return host.strip("[]"), int(port)
