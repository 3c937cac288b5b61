"""Log maintenance of a broker's partitions: retention, producer-id expiry, compaction,
and the background scrub (log.scrub.interval.ms).

One :class:`LogMaintenance` per broker keeps when each task last ran and runs the due
ones over the partitions it is given: the single :class:`~pylog.broker.Broker` passes
all of its partitions, a replicated broker (LocalCluster) the replicas it holds, leader
or follower, as each Kafka broker maintains its own logs.
"""
from __future__ import annotations

import logging
from typing import Any, Callable, Dict, Iterable, List, Optional

from pylog.broker.config import BrokerConfig
from pylog.broker.partition import Partition
from pylog.errors import LogClosed
from pylog.storage.log import ScrubDamage
from pylog.storage.logdirs import is_dir_failure

log = logging.getLogger("pylog.broker")

__all__ = ["LogMaintenance"]


class LogMaintenance:
    """Runs, when due (every log.retention.check.interval.ms,
    producer.id.expiration.check.interval.ms and log.cleaner.backoff.ms), retention,
    producer-id expiry and (with log.cleaner.enable) compaction of compacted topics."""

    def __init__(self, config: BrokerConfig, clock: Callable[[], int],
                 on_damage: Optional[Callable[[Partition, ScrubDamage], None]] = None) -> None:
        self.config = config
        self._clock = clock
        self._cleaner: Any = None
        self._last_retention_ms = self._last_expiry_ms = self._last_clean_ms = self._last_scrub_ms = clock()
        #: Called with each partition the scrub finds damaged (after the ERROR log): a
        #: cluster drops a follower's damaged range there to fetch it again.
        self.on_damage = on_damage
        #: replica's log directory -> offset of the first damaged batch, as the last
        #: scrub of it found it (cleared when a later scrub finds it clean).  By
        #: directory, not topic-partition: an in-process cluster holds several replicas
        #: of a partition, each scrubbed on its own.
        self.damaged: Dict[str, int] = {}
        #: Called (partition, error) when a task failed with an I/O error of the disk
        #: (EIO, EROFS: its log directory fails, see LogDirs); the others go on.  None:
        #: the partition's own on_storage_error hook.
        self.on_storage_error: Optional[Callable[[Partition, OSError], None]] = None

    def run(self, partitions: Iterable[Partition], now: int, *, force: bool = False) -> List[Any]:
        """The tasks that are due (all of them with ``force``); returns the cleaner's
        results.  A partition closed meanwhile is skipped."""
        cfg = self.config
        retention = force or now - self._last_retention_ms >= cfg.log_retention_check_interval_ms
        expiry = force or now - self._last_expiry_ms >= cfg.producer_id_expiration_check_interval_ms
        clean = cfg.log_cleaner_enable and (force or now - self._last_clean_ms >= cfg.log_cleaner_backoff_ms)
        scrub = cfg.log_scrub_interval_ms > 0 and (force or now - self._last_scrub_ms >= cfg.log_scrub_interval_ms)
        if scrub:
            self._last_scrub_ms = now
        if retention:
            self._last_retention_ms = now
        if expiry:
            self._last_expiry_ms = now
        if clean:
            self._last_clean_ms = now
        results: List[Any] = []
        for p in partitions:
            try:
                if retention:
                    p.log.enforce_retention(now)
                if expiry:
                    p.expire_producers(now, cfg.producer_id_expiration_ms)
                if clean:
                    results += self._compact(p, now, force)
                if scrub:
                    self.scrub(p)
            except LogClosed:  # closed (its broker stopped) meanwhile
                continue
            except OSError as exc:
                hook = self.on_storage_error or p.on_storage_error
                if hook is None or not is_dir_failure(exc):
                    raise
                hook(p, exc)
        return results

    def scrub(self, p: Partition) -> Optional[ScrubDamage]:
        """Check every batch of ``p`` (log.scrub.interval.ms): a damaged one is logged at
        ERROR (once per partition and offset), kept in :attr:`damaged`, and handed to
        :attr:`on_damage`."""
        key = str(p.log.dir)
        damage = p.log.scrub()
        if damage is None:
            if self.damaged.pop(key, None) is not None:
                log.warning("scrub: %s-%d is readable again from its log start (%s)", p.topic, p.index, key)
            return None
        if self.damaged.get(key) != damage.offset:
            self.damaged[key] = damage.offset
            log.error("scrub: %s-%d is damaged from offset %d, which cannot be served: %s (run `pylog verify "
                      "--data-dir %s`)", p.topic, p.index, damage.offset, damage.what, key)
        if self.on_damage is not None:
            self.on_damage(p, damage)
        return damage

    def compact(self, partitions: Iterable[Partition], now: int, *, force: bool = False) -> List[Any]:
        """Compact the compacted topics' partitions now (when dirty enough, or always with
        ``force``); returns the cleaner's results."""
        results: List[Any] = []
        for p in partitions:
            results += self._compact(p, now, force)
        return results

    def _compact(self, p: Partition, now: int, force: bool) -> List[Any]:
        if not p.config.compacted:
            return []
        if self._cleaner is None:
            from pylog.broker.cleaner import LogCleaner

            self._cleaner = LogCleaner(clock=self._clock)
        res = p.compact(self._cleaner, now, force=force)
        return [] if res is None else [res]
