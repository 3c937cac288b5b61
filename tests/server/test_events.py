"""pylog.server.events.EventLog: which records it keeps, seq, the ring, after=, threads,
and the level of the pylog logger while it is attached."""
from __future__ import annotations

import logging
import threading

import pytest

from pylog.server.events import EVENT_KINDS, MAX_EVENTS, EventLog


@pytest.fixture
def logger():
    """A logger of its own (under pylog, so the code's own loggers are not touched)."""
    lg = logging.getLogger("pylog.test_events")
    lg.setLevel(logging.DEBUG)
    yield lg
    lg.setLevel(logging.NOTSET)


def _attached(logger, broker_id=1, **kw) -> EventLog:
    ev = EventLog(broker_id, **kw)
    ev.attach(logger)
    return ev


def test_keeps_only_marked_records_with_their_words(logger):
    ev = _attached(logger)
    try:
        logger.warning("plain line %d", 1)
        logger.warning("ISR shrink for %s-%d: %s -> %s (%s)", "t", 0, [1, 2], [1], "lagging",
                       extra={"pylog_event": "isr_shrink"})
        logger.info("broker %d is online (rack %s)", 3, "r1", extra={"pylog_event": "broker_join"})
        logger.debug("not kept", extra={"pylog_event": "isr_expand"})  # below INFO
    finally:
        ev.detach()
    logger.warning("after detach", extra={"pylog_event": "skew"})
    got = ev.events()
    assert [(e["seq"], e["kind"], e["level"], e["message"], e["broker"]) for e in got] == [
        (1, "isr_shrink", "WARNING", "ISR shrink for t-0: [1, 2] -> [1] (lagging)", 1),
        (2, "broker_join", "INFO", "broker 3 is online (rack r1)", 1)]
    assert set(got[0]) == {"seq", "time_ms", "level", "kind", "message", "broker"}
    assert got[0]["time_ms"] <= got[1]["time_ms"]
    assert got[0]["time_ms"] > 1_600_000_000_000  # milliseconds since the epoch
    assert ev.last_seq == 2


def test_after_returns_newer_events_only(logger):
    ev = _attached(logger)
    try:
        for i in range(5):
            logger.warning("e%d", i, extra={"pylog_event": "loss"})
    finally:
        ev.detach()
    assert [e["seq"] for e in ev.events()] == [1, 2, 3, 4, 5]
    assert [e["seq"] for e in ev.events(0)] == [1, 2, 3, 4, 5]
    assert [e["message"] for e in ev.events(3)] == ["e3", "e4"]
    assert ev.events(5) == []
    assert ev.events(99) == []
    # copies: a reader cannot change what the log keeps
    ev.events()[0]["message"] = "changed"
    assert ev.events()[0]["message"] == "e0"


def test_ring_keeps_the_newest(logger):
    ev = _attached(logger, capacity=10)
    try:
        for i in range(25):
            logger.warning("e%d", i, extra={"pylog_event": "skew"})
    finally:
        ev.detach()
    got = ev.events()
    assert [e["seq"] for e in got] == list(range(16, 26))
    assert [e["message"] for e in got] == [f"e{i}" for i in range(15, 25)]
    assert [e["seq"] for e in ev.events(3)] == list(range(16, 26))  # older than the ring: all kept ones
    assert [e["seq"] for e in ev.events(20)] == list(range(21, 26))


def test_default_capacity_is_1000(logger):
    assert MAX_EVENTS == 1000
    ev = _attached(logger)
    try:
        for i in range(1005):
            logger.info("e%d", i, extra={"pylog_event": "isr_expand"})
    finally:
        ev.detach()
    got = ev.events()
    assert len(got) == 1000
    assert got[0]["seq"] == 6 and got[-1]["seq"] == 1005


def test_bad_capacity():
    for bad in (0, -1, 1.5, True, "10"):
        with pytest.raises(ValueError):
            EventLog(1, capacity=bad)


def test_each_broker_keeps_its_own_and_the_unknowable(logger):
    one, two = _attached(logger, 1), _attached(logger, 2)
    try:
        logger.warning("by 1", extra={"pylog_event": "isr_shrink", "pylog_broker": 1})
        logger.warning("by 2", extra={"pylog_event": "election_clean", "pylog_broker": 2})
        logger.warning("by nobody known", extra={"pylog_event": "skew"})
    finally:
        one.detach()
        two.detach()
    assert [(e["message"], e["broker"], e["seq"]) for e in one.events()] == [("by 1", 1, 1), ("by nobody known", 1, 2)]
    assert [(e["message"], e["broker"], e["seq"]) for e in two.events()] == [("by 2", 2, 1), ("by nobody known", 2, 2)]


