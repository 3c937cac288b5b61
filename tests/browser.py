"""The browser tests' harness: headless Chromium driven by selenium (issue 14).

:func:`start_browser` starts Debian's ``chromium`` through its ``chromium-driver``
(``/usr/bin/chromedriver``, given to selenium explicitly so that Selenium Manager never
tries to download a driver: CI has no internet) and returns a :class:`Browser` whose
:meth:`~Browser.close` quits the driver and kills, by PID, any chromedriver or chromium
process it started that is still alive.  The ``browser`` fixture (tests/console/
conftest.py) yields its driver and closes it after the test, also when the test fails.

A missing chromium, chromedriver or selenium fails the test (never skips it) with what
to install.

Helpers for the tests:

* :func:`console_errors` -- the SEVERE entries of the browser's console log (the tests
  assert there are none);
* :func:`screenshot` -- a PNG under ``test-artifacts/console/`` at the repository root
  (``PYLOG_TEST_ARTIFACTS`` names another directory);
* :func:`wait_for_update` -- waits until console.js finished a new round of refreshes
  (``document.body.dataset.updated`` changed to a new number).
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
INSTALL_HINT = ("the browser tests need Debian's chromium and chromium-driver and the "
                "selenium package: apt-get install chromium chromium-driver, and "
                "pip install -e '.[test]'")
#: Environment variable naming the directory screenshots go to.
ARTIFACTS_ENV = "PYLOG_TEST_ARTIFACTS"
WINDOW_SIZE = (1400, 1000)
#: Upper bound of every wait for the page; generous, since the machine may be busy.
#: Tests never assert on time.
WAIT_TIMEOUT_S = 30.0


def _executable(path: str, name: str) -> str:
    """path if it is an executable file, else ``name`` on PATH; fails the test if neither."""
    if os.path.isfile(path) and os.access(path, os.X_OK):
        return path
    found = shutil.which(name)
    if found is None:
        pytest.fail(f"{name} not found (looked for {path} and on PATH): {INSTALL_HINT}",
                    pytrace=False)
    return found


def _start_time(pid: int) -> int | None:
    """The start time (clock ticks since boot) of process pid, or None if it is gone: with
    the PID it identifies a process, so a reused PID is never killed."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    # the command name (field 2) may hold spaces and parentheses: split after its last ")"
    fields = stat[stat.rindex(b")") + 2:].split()
    return int(fields[19])


def _descendants(root: int) -> dict[int, int]:
    """{pid: start time} of every live descendant of process root (Linux /proc)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        ppid = int(stat[stat.rindex(b")") + 2:].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    found: dict[int, int] = {}
    todo = [root]
    while todo:
        for pid in children.get(todo.pop(), []):
            start = _start_time(pid)
            if start is not None and pid not in found:
                found[pid] = start
                todo.append(pid)
    return found


def _pids_with_argument(marker: str) -> dict[int, int]:
    """{pid: start time} of the processes with ``marker`` in their command line."""
    needle = marker.encode()
    found: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmdline = f.read()
        except OSError:
            continue
        if needle in cmdline:
            start = _start_time(int(entry))
            if start is not None:
                found[int(entry)] = start
    return found


class Browser:
    """A started chromedriver + chromium: the selenium ``driver`` and what to clean up.

    Chromium runs with a user data directory of its own (``profile``): every chromium
    process names it on its command line, including the ones that leave the process tree
    (the crash handler daemonizes), so :meth:`close` finds them all."""

    def __init__(self, driver: Any, driver_pid: int | None, profile: Path) -> None:
        self.driver = driver
        self.profile = profile
        self._pids: dict[int, int] = {}
        if driver_pid is not None:
            start = _start_time(driver_pid)
            if start is not None:
                self._pids[driver_pid] = start

    def _started(self) -> dict[int, int]:
        """{pid: start time} of the live chromedriver and chromium processes it started."""
        pids = dict(self._pids)
        for pid in list(self._pids):
            pids.update(_descendants(pid))
        pids.update(_pids_with_argument(str(self.profile)))
        return pids

    def pids(self) -> list[int]:
        """The PIDs of the chromedriver and chromium processes this browser started."""
        return sorted(self._started())

    def close(self) -> None:
        """Quit the driver (closing chromium), then kill whatever of it is left."""
        started = self._started()
        try:
            self.driver.quit()
        finally:
            started.update(self._started())
            for pid, start in started.items():
                if _start_time(pid) == start:
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and any(
                    _start_time(pid) == start and not _is_zombie(pid) for pid, start in started.items()):
                time.sleep(0.02)
            shutil.rmtree(self.profile, ignore_errors=True)


def _is_zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return True
    return stat[stat.rindex(b")") + 2:].split()[0] == b"Z"


def start_browser() -> Browser:
    """Headless chromium (1400x1000, console log kept) driven through chromedriver."""
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError as exc:
        pytest.fail(f"selenium is not installed ({exc}): {INSTALL_HINT}", pytrace=False)
    chromium = _executable(CHROMIUM, "chromium")
    chromedriver = _executable(CHROMEDRIVER, "chromedriver")
    profile = Path(tempfile.mkdtemp(prefix="pylog-chromium-"))
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in (f"--user-data-dir={profile}", "--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                "--disable-gpu", "--disable-extensions", "--no-first-run",
                "--disable-background-networking", "--disable-component-update",
                "--disable-default-apps", "--disable-sync", "--hide-scrollbars",
                "--disable-crash-reporter", "--disable-breakpad",
                f"--window-size={WINDOW_SIZE[0]},{WINDOW_SIZE[1]}"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    # The driver's path is given: selenium then never runs Selenium Manager (which would
    # try to download a driver).
    # The browser is not the code under test: the sanitizer runtimes that
    # scripts/asan-test.sh preloads into Python stay out of chromedriver and chromium.
    env = {k: v for k, v in os.environ.items()
           if k not in ("LD_PRELOAD", "ASAN_OPTIONS", "UBSAN_OPTIONS", "PYTHONMALLOC")}
    service = Service(executable_path=chromedriver, log_output=subprocess.DEVNULL, env=env)
    try:
        driver = webdriver.Chrome(service=service, options=options)
    except BaseException:
        for pid in _pids_with_argument(str(profile)):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        shutil.rmtree(profile, ignore_errors=True)
        raise
    process = getattr(service, "process", None)
    browser = Browser(driver, process.pid if process is not None else None, profile)
    try:
        driver.set_window_size(*WINDOW_SIZE)
    except BaseException:
        browser.close()
        raise
    return browser


def provide_browser() -> Iterator[Any]:
    """The ``browser`` fixture's body: a driver, quit (and its processes killed) after."""
    browser = start_browser()
    try:
        yield browser.driver
    finally:
        browser.close()


