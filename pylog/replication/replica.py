"""The replication state of one partition on one broker, as a sans-I/O state machine.

A :class:`ReplicaState` is told what happened — it became leader or follower, its log
grew, a follower fetched, time passed, the ISR changed in the metadata store — and
answers with decisions: the new high watermark, ISR changes to propose (each with a
reason), produce requests whose acks are now complete or failed.  It reads no clock,
file or socket; the driver (``pylog.cluster.kernel``) does the log I/O and carries
messages, under real time (LocalCluster) or a simulator's virtual time.

Kafka's rules, as docs/architecture.md states them:

* the leader tracks each follower's log end offset (the offset it fetches from) and the
  last time it was caught up; HW = min LEO over the ISR, and never moves backwards;
* a follower not caught up for ``replica.lag.time.max.ms`` leaves the ISR; a follower
  outside the ISR rejoins once its LEO reaches the HW (and the current epoch's start);
* acks=all completes when the HW passes the batch's last offset, provided the ISR had at
  least ``min.insync.replicas`` members; if it shrank below that while waiting, the
  producer gets NotEnoughReplicasAfterAppend.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, FrozenSet, List, Optional, Tuple

from pylog.errors import NotEnoughReplicas, NotEnoughReplicasAfterAppend, PylogError

__all__ = ["ReplicaState", "IsrProposal", "AckDone", "LEADER", "FOLLOWER", "OFFLINE",
           "REPLICA_LAG_TIME_MAX_MS"]

LEADER = "leader"
FOLLOWER = "follower"
OFFLINE = "offline"

#: replica.lag.time.max.ms — Kafka's default.
REPLICA_LAG_TIME_MAX_MS = 30_000


@dataclass(frozen=True)
class IsrProposal:
    """The leader wants the ISR to become ``new_isr`` (to write by compare-and-set)."""

    old_isr: Tuple[int, ...]
    new_isr: Tuple[int, ...]
    reason: str


@dataclass(frozen=True)
class AckDone:
    """A waiting produce is done: ``error`` None means acknowledged."""

    token: Any
    error: Optional[PylogError]


@dataclass
class _Follower:
    leo: int = -1  #: the offset the follower last fetched from (its log end offset)
    last_caught_up_ms: int = 0
    last_fetch_ms: int = -1
    leader_leo_at_last_fetch: int = 0


@dataclass
class _Pending:
    required_offset: int  #: the HW must reach this (the batch's last offset + 1)
    token: Any
    min_isr: int


class ReplicaState:
    """Replication decisions for one partition replica on broker ``broker_id``."""

    def __init__(self, broker_id: int, *, replica_lag_time_max_ms: int = REPLICA_LAG_TIME_MAX_MS) -> None:
        self.broker_id = broker_id
        self.lag_max_ms = replica_lag_time_max_ms
        self.role = OFFLINE
        self.leader_id = -1
        self.leader_epoch = -1
        self.isr: FrozenSet[int] = frozenset()
        self.replicas: Tuple[int, ...] = ()
        self.high_watermark = 0
        self.log_end_offset = 0
        self.epoch_start_offset = 0  #: where this leader's epoch began (its LEO at election)
        self._followers: Dict[int, _Follower] = {}
        self._pending: List[_Pending] = []
        self._proposed: Optional[IsrProposal] = None

    # ----------------------------------------------------------------- roles
    def become_leader(self, leader_epoch: int, isr: Tuple[int, ...], replicas: Tuple[int, ...],
                      log_end_offset: int, high_watermark: int, now: int) -> List[AckDone]:
        """Lead ``leader_epoch``.  Followers count as caught up now (as Kafka does at
        election), so none is dropped before it had replica.lag.time.max.ms to fetch."""
        failed = self._fail_pending("leadership changed")
        self.role = LEADER
        self.leader_id = self.broker_id
        self.leader_epoch = leader_epoch
        self.isr = frozenset(isr)
        self.replicas = tuple(replicas)
        self.log_end_offset = log_end_offset
        self.high_watermark = min(high_watermark, log_end_offset)
        self.epoch_start_offset = log_end_offset
        self._followers = {r: _Follower(last_caught_up_ms=now) for r in replicas if r != self.broker_id}
        self._proposed = None
        self._advance_hw()
        return failed

    def become_follower(self, leader_id: int, leader_epoch: int, replicas: Tuple[int, ...],
                        isr: Tuple[int, ...]) -> List[AckDone]:
        failed = self._fail_pending("leadership changed")
        self.role = FOLLOWER if leader_id >= 0 else OFFLINE
        self.leader_id = leader_id
        self.leader_epoch = leader_epoch
        self.replicas = tuple(replicas)
        self.isr = frozenset(isr)
        self._followers = {}
        self._proposed = None
        return failed

    def set_replicas(self, replicas: Tuple[int, ...], now: int) -> None:
        """The partition's assignment changed (a reassignment).  A leader starts tracking
        the added followers (caught up as of now, as at election; they join the ISR once
        they reach the HW) and forgets the removed ones."""
        self.replicas = tuple(replicas)
        if self.role != LEADER:
            return
        keep = {r: f for r, f in self._followers.items() if r in self.replicas}
        for r in self.replicas:
            if r != self.broker_id and r not in keep:
                keep[r] = _Follower(last_caught_up_ms=now)
        self._followers = keep

    def go_offline(self) -> List[AckDone]:
        failed = self._fail_pending("replica went offline")
        self.role = OFFLINE
        self.leader_id = -1
        self._followers = {}
        return failed

    # ---------------------------------------------------------------- leader
    def check_can_append(self, required_acks: int, min_isr: int) -> None:
        """Before a leader appends with acks=all: NotEnoughReplicas if the ISR is too small."""
        if required_acks == -1 and len(self.isr) < min_isr:
            raise NotEnoughReplicas(
                f"the ISR {sorted(self.isr)} has {len(self.isr)} members, fewer than "
                f"min.insync.replicas={min_isr}; nothing was written")

    def on_appended(self, log_end_offset: int, *, token: Any = None, required_offset: int = -1,
                    required_acks: int = 1, min_isr: int = 1) -> List[AckDone]:
        """The leader's log grew to ``log_end_offset``.  With acks=all, ``token`` waits
        until the HW reaches ``required_offset``."""
        self.log_end_offset = log_end_offset
        if required_acks == -1 and token is not None:
            self._pending.append(_Pending(required_offset, token, min_isr))
        self._advance_hw()
        return self._complete()

    def on_fetch(self, follower_id: int, fetch_offset: int, now: int) -> Tuple[int, Optional[IsrProposal],
                                                                          List[AckDone]]:
        """A follower fetched from ``fetch_offset`` (= its LEO).  Returns (HW to send it,
        an ISR expansion to propose or None, acks completed)."""
        f = self._followers.get(follower_id)
        if self.role != LEADER or f is None:
            return self.high_watermark, None, []
        if fetch_offset >= self.log_end_offset:
            f.last_caught_up_ms = now
        elif f.last_fetch_ms >= 0 and fetch_offset >= f.leader_leo_at_last_fetch:
            f.last_caught_up_ms = max(f.last_caught_up_ms, f.last_fetch_ms)
        f.leo = fetch_offset
        f.last_fetch_ms = now
        f.leader_leo_at_last_fetch = self.log_end_offset
        proposal = None
        if (follower_id not in self.isr and fetch_offset >= self.high_watermark
                and fetch_offset >= self.epoch_start_offset and self._proposed is None):
            new = tuple(sorted(self.isr | {follower_id}))
            proposal = self._proposed = IsrProposal(tuple(sorted(self.isr)), new,
                                                    f"replica {follower_id} caught up to offset {fetch_offset}")
        self._advance_hw()
        return self.high_watermark, proposal, self._complete()

    def tick(self, now: int) -> Optional[IsrProposal]:
        """ISR shrink: followers in the ISR not caught up for replica.lag.time.max.ms."""
        if self.role != LEADER or self._proposed is not None:
            return None
        out = [r for r in sorted(self.isr) if r != self.broker_id and r in self._followers
               and now - self._followers[r].last_caught_up_ms > self.lag_max_ms]
        if not out:
            return None
        new = tuple(sorted(self.isr - set(out)))
        lag = {r: now - self._followers[r].last_caught_up_ms for r in out}
        self._proposed = IsrProposal(tuple(sorted(self.isr)), new,
                                     "not caught up for " + ", ".join(f"replica {r}: {ms} ms" for r, ms in lag.items())
                                     + f" (replica.lag.time.max.ms={self.lag_max_ms})")
        return self._proposed

    def on_isr_changed(self, isr: Tuple[int, ...]) -> List[AckDone]:
        """The ISR in the metadata store is now ``isr`` (ours or the controller's write)."""
        self._proposed = None
        self.isr = frozenset(isr)
        done = self._complete()
        if self.role == LEADER:
            self._advance_hw()
            done += self._complete()
        return done

    def proposal_failed(self) -> None:
        """The compare-and-set lost: decide again at the next tick or fetch."""
        self._proposed = None

    def _advance_hw(self) -> None:
        if self.role != LEADER:
            return
        leos = [self.log_end_offset]
        for r in self.isr:
            if r == self.broker_id:
                continue
            f = self._followers.get(r)
            leos.append(f.leo if f is not None else -1)
        hw = min(leos)
        if hw > self.high_watermark:  # never backwards on a leader
            self.high_watermark = hw

    def _complete(self) -> List[AckDone]:
        if not self._pending:
            return []
        done, keep = [], []
        for p in self._pending:
            if self.high_watermark >= p.required_offset:
                if len(self.isr) < p.min_isr:
                    done.append(AckDone(p.token, NotEnoughReplicasAfterAppend(
                        f"written, but the ISR {sorted(self.isr)} shrank below "
                        f"min.insync.replicas={p.min_isr} before every member had it")))
                else:
                    done.append(AckDone(p.token, None))
            elif len(self.isr) < p.min_isr:
                done.append(AckDone(p.token, NotEnoughReplicasAfterAppend(
                    f"written by the leader, but the ISR {sorted(self.isr)} shrank below "
                    f"min.insync.replicas={p.min_isr} while waiting")))
            else:
                keep.append(p)
        self._pending = keep
        return done

    def _fail_pending(self, why: str) -> List[AckDone]:
        from pylog.errors import NotLeaderOrFollower

        out = [AckDone(p.token, NotLeaderOrFollower(f"{why} before the write was acknowledged"))
               for p in self._pending]
        self._pending = []
        return out

    # -------------------------------------------------------------- follower
    def on_follower_progress(self, log_end_offset: int, leader_high_watermark: int) -> None:
        """A follower appended what it fetched: its HW is min(leader's HW, its LEO)."""
        self.log_end_offset = log_end_offset
        self.high_watermark = max(self.high_watermark if self.role == LEADER else 0,
                                  min(leader_high_watermark, log_end_offset))

    def follower_leos(self) -> Dict[int, int]:
        return {r: f.leo for r, f in self._followers.items()}

    def last_caught_up(self) -> Dict[int, int]:
        return {r: f.last_caught_up_ms for r, f in self._followers.items()}
