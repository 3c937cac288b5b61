"""pylog.replication: partition leader/follower state machines — ISR, HW, leader epochs.

Sans-I/O (docs/architecture.md): events in, actions out; no threads, sockets or clock reads.
Uses pylog.storage and pylog.records only.
"""
from pylog.replication.epochs import (
    LEADER_EPOCH_CHECKPOINT_FILE,
    UNDEFINED_EPOCH,
    UNDEFINED_EPOCH_OFFSET,
    EpochEntry,
    LeaderEpochCache,
    divergence,
    rebuild_from_log,
    recover_cache,
    truncation_offset,
    truncation_step,
)

__all__ = [
    "LEADER_EPOCH_CHECKPOINT_FILE",
    "UNDEFINED_EPOCH",
    "UNDEFINED_EPOCH_OFFSET",
    "EpochEntry",
    "LeaderEpochCache",
    "divergence",
    "rebuild_from_log",
    "recover_cache",
    "truncation_offset",
    "truncation_step",
]
