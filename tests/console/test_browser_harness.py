"""tests/browser.py itself: the browser is cleaned up, and a missing one fails the test."""
from __future__ import annotations

import pytest

import tests.browser as harness


def test_close_leaves_no_chromedriver_or_chromium_process(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv(harness.ARTIFACTS_ENV, str(tmp_path / "shots"))
    browser = harness.start_browser()
    try:
        pids = browser.pids()
        browser.driver.get("data:text/html,<title>t</title><p id=x>hello</p>")
        assert browser.driver.find_element("id", "x").text == "hello"
        assert harness.console_errors(browser.driver) == []
        shot = harness.screenshot(browser.driver, "harness check")
        assert shot == tmp_path / "shots" / "harness_check.png"
        assert shot.read_bytes().startswith(b"\x89PNG")
    finally:
        browser.close()
    # the driver, chromium's browser process and at least one of its helpers
    assert len(pids) >= 3, pids
    left = [pid for pid in pids if harness._start_time(pid) is not None and not harness._is_zombie(pid)]
    assert left == []
    assert not browser.profile.exists()


@pytest.mark.parametrize("missing", ["CHROMIUM", "CHROMEDRIVER"])
def test_missing_browser_fails_with_what_to_install(missing, monkeypatch) -> None:
    monkeypatch.setattr(harness, missing, "/nonexistent/" + missing.lower())
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(pytest.fail.Exception) as failure:
        harness.start_browser()
    message = str(failure.value)
    assert "apt-get install chromium chromium-driver" in message
    assert "pip install -e '.[test]'" in message


def test_missing_selenium_fails_with_what_to_install(monkeypatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "selenium", None)  # import selenium raises ImportError
    with pytest.raises(pytest.fail.Exception) as failure:
        harness.start_browser()
    assert "pip install -e '.[test]'" in str(failure.value)
