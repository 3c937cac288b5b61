"""Operator requests that only the controller can carry out, made through the store.

The broker an operator talks to is often not the controller, so, as in Kafka's
ZooKeeper mode, such requests are written to the metadata store and the controller —
wherever it runs — carries them out (the node layouts are in
:mod:`pylog.cluster.controller`'s docstring).  Every helper here takes the store and
nothing else of the cluster: it works on any broker, controller or not.

- **Controlled shutdown**: :func:`request_controlled_shutdown` marks the broker's own
  registration; :func:`leaderships` tells the stopping broker what it still leads.
"""
from __future__ import annotations

from typing import Any, List, Tuple

from pylog.cluster.controller import (
    SHUTTING_DOWN,
    TOPICS_PATH,
    broker_path,
    live_brokers,
    partition_state_path,
    shutting_down_brokers,
    topic_path,
)
from pylog.errors import BadVersion, BrokerNotAvailable, NoNode
from pylog.util import check_int

__all__ = [
    "leaderships",
    "request_controlled_shutdown",
]

TopicPartition = Tuple[str, int]


# ------------------------------------------------------------------ controlled shutdown
def request_controlled_shutdown(store: Any, broker_id: int) -> None:
    """Mark ``broker_id``'s registration ``"shutting_down": true`` (compare-and-set; the
    registration's other fields are kept).  The controller then moves the broker's
    leaderships to other in-sync replicas and takes it out of the ISRs it is in (Kafka's
    ControlledShutdown).  Idempotent.  Raises BrokerNotAvailable if the broker is not
    registered."""
    check_int("broker id", broker_id, min=0)
    path = broker_path(broker_id)
    while True:
        try:
            data, version = store.get(path)
        except NoNode:
            raise BrokerNotAvailable(f"broker {broker_id} is not registered") from None
        data = dict(data) if isinstance(data, dict) else {}
        if data.get(SHUTTING_DOWN) is True:
            return
        data[SHUTTING_DOWN] = True
        try:
            store.set(path, data, version)
            return
        except BadVersion:
            continue  # the registration changed meanwhile: read it again
        except NoNode:
            raise BrokerNotAvailable(f"broker {broker_id} is not registered") from None


def leaderships(store: Any, broker_id: int, *, movable_only: bool = False) -> List[TopicPartition]:
    """The partitions whose state names ``broker_id`` as leader, sorted.  With
    ``movable_only``, only those the controller could move elsewhere now: another
    replica is live, not shutting down and in the ISR (a controlled shutdown waits for
    these; the others keep their leader until the broker is gone)."""
    live = set(live_brokers(store))
    eligible = live - shutting_down_brokers(store)
    out: List[TopicPartition] = []
    try:
        topics = store.children(TOPICS_PATH)
    except NoNode:
        return out
    for topic in topics:
        try:
            data, _ = store.get(topic_path(topic))
        except NoNode:
            continue
        for p, replicas in data["partitions"].items():
            try:
                st, _ = store.get(partition_state_path(topic, int(p)))
            except NoNode:
                continue
            if st["leader"] != broker_id:
                continue
            if movable_only and not any(b != broker_id and b in eligible and b in st["isr"] for b in replicas):
                continue
            out.append((topic, int(p)))
    return sorted(out)
