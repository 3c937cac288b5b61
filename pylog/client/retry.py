"""The producer's one retry policy, for the batches of send() and of send_batch().

Kafka's producer settings decide it: ``retries`` (attempts after the first),
``retry.backoff.ms`` (the pause before a batch goes again) and ``delivery.timeout.ms``
(no retry once a batch is that old, counted from when it was opened).  Which errors
are worth another attempt is the error's own ``retriable`` flag (Kafka's
RetriableException), with two producer rules on top: RecordTooLarge splits a batch
of more than one record in halves instead (as Kafka's producer does on
MESSAGE_TOO_LARGE), and a batch that failed only because an earlier batch of its
partition is being retried goes round again behind it.
"""
from __future__ import annotations

import time
from typing import Any

from pylog.errors import RecordTooLarge

__all__ = ["RetryPolicy", "RETRY", "SPLIT", "FAIL"]

RETRY = "retry"  #: send the batch again after the backoff
SPLIT = "split"  #: send the batch as two halves
FAIL = "fail"  #: complete the batch's futures with the error


class RetryPolicy:
    """Decides what becomes of a batch the broker did not acknowledge."""

    __slots__ = ("retries", "retry_backoff_ms", "delivery_timeout_ms")

    def __init__(self, retries: int, retry_backoff_ms: int, delivery_timeout_ms: int) -> None:
        self.retries = retries
        self.retry_backoff_ms = retry_backoff_ms
        self.delivery_timeout_ms = delivery_timeout_ms

    def decide(self, batch: Any, error: BaseException, now_ms: int, behind_retry: bool = False) -> str:
        """RETRY, SPLIT or FAIL for ``batch`` (with ``attempts``, ``created_ms`` and a
        length) that got ``error``; counts the attempt.  ``behind_retry``: an earlier
        batch of its partition is being retried in the same round."""
        if isinstance(error, RecordTooLarge) and len(batch) > 1:
            return SPLIT
        batch.attempts += 1
        retriable = bool(getattr(error, "retriable", False)) or behind_retry
        if (retriable and not isinstance(error, RecordTooLarge) and batch.attempts <= self.retries
                and now_ms < batch.created_ms + self.delivery_timeout_ms):
            return RETRY
        return FAIL

    def backoff(self) -> None:
        """Wait retry.backoff.ms before the retried batches go again."""
        time.sleep(self.retry_backoff_ms / 1000.0)
