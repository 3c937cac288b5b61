"""The sender: a thread that drains ready batches to the broker and completes them.

It builds each batch's bytes when it first ships it (producer id and sequence numbers
for idempotence), sends it to the producer's target, and completes the batch's
futures with the broker's answer.  What happens to a failed batch is the
:class:`~pylog.client.retry.RetryPolicy`'s decision, the same for the batches of
send() and of send_batch(): retried after retry.backoff.ms, split in halves (record
too large), or failed.  Completed batches' bytes go back to the buffer pool.

Two ways to talk to the target: one ``produce`` call at a time, or, for a target whose
acknowledgements come later (``pipelined_produce``: a replicated cluster, a network
client), up to max.in.flight batches per partition with ``produce_async`` + ``drive``.
"""
from __future__ import annotations

import logging
import threading
import time
from typing import Any, Dict, List, Optional, Tuple

from pylog.client.accumulator import RecordAccumulator
from pylog.client.buffer_pool import BufferPool
from pylog.client.producer_batch import BATCH_HEADER_BYTES, ProducerBatch
from pylog.client.producer_config import INT32_MAX, ProducerConfig
from pylog.client.retry import RETRY, SPLIT, RetryPolicy
from pylog.errors import PylogError, RequestTimedOut
from pylog.util import now_ms as _now_ms

__all__ = ["Sender", "MAX_IN_FLIGHT"]

log = logging.getLogger("pylog.producer")

#: max.in.flight.requests.per.connection: batches of one partition in flight (the
#: broker remembers the last five per producer, so a retry is still found a duplicate).
MAX_IN_FLIGHT = 5


