"""Replication between `pylog serve` processes: the cluster kernel's messages over TCP.

The cluster kernel (:mod:`pylog.cluster.kernel`) replicates by messages: a follower
sends ``fetch`` (topic, partition, its log end offset, the epoch of its last batch, the
leader epoch it follows) and the leader answers ``fetch_response`` (batches, high
watermark, log start, or where the follower's log diverged, or an error).  In one
process :class:`~pylog.cluster.kernel.Network` carries them; between processes
:class:`WireNetwork` does, with Kafka's own request, so that a Kafka tool watching the
wire sees what it knows:

- **Follower side.** One :class:`ReplicaFetcher` thread per leader broker gathers the
  kernel's ``fetch`` messages for that leader into one Fetch request (v12: replica id
  set, ``current_leader_epoch``, ``fetch_offset``, ``last_fetched_epoch``), sends it on
  its own connection — first, for a partition it has not yet fetched at the current
  leader epoch, an OffsetsForLeaderEpoch request (replica id set) to learn where its last
  epoch ends on the leader, as Kafka's fetcher does before fetching — and turns the
  answer's partitions back into ``fetch_response``
  messages: records, high watermark and log start offset; ``diverging_epoch`` (KIP-320:
  the follower truncates there); a log start above the fetch offset (the leader's log
  begins later: start over there); or an error code (the kernel backs off and asks
  again).  A connection that fails gives every partition of the request an error.
- **Leader side.** The server's Fetch handler hands a request with a replica id to
  :meth:`WireNetwork.serve`, which delivers one ``fetch`` per partition to the kernel at
  once.  The kernel answers a partition with data at once and holds (parks) one that
  has nothing new, up to replica.fetch.wait.max.ms; the wire request is answered as soon
  as any of its partitions has an answer, the parked ones then answering with what they
  have (nothing), so one partition's data never waits for another's timeout.

The kernel stays sans-I/O: this module is one of its drivers' parts.
"""
from __future__ import annotations

import logging
import ssl
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable, Deque, Dict, List, Optional, Set, Tuple

from pylog.errors import PylogError, SaslAuthenticationFailed

__all__ = ["WireNetwork", "ReplicaFetcher", "WireMessage", "FETCH_VERSION"]

log = logging.getLogger("pylog.replication")

#: The Fetch version followers send: the first with last_fetched_epoch/diverging_epoch
#: (KIP-320) that still names topics (v13 uses topic ids).
FETCH_VERSION = 12
_FETCH = 1
_OFFSET_FOR_LEADER_EPOCH = 23
#: The first OffsetForLeaderEpoch version with a replica id.
_OFFSET_FOR_LEADER_EPOCH_VERSION = 3

#: Kafka error codes the kernel's replies name.
_CODES = {"NOT_LEADER_OR_FOLLOWER": 6, "FENCED_LEADER_EPOCH": 74, "UNKNOWN_TOPIC_OR_PARTITION": 3,
          "NETWORK_EXCEPTION": 13, "REQUEST_TIMED_OUT": 7}
_NAMES = {v: k for k, v in _CODES.items()}

TopicPartition = Tuple[str, int]
#: How long a fetcher waits for the partitions of its last answer to be asked again
#: before it sends what it has (the kernel asks again at its next step, at once).
_REGROUP_S = 0.02
#: A partition whose last this many answers brought nothing (no records, no error) is
#: idle: it is fetched in a request of its own, apart from the partitions that have data
#: (see :class:`ReplicaFetcher`).
IDLE_AFTER_EMPTY_ANSWERS = 3
#: Requests a fetcher has in flight to its leader at most (each lane a thread and a
#: connection, made when a partition finds every lane's request in flight): up to
#: this many, a partition never waits behind a request held at the leader (see
#: :class:`ReplicaFetcher`).
_MAX_LANES = 8


@dataclass
class WireMessage:
    """A kernel message that came over the wire (the fields the kernel's delivery reads)."""

    src: Any
    dst: Any
    kind: str
    body: Dict[str, Any]
    deliver_at: int = 0


