"""Delayed operations, as Kafka's purgatory: requests that must wait for an event.

A Fetch that found fewer than ``min.bytes`` waits here until an append makes data
readable in one of its partitions, or until ``max.wait.ms`` passes; it is never polled.
Operations are keyed by (topic, partition); the broker's data listener calls
:meth:`Purgatory.notify` with the partition whose readable end moved (from any
thread: the notification is moved onto the event loop).
"""
from __future__ import annotations

import asyncio
import threading
from typing import Callable, Dict, Iterable, List, Optional, Set, Tuple

__all__ = ["Purgatory", "DelayedOperation"]

Key = Tuple[str, int]


class DelayedOperation:
    """A waiting request.  ``try_complete()`` re-checks its condition and returns True
    when it answered; ``expire()`` answers with what there is."""

    __slots__ = ("keys", "done", "_timer", "_try", "_expire")

    def __init__(self, keys: Iterable[Key], try_complete: Callable[[], bool],
                 expire: Callable[[], None]) -> None:
        self.keys: List[Key] = list(keys)
        self.done = False
        self._timer: Optional[asyncio.TimerHandle] = None
        self._try = try_complete
        self._expire = expire


class Purgatory:
    """Delayed operations of one event loop, keyed by partition."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._thread = threading.get_ident()
        self._watchers: Dict[Key, Set[DelayedOperation]] = {}
        self._pending_keys: Set[Key] = set()
        self._scheduled = False
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len({op for ops in self._watchers.values() for op in ops})

    def add(self, op: DelayedOperation, timeout_s: float) -> None:
        """Park ``op`` until a notify of one of its keys completes it or ``timeout_s``."""
        for k in op.keys:
            self._watchers.setdefault(k, set()).add(op)
        op._timer = self._loop.call_later(max(0.0, timeout_s), self._on_timeout, op)

    def _finish(self, op: DelayedOperation) -> None:
        op.done = True
        if op._timer is not None:
            op._timer.cancel()
            op._timer = None
        for k in op.keys:
            ops = self._watchers.get(k)
            if ops is not None:
                ops.discard(op)
                if not ops:
                    del self._watchers[k]

    def _on_timeout(self, op: DelayedOperation) -> None:
        if op.done:
            return
        self._finish(op)
        op._expire()

    def notify(self, topic: str, partition: int) -> None:
        """Data of (topic, partition) became readable: re-check its waiting operations.
        Safe from any thread."""
        if threading.get_ident() == self._thread:
            self._check((topic, partition))
            return
        with self._lock:
            self._pending_keys.add((topic, partition))
            if self._scheduled:
                return
            self._scheduled = True
        try:
            self._loop.call_soon_threadsafe(self._drain)
        except RuntimeError:  # the loop is closed: nothing waits any more
            pass

    def _drain(self) -> None:
        with self._lock:
            keys, self._pending_keys = self._pending_keys, set()
            self._scheduled = False
        for k in keys:
            self._check(k)

    def _check(self, key: Key) -> None:
        ops = self._watchers.get(key)
        if not ops:
            return
        for op in list(ops):
            if op.done:
                continue
            if op._try():
                self._finish(op)

    def expire_all(self) -> None:
        """Answer every waiting operation now (shutdown)."""
        ops = {op for s in self._watchers.values() for op in s}
        for op in ops:
            if not op.done:
                self._finish(op)
                op._expire()