def test_threads_get_distinct_increasing_seqs(logger):
    ev = _attached(logger, capacity=MAX_EVENTS)
    threads_n, per_thread = 8, 100
    seen = []

    def writer(t: int) -> None:
        for i in range(per_thread):
            logger.warning("t%d-%d", t, i, extra={"pylog_event": "isr_shrink"})

    def reader() -> None:
        after = 0
        while after < threads_n * per_thread:
            for e in ev.events(after):
                assert e["seq"] == after + 1, "a reader saw a gap or a repeat"
                after = e["seq"]
                seen.append(e["message"])

    r = threading.Thread(target=reader)
    r.start()
    ws = [threading.Thread(target=writer, args=(t,)) for t in range(threads_n)]
    for w in ws:
        w.start()
    for w in ws:
        w.join()
    r.join(60)
    ev.detach()
    assert not r.is_alive()
    got = ev.events()
    assert [e["seq"] for e in got] == list(range(1, threads_n * per_thread + 1))
    assert sorted(e["message"] for e in got) == sorted(f"t{t}-{i}" for t in range(threads_n) for i in range(per_thread))
    assert sorted(seen) == sorted(e["message"] for e in got)
    for t in range(threads_n):  # one thread's events keep their order
        mine = [int(e["message"].split("-")[1]) for e in got if e["message"].startswith(f"t{t}-")]
        assert mine == list(range(per_thread))


def test_attach_lowers_the_pylog_logger_to_info_and_detach_restores_it():
    pylog_logger = logging.getLogger("pylog")
    saved = pylog_logger.level
    pylog_logger.setLevel(logging.WARNING)
    try:
        a, b = EventLog(1), EventLog(2)
        a.attach()
        assert pylog_logger.level == logging.INFO
        b.attach()
        logging.getLogger("pylog.controller").info("x", extra={"pylog_event": "election_clean", "pylog_broker": 2})
        a.detach()
        assert pylog_logger.level == logging.INFO  # b still listens
        b.detach()
        assert pylog_logger.level == logging.WARNING
        assert a not in pylog_logger.handlers and b not in pylog_logger.handlers
        assert [e["message"] for e in b.events()] == ["x"] and a.events() == []
        # already at INFO or below: left alone
        pylog_logger.setLevel(logging.DEBUG)
        a.attach()
        assert pylog_logger.level == logging.DEBUG
        a.detach()
        assert pylog_logger.level == logging.DEBUG
    finally:
        pylog_logger.setLevel(saved)


def test_kinds_marked_in_the_code_are_known():
    """Every ``"pylog_event": "..."`` and ``_event("...")`` in pylog's code names a kind in EVENT_KINDS,
    and every kind is marked somewhere."""
    import pathlib
    import re

    import pylog

    root = pathlib.Path(pylog.__file__).parent
    used = set()
    for path in root.rglob("*.py"):
        text = path.read_text()
        for m in re.finditer(r'"pylog_event": "(\w+)"|_event\("(\w+)"\)|"(isr_shrink)" if [^"]+ else "(isr_expand)"',
                             text):
            used.update(g for g in m.groups() if g)
    assert used <= EVENT_KINDS, used - EVENT_KINDS
    assert used == EVENT_KINDS, EVENT_KINDS - used


def test_after_parsing_known_values():
    from pylog.server.metrics import _after_of

    assert _after_of("") == 0
    assert _after_of("other=1") == 0
    assert _after_of("after=0") == 0
    assert _after_of("after=42&x=y") == 42
    for bad in ("after=", "after=-1", "after=1.0", "after=1&after=1", "after=%C2%B2", "after=0x1", "after=" + "9" * 20):
        with pytest.raises(ValueError, match="after"):
            _after_of(bad)


def test_fuzz_after_parsing():
    """Any query string: an int >= 0 or ValueError, nothing else; a plain number round-trips."""
    from hypothesis import given, settings, strategies as st

    from pylog.server.metrics import _after_of

    @settings(max_examples=2000, deadline=None)
    @given(st.one_of(st.text(max_size=60), st.binary(max_size=60).map(lambda b: b.decode("latin-1")),
                     st.integers(min_value=0, max_value=10**18).map(lambda n: f"after={n}")))
    def check(query: str) -> None:
        try:
            got = _after_of(query)
        except ValueError:
            return
        assert isinstance(got, int) and got >= 0
        if query.startswith("after=") and query[6:].isdigit() and query[6:].isascii():
            assert got == int(query[6:])

    check()
