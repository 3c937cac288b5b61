"""ReplicaFetcher keeps idle partitions out of the busy partitions' requests.

A follower's fetcher threads run against a scripted leader (``_fetch`` overridden, no
sockets): a kernel stand-in asks again for every partition as soon as its answer came
back, as the cluster kernel does.  Partition 0 gets records at every request; the others
never do, until partition 5 starts getting them too.
"""
from __future__ import annotations

import threading
from typing import Any, Dict, List, Set, Tuple

from pylog.server.replication import IDLE_AFTER_EMPTY_ANSWERS, ReplicaFetcher

TP = Tuple[str, int]
_GUARD_S = 60.0  # only a guard against a hang: nothing here asserts on time


class _Kernel:
    """Stands in for the kernel and its network: every answer is asked for again at once."""

    def __init__(self) -> None:
        self.broker_id = 2
        self.fetcher: "ScriptedFetcher"
        self.answers: Dict[TP, int] = {}

    def deliver_later(self, *msgs: Any) -> None:
        bodies = []
        for m in msgs:
            tp = (m.body["topic"], m.body["partition"])
            self.answers[tp] = self.answers.get(tp, 0) + 1
            bodies.append(_body(tp))
        self.fetcher.add_many(bodies)


def _body(tp: TP) -> Dict[str, Any]:
    return {"topic": tp[0], "partition": tp[1], "offset": 0, "last_epoch": -1, "leader_epoch": 0}


class ScriptedFetcher(ReplicaFetcher):
    def __init__(self, kernel: _Kernel, busy: Set[TP], stop_after: int) -> None:
        super().__init__(kernel, leader=1)  # type: ignore[arg-type]
        self.busy = busy
        self.requests: List[frozenset] = []
        self.stop_after = stop_after
        self.idle_requests = 0
        self.done = threading.Event()
        self._leader = threading.Condition()

    def _fetch(self, lane: int, bodies: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
        tps = frozenset((b["topic"], b["partition"]) for b in bodies)
        with self._leader:
            self.requests.append(tps)
            if not self.busy & tps:
                self.idle_requests += 1
            # Done after stop_after requests, one of them an idle request: that lane's
            # thread may not get the GIL for a while (the busy lane's requests are
            # answered at once and never block), so a count alone could end the run
            # before it sent anything.
            if len(self.requests) >= self.stop_after and self.idle_requests:
                self.done.set()
            self._leader.notify_all()  # a test waiting for this request, the held ones if done
            # The leader holds a request none of whose partitions has records (a long
            # poll) until one of them gets some or the fetcher stops.
            self._leader.wait_for(lambda: bool(tps & self.busy) or self.done.is_set(), timeout=_GUARD_S)
        return [{"topic": tp[0], "partition": tp[1], "leader_epoch": 0, "hw": 0, "log_start": 0,
                 "data": b"x" if tp in self.busy else b""} for tp in tps]

    def make_busy(self, tp: TP) -> None:
        with self._leader:
            self.busy.add(tp)
            self._leader.notify_all()

    def stop(self) -> None:
        self.done.set()
        with self._leader:
            self._leader.notify_all()
        super().stop()


def _run(fetcher: ScriptedFetcher, kernel: _Kernel, tps: List[TP]) -> None:
    kernel.fetcher = fetcher
    fetcher.start()
    try:
        fetcher.add_many([_body(tp) for tp in tps])
        assert fetcher.done.wait(_GUARD_S), \
            f"the fetcher sent {len(fetcher.requests)} requests, {fetcher.idle_requests} of them for idle partitions"
    finally:
        fetcher.stop()
        fetcher.join()


def test_idle_partitions_leave_the_busy_request_and_are_still_fetched() -> None:
    tps = [("t", p) for p in range(10)]
    kernel = _Kernel()
    fetcher = ScriptedFetcher(kernel, busy={("t", 0)}, stop_after=200)
    _run(fetcher, kernel, tps)
    reqs = fetcher.requests
    busy = [r for r in reqs if ("t", 0) in r]
    # At first every partition goes in the busy request; after IDLE_AFTER_EMPTY_ANSWERS
    # empty answers the idle ones leave it, and stay out.
    assert busy[0] == frozenset(tps)
    tail = busy[IDLE_AFTER_EMPTY_ANSWERS + 2:]
    assert len(tail) > 100
    assert all(r == {("t", 0)} for r in tail), [sorted(r) for r in tail if r != {("t", 0)}][:3]
    # ... and go together in a request of their own, which the leader holds.
    idle = [r for r in reqs if ("t", 0) not in r]
    assert idle and all(r == frozenset(tps[1:]) for r in idle)


def test_an_idle_partition_that_gets_records_rejoins_the_busy_ones() -> None:
    tps = [("t", p) for p in range(10)]
    kernel = _Kernel()
    fetcher = ScriptedFetcher(kernel, busy={("t", 0)}, stop_after=10**9)
    kernel.fetcher = fetcher
    fetcher.start()
    try:
        fetcher.add_many([_body(tp) for tp in tps])
        with fetcher._leader:  # wait (bounded) for the idle request to be held at the leader
            assert fetcher._leader.wait_for(
                lambda: any(r == frozenset(tps[1:]) for r in fetcher.requests), timeout=_GUARD_S)
        seen = len(fetcher.requests)
        fetcher.make_busy(("t", 5))
        with fetcher._leader:
            assert fetcher._leader.wait_for(
                lambda: any(r == {("t", 0), ("t", 5)} for r in fetcher.requests[seen:]), timeout=_GUARD_S), \
                [sorted(r) for r in fetcher.requests[seen:]][:5]
    finally:
        fetcher.stop()
        fetcher.join()
    # partition 5 was answered (with its records) and asked for again with partition 0
    assert kernel.answers[("t", 5)] >= 2