def console_log(driver: Any) -> list[dict[str, Any]]:
    """Every browser console entry since the last call (the driver drains the log)."""
    return list(driver.get_log("browser"))


def console_errors(driver: Any, entries: list[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """The SEVERE entries of the browser's console log (of ``entries`` if given, else the
    entries logged since the last read)."""
    if entries is None:
        entries = console_log(driver)
    return [e for e in entries if e.get("level") == "SEVERE"]


def artifacts_dir() -> Path:
    """Where screenshots go: $PYLOG_TEST_ARTIFACTS, else test-artifacts/console/."""
    configured = os.environ.get(ARTIFACTS_ENV)
    path = Path(configured) if configured else ROOT / "test-artifacts" / "console"
    path.mkdir(parents=True, exist_ok=True)
    return path


def screenshot(driver: Any, name: str) -> Path:
    """Save the window as ``NAME.png`` in :func:`artifacts_dir`; returns its path."""
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
    path = artifacts_dir() / f"{safe}.png"
    assert driver.save_screenshot(str(path)), f"could not save the screenshot {path}"
    assert path.stat().st_size > 0, f"empty screenshot {path}"
    return path


def wait_until(driver: Any, predicate: Callable[[Any], Any], what: str,
               timeout_s: float = WAIT_TIMEOUT_S) -> Any:
    """predicate(driver)'s first truthy value, polled; fails the test naming ``what``."""
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.support.ui import WebDriverWait

    try:
        return WebDriverWait(driver, timeout_s, poll_frequency=0.05).until(predicate)
    except TimeoutException:
        pytest.fail(f"timed out after {timeout_s} s waiting for {what}", pytrace=False)


def updated(driver: Any) -> str | None:
    """document.body.dataset.updated: a time in ms, "error", or None before the first round."""
    return driver.execute_script("return document.body ? document.body.dataset.updated || null : null;")


#: wait_for_update's default: the value of document.body.dataset.updated at the call.
CURRENT = "current"


def wait_for_update(driver: Any, previous: str | None = CURRENT,
                    timeout_s: float = WAIT_TIMEOUT_S) -> int:
    """Wait until console.js finished a round of refreshes after ``previous``:
    ``document.body.dataset.updated`` is a number other than it.  ``previous`` defaults
    to the value at the call; None accepts any number (the page's first round done).
    Returns that number."""
    if previous == CURRENT:
        previous = updated(driver)

    def fresh(d: Any) -> int | None:
        value = updated(d)
        if value is not None and value != previous and value.isdigit():
            return int(value)
        return None

    return wait_until(driver, fresh,
                      f"a new round of the console's refreshes (after {previous!r})", timeout_s)


def offline_banner(driver: Any) -> str | None:
    """The text of the div#console-offline banner, or None when there is none."""
    return driver.execute_script(
        "const b = document.getElementById('console-offline'); return b ? b.textContent : null;")
