"""Start and stop a real `pylog serve` process for tests.

The server runs as ``python -m pylog serve`` (the same code as the ``pylog`` script) on
a loopback port it picks itself (``PLAINTEXT://127.0.0.1:0``); the port is read from
the line it prints when ready.  Every process is stopped by its PID — SIGTERM, then
SIGKILL if it does not exit — by the fixture's teardown, also when the test failed.
Its stderr goes to a file whose tail is shown when something goes wrong.
"""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional

_READY = re.compile(r"listening on (?P<addrs>[A-Z_0-9]+://[^\n]+)\n")
_ADDR = re.compile(r"(?P<name>[A-Z_0-9]+)://(?P<host>[^:,\s]+):(?P<port>\d+)")
_METRICS = re.compile(r"metrics on http://(?P<host>[^:\s]+):(?P<port>\d+)/metrics")
_CONSOLE = re.compile(r"console on (?P<url>http://\S+)")
#: Settings every test server gets unless the test overrides them: groups start at
#: once (Kafka waits 3 s for more members; tests that check the default override it).
FAST = ["--override", "group.initial.rebalance.delay.ms=0"]


def server_env() -> dict:
    """The environment of a server process: it imports the same pylog as the tests."""
    import pylog

    root = str(Path(pylog.__file__).resolve().parents[1])
    path = os.environ.get("PYTHONPATH")
    return dict(os.environ, PYTHONUNBUFFERED="1", PYTHONPATH=root + (os.pathsep + path if path else ""))


def _read_available(fd: int) -> str:
    try:
        return os.read(fd, 65536).decode("utf-8", "replace")
    except BlockingIOError:
        return ""


class ServerProcess:
    """One `pylog serve` process on ``data_dir``."""

    def __init__(self, data_dir: Path, log_path: Path, args: Optional[List[str]] = None,
                 port: int = 0) -> None:
        self.data_dir = Path(data_dir)
        self.log_path = Path(log_path)
        self.args = list(args if args is not None else FAST)
        self.port = port
        self.proc: Optional[subprocess.Popen] = None
        self.host = "127.0.0.1"
        self.metrics_port: Optional[int] = None
        #: http://HOST:PORT/ of the console when started with --console
        self.console_url: Optional[str] = None
        self.stdout_lines: List[str] = []
        #: listener name -> bound port (from the ready line)
        self.ports: Dict[str, int] = {}

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def command(self) -> List[str]:
        """The command line; one PLAINTEXT listener on ``port`` unless the arguments
        name the listeners themselves (then ``ports`` has each one's port)."""
        listeners = [] if "--listeners" in self.args else ["--listeners", f"PLAINTEXT://127.0.0.1:{self.port}"]
        return [sys.executable, "-X", "faulthandler", "-m", "pylog", "serve", "--data-dir", str(self.data_dir),
                *listeners, *self.args]

    def address(self, listener: str) -> str:
        """``HOST:PORT`` of the listener named ``listener``."""
        return f"{self.host}:{self.ports[listener]}"

    def start(self, timeout_s: float = 30.0) -> "ServerProcess":
        assert self.proc is None or self.proc.poll() is not None, "already running"
        log = open(self.log_path, "ab")
        env = server_env()
        self.proc = subprocess.Popen(self.command(), stdout=subprocess.PIPE, stderr=log, env=env)
        log.close()
        deadline = time.monotonic() + timeout_s
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        os.set_blocking(fd, False)
        buf = ""
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"pylog serve exited with {self.proc.returncode} before it was ready:\n"
                                   f"{self.log_tail()}")
            chunk = _read_available(fd)
            if chunk:
                buf += chunk
                m = _READY.search(buf)
                if m is not None:
                    self.ports = {a.group("name"): int(a.group("port")) for a in _ADDR.finditer(m.group("addrs"))}
                    self.port = self.ports.get("PLAINTEXT", next(iter(self.ports.values())))
                    mm = _METRICS.search(buf)
                    if mm is None and "--metrics-listener" in self.args:
                        time.sleep(0.05)
                        buf += _read_available(fd)
                        mm = _METRICS.search(buf)
                    if mm is not None:
                        self.metrics_port = int(mm.group("port"))
                    if "--console" in self.args:  # its line follows the ready lines at once
                        while _CONSOLE.search(buf) is None and time.monotonic() < deadline \
                                and self.proc.poll() is None:
                            time.sleep(0.02)
                            buf += _read_available(fd)
                        mc = _CONSOLE.search(buf)
                        self.console_url = mc.group("url") if mc is not None else None
                    self.stdout_lines = buf.splitlines()
                    return self
            time.sleep(0.02)
        self.kill()
        raise RuntimeError(f"pylog serve was not ready within {timeout_s} s:\n{self.log_tail()}")

    def stop(self, timeout_s: float = 30.0) -> int:
        """SIGTERM, wait; SIGKILL if it does not exit in time.  Returns the exit code."""
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            raise RuntimeError(f"pylog serve did not exit within {timeout_s} s of SIGTERM; its log, ending "
                               f"with its threads' stacks:\n{self.abort_with_stacks()}") from None

    def abort_with_stacks(self) -> str:
        """SIGABRT, so that `-X faulthandler` writes every thread's Python stack to the
        log (where a shutdown hangs), then SIGKILL if it is still there; returns the
        log's tail."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGABRT)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                pass
        self.kill()
        return self.log_tail(150)

    def kill(self) -> None:
        """SIGKILL (the page cache survives: what was written is still there)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def restart(self, timeout_s: float = 30.0) -> "ServerProcess":
        """Start again on the same data directory and port."""
        self.proc = None
        return self.start(timeout_s)

    def log_tail(self, n: int = 60) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return "(no log)"

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")
