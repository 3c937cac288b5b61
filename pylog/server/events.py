"""A broker's recent events, for the console's timeline (``GET /events`` on the metrics listener).

An *event* is a log record that pylog's code marks with ``extra={"pylog_event": KIND}``:
the same record, with the same words, that goes to the broker's log.  The kinds are
:data:`EVENT_KINDS` (ISR shrinks and expands, clean and unclean leader elections,
partitions going offline, brokers joining and leaving, loss-ledger entries, partition
skew).  Records may also carry ``"pylog_broker": ID``, the broker whose code logged it
(the controller's broker for what the controller decides, the leader for an ISR change
it proposed, the broker that discarded records for a loss).

:class:`EventLog` is a :class:`logging.Handler` that a server attaches to the ``pylog``
logger while it runs (:meth:`EventLog.attach`, :meth:`EventLog.detach`) and that keeps
the last :data:`MAX_EVENTS` events as dicts::

    {"seq": 7, "time_ms": 1700000000123, "level": "WARNING", "kind": "isr_shrink",
     "message": "ISR shrink for orders-0: [1, 2, 3] -> [1, 2] (...)", "broker": 1}

``seq`` starts at 1 and increases by one per kept event (a reader asks for the events
after the last ``seq`` it saw); ``message`` is ``record.getMessage()``.

**Several servers in one process** (tests, an in-process cluster) each attach their
own EventLog to the same logger.  An EventLog made for broker ``N`` keeps a record
whose ``pylog_broker`` is ``N`` or absent, and drops those of other brokers.  Where the
broker cannot be known from the record (the skew WARNING: the traffic counters belong
to the process, not to one broker), every EventLog keeps it; its ``broker`` is then
the EventLog's own broker.  A broker that runs alone in its process (``pylog serve``)
sees exactly its own events.

**Levels.** Some events are INFO (clean elections, brokers joining, ISR changes made by
an operator's action); a logger whose effective level is above INFO would drop them
before any handler sees them.  :meth:`EventLog.attach` therefore lowers the ``pylog``
logger to INFO while an EventLog is attached (and restores its level when the last one
is detached).  Handlers without a level of their own then receive pylog's INFO records
too: ``pylog serve`` sets its stderr handler to ``--log-level``, so its output does not
change; a program that embeds a server and wants fewer lines sets a level on its
handlers.
"""
from __future__ import annotations

import collections
import itertools
import logging
import threading
from typing import Any, Deque, Dict, FrozenSet, List, Optional, Tuple

__all__ = ["EVENT_KINDS", "MAX_EVENTS", "EventLog"]

#: The kinds of events pylog's code marks (``extra={"pylog_event": KIND}``).
EVENT_KINDS: FrozenSet[str] = frozenset({
    "isr_shrink", "isr_expand", "election_clean", "election_unclean", "partition_offline",
    "broker_join", "broker_leave", "loss", "skew"})

#: Events an EventLog keeps (the oldest go first).
MAX_EVENTS = 1_000

# logger name -> (its level before the first EventLog lowered it, EventLogs attached)
_lowered: Dict[str, Tuple[int, int]] = {}
_lowered_lock = threading.Lock()


class EventLog(logging.Handler):
    """Keeps the last ``capacity`` event records of broker ``broker_id`` (see the module
    docstring).  Thread-safe: records arrive from any thread, readers call
    :meth:`events` from another."""

    def __init__(self, broker_id: int, capacity: int = MAX_EVENTS) -> None:
        if isinstance(capacity, bool) or not isinstance(capacity, int) or capacity < 1:
            raise ValueError(f"capacity must be a positive integer, got {capacity!r}")
        super().__init__(level=logging.INFO)
        self.broker_id = broker_id
        self.capacity = capacity
        self._events: Deque[Dict[str, Any]] = collections.deque(maxlen=capacity)
        self._seq = 0
        self._logger: Optional[logging.Logger] = None

    # ------------------------------------------------------------------ logging.Handler
    def emit(self, record: logging.LogRecord) -> None:
        kind = getattr(record, "pylog_event", None)
        if kind is None:
            return
        broker = getattr(record, "pylog_broker", None)
        if broker is not None and broker != self.broker_id:
            return  # another broker's event (several servers in one process)
        try:
            message = record.getMessage()
        except Exception:  # bad arguments: keep the format string rather than nothing
            message = str(record.msg)
        event = {"seq": 0, "time_ms": int(record.created * 1000), "level": record.levelname,
                 "kind": str(kind), "message": message,
                 "broker": self.broker_id if broker is None else broker}
        # handle() holds self.lock around emit(); events() takes the same lock.
        self._seq += 1
        event["seq"] = self._seq
        self._events.append(event)

    # ------------------------------------------------------------------ readers
    def events(self, after: int = 0) -> List[Dict[str, Any]]:
        """Copies of the kept events whose ``seq`` is above ``after``, oldest first."""
        self.acquire()
        try:
            if not self._events or self._events[-1]["seq"] <= after:
                return []
            skip = max(0, after - self._events[0]["seq"] + 1)  # seqs are consecutive
            return [dict(e) for e in itertools.islice(self._events, skip, None)]
        finally:
            self.release()

    @property
    def last_seq(self) -> int:
        """The ``seq`` of the newest event kept so far (0 before the first)."""
        self.acquire()
        try:
            return self._seq
        finally:
            self.release()

    # ------------------------------------------------------------------ attaching
    def attach(self, logger: Optional[logging.Logger] = None) -> None:
        """Receive the records of ``logger`` (``pylog`` by default) and its children;
        lowers its level to INFO while attached when it is above (see the module
        docstring)."""
        if self._logger is not None:
            return
        logger = logger if logger is not None else logging.getLogger("pylog")
        with _lowered_lock:
            saved = _lowered.get(logger.name)
            if saved is not None:
                _lowered[logger.name] = (saved[0], saved[1] + 1)
            elif logger.getEffectiveLevel() > logging.INFO:
                _lowered[logger.name] = (logger.level, 1)
                logger.setLevel(logging.INFO)
            logger.addHandler(self)
        self._logger = logger

    def detach(self) -> None:
        """Stop receiving records; the last EventLog detached restores the logger's level."""
        logger = self._logger
        if logger is None:
            return
        self._logger = None
        with _lowered_lock:
            logger.removeHandler(self)
            saved = _lowered.get(logger.name)
            if saved is not None:
                if saved[1] <= 1:
                    del _lowered[logger.name]
                    logger.setLevel(saved[0])
                else:
                    _lowered[logger.name] = (saved[0], saved[1] - 1)