class Sender:
    """Ships the accumulator's batches to ``broker`` in a background thread."""

    def __init__(self, config: ProducerConfig, broker: Any, accumulator: RecordAccumulator, pool: BufferPool,
                 retry: RetryPolicy, producer_id: int = -1, producer_epoch: int = -1) -> None:
        self.config = config
        self.broker = broker
        self.acc = accumulator
        self.pool = pool
        self.retry = retry
        self.acks = config.acks
        self.idempotent = config.enable_idempotence
        self.producer_id = producer_id
        self.producer_epoch = producer_epoch
        self.sequences: Dict[Tuple[str, int], int] = {}
        #: (records, latency ns from batch open to ack) of each acknowledged batch.
        self.ack_latencies: Optional[List[Tuple[int, int]]] = None
        #: BrokerInterface.pipelined_produce: acknowledgements come later.
        self.pipelined = bool(getattr(broker, "pipelined_produce", False))
        self.thread = threading.Thread(target=self._run, name="pylog-producer-sender", daemon=True)
        pool.freeing_thread = self.thread

    def start(self) -> None:
        self.thread.start()

    def join(self, timeout: Optional[float] = None) -> None:
        self.thread.join(timeout)

    # ----------------------------------------------------------------- loop
    def _run(self) -> None:
        acc, lock = self.acc, self.acc.lock
        while True:
            with lock:
                batches = acc.drain_locked()
                if not batches:
                    if acc.closed and not acc.open:
                        return
                    acc.wake.wait(acc.linger_wait_locked())
                    continue
                acc.in_flight += len(batches)
            try:
                if self.pipelined:
                    self._send_pipelined(batches)
                else:
                    self._send_sequential(batches)
            except BaseException as exc:  # never leave a future hanging
                log.exception("sending batches failed")
                err = exc if isinstance(exc, Exception) else PylogError(str(exc))
                for b in batches:
                    if not b.is_set():
                        b.complete(-1, -1, err)
            with lock:
                acc.in_flight -= len(batches)
                self.pool.release_locked(batches)  # the rest of the round (each batch once)
                acc.wake.notify_all()

    def _send_sequential(self, batches: List[ProducerBatch]) -> None:
        """Each partition's batches in order, up to max.request.size bytes of them in one
        ``produce_many`` call where the target has it (an embedded broker), else one
        ``produce`` per batch.  Memory goes back to the pool every release chunk."""
        many = getattr(self.broker, "produce_many", None)
        done: List[ProducerBatch] = []
        done_bytes = 0
        for group in self._groups(batches) if many is not None else ([b] for b in batches):
            if len(group) == 1:
                self._send_one(group[0])
            else:
                self._send_group(group, many)
            done.extend(group)
            done_bytes += sum(b.size for b in group) - BATCH_HEADER_BYTES * len(group)
            if done_bytes >= self.pool.release_chunk_bytes:
                with self.acc.lock:
                    self.pool.release_locked(done)
                done, done_bytes = [], 0

    def _groups(self, batches: List[ProducerBatch]) -> List[List[ProducerBatch]]:
        """``batches`` by partition, each partition's in order, cut at max.request.size
        bytes (a group of one where a batch alone is that large)."""
        limit = self.config.max_request_size
        by_tp: Dict[Tuple[str, int], List[List[ProducerBatch]]] = {}
        sizes: Dict[Tuple[str, int], int] = {}
        for b in batches:
            groups = by_tp.get(b.tp)
            if groups is None or sizes[b.tp] + b.size > limit:
                if groups is None:
                    groups = by_tp[b.tp] = []
                groups.append([b])
                sizes[b.tp] = b.size
            else:
                groups[-1].append(b)
                sizes[b.tp] += b.size
        return [g for groups in by_tp.values() for g in groups]

    def _send_group(self, group: List[ProducerBatch], many: Any) -> None:
        """Batches of one partition in one ``produce_many``; a batch it refuses, and the
        ones after it, go on one at a time (:meth:`_send_one`, the retry policy)."""
        topic, partition = group[0].tp
        built: List[ProducerBatch] = []
        payloads = []
        for b in group:
            try:
                payloads.append(self._build(b))
            except PylogError as exc:  # as _send_one: this batch fails, the others go on
                b.complete(-1, -1, exc)
                continue
            built.append(b)
        if not built:
            return
        try:
            results, error = many(topic, partition, payloads, acks=self.acks,
                                  timeout_ms=self.config.request_timeout_ms)
        except PylogError as exc:  # nothing written
            results, error = [], exc
        for b, res in zip(built, results):
            self._acknowledged(b, res)
        if error is not None:
            refused, after = built[len(results)], built[len(results) + 1:]
            # Those after it were numbered but not written: numbered again when sent,
            # so that a refused batch's numbers can be given back (see _rewind_sequence).
            if self.idempotent and refused.sequence >= 0:
                self.sequences[refused.tp] = (refused.sequence + len(refused)) % (INT32_MAX + 1)
                for b in after:
                    b.data, b.sequence = None, -1
            self._send_one(refused, failed=error)
            for b in after:
                self._send_one(b)

    # ------------------------------------------------------------- building
    def _build(self, b: ProducerBatch) -> bytes:
        """The batch's bytes, sealed (and numbered for idempotence) when first shipped,
        kept for retries."""
        if b.data is None:
            if self.idempotent:
                seq = self.sequences.get(b.tp, 0)
                b.sequence = seq
                self.sequences[b.tp] = (seq + len(b)) % (INT32_MAX + 1)
            b.data = b.build(self.producer_id, self.producer_epoch, self.config.codec)
        return b.data

    def _acknowledged(self, b: ProducerBatch, res: Any) -> None:
        if self.ack_latencies is not None:
            self.ack_latencies.append((len(b), time.perf_counter_ns() - b.first_send_ns))
        if self.acks == 0:
            b.complete(-1, -1, None)
        else:
            b.complete(res.base_offset, res.log_append_time, None)

    # ------------------------------------------------------- one at a time
    def _send_one(self, b: ProducerBatch, failed: Optional[PylogError] = None) -> None:
        """Ship ``b`` and complete it, retrying as the policy says; ``failed``: the error
        its first attempt (made elsewhere) got."""
        topic, partition = b.tp
        while True:
            if failed is None:
                try:
                    data = self._build(b)
                except PylogError as exc:
                    b.complete(-1, -1, exc)
                    return
                try:
                    res = self.broker.produce(topic, partition, data, acks=self.acks,
                                              timeout_ms=self.config.request_timeout_ms)
                except PylogError as exc:
                    failed = exc
            if failed is not None:
                exc, failed = failed, None
                decision = self.retry.decide(b, exc, _now_ms())
                if decision == SPLIT:
                    self._split_and_send(b)
                elif decision == RETRY:
                    log.warning("retrying batch of %d records to %s-%d after %s (attempt %d)", len(b), topic,
                                partition, exc.__class__.__name__, b.attempts)
                    self.retry.backoff()
                    continue
                else:
                    if not exc.retriable:  # refused: the broker wrote none of it
                        self._rewind_sequence(b)
                    b.complete(-1, -1, exc)
                return
            self._acknowledged(b, res)
            return

    # ------------------------------------------------------------ pipelined
    def _send_pipelined(self, batches: List[ProducerBatch]) -> None:
        """Have up to max.in.flight (5) batches per partition in flight at once.  A
        partition whose batch fails stops sending in this round, so later batches never
        overtake it; failed retriable batches go round again."""
        pending = list(batches)
        while pending:
            answers: Dict[int, Tuple[Optional[PylogError], Any]] = {}
            sent: List[ProducerBatch] = []
            held: List[ProducerBatch] = []
            blocked: set = set()
            per_tp: Dict[Tuple[str, int], int] = {}
            for b in pending:
                if b.tp in blocked or per_tp.get(b.tp, 0) >= MAX_IN_FLIGHT:
                    held.append(b)
                    continue
                try:
                    data = self._build(b)
                except PylogError as exc:
                    b.complete(-1, -1, exc)
                    continue
                key = id(b)

                def cb(error: Optional[PylogError], result: Any, key: int = key) -> None:
                    answers[key] = (error, result)

                self.broker.produce_async(b.tp[0], b.tp[1], data, acks=self.acks, callback=cb)
                sent.append(b)
                per_tp[b.tp] = per_tp.get(b.tp, 0) + 1
                if key in answers and answers[key][0] is not None:
                    blocked.add(b.tp)  # refused at once: keep the partition's order
            self.broker.drive(lambda: len(answers) >= len(sent), self.config.request_timeout_ms / 1000.0)
            retry: List[ProducerBatch] = []
            #: Partitions with a batch going round again: a later batch of the same
            #: partition failed because of it (an idempotent broker refuses it as out of
            #: order), so it goes round too, behind it.
            retrying: set = set()
            last_error: Optional[BaseException] = None
            for b in sent:
                error, res = answers.get(id(b), (RequestTimedOut("no answer within request.timeout.ms"), None))
                if error is None:
                    self._acknowledged(b, res)
                    continue
                behind = b.tp in retrying
                decision = self.retry.decide(b, error, _now_ms(), behind_retry=behind)
                if decision == SPLIT:
                    self._split_and_send(b)
                elif decision == RETRY:
                    retry.append(b)
                    retrying.add(b.tp)
                    last_error = error
                else:
                    if not error.retriable and not behind:  # refused: nothing written
                        self._rewind_sequence(b)
                    b.complete(-1, -1, error)
            done = [b for b in pending if b.is_set()]
            if done:
                with self.acc.lock:
                    self.pool.release_locked(done)
            if retry:
                log.warning("retrying %d batches after %s", len(retry), type(last_error).__name__)
                self.retry.backoff()
            # Retried batches keep their bytes and sequence numbers; held ones follow them.
            pending = sorted(retry + held, key=lambda b: (b.tp, b.sequence if b.sequence >= 0 else 0))

    # ------------------------------------------------------ refused batches
    def _rewind_sequence(self, b: ProducerBatch) -> None:
        """A batch the broker refused (so it wrote none of it): if it was the last
        batch numbered for its partition, the next batch takes its sequence numbers (a
        gap would make an idempotent broker refuse every later batch as out of order)."""
        if self.idempotent and b.sequence >= 0 \
                and self.sequences.get(b.tp) == (b.sequence + len(b)) % (INT32_MAX + 1):
            self.sequences[b.tp] = b.sequence

    def _split_and_send(self, b: ProducerBatch) -> None:
        """The broker refused the batch as too large: send it as two halves (as Kafka)."""
        if self.idempotent and b.sequence >= 0:
            # The sequence numbers were not used (the broker wrote nothing): reuse them.
            self.sequences[b.tp] = b.sequence
        half = len(b) // 2
        results = []
        for lo, hi in ((0, half), (half, len(b))):
            part = b.slice(lo, hi)
            self._send_one(part)
            results.append(part)
        first, second = results
        b.split = (half, first, second)
        b.complete(-1, -1, first.error or second.error)