@dataclass
class _Served:
    """One follower's Fetch request, answered when every partition has its reply."""

    follower: int
    tps: List[TopicPartition]
    done: Callable[[List[Dict[str, Any]]], None]
    replies: Dict[TopicPartition, Dict[str, Any]] = field(default_factory=dict)
    collecting: bool = True  #: still handing the partitions to the kernel
    finished: bool = False


class WireNetwork:
    """The kernel's network for one broker process (see the module docstring).

    ``resolve(broker_id)`` gives a broker's ``(host, port)`` (from its registration) or
    None; ``wake()`` is called when messages arrived for the kernel, so that the driver
    steps at once.  The driver sets :attr:`kernel` and calls every method that touches
    the kernel under its lock."""

    def __init__(self, broker_id: int, resolve: Callable[[int], Optional[Tuple[str, int]]], *,
                 fetch_max_wait_ms: int = 500, fetch_max_bytes: int = 1 << 20,
                 socket_timeout_ms: int = 30_000, connect_timeout_s: float = 5.0,
                 ssl_context: Optional[ssl.SSLContext] = None, sasl: Any = None) -> None:
        self.broker_id = broker_id
        #: SASL login for the connections to the other brokers (a SASL inter-broker
        #: listener): a pylog.client.network.connection.SaslLogin, or None.
        self.sasl = sasl
        #: TLS for the connections to the other brokers (an SSL inter-broker listener);
        #: replaced when the certificates are reloaded (new connections use the new one).
        self.ssl_context = ssl_context
        self.resolve = resolve
        self.fetch_max_wait_ms = fetch_max_wait_ms
        self.fetch_max_bytes = fetch_max_bytes
        self.socket_timeout_ms = socket_timeout_ms
        self.connect_timeout_s = connect_timeout_s
        self.kernel: Any = None
        self.wake: Callable[[], None] = lambda: None
        self._inbox: Deque[WireMessage] = deque()
        self._outbox: Dict[int, List[Dict[str, Any]]] = {}  #: leader -> fetch bodies of this step
        self._fetchers: Dict[int, "ReplicaFetcher"] = {}
        self._serving: Dict[Tuple[int, str, int], _Served] = {}
        self._fetchers_lock = threading.Lock()
        self._closed = False
        self.sent = self.dropped = 0

    # ------------------------------------------------------------- kernel's side
    def reachable(self, a: Any, b: Any) -> bool:
        """Cuts are real here (a dead or unreachable broker fails its requests)."""
        return True

    def send(self, src: Any, dst: Any, kind: str, body: Dict[str, Any], now: int) -> None:
        self.sent += 1
        if kind == "fetch":
            # Held until the step ends (end_step): a leader's partitions go to its fetcher together.
            self._outbox.setdefault(int(dst), []).append(body)
        elif kind == "fetch_response":
            self._reply(int(dst), body, now)
        else:  # pragma: no cover - the kernel sends nothing else
            raise ValueError(f"the wire network carries no {kind!r} messages")

    def end_step(self, now: int) -> None:
        """The kernel's step is over: hand each leader's fetcher the fetches of the step."""
        if not self._outbox:
            return
        outbox, self._outbox = self._outbox, {}
        for dst, bodies in outbox.items():
            self._fetcher(dst).add_many(bodies)

    def due(self, now: int) -> List[WireMessage]:
        out = []
        while True:
            try:
                out.append(self._inbox.popleft())
            except IndexError:
                return out

    def next_time(self) -> Optional[int]:
        return 0 if self._inbox else None

    def deliver_later(self, *msgs: WireMessage) -> None:
        """From a fetcher thread: queue messages for the kernel's next step (the replies of
        one Fetch together, with one wake-up: a step that saw only some of them would ask
        for the others' partitions again in requests of their own)."""
        self._inbox.extend(msgs)
        if msgs:
            self.wake()

    # ------------------------------------------------------------- leader's side
    def serve(self, follower: int, parts: List[Dict[str, Any]], now: int,
              done: Callable[[List[Dict[str, Any]]], None]) -> None:
        """A follower's Fetch request (``parts``: the kernel's fetch bodies).  Call under
        the driver's lock; ``done(replies)`` runs once, maybe inside this call, maybe
        later from the thread that steps the kernel or appends."""
        req = _Served(follower, [(p["topic"], p["partition"]) for p in parts], done)
        for tp in req.tps:
            old = self._serving.get((follower,) + tp)
            if old is not None and not old.finished:
                self._finish(old, now, give_up=True)  # a retry: the old request is dead
            self._serving[(follower,) + tp] = req
        for body in parts:
            if (body["topic"], body["partition"]) in req.replies:
                continue  # asked twice in one request: answered once
            self.kernel.deliver(WireMessage(follower, self.broker_id, "fetch", body), now)
        req.collecting = False
        if req.replies and not req.finished:
            self._finish(req, now)

    def _reply(self, follower: int, body: Dict[str, Any], now: int) -> None:
        tp = (body["topic"], body["partition"])
        req = self._serving.get((follower,) + tp)
        if req is None or req.finished:
            self.dropped += 1  # its request was answered already (or abandoned)
            return
        req.replies.setdefault(tp, body)
        if not req.collecting:
            self._finish(req, now)

    def _finish(self, req: _Served, now: int, give_up: bool = False) -> None:
        if req.finished:
            return
        req.finished = True  # before answering the parked ones: their replies come back here
        missing = [tp for tp in req.tps if tp not in req.replies]
        if missing and not give_up:
            req.finished = False
            req.collecting = True  # their replies arrive during this call
            self.kernel.answer_parked_now(self.broker_id, req.follower, missing, now)
            req.collecting = False
            req.finished = True
        for tp in req.tps:
            if self._serving.get((req.follower,) + tp) is req:
                del self._serving[(req.follower,) + tp]
        out = []
        for tp in req.tps:
            body = req.replies.get(tp)
            if body is None:
                body = {"topic": tp[0], "partition": tp[1], "error": "REQUEST_TIMED_OUT"}
            out.append(body)
        try:
            req.done(out)
        except Exception:  # never let a connection's trouble reach the kernel
            log.exception("answering broker %d's replica fetch failed", req.follower)

    # ------------------------------------------------------------- fetchers
    def _fetcher(self, leader: int) -> "ReplicaFetcher":
        f = self._fetchers.get(leader)
        if f is None:
            with self._fetchers_lock:
                f = self._fetchers.get(leader)
                if f is None:
                    f = ReplicaFetcher(self, leader)
                    self._fetchers[leader] = f
                    if not self._closed:
                        f.start()
        return f

    def close(self) -> None:
        """Stop every fetcher thread (waits for them)."""
        with self._fetchers_lock:
            self._closed = True
            fetchers = list(self._fetchers.values())
        for f in fetchers:
            f.stop()
        for f in fetchers:
            f.join()


