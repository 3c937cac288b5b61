"""Produce: record batches in, offsets out.

Each partition's batches go to :meth:`BrokerInterface.produce_async` as they arrived:
the broker validates them in C (CRC32C, magic, counts), assigns offsets in place and
appends, with no Python per record.  The answer waits for every partition (a
replicated partition answers when acks are satisfied).  With acks=0 there is no
answer; as Kafka does, an error then closes the connection, which is the only way
the producer learns of it.
"""
from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Tuple

from pylog.errors import CorruptRecordError, PylogError, TopicAuthorizationFailed
from pylog.security.acl import AclOperation, ResourceType
from pylog.server.apis import error_code
from pylog.server.connection import CloseConnection

if TYPE_CHECKING:  # pragma: no cover
    from pylog.server.apis import KafkaApis, RequestContext

__all__ = ["ProduceHandler"]

log = logging.getLogger("pylog.server")

_INVALID_REQUIRED_ACKS = 21
_INVALID_REQUEST = 42


class _Pending:
    """Answers of one Produce request, filled in by the broker's callbacks."""

    __slots__ = ("answers", "left", "lock", "future")

    def __init__(self, n: int) -> None:
        self.answers: Dict[Tuple[str, int], Tuple[Optional[BaseException], Any]] = {}
        self.left = n
        self.lock = threading.Lock()
        self.future: Any = None


class ProduceHandler:
    def __init__(self, apis: "KafkaApis") -> None:
        self.apis = apis
        self.broker = apis.broker

    def produce(self, ctx: "RequestContext", req: Any) -> Any:
        acks = req.acks
        refuse: Optional[Tuple[int, str]] = None
        if req.transactional_id is not None:
            refuse = (_INVALID_REQUEST, "transactions are not supported by pylog")
        elif acks not in (-1, 0, 1):
            refuse = (_INVALID_REQUIRED_ACKS, f"acks must be -1, 0 or 1, got {acks}")
        parts: List[Tuple[str, int, Any]] = [(t.name, p.index, p.records)
                                             for t in req.topic_data for p in t.partition_data]
        if refuse is not None:
            if acks == 0:
                raise CloseConnection(f"Produce refused: {refuse[1]}")
            return self._respond(ctx, parts, {(t, p): (refuse, None) for t, p, _ in parts})
        pending = _Pending(len(parts))
        # Write on each topic, asked before anything is appended (a refusal writes nothing)
        writable = {t: ctx.allowed(AclOperation.WRITE, ResourceType.TOPIC, t) for t in {t for t, _, _ in parts}}

        for topic, partition, records in parts:
            key = (topic, partition)

            def done(error: Optional[BaseException], result: Any, key: Tuple[str, int] = key) -> None:
                if error is not None:  # keep the message, not the frames (and their buffers)
                    error = error.with_traceback(None)
                with pending.lock:
                    pending.answers[key] = (error, result)
                    pending.left -= 1
                    last = pending.left == 0
                    fut = pending.future
                if last and fut is not None:
                    self.apis.resolve(fut, pending)

            if not writable[topic]:
                done(TopicAuthorizationFailed(f"not authorized to Write topic {topic!r}"), None)
                continue
            if not records:
                done(CorruptRecordError(f"{topic}-{partition}: the request carries no record batch"), None)
                continue
            try:
                self.broker.produce_async(topic, partition, records, acks=acks, callback=done)
            except PylogError as exc:  # an implementation may refuse before it starts
                done(exc, None)
        if acks == 0:
            errors = [(k, e) for k, (e, _) in pending.answers.items() if e is not None]
            if errors:
                (t, p), e = errors[0]
                raise CloseConnection(f"acks=0 Produce to {t}-{p} failed: {type(e).__name__}: {e}")
            return None
        with pending.lock:
            if pending.left == 0:
                return self._respond(ctx, parts, pending.answers)
            pending.future = fut = self.apis.future()
        out = self.apis.future()

        def finish(f: Any) -> None:
            out.set_result(self._respond(ctx, parts, pending.answers))

        fut.add_done_callback(finish)
        return out

    def _respond(self, ctx: "RequestContext", parts: List[Tuple[str, int, Any]],
                 answers: Dict[Tuple[str, int], Tuple[Any, Any]]) -> Any:
        topics: Dict[str, List[Dict[str, Any]]] = {}
        for topic, partition, _ in parts:
            error, result = answers.get((topic, partition), (None, None))
            row: Dict[str, Any] = {"index": partition, "record_errors": []}
            if isinstance(error, tuple):  # refused as a whole: (code, message)
                row.update(error_code=error[0], base_offset=-1, log_start_offset=-1, error_message=error[1])
            elif error is not None:
                code = error_code(error, f"Produce to {topic}-{partition}")
                if code in (2, 87):  # CORRUPT_MESSAGE, INVALID_RECORD
                    log.warning("Produce from %s to %s-%d refused: %s", ctx.client, topic, partition, error)
                row.update(error_code=code, base_offset=-1, log_start_offset=-1, error_message=str(error))
            else:
                row.update(error_code=0, base_offset=result.base_offset, log_append_time=result.log_append_time,
                           log_start_offset=result.log_start_offset, error_message=None)
            topics.setdefault(topic, []).append(row)
        return ctx.respond({"responses": [{"name": t, "partition_responses": rows} for t, rows in topics.items()],
                            "throttle_time": 0})