def encode_error(name: str) -> int:
    """Kafka's error code for a kernel reply's error name."""
    return _CODES.get(name, -1)


class ReplicaFetcher:
    """Fetches every partition this broker follows from one leader.

    A fetch with nothing new for any of its partitions is held at the leader (a long
    poll, up to replica.fetch.wait.max.ms).  A partition handed to the fetcher while its
    request waits there — one this broker now follows at a new leader epoch, whose first
    fetch the leader's acks=all producers wait for, or one whose answer came back after
    the others — must not wait behind it: the fetcher sends it at once in a request of
    another lane (a thread with a connection of its own; a new one when every lane's
    request is in flight, up to :data:`_MAX_LANES`).  In a rolling restart the
    controller moves leaderships one at a time, idle ones too, and each first fetch
    would wait up to replica.fetch.wait.max.ms behind the one before.  A partition is
    in one request at a time, and a lane sends the partitions of its last answer
    together again with whatever else waits (see :data:`_REGROUP_S`), so the partitions
    of active lanes merge back into one request.

    Idle partitions travel apart.  A leader answers a Fetch as soon as one of its
    partitions has records, every other partition with an empty answer, and the
    follower asks for all of them again: with every idle partition in the same request
    as the busy ones, each round trip of a busy partition would carry, decode, step and
    encode every idle one (a broker following 60 idle partitions and 2 busy ones went at
    a fifth of the speed it had with the 2 alone).  Kafka avoids this with incremental
    fetch sessions (KIP-227), which leave unchanged partitions out of requests and
    answers.  Here a partition whose last :data:`IDLE_AFTER_EMPTY_ANSWERS` answers were
    empty goes into one request of idle partitions only, which the leader holds until
    one of them gets records (or replica.fetch.wait.max.ms passes); that partition is
    busy again from its next answer on."""

    def __init__(self, network: WireNetwork, leader: int) -> None:
        self.network = network
        self.leader = leader
        self._cond = threading.Condition()
        self._pending: Dict[TopicPartition, Dict[str, Any]] = {}
        #: Partitions in a request now (in no other request until it is answered).
        self._inflight: Set[TopicPartition] = set()
        #: lane -> the partitions of its last answer it waits for, to fetch them together.
        self._awaited: Dict[int, Set[TopicPartition]] = {}
        self._stopped = False
        self._started = False
        #: Per lane: its thread and connection; how many lanes have a request in flight.
        self._threads: List[threading.Thread] = []
        self._conns: List[Any] = []
        self._busy = 0
        self._last_error = ""
        #: partition -> the leader epoch at which OffsetsForLeaderEpoch found it in line
        self._validated: Dict[TopicPartition, int] = {}
        #: partition -> how many answers in a row brought it nothing; idle partitions
        #: (at IDLE_AFTER_EMPTY_ANSWERS or more) and whether their request is out.
        self._empty_answers: Dict[TopicPartition, int] = {}
        self._idle: Set[TopicPartition] = set()
        self._idle_inflight = False
        #: partitions whose last answer brought records: a request with one of them is
        #: answered soon (not held at the leader), so a lane regrouping waits for them
        self._hot: Set[TopicPartition] = set()

    def start(self) -> None:
        with self._cond:
            self._started = True
            self._add_lane()

    def _add_lane(self) -> None:
        """Under the condition: start one more lane."""
        lane = len(self._threads)
        t = threading.Thread(target=self._run, args=(lane,), daemon=True,
                             name=f"pylog-replica-fetcher-{self.leader}" + (f"-{lane}" if lane else ""))
        self._threads.append(t)
        self._conns.append(None)
        t.start()

    def add_many(self, bodies: List[Dict[str, Any]]) -> None:
        """Queue the kernel's fetch bodies of one step, with one wake-up of the lanes:
        woken once per body, the lanes would take them one by one, each partition in a
        request of its own."""
        with self._cond:
            for body in bodies:
                self._pending[(body["topic"], body["partition"])] = body
            if self._started and not self._stopped and self._busy == len(self._threads) \
                    and len(self._threads) < _MAX_LANES:
                self._add_lane()  # every request is in flight (maybe held at the leader)
            self._cond.notify_all()

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify_all()
            conns = list(self._conns)
        for conn in conns:
            if conn is not None:
                conn.close()

    def join(self, timeout_s: float = 10.0) -> None:
        with self._cond:
            threads = list(self._threads)
        for t in threads:
            if t.is_alive():
                t.join(timeout_s)

    def _run(self, lane: int) -> None:
        expect: Set[TopicPartition] = set()
        while True:
            with self._cond:
                batch = self._take(lane, expect)
                if batch is None:
                    break
                idle_request = not self._idle_inflight and not batch.keys().isdisjoint(self._idle)
                if idle_request:
                    self._idle_inflight = True
                self._inflight.update(batch)
                self._busy += 1
                if not idle_request and not self._idle_inflight and self._busy == len(self._threads) \
                        and len(self._threads) < _MAX_LANES and (self._pending.keys() & self._idle):
                    self._add_lane()  # idle partitions wait and every lane is busy
            try:
                replies = self._fetch(lane, list(batch.values()))
            except Exception as exc:  # a bug: fail this round, keep fetching (logged once)
                if repr(exc) != self._last_error:
                    log.exception("broker %d: replica fetch from broker %d failed", self.network.broker_id,
                                  self.leader)
                replies = self._errors(list(batch.values()), "NETWORK_EXCEPTION", repr(exc))
            with self._cond:
                self._note_answers(replies)
                expect = {(r["topic"], r["partition"]) for r in replies if "error" not in r} - self._idle
                if idle_request:
                    self._idle_inflight = False
                self._inflight.difference_update(batch)
                self._busy -= 1
                if expect:
                    self._awaited[lane] = expect
                self._cond.notify_all()  # what waited for this request may go now
            self.network.deliver_later(*[WireMessage(self.leader, self.network.broker_id, "fetch_response", body)
                                         for body in replies])
        conn = self._conns[lane]
        if conn is not None:
            conn.close()

    def _note_answers(self, replies: List[Dict[str, Any]]) -> None:
        """Under the condition: count each partition's empty answers in a row; a partition
        is idle from :data:`IDLE_AFTER_EMPTY_ANSWERS` of them until one brings something."""
        for r in replies:
            tp = (r["topic"], r["partition"])
            if r.get("data") and "error" not in r:
                self._hot.add(tp)
            else:
                self._hot.discard(tp)
            if "error" in r or "diverging" in r or "reset_to" in r or r.get("data"):
                self._empty_answers.pop(tp, None)
                self._idle.discard(tp)
                continue
            n = self._empty_answers.get(tp, 0) + 1
            self._empty_answers[tp] = n
            if n >= IDLE_AFTER_EMPTY_ANSWERS:
                self._idle.add(tp)

    def _take(self, lane: int, expect: Set[TopicPartition]) -> Optional[Dict[TopicPartition, Dict[str, Any]]]:
        """Under the condition: wait for partitions this lane may send, and take them
        (None once stopped).  The partitions of the lane's last answer come back from
        the kernel's next step, at once: the lane waits for them up to :data:`_REGROUP_S`
        and sends them together with whatever else waits (so two lanes' partitions merge
        again into one request), and for the partitions with records in other lanes'
        requests, which come back as soon; meanwhile a free lane leaves them alone, but
        takes any other partition at once.  Idle partitions go in a request of their
        own, one at a time, taken by a lane that waits for nothing else; while it is
        out, partitions that turned idle since go with the busy ones."""
        deadline = time.monotonic() + _REGROUP_S if expect else None
        while not self._stopped:
            ready = self._pending.keys() - self._inflight
            # While the idle request is out, a partition that turned idle since goes on
            # with the busy ones: held back, records arriving for it would wait for that
            # request's answer (up to replica.fetch.wait.max.ms).
            busy_ready = ready if self._idle_inflight else ready - self._idle
            if deadline is not None:
                # Also wait for the partitions with records in another lane's request: it
                # comes back soon, and whichever lane sends next takes both lanes'
                # partitions (left to chance, two busy lanes could stay apart for good).
                if (expect - ready or self._inflight & self._hot) and time.monotonic() < deadline:
                    self._cond.wait(deadline - time.monotonic())
                    continue
                deadline = None
                self._awaited.pop(lane, None)
                take = busy_ready
            else:
                take = busy_ready - set().union(*self._awaited.values())
                if not take and not self._idle_inflight:
                    take = ready & self._idle
            if take:
                return {tp: self._pending.pop(tp) for tp in take}
            self._cond.wait()
        self._awaited.pop(lane, None)
        return None

    def _errors(self, bodies: List[Dict[str, Any]], name: str, why: str) -> List[Dict[str, Any]]:
        if why != self._last_error:
            self._last_error = why
            log.info("broker %d: fetching from broker %d: %s", self.network.broker_id, self.leader, why)
        return [{"topic": b["topic"], "partition": b["partition"], "leader_epoch": b["leader_epoch"],
                 "error": name} for b in bodies]

    def _connection(self, lane: int) -> Any:
        from pylog.client.network.connection import BrokerConnection

        conn = self._conns[lane]
        if conn is not None and not conn.closed:
            return conn
        addr = self.network.resolve(self.leader)
        if addr is None:
            raise ConnectionError(f"broker {self.leader} is not registered")
        conn = BrokerConnection.open(addr[0], addr[1], client_id=f"pylog-replica-{self.network.broker_id}",
                                     name=f"replica fetcher {self.network.broker_id}->{self.leader}"
                                          + (f" ({lane + 1})" if lane else ""),
                                     connect_timeout_s=self.network.connect_timeout_s,
                                     request_timeout_s=self.network.socket_timeout_ms / 1000.0,
                                     ssl_context=self.network.ssl_context, sasl=self.network.sasl)
        with self._cond:
            self._conns[lane] = conn
            stopped = self._stopped
        if stopped:  # stop() may have missed it
            conn.close()
        return conn

    def _fetch(self, lane: int, bodies: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
        net = self.network
        try:
            conn = self._connection(lane)
        except SaslAuthenticationFailed as exc:  # the operator's to fix: say it loudly, once
            why = f"cannot connect: the SASL login was refused: {exc}"
            if why != self._last_error:
                log.warning("broker %d: fetching from broker %d: %s", net.broker_id, self.leader, why)
                self._last_error = why
            return self._errors(bodies, "NETWORK_EXCEPTION", why)
        except (OSError, PylogError, ConnectionError) as exc:
            return self._errors(bodies, "NETWORK_EXCEPTION", f"cannot connect: {exc}")
        diverged, bodies = self._validate(conn, bodies)
        if not bodies:
            return diverged
        topics: Dict[str, List[Dict[str, Any]]] = {}
        for b in bodies:
            topics.setdefault(b["topic"], []).append({
                "partition": b["partition"], "current_leader_epoch": b["leader_epoch"],
                "fetch_offset": b["offset"], "last_fetched_epoch": b["last_epoch"], "log_start_offset": -1,
                # a throttled follower asks for less (pylog.cluster.throttle)
                "partition_max_bytes": max(1, min(net.fetch_max_bytes, b.get("max_bytes", net.fetch_max_bytes)))})
        data = {"cluster_id": None, "replica_id": net.broker_id, "max_wait": net.fetch_max_wait_ms, "min_bytes": 1,
                "max_bytes": max(net.fetch_max_bytes, 1 << 20) * 4, "isolation_level": 0, "session_id": 0,
                "session_epoch": -1, "topics": [{"topic": t, "partitions": ps} for t, ps in topics.items()],
                "forgotten_topics_data": [], "rack_id": ""}
        timeout_s = (net.fetch_max_wait_ms + net.socket_timeout_ms) / 1000.0
        try:
            pending = conn.send(_FETCH, data, timeout_s=timeout_s, version=FETCH_VERSION,
                                what=f"replica Fetch from broker {self.leader}")
            resp = pending.result()
        except PylogError as exc:
            conn.close()
            return self._errors(bodies, "NETWORK_EXCEPTION", str(exc))
        self._last_error = ""
        return diverged + self._replies(bodies, resp)

    def _validate(self, conn: Any, bodies: List[Dict[str, Any]]) -> Tuple[List[Dict[str, Any]], List[Dict[str, Any]]]:
        """Before the first fetch of a partition from this leader at a leader epoch, ask
        OffsetsForLeaderEpoch (replica id set) where the follower's last epoch ends on the
        leader, as Kafka's fetcher does in its truncating state: a partition whose log
        diverged gets its diverging (epoch, end offset) now and is not fetched this round.
        The Fetch's last_fetched_epoch checks the same again at every fetch (KIP-320).
        Returns (replies for diverged partitions, bodies to fetch)."""
        todo = [b for b in bodies if b["last_epoch"] >= 0
                and self._validated.get((b["topic"], b["partition"])) != b["leader_epoch"]]
        if not todo:
            return [], bodies
        topics: Dict[str, List[Dict[str, Any]]] = {}
        for b in todo:
            topics.setdefault(b["topic"], []).append({"partition": b["partition"],
                                                      "current_leader_epoch": b["leader_epoch"],
                                                      "leader_epoch": b["last_epoch"]})
        data = {"replica_id": self.network.broker_id,
                "topics": [{"topic": t, "partitions": ps} for t, ps in topics.items()]}
        try:
            pending = conn.send(_OFFSET_FOR_LEADER_EPOCH, data, timeout_s=self.network.socket_timeout_ms / 1000.0,
                                version=_OFFSET_FOR_LEADER_EPOCH_VERSION,
                                what=f"OffsetsForLeaderEpoch to broker {self.leader}")
            resp = pending.result()
        except PylogError:
            return [], bodies  # the Fetch's own epoch check still applies
        answers: Dict[TopicPartition, Tuple[int, int, int]] = {}
        for t in resp.topics:
            for p in t.partitions:
                answers[(t.topic, p.partition)] = (p.error_code, int(p.leader_epoch), int(p.end_offset))
        diverged: List[Dict[str, Any]] = []
        keep: List[Dict[str, Any]] = []
        for b in bodies:
            tp = (b["topic"], b["partition"])
            ans = answers.get(tp) if b in todo else None
            if ans is None or ans[0] != 0:
                keep.append(b)  # not asked, or an error: the Fetch decides
                continue
            _err, epoch, end = ans
            if epoch != b["last_epoch"] or end < b["offset"]:
                diverged.append({"topic": tp[0], "partition": tp[1], "leader_epoch": b["leader_epoch"],
                                 "diverging": (epoch, end)})
            else:
                self._validated[tp] = b["leader_epoch"]
                keep.append(b)
        return diverged, keep

    def _replies(self, bodies: List[Dict[str, Any]], resp: Any) -> List[Dict[str, Any]]:
        from pylog.client.network.records import whole_prefix

        asked = {(b["topic"], b["partition"]): b for b in bodies}
        out: Dict[TopicPartition, Dict[str, Any]] = {}
        top_error = getattr(resp, "error_code", 0)
        for t in resp.responses:
            for p in t.partitions:
                tp = (t.topic, p.partition_index)
                b = asked.get(tp)
                if b is None or tp in out:
                    continue
                reply: Dict[str, Any] = {"topic": tp[0], "partition": tp[1], "leader_epoch": b["leader_epoch"]}
                if p.error_code or top_error:
                    reply["error"] = _NAMES.get(p.error_code or top_error, f"ERROR_{p.error_code or top_error}")
                elif p.diverging_epoch is not None and p.diverging_epoch.epoch >= 0:
                    reply["diverging"] = (int(p.diverging_epoch.epoch), int(p.diverging_epoch.end_offset))
                else:
                    records = p.records or b""
                    n, _ = whole_prefix(records)
                    reply["data"] = bytes(records[:n])
                    reply["hw"] = int(p.high_watermark)
                    reply["log_start"] = int(p.log_start_offset)
                    if p.log_start_offset > b["offset"]:
                        reply["reset_to"] = int(p.log_start_offset)
                out[tp] = reply
        missing = [b for tp, b in asked.items() if tp not in out]
        return list(out.values()) + self._errors(missing, "UNKNOWN_TOPIC_OR_PARTITION",
                                                 "the leader's answer left partitions out") if missing \
            else list(out.values())
